"""Making backends from settings: the generator's LLM and the role LLMs, one construction path.

One endpoint: ``OpenAIHTTP``. Several (or ``adaptive``): ``Balanced`` over
them. ``backend="vllm"``: an in-process vLLM engine. Otherwise the embedded
model. Per-role endpoints: critic, regenerator and judge can each have their
own server and model (HelixNet runs three fine-tuned models: actor, critic,
regenerator); a role given only a model name shares the generator's backend.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from qagen.config import Settings
from qagen.core.errors import BackendError, InputError
from qagen.llm.base import LLM
from qagen.llm.embedded import MODEL_NAME, EmbeddedLLM, ServerConfig, find_model
from qagen.llm.openai_http import OpenAIHTTP

log = logging.getLogger(__name__)

ROLES = ("critic", "regenerator", "judge")


def make_role_llms(settings: Settings, generator_llm: LLM) -> dict[str, tuple[LLM, str]]:
    """role -> (backend, model) for the roles configured away from the generator."""
    roles: dict[str, tuple[LLM, str]] = {}
    by_url: dict[tuple[str, str], LLM] = {}
    for role in ROLES:
        url = getattr(settings, f"{role}_base_url")
        model = getattr(settings, f"{role}_model")
        if url is None and model is None:
            continue
        if url is None:
            if settings.uses_embedded:
                raise InputError(f"--{role}-model needs --{role}-base-url when the generator is the embedded model")
            roles[role] = (generator_llm, model)
            continue
        if model is None:
            raise InputError(f"--{role}-base-url needs --{role}-model (the model name that server serves)")
        if (url, model) not in by_url:
            llm, _ = make_llm(settings.model_copy(update={"base_url": url, "model": model}))
            by_url[(url, model)] = llm
        roles[role] = (by_url[(url, model)], model)
    return roles


@dataclass(frozen=True)
class EndpointProbe:
    """What ``GET {base_url}/models`` said. ``unreachable``: why nothing answered. ``status``: the HTTP error it
    answered with (some servers have no /models). Else the ``models`` it lists, unless the list could not be
    read (``unreadable``: why)."""

    base_url: str
    unreachable: str = ""
    status: int | None = None
    models: tuple[str, ...] = ()
    unreadable: str = ""

    @property
    def answered(self) -> bool:
        return not self.unreachable


def probe_endpoint(base_url: str, api_key: str, timeout: float = 10.0) -> EndpointProbe:
    """Ask the endpoint for its model list; every outcome is an :class:`EndpointProbe`, never an exception."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        return EndpointProbe(base_url, status=exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: not a URL urllib can open
        return EndpointProbe(base_url, unreachable=str(getattr(exc, "reason", exc)))
    try:
        with response:
            body = json.loads(response.read() or b"{}")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return EndpointProbe(base_url, unreadable=str(getattr(exc, "reason", exc)))
    data = body.get("data") if isinstance(body, dict) else None
    models = tuple(str(m.get("id")) for m in data or [] if isinstance(m, dict) and m.get("id"))
    return EndpointProbe(base_url, models=models)


def check_endpoint(base_url: str, api_key: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear message when the endpoint cannot be reached at all (an HTTP error is an answer: some
    servers have no /models, and auth is checked per request)."""
    probe = probe_endpoint(base_url, api_key, timeout)
    if not probe.answered:
        raise BackendError(f"cannot reach the LLM endpoint {base_url}: {probe.unreachable}")


def make_llm(settings: Settings) -> tuple[LLM, str]:
    """The generator backend and the model name that goes into request keys.

    One endpoint: ``OpenAIHTTP``. Several (or ``adaptive``): ``Balanced`` over
    them. ``backend="vllm"``: an in-process vLLM engine. Otherwise the embedded model.
    """
    if settings.backend == "vllm":
        from qagen.llm.vllm import VLLMBackend, VLLMMissing

        if not settings.model:
            raise InputError("--model is required with --backend vllm (a local path or model name vLLM can load)")
        try:
            return VLLMBackend.from_settings(settings), settings.model
        except VLLMMissing as exc:
            raise BackendError(str(exc)) from None
    if settings.uses_embedded:
        llm = EmbeddedLLM(
            ServerConfig(
                model_path=str(find_model()),
                threads=settings.embedded_threads,
                n_parallel=settings.embedded_parallel,
                ctx_per_slot=settings.embedded_ctx_per_slot,
            ),
            concurrency=max(settings.concurrency, settings.embedded_parallel),
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
        )
        return llm, MODEL_NAME  # the server starts on the first cache miss
    endpoints = settings.endpoints
    if not settings.model:
        raise InputError("--model is required with --base-url (the model name the server serves)")
    if len(endpoints) == 1 and not settings.adaptive:
        check_endpoint(endpoints[0], settings.api_key_value())
        llm = OpenAIHTTP(
            endpoints[0],
            api_key=settings.api_key_value(),
            concurrency=settings.concurrency,
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
            system_role=settings.system_role,
            transport_kind=settings.transport,
        )
        return llm, settings.model
    return _balanced(settings, endpoints), settings.model


def _balanced(settings: Settings, endpoints: list[str]) -> LLM:
    """Several endpoints: those unreachable now start marked down (the health probe may bring them back)."""
    from qagen.llm.balance import Balanced

    down: list[str] = []
    for url in endpoints:
        try:
            check_endpoint(url, settings.api_key_value())
        except BackendError as exc:
            log.warning("%s", exc)
            down.append(url)
    if len(down) == len(endpoints):
        raise BackendError(f"cannot reach any of the LLM endpoints: {', '.join(endpoints)}")
    llm = Balanced(
        endpoints,
        api_key=settings.api_key_value(),
        per_endpoint=settings.per_endpoint_concurrency or settings.concurrency,
        max_per_endpoint=settings.max_concurrency,
        adaptive=settings.adaptive,
        transport_kind=settings.transport,
        timeout=settings.request_timeout,
        max_retries=settings.max_retries,
        system_role=settings.system_role,
    )
    for endpoint in llm.endpoints:
        endpoint.healthy = endpoint.name not in down
    return llm


