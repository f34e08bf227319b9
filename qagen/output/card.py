"""The dataset card (``OUT/README.md``) and the Hugging Face ``datasets`` export.

A dataset without a record of how it was made cannot be trusted or reproduced. The card is
the Hugging Face dataset-card format: a YAML header (license, configs with their splits,
sizes) and a body that says which models and prompts (by ID and content hash) made the
pairs, with which thresholds, and how many pairs each stage kept. Everything comes from the
state database, so the card describes the run that wrote the files. The YAML is written by
``yaml.safe_dump``, so odd model names or settings cannot break the header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from qagen.core.errors import StageError
from qagen.output.atomic import atomic_writer
from qagen.output.report import ReportData, build_report
from qagen.store import Store

CARD_NAME = "README.md"
DEFAULT_LICENSE = "unknown"  # Hub licence id for "not stated"; set `license` in the settings to name one
# Settings that decide what the dataset holds; anything naming a judge, threshold, grounding or dedup too.
THRESHOLD_KEYS = ("chunk_size", "chunk_overlap", "tokenizer", "eval_fraction", "split_by", "refine",
                  "max_rounds", "min_rounds", "decontaminate")
THRESHOLD_WORDS = ("judge", "threshold", "ground", "dedup", "duplicate")
SPLIT_FILES = {"train": "train.jsonl", "eval": "eval.jsonl"}
HUB_DATA_FILES = {"train": "data/train-*", "eval": "data/eval-*"}  # where push_to_hub puts the splits


class CardError(StageError):
    """The card or the HF export cannot be written (missing files, no token, missing extra)."""


@dataclass(frozen=True)
class PromptUse:
    prompt_id: str
    prompt_hash: str
    role: str
    model: str
    requests: int


@dataclass
class CardInfo:
    report: ReportData
    license: str
    prompts: list[PromptUse] = field(default_factory=list)
    thresholds: dict[str, object] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)


def _prompts(store: Store, run_id: int) -> list[PromptUse]:
    """Prompts behind this run's requests: sent by it, or cached ones its pairs (and drafts) came from."""
    return [PromptUse(*r) for r in store.prompt_uses(run_id)]


def _thresholds(settings: dict[str, object]) -> dict[str, object]:
    return {
        k: v for k, v in sorted(settings.items())
        if k in THRESHOLD_KEYS or any(w in k for w in THRESHOLD_WORDS)
    }


def card_info(store: Store, run_id: int, out_dir: Path, *, license: str | None = None) -> CardInfo:
    data = build_report(store, run_id, out_dir)
    splits = {s: data.split_counts.get(s, 0) for s in SPLIT_FILES}  # exported pairs the files hold
    chosen = license or str(data.settings.get("license") or DEFAULT_LICENSE)
    return CardInfo(data, chosen, _prompts(store, run_id), _thresholds(data.settings), splits)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _code(text: object) -> str:
    """Inline code span for values from outside (model names, settings): no markdown/HTML in them survives."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def render_card(info: CardInfo, data_files: dict[str, str]) -> str:
    d = info.report
    header = {
        "license": info.license,
        "pretty_name": f"qagen Q/A pairs (run {d.run_id})",
        "task_categories": ["question-answering", "text-generation"],
        "tags": ["qagen", "synthetic", "axolotl", "chat_template"],
        "size_categories": [_size_category(d.exported_count)],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": p} for s, p in data_files.items() if info.splits.get(s)]}],
        "dataset_info": {"splits": [{"name": s, "num_examples": n} for s, n in info.splits.items() if n]},
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [
        f"# qagen Q/A pairs (run {d.run_id})", "",
        ("Question/answer pairs generated from a folder of documents by qagen, in axolotl's `type: chat_template` "
         "shape: each row has `messages` (system, user, assistant) and its provenance (`pair_id`, `doc_id`, "
         "`chunk_id`, `group_id`, `perspective`, `model`, `source`)."), "",
        "## Counts", "",
        "| what | count |", "|---|---|",
        f"| documents | {d.documents_total} ({len(d.skipped)} files skipped) |",
        f"| chunks | {d.chunks_total} ({d.zero_chunks_total} without an exported pair) |",
        f"| pairs generated | {d.generated} |",
        *(f"| pairs {verdict.replace('_', ' ')} | {n} |" for verdict, n in d.verdict_counts.items()),
        *(f"| split `{s}` | {n} |" for s, n in info.splits.items()),
        f"| failed LLM calls | {d.failures_total} |", "",
        "## Perspectives", "",
        "| perspective | LLM calls | exported pairs |", "|---|---|---|",
        *(f"| {_code(p.name)} | {p.calls if p.calls is not None else 'built by code'} | {p.exported} |"
          for p in d.perspectives), "",
        "## Models", "",
        *(f"- {_code(m)}" for m in d.models), "",
        "## Prompts (by ID and content hash)", "",
        "| prompt | role | hash | model | requests |", "|---|---|---|---|---|",
        *(f"| {_code(p.prompt_id)} | {p.role} | {_code(p.prompt_hash)} | {_code(p.model)} | {p.requests} |"
          for p in info.prompts), "",
        "## Settings and thresholds", "",
        *(f"- {k}: {_code(json.dumps(v))}" for k, v in info.thresholds.items()), "",
        f"Judge: {'no judge ran' if not d.judge_scored else f'{d.judge_scored} pairs scored'}"
        + (f", threshold {d.judge_threshold:g}" if d.judge_threshold is not None else "") + ".", "",
        "## Limitations", "",
        "The pairs are machine-generated and may be wrong. Check `report.html` beside the data before training.", "",
    ]
    return "\n".join(lines)


def write_card(store: Store, run_id: int, out_dir: Path, *, license: str | None = None) -> Path:
    """Write ``OUT/README.md`` for one run (atomically), pointing at OUT's train/eval JSONL."""
    path = out_dir / CARD_NAME
    with atomic_writer(path) as fh:
        fh.write(render_card(card_info(store, run_id, out_dir, license=license), SPLIT_FILES))
    return path


