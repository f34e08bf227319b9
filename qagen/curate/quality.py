"""Quality filters for generated Q/A pairs: grounding, near-duplicates, decontamination.

* :func:`grounding_score` / :func:`is_grounded`: does the supporting quote occur in its
  chunk? (rapidfuzz ``partial_ratio`` after normalising case, whitespace, quotes, dashes)
* :class:`NearDuplicateFilter`: drop near-duplicate questions, keeping the best-scored
  of each cluster.  MinHash LSH over word 1-/2-gram shingles is only a high-recall
  pre-filter; candidates are verified with rapidfuzz.
* :class:`Decontaminator` finds generated questions that nearly match a benchmark question (the files are read
  by :func:`qagen.corpus.questions.question_texts`, the one question-file loader).
"""

from __future__ import annotations

import math
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

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


# Words too common to say two questions are alike: left out of the single-word shingles (the word pairs
# keep them). Shared alone, they made unrelated questions of one template ("What did ... do in ...?")
# share LSH buckets, so each question had thousands of candidates (benchmarks/RESULTS.md, "Near-duplicate filtering at scale").
_COMMON = frozenset(
    ["a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "from", "into", "about", "as", "and", "or", "but", "is", "are", "was", "were", "be", "been", "being", "do", "does", "did", "has", "have", "had", "will", "would", "can", "could", "should", "may", "might", "must", "shall", "this", "that", "these", "those", "it", "its", "his", "her", "their", "he", "she", "they", "them", "we", "you", "i", "what", "who", "whom", "whose", "which", "when", "where", "why", "how"]
)


def shingles(norm: str) -> list[bytes]:
    words = norm.split()
    single = {w for w in words if w not in _COMMON} or set(words)
    return [g.encode() for g in single | {f"{a} {b}" for a, b in zip(words, words[1:])}]


def _key_tokens(norm: str) -> frozenset[str]:
    return frozenset(w for w in norm.split() if w in _KEY_WORDS or w.isdigit())


def _key_string(norm: str) -> str:
    """The key tokens as one comparable string (stored once per kept question)."""
    return " ".join(sorted(_key_tokens(norm)))


class _Sketcher:
    """MinHash of a question's shingles, cut into the LSH bands datasketch would use for ``threshold``."""

    def __init__(self, threshold: float, num_perm: int, seed: int) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        # here: datasketch pulls in scipy (~1.5 s), needed only to dedup
        from datasketch import MinHash, MinHashLSH

        # A pre-filter only: the shingle Jaccard of a paraphrase runs below its rapidfuzz
        # score, so index at a lower threshold (0.4: 32 bands x 4 rows, 97% recall at J=0.57).
        lsh = MinHashLSH(threshold=min(0.9, max(0.4, threshold - 0.4)), num_perm=num_perm)
        self.ranges = [(i * lsh.r, (i + 1) * lsh.r) for i in range(lsh.b)]
        self.m = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)

    def bands(self, norm: str) -> list[tuple[int, bytes]]:
        self.m.clear()
        self.m.update_batch(shingles(norm))
        values = self.m.hashvalues
        return [(i, values[a:b].tobytes()) for i, (a, b) in enumerate(self.ranges)]


class _Index:
    """In-memory MinHash LSH keyed by int, for the decontamination index (as big as the benchmark files)."""

    def __init__(self, threshold: float, num_perm: int, seed: int) -> None:
        from datasketch import MinHash, MinHashLSH

        _Sketcher(threshold, num_perm, seed)  # validates the threshold
        self.lsh = MinHashLSH(threshold=min(0.9, max(0.4, threshold - 0.4)), num_perm=num_perm)
        self.m = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)

    def sketch(self, norm: str) -> bool:
        """Load ``norm`` into the shared MinHash; False for an empty question."""
        self.m.clear()
        self.m.update_batch(shingles(norm))
        return bool(norm)

    def candidates(self) -> list[int]:
        return sorted(self.lsh.query(self.m))


