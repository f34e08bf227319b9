"""Split documents into chunks, heading-aware and (optionally) token-aware.

Markdown (and reStructuredText, whose section titles are first rewritten as
``#`` headings) is cut into sections at headings ``#`` .. ``####``; each
section keeps its heading line and is then cut to size with langchain's
``RecursiveCharacterTextSplitter`` (paragraphs, then lines, then words).
Plain text only goes through the recursive splitter.

Sizes are measured in tokens of ``settings.tokenizer`` when one is given,
else estimated as ``ceil(chars / 4)``; :attr:`Chunker.unit` says which.

The section splitter is our own (linear, keeps the text verbatim) rather than
langchain's ``MarkdownHeaderTextSplitter``, which strips every line (breaking
indented code), rewrites paragraph breaks as ``"  \\n"`` and is quadratic in
the length of a section.

Identical chunk texts within one document would get the same ``chunk_id``;
only the first is kept.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from langchain_text_splitters import RecursiveCharacterTextSplitter

from qagen.core import ids
from qagen.core.types import Chunk, Document

SPLIT_LEVELS = 4  # headings # .. #### start a new section
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_RST_ADORN = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}$")  # a line of one punctuation char


@dataclass(frozen=True)
class ChunkerSettings:
    chunk_size: int = 1000
    chunk_overlap: int = 100
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        for name in ("chunk_size", "chunk_overlap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError(
                f"chunk_overlap must be >= 0 and smaller than chunk_size "
                f"({self.chunk_size}), got {self.chunk_overlap}"
            )
        if self.tokenizer is not None and not str(self.tokenizer).strip():
            object.__setattr__(self, "tokenizer", None)  # "" (e.g. from an env var) = none

    def key(self) -> str:
        """Canonical form of the settings; part of every chunk_id."""
        return json.dumps(
            {"chunker": 1, "chunk_size": self.chunk_size,
             "chunk_overlap": self.chunk_overlap, "tokenizer": self.tokenizer},
            sort_keys=True, separators=(",", ":"),
        )


class Chunker:
    """Cuts :class:`Document` values into :class:`Chunk` values."""

    def __init__(self, settings: ChunkerSettings | None = None) -> None:
        self.settings = settings or ChunkerSettings()
        self._key = self.settings.key()
        if self.settings.tokenizer:
            count = _load_tokenizer(self.settings.tokenizer)
            self.unit = f"tokens ({self.settings.tokenizer})"
            self.length: Callable[[str], int] = count
            split_length: Callable[[str], float] = count
        else:
            self.unit = "estimated tokens (chars/4, no tokenizer)"
            self.length = _estimate
            # Fractional lengths add up exactly, so splitting by words does
            # not overcount (ceil per word would); ceil(total) <= chunk_size.
            split_length = _chars_over_4
        self._splitter = _Splitter(
            chunk_size=self.settings.chunk_size,
            chunk_overlap=self.settings.chunk_overlap,
            length_function=split_length,
        )

    def chunk(self, doc: Document) -> list[Chunk]:
        if doc.fmt == "markdown":
            sections = split_sections(doc.text)
        elif doc.fmt == "rst":
            sections = split_sections(rst_to_markdown(doc.text))
        else:
            sections = [("", doc.text)]
        chunks: list[Chunk] = []
        seen: set[str] = set()
        for section, body in self._pack(sections):
            for text in self._splitter.split_text(body):
                text = text.strip()
                if not text:
                    continue
                cid = ids.chunk_id(doc.doc_id, text, self._key)
                if cid in seen:
                    continue
                seen.add(cid)
                chunks.append(Chunk(
                    chunk_id=cid, doc_id=doc.doc_id, index=len(chunks), text=text,
                    title=doc.title, section=section, n_tokens=self.length(text),
                ))
        return chunks


    def _pack(self, sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Merge neighbouring small sections up to the chunk size.

        One call per tiny section (a two-line intro, a short "See also")
        wastes a whole perspective suite on a few tokens. The merged chunk
        keeps its headings inline, and its section label is the deepest path
        the merged sections share (or the first one's, if none).
        """
        packed: list[tuple[list[str], str]] = []
        budget = self.settings.chunk_size
        for section, body in sections:
            label = clean_heading(section)
            if packed and self.length(packed[-1][1] + "\n\n" + body) <= budget:
                labels, text = packed[-1]
                packed[-1] = (labels + [label], text + "\n\n" + body)
            else:
                packed.append(([label], body))
        return [(_shared_path(labels), text) for labels, text in packed]


def _shared_path(labels: list[str]) -> str:
    if len(labels) == 1:
        return labels[0]
    parts = [label.split(" > ") for label in labels]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return " > ".join(common) if common and common != [""] else labels[0]


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def clean_heading(path: str) -> str:
    """Heading text as a reader sees it: no link syntax, permalink marks or code ticks."""
    cleaned = _MD_LINK.sub(r"\1", path).replace("\u00b6", "").replace("`", "")
    return " ".join(cleaned.split())


