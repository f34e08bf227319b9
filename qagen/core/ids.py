"""Content-derived identifiers (xxhash).

Every ID depends on content only, never on paths or time:

* ``doc_id``   = xxh128 of the normalised document text;
* ``chunk_id`` = xxh128 of doc_id + chunk text + chunker settings;
* ``group_id`` = xxh128 of the sorted doc_ids of a corpus.

Storage keeps the full 32-hex-digit form; the model only ever sees the
10-character :func:`short` form.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable

import xxhash

SHORT_LEN = 10
_WS_RUN = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise_text(text: str) -> str:
    """Normalise text so that cosmetic differences do not change IDs.

    NFC unicode, ``\\n`` line endings, no trailing spaces, runs of blanks
    collapsed, at most one empty line in a row, no leading/trailing space.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    lines = [_WS_RUN.sub(" ", line).rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def hash_str(*parts: str) -> str:
    """xxh128 hex digest of the parts, separated unambiguously."""
    h = xxhash.xxh128()
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def hash_json(obj: object) -> str:
    """xxh128 of the canonical JSON form of ``obj`` (sorted keys, no spaces)."""
    canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return xxhash.xxh128_hexdigest(canon.encode("utf-8"))


def doc_id(normalised_text: str) -> str:
    return hash_str("doc", normalised_text)


def chunk_id(doc: str, chunk_text: str, settings_key: str) -> str:
    return hash_str("chunk", doc, chunk_text, settings_key)


def group_id(doc_ids: Iterable[str]) -> str:
    return hash_str("group", *sorted(set(doc_ids)))


def short(full_id: str) -> str:
    """The short form of an ID that the model sees (10 hex characters)."""
    return full_id[:SHORT_LEN]
