"""Output schemas for generating calls.

Each prompt names an output kind; this module turns it into a pydantic model
(used to validate the reply) and the JSON schema sent as ``response_format``.
Both come from the same model, so they cannot drift apart. Every string and
array is bounded (maxLength / maxItems): a small model at low temperature
otherwise repeats itself until max_tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from qagen.prompting.prompts import Prompt, PromptError

_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class OutputSchema:
    name: str
    model: type[BaseModel]
    json_schema: str  # JSON text in field order; part of the request key

    def validate(self, content: str) -> BaseModel:
        """Parse and validate a reply; raises ValueError with a readable message."""
        text = _strip_fences(content)
        try:
            return self.model.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise ValueError(f"reply does not match the {self.name} schema: {problems}") from None


def _strip_fences(text: str) -> str:
    """Tolerate a reply wrapped in a ```json fence (some servers ignore response_format)."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def _text(max_chars: int, min_chars: int = 1) -> object:
    return Annotated[str, Field(min_length=min_chars, max_length=max_chars)]


def _inline_refs(schema: dict[str, object]) -> dict[str, object]:
    """Inline $defs and drop cosmetic 'title' keys: small grammars, fewer engine quirks."""
    defs = schema.pop("$defs", {})

    def walk(node: object) -> object:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[str(node["$ref"]).rsplit("/", 1)[-1]])  # type: ignore[index]
            out = {}
            for key, value in node.items():
                if key == "properties":  # property names are data, never annotations
                    out[key] = {name: walk(sub) for name, sub in value.items()}  # type: ignore[union-attr]
                elif not (key == "title" and isinstance(value, str)):
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[return-value]


def _finish(name: str, model: type[BaseModel]) -> OutputSchema:
    schema = _inline_refs(model.model_json_schema())
    # Field order is kept on purpose: grammar-constrained engines generate properties
    # in schema order, and "question" must come before "answer".
    return OutputSchema(name=name, model=model, json_schema=json.dumps(schema))


QUOTE_CHARS = 300


def _pair_fields(max_q: int, max_a: int, quote: bool) -> dict[str, object]:
    """question, [quote,] answer - in that order: the model finds its evidence before it answers."""
    fields: dict[str, object] = {"question": (_text(max_q, 5), ...)}
    if quote:
        fields["quote"] = (_text(QUOTE_CHARS, 8), ...)
    fields["answer"] = (_text(max_a), ...)
    return fields


@lru_cache(maxsize=256)
def _qa_pairs(n: int, max_q: int, max_a: int, quote: bool = False) -> OutputSchema:
    pair = create_model("Pair", __config__=_STRICT, **_pair_fields(max_q, max_a, quote))  # type: ignore[call-overload]
    model = create_model(
        "QAPairs", __config__=_STRICT, pairs=(Annotated[list[pair], Field(min_length=1, max_length=n)], ...)  # type: ignore[valid-type]
    )
    return _finish("qa_pairs", model)


@lru_cache(maxsize=256)
def _answers(fields: tuple[str, ...], max_a: int) -> OutputSchema:
    model = create_model("Answers", __config__=_STRICT, **{f: (_text(max_a), ...) for f in fields})  # type: ignore[call-overload]
    return _finish("answers", model)


@lru_cache(maxsize=256)
def _entities(n: int, max_a: int) -> OutputSchema:
    entity = create_model(
        "Entity", __config__=_STRICT, name=(_text(80), ...), description=(_text(max_a), ...)
    )
    relation = create_model(
        "Relation", __config__=_STRICT, subject=(_text(80), ...), relation=(_text(80), ...), object=(_text(80), ...)
    )
    model = create_model(
        "Entities",
        __config__=_STRICT,
        entities=(Annotated[list[entity], Field(min_length=1, max_length=n)], ...),  # type: ignore[valid-type]
        relations=(Annotated[list[relation], Field(min_length=0, max_length=n)], ...),  # type: ignore[valid-type]
    )
    return _finish("entities", model)


@lru_cache(maxsize=64)
def _unanswerable(n: int, max_q: int, max_what: int) -> OutputSchema:
    """Questions the passage does not answer, each with ``what`` it asks; code writes the answer
    ("The documents don't say {what}.", ``qagen.prompting.declines``), so the schema has no answer field."""
    item = create_model("Unanswerable", __config__=_STRICT, question=(_text(max_q, 5), ...),
                        what=(_text(max_what), ...))
    model = create_model(
        "UnanswerableItems", __config__=_STRICT,
        items=(Annotated[list[item], Field(min_length=1, max_length=n)], ...),  # type: ignore[valid-type]
    )
    return _finish("unanswerable", model)


@lru_cache(maxsize=64)
def _spans(n: int, max_chars: int) -> OutputSchema:
    """The fact ledger's extraction request: short phrases copied from the passage (code checks each)."""
    model = create_model(
        "Spans", __config__=_STRICT,
        phrases=(Annotated[list[_text(max_chars)], Field(min_length=1, max_length=n)], ...),  # type: ignore[valid-type]
    )
    return _finish("spans", model)


@lru_cache(maxsize=256)
def _fact_questions(facts: int, per_fact: int, max_q: int) -> OutputSchema:
    """Answer-first questions: for each numbered answer span of the sentence, its questions."""
    item = create_model(
        "FactQuestions", __config__=_STRICT, number=(Annotated[int, Field(ge=1, le=facts)], ...),
        questions=(Annotated[list[_text(max_q, 5)], Field(min_length=1, max_length=per_fact)], ...),  # type: ignore[valid-type]
    )
    model = create_model(
        "FactQuestionItems", __config__=_STRICT,
        items=(Annotated[list[item], Field(min_length=1, max_length=facts)], ...),  # type: ignore[valid-type]
    )
    return _finish("fact_questions", model)


PROBLEMS = ("unsupported_claim", "not_self_contained", "vague", "wrong", "incomplete")


@lru_cache(maxsize=16)
def _critique(max_chars: int) -> OutputSchema:
    problem = Literal[PROBLEMS]  # type: ignore[valid-type]
    model = create_model(
        "Critique",
        __config__=_STRICT,
        critique=(_text(max_chars), ...),
        problems=(Annotated[list[problem], Field(max_length=len(PROBLEMS))], ...),  # type: ignore[valid-type]
        needs_revision=(bool, ...),
    )
    return _finish("critique", model)


@lru_cache(maxsize=16)
def _revision(max_q: int, max_a: int, quote: bool = False) -> OutputSchema:
    model = create_model("Revision", __config__=_STRICT, **_pair_fields(max_q, max_a, quote))  # type: ignore[call-overload]
    return _finish("revision", model)


@lru_cache(maxsize=16)
def _answer(max_a: int, quote: bool) -> OutputSchema:
    fields = _pair_fields(20, max_a, quote)
    del fields["question"]
    return _finish("answer", create_model("Answer", __config__=_STRICT, **fields))  # type: ignore[call-overload]


# The styles a rewrite of a chunk may take (prompts/rewrite.md describes each; qagen/generate/rewrite.py picks them).
REWRITE_STYLES = ("relations", "brief", "encyclopedia", "facts")


@lru_cache(maxsize=16)
def _rewrites(n: int, max_chars: int) -> OutputSchema:
    style = Literal[REWRITE_STYLES]  # type: ignore[valid-type]
    rewrite = create_model("Rewrite", __config__=_STRICT, style=(style, ...), text=(_text(max_chars, 20), ...))
    model = create_model(
        "Rewrites", __config__=_STRICT, rewrites=(Annotated[list[rewrite], Field(min_length=1, max_length=n)], ...)  # type: ignore[valid-type]
    )
    return _finish("rewrites", model)


FREE_TEXT = ("judge", "text")  # outputs read as plain text: no JSON schema is sent


def schema_for(prompt: Prompt, *, quote: bool | None = None, facts: int = 0, per_fact: int = 0) -> OutputSchema:
    """The prompt's output schema; ``quote`` overrides whether pairs carry a supporting quote; ``facts`` and
    ``per_fact`` size a fact_questions request (the facts it lists, the most questions one of them needs)."""
    with_quote = prompt.grounding == "quote" if quote is None else quote
    if prompt.output == "critique":
        return _critique(prompt.max_answer_chars)
    if prompt.output == "revision":
        return _revision(prompt.max_question_chars, prompt.max_answer_chars, with_quote)
    if prompt.output == "answer":
        return _answer(prompt.max_answer_chars, with_quote)
    if prompt.output == "qa_pairs":
        return _qa_pairs(prompt.n, prompt.max_question_chars, prompt.max_answer_chars, with_quote)
    if prompt.output == "answers":
        fields = tuple(f for f, _ in prompt.questions)
        if not fields:
            raise PromptError(f"{prompt.source}: output 'answers' needs a 'questions' mapping")
        return _answers(fields, prompt.max_answer_chars)
    if prompt.output == "entities":
        return _entities(prompt.n, prompt.max_answer_chars)
    if prompt.output == "spans":
        return _spans(prompt.n, prompt.max_answer_chars)
    if prompt.output == "fact_questions":
        return _fact_questions(max(facts, 1), max(per_fact, 1), prompt.max_question_chars)
    if prompt.output == "rewrites":
        return _rewrites(prompt.n, prompt.max_answer_chars)
    if prompt.output == "unanswerable":  # max_answer_chars bounds ``what``, the part of the answer the model writes
        return _unanswerable(prompt.n, prompt.max_question_chars, prompt.max_answer_chars)
    raise PromptError(f"{prompt.source}: output {prompt.output!r} has no JSON schema")
