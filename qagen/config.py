"""Settings. The only module that reads the environment.

Precedence: CLI flags > ``--set`` > environment (``QAGEN_*``; the API key also from ``OPENAI_API_KEY``) > a profile
that qagen.toml defines > qagen.toml > the built-in profile (qagen/profiles.toml: ``embedded`` or ``served``) >
defaults. The file, the profiles and ``--set`` are resolved in qagen/cli/settings.py; this module holds the fields,
their sections (``SECTIONS``) and the built-in profiles. Secrets are held as ``SecretStr`` so they never show up in a
repr, a log line or the state database, and they are read from the environment only.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_FILE = "qagen.toml"  # the settings file, beside the documents or in the current folder (qagen/cli/settings.py)
REFINE_MODES = ("off", "repair", "full")
DEFAULT_REFINE = "off"  # the repair loop is opt-in until it earns its default (issue 27, benchmarks/RESULTS.md)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QAGEN_", extra="ignore", populate_by_name=True)

    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QAGEN_API_KEY", "OPENAI_API_KEY", "api_key")
    )
    concurrency: int = Field(default=8, ge=1, le=4096)
    # HTTP client for chat calls: "openai" (the SDK) or "aiohttp" (lean, for many endpoints at scale).
    transport: str = Field(default="openai", pattern="^(openai|aiohttp)$")
    request_timeout: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    # "auto": fold the system prompt into the first user turn for model
    # families whose chat template has no system role (Mistral-Instruct).
    system_role: str = Field(default="auto", pattern="^(auto|yes|no)$")
    # More endpoints serving the same model (--base-url given again, or QAGEN_EXTRA_BASE_URLS='["http://..."]'):
    # load-balanced on the client side, with health checks and failover (qagen/llm/balance.py).
    extra_base_urls: list[str] = Field(default_factory=list)
    per_endpoint_concurrency: int | None = Field(default=None, ge=1, le=4096)  # default: --concurrency each
    # Adaptive concurrency (AIMD): halve an endpoint's limit on 429/503, grow it while latency holds,
    # up to max_concurrency per endpoint (default 8 x the starting limit, at least 64).
    adaptive: bool = False
    max_concurrency: int | None = Field(default=None, ge=1, le=4096)
    # "http": any OpenAI-compatible endpoint (or the embedded model); "vllm": in-process vllm.LLM (qagen[vllm]).
    backend: str = Field(default="http", pattern="^(http|vllm)$")

    # "local": one process (asyncio). "ray": Ray Data over a Ray cluster (qagen[ray]); documents are
    # sharded by content ID, each worker keeps its own state shard, merged into the store at the end.
    executor: str = Field(default="local", pattern="^(local|ray)$")
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray instance on this machine
    workers: int | None = Field(default=None, ge=1, le=4096)  # Ray workers (default: the cluster's CPUs)
    shards: int | None = Field(default=None, ge=1, le=65536)  # state shards (default: 4 x workers)

    # The documents folder is the boundary: a symlinked file whose target lies outside it is skipped ("symlink
    # leaves the folder"), so `ln -s ~/.ssh/id_rsa docs/x.txt` in a CI checkout never reaches the model or the
    # dataset. True: follow such links.
    follow_symlinks: bool = False

    chunk_size: int | None = Field(default=None, gt=0)
    chunk_overlap: int | None = Field(default=None, ge=0)
    tokenizer: str | None = None
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    split_by: str = Field(default="auto", pattern="^(auto|document|chunk|pair)$")

    # Refinement (qagen/generate/refine.py): "repair" flags pairs with the deterministic checks, rewrites only those
    # and keeps a rewrite only when it passes every check; "full" also asks the model critic about pairs that pass.
    # The 0.4 loop (the critic asked about every pair, its rewrites kept unchecked) cost 4.7x generation's teacher
    # tokens and did not raise held-out F1 (-2.0 [-5.7, +1.6]; benchmarks/RESULTS.md, "Knowledge: the critic loop").
    # max_rounds: the profile's (qagen/profiles.toml: 3, SelFee caps at 5; 1 on the embedded CPU model, where every
    # round costs a call per pair).
    refine: str | None = None  # off | repair | full (True and False, from older callers, mean full and off)
    max_rounds: int | None = Field(default=None, ge=1, le=10)
    min_rounds: int = Field(default=0, ge=0, le=10)
    refine_style: str = Field(default="chat", pattern="^(chat|helixnet)$")
    # The perspective suite (prompts/suites.yaml): which perspectives run and how many samples each. None (the
    # default): "ledger" for a served model (a cloze row built by code on every fact of the fact ledger; the
    # teacher's own answer-first questions are "ledger-questions"; RESULTS.md, "Knowledge: which suite"); "embedded" on the embedded 135M
    # model (the ledger's code-built rows and identity pairs only: its own drafts fail their checks, issue 29).
    suite: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_\-]*$")
    # The built-in profile whose defaults fill what no one set (qagen/profiles.toml). None: embedded on the embedded
    # model, served otherwise. ``--profile`` sets it; a profile of qagen.toml names its own with ``extends``.
    builtin_profile: str | None = Field(default=None, pattern="^(embedded|served)$")
    # Exit 1 when any input file was skipped (unreadable, binary, too big): for a CI that wants every file read.
    fail_on_skip: bool = False

    # Judge (MiniHF yes/no, P(yes) from logprobs): a pair is exported when the mean of its checks reaches the
    # threshold. None (the default): on for the embedded 135M model, where it screens drafts the filters let through;
    # off for a served model: on the closed-book knowledge benchmark it cost 3.2x generation's teacher tokens and
    # did not raise held-out F1 (-2.7 [-6.1, +0.2] over two seeds, not significant; benchmarks/RESULTS.md,
    # "Knowledge: the critic loop"). --judge turns it on. The defaults per model: qagen/profiles.toml.
    judge: bool | None = None
    judge_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Best-of-n (MiniHF rejection sampling): n answers per drafted question, the best-judged is kept.
    best_of: int = Field(default=1, ge=1, le=16)
    # Grounding: quotes must occur in the chunk (rapidfuzz score 0-100).
    grounding_threshold: float = Field(default=90.0, ge=0.0, le=100.0)
    ungrounded: str = Field(default="drop", pattern="^(drop|flag)$")
    # Near-duplicate questions across the corpus (MinHash LSH + rapidfuzz); the best-judged is kept.
    dedup: bool = True
    dedup_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    # Deterministic filters before the judge (qagen/curate/filters.py): repetition, too-short answers, echoes,
    # truncation, unfilled templates, broken relations, metadata the document does not state. No LLM calls.
    filters: bool = True
    # An answer with more than this share of its characters inside repeated word 3-5-grams is degenerate.
    max_repetition: float = Field(default=0.3, gt=0.0, le=1.0)
    # The fact ledger (qagen/generate/ledger.py): every fact of a chunk gets k answer-first questions, and no fact
    # gets k + 1 before every fact has k; facts below k after a round are asked again (at most two top-ups).
    # None: 3, and 1 on the embedded 135M model (one question per fact, a code-built row where it fails).
    facts_k: int | None = Field(default=None, ge=1, le=10)
    # A generation draw: every sampled request's seed is offset by it, so the same corpus is drawn again with new
    # samples (new request keys: nothing cached under another seed is reused). 0: the default draw.
    seed: int = Field(default=0, ge=0, le=1_000_000)
    # Fail fast: stop when, over the first N items of a stage, the failure rate passes the limit.
    fail_fast_after: int = Field(default=20, ge=0)
    max_parse_failure_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    max_reject_rate: float = Field(default=0.95, ge=0.0, le=1.0)

    # Per-role endpoints (HelixNet uses three models): each defaults to the generator's.
    critic_base_url: str | None = None
    critic_model: str | None = None
    regenerator_base_url: str | None = None
    regenerator_model: str | None = None
    judge_base_url: str | None = None
    judge_model: str | None = None

    # The held-out exam (prompts/exam.md): a few examiner's questions per chunk, never trained on, decontaminated
    # against the training questions, written to OUT/exam.jsonl; `qagen eval` scores the tuned model on it.
    # None (the default): on, except on the embedded 135M model, whose exam questions none survive their checks (0 of
    # 7 on samples/docs: "What is the answer to the question", a sentence of the passage) at a minute a request.
    exam: bool | None = None
    # "The documents don't say" (prompts/unanswerable.md): a few near-miss questions per document that it does not
    # answer, answered by code with a decline, so the tuned model learns to stay within its documents; with the exam
    # on, the exam also holds control questions of that kind (prompts/exam_unanswerable.md) and `qagen eval` reports
    # how often each model declines them. Off by default: the knowledge benchmark does not measure it yet.
    unanswerable: bool = False

    # Continued pretraining (qagen/generate/rewrite.py, qagen/output/cpt.py): OUT/cpt.jsonl holds every chunk's text
    # and cpt_rewrites grounded rewrites of it (one cached request per chunk), for `qagen train --recipe cpt+sft`.
    # Off by default: not yet measured on the knowledge benchmark.
    cpt: bool = False
    cpt_rewrites: int = Field(default=2, ge=1, le=8)
    # OUT/text.jsonl (qagen/output/cpt.py): every chunk's text in pieces, as completion rows that `qagen train` mixes
    # into the same run as the pairs (the pre-instruction-tuning mix, arXiv 2402.12847). No teacher tokens.
    text_rows: bool = False

    # Open-book examples in train.jsonl (qagen/output/contextual.py): for this share of the training pairs, an
    # extra row asks the same question over BEGININPUT blocks (the pair's chunk, with distractors from other
    # documents, or without it) and answers with a "Source:" citation, so one fine-tune answers closed-book and
    # from a retriever's context. 0: closed-book rows only (the default: not yet measured on the knowledge
    # benchmark). `qagen export --contextual` writes the same rows, for every pair, to OUT/contextual.jsonl.
    contextual_share: float = Field(default=0.0, ge=0.0, le=1.0)

    # OUT/report.html and the dataset card OUT/README.md at the end of a run.
    report: bool = True
    license: str | None = None  # the dataset card's license field (e.g. "cc-by-4.0")

    # Benchmark / held-out question files; near matches are dropped from the dataset.
    decontaminate: list[str] = Field(default_factory=list)

    # Embedded llama.cpp server (used when no base_url is configured).
    # Measured on a quiet 2-core box: 2 threads 48 tok/s, 1 thread 32 tok/s
    # (benchmarks/RESULTS.md). Bigger boxes keep one core for the client.
    embedded_threads: int = Field(default_factory=lambda: max(2, (os.cpu_count() or 2) - 1), ge=1)
    # One slot: on 2 CPU cores, grammar-constrained decoding in parallel slots is slower in total
    # (1 slot 39 tok/s, 2 slots 33, 4 slots 22 on the same 4 requests: benchmarks/RESULTS.md).
    embedded_parallel: int = Field(default=1, ge=1, le=64)
    embedded_ctx_per_slot: int = Field(default=2048, ge=512)

    @property
    def uses_embedded(self) -> bool:
        return not self.base_url and self.backend == "http"

    @property
    def endpoints(self) -> list[str]:
        """Every configured OpenAI-compatible endpoint, --base-url first."""
        return [u for u in [self.base_url, *self.extra_base_urls] if u]

    @property
    def refine_mode(self) -> str:
        """off | repair | full: ``--refine``, else the default (qagen/generate/refine.py; RESULTS.md, "The repair loop")."""
        return self.refine or DEFAULT_REFINE

    @property
    def refining(self) -> bool:
        """Whether the repair loop runs (``--refine repair`` or ``full``)."""
        return self.refine_mode != "off"

    @property
    def profile_name(self) -> str:
        """The built-in profile whose defaults apply: ``builtin_profile``, else embedded on the embedded model, else
        served."""
        return self.builtin_profile or ("embedded" if self.uses_embedded else "served")

    def profile_default(self, key: str) -> object:
        """The built-in profile's value for a setting (qagen/profiles.toml), or None where it sets none."""
        return builtin_profiles()[self.profile_name].get(key)

    def effective(self, key: str) -> object:
        """A setting as the run uses it: its own value, else its profile's."""
        value = getattr(self, key)
        return value if value is not None else self.profile_default(key)

    @property
    def chunking(self) -> tuple[int, int]:
        """Chunk size and overlap in tokens: the settings', else the profile's; an overlap left to the profile is at
        most a quarter of the chunk."""
        size = int(self.effective("chunk_size"))  # type: ignore[call-overload]
        overlap = self.chunk_overlap
        if overlap is None:
            overlap = min(int(self.profile_default("chunk_overlap")), size // 4)  # type: ignore[call-overload]
        return size, overlap

    @property
    def judging(self) -> bool:
        """Whether the yes/no judge runs (``judge``, else the profile's: on for embedded, off for served)."""
        return bool(self.effective("judge"))

    @property
    def perspective_suite(self) -> str:
        """The suite this run uses: --suite, else the profile's (ledger served, embedded on the embedded model)."""
        return str(self.effective("suite"))

    @property
    def exam_on(self) -> bool:
        """Whether the held-out exam is written: ``--exam/--no-exam``, else the profile's (off on embedded)."""
        return bool(self.effective("exam"))

    @property
    def ledger_k(self) -> int:
        """The teacher's answer-first questions per fact: ``--facts-k``, else the profile's (1 embedded, 3 served)."""
        return int(self.facts_k or self.profile_default("facts_k"))  # type: ignore[call-overload]

    @property
    def prompt_switches(self) -> frozenset[str]:
        """The switches prompts wait for (their ``switch:`` front matter) that this run turns on."""
        return frozenset({"unanswerable"} if self.unanswerable else ())

    @property
    def rounds(self) -> int:
        return int(self.max_rounds or self.profile_default("max_rounds"))  # type: ignore[call-overload]

    @model_validator(mode="after")
    def _rounds_in_order(self) -> Settings:
        # Checked here, once, for the CLI and the library alike (and before a run is recorded).
        if self.min_rounds > self.rounds:
            raise ValueError("--min-rounds cannot exceed --max-rounds")
        if self.min_rounds and not self.refining:
            raise ValueError("--min-rounds forces repair rounds, and the repair loop is off: add --refine repair")
        return self

    @field_validator("refine", mode="before")
    @classmethod
    def _refine_mode(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:  # QAGEN_REFINE=false, as in qagen <= 0.4
            value = _BOOL_WORDS[value.strip().lower()]
        if isinstance(value, bool):  # the boolean of qagen <= 0.4: True was the critic loop, now "full"
            return "full" if value else "off"
        if value is not None and value not in REFINE_MODES:
            raise ValueError(f"--refine must be one of {', '.join(REFINE_MODES)}, not {value!r}")
        return value

    def api_key_value(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else "not-needed"


# Where each setting lives in qagen.toml and ``--set SECTION.KEY=VALUE`` (`qagen config show` lists them). The
# ``train`` and ``notify`` sections are ``qagen train``'s and the emails' settings (TrainSettings, NotifySettings).
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("builtin_profile", "base_url", "extra_base_urls", "model", "api_key", "backend", "transport", "request_timeout",
              "max_retries", "system_role", "critic_base_url", "critic_model", "regenerator_base_url",
              "regenerator_model", "judge_base_url", "judge_model", "embedded_threads", "embedded_parallel",
              "embedded_ctx_per_slot"),
    "chunking": ("chunk_size", "chunk_overlap", "tokenizer", "follow_symlinks", "fail_on_skip"),
    "generation": ("suite", "facts_k", "seed", "refine", "max_rounds", "min_rounds", "refine_style",
                   "best_of", "exam", "unanswerable", "cpt", "cpt_rewrites", "fail_fast_after",
                   "max_parse_failure_rate", "max_reject_rate"),
    "curation": ("judge", "judge_threshold", "grounding_threshold", "ungrounded", "dedup", "dedup_threshold",
                 "filters", "max_repetition", "decontaminate"),
    "export": ("eval_fraction", "split_by", "text_rows", "contextual_share", "report", "license"),
    "scale": ("concurrency", "per_endpoint_concurrency", "adaptive", "max_concurrency", "executor", "ray_address",
              "workers", "shards"),
}
SECRETS = frozenset({"api_key", "smtp_password"})  # from the environment only: never in a file, a flag of run, a log


@cache
def builtin_profiles() -> dict[str, dict[str, object]]:
    """qagen/profiles.toml, flattened: profile name -> {setting: value}."""
    with open(Path(__file__).with_name("profiles.toml"), "rb") as f:
        raw = tomllib.load(f)
    return {name: {k: v for section in body.values() for k, v in section.items()} for name, body in raw.items()}


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False}


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with non-``None`` overrides applied on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)


