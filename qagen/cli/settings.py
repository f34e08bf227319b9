"""One settings loader for every command: qagen.toml, profiles, the environment, ``--set`` and flags.

A value comes from the first of these that sets it (``qagen config show`` prints which):

1. a flag (qagen/cli/flags.py): the command's own (``--suite``) or any setting's (``--chunk-size 600``, ``--no-report``: every key below
   has one; ``qagen ingest --help`` lists only the daily ones);
2. ``--set SECTION.KEY=VALUE`` (the value in TOML syntax: ``600``, ``true``, ``["a.json"]``; a bare word is a string);
3. the environment (``QAGEN_CHUNK_SIZE``; ``QAGEN_TRAIN_EPOCHS`` for the train section);
4. the profile picked by ``--profile``, ``QAGEN_PROFILE`` or qagen.toml's ``profile =``, when qagen.toml defines it;
5. qagen.toml's sections (``--config PATH``, else DOCS/qagen.toml, else ./qagen.toml);
6. the built-in profile (qagen/profiles.toml): ``embedded`` on the embedded model, ``served`` otherwise, or the one
   a qagen.toml profile ``extends``;
7. the default.

Secrets (the API key, the SMTP password) come from the environment only.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qagen.config import CONFIG_FILE, SECRETS, SECTIONS, Settings, builtin_profiles
from qagen.core.errors import InputError

CLASSES = ("settings", "train", "notify")


def _train_cls() -> type:
    from qagen.flow.train import TrainSettings

    return TrainSettings


def _notify_cls() -> type:
    from qagen.flow.notify import NotifySettings

    return NotifySettings


@dataclass(frozen=True)
class Key:
    """One setting: where it lives (``section.key``), which settings class holds it, and how a flag gives it."""

    section: str
    name: str
    owner: str  # settings | train | notify
    kind: str  # bool | list | value

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _kind(cls: type, name: str) -> str:
    ann = typing.get_type_hints(cls)[name]
    args = set(typing.get_args(ann)) - {type(None)}
    if ann is bool or args == {bool}:
        return "bool"
    if typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in args):
        return "list"
    return "value"


def keys(owners: Iterable[str] = CLASSES) -> dict[str, Key]:
    """Every setting the given classes hold, by ``section.key``."""
    out: dict[str, Key] = {}
    owners = tuple(owners)
    if "settings" in owners:
        for section, names in SECTIONS.items():
            for name in names:
                out[f"{section}.{name}"] = Key(section, name, "settings", _kind(Settings, name))
    for owner, make in (("train", _train_cls), ("notify", _notify_cls)):
        if owner in owners:
            cls = make()
            for name in cls.model_fields:
                out[f"{owner}.{name}"] = Key(owner, name, owner, _kind(cls, name))
    return out


# --- the file ---------------------------------------------------------------------------------------------------


def find_config(docs: Path | None, explicit: Path | None) -> Path | None:
    """``--config``, else DOCS/qagen.toml, else ./qagen.toml, else none."""
    if explicit is not None:
        if not explicit.is_file():
            raise InputError(f"--config {explicit}: no such file")
        return explicit
    for folder in ([docs] if docs is not None and docs.is_dir() else []) + [Path.cwd()]:
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _flatten(body: dict[str, Any], where: str, table: dict[str, Key]) -> dict[str, Any]:
    """A file's ``[section]`` tables as ``{section.key: value}``, each key checked."""
    out: dict[str, Any] = {}
    sections = {k.section for k in table.values()}
    for section, values in body.items():
        if section not in sections or not isinstance(values, dict):
            raise InputError(f"{where}: unknown section [{section}]{_suggest(section, sections)}; sections: "
                             + ", ".join(sorted(sections)))
        for name, value in values.items():
            dotted = f"{section}.{name}"
            if dotted not in table:
                raise InputError(f"{where}: unknown setting {dotted}"
                                 f"{_suggest(dotted, table)}")
            if name in SECRETS:
                raise InputError(f"{where}: {dotted} is a secret: set it in the environment, not in a file")
            out[dotted] = value
    return out


@dataclass
class ConfigFile:
    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the top-level sections
    profile: str | None = None  # ``profile = NAME``
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # NAME -> its table, as written


def read_config(path: Path | None, table: dict[str, Key]) -> ConfigFile:
    if path is None:
        return ConfigFile()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror}") from None
    profile = raw.pop("profile", None)
    profiles = raw.pop("profiles", {})
    if profile is not None and not isinstance(profile, str):
        raise InputError(f"{path}: profile must be a name, not {profile!r}")
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise InputError(f"{path}: [profiles.NAME] must be tables")
    values = _flatten(raw, str(path), table)
    for name, body in profiles.items():  # checked now, so a typo in an unused profile is still caught
        _flatten({k: v for k, v in body.items() if k != "extends"}, f"{path} [profiles.{name}]", table)
    return ConfigFile(path, values, profile, profiles)


def parse_set(items: Sequence[str], table: dict[str, Key]) -> dict[str, Any]:
    """``--set section.key=value`` (a key that only one section has may drop its section)."""
    out: dict[str, Any] = {}
    by_name: dict[str, list[str]] = {}
    for dotted, key in table.items():
        by_name.setdefault(key.name, []).append(dotted)
    for item in items:
        name, eq, text = item.partition("=")
        name = name.strip()
        if not eq or not name:
            raise InputError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set chunking.chunk_size=600")
        if "." not in name and len(by_name.get(name, [])) == 1:
            name = by_name[name][0]
        if name not in table:
            hint = f" (in {' and '.join(by_name[name])})" if name in by_name else _suggest(name, table)
            raise InputError(f"--set {name}: no such setting{hint}; `qagen config show` lists them")
        if table[name].name in SECRETS:
            raise InputError(f"--set {name}: a secret: set it in the environment, not on the command line")
        out[name] = _toml_value(text)
    return out


