"""Load a held-out question file for ``qagen eval --questions FILE`` (closed-book knowledge eval).

The format follows the extension (case-insensitive):

* ``.jsonl``: one object a line, ``{"question": ..., "answer": ...}`` or ``"answers": [...]``,
  optional ``source`` (a document path relative to the ingested folder), ``doc_id`` (32 hex
  digits, or the 10-digit short form), ``kind`` (a free label such as "who"), ``id``, and ``context`` (the
  passage the question was written from; the exam writes it as ``quote``), which ``--open-book`` uses to
  find the question's chunk.
  Blank lines are skipped; other keys are ignored.
* ``.csv``: a header row naming the same columns (case and surrounding blanks ignored); the
  ``answers`` cell may hold several answers separated by ``|``.
* ``.json``: SQuAD v1.1 (``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``);
  each qa keeps its distinct answer texts in order, its ``id``, the article ``title`` and the
  passage as ``context``. SQuAD v2 questions marked ``is_impossible`` have no answer and are
  skipped. A top-level JSON list of JSONL-style objects is accepted too.

Both ``answer`` and ``answers`` may be given: they are combined (``answer`` first) and repeats
dropped. Every problem raises :class:`InputError` naming the file and where (``line 3``, or a
JSON path such as ``data[0].paragraphs[2].qas[1]``), at the first bad entry; nothing is
returned from a file with any bad entry, and a file with no questions is an error too.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from qagen.config import file_limits
from qagen.core import jsonfile
from qagen.core.errors import InputError
from qagen.core.ids import SHORT_LEN

_DOC_ID = re.compile(rf"[0-9a-f]{{32}}|[0-9a-f]{{{SHORT_LEN}}}")
FORMATS = (".jsonl", ".csv", ".json")


@dataclass(frozen=True)
class Question:
    """One held-out question and its accepted answers (at least one, none empty)."""

    question: str
    answers: tuple[str, ...]
    source: str = ""  # document path relative to the ingested folder, as written in the file
    doc_id: str = ""  # full (32 hex) or short (10 hex) document ID, lowercased
    kind: str = ""  # free label ("who", "title"...) for per-kind scores
    title: str = ""  # SQuAD: the article title
    context: str = ""  # SQuAD: the passage the question was written from
    qid: str = ""  # the file's own ID for the question (SQuAD ``id``, JSONL ``id``)
    line: int = 0  # 1-based line in a JSONL/CSV file (the first line of a CSV record); 0 for JSON


class _Bad(Exception):
    """A problem with one entry; the caller adds the file and, unless ``where`` says it, the location."""

    def __init__(self, what: str, where: str = "") -> None:
        super().__init__(what)
        self.what, self.where = what, where


def load_questions(path: Path) -> list[Question]:
    """The questions of ``path`` in file order; :class:`InputError` on anything unusable."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise InputError(f"{path}: unknown question file type {path.suffix or '(no extension)'!r}: "
                         f"use {', '.join(FORMATS)}")
    if not path.is_file():
        raise InputError(f"question file not found: {path}" if not path.exists() else f"{path}: not a file")
    limits = file_limits()
    try:
        text = jsonfile.read_text(path, limits.max_question_file_bytes)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    parse = {".jsonl": _load_jsonl, ".csv": _load_csv, ".json": _load_json}[ext]
    questions = parse(path, text)
    if not questions:
        raise InputError(f"{path}: no questions in the file")
    try:
        jsonfile.check_count(len(questions), limits.max_questions)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    return questions


