"""Tests for qagen.curate.quality: grounding, near-duplicate filtering, decontamination."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from qagen.corpus.questions import question_texts as load_questions
from qagen.curate.quality import (
    Decontaminator,
    NearDuplicateFilter,
    grounding_score,
    is_grounded,
)

CHUNK = (
    "In his first annual message, delivered in New York on January 8, 1790, "
    "President George Washington urged Congress to provide for the common defence.\n\n"
    "\u201cA free people ought not only to be armed, but disciplined; to which end a uniform "
    "and well\u2014digested plan is requisite,\u201d he said, asking that the militia be "
    "properly organised. He also recommended the promotion of science and literature, "
    "and the encouragement of new and useful inventions from abroad. "
) * 6  # ~2,400 characters


# --- grounding ---------------------------------------------------------------

def test_grounding_accepts_real_quote_despite_case_whitespace_and_quotes():
    quote = '"a FREE people ought not only to be   armed,\nbut disciplined; to which end a uniform and well-digested plan"'
    assert grounding_score(quote, CHUNK) >= 99
    assert is_grounded(quote, CHUNK)
    assert is_grounded("urged Congress to provide for the common defence", CHUNK)


@pytest.mark.parametrize("quote", [
    "The president vetoed the banking bill and dissolved the standing army in 1791.",
    "",
    "   ",
    "armed",  # too short
    "the people of the new nation and the science of Congress",  # only common words shared
])
def test_grounding_rejects(quote):
    assert not is_grounded(quote, CHUNK)


def test_grounding_empty_and_short_score_zero():
    assert grounding_score("", CHUNK) == 0.0
    assert grounding_score("Congres", CHUNK) == 0.0
    assert grounding_score("a long enough quote", "") == 0.0


def test_grounding_quote_longer_than_chunk_uses_plain_ratio():
    short_chunk = "urged Congress to provide"
    quote = "urged Congress to provide for the common defence and a great many other things besides"
    # partial_ratio would find the whole chunk inside the quote (100); that must not count.
    assert grounding_score(quote, short_chunk) < 60
    assert not is_grounded(quote, short_chunk)


# --- near-duplicates ------------------------------------------------------------

def test_dedup_drops_paraphrase_keeping_higher_score():
    items = [
        ("a", "What did Washington ask Congress to provide for the militia?", 0.5),
        ("b", "What did George Washington ask the Congress to provide for the militia?", 0.9),
        ("c", "Which inventions did Washington want to encourage?", 0.4),
    ]
    kept, dropped = NearDuplicateFilter().select(items)
    assert kept == ["b", "c"]
    assert dropped == {"a": "b"}


def test_dedup_keeps_different_questions_on_same_topic():
    items = [  # scores out of order: the kept ids must still come back in input order
        ("when", "When was the address delivered?", 0.1),
        ("where", "Where was the address delivered?", 0.9),
        ("year", "In what year was the address delivered: 1790?", 0.5),
        ("year2", "In what year was the address delivered: 1791?", 0.7),
        ("pres", "Who was the first president?", 0.2),
        ("pres2", "Who was the first president of the Royal Society of London?", 0.3),
        ("not", "Why did Congress not fund the militia?", 0.4),
        ("why", "Why did Congress fund the militia?", 0.6),
    ]
    kept, dropped = NearDuplicateFilter().select(items)
    assert kept == [i for i, _, _ in items]
    assert dropped == {}


def test_dedup_ties_keep_earliest_and_exact_duplicates_dropped():
    items = [
        ("x1", "What did Washington recommend promoting?", 0.7),
        ("x2", "what did Washington recommend promoting", 0.7),
        ("x3", "What did Washington recommend promoting??", 0.7),
        ("x4", "What  did Washington recommend the promoting of?", 0.7),
    ]
    kept, dropped = NearDuplicateFilter().select(items)
    assert kept == ["x1"]
    assert dropped == {"x2": "x1", "x3": "x1", "x4": "x1"}


def test_dedup_rejects_duplicate_ids():
    with pytest.raises(ValueError):
        NearDuplicateFilter().select([("a", "q one", 1.0), ("a", "q two", 1.0)])


def _synthetic(n: int, seed: int = 7) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    wh = ["What", "Who", "When", "Where", "Why", "How", "Which"]
    items = []
    for i in range(n):
        q = f"{rng.choice(wh)} {' '.join(rng.choices(words, k=rng.randint(5, 12)))}?"
        if i % 10 == 9:  # a near-duplicate of an earlier item
            q = items[rng.randrange(i)][1].rstrip("?") + " exactly?"
        items.append((f"id{i}", q, rng.random()))
    return items


def test_dedup_deterministic():
    items = _synthetic(2000)
    first = NearDuplicateFilter().select(items)
    second = NearDuplicateFilter().select(list(items))
    assert first == second
    kept, dropped = first
    assert 100 < len(dropped) < 400  # the injected duplicates, give or take chance collisions
    assert len(kept) + len(dropped) == len(items)
    assert set(dropped.values()) <= set(kept)


def test_common_words_are_no_single_word_shingles():
    from qagen.curate.quality import shingles

    got = {g.decode() for g in shingles("what did kobal tisem do in 1905")}
    assert {"kobal", "tisem", "1905", "what did", "do in", "in 1905"} <= got
    assert not {"what", "did", "do", "in"} & got  # shared by every question of the template
    assert {g.decode() for g in shingles("what is it")} >= {"what", "is", "it", "what is"}  # nothing else to use


def test_dedup_candidate_cap_keeps_the_paraphrase_among_many_template_questions(monkeypatch):
    """Hundreds of questions share a template's words (and so LSH buckets); the cap on candidates per
    question keeps the ones sharing the most bands, so a real near-duplicate is still found."""
    from qagen.curate.quality import DedupSession

    rng = random.Random(3)
    vocab = ["".join(rng.choice("bcdfghjklmnprstvwz" if j % 2 == 0 else "aeiou") for j in range(5))
             for _ in range(3000)]
    words = [" ".join(rng.choice(vocab) for _ in range(6)) for _ in range(600)]
    items = [(f"q{i}", f"What did {w} do in 1905?", 0.5) for i, w in enumerate(words)]
    original = words[17].split()
    near = " ".join([*original[:5], original[5] + "s"])  # one word changed by a letter
    items.append(("near", f"What did {near} do in 1905?", 0.1))

    monkeypatch.setattr(DedupSession, "MAX_CANDIDATES", 10**9)  # every candidate (up to 181 here)
    uncapped = NearDuplicateFilter().select(items)
    monkeypatch.setattr(DedupSession, "MAX_CANDIDATES", 4)
    capped = NearDuplicateFilter().select(items)
    assert capped[1]["near"] == "q17" and uncapped[1]["near"] == "q17"
    # the cap only ever skips comparisons: what it drops, the uncapped pass drops too (the uncapped pass
    # also matches a few template look-alikes whose strings happen to score >= 80; they share few bands)
    assert capped[1].items() <= uncapped[1].items()
    assert len(capped[0]) + len(capped[1]) == len(items)


# --- decontamination --------------------------------------------------------------

@pytest.fixture
def bench_files(tmp_path: Path) -> list[Path]:
    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "Normans", "paragraphs": [
        {"context": "...", "qas": [
            {"id": "1", "question": "In what country is Normandy located?", "answers": []},
            {"id": "2", "question": "When were the Normans in Normandy?", "answers": []}]},
        {"context": "...", "qas": [
            {"id": "3", "question": "From which countries did the Norse originate?", "answers": []}]},
    ]}]}), encoding="utf-8")
    chat = tmp_path / "held_out.jsonl"
    chat.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Who was the duke in the battle of Hastings?"},
                      {"role": "assistant", "content": "William the Conqueror"}]},
        {"prompt": "What is the capital of Sicily?"},
    ]) + "\n\n", encoding="utf-8")
    txt = tmp_path / "extra.txt"
    txt.write_text("What language did the Normans speak?\n\n  \nWho ruled the Duchy of Normandy?\n",
                   encoding="utf-8")
    return [squad, chat, txt]


def test_load_questions_all_formats(bench_files, tmp_path):
    csv_file = tmp_path / "more.csv"
    csv_file.write_text('id,question\n1,"Who founded Palermo?"\n2,\n', encoding="utf-8")
    qs = load_questions([*bench_files, csv_file])
    assert qs == [
        "In what country is Normandy located?",
        "When were the Normans in Normandy?",
        "From which countries did the Norse originate?",
        "Who was the duke in the battle of Hastings?",
        "What is the capital of Sicily?",
        "What language did the Normans speak?",
        "Who ruled the Duchy of Normandy?",
        "Who founded Palermo?",
    ]


def test_decontaminator_matches_near_identical_only(bench_files):
    deco = Decontaminator(load_questions(bench_files))
    assert deco.match("In which country is Normandy located?") == "In what country is Normandy located?"
    assert deco.match("who was the Duke in the Battle of Hastings") == \
        "Who was the duke in the battle of Hastings?"
    assert deco.match("What did Washington ask Congress to provide for the militia?") is None
    assert deco.match("How many inventions did Washington encourage?") is None
    assert deco.match("") is None


@pytest.mark.parametrize("name,content,reason", [
    ("bench.xml", "<q/>", "unsupported"),
    ("bench.jsonl", '{"question": "ok?"}\nnot json\n', "invalid JSON"),
    ("bench.jsonl", '{"text": "no question field"}\n', "no question"),
    ("bench.json", '{"foo": 1}', "SQuAD"),
    ("bench.csv", "id,text\n1,hello\n", "question"),
])
def test_load_questions_bad_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=reason) as err:
        load_questions([path])
    assert str(path) in str(err.value)


def test_load_questions_missing_file(tmp_path):
    path = tmp_path / "missing.txt"
    with pytest.raises(ValueError) as err:
        load_questions([path])
    assert str(path) in str(err.value)