def _toml_value(text: str) -> Any:
    """``600`` -> 600, ``true`` -> True, ``["a", "b"]`` -> a list; anything TOML can't read is the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# --- resolving ----------------------------------------------------------------------------------------------------


@dataclass
class Resolved:
    """The settings of one command, and where each value came from (``section.key`` -> source)."""

    settings: Settings
    train: Any = None  # TrainSettings, when the command trains
    notify: Any = None  # NotifySettings, when it sends email
    sources: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    profile: str = ""  # the profile picked (a qagen.toml one, or built-in)


def _env_layer(table: dict[str, Key], owners: Iterable[str]) -> dict[str, Any]:
    """What the environment sets, by ``section.key``: each class built from the environment alone."""
    made = {"settings": Settings}
    if "train" in owners:
        made["train"] = _train_cls()
    if "notify" in owners:
        made["notify"] = _notify_cls()
    by_owner: dict[str, dict[str, str]] = {}
    for dotted, key in table.items():
        by_owner.setdefault(key.owner, {})[key.name] = dotted
    out: dict[str, Any] = {}
    for owner, cls in made.items():
        if owner not in by_owner:
            continue
        instance = cls()
        for name in instance.model_fields_set:
            if name in by_owner[owner]:
                out[by_owner[owner][name]] = getattr(instance, name)
    return out


def resolve(
    *,
    docs: Path | None = None,
    config: Path | None = None,
    profile: str | None = None,
    sets: Sequence[str] = (),
    flags: dict[str, Any] | None = None,
    owners: Iterable[str] = ("settings",),
    api_key: str | None = None,
) -> Resolved:
    """The settings of a command, from every layer (the module's docstring gives the order)."""
    owners = tuple(owners)
    table, every = keys(owners), keys()  # a file or --set is checked against every setting, used for the command's
    path = find_config(docs, config)
    file = read_config(path, every)
    env = _env_layer(table, owners)
    name = profile or os.environ.get("QAGEN_PROFILE") or file.profile
    user: dict[str, Any] = {}
    base: str | None = None
    if name:
        user, base = _profile_layer(name, file, every)
    sets_layer = parse_set(sets, every)
    for dotted in sets_layer:
        if dotted not in table:
            raise InputError(f"--set {dotted}: this command does not use the {every[dotted].section} section")

    def mine(layer: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in layer.items() if k in table}

    layers: list[tuple[str, dict[str, Any]]] = [
        (f"file {path}", mine(file.values)),
        (f"profile {name} ({path})", mine(user)),
        ("environment", env),
        ("--set", sets_layer),
        ("flag", dict(flags or {})),
    ]
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for dotted, value in layer.items():
            merged[dotted] = value
            sources[dotted] = source
    if base is not None and "model.builtin_profile" not in merged:
        merged["model.builtin_profile"], sources["model.builtin_profile"] = base, f"profile {name}"
    if api_key is not None:  # the hidden --api-key (the environment is better: shells keep their history)
        merged["model.api_key"], sources["model.api_key"] = api_key, "flag"
    kwargs: dict[str, dict[str, Any]] = {owner: {} for owner in ("settings", *owners)}
    for dotted, value in merged.items():
        kwargs[table[dotted].owner][table[dotted].name] = value
    settings = Settings(**kwargs["settings"])
    resolved = Resolved(settings, sources=sources, config_path=path, profile=name or settings.profile_name)
    if "train" in owners:
        resolved.train = _train_cls()(**kwargs["train"])
    if "notify" in owners:
        resolved.notify = _notify_cls()(**kwargs["notify"])
    return resolved


def _profile_layer(name: str, file: ConfigFile, table: dict[str, Key]) -> tuple[dict[str, Any], str | None]:
    """A profile's values (a qagen.toml one, after the ones it extends) and the built-in profile under it."""
    builtin = builtin_profiles()
    if name in builtin and name not in file.profiles:
        return {}, name
    if name not in file.profiles:
        known = sorted({*builtin, *file.profiles})
        where = f" in {file.path}" if file.path else " (no qagen.toml found)"
        raise InputError(f"no profile {name!r}{where}; profiles: {', '.join(known)}")
    chain: list[str] = []
    current: str | None = name
    while current is not None and current in file.profiles and current not in chain:
        chain.append(current)
        extends = file.profiles[current].get("extends")
        if extends is not None and not isinstance(extends, str):
            raise InputError(f"{file.path} [profiles.{current}]: extends must be a profile name")
        current = extends
    if current is not None and current in chain:
        raise InputError(f"{file.path}: profiles extend each other in a circle: {' -> '.join([*chain, current])}")
    if current is not None and current not in builtin:
        raise InputError(f"{file.path} [profiles.{chain[-1]}]: extends {current!r}, which no file or built-in "
                         f"defines; profiles: {', '.join(sorted({*builtin, *file.profiles}))}")
    values: dict[str, Any] = {}
    for link in reversed(chain):  # the base first, so the named profile wins
        body = {k: v for k, v in file.profiles[link].items() if k != "extends"}
        values.update(_flatten(body, f"{file.path} [profiles.{link}]", table))
    return values, current
