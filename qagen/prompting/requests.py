"""Request building: the shared prefix first, the perspective's instruction last.

System text, then the chunk with its title, section and short doc ID, then
the task. vLLM's and llama.cpp's prefix caches then reuse the chunk's KV
across the whole suite (and the critic, regenerator and judge calls, which
use the same prefix).
"""

from __future__ import annotations

from functools import lru_cache

from qagen.core import ids
from qagen.core.types import Chunk, Document
from qagen.llm.base import ChatRequest, ChatResponse, Message
from qagen.prompting.prompts import Prompt, PromptSet
from qagen.prompting.schemas import FREE_TEXT, schema_for


def prompt_variables(doc: Document, chunk: Chunk) -> dict[str, object]:
    return _variables(doc.doc_id, doc.meta, chunk)


def _variables(doc_id: str, meta: tuple[tuple[str, str], ...], chunk: Chunk) -> dict[str, object]:
    return {
        "title": chunk.title,
        "section": chunk.section,
        "short_id": ids.short(doc_id),
        "meta": [(k, v) for k, v in meta if k != "title"],
        "text": chunk.text,
        "part": chunk.index + 1,
    }


@lru_cache(maxsize=64)
def _prefix(system: Prompt, context: Prompt, doc_id: str, meta: tuple[tuple[str, str], ...], chunk: Chunk) -> tuple[str, str]:
    """System text and the chunk's context block, rendered once per chunk (the suite shares them).

    Keyed by what they are rendered from (the prompts, the document's ID and
    metadata, the chunk itself), never by the whole document, so the cache
    holds a few chunks' text at most.
    """
    return system.render(), context.render(**_variables(doc_id, meta, chunk))


def build_request(
    prompts: PromptSet,
    prompt: Prompt,
    doc: Document,
    chunk: Chunk,
    model: str,
    *,
    quote: bool | None = None,
    top_logprobs: int = 0,
    seed: int | None = None,
    size: tuple[int, int] = (0, 0),
    **extra: object,
) -> ChatRequest:
    """Shared prefix (system text, then the chunk) first; the prompt's instruction last.

    A ``style: completion`` prompt renders the whole raw prompt itself (with the
    passage as ``text``) and goes to /v1/completions. ``judge``/``text`` outputs
    are read as plain text, so no schema is sent. ``size`` bounds a fact_questions request's schema: (facts it
    lists, the most questions one of them needs).
    """
    variables = prompt_variables(doc, chunk)
    common = {
        "model": model,
        "temperature": prompt.temperature,
        "max_tokens": prompt.max_tokens,
        "prompt_id": prompt.id,
        "prompt_hash": prompt.hash,
        "role": prompt.role,
        "top_logprobs": top_logprobs,
        "seed": seed,
        "stop": prompt.stop,
    }
    if prompt.style == "completion":
        raw = prompt.render(n=prompt.n, **variables, **extra)
        return ChatRequest(messages=(Message("prompt", raw),), mode="completion", **common)  # type: ignore[arg-type]
    instruction = prompt.render(n=prompt.n, **variables, **extra)
    if prompt.context == "sentence":  # the task quotes what it asks about: no system text, no chunk
        messages: tuple[Message, ...] = (Message("user", instruction),)
    else:
        system, context = _prefix(prompts.system, prompts.context, doc.doc_id, doc.meta, chunk)
        messages = (Message("system", system), Message("user", f"{context}\n\nTask: {instruction}"))
    if prompt.output in FREE_TEXT:
        return ChatRequest(messages=messages, **common)  # type: ignore[arg-type]
    schema = schema_for(prompt, quote=quote, facts=size[0], per_fact=size[1])
    return ChatRequest(
        messages=messages, json_schema=schema.json_schema, schema_name=schema.name, **common  # type: ignore[arg-type]
    )


def corrective_request(request: ChatRequest, reply: ChatResponse, error: str) -> ChatRequest:
    hint = " It was cut off at the token limit: keep every field shorter." if reply.finish_reason == "length" else ""
    return request.with_messages(
        Message("assistant", reply.content[:4000]),
        Message("user", f"That reply was not valid: {error}.{hint} Reply again with JSON only, matching the schema."),
    )