class DedupSession:
    """One dedup pass kept on disk (a private temporary SQLite database), so memory stays flat.

    ``add`` every candidate, then iterate ``run()``: best score first (then
    earliest), each question is dropped as a duplicate of the first kept one it
    matches, else kept and indexed by its LSH bands.

    A question is compared with at most ``MAX_CANDIDATES`` kept questions: those
    that share the most LSH bands with it (a paraphrase shares most of its
    bands; questions that only share a template's words, "What did ... do in
    1905?", share few), visited best-kept first as before. Without the cap, a
    corpus of similar questions made every question a candidate of thousands,
    and the pass quadratic.
    """

    MAX_CANDIDATES = 64

    def __init__(self, f: NearDuplicateFilter) -> None:
        self.f = f
        self.sketcher = _Sketcher(f.threshold, f.num_perm, f.seed)
        self.scratch = sqlite3.connect("")  # "": a private on-disk temp database, deleted on close
        # scratch data: no journal, no fsync; a bounded 64 MB page cache (the band index is the hot part)
        self.scratch.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;"
            "CREATE TABLE items(pos INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, question TEXT NOT NULL, "
            "norm TEXT NOT NULL, score REAL NOT NULL, kept INTEGER);"
            "CREATE TABLE exact(norm TEXT PRIMARY KEY, pos INTEGER NOT NULL);"
            "CREATE TABLE bands(band INTEGER NOT NULL, h BLOB NOT NULL, k INTEGER NOT NULL);"
            "CREATE INDEX bands_by_key ON bands(band, h);"
            # a kept question's normalised text and key tokens, so candidates come back in one query
            "CREATE TABLE kept(k INTEGER PRIMARY KEY, pos INTEGER NOT NULL, norm TEXT NOT NULL, keys TEXT NOT NULL);"
        )
        self.n = 0
        n = len(self.sketcher.ranges)
        # one indexed lookup per band, in one statement (a row-value IN over VALUES scans the table)
        hits = " UNION ALL ".join(["SELECT k FROM bands WHERE band=? AND h=?"] * n)
        self._lookup = (
            "SELECT kp.pos, kp.norm, kp.keys FROM kept kp JOIN "
            f"(SELECT k, count(*) AS shared FROM ({hits}) GROUP BY k ORDER BY shared DESC, k LIMIT ?) top "
            "ON top.k=kp.k ORDER BY kp.k"
        )

    def add(self, item_id: str, question: str, score: float) -> None:
        score = -math.inf if math.isnan(score := float(score)) else score
        try:
            self.scratch.execute("INSERT INTO items VALUES(?,?,?,?,?,NULL)",
                            (self.n, item_id, question, normalize_question(question), score))
        except sqlite3.IntegrityError:
            raise ValueError(f"item ids must be unique: {item_id!r}") from None
        self.n += 1

    def run(self) -> Iterator[tuple[str, str, str, str]]:
        """Yield (dropped id, kept id, dropped question, kept question)."""
        db, f = self.scratch, self.f
        order = db.execute("SELECT pos, id, question, norm FROM items ORDER BY score DESC, pos")
        while rows := order.fetchmany(512):
            for pos, item_id, question, norm in rows:
                row = db.execute("SELECT pos FROM exact WHERE norm=?", (norm,)).fetchone()
                match = row[0] if row else None
                bands: list[tuple[int, bytes]] = []
                keys = _key_string(norm)
                if match is None and norm:
                    bands = self.sketcher.bands(norm)
                    found = db.execute(self._lookup, [*(x for band in bands for x in band), self.MAX_CANDIDATES])
                    for other, other_norm, other_keys in found:  # kept order = best first
                        if other_keys == keys and f.similar(norm, other_norm):
                            match = other
                            break
                if match is not None:
                    kept_id, kept_q = db.execute("SELECT id, question FROM items WHERE pos=?", (match,)).fetchone()
                    yield item_id, kept_id, question, kept_q
                    continue
                db.execute("INSERT INTO exact VALUES(?,?)", (norm, pos))
                db.execute("UPDATE items SET kept=1 WHERE pos=?", (pos,))
                if bands:
                    k = db.execute("INSERT INTO kept(pos, norm, keys) VALUES(?,?,?)", (pos, norm, keys)).lastrowid
                    db.executemany("INSERT INTO bands VALUES(?,?,?)", [(b, h, k) for b, h in bands])

    def kept_ids(self) -> list[str]:
        return [r[0] for r in self.scratch.execute("SELECT id FROM items WHERE kept=1 ORDER BY pos")]

    def close(self) -> None:
        self.scratch.close()


class NearDuplicateFilter:
    """Drop near-duplicate questions, keeping the best-scored (then earliest) of each cluster.

    Duplicates: equal normalised text, or LSH candidates with ``ratio`` and ``token_set_ratio``
    ``>= threshold*100`` and the same wh-words, negations and numbers ("When/Where was X?" differ).
    The index lives in a temporary SQLite database (:class:`DedupSession`): memory does not grow
    with the corpus.
    """

    def __init__(self, threshold: float = 0.7, num_perm: int = 128, seed: int = 1) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed

    def is_duplicate(self, a_norm: str, b_norm: str) -> bool:
        if a_norm == b_norm:
            return True
        return _key_tokens(a_norm) == _key_tokens(b_norm) and self.similar(a_norm, b_norm)

    def similar(self, a_norm: str, b_norm: str) -> bool:
        """The fuzzy half of :meth:`is_duplicate` (the caller has compared the key tokens)."""
        cut = self.threshold * 100
        return fuzz.ratio(a_norm, b_norm) >= cut and fuzz.token_set_ratio(a_norm, b_norm) >= cut

    def session(self) -> DedupSession:
        return DedupSession(self)

    def select(self, items: Iterable[tuple[str, str, float]]) -> tuple[list[str], dict[str, str]]:
        """Return (kept ids in input order, {dropped id: kept id it duplicates})."""
        session = self.session()
        try:
            for item_id, question, score in items:
                session.add(item_id, question, score)
            dropped = {d: k for d, k, _, _ in session.run()}
            return session.kept_ids(), dropped
        finally:
            session.close()


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
