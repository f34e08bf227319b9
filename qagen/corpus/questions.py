"""Question files, read by one loader into one record (:class:`Question`), for two uses:

* held-out questions, scored against their answers: ``qagen eval --questions FILE`` (closed and open book), the
  run's ``exam.jsonl``, the knowledge benchmark: :func:`load_questions`;
* benchmark questions a generated question must not nearly match (``qagen ingest --decontaminate FILE``):
  :func:`question_texts`, which reads the same formats with ``answered=False`` (below).

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
returned from a file with any bad entry, and a file with no questions is an error too. The file's size,
a JSONL line's size and the number of questions are capped (:class:`qagen.config.FileLimits`).

``answered=False`` (a benchmark file, read only for its questions): an answer is optional; a record's question
may be named ``prompt``, ``input``, ``instruction`` or ``query`` instead, or be the user turns of its
``messages`` (a chat row: one question per user turn); a question left blank (a CSV cell, a SQuAD entry, a
record's ``question``) is skipped; SQuAD v2's unanswerable questions count; ``.txt`` is read too (one question
a line, blank lines skipped); and a file with no questions is no error.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qagen.config import file_limits
from qagen.core import jsonfile
from qagen.core.errors import InputError
from qagen.core.ids import SHORT_LEN

_DOC_ID = re.compile(rf"[0-9a-f]{{32}}|[0-9a-f]{{{SHORT_LEN}}}")
FORMATS = (".jsonl", ".csv", ".json")
BENCHMARK_FORMATS = (*FORMATS, ".txt")  # a text file holds questions without answers
# A benchmark record's question when it has no `question` (instruction and chat datasets), in this order.
QUESTION_ALIASES = ("prompt", "input", "instruction", "query")


@dataclass(frozen=True)
class Question:
    """One question and its accepted answers: at least one, none empty (a benchmark file's may have none)."""

    question: str
    answers: tuple[str, ...]
    source: str = ""  # document path relative to the ingested folder, as written in the file
    doc_id: str = ""  # full (32 hex) or short (10 hex) document ID, lowercased
    kind: str = ""  # free label ("who", "title"...) for per-kind scores
    title: str = ""  # SQuAD: the article title
    context: str = ""  # SQuAD: the passage the question was written from
    qid: str = ""  # the file's own ID for the question (SQuAD ``id``, JSONL ``id``)
    line: int = 0  # 1-based line in a JSONL/CSV/TXT file (the first line of a CSV record); 0 for JSON


class _Bad(Exception):
    """A problem with one entry; the caller adds the file and, unless ``where`` says it, the location."""

    def __init__(self, what: str, where: str = "") -> None:
        super().__init__(what)
        self.what, self.where = what, where


def load_questions(path: Path, *, answered: bool = True) -> list[Question]:
    """The questions of ``path`` in file order; :class:`InputError` on anything unusable.

    ``answered=False``: a benchmark file's questions, answers optional (see the module docstring)."""
    path = Path(path)
    ext = path.suffix.lower()
    formats = FORMATS if answered else BENCHMARK_FORMATS
    if ext not in formats:
        raise InputError(f"{path}: unknown question file type {path.suffix or '(no extension)'!r}: "
                         f"use {', '.join(formats)} (other types are unsupported)")
    if not path.is_file():
        raise InputError(f"question file not found: {path}" if not path.exists() else f"{path}: not a file")
    limits = file_limits()
    try:
        text = jsonfile.read_text(path, limits.max_question_file_bytes)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    parse = {".jsonl": _load_jsonl, ".csv": _load_csv, ".json": _load_json, ".txt": _load_txt}[ext]
    questions = parse(path, text, answered)
    if not questions and answered:
        raise InputError(f"{path}: no questions in the file")
    try:
        jsonfile.check_count(len(questions), limits.max_questions)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    return questions


def question_texts(paths: Iterable[Path]) -> list[str]:
    """The questions of benchmark files, in order (``answered=False``): what decontamination compares with."""
    return [q.question for path in paths for q in load_questions(Path(path), answered=False)]


# --- shared field checks ----------------------------------------------------------------
def _text(value: object, name: str) -> str:
    """An optional string field: absent/None -> ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"`{name}` must be a string, got {type(value).__name__}")
    return value.strip()


def _answers(answer: object, answers: object, *, split: bool = False, answered: bool = True) -> tuple[str, ...]:
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
    if not kept and answered:
        raise _Bad("no answer: give a non-empty `answer` or `answers`"
                   if answer is not None or answers is not None else "missing `answer` (or `answers`)")
    return kept


def _question_text(value: object, *, answered: bool = True) -> str:
    """The question; "" for a blank one in a benchmark file (``answered=False``: skipped)."""
    if value is None:
        raise _Bad("missing `question`")
    question = _text(value, "question")
    if not question and answered:
        raise _Bad("empty question")
    return question


def _benchmark_texts(obj: dict[str, object]) -> list[str]:
    """A benchmark record's question: ``question`` or an alias, else its user turns; [] when it is left blank."""
    for key in ("question", *QUESTION_ALIASES):
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            return [value.strip()]
    turns = []
    for message in obj.get("messages") if isinstance(obj.get("messages"), list) else []:  # type: ignore[union-attr]
        text = message.get("content") if isinstance(message, dict) and message.get("role") == "user" else None
        if isinstance(text, list):  # OpenAI content parts
            text = " ".join(str(part.get("text", "")) for part in text if isinstance(part, dict))
        turns += [text.strip()] if isinstance(text, str) and text.strip() else []
    if turns or any(isinstance(obj.get(key), str) for key in ("question", *QUESTION_ALIASES)):
        return turns
    raise _Bad(f"no question: expected `question`, {', '.join(f'`{k}`' for k in QUESTION_ALIASES)}"
               " or user `messages`")


def _doc_id(value: object) -> str:
    doc = _text(value, "doc_id").lower()
    if doc and not _DOC_ID.fullmatch(doc):
        raise _Bad(f"`doc_id` {doc!r} is not a document ID (32 hex digits, or the {SHORT_LEN}-digit short form)")
    return doc


def _qid(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value, "id")


def _from_mapping(obj: object, line: int = 0, *, split: bool = False, answered: bool = True) -> list[Question]:
    """The record's question (a benchmark chat row: one per user turn; a blank benchmark question: none)."""
    if not isinstance(obj, dict):
        raise _Bad(f"expected an object with `question` and `answer`, got {type(obj).__name__}")
    texts = [_question_text(obj.get("question"))] if answered else _benchmark_texts(obj)
    if not texts:
        return []
    answers = _answers(obj.get("answer"), obj.get("answers"), split=split, answered=answered)
    source, doc_id = _text(obj.get("source"), "source"), _doc_id(obj.get("doc_id"))
    kind, qid = _text(obj.get("kind"), "kind"), _qid(obj.get("id"))
    context = _text(obj.get("context"), "context") or _text(obj.get("quote"), "quote")
    return [Question(question=text, answers=answers, source=source, doc_id=doc_id, kind=kind, qid=qid, line=line,
                     context=context) for text in texts]


# --- the formats ----------------------------------------------------------------
def _lines(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines with their 1-based numbers, each within the line cap."""
    max_bytes = file_limits().max_question_bytes
    for number, raw in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not raw.strip():
            continue
        try:
            jsonfile.check_line(raw, number, max_bytes)
        except ValueError as e:
            raise InputError(f"{path}: line {number}: {str(e).replace(f'line {number} is', 'it is')}") from None
        yield number, raw


def _load_jsonl(path: Path, text: str, answered: bool) -> list[Question]:
    out: list[Question] = []
    for number, raw in _lines(path, text):
        try:
            try:
                obj = jsonfile.loads(raw)
            except ValueError as e:
                raise _Bad(str(e)) from None
            out += _from_mapping(obj, number, answered=answered)
        except _Bad as e:
            raise InputError(f"{path}: line {number}: {e}") from None
    return out


def _load_txt(path: Path, text: str, answered: bool) -> list[Question]:
    """A benchmark file of questions, one a line (``answered=False`` only: a line has no answer)."""
    return [Question(raw.strip(), (), line=number) for number, raw in _lines(path, text)]


def _load_csv(path: Path, text: str, answered: bool) -> list[Question]:
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
                    _check_header(header, answered)
                    continue
                if len(row) > len(header):
                    raise _Bad(f"{len(row)} fields but the header has {len(header)} columns")
                cells = dict(zip(header, row))
                out += _from_mapping({k: v for k, v in cells.items() if k}, number, split=True, answered=answered)
            except _Bad as e:
                raise InputError(f"{path}: line {number}: {e}") from None
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    return out


def _check_header(header: list[str], answered: bool) -> None:
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    if dupes:
        raise _Bad(f"header repeats the column {dupes[0]!r}")
    if "question" not in header:
        raise _Bad(f"header has no `question` column (columns: {', '.join(c for c in header if c) or 'none'})")
    if answered and "answer" not in header and "answers" not in header:
        raise _Bad("header has no `answer` or `answers` column")


def _load_json(path: Path, text: str, answered: bool) -> list[Question]:
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
                out += _from_mapping(obj, answered=answered)
            return out
        where = "top level"
        if not isinstance(top, dict) or "data" not in top:
            raise _Bad('expected SQuAD JSON ({"data": [...]}) or a list of question objects')
        return _squad(top["data"], answered)
    except _Bad as e:
        raise InputError(f"{path}: {e.where or where}: {e.what}") from None


def _items(value: object, where: str, name: str) -> list[object]:
    if not isinstance(value, list):
        raise _Bad(f"`{name}` must be a list" if value is not None else f"missing `{name}`", where)
    return value


def _squad(data: object, answered: bool) -> list[Question]:
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
                if answered and isinstance(qa, dict) and qa.get("is_impossible") is True:
                    continue  # SQuAD v2: no answer to score against (a benchmark's question all the same)
                out += _squad_qa(qa, qat, title, context or "", answered)
    return out


def _squad_qa(qa: object, where: str, title: str, context: str, answered: bool) -> list[Question]:
    if not isinstance(qa, dict):
        raise _Bad("expected a question object", where)
    try:
        question, qid = _question_text(qa.get("question"), answered=answered), _qid(qa.get("id"))
    except _Bad as e:
        raise _Bad(e.what, where) from None
    if not question:
        return []  # a blank benchmark question
    texts: list[str] = []
    given = qa.get("answers")
    for n, ans in enumerate(_items(given, where, "answers") if answered or given is not None else []):
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), str):
            raise _Bad('expected {"text": "...", "answer_start": ...}', f"{where}.answers[{n}]")
        if ans["text"].strip():
            texts.append(ans["text"].strip())
    if not texts and answered:
        raise _Bad("no answer", where)
    return [Question(question, tuple(dict.fromkeys(texts)), title=title, context=context, qid=qid)]