# --- shared field checks ----------------------------------------------------------------
def _text(value: object, name: str) -> str:
    """An optional string field: absent/None -> ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"`{name}` must be a string, got {type(value).__name__}")
    return value.strip()


def _answers(answer: object, answers: object, *, split: bool = False) -> tuple[str, ...]:
    out: list[str] = []
    if answer is not None:
        out.append(_text(answer, "answer"))
    if answers is not None:
        if split and isinstance(answers, str):
            answers = answers.split("|")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise _Bad("`answers` must be a list of strings")
        out.extend(a.strip() for a in answers)
    kept = tuple(dict.fromkeys(a for a in out if a))
    if not kept:
        raise _Bad("no answer: give a non-empty `answer` or `answers`"
                   if answer is not None or answers is not None else "missing `answer` (or `answers`)")
    return kept


def _question_text(value: object) -> str:
    if value is None:
        raise _Bad("missing `question`")
    question = _text(value, "question")
    if not question:
        raise _Bad("empty question")
    return question


def _doc_id(value: object) -> str:
    doc = _text(value, "doc_id").lower()
    if doc and not _DOC_ID.fullmatch(doc):
        raise _Bad(f"`doc_id` {doc!r} is not a document ID (32 hex digits, or the {SHORT_LEN}-digit short form)")
    return doc


def _qid(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value, "id")


def _from_mapping(obj: object, line: int = 0, *, split: bool = False) -> Question:
    if not isinstance(obj, dict):
        raise _Bad(f"expected an object with `question` and `answer`, got {type(obj).__name__}")
    return Question(question=_question_text(obj.get("question")),
                    answers=_answers(obj.get("answer"), obj.get("answers"), split=split),
                    source=_text(obj.get("source"), "source"), doc_id=_doc_id(obj.get("doc_id")),
                    kind=_text(obj.get("kind"), "kind"), qid=_qid(obj.get("id")), line=line,
                    context=_text(obj.get("context"), "context") or _text(obj.get("quote"), "quote"))


# --- the formats ----------------------------------------------------------------
def _load_jsonl(path: Path, text: str) -> list[Question]:
    out: list[Question] = []
    max_bytes = file_limits().max_question_bytes
    for number, raw in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not raw.strip():
            continue
        try:
            try:
                jsonfile.check_line(raw, number, max_bytes)
                obj = jsonfile.loads(raw)
            except ValueError as e:
                raise _Bad(str(e).replace(f"line {number} is", "it is")) from None
            out.append(_from_mapping(obj, number))
        except _Bad as e:
            raise InputError(f"{path}: line {number}: {e}") from None
    return out


def _load_csv(path: Path, text: str) -> list[Question]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: list[Question] = []
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            number, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            try:
                if header is None:
                    header = [cell.strip().lower() for cell in row]
                    _check_header(header)
                    continue
                if len(row) > len(header):
                    raise _Bad(f"{len(row)} fields but the header has {len(header)} columns")
                cells = dict(zip(header, row))
                out.append(_from_mapping({k: v for k, v in cells.items() if k}, number, split=True))
            except _Bad as e:
                raise InputError(f"{path}: line {number}: {e}") from None
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    return out


def _check_header(header: list[str]) -> None:
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    if dupes:
        raise _Bad(f"header repeats the column {dupes[0]!r}")
    if "question" not in header:
        raise _Bad(f"header has no `question` column (columns: {', '.join(c for c in header if c) or 'none'})")
    if "answer" not in header and "answers" not in header:
        raise _Bad("header has no `answer` or `answers` column")


def _load_json(path: Path, text: str) -> list[Question]:
    if not text.strip():
        return []
    try:
        top = jsonfile.loads(text)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    where = ""
    try:
        if isinstance(top, list):  # a list of JSONL-style objects
            out = []
            for i, obj in enumerate(top):
                where = f"[{i}]"
                out.append(_from_mapping(obj))
            return out
        where = "top level"
        if not isinstance(top, dict) or "data" not in top:
            raise _Bad('expected SQuAD JSON ({"data": [...]}) or a list of question objects')
        return _squad(top["data"])
    except _Bad as e:
        raise InputError(f"{path}: {e.where or where}: {e.what}") from None


def _items(value: object, where: str, name: str) -> list[object]:
    if not isinstance(value, list):
        raise _Bad(f"`{name}` must be a list" if value is not None else f"missing `{name}`", where)
    return value


def _squad(data: object) -> list[Question]:
    out: list[Question] = []
    for i, article in enumerate(_items(data, "top level", "data")):
        at = f"data[{i}]"
        if not isinstance(article, dict):
            raise _Bad("expected an article object", at)
        try:
            title = _text(article.get("title"), "title")
        except _Bad as e:
            raise _Bad(e.what, at) from None
        for j, para in enumerate(_items(article.get("paragraphs"), at, "paragraphs")):
            pat = f"{at}.paragraphs[{j}]"
            if not isinstance(para, dict):
                raise _Bad("expected a paragraph object", pat)
            context = para.get("context")
            if context is not None and not isinstance(context, str):
                raise _Bad("`context` must be a string", pat)
            for k, qa in enumerate(_items(para.get("qas"), pat, "qas")):
                qat = f"{pat}.qas[{k}]"
                if isinstance(qa, dict) and qa.get("is_impossible") is True:
                    continue  # SQuAD v2: no answer to score against
                out.append(_squad_qa(qa, qat, title, context or ""))
    return out


def _squad_qa(qa: object, where: str, title: str, context: str) -> Question:
    if not isinstance(qa, dict):
        raise _Bad("expected a question object", where)
    try:
        question, qid = _question_text(qa.get("question")), _qid(qa.get("id"))
    except _Bad as e:
        raise _Bad(e.what, where) from None
    texts: list[str] = []
    for n, ans in enumerate(_items(qa.get("answers"), where, "answers")):
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), str):
            raise _Bad('expected {"text": "...", "answer_start": ...}', f"{where}.answers[{n}]")
        if ans["text"].strip():
            texts.append(ans["text"].strip())
    if not texts:
        raise _Bad("no answer", where)
    return Question(question, tuple(dict.fromkeys(texts)), title=title, context=context, qid=qid)
