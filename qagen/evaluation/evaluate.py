"""``qagen eval``: closed book, base model vs tuned model: the knowledge score, and a format check.

The knowledge score (``qagen.evaluation.knowledge``) comes from held-out questions
the model never trained on: the user's (``--questions FILE``) or the run's
exam (``OUT/exam.jsonl``). The pairs held out in ``eval.jsonl`` come from the
same generator as the training pairs, near-paraphrases of them when the corpus
is small, so they are reported as a format check, not as what the model knows.

Closed book: each model sees the system message (which names the document ID,
as in training) and the question, never the passage. So the score measures
what the fine-tune put into the weights.

Each answer is scored against the reference two ways:
- token F1 (SQuAD-style: lowercase, no punctuation or articles, bag of tokens);
- the judge role: an OpenAI-compatible model (the embedded one by default) says
  yes/no to "does this answer match the reference?". Judge replies are cached in
  the state store like every other request, so a re-run costs nothing.

On CPU the answers come from transformers + peft (the base HF folder, then the
same weights with the LoRA adapter on top).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qagen.core import ids
from qagen.core.errors import StageError
from qagen.corpus.questions import Question, load_questions
from qagen.evaluation import openbook
from qagen.evaluation.answer import answer
from qagen.evaluation.knowledge import (
    DocRef,
    ExamItem,
    KnowledgeReport,
    match_questions,
    score,
)
from qagen.evaluation.scoring import token_f1
from qagen.llm.base import ChatRequest, LLMError, Message
from qagen.llm.hfmodel import is_trained
from qagen.output.exam import CONTROL_KIND

if TYPE_CHECKING:
    from qagen.config import Settings
    from qagen.llm.base import LLM
    from qagen.store import Store

log = logging.getLogger(__name__)

JUDGE_SYSTEM = "You grade answers. Reply with one word: yes or no."
JUDGE_PROMPT = (
    "Question: {question}\nReference answer: {reference}\nCandidate answer: {answer}\n\n"
    "Does the candidate answer match the reference answer in meaning? Reply yes or no."
)
JUDGE_PROMPT_ID = "eval-judge-v1"


class EvalError(StageError):
    pass


@dataclass(frozen=True)
class EvalItem:
    pair_id: str
    perspective: str
    system: str
    question: str
    reference: str


@dataclass
class Scored:
    pair_id: str
    perspective: str
    question: str
    reference: str
    base_answer: str
    tuned_answer: str
    base_f1: float
    tuned_f1: float
    base_judge: bool | None  # None: the judge gave no usable verdict
    tuned_judge: bool | None


@dataclass
class EvalReport:
    eval_path: str = ""
    base_model: str = ""
    adapter_dir: str = ""
    judge: str = ""
    questions: int = 0
    overall: dict[str, dict[str, float | int | None]] = field(default_factory=dict)  # base|tuned -> metric
    per_perspective: dict[str, dict[str, dict[str, float | int | None]]] = field(default_factory=dict)
    rows: list[Scored] = field(default_factory=list)
    knowledge: dict[str, object] = field(default_factory=dict)  # KnowledgeReport.to_dict(): the knowledge score
    knowledge_table: str = ""
    open_book: dict[str, object] = field(default_factory=dict)  # OpenBookReport.to_dict(), with --open-book
    open_book_table: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        """The knowledge table, then the format check per perspective, as fixed-width text (CLI and email)."""
        parts = [t for t in (self.knowledge_table, self.open_book_table) if t]
        if self.questions:
            parts.append(f"format check: {self.questions} pairs held out in eval.jsonl (same generator as "
                         "training; not a knowledge score)\n" + self._format_table())
        return "\n\n".join(parts)

    def _format_table(self) -> str:
        head = f"{'perspective':<16}{'n':>4}  {'F1 base':>8}{'F1 tuned':>9}  {'judge base':>10}{'judge tuned':>12}"
        lines = [head, "-" * len(head)]
        rows = [*sorted(self.per_perspective.items()), ("ALL", self.overall)]
        for name, m in rows:
            lines.append(
                f"{name:<16}{m['base']['n']:>4}  {_pct(m['base']['f1']):>8}{_pct(m['tuned']['f1']):>9}  "
                f"{_pct(m['base']['judge_yes']):>10}{_pct(m['tuned']['judge_yes']):>12}"
            )
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def load_items(eval_path: Path, limit: int | None = None) -> list[EvalItem]:
    if not eval_path.exists():
        raise EvalError(f"no held-out set at {eval_path}: run `qagen ingest` first")
    items = []
    for n, line in enumerate(eval_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            roles = {m["role"]: m["content"] for m in row["messages"]}
            items.append(EvalItem(row.get("pair_id", str(n)), row.get("perspective", "?"), roles.get("system", ""),
                                  roles["user"], roles["assistant"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvalError(f"{eval_path}:{n}: not an axolotl chat_template row ({exc})") from None
    if not items:
        raise EvalError(f"{eval_path} holds no questions")
    return items[:limit] if limit else items


# --- judging -----------------------------------------------------------------
def judge_request(model: str, item: EvalItem, answer: str) -> ChatRequest:
    prompt = JUDGE_PROMPT.format(question=item.question, reference=item.reference, answer=answer or "(no answer)")
    return ChatRequest(model=model, messages=(Message("system", JUDGE_SYSTEM), Message("user", prompt)),
                       temperature=0.0, max_tokens=3, prompt_id=JUDGE_PROMPT_ID, prompt_hash=JUDGE_PROMPT_ID,
                       role="judge")


def parse_verdict(text: str) -> bool | None:
    word = re.sub(r"[^a-z]", " ", text.lower()).split()
    if not word:
        return None
    return True if word[0] == "yes" else False if word[0] == "no" else None


async def _judge_all(store: Store, llm: LLM, model: str, run_id: int, jobs: list[tuple[EvalItem, str]]) -> list[bool | None]:
    async def one(item: EvalItem, answer: str) -> bool | None:
        request = judge_request(model, item, answer)
        cached = store.get_response(request.key)
        if cached is not None:
            return parse_verdict(cached.content)
        try:
            response = await llm.complete(request)
        except LLMError as exc:
            log.warning("judge failed for %s: %s", item.pair_id, exc)
            return None
        store.put_response(run_id, request, response)
        return parse_verdict(response.content)

    try:
        return list(await asyncio.gather(*(one(i, a) for i, a in jobs)))
    finally:
        await llm.aclose()


def judge(store: Store, settings: Settings, run_id: int, jobs: list[tuple[EvalItem, str]]) -> tuple[list[bool | None], str]:
    """Yes/no verdicts from the judge endpoint (the configured one, else the embedded model)."""
    from qagen.llm.factory import make_llm

    llm, model = make_llm(settings)
    verdicts = asyncio.run(_judge_all(store, llm, model, run_id, jobs))
    return verdicts, f"{llm.name} ({model})"


# --- the command -------------------------------------------------------------
def _metrics(rows: list[Scored], who: str) -> dict[str, float | int | None]:
    f1 = [getattr(r, f"{who}_f1") for r in rows]
    verdicts = [v for v in (getattr(r, f"{who}_judge") for r in rows) if v is not None]
    return {
        "n": len(rows),
        "f1": round(sum(f1) / len(f1), 4) if f1 else None,
        "judge_yes": round(sum(verdicts) / len(verdicts), 4) if verdicts else None,
        "judged": len(verdicts),
    }


EXAM_NAME = "exam.jsonl"


def knowledge_questions(out_dir: Path, questions: Path | None) -> tuple[list[Question], str]:
    """The held-out questions: the user's file (validated now, before any model loads), else the run's exam."""
    if questions is not None:
        return load_questions(questions), str(questions)
    exam = out_dir / EXAM_NAME
    if exam.exists() and exam.stat().st_size:
        return load_questions(exam), str(exam)
    return [], ""


def evaluate(
    out_dir: Path, store: Store, settings: Settings, *, base_model: str, adapter_dir: str, limit: int | None = None,
    threads: int | None = None, questions: Path | None = None, judge_answers: bool = True, open_book: bool = False,
    reference_model: str | None = None, progress: Callable[[str], None] | None = None,
    count: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Closed book, base vs tuned: the knowledge score, and the eval.jsonl format check where there is one;
    with ``open_book``, the held-out questions asked over input blocks too (:mod:`qagen.evaluation.openbook`).

    Writes OUT/eval_report.json. ``adapter_dir`` is a LoRA adapter over ``base_model`` or a fully fine-tuned model
    folder. ``reference_model`` answers as "base" where that is not ``base_model``: after ``--recipe cpt+sft``
    the adapter sits on stage 1's model, and the gain to report is over the model before both stages
    (:func:`reference_of`). ``progress`` hears a line before each batch of answers (they take minutes on CPU);
    ``count`` hears (done, asked) after each batch.
    """
    reference = reference_model or base_model
    say = progress or (lambda line: None)
    started = time.perf_counter()
    held_out, held_out_from = knowledge_questions(out_dir, questions)  # a bad file fails here, naming the line
    eval_path = out_dir / "eval.jsonl"
    items = load_items(eval_path, limit) if eval_path.exists() and eval_path.stat().st_size else []
    if not items and not held_out:
        raise EvalError(f"nothing to evaluate in {out_dir}: no exam.jsonl or eval.jsonl (run `qagen ingest`), "
                        "and no --questions file")
    if open_book and not held_out:
        raise EvalError(f"--open-book asks the held-out questions over their chunks, and {out_dir} has none: keep "
                        "the exam on in `qagen ingest` (OUT/exam.jsonl), or give --questions FILE")
    if not is_trained(Path(adapter_dir)):
        raise EvalError(f"no trained model in {adapter_dir}: run `qagen train {out_dir}` first")
    exam, unmatched = _exam_items(store, held_out, limit)
    open_items, unplaced = _open_book_items(store, exam) if open_book else ([], [])
    run_id = store.start_run("eval", {"base_model": reference, "adapter_dir": adapter_dir, "limit": limit,
                                      "questions": held_out_from, **settings.model_dump(exclude={"api_key"})})
    try:
        prompts = [(it.system, it.question) for it in items] + [(it.system, it.question) for it in exam]
        say(f"closed book: {len(prompts)} questions to the base model, then the tuned one")
        base = answer(reference, prompts, threads=threads, on_batch=count) if prompts else []
        tuned = answer(base_model, prompts, tuned=adapter_dir, threads=threads, on_batch=count) if prompts else []
        if open_items:
            ob_prompts = openbook.prompts(open_items)
            say(f"open book: {len(ob_prompts)} prompts (up to 3 per question, each up to 3 chunks long) to the base "
                "model, then the tuned one")
            ob_base = answer(reference, ob_prompts, threads=threads, max_new_tokens=openbook.MAX_NEW_TOKENS,
                             on_batch=count)
            ob_tuned = answer(base_model, ob_prompts, tuned=adapter_dir, threads=threads,
                              max_new_tokens=openbook.MAX_NEW_TOKENS, on_batch=count)
        n = len(items)
        verdicts, judge_name = ([None] * 2 * n, "off")
        if items and judge_answers:
            verdicts, judge_name = judge(store, settings, run_id, [*zip(items, base[:n]), *zip(items, tuned[:n])])
    except BaseException:
        store.finish_run(run_id, "failed", {})
        raise
    rows = [
        Scored(it.pair_id, it.perspective, it.question, it.reference, b, t, round(token_f1(b, it.reference), 4),
               round(token_f1(t, it.reference), 4), verdicts[i], verdicts[n + i])
        for i, (it, b, t) in enumerate(zip(items, base[:n], tuned[:n]))
    ]
    groups: dict[str, list[Scored]] = defaultdict(list)
    for r in rows:
        groups[r.perspective].append(r)
    knowledge: KnowledgeReport | None = None
    if held_out:  # even when every question was unmatched: the report lists them
        judged = judge_knowledge(store, settings, run_id, exam, base[n:], tuned[n:]) if judge_answers else None
        knowledge = score(exam, base[n:], tuned[n:], questions_from=held_out_from, base_model=reference,
                          tuned=adapter_dir, unmatched=unmatched, judged=judged)
    report = EvalReport(
        eval_path=str(eval_path) if items else "", base_model=reference, adapter_dir=adapter_dir, judge=judge_name,
        questions=n, overall={"base": _metrics(rows, "base"), "tuned": _metrics(rows, "tuned")} if rows else {},
        per_perspective={p: {"base": _metrics(g, "base"), "tuned": _metrics(g, "tuned")} for p, g in groups.items()},
        rows=rows, knowledge=knowledge.to_dict() if knowledge else {},
        knowledge_table=knowledge.table() if knowledge else "", seconds=round(time.perf_counter() - started, 1),
    )
    if open_book:
        ob = openbook.score(open_items, ob_base, ob_tuned, unplaced) if open_items else \
            openbook.OpenBookReport(unplaced=unplaced)
        report.open_book, report.open_book_table = ob.to_dict(), ob.table()
    write_report(out_dir / "eval_report.json", report)
    store.finish_run(run_id, "ok", {k: v for k, v in report.to_dict().items()
                                    if k not in ("rows", "knowledge", "open_book")})
    return report


