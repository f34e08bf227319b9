"""``qagen eval``: closed-book questions from the held-out eval.jsonl, base model vs tuned model.

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
import string
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qagen.core.errors import StageError
from qagen.llm.base import ChatRequest, LLMError, Message

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
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        """Base vs tuned per perspective, as fixed-width text (CLI and email alike)."""
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


# --- scoring -----------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_tokens(text: str) -> list[str]:
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1: overlap of the bags of normalised tokens."""
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


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


# --- answering ---------------------------------------------------------------
def answer_local(
    model_dir: str, adapter_dir: str, items: list[EvalItem], *, max_new_tokens: int = 64, batch: int = 8,
    threads: int | None = None,
) -> tuple[list[str], list[str]]:
    """Greedy answers from the base model, then from base + LoRA adapter (transformers + peft, CPU)."""
    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        from qagen.flow.hfmodel import INSTALL_HINT

        raise EvalError(f"evaluating needs the train extra ({exc.name} missing): {INSTALL_HINT}") from None
    if threads:
        torch.set_num_threads(threads)  # see TrainSettings.threads: fewer threads are faster on a busy small box
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"  # decoder-only batch generation
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    base = _generate(model, tokenizer, items, max_new_tokens, batch)
    tuned_model = PeftModel.from_pretrained(model, adapter_dir)
    tuned_model.eval()
    tuned = _generate(tuned_model, tokenizer, items, max_new_tokens, batch)
    return base, tuned


def _generate(model: object, tokenizer: object, items: list[EvalItem], max_new_tokens: int, batch: int) -> list[str]:
    import torch

    answers: list[str] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        prompts = [
            tokenizer.apply_chat_template(  # type: ignore[attr-defined]
                [{"role": "system", "content": it.system}, {"role": "user", "content": it.question}],
                tokenize=False, add_generation_prompt=True,
            )
            for it in chunk
        ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)  # type: ignore[operator]
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,  # type: ignore[attr-defined]
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # type: ignore[attr-defined]
        new = out[:, enc["input_ids"].shape[1] :]
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]  # type: ignore[attr-defined]
    return answers


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


def evaluate(
    out_dir: Path, store: Store, settings: Settings, *, base_model: str, adapter_dir: str, limit: int | None = None,
    threads: int | None = None,
) -> EvalReport:
    """Answer eval.jsonl closed book with base and tuned, score both, write OUT/eval_report.json."""
    started = time.perf_counter()
    eval_path = out_dir / "eval.jsonl"
    items = load_items(eval_path, limit)
    if not (Path(adapter_dir) / "adapter_config.json").exists():
        raise EvalError(f"no LoRA adapter in {adapter_dir}: run `qagen train {out_dir}` first")
    run_id = store.start_run("eval", {"base_model": base_model, "adapter_dir": adapter_dir, "limit": limit,
                                      **settings.model_dump(exclude={"api_key"})})
    try:
        base, tuned = answer_local(base_model, adapter_dir, items, threads=threads)
        verdicts, judge_name = judge(store, settings, run_id, [*zip(items, base), *zip(items, tuned)])
    except BaseException:
        store.finish_run(run_id, "failed", {})
        raise
    n = len(items)
    rows = [
        Scored(it.pair_id, it.perspective, it.question, it.reference, b, t, round(token_f1(b, it.reference), 4),
               round(token_f1(t, it.reference), 4), verdicts[i], verdicts[n + i])
        for i, (it, b, t) in enumerate(zip(items, base, tuned))
    ]
    groups: dict[str, list[Scored]] = defaultdict(list)
    for r in rows:
        groups[r.perspective].append(r)
    report = EvalReport(
        eval_path=str(eval_path), base_model=base_model, adapter_dir=adapter_dir, judge=judge_name, questions=n,
        overall={"base": _metrics(rows, "base"), "tuned": _metrics(rows, "tuned")},
        per_perspective={p: {"base": _metrics(g, "base"), "tuned": _metrics(g, "tuned")} for p, g in groups.items()},
        rows=rows, seconds=round(time.perf_counter() - started, 1),
    )
    write_report(out_dir / "eval_report.json", report)
    store.finish_run(run_id, "ok", {k: v for k, v in report.to_dict().items() if k != "rows"})
    return report


def write_report(path: Path, report: EvalReport) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    tmp.replace(path)


def read_report(path: Path) -> EvalReport:
    data = json.loads(path.read_text())
    data["rows"] = [Scored(**r) for r in data.get("rows", [])]
    return EvalReport(**data)
