"""Quality filters for generated Q/A pairs: grounding, near-duplicates, decontamination.

* :func:`grounding_score` / :func:`is_grounded`: does the supporting quote occur in its
  chunk? (rapidfuzz ``partial_ratio`` after normalising case, whitespace, quotes, dashes)
* :class:`NearDuplicateFilter`: drop near-duplicate questions, keeping the best-scored
  of each cluster.  MinHash LSH over word 1-/2-gram shingles is only a high-recall
  pre-filter; candidates are verified with rapidfuzz.
* :func:`load_questions` reads benchmark / held-out questions (the only I/O here) and
  :class:`Decontaminator` finds generated questions that nearly match one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import xxhash
from rapidfuzz import fuzz

MIN_QUOTE_CHARS = 8
_SEGMENT = 160  # quotes longer than this are scored piecewise
_QUOTES = str.maketrans({c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u00b4`"}
                        | {c: '"' for c in "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"}
                        | {c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"})
_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]|_")
_NOT = re.compile(r"n['\u2019]t\b")
# Tokens that change what is asked; questions differing in them are never duplicates.
_KEY_WORDS = frozenset(["who", "whom", "whose", "what", "which", "when", "where", "why", "how", "not", "no", "never"])


def normalize_text(text: str) -> str:
    """NFKC, casefold, straight quotes, ASCII hyphens, single spaces."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return _WS.sub(" ", text).strip()


def grounding_score(quote: str, chunk_text: str) -> float:
    """0-100: how well ``quote`` occurs verbatim (modulo case/whitespace/quotes) in the chunk.

    A quote shorter than 8 characters scores 0.  A quote longer than the chunk
    is scored with the plain ``ratio`` (never the chunk's best match inside it).
    """
    q, c = normalize_text(quote).strip("\"' "), normalize_text(chunk_text)
    if len(q) < MIN_QUOTE_CHARS or not c:
        return 0.0
    if q in c:
        return 100.0
    if len(q) > len(c):
        return float(fuzz.ratio(q, c))
    if len(q) <= _SEGMENT:
        return float(fuzz.partial_ratio(q, c))
    # partial_ratio is ~quadratic for long needles (100+ ms at 2,000 chars): score
    # equal segments instead, weighted by length.
    n = -(-len(q) // _SEGMENT)
    cuts = [len(q) * i // n for i in range(n + 1)]
    return sum(fuzz.partial_ratio(q[a:b], c) * (b - a) for a, b in zip(cuts, cuts[1:])) / len(q)


def is_grounded(quote: str, chunk_text: str, threshold: float = 90.0) -> bool:
    return grounding_score(quote, chunk_text) >= threshold


def normalize_question(question: str) -> str:
    """Casefolded words without punctuation (``n't`` becomes ``not``)."""
    text = _NOT.sub(" not", normalize_text(question))
    return _WS.sub(" ", _PUNCT.sub(" ", text)).strip()


def _shingles(norm: str) -> list[bytes]:
    words = norm.split()
    return [g.encode() for g in set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}]


def _key_tokens(norm: str) -> frozenset[str]:
    return frozenset(w for w in norm.split() if w in _KEY_WORDS or w.isdigit())


class _Index:
    """MinHash LSH keyed by int; one MinHash is reused (clear + update_batch) for speed."""

    def __init__(self, threshold: float, num_perm: int, seed: int) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        # A pre-filter only: the shingle Jaccard of a paraphrase runs below its rapidfuzz
        # score, so index at a lower threshold (0.4: 32 bands x 4 rows, 97% recall at J=0.57).
        from datasketch import MinHash, MinHashLSH  # here: it pulls in scipy (~1.5 s), needed only to dedup

        self.lsh = MinHashLSH(threshold=min(0.9, max(0.4, threshold - 0.4)), num_perm=num_perm)
        self.m = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)

    def sketch(self, norm: str) -> bool:
        """Load ``norm`` into the shared MinHash; False for an empty question."""
        self.m.clear()
        self.m.update_batch(_shingles(norm))
        return bool(norm)

    def candidates(self) -> list[int]:
        return sorted(self.lsh.query(self.m))


