"""`qagen review` without a browser: the server's guard (token, loopback), decisions applied by export, the
checks-vs-human statistics against a hand computation, and the judge threshold set from ratings.

Runs are real: the pipeline over the stub OpenAI server (HTTP), a real SQLite store. Where a test needs known
judge scores it writes them into the ``verdicts`` table, as the judge step does.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import pytest

from qagen.config import load_settings
from qagen.core.errors import InputError
from qagen.output.export import export_dpo, export_run
from qagen.pipeline.ingest import ingest
from qagen.review import stats
from qagen.review.items import Decisions, load
from qagen.review.server import ReviewServer
from qagen.store import Store
from qagen.testing import StubServer
from tests.helpers import db_rows, passage_reply


@pytest.fixture
def run_out(tmp_path: Path, corpus: Path) -> Path:
    """A finished run with the judge and the filters on: 24 exported pairs, 18 dropped by a filter."""
    out = tmp_path / "out"
    with StubServer(passage_reply) as stub:
        settings = load_settings(base_url=stub.base_url, model="stub-model", max_retries=0, concurrency=4,
                                 refine=False, judge=True, dedup=False, report=False, exam=False, filters=True,
                                 suite="broad", facts_k=1)
        summary = ingest(corpus, out, settings)
    assert summary.status == "ok" and summary.verdicts.get("too_short") and summary.verdicts.get("exported")
    return out


def _items(store: Store) -> list:
    return [item for doc in load(store, 1) for item in doc.items]


def _get(server: ReviewServer, path: str, *, host: str | None = None, token: str | None = None,
         method: str = "GET", body: bytes | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    headers = {"Host": host or f"{server.host}:{server.port}"}
    if token is not None:
        headers["X-Qagen-Token"] = token
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, response.headers


def test_the_page_refuses_a_request_without_the_token(run_out: Path):
    with Store(run_out) as store, ReviewServer(store, 1) as server:
        key = _items(store)[0].key
        decide = json.dumps({"key": key, "decision": "reject"}).encode()
        assert _get(server, "/")[0] == 403
        assert _get(server, "/api/pairs")[0] == 403
        assert _get(server, "/?token=wrong")[0] == 403
        assert _get(server, "/api/pairs", token=server.token[:-1])[0] == 403
        assert _get(server, "/api/review", method="POST", body=decide)[0] == 403
        assert _get(server, "/api/review", method="POST", body=decide, token="nope")[0] == 403
        # the right token from another origin's name (DNS rebinding): refused too
        assert _get(server, f"/?token={server.token}", host=f"evil.example:{server.port}")[0] == 403
        assert db_rows(store, "SELECT count(*) FROM reviews") == [(0,)]  # nothing was written

        status, page, headers = _get(server, f"/?token={server.token}")
        assert status == 200 and b"qagen review" in page
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert b"http://" not in page and b"https://" not in page  # no external assets
        status, data, _ = _get(server, "/api/pairs", token=server.token)
        assert status == 200 and len(json.loads(data)["documents"]) == 2
        status, data, _ = _get(server, "/api/review", method="POST", body=decide, token=server.token)
        assert status == 200 and json.loads(data)["decision"] == "reject"
        assert db_rows(store, "SELECT review_key, decision FROM reviews") == [(key, "reject")]
        bad = json.dumps({"key": "not-a-pair-of-this-run", "decision": "accept"}).encode()
        assert _get(server, "/api/review", method="POST", body=bad, token=server.token)[0] == 404


def test_the_server_binds_to_loopback_only(run_out: Path):
    with Store(run_out) as store:
        with pytest.raises(InputError, match="loopback"):
            ReviewServer(store, 1, host="0.0.0.0")
        with ReviewServer(store, 1) as server:
            assert server.httpd.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # this machine's outward address
                probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent
                outward = probe.getsockname()[0]
            if not outward.startswith("127."):
                with pytest.raises(OSError):
                    socket.create_connection((outward, server.port), timeout=2).close()
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def _exported(out: Path) -> dict[str, dict]:
    rows = {}
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (out / name).read_text().splitlines():
            row = json.loads(line)
            rows[row["pair_id"]] = row
    return rows


def test_export_applies_decisions(run_out: Path):
    with Store(run_out) as store:
        items = _items(store)
        kept = [i for i in items if i.verdict == "exported"]
        dropped = next(i for i in items if i.verdict == "too_short")
        decisions = Decisions(store, 1)
        decisions.apply(kept[0].key, decision="reject")
        decisions.apply(kept[1].key, answer="A better answer, written by a person.")
        decisions.apply(dropped.key, decision="accept")
        group = json.loads((run_out / "train.jsonl").read_text().splitlines()[0])["group_id"]
        result = export_run(store, 1, run_out, group, eval_fraction=0.1, split_by="auto")
        _, dpo = export_dpo(store, 1, run_out, group)
        counts = store.review_counts(1)
    rows = _exported(run_out)
    assert result.train_pairs + result.eval_pairs == len(kept) - 1 + 1
    assert kept[0].pair_id not in rows
    edited = rows[kept[1].pair_id]
    assert edited["messages"][2]["content"] == "A better answer, written by a person."
    assert edited["edited"] == "human" and edited["original"] == {"question": kept[1].question,
                                                                   "answer": kept[1].answer}
    rescued = rows[dropped.pair_id]
    assert rescued["overrode"] == "too_short" and rescued["review"] == "accepted"
    assert dpo == 1
    line = json.loads((run_out / "dpo.jsonl").read_text())
    assert line["chosen"]["content"] == "A better answer, written by a person."
    assert line["rejected"]["content"] == kept[1].answer and line["source_of_preference"] == "human"
    assert counts == {"accepted": 2, "rejected": 1, "edited": 1, "overrides": 1}


def test_a_rejected_pair_with_an_accepted_sibling_is_a_preference(run_out: Path):
    with Store(run_out) as store:
        a, b = [i for i in _items(store) if i.verdict == "exported"][:2]
        # a sibling: the same chunk and question, another answer (as --best-of or a re-run would write it)
        store.db.execute("UPDATE pairs SET chunk_id=?, question=? WHERE pair_id=?", (a.chunk_id, a.question, b.pair_id))
        b = next(i for i in _items(store) if i.pair_id == b.pair_id)
        Decisions(store, 1).apply(a.key, decision="accept")
        Decisions(store, 1).apply(b.key, decision="reject")
        found = store.review_preferences(1)
    assert [(rp.pair.pair_id, rejected) for rp, rejected in found] == [(a.pair_id, b.answer)]


# The hand-computed fixture: (verdict, judge score, grounded, the human's call) for eight rated pairs; the run's
# judge threshold is 0.5. "edit" counts as a rejection of the pair as generated.
FIXTURE = [
    ("exported", 0.9, 1, "accept"),
    ("exported", 0.8, 1, "reject"),
    ("judge_rejected", 0.2, 1, "reject"),
    ("judge_rejected", 0.4, None, "accept"),
    ("too_short", None, None, "reject"),
    ("too_short", None, None, "accept"),
    ("ungrounded", 0.7, 0, "reject"),
    ("exported", 0.6, 1, "edit"),
]
# By hand. judge (scored: 1,2,3,4,7,8; drops 3,4; bad 2,3,7,8): TP 1, FP 1, FN 3, TN 1.
# grounding (checked: 1,2,3,7,8; drops 7): TP 1, FP 0, FN 3, TN 1. too_short (all 8; drops 5,6): TP 1, FP 1, FN 4,
# TN 2. ungrounded (drops 7): TP 1, FP 0, FN 4, TN 3. any check (drops 3-7): TP 3, FP 2, FN 2, TN 1.
EXPECTED = [
    ("judge", 6, 1, 1, 3, 1, 0.5, 0.25),
    ("grounding", 5, 1, 0, 3, 1, 1.0, 0.25),
    ("too_short", 8, 1, 1, 4, 2, 0.5, 0.2),
    ("ungrounded", 8, 1, 0, 4, 3, 1.0, 0.2),
    ("any check", 8, 3, 2, 2, 1, 0.6, 0.6),
]


def _rate(store: Store, plan: list[tuple[str, float | None, int | None, str]]) -> list:
    items = _items(store)
    assert len(items) >= len(plan)
    decisions = Decisions(store, 1)
    for item, (verdict, score, grounded, call) in zip(items, plan, strict=False):
        store.db.execute("UPDATE verdicts SET verdict=?, judge_score=?, grounded=? WHERE run_id=1 AND pair_id=?",
                         (verdict, score, grounded, item.pair_id))
        if call == "edit":
            decisions.apply(item.key, answer=item.answer + " (fixed)")
        else:
            decisions.apply(item.key, decision=call)
    return items


def test_stats_match_a_hand_computation(run_out: Path):
    with Store(run_out) as store:
        _rate(store, FIXTURE)
        rows = stats.agreement(store, 1)
    got = [(r.check, r.rated, r.tp, r.fp, r.fn, r.tn, r.precision, r.recall) for r in rows]
    assert got == EXPECTED


def test_stats_on_the_command_line(run_out: Path):
    from tests.test_cli import run

    with Store(run_out) as store:
        _rate(store, FIXTURE)
    proc = run("review", str(run_out), "--stats", "--json")
    assert proc.returncode == 0, proc.stderr
    checks = json.loads(proc.stdout)["checks"]
    assert [(c["check"], c["tp"], c["fp"], c["fn"], c["tn"], c["precision"], c["recall"]) for c in checks] == \
        [(e[0], *e[2:]) for e in EXPECTED]


def _calibration_plan(n: int) -> list[tuple[str, float | None, int | None, str]]:
    """N rated pairs: every third one the human rejects (judge scores 0.1-0.6 in turn), the rest it accepts (scores
    0.75-0.95): the cut that agrees best is halfway between 0.6 and 0.75."""
    bad = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    good = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    plan = []
    for k in range(n):
        if k % 3 == 0:
            score = bad[(k // 3) % 6]
            plan.append(("judge_rejected" if score < 0.5 else "exported", score, None, "reject"))
        else:
            plan.append(("exported", good[k % 6], None, "accept"))
    return plan


def test_calibrate_picks_the_threshold_that_agrees_with_the_human(run_out: Path):
    from tests.test_cli import run

    with Store(run_out) as store:
        _rate(store, _calibration_plan(29))
        with pytest.raises(InputError, match="at least 30"):
            stats.calibrate(store, 1)
        _rate(store, _calibration_plan(33))
    proc = run("review", str(run_out), "--calibrate", "--json")
    assert proc.returncode == 0, proc.stderr
    cal = json.loads(proc.stdout)["calibration"]
    # 11 rejections (scores 0.1-0.6, 0.1-0.5), 22 acceptances (0.75-0.95). At the run's 0.5 the judge passes
    # every acceptance and 3 rejections (0.5, 0.6, 0.5): balanced accuracy (22/22 + 8/11) / 2.
    assert cal == {"threshold": 0.675, "balanced_accuracy": 1.0, "current": 0.5,
                   "current_balanced_accuracy": round((1 + 8 / 11) / 2, 4), "rated": 33}
    with Store(run_out) as store:
        assert db_rows(store, "SELECT check_name, threshold, metric, value, rated FROM calibrations") == \
            [("judge", 0.675, "balanced_accuracy", 1.0, 33)]


def test_calibrate_with_too_few_ratings_exits_non_zero(run_out: Path):
    from tests.test_cli import run

    proc = run("review", str(run_out), "--calibrate")
    assert proc.returncode == 1 and "at least 30" in proc.stderr


def test_replay_a_filter_change_against_the_rated_pairs(run_out: Path, corpus: Path, tmp_path: Path):
    import shutil
    import subprocess
    import sys

    with Store(run_out) as store:
        items = _items(store)
        kept = [i for i in items if i.verdict == "exported"]
        short = next(i for i in items if i.verdict == "too_short")
        decisions = Decisions(store, 1)
        decisions.apply(kept[0].key, decision="accept")
        decisions.apply(short.key, decision="accept")  # the human says the filter was wrong
        decisions.apply(kept[1].key, decision="reject")
        decisions.apply(kept[2].key, answer="Fixed by hand.")
    trial = tmp_path / "trial"
    shutil.copytree(run_out, trial)
    with StubServer(passage_reply) as stub:  # the change: the filters off (the judge now sees what they dropped)
        settings = load_settings(base_url=stub.base_url, model="stub-model", max_retries=0, concurrency=4,
                                 refine=False, judge=True, dedup=False, report=False, exam=False, filters=False,
                                 suite="broad", facts_k=1)
        assert ingest(corpus, trial, settings).status == "ok"

    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "benchmarks/review_replay.py", str(trial), "--json", *args],
                              capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])

    proc = bench("--baseline", "1")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["baseline"]["lost"] == 1 and got["baseline"]["lost_by_check"] == {"too_short": 1}
    assert got["candidate"]["lost"] == 0 and got["candidate"]["run_id"] == 2
    for side in ("baseline", "candidate"):  # the rejected pair and the edited one pass every check in both runs
        assert (got[side]["accepted"], got[side]["rejected"], got[side]["kept_rejected"]) == (2, 2, 2)
    assert bench("--run", "1", "--baseline", "2").returncode == 1  # going back loses an accepted pair: a regression


def test_a_rejected_revision_is_no_dpo_chosen(tmp_path: Path):
    from tests.report_fixture import make_run

    out, run_id = make_run(tmp_path)  # the critic loop on: revised pairs are DPO rows
    with Store(out) as store:
        group = json.loads((out / "train.jsonl").read_text().splitlines()[0])["group_id"]
        _, before = export_dpo(store, run_id, out, group)
        rows = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]
        assert before >= 2
        items = [i for doc in load(store, run_id) for i in doc.items]
        target = next(i for i in items if i.pair_id == rows[0]["pair_id"])
        Decisions(store, run_id).apply(target.key, decision="reject")
        _, after = export_dpo(store, run_id, out, group)
    left = [json.loads(line)["pair_id"] for line in (out / "dpo.jsonl").read_text().splitlines()]
    same = [i.pair_id for i in items if i.key == target.key]  # the decision is on the content: every copy of it
    assert target.pair_id not in left and after == before - len([r for r in rows if r["pair_id"] in same])


def test_review_without_a_run_exits_non_zero(tmp_path: Path):
    from tests.test_cli import run

    proc = run("review", str(tmp_path / "nothing-here"), "--no-browser")
    assert proc.returncode == 1 and "no qagen state database" in proc.stderr


def test_the_page_highlights_the_ledger_span_or_the_quote(tmp_path: Path, corpus: Path):
    out = tmp_path / "ledger"
    with StubServer(passage_reply) as stub:  # the default suite for a served model: the fact ledger
        settings = load_settings(base_url=stub.base_url, model="stub-model", max_retries=0, concurrency=4,
                                 report=False, exam=False)
        assert ingest(corpus, out, settings).suite == "ledger"
    with Store(out) as store:
        items = [i for doc in load(store, 1) for i in doc.items]
        sources = {i.highlight_from for i in items}
        assert {"ledger", "quote"} <= sources
        for item in items:
            text = store.chunk_text(item.chunk_id) or ""
            if item.highlight_from == "ledger":
                fact = dict(json.loads(db_rows(store, "SELECT extra FROM pairs WHERE pair_id=?", item.pair_id)[0][0]))
                span = db_rows(store, "SELECT span FROM facts WHERE fact_id=?", fact["fact_id"])[0][0]
                assert text[slice(*item.highlight)] == span
            elif item.highlight_from == "quote":
                quote = dict(json.loads(db_rows(store, "SELECT extra FROM pairs WHERE pair_id=?", item.pair_id)[0][0]))
                assert text[slice(*item.highlight)].casefold() == quote["quote"].strip().casefold()