class _Splitter(RecursiveCharacterTextSplitter):
    """langchain's splitter with a linear ``_merge_splits`` (same output).

    The original drops pieces from the front of the window with list slicing
    and measures each piece twice: quadratic in pieces per chunk, which hurts
    when a long run without spaces is split into single characters.
    """

    def _merge_splits(self, splits: Iterable[str], separator: str) -> list[str]:
        length, size, overlap = self._length_function, self._chunk_size, self._chunk_overlap
        sep_len = length(separator)
        docs: list[str] = []
        window: deque[tuple[str, float]] = deque()
        total = 0.0
        for piece in splits:
            n = length(piece)
            if window and total + n + sep_len > size:
                doc = self._join_docs([p for p, _ in window], separator)
                if doc is not None:
                    docs.append(doc)
                while window and (total > overlap or (total + n + sep_len > size and total > 0)):
                    total -= window.popleft()[1] + (sep_len if window else 0)
                if not window:
                    total = 0.0
            window.append((piece, n))
            total += n + (sep_len if len(window) > 1 else 0)
        doc = self._join_docs([p for p, _ in window], separator)
        if doc is not None:
            docs.append(doc)
        return docs


def _estimate(text: str) -> int:
    return math.ceil(len(text) / 4)


def _chars_over_4(text: str) -> float:
    return len(text) / 4


def split_sections(markdown: str) -> list[tuple[str, str]]:
    """Cut markdown at headings ``#`` .. ``####`` (outside code fences).

    Returns ``(section_path, text)`` pairs in order; the text keeps its
    heading line(s). A heading with no body before the next heading is
    carried into the next section rather than standing alone.
    """
    sections: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    has_body = False
    fence = ""
    for line in markdown.split("\n"):
        if fence:
            if line.strip().startswith(fence):
                fence = ""
        elif m := _FENCE.match(line):
            fence = m.group(1)
        elif (m := _HEADING.match(line)) and len(m.group(1)) <= SPLIT_LEVELS and m.group(2):
            if has_body:
                sections.append((" > ".join(t for _, t in stack), "\n".join(lines).strip()))
                lines, has_body = [], False
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, m.group(2).strip()))
            lines.append(line)
            continue
        lines.append(line)
        has_body = has_body or bool(line.strip())
    if lines:
        text = "\n".join(lines).strip()
        if text:
            sections.append((" > ".join(t for _, t in stack), text))
    return sections


def rst_to_markdown(text: str) -> str:
    """Rewrite reStructuredText section titles as markdown ``#`` headings.

    A title is a line underlined (and optionally overlined) with one repeated
    punctuation character, at least as long as the title. As in docutils,
    levels follow the order in which adornment styles first appear.
    """
    lines = text.split("\n")
    out: list[str] = []
    styles: dict[tuple[str, bool], int] = {}
    i, n = 0, len(lines)
    while i < n:
        cur = lines[i]
        nxt = lines[i + 1] if i + 1 < n else ""
        if (_RST_ADORN.match(cur) and i + 2 < n and lines[i + 2] == cur
                and nxt.strip() and not _RST_ADORN.match(nxt.strip())):
            style, title, step = (cur[0], True), nxt.strip(), 3
        elif (cur.strip() and not cur[0].isspace() and not _RST_ADORN.match(cur)
              and _RST_ADORN.match(nxt) and len(nxt) >= len(cur.rstrip())
              and (i == 0 or not lines[i - 1].strip())):
            style, title, step = (nxt[0], False), cur.strip(), 2
        else:
            out.append(cur)
            i += 1
            continue
        level = styles.setdefault(style, len(styles) + 1)
        out.append("#" * min(level, 6) + " " + title)
        i += step
    return "\n".join(out)


def _load_tokenizer(spec: str) -> Callable[[str], int]:
    """Token counter for a tokenizer.json path, or an HF name/folder (local files only)."""
    path = Path(spec).expanduser()
    file = path if path.is_file() else path / "tokenizer.json" if path.is_dir() else None
    if file is None and spec.endswith(".json"):
        raise ValueError(f"tokenizer file not found: {spec}")
    if file is not None and file.is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            if path.is_file():
                raise ValueError(
                    f"tokenizer {spec!r} is a tokenizer.json file; reading it needs the "
                    "'tokenizers' package: pip install tokenizers") from None
        else:
            try:
                tok = Tokenizer.from_file(str(file))
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"could not load tokenizer file {str(file)!r}: "
                                 f"{type(e).__name__}: {str(e)[:200]}") from None
            return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ValueError(
            f"cannot load tokenizer {spec!r}: pass the path to a tokenizer.json file "
            "(needs: pip install tokenizers), or install transformers "
            "(pip install transformers) to load a Hugging Face name or folder") from None
    try:
        hf = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"could not load tokenizer {spec!r} from local files "
            f"({type(e).__name__}: {str(e)[:200]}); download it first "
            "(e.g. `huggingface-cli download NAME`) or pass a tokenizer.json path") from None
    hf.model_max_length = 10**12  # counting only: silence 'sequence too long' warnings
    return lambda text: len(hf.encode(text, add_special_tokens=False))