def _read_split(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    keys = list(dict.fromkeys(k for r in rows for k in r))  # refined pairs carry extra keys: give every row all
    return [{k: r.get(k) for k in keys} for r in rows]


def export_hf(store: Store, run_id: int, out_dir: Path, hf_dir: Path, *, license: str | None = None) -> Path:
    """A ``datasets`` folder (``save_to_disk``) of OUT's train/eval JSONL, with the card as its README.md."""
    try:
        from datasets import Dataset, DatasetDict
    except ImportError:
        raise CardError("the HF export needs the `datasets` package: pip install 'qagen[hf]'") from None
    info = card_info(store, run_id, out_dir, license=license)
    splits: dict[str, Dataset] = {}
    for split, name in SPLIT_FILES.items():
        path = out_dir / name
        if not path.is_file():
            raise CardError(f"{path} is missing: run `qagen ingest` first")
        rows = _read_split(path)
        expected = info.report.summary.get(f"{split}_pairs")
        if expected is not None and len(rows) != expected:
            raise CardError(f"{path} has {len(rows)} pairs but run {run_id} wrote {expected}: "
                            "the files belong to another run; run `qagen ingest` again")
        if rows:
            splits[split] = Dataset.from_list(rows)
    if not splits:
        raise CardError(f"run {run_id} exported no pairs: nothing to write")
    DatasetDict(splits).save_to_disk(str(hf_dir))
    with atomic_writer(hf_dir / CARD_NAME) as fh:
        fh.write(render_card(info, HUB_DATA_FILES))
    return hf_dir


def push_hf(hf_dir: Path, repo: str) -> str:
    """Push a folder written by :func:`export_hf` to the Hub (a token from HF_TOKEN or `hf auth login`).

    Not covered by tests: the build machines reach no hub. Returns the dataset's URL.
    """
    try:
        from datasets import load_from_disk
        from huggingface_hub import HfApi, get_token
    except ImportError:
        raise CardError("pushing needs the `datasets` package: pip install 'qagen[hf]'") from None
    token = get_token()  # huggingface_hub reads HF_TOKEN itself; qagen never stores it
    if not token:
        raise CardError("no Hugging Face token: set HF_TOKEN (or run `hf auth login`) to push")
    load_from_disk(str(hf_dir)).push_to_hub(repo, token=token)
    HfApi(token=token).upload_file(
        path_or_fileobj=str(hf_dir / CARD_NAME), path_in_repo=CARD_NAME, repo_id=repo, repo_type="dataset"
    )
    return f"https://huggingface.co/datasets/{repo}"
