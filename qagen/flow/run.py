"""``qagen run``: ingest -> quality gate -> train -> eval -> email, resumable from the state store.

Each stage skips what the store says is done for the same inputs:
- ingest is incremental by design (a re-run with no new documents makes 0 LLM calls);
- train is keyed by the dataset bytes + the rendered axolotl config (``stages`` table);
- eval is keyed by the adapter + eval.jsonl + judge.
So re-running after a crash, or in CI with the state folder restored from a
cache, continues where it stopped and pays only for what is new.

Exit codes (``FlowResult.exit_code``): 0 ok; 1 failed (including a finish email
that could not be sent: it is pending, ``qagen notify OUT/`` resends it);
2 quality gate not met (``--min-pairs``, ``--max-failure-rate``); 130 interrupted.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from qagen.config import Settings
from qagen.core import ids
from qagen.core.errors import QagenError, StageError
from qagen.flow.notify import NotifySettings, notify, resend_pending
from qagen.flow.train import TrainProgress, TrainSettings, TrainSummary
from qagen.pipeline.summary import Summary

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_GATE, EXIT_INTERRUPTED = 0, 1, 2, 130


class FlowError(StageError):
    pass


@dataclass(frozen=True)
class Gate:
    min_pairs: int = 1
    max_failure_rate: float = 0.1  # failed LLM requests / all requests of the ingest


@dataclass
class FlowResult:
    status: str = "running"  # ok | failed | gate_failed | interrupted | notify_pending
    exit_code: int = EXIT_OK
    stage: str = ""  # the stage that ended the flow
    error: str = ""
    docs_dir: str = ""
    out_dir: str = ""
    group_id: str = ""
    ingest: Summary | None = None  # the ingest's summary, as `qagen ingest --json` prints it
    train: TrainSummary | None = None
    eval: dict[str, object] = field(default_factory=dict)
    eval_table: str = ""
    knowledge: dict[str, object] = field(default_factory=dict)  # the closed-book score on held-out questions
    durations: dict[str, float] = field(default_factory=dict)
    emails_sent: int = 0
    emails_pending: int = 0

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["ingest"] = self.ingest.to_dict() if self.ingest else {}
        out["train"] = {**self.train.to_dict(), "loss_curve": self.train.loss_curve()} if self.train else {}
        return out


class FlowProgress(TrainProgress):
    """Stage headers, ingest progress (qagen.core.progress.IngestProgress) and train progress, for the CLI."""

    def stage(self, name: str, detail: str) -> None: ...

    def doc_read(self, path: str, n_chunks: int) -> None: ...

    def doc_skipped(self, path: str, reason: str) -> None: ...

    def requests_added(self, n: int) -> None: ...

    def request_done(self, *, cached: bool, failed: bool) -> None: ...

    def pairs_added(self, n: int) -> None: ...


def check_gate(summary: Summary, gate: Gate) -> str:
    """Empty when the ingest passes the quality gate, else why it does not."""
    pairs, failed = summary.pairs_total, summary.requests_failed
    asked = failed + summary.requests_sent + summary.requests_cached
    rate = failed / asked if asked else 0.0
    if pairs < gate.min_pairs:
        return f"{pairs} pairs < --min-pairs {gate.min_pairs}"
    if rate > gate.max_failure_rate:
        return f"failure rate {rate:.1%} ({failed}/{asked} requests) > --max-failure-rate {gate.max_failure_rate:.1%}"
    return ""


class Flow:
    def __init__(
        self,
        docs_dir: Path,
        out_dir: Path,
        settings: Settings,
        train_settings: TrainSettings,
        notify_settings: NotifySettings,
        *,
        gate: Gate = Gate(),
        eval_limit: int | None = None,
        prompts_dir: Path | None = None,
        progress: FlowProgress | None = None,
        questions: Path | None = None,
        open_book: bool = False,
    ):
        self.docs_dir, self.out_dir = docs_dir, out_dir
        if train_settings.recipe == "cpt+sft" and not settings.cpt:  # stage 1 trains on the ingest's OUT/cpt.jsonl
            settings = settings.model_copy(update={"cpt": True})
        self.settings, self.train_settings, self.notify_settings = settings, train_settings, notify_settings
        self.gate, self.eval_limit, self.prompts_dir = gate, eval_limit, prompts_dir
        self.questions = questions  # the user's held-out questions (else the run's exam.jsonl)
        self.open_book = open_book  # eval also asks them over input blocks (qagen.evaluation.openbook)
        self.progress = progress or FlowProgress()
        self.result = FlowResult(docs_dir=str(docs_dir), out_dir=str(out_dir))
        self._started = time.perf_counter()

    # --- helpers ----------------------------------------------------------
    def _email(self, kind: str, subject: str, body: str) -> None:
        from qagen.store import Store

        if not self.notify_settings.email:
            return
        with Store(self.out_dir) as store:
            if notify(store, self.notify_settings, None, kind, subject, body):
                self.result.emails_sent += 1
            else:
                self.result.emails_pending += 1

    def _end(self, status: str, code: int, stage: str, error: str = "") -> FlowResult:
        r = self.result
        r.status, r.exit_code, r.stage, r.error = status, code, stage, error
        r.durations["total"] = round(time.perf_counter() - self._started, 1)
        return r

    def _fail(self, stage: str, error: str, code: int = EXIT_FAILED, status: str = "failed") -> FlowResult:
        self._end(status, code, stage, error)
        subject = f"qagen run {status} at {stage}: {self.docs_dir}"
        self._email("failure", subject, f"{subject}\n\n{error}\n\n{self._status_lines()}")
        return self.result

    # --- the flow -----------------------------------------------------------
    def run(self) -> FlowResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.out_dir / ".qagen-flow.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise FlowError(f"another `qagen run` is using {self.out_dir}; wait for it or use another --out") from None
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> FlowResult:
        from qagen.store import Store

        if self.notify_settings.email:
            with Store(self.out_dir) as store:  # an earlier run's undelivered emails go first
                delivered = resend_pending(store, self.notify_settings)
                self.result.emails_sent += delivered.sent
        self._email("start", f"qagen run started: {self.docs_dir}",
                    f"qagen run started on {socket.gethostname()}\ncorpus: {self.docs_dir}\noutput: {self.out_dir}\n")
        try:
            for stage in (self._ingest, self._train, self._eval):
                if (stop := stage()) is not None:
                    return stop
        except KeyboardInterrupt:
            return self._fail(self.result.stage or "run", "interrupted (Ctrl-C or SIGTERM); run the same command "
                              "again to continue", EXIT_INTERRUPTED, "interrupted")
        self._end("ok", EXIT_OK, "done")
        pending_before = self.result.emails_pending
        self._email("finish", f"qagen run finished: {self.docs_dir} ({self.result.group_id[:10]})", self.finish_body())
        if self.result.emails_pending > pending_before:
            self.result.status, self.result.exit_code = "notify_pending", EXIT_FAILED
            self.result.error = "the finish email could not be sent; it is pending: `qagen notify OUT/` resends it"
        return self.result

    def _ingest(self) -> FlowResult | None:
        from qagen.pipeline.ingest import ingest
        from qagen.pipeline.summary import Interrupted

        self.result.stage = "ingest"
        self.progress.stage("ingest", str(self.docs_dir))
        t = time.perf_counter()
        try:
            summary = ingest(self.docs_dir, self.out_dir, self.settings, prompts_dir=self.prompts_dir,
                             progress=self.progress)  # type: ignore[arg-type]
        except Interrupted as stop:
            self.result.ingest = stop.summary
            raise KeyboardInterrupt from None
        except (QagenError, ValueError) as exc:  # ValueError: settings pydantic rejects
            return self._fail("ingest", str(exc))
        self.result.durations["ingest"] = round(time.perf_counter() - t, 1)
        self.result.ingest = summary
        self.result.group_id = summary.group_id
        if summary.status == "failed":
            return self._fail("ingest", "ingest failed: " + "; ".join(summary.failure_examples[:3]))
        if why := check_gate(self.result.ingest, self.gate):
            return self._fail("gate", f"quality gate not met: {why}", EXIT_GATE, "gate_failed")
        return None

    def _train(self) -> FlowResult | None:
        from qagen.flow.train import train
        from qagen.store import Store

        self.result.stage = "train"
        ts = self.train_settings
        self.progress.stage("train", ts.template if ts.recipe == "sft" else f"{ts.recipe}, then {ts.template}")
        t = time.perf_counter()
        try:
            with Store(self.out_dir) as store:
                summary = train(self.out_dir, self.train_settings, store, progress=self.progress)
        except QagenError as exc:
            return self._fail("train", str(exc))
        self.result.durations["train"] = round(time.perf_counter() - t, 1)
        self.result.train = summary
        return None

    def _eval(self) -> FlowResult | None:
        from qagen.evaluation.evaluate import evaluate, read_report, reference_of
        from qagen.store import Store

        self.result.stage = "eval"
        self.progress.stage("eval", "closed book, base vs tuned")
        t = time.perf_counter()
        trained = self.result.train
        assert trained is not None  # the train stage ran (or was reused) first
        adapter, base = trained.adapter_dir, trained.base_model
        eval_path = self.out_dir / "eval.jsonl"
        report_path = self.out_dir / "eval_report.json"
        key = ids.hash_json({"adapter": adapter, "train_key": trained.dataset_key, "base": base,
                             "eval": ids.hash_json(eval_path.read_text()) if eval_path.exists() else "",
                             "judge": [self.settings.base_url, self.settings.model], "limit": self.eval_limit,
                             "questions": _file_key(self.questions), "exam": _file_key(self.out_dir / "exam.jsonl"),
                             **({"open_book": True} if self.open_book else {})})
        try:
            with Store(self.out_dir) as store:
                done = store.stage_result("eval", key)
                if done is not None and report_path.exists():
                    report = read_report(report_path)
                else:
                    report = evaluate(self.out_dir, store, self.settings, base_model=base, adapter_dir=adapter,
                                      limit=self.eval_limit, threads=self.train_settings.threads,
                                      questions=self.questions, open_book=self.open_book,
                                      reference_model=reference_of(trained.to_dict()),
                                      progress=lambda line: self.progress.stage("eval", line),
                                      count=getattr(self.progress, "count", None))
                    store.record_stage(0, "eval", key, "done", {"report": str(report_path)})
                    _refresh_report(store, self.out_dir)  # report.html gains the knowledge table
        except QagenError as exc:
            return self._fail("eval", str(exc))
        self.result.durations["eval"] = round(time.perf_counter() - t, 1)
        self.result.eval = {k: v for k, v in report.to_dict().items() if k not in ("rows", "knowledge")}
        self.result.knowledge = {k: v for k, v in report.knowledge.items() if k != "rows"}
        self.result.eval_table = report.table()
        return None

    # --- messages -----------------------------------------------------------
    def _status_lines(self) -> str:
        r, ing, tr = self.result, self.result.ingest, self.result.train
        lines = [f"corpus: {r.docs_dir}", f"output: {r.out_dir}"]
        if ing:
            lines.append(f"group: {ing.group_id}")
            lines.append(f"documents: {ing.documents_read} read, {len(ing.documents_skipped)} skipped; chunks: "
                         f"{ing.chunks}")
            lines.append(f"pairs: {ing.pairs_total} ({ing.train_pairs} train, {ing.eval_pairs} eval); LLM requests: "
                         f"{ing.requests_sent} sent, {ing.requests_cached} cached, {ing.requests_failed} failed")
        if tr:
            cached = " (reused: same data and config as an earlier run)" if tr.cached else ""
            if tr.cpt:  # cpt+sft: stage 1, continued pretraining on OUT/cpt.jsonl
                lines.append(f"train stage 1 (continued pretraining): {tr.cpt.get('template')}, "
                             f"{tr.cpt.get('steps')} steps; model {tr.cpt.get('adapter_dir')}")
            lines.append(f"train: {tr.template} on {tr.base_model}, {tr.steps} steps{cached}")
            lines.append(f"train loss: {tr.loss_curve()}")
            lines.append(f"adapter: {tr.adapter_dir}")
            lines.append(f"train log: {tr.log_path}")
        lines.append("durations: " + ", ".join(f"{k} {v:.0f} s" for k, v in r.durations.items()))
        return "\n".join(lines)

    def finish_body(self) -> str:
        ev = self.result.eval
        parts = [f"qagen run finished: {self.result.status}", "", self._status_lines(), ""]
        if ev:
            title = ("eval, closed book (the model sees the question, never the passage): the knowledge score on "
                     f"held-out questions, then the format check (judge: {ev.get('judge')}):")
            parts += [title, "", self.result.eval_table, "",
                      f"full report: {Path(self.result.out_dir) / 'eval_report.json'}"]
        return "\n".join(parts) + "\n"


def _file_key(path: Path | None) -> str:
    return ids.hash_json(path.read_text()) if path is not None and path.exists() else ""


def _refresh_report(store: object, out_dir: Path) -> None:
    """Rewrite report.html with the eval's knowledge table; the eval is done either way, so a failure only logs."""
    from qagen.output.report import latest_run, write_report

    try:
        write_report(store, latest_run(store), out_dir)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - the report is a view; the eval result stands
        log.exception("rewriting report.html after the eval failed")


def run(
    docs_dir: Path,
    out_dir: Path,
    settings: Settings,
    train_settings: TrainSettings,
    notify_settings: NotifySettings,
    *,
    gate: Gate = Gate(),
    eval_limit: int | None = None,
    prompts_dir: Path | None = None,
    progress: FlowProgress | None = None,
    questions: Path | None = None,
    open_book: bool = False,
) -> FlowResult:
    """ingest -> quality gate -> train -> eval -> email; ``FlowResult.exit_code`` says how it ended."""
    return Flow(docs_dir, out_dir, settings, train_settings, notify_settings, gate=gate, eval_limit=eval_limit,
                prompts_dir=prompts_dir, progress=progress, questions=questions,
                open_book=open_book).run()
