"""``qagen config show``: every setting as a run would use it, and where its value came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qagen.cli.common import settings_or_exit
from qagen.cli.flags import (
    ConfigOpt,
    ProfileOpt,
    SetOpt,
    setting_flags,
    settings_command,
)
from qagen.cli.settings import CLASSES, Resolved, keys, resolve
from qagen.config import SECRETS

config_app = typer.Typer(help="Inspect the settings: qagen.toml, profiles, the environment, --set and flags.",
                         no_args_is_help=True)


CONFIG_HELP = """Print every setting as a run would use it, and where its value came from.

Settings live in sections (model, chunking, generation, curation, export, scale, train, notify). A value comes from
the first of: a flag (every setting has one: --chunk-size 600, --no-report), --set SECTION.KEY=VALUE, the environment
(QAGEN_CHUNK_SIZE; QAGEN_TRAIN_EPOCHS), the profile picked by --profile / QAGEN_PROFILE / the file's `profile =`,
qagen.toml (--config, else DOCS/qagen.toml, else ./qagen.toml), the built-in profile (embedded on the embedded model,
served otherwise: qagen/profiles.toml), the default. A qagen.toml:

\b
    profile = "nightly"           # optional: which profile a run uses
    [model]
    base_url = "http://127.0.0.1:8000/v1"
    model = "mistral-7b-instruct"
    [chunking]
    chunk_size = 800
    [train]
    epochs = 5
    [profiles.nightly]
    extends = "served"            # embedded or served: the defaults under it
    [profiles.nightly.generation]
    refine = "repair"

Secrets (QAGEN_API_KEY / OPENAI_API_KEY, QAGEN_SMTP_PASSWORD) come from the environment only.
"""


@config_app.command("show", cls=settings_command("settings", "train", "notify"), help=CONFIG_HELP)
def config_show(
    ctx: typer.Context,
    docs: Annotated[Path | None, typer.Argument(help="The documents folder a run would read (its qagen.toml counts).")] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    changed: Annotated[bool, typer.Option("--changed", help="Only the settings that are not at their default.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    resolved = settings_or_exit(lambda: resolve(docs=docs, config=config, profile=profile, sets=set_ or (),
                                                flags=setting_flags(ctx), owners=("settings", "train", "notify")),
                                as_json)
    rows = [r for r in show_rows(resolved) if not changed or r[2] != "default"]
    if as_json:
        print(json.dumps({"config": str(resolved.config_path or ""), "profile": resolved.profile,
                          "settings": [{"key": k, "value": v, "source": src} for k, v, src in rows]}))
        return
    t = Table(title=f"qagen settings (profile {resolved.profile}; file: {resolved.config_path or 'none'})",
              title_justify="left")
    for col in ("setting", "value", "from"):
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    Console().print(t)


def show_rows(resolved: Resolved) -> list[tuple[str, str, str]]:
    """``(section.key, value, source)`` for every setting, as the run would use it."""
    rows = []
    owners = [o for o in CLASSES if o == "settings" or getattr(resolved, o) is not None]
    for dotted, key in keys(owners).items():
        holder = resolved.settings if key.owner == "settings" else getattr(resolved, key.owner)
        value = getattr(holder, key.name)
        source = resolved.sources.get(dotted, "default")
        if key.name in ("chunk_size", "chunk_overlap") and key.owner == "settings" and value is None:
            value = resolved.settings.chunking[key.name == "chunk_overlap"]
            source = f"profile {resolved.settings.profile_name} (built-in)"
        elif key.owner == "settings" and value is None:
            fallback = resolved.settings.profile_default(key.name)
            if fallback is not None:
                value, source = fallback, f"profile {resolved.settings.profile_name} (built-in)"
        if key.name in SECRETS:
            value = "(set)" if value else None
        if key.name == "builtin_profile" and value is None:
            value = resolved.settings.profile_name
            source = "the model: " + ("the embedded one" if resolved.settings.uses_embedded else "a served one")
        rows.append((dotted, _show(value), source))
    return rows


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return str(value)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
