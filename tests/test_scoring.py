"""Closed-book scoring: EM / F1 / contains against hand-computed values, and the paired bootstrap."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from qagen.evaluation import scoring
from qagen.evaluation.scoring import (
    GroupScore,
    Interval,
    ScoredQuestion,
    Scores,
    contains,
    exact_match,
    f1,
    mean_interval,
    normalize_answer,
    normalize_tokens,
    paired_bootstrap,
    score_answer,
    score_table,
    summarize,
)


def test_normalisation_is_squads():
    # lowercase, punctuation dropped (not replaced: "U.S." -> "us"), articles dropped, blanks collapsed
    assert normalize_tokens("  The U.S. is\ta  Country, an old one!") == ["us", "is", "country", "old", "one"]
    assert normalize_answer("The  Eiffel-Tower.") == "eiffeltower"
    assert normalize_tokens("Theatre anthem") == ["theatre", "anthem"]  # whole words only


def test_eiffel_tower():
    # pred [eiffel, tower, in, paris] vs gold [eiffel, tower]: 2 common tokens,
    # precision 2/4, recall 2/2, F1 = 2 * 0.5 * 1 / 1.5 = 2/3; not equal; the gold is a token run in it.
    pred, gold = "The Eiffel Tower in Paris", ["Eiffel Tower"]
    assert f1(pred, gold) == pytest.approx(2 / 3)
    assert exact_match(pred, gold) == 0.0
    assert contains(pred, gold) == 1.0
    assert score_answer(pred, gold) == Scores(0.0, pytest.approx(2 / 3), 1.0)


def test_repeated_tokens_count_once_per_match():
    # pred [cat, cat, sat] vs gold [cat, sat, on, mat]: common = min(2, 1) cat + 1 sat = 2;
    # precision 2/3, recall 2/4; F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7.
    assert f1("the cat cat sat", ["cat sat on mat"]) == pytest.approx(4 / 7)


def test_max_over_golds():
    # "Paris" vs "Paris, France": precision 1/1, recall 1/2, F1 = 2/3; "London": 0. No exact match,
    # and the two-token gold is not inside the one-token prediction.
    golds = ["London", "Paris, France"]
    assert (exact_match("Paris", golds), f1("Paris", golds), contains("Paris", golds)) == (0.0, pytest.approx(2 / 3), 0.0)
    golds.append("the Paris!")  # normalises to "paris": all three hit 1
    assert (exact_match("Paris", golds), f1("Paris", golds), contains("Paris", golds)) == (1.0, 1.0, 1.0)


def test_a_bare_string_is_one_gold():
    assert exact_match("Paris", "paris") == 1.0
    assert contains("in Paris", "Paris") == 1.0
    assert f1("Paris", "P") == 0.0  # not the characters of "Paris" as golds


def test_contains_whole_token_runs():
    assert contains("Parisian food", ["Paris"]) == 0.0
    assert contains("it is in New York City", ["new york"]) == 1.0
    assert contains("york new", ["new york"]) == 0.0  # order matters
    assert contains("Paris", ["Paris France"]) == 0.0  # gold longer than the prediction


def test_empty_prediction_and_empty_golds():
    assert score_answer("", ["Paris"]) == Scores(0.0, 0.0, 0.0)
    assert score_answer("Paris", []) == Scores(0.0, 0.0, 0.0)
    # a gold that normalises to nothing: EM and F1 follow SQuAD (empty == empty), contains never matches
    assert score_answer("", ["The"]) == Scores(1.0, 1.0, 0.0)
    assert score_answer("Paris", ["The"]) == Scores(0.0, 0.0, 0.0)


# --- bootstrap -------------------------------------------------------------------
def test_constant_difference_gives_a_point_interval():
    a, b = [1.0, 0.5, 0.75], [0.75, 0.25, 0.5]  # a - b = 0.25 exactly, for every question
    assert paired_bootstrap(a, b) == Interval(0.25, 0.25, 0.25, 3)
    assert paired_bootstrap([0.6], [0.2]) == Interval(pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.4), 1)


A = [1, 1, 0, 1, 0, 1, 1, 0, 1, 1]  # mean 7/10
B = [0, 1, 0, 0, 0, 1, 0, 0, 1, 0]  # mean 3/10; a - b = [1,0,0,1,0,0,1,0,0,1], mean 4/10


def test_mean_is_exact_and_inside_the_interval():
    iv = paired_bootstrap(A, B, seed=7)
    assert iv.mean == pytest.approx(0.4) and iv.n == 10
    assert 0.0 <= iv.low <= iv.mean <= iv.high <= 1.0
    assert iv.low < iv.high


def test_interval_widens_with_fewer_questions():
    small, big = paired_bootstrap(A, B, seed=3), paired_bootstrap(A * 10, B * 10, seed=3)
    assert small.mean == pytest.approx(big.mean) == pytest.approx(0.4)
    # the standard error shrinks ~ 1/sqrt(n): about 0.31 wide for 10 questions, 0.10 for 100
    assert big.high - big.low < (small.high - small.low) / 2


def test_two_point_case_by_hand():
    # d = [0, 1]: a resample mean is 0 with probability 1/4, 0.5 with 1/2, 1 with 1/4, so the
    # 2.5% and 97.5% percentiles of 2000 resamples are exactly 0 and 1.
    assert paired_bootstrap([0, 1], [0, 0]) == Interval(0.5, 0.0, 1.0, 2)


def test_deterministic_for_a_seed():
    assert paired_bootstrap(A, B, seed=11) == paired_bootstrap(A, B, seed=11)
    runs = {paired_bootstrap(A * 3, B * 3, seed=s, n=500) for s in range(5)}
    assert len(runs) > 1  # the seed is used


def test_paired_noise_shared_by_both_models_changes_nothing():
    noise = [3, -2, 5, 0, 7, -4, 1, 2, -1, 6]  # integers: a + e - (b + e) == a - b exactly
    shifted = paired_bootstrap([x + e for x, e in zip(A, noise)], [y + e for y, e in zip(B, noise)], seed=5)
    assert shifted == paired_bootstrap(A, B, seed=5)
    # an unpaired view of the same data would see the noise: the single means' intervals are far wider
    alone = mean_interval([x + e for x, e in zip(A, noise)], seed=5)
    assert alone.high - alone.low > 2 * (shifted.high - shifted.low)


def test_mean_interval_is_the_bootstrap_of_the_values():
    diffs = [x - y for x, y in zip(A, B)]
    assert mean_interval(diffs, seed=2, n=300) == paired_bootstrap(A, B, seed=2, n=300)


def test_a_wider_level_gives_a_wider_interval():
    narrow, wide = paired_bootstrap(A, B, level=0.5), paired_bootstrap(A, B, level=0.99)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


def test_resamples_drawn_in_chunks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(scoring, "_CHUNK", 25)  # 2 resamples of 10 questions per draw
    iv = paired_bootstrap(A, B, seed=1, n=101)
    assert iv == paired_bootstrap(A, B, seed=1, n=101)
    assert iv.low <= 0.4 <= iv.high


def test_empty_input_is_nan():
    iv = paired_bootstrap([], [])
    assert iv.n == 0 and iv.empty and not iv.excludes_zero()
    assert math.isnan(iv.mean) and math.isnan(iv.low) and math.isnan(iv.high)


def test_bad_input():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(A, B, level=1.0)
    with pytest.raises(ValueError, match="resample"):
        paired_bootstrap(A, B, n=0)
    with pytest.raises(ValueError, match="NaN"):
        mean_interval([0.5, float("nan")])


def test_excludes_zero():
    assert Interval(0.2, 0.1, 0.3, 5).excludes_zero()
    assert Interval(-0.2, -0.3, -0.1, 5).excludes_zero()
    assert not Interval(0.1, -0.1, 0.3, 5).excludes_zero()


# --- aggregation -------------------------------------------------------------------
ROWS = [
    ScoredQuestion(Scores(0, 0.5, 0), Scores(1, 1, 1), kind="who", source="a.md"),
    ScoredQuestion(Scores(1, 1, 1), Scores(1, 1, 1), kind="who", source="b.md"),
    ScoredQuestion(Scores(0, 0, 0), Scores(0, 0.25, 1), kind="what", source="a.md"),
]


def test_score_table_by_kind():
    table = score_table(ROWS, lambda r: r.kind)
    assert list(table) == ["what", "who"]  # sorted
    who = table["who"]
    assert who.count == 2
    assert who.base == Scores(0.5, 0.75, 0.5) and who.tuned == Scores(1.0, 1.0, 1.0)
    assert who.delta_f1.mean == pytest.approx(0.25) and who.delta_em.mean == pytest.approx(0.5)
    assert who.delta_f1.n == 2 and who.delta_f1.low <= 0.25 <= who.delta_f1.high
    what = table["what"]  # one question: every interval is a point
    assert what.count == 1 and what.delta_f1 == Interval(0.25, 0.25, 0.25, 1)
    assert what.delta_contains == Interval(1.0, 1.0, 1.0, 1) and what.delta_em == Interval(0.0, 0.0, 0.0, 1)


def test_summarize_all_rows_and_to_dict():
    overall = summarize(ROWS, seed=4)
    # base F1 (0.5 + 1 + 0) / 3 = 0.5, tuned (1 + 1 + 0.25) / 3 = 0.75; F1 gains [0.5, 0, 0.25], mean 0.25
    assert overall.count == 3
    assert overall.base.f1 == pytest.approx(0.5) and overall.tuned.f1 == pytest.approx(0.75)
    assert overall.delta_f1.mean == pytest.approx(0.25)
    d = overall.to_dict()
    assert d["count"] == 3 and d["base_f1"] == pytest.approx(0.5) and d["tuned_contains"] == pytest.approx(1.0)
    assert d["delta_f1"] == pytest.approx(0.25) and d["delta_f1_low"] <= 0.25 <= d["delta_f1_high"]
    assert set(d) >= {"base_em", "tuned_em", "delta_em_low", "delta_contains_high"}


def test_score_table_takes_any_row_with_base_and_tuned():
    @dataclass(frozen=True)
    class Row:
        doc: str
        base: Scores
        tuned: Scores

    rows = [Row("d1", Scores(0, 0, 0), Scores(1, 1, 1)), Row("d2", Scores(1, 1, 1), Scores(1, 1, 1))]
    table = score_table(rows, lambda r: r.doc)
    assert isinstance(table["d1"], GroupScore) and table["d1"].delta_f1 == Interval(1.0, 1.0, 1.0, 1)


def test_empty_table_and_empty_summary():
    assert score_table([], lambda r: r.kind) == {}
    empty = summarize([])
    assert empty.count == 0 and math.isnan(empty.base.f1) and empty.delta_f1.empty
