"""Prompt files: front-matter + a Jinja body rendered with StrictUndefined.

The built-in suite lives in ``prompts/`` at the repository root and ships
inside the wheel as ``qagen/_prompts``. A user's ``--prompts DIR`` adds
prompts or overrides built-ins by ``id`` (``enabled: false`` switches a
built-in off). A prompt's content hash is part of every request key, so
editing one file re-runs only that prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import frontmatter
import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qagen.core import ids
from qagen.core.errors import InputError

log = logging.getLogger(__name__)

Role = Literal[
    "system", "context", "generator", "code", "critic", "regenerator", "judge", "answerer", "exam", "titler",
    "extractor", "rewriter",
]
Output = Literal[
    "qa_pairs", "answers", "entities", "identity", "critique", "revision", "answer", "judge", "text", "none",
    "unanswerable", "rewrites", "spans", "fact_questions", "cloze",
]
# Settings switches a prompt can wait for (``switch:``): the prompt runs only when the switch is on.
Switch = Literal["unanswerable"]


class PromptError(InputError):
    """A prompt file is missing, malformed or fails to render."""


class _FrontMatter(BaseModel):
    """Validated front-matter (the edge of the system; becomes a Prompt)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$")
    role: Role
    description: str = ""
    enabled: bool = True
    scope: Literal["chunk", "document"] = "chunk"
    # What a document-scope prompt reads: its first chunk ("opening": where a title, byline and dateline are),
    # or the whole document through a map-reduce over the section summaries ("whole": qagen/generate/whole.py).
    reads: Literal["opening", "whole"] = "opening"
    output: Output = "none"
    n: int = Field(default=3, ge=1, le=20)
    max_question_chars: int = Field(default=200, ge=20, le=2000)
    max_answer_chars: int = Field(default=400, ge=20, le=8000)
    # The fewest words an answer needs (qagen/curate/filters.py: a paragraph summary of one letter is junk).
    min_answer_words: int = Field(default=1, ge=1, le=1000)
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    # Ask the prompt this many times per chunk: the first as written, the others with seeds 1, 2, ... at
    # ``sample_temperature``, so a fact-dense perspective drafts new pairs (dedup and grounding sort them out).
    samples: int = Field(default=1, ge=1, le=20)
    sample_temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1, le=16384)
    questions: dict[str, str] = Field(default_factory=dict)
    # "chat": system + context + task as chat messages; "completion": the body is
    # the whole raw prompt, sent to /v1/completions (HelixNet's text format).
    style: Literal["chat", "completion"] = "chat"
    stop: list[str] = Field(default_factory=list)
    # How a pair from this prompt is grounded: "quote" asks the model for a
    # supporting quote (checked against the chunk); "span": the answer is itself a span of the chunk (the fact
    # ledger's answer-first questions), checked verbatim; "none" for summaries and
    # code-built pairs, whose answers are not a span of the passage.
    grounding: Literal["quote", "span", "none"] = "none"
    # What the request shows besides the task: "passage" (the system text, then the chunk: the shared prefix every
    # perspective of a chunk reuses) or "sentence" (the task alone: it quotes the sentence it asks about itself,
    # so a small teacher is not distracted by the rest of the chunk and pays no tokens for it).
    context: Literal["passage", "sentence"] = "passage"
    # The fact ledger (output fact_questions): the most facts of one chunk it asks about (the spans code and the
    # extraction request find, kept in order of kind and spread over the sentences).
    max_facts: int = Field(default=40, ge=1, le=500)
    # The settings switch this prompt waits for (``--unanswerable``): off unless the run turns it on.
    switch: Switch | None = None
    # Whether the judge and the critic loop see this prompt's pairs. ``false`` for a code-built answer the judge's
    # rubric would reject by design ("The documents don't say ..." is not "supported by the passage") and that the
    # regenerator must not rewrite into a made-up answer.
    judge: bool = True
    refine: bool = True