def reference_of(train_summary: dict[str, object]) -> str | None:
    """The model the tuned one is compared with: after ``--recipe cpt+sft``, the one stage 1 started from (the
    recorded ``base_model`` is stage 1's folder, which the SFT adapter loads over); else None (the base model)."""
    stage1 = train_summary.get("cpt")
    if train_summary.get("recipe") == "cpt+sft" and isinstance(stage1, dict) and stage1.get("base_model"):
        return str(stage1["base_model"])
    return None


def knowledge_judge(settings: Settings) -> Settings | None:
    """The judge role for the knowledge score, only where one is configured (``--judge-base-url``, or a served
    ``--base-url``): the embedded 135M model's yes/no is noise, so it does not judge closed-book answers."""
    if settings.judge_base_url:
        return settings.model_copy(update={"base_url": settings.judge_base_url,
                                           "model": settings.judge_model or settings.model, "extra_base_urls": []})
    return settings if settings.base_url else None


def judge_knowledge(store: Store, settings: Settings, run_id: int, exam: list[ExamItem], base: list[str],
                     tuned: list[str]) -> tuple[str, list[bool | None], list[bool | None]] | None:
    judge_settings = knowledge_judge(settings)
    real = [i for i, it in enumerate(exam) if it.kind != CONTROL_KIND]  # a control's decline is read by code
    if judge_settings is None or not real:
        return None
    items = [EvalItem(exam[i].qid, exam[i].kind, exam[i].system, exam[i].question, " | ".join(exam[i].answers))
             for i in real]
    verdicts, name = judge(store, judge_settings, run_id,
                           [*zip(items, (base[i] for i in real)), *zip(items, (tuned[i] for i in real))])
    vb: list[bool | None] = [None] * len(exam)
    vt: list[bool | None] = [None] * len(exam)
    for k, i in enumerate(real):
        vb[i], vt[i] = verdicts[k], verdicts[len(real) + k]
    return name, vb, vt


def _exam_items(store: Store, questions: list[Question], limit: int | None) -> tuple[list[ExamItem], list[str]]:
    run_id = store.latest_finished_run("ingest")
    docs = [DocRef(*d) for d in store.run_documents(run_id)] if run_id else []
    group_id = ids.group_id([d.doc_id for d in docs]) if docs else ""
    exam, unmatched = match_questions(questions, docs, group_id)
    return (exam[:limit] if limit else exam), unmatched


def _open_book_items(store: Store, exam: list[ExamItem]) -> tuple[list[openbook.OpenBookItem], list[str]]:
    return openbook.build(store, store.latest_finished_run("ingest"), exam)


def write_report(path: Path, report: EvalReport) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    tmp.replace(path)


def read_report(path: Path) -> EvalReport:
    data = json.loads(path.read_text())
    data["rows"] = [Scored(**r) for r in data.get("rows", [])]
    return EvalReport(**data)