class FileLimits(BaseSettings):
    """What a question file (``qagen eval --questions``, ``--decontaminate``) may hold before it is refused with a
    one-line error instead of filling memory: a 150 MB line or a million questions is a mistake, not a benchmark.
    ``QAGEN_MAX_QUESTION_BYTES`` (one line of JSONL/CSV), ``QAGEN_MAX_QUESTION_FILE_BYTES`` (the whole file) and
    ``QAGEN_MAX_QUESTIONS``."""

    model_config = SettingsConfigDict(env_prefix="QAGEN_", extra="ignore")

    max_question_bytes: int = Field(default=1_000_000, ge=1_000)
    max_question_file_bytes: int = Field(default=200_000_000, ge=1_000)
    max_questions: int = Field(default=100_000, ge=1)


def file_limits() -> FileLimits:
    return FileLimits()


class _ProgressSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QAGEN_", extra="ignore")

    progress_every: float = Field(default=15.0, ge=0.05, le=600)


def progress_every() -> float:
    """Seconds between the plain progress lines of a log (stderr not a terminal): QAGEN_PROGRESS_EVERY, default 15."""
    return _ProgressSettings().progress_every


def has_display() -> bool:
    """Whether a graphical browser can open here (`qagen review`): macOS, Windows, or an X11/Wayland session. On a
    headless machine Python's ``webbrowser`` would start a console browser in the foreground instead."""
    import sys

    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
