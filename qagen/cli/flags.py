"""Every setting's own flag, on the commands that take settings (ingest, run, config show).

``qagen ingest --help`` lists the daily flags; every other setting still has a flag of its own, named after it
(``--chunk-size 600``, ``--no-report``, ``--epochs 5`` on ``qagen run``), taken out of the arguments before click
parses them, so old command lines keep working and no option is written twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand

from qagen.cli.settings import Key, keys
from qagen.config import SECRETS, SECTIONS

# Flags of qagen <= 0.6 whose names differ from their setting's.
_ALIASES = {"--no-refine": ("generation.refine", "off"), "--launcher-arg": ("train.launcher_args", None)}


def split_setting_flags(args: Sequence[str], declared: set[str], owners: Iterable[str]) -> tuple[list[str], dict[str, Any]]:
    """Take every setting's own flag (``--chunk-size 600``, ``--chunk-size=600``, ``--no-report``) out of ``args``.

    Returns the rest, for click, and ``{section.key: value}``. A flag the command declares stays with click. A flag
    that two sections share in this command (``--seed`` in ``qagen run``) must be given with ``--set``.
    """
    owned = keys(owners)
    table: dict[str, list[tuple[Key, object]]] = {}
    for key in owned.values():
        if key.name in SECRETS:
            continue
        if key.kind == "bool":
            table.setdefault(key.flag, []).append((key, True))
            table.setdefault("--no-" + key.flag[2:], []).append((key, False))
        else:
            table.setdefault(key.flag, []).append((key, None))
    for alias, (dotted, value) in _ALIASES.items():
        if dotted in owned:
            table.setdefault(alias, []).append((owned[dotted], value))
    rest: list[str] = []
    found: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            rest.extend(args[i:])
            break
        name, eq, inline = token.partition("=")
        if not name.startswith("--") or name in declared or name not in table:
            rest.append(token)
            i += 1
            continue
        entries = table[name]
        if len(entries) > 1:
            raise click.UsageError(f"{name} is ambiguous here: use " + " or ".join(
                f"--set {k.dotted}=..." for k, _ in entries))
        key, fixed = entries[0]
        if fixed is not None:
            if eq:
                raise click.UsageError(f"{name} takes no value")
            value: object = fixed
        elif eq:
            value = inline
        elif i + 1 < len(args):
            i += 1
            value = args[i]
        else:
            raise click.UsageError(f"{name} needs a value")
        if key.kind == "list":
            found.setdefault(key.dotted, []).append(value)
        else:
            found[key.dotted] = value
        i += 1
    return rest, found


class SettingsCommand(TyperCommand):
    """A command that also takes every setting's own flag, whether or not its ``--help`` lists it: they are taken
    out of the arguments before click parses them (``ctx.meta``), so they may stand anywhere, before DOCS too.
    ``owners``: which settings classes the command reads (``settings_command``)."""

    owners: tuple[str, ...] = ("settings",)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        declared = {opt for p in self.params for opt in (*p.opts, *p.secondary_opts)}
        rest, found = split_setting_flags(args, declared, self.owners)
        ctx.meta["qagen.setting_flags"] = found
        return super().parse_args(ctx, rest)


def settings_command(*owners: str) -> type[SettingsCommand]:
    """The command class for a command whose settings are ``owners`` (settings, train, notify)."""
    return type("SettingsCommand_" + "_".join(owners), (SettingsCommand,), {"owners": tuple(owners)})


def setting_flags(ctx: click.Context) -> dict[str, Any]:
    return dict(ctx.meta.get("qagen.setting_flags", {}))


def daily_flags(*, base_url: Sequence[str] | str | None = None, **given: Any) -> dict[str, Any]:
    """The flags ``--help`` lists (``--model``, ``--suite``, ...) as ``{section.key: value}``; unset ones dropped.
    ``--base-url`` given again adds endpoints (model.extra_base_urls)."""
    out: dict[str, Any] = {}
    if isinstance(base_url, str):
        base_url = [base_url]
    if base_url:
        out["model.base_url"] = base_url[0]
        if len(base_url) > 1:
            out["model.extra_base_urls"] = list(base_url[1:])
    where = {name: section for section, names in SECTIONS.items() for name in names}
    for name, value in given.items():
        if value is not None:
            out[f"{where[name]}.{name}"] = value
    return out


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Settings file (default: DOCS/qagen.toml, else ./qagen.toml).")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="Settings profile: embedded or served (picked from the model by default), or one qagen.toml defines.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Any setting, e.g. --set chunking.chunk_size=600 (repeatable; `qagen config show` lists them).")]


SETTINGS_EPILOG = (
    "Every other setting: its own flag (--chunk-size 600, --no-report), --set SECTION.KEY=VALUE, or qagen.toml "
    "beside the documents. `qagen config show` lists them all with their values and sources; `qagen config show "
    "--help` explains the file."
)