@dataclass(frozen=True)
class Prompt:
    id: str
    role: str
    description: str
    enabled: bool
    scope: str
    output: str
    n: int
    max_question_chars: int
    max_answer_chars: int
    temperature: float
    max_tokens: int
    questions: tuple[tuple[str, str], ...]  # (field, question template) for output "answers"/"identity"
    body: str
    source: str  # file path it was loaded from
    hash: str  # xxh128 of the whole file content
    style: str = "chat"
    stop: tuple[str, ...] = ()
    grounding: str = "none"
    min_answer_words: int = 1
    reads: str = "opening"
    switch: str = ""
    judge: bool = True
    refine: bool = True
    samples: int = 1
    sample_temperature: float = 0.7
    max_facts: int = 40
    context: str = "passage"

    def render(self, **variables: object) -> str:
        return render_template(self.body, self.source, **variables)

    def render_question(self, field: str, **variables: object) -> str:
        template = dict(self.questions)[field]
        return render_template(template, f"{self.source}:questions.{field}", **variables)


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False, trim_blocks=True
)


@lru_cache(maxsize=1024)
def _compiled(template: str) -> jinja2.Template:
    """Compile each distinct template once: compiling on every render was ~85% of the pipeline's
    CPU at ~1,000 requests/s (benchmarks/overhead.py profile)."""
    return _ENV.from_string(template)


def render_template(template: str, source: str, **variables: object) -> str:
    try:
        return _compiled(template).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise PromptError(f"{source}: {exc} (available: {', '.join(sorted(variables))})") from exc
    except jinja2.TemplateError as exc:
        raise PromptError(f"{source}: template error: {exc}") from exc


def builtin_dir() -> Path:
    """The shipped prompt folder: inside the wheel, or prompts/ in a source checkout."""
    packaged = resources.files("qagen").joinpath("_prompts")
    if packaged.is_dir():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parents[2] / "prompts"
    if source_tree.is_dir():
        return source_tree
    raise PromptError("built-in prompts not found: the qagen installation is incomplete")


def load_file(path: Path) -> Prompt:
    try:
        raw = path.read_text(encoding="utf-8")
        post = frontmatter.loads(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PromptError(f"{path}: cannot read prompt file: {exc}") from exc
    try:
        fm = _FrontMatter(**post.metadata)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'front-matter'}: {e['msg']}" for e in exc.errors())
        raise PromptError(f"{path}: invalid front-matter: {problems}") from exc
    try:
        _ENV.parse(post.content)
        for tmpl in fm.questions.values():
            _ENV.parse(tmpl)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"{path}: Jinja syntax error line {exc.lineno}: {exc.message}") from exc
    return Prompt(
        id=fm.id,
        role=fm.role,
        description=fm.description,
        enabled=fm.enabled,
        scope=fm.scope,
        output=fm.output,
        n=fm.n,
        max_question_chars=fm.max_question_chars,
        max_answer_chars=fm.max_answer_chars,
        temperature=fm.temperature,
        max_tokens=fm.max_tokens,
        questions=tuple(fm.questions.items()),
        body=post.content.strip(),
        source=str(path),
        hash=ids.hash_str("prompt", raw),
        style=fm.style,
        stop=tuple(fm.stop),
        grounding=fm.grounding,
        min_answer_words=fm.min_answer_words,
        reads=fm.reads,
        switch=fm.switch or "",
        judge=fm.judge,
        refine=fm.refine,
        samples=fm.samples,
        sample_temperature=fm.sample_temperature,
        max_facts=fm.max_facts,
        context=fm.context,
    )


def _load_dir(folder: Path) -> dict[str, Prompt]:
    found: dict[str, Prompt] = {}
    for path in sorted(folder.glob("*.md")):
        prompt = load_file(path)
        if prompt.id in found:
            raise PromptError(f"{path}: duplicate prompt id {prompt.id!r} (also in {found[prompt.id].source})")
        found[prompt.id] = prompt
    return found


