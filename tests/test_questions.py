"""Held-out question files for `qagen eval --questions`: JSONL, CSV, SQuAD JSON, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qagen.core.errors import InputError
from qagen.corpus.questions import Question, load_questions

FULL_ID = "0123456789abcdef0123456789abcdef"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(tmp_path: Path, *lines: object, name: str = "q.jsonl") -> Path:
    return write(tmp_path, name, "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")


def squad(*articles: dict) -> str:
    return json.dumps({"version": "1.1", "data": list(articles)})


def load_error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        load_questions(path)
    assert str(path) in str(info.value)
    return str(info.value)


# --- JSONL ------------------------------------------------------------------
def test_jsonl_answer_answers_and_optional_fields(tmp_path: Path):
    path = jsonl(
        tmp_path,
        {"question": "Who wrote it?", "answer": "Ada"},
        "",
        {"question": " Where? ", "answers": ["Paris", "paris, France", "Paris"], "source": "notes/a.md",
         "doc_id": FULL_ID.upper(), "kind": "where", "id": "q2", "extra": 1},
        {"question": "Which doc?", "answers": ["x"], "doc_id": FULL_ID[:10], "id": 7},
    )
    assert load_questions(path) == [
        Question("Who wrote it?", ("Ada",), line=1),
        Question("Where?", ("Paris", "paris, France"), source="notes/a.md", doc_id=FULL_ID, kind="where",
                 qid="q2", line=3),
        Question("Which doc?", ("x",), doc_id=FULL_ID[:10], qid="7", line=4),
    ]


def test_jsonl_answer_and_answers_combine(tmp_path: Path):
    path = jsonl(tmp_path, {"question": "Q?", "answer": "b", "answers": ["a", "b", " "]})
    assert load_questions(path)[0].answers == ("b", "a")


def test_jsonl_line_separator_inside_a_string_is_not_a_new_line(tmp_path: Path):
    path = write(tmp_path, "q.jsonl", '{"question": "a\u2028b?", "answer": "c"}\n{"question": "d?", "answer": "e"}\n')
    assert [q.line for q in load_questions(path)] == [1, 2]


@pytest.mark.parametrize(("line", "problem"), [
    ("{not json", "not JSON"),
    ('["a list"]', "expected an object"),
    ({"answer": "x"}, "missing `question`"),
    ({"question": "  ", "answer": "x"}, "empty question"),
    ({"question": 3, "answer": "x"}, "`question` must be a string"),
    ({"question": "Q?"}, "missing `answer`"),
    ({"question": "Q?", "answer": ""}, "no answer"),
    ({"question": "Q?", "answers": []}, "no answer"),
    ({"question": "Q?", "answers": "a"}, "`answers` must be a list of strings"),
    ({"question": "Q?", "answers": ["a", 2]}, "`answers` must be a list of strings"),
    ({"question": "Q?", "answer": 1912}, "`answer` must be a string"),
    ({"question": "Q?", "answer": "x", "doc_id": "abc"}, "`doc_id` 'abc' is not a document ID"),
    ({"question": "Q?", "answer": "x", "source": ["a.md"]}, "`source` must be a string"),
])
def test_jsonl_errors_name_the_line(tmp_path: Path, line: object, problem: str):
    good = {"question": "Fine?", "answer": "yes"}
    path = jsonl(tmp_path, good, "", line, "{also bad")  # line 3 is the first bad one: line 4 is never reached
    message = load_error(path)
    assert "line 3: " in message and problem in message and "line 4" not in message


# --- CSV --------------------------------------------------------------------
def test_csv_columns_and_pipe_split(tmp_path: Path):
    path = write(tmp_path, "q.csv",
                 "Question, Answers ,source,doc_id,kind,id\n"
                 '"Who wrote\n""it""?",Ada| Ada Lovelace ||Ada,a.md,,who,1\n'
                 "\n"
                 f"Where?,Paris,,{FULL_ID[:10]},,\n")
    assert load_questions(path) == [
        Question('Who wrote\n"it"?', ("Ada", "Ada Lovelace"), source="a.md", kind="who", qid="1", line=2),
        Question("Where?", ("Paris",), doc_id=FULL_ID[:10], line=5),
    ]


def test_csv_answer_column_is_not_split(tmp_path: Path):
    path = write(tmp_path, "q.csv", "question,answer\nWhich?,A|B\n")
    assert load_questions(path)[0].answers == ("A|B",)


def test_csv_with_excel_bom_and_crlf(tmp_path: Path):
    path = tmp_path / "q.csv"
    path.write_bytes("\ufeffquestion,answers\r\nQ1?,a|b\r\nQ2?,c\r\n".encode())
    assert [(q.question, q.answers, q.line) for q in load_questions(path)] == [("Q1?", ("a", "b"), 2),
                                                                                ("Q2?", ("c",), 3)]


@pytest.mark.parametrize(("row", "problem"), [
    (",x", "empty question"),
    ("Q?,", "no answer"),
    ("Q?, | ", "no answer"),
    ("Q?,x,extra", "3 fields but the header has 2 columns"),
])
def test_csv_errors_name_the_line(tmp_path: Path, row: str, problem: str):
    path = write(tmp_path, "q.csv", f"question,answers\nFine?,yes\n{row}\n,also bad\n")
    message = load_error(path)
    assert "line 3: " in message and problem in message


@pytest.mark.parametrize(("text", "line"), [
    ('question,answer\nQ?,"x"y\n', 2),  # text after a closing quote
    ('question,answer\nQ?,a\nR?,"never closed\nmore\n', 4),  # reported where the data ran out
])
def test_csv_syntax_errors(tmp_path: Path, text: str, line: int):
    message = load_error(write(tmp_path, "q.csv", text))
    assert f"line {line}: not valid CSV" in message


def test_csv_quote_inside_an_unquoted_cell_is_text(tmp_path: Path):
    assert load_questions(write(tmp_path, "q.csv", 'question,answer\nHow big?,5" screen\n'))[0].answers == ('5" screen',)


@pytest.mark.parametrize(("header", "problem"), [
    ("query,answer", "no `question` column"),
    ("question,reply", "no `answer` or `answers` column"),
    ("question,answer,Answer", "repeats the column 'answer'"),
])
def test_csv_header_errors(tmp_path: Path, header: str, problem: str):
    message = load_error(write(tmp_path, "q.csv", f"{header}\nQ?,a\n"))
    assert "line 1: " in message and problem in message


# --- SQuAD ------------------------------------------------------------------
def test_squad_nested_structure(tmp_path: Path):
    path = write(tmp_path, "dev.json", squad(
        {"title": "Eiffel_Tower", "paragraphs": [
            {"context": "The tower is in Paris. ", "qas": [
                {"id": "e1", "question": "Where is the tower?",
                 "answers": [{"text": "Paris", "answer_start": 16}, {"text": "Paris", "answer_start": 16},
                             {"text": "in Paris", "answer_start": 13}, {"text": "Paris ", "answer_start": 16}]},
            ]},
            {"context": "Built in 1889.", "qas": [
                {"id": "e2", "question": "When?", "answers": [{"text": "1889", "answer_start": 9}]},
                {"id": "e3", "question": "Unanswerable?", "answers": [], "is_impossible": True},
            ]},
        ]},
        {"title": "Ada", "paragraphs": [{"context": "Ada wrote notes.", "qas": [
            {"id": "a1", "question": "Who?", "answers": [{"text": "Ada", "answer_start": 0}]}]}]},
    ))
    assert load_questions(path) == [
        Question("Where is the tower?", ("Paris", "in Paris"), title="Eiffel_Tower",
                 context="The tower is in Paris. ", qid="e1"),
        Question("When?", ("1889",), title="Eiffel_Tower", context="Built in 1889.", qid="e2"),
        Question("Who?", ("Ada",), title="Ada", context="Ada wrote notes.", qid="a1"),
    ]
    assert all(q.source == "" and q.doc_id == "" for q in load_questions(path))


def _qa(**fields: object) -> dict:
    return {"id": "x", "question": "Q?", "answers": [{"text": "A", "answer_start": 0}], **fields}


@pytest.mark.parametrize(("bad_qa", "where", "problem"), [
    ({"id": "x", "answers": [{"text": "A"}]}, "data[0].paragraphs[2].qas[1]", "missing `question`"),
    (_qa(question=""), "data[0].paragraphs[2].qas[1]", "empty question"),
    (_qa(answers=[]), "data[0].paragraphs[2].qas[1]", "no answer"),
    (_qa(answers=[{"text": "  "}]), "data[0].paragraphs[2].qas[1]", "no answer"),
    (_qa(answers=None), "data[0].paragraphs[2].qas[1]", "missing `answers`"),
    (_qa(answers=["A"]), "data[0].paragraphs[2].qas[1].answers[0]", "expected {\"text\""),
    ("not an object", "data[0].paragraphs[2].qas[1]", "expected a question object"),
])
def test_squad_errors_name_the_json_path(tmp_path: Path, bad_qa: object, where: str, problem: str):
    paragraphs = [{"context": "c", "qas": [_qa()]}, {"context": "c", "qas": []},
                  {"context": "c", "qas": [_qa(), bad_qa, "also bad"]}]
    message = load_error(write(tmp_path, "dev.json", squad({"title": "T", "paragraphs": paragraphs})))
    assert f": {where}: " in message and problem in message


@pytest.mark.parametrize(("text", "where", "problem"), [
    ('{"data": [1]}', "data[0]", "expected an article object"),
    ('{"data": [{"title": "T"}]}', "data[0]", "missing `paragraphs`"),
    ('{"data": [{"title": 5, "paragraphs": []}]}', "data[0]", "`title` must be a string"),
    ('{"data": [{"paragraphs": [{"context": "c"}]}]}', "data[0].paragraphs[0]", "missing `qas`"),
    ('{"data": [{"paragraphs": [{"context": 1, "qas": []}]}]}', "data[0].paragraphs[0]", "`context` must be"),
    ('{"data": {}}', "top level", "`data` must be a list"),
    ('{"questions": []}', "top level", "expected SQuAD JSON"),
])
def test_squad_structure_errors(tmp_path: Path, text: str, where: str, problem: str):
    message = load_error(write(tmp_path, "dev.json", text))
    assert f": {where}: " in message and problem in message


def test_json_syntax_error_names_the_line(tmp_path: Path):
    message = load_error(write(tmp_path, "dev.json", '{"data": [\n  {"title": "T",\n  oops}\n]}'))
    assert "line 3 column 3" in message and "not JSON" in message


def test_json_list_of_question_objects(tmp_path: Path):
    path = write(tmp_path, "q.json", json.dumps([{"question": "Q?", "answer": "A", "kind": "who"}]))
    assert load_questions(path) == [Question("Q?", ("A",), kind="who")]
    message = load_error(write(tmp_path, "bad.json", json.dumps([{"question": "Q?", "answer": "A"}, {"q": 1}])))
    assert ": [1]: missing `question`" in message


# --- files ------------------------------------------------------------------
@pytest.mark.parametrize(("name", "text"), [
    ("q.jsonl", ""), ("q.jsonl", "\n  \n\n"), ("q.csv", ""), ("q.csv", "question,answer\n\n"),
    ("q.json", ""), ("q.json", '{"data": []}'), ("q.json", "[]"),
    ("q.json", squad({"title": "T", "paragraphs": [{"context": "c", "qas": [
        {"id": "x", "question": "Q?", "answers": [], "is_impossible": True}]}]})),
])
def test_a_file_without_questions_is_an_error(tmp_path: Path, name: str, text: str):
    assert "no questions" in load_error(write(tmp_path, name, text))


@pytest.mark.parametrize("name", ["q.txt", "q.yaml", "questions"])
def test_unknown_extension(tmp_path: Path, name: str):
    message = load_error(write(tmp_path, name, "question,answer\nQ?,A\n"))
    assert "unknown question file type" in message and ".jsonl" in message


def test_extension_is_case_insensitive(tmp_path: Path):
    assert load_questions(write(tmp_path, "Q.JSONL", '{"question": "Q?", "answer": "A"}'))[0].answers == ("A",)


def test_missing_file_and_directory(tmp_path: Path):
    assert "not found" in load_error(tmp_path / "nope.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    assert "not a file" in load_error(tmp_path / "dir.jsonl")


def test_not_utf8(tmp_path: Path):
    path = tmp_path / "q.csv"
    path.write_bytes(b"question,answer\nQ?,caf\xe9\n")
    assert "not UTF-8" in load_error(path)


def test_input_error_is_a_value_error(tmp_path: Path):
    with pytest.raises(ValueError):
        load_questions(tmp_path / "nope.csv")


# --- benchmark files (decontamination reads them with the same loader) -------------------------------------------
def test_a_benchmark_file_needs_no_answers_and_keeps_unanswerable_questions(tmp_path: Path):
    from qagen.corpus.questions import question_texts

    qas = [{"id": "a", "question": "Answered?", "answers": [{"text": "A", "answer_start": 0}]},
           {"id": "b", "question": "Impossible?", "answers": [], "is_impossible": True},
           {"id": "c", "question": "  ", "answers": []}]
    path = write(tmp_path, "dev.json", squad({"title": "T", "paragraphs": [{"context": "c", "qas": qas}]}))
    assert question_texts([path]) == ["Answered?", "Impossible?"]  # a blank question is skipped
    assert "empty question" in load_error(path)  # held out, every question needs text and an answer
    held_out = jsonl(tmp_path, {"question": "Who?", "answer": "Ada"}, {"question": "When?", "answers": ["1843"]})
    assert question_texts([held_out]) == [q.question for q in load_questions(held_out)]


def test_benchmark_line_cap_is_per_record_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from qagen.corpus.questions import question_texts

    monkeypatch.setenv("QAGEN_MAX_QUESTION_BYTES", "1000")
    one_line = write(tmp_path, "dev.json", squad({"title": "T", "paragraphs": [{"context": "c" * 2000, "qas": [
        {"id": "a", "question": "Q?", "answers": []}]}]}))  # SQuAD as published: one long line
    assert question_texts([one_line]) == ["Q?"]
    long_txt = write(tmp_path, "q.txt", "Fine?\n" + "x" * 2000 + "?\n")
    with pytest.raises(InputError, match=r"q\.txt: line 2: it is"):
        question_texts([long_txt])