class NearDuplicateFilter:
    """Drop near-duplicate questions, keeping the best-scored (then earliest) of each cluster.

    Duplicates: equal normalised text, or LSH candidates with ``ratio`` and ``token_set_ratio``
    ``>= threshold*100`` and the same wh-words, negations and numbers ("When/Where was X?" differ).
    """

    def __init__(self, threshold: float = 0.7, num_perm: int = 128, seed: int = 1) -> None:
        _Index(threshold, num_perm, seed)  # validate early
        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed

    def is_duplicate(self, a_norm: str, b_norm: str) -> bool:
        if a_norm == b_norm:
            return True
        cut = self.threshold * 100
        return (_key_tokens(a_norm) == _key_tokens(b_norm)
                and fuzz.ratio(a_norm, b_norm) >= cut
                and fuzz.token_set_ratio(a_norm, b_norm) >= cut)

    def select(self, items: Iterable[tuple[str, str, float]]) -> tuple[list[str], dict[str, str]]:
        """Return (kept ids in input order, {dropped id: kept id it duplicates})."""
        rows = list(items)
        ids = [r[0] for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        norms = [normalize_question(r[1]) for r in rows]
        scores = [-math.inf if math.isnan(s := float(r[2])) else s for r in rows]
        order = sorted(range(len(rows)), key=lambda i: (-scores[i], i))  # best first, then earliest
        index = _Index(self.threshold, self.num_perm, self.seed)
        exact: dict[str, int] = {}  # normalised question -> kept position in rows
        kept: list[int] = []  # LSH keys are positions in `kept`, so sorted keys = best first
        dropped: dict[str, str] = {}
        for i in order:
            norm, match = norms[i], exact.get(norms[i])
            if sketched := match is None and index.sketch(norm):
                match = next((kept[k] for k in index.candidates()
                              if self.is_duplicate(norm, norms[kept[k]])), None)
            if match is not None:
                dropped[ids[i]] = ids[match]
                continue
            exact[norm] = i
            if sketched:
                index.lsh.insert(len(kept), index.m, check_duplication=False)
            kept.append(i)
        return [ids[i] for i in sorted(kept)], dropped


_JSON_FIELDS = ("question", "prompt", "input", "instruction", "query")


def _record_question(rec: object, where: str) -> list[str]:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key in _JSON_FIELDS:
        if isinstance(rec.get(key), str) and rec[key].strip():
            return [rec[key].strip()]
    out = []
    for msg in rec.get("messages") if isinstance(rec.get("messages"), list) else []:
        text = msg.get("content") if isinstance(msg, dict) and msg.get("role") == "user" else None
        if isinstance(text, list):  # OpenAI content parts
            text = " ".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
        out += [text.strip()] if isinstance(text, str) and text.strip() else []
    if out:
        return out
    raise ValueError(f"{where}: no question found (expected one of {', '.join(_JSON_FIELDS)}"
                     " or user 'messages')")


def _json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON: {e}") from e


def _load_one(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".txt", ".csv"):
        raise ValueError(f"{path}: unsupported benchmark file type {suffix or '(none)'!r}"
                         " (use .jsonl, .json, .txt or .csv)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read benchmark file: {e}") from e
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if suffix == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            col = next((f for f in reader.fieldnames or [] if f.strip().lower() == "question"), None)
            if col is None:
                raise ValueError(f"{path}: CSV has no 'question' column (columns: {reader.fieldnames})")
            return [row[col].strip() for row in reader if (row.get(col) or "").strip()]
        except csv.Error as e:
            raise ValueError(f"{path}: malformed CSV: {e}") from e
    if suffix == ".jsonl":
        lines = [(f"{path}:{n}", ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        return [q for where, ln in lines for q in _record_question(_json(ln, where), where)]
    data = _json(text, str(path))
    if isinstance(data, list):
        return [q for n, rec in enumerate(data) for q in _record_question(rec, f"{path}[{n}]")]
    if isinstance(data, dict) and isinstance(data.get("data"), list):  # SQuAD
        try:
            return [qa["question"].strip() for art in data["data"] for para in art["paragraphs"]
                    for qa in para["qas"] if qa["question"].strip()]
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: malformed SQuAD file ({e!r})") from e
    raise ValueError(f"{path}: expected a SQuAD-format object or a list of records")


def load_questions(paths: Sequence[Path]) -> list[str]:
    """Questions from benchmark files (.jsonl, .json SQuAD/list, .txt, .csv), in order."""
    return [q for p in paths for q in _load_one(Path(p))]


class Decontaminator:
    """Find generated questions that nearly match a benchmark question."""

    def __init__(self, questions: Sequence[str], threshold: float = 0.8,
                 num_perm: int = 128, seed: int = 1) -> None:
        self.threshold, self._index = threshold, _Index(threshold, num_perm, seed)
        self._exact: dict[str, int] = {}  # normalised -> position in _questions
        self._questions: list[str] = []
        for q in questions:
            if (norm := normalize_question(q)) and norm not in self._exact:
                self._exact[norm] = key = len(self._questions)
                self._index.sketch(norm)
                self._index.lsh.insert(key, self._index.m, check_duplication=False)
                self._questions.append(q)
        self._norms = list(self._exact)

    def __len__(self) -> int:
        return len(self._questions)

    def match(self, question: str) -> str | None:
        """The benchmark question ``question`` nearly matches (best score, then earliest)."""
        norm = normalize_question(question)
        if norm in self._exact or not norm:
            return self._questions[self._exact[norm]] if norm else None
        self._index.sketch(norm)
        scored = [(fuzz.token_set_ratio(norm, self._norms[k]), -k) for k in self._index.candidates()]
        score, k = max(scored, default=(0.0, 0))
        return self._questions[-k] if score >= self.threshold * 100 else None