@dataclass(frozen=True)
class PromptSet:
    system: Prompt
    context: Prompt
    perspectives: tuple[Prompt, ...]  # enabled generator/code prompts, in id order
    all: tuple[Prompt, ...]  # everything, including disabled ones and other roles

    def by_id(self, prompt_id: str) -> Prompt:
        for p in self.all:
            if p.id == prompt_id:
                return p
        raise KeyError(prompt_id)


REFINE_STYLES = ("chat", "helixnet")
SUITE_KEYS = frozenset({"enabled", "samples", "sample_temperature", "n", "max_facts"})


def suites() -> dict[str, dict[str, dict[str, object]]]:
    """The named suites of ``prompts/suites.yaml``: per suite, front-matter overrides by prompt id."""
    return yaml.safe_load((builtin_dir() / "suites.yaml").read_text(encoding="utf-8")) or {}


SUITE_DESCRIPTION = "description"  # a suite's own key: what it is for and what it measured (qagen prompts list)


def suite_description(suite: str) -> str:
    return str((suites().get(suite) or {}).get(SUITE_DESCRIPTION, ""))


def _apply_suite(prompts: dict[str, Prompt], suite: str) -> None:
    known = suites()
    if suite not in known:
        raise PromptError(f"unknown suite {suite!r} (choose from {', '.join(known)})")
    for pid, overrides in (known[suite] or {}).items():
        if pid == SUITE_DESCRIPTION:
            continue
        bad = set(overrides) - SUITE_KEYS
        if pid not in prompts or bad:
            problem = f"cannot set {', '.join(sorted(bad))}" if bad else "no such prompt"
            raise PromptError(f"suite {suite!r}: {pid}: {problem}")
        fm = _FrontMatter.model_validate({"id": pid, "role": prompts[pid].role, **overrides})  # bounds as in a file
        prompts[pid] = replace(prompts[pid], **{k: getattr(fm, k) for k in overrides})


def load_prompts(user_dir: Path | None = None, refine_style: str = "chat",
                 switches: Collection[str] = (), suite: str = "broad") -> PromptSet:
    """The built-in prompts, shaped by a named ``suite``, then overridden and extended by ``user_dir``.

    ``refine_style="helixnet"`` swaps in the built-in critic and regenerator
    written in HelixNet's completion format (``prompts/helixnet/``). ``suite``
    names an entry of ``prompts/suites.yaml``: front-matter overrides (which
    perspectives run, how many samples each) that keep every prompt's hash, so
    its first sample's requests are shared by every suite. A prompt
    with a ``switch`` runs only when ``switches`` names it (``Settings.prompt_switches``);
    otherwise it is loaded disabled, like ``enabled: false``.
    """
    if refine_style not in REFINE_STYLES:
        raise PromptError(f"unknown refine style {refine_style!r} (choose from {', '.join(REFINE_STYLES)})")
    prompts = _load_dir(builtin_dir())
    if refine_style != "chat":
        prompts.update(_load_dir(builtin_dir() / refine_style))
    _apply_suite(prompts, suite)
    if user_dir is not None:
        if not user_dir.is_dir():
            raise PromptError(f"prompts folder not found: {user_dir}")
        overrides = _load_dir(user_dir)
        for pid, prompt in overrides.items():
            log.info("prompt %s %s from %s", pid, "overridden" if pid in prompts else "added", prompt.source)
        prompts.update(overrides)
    for pid, prompt in prompts.items():
        if prompt.switch and prompt.switch not in switches and prompt.enabled:
            prompts[pid] = replace(prompt, enabled=False)
    for needed, role in (("system", "system"), ("context", "context")):
        if needed not in prompts or prompts[needed].role != role:
            raise PromptError(f"no prompt with id {needed!r} and role {role!r}")
    ordered = tuple(prompts[k] for k in sorted(prompts))
    perspectives = tuple(p for p in ordered if p.enabled and p.role in ("generator", "code"))
    if not perspectives:
        raise PromptError("no enabled perspective prompts")
    return PromptSet(system=prompts["system"], context=prompts["context"], perspectives=perspectives, all=ordered)
