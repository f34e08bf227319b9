"""Per-role endpoints: critic, regenerator and judge can each have their own server and model.

HelixNet runs three fine-tuned models (actor, critic, regenerator). Each role
here defaults to the generator's backend; ``--critic-base-url`` /
``--critic-model`` (and the same for regenerator and judge) point one
elsewhere. A role given only a model name shares the generator's backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .llm import LLM

if TYPE_CHECKING:
    from .config import Settings

ROLES = ("critic", "regenerator", "judge")


def make_role_llms(settings: Settings, generator_llm: LLM) -> dict[str, tuple[LLM, str]]:
    """role -> (backend, model) for the roles configured away from the generator."""
    from .pipeline import (  # the same construction path as the generator's
        IngestError,
        make_llm,
    )

    roles: dict[str, tuple[LLM, str]] = {}
    by_url: dict[tuple[str, str], LLM] = {}
    for role in ROLES:
        url = getattr(settings, f"{role}_base_url")
        model = getattr(settings, f"{role}_model")
        if url is None and model is None:
            continue
        if url is None:
            if settings.uses_embedded:
                raise IngestError(f"--{role}-model needs --{role}-base-url when the generator is the embedded model")
            roles[role] = (generator_llm, model)
            continue
        if model is None:
            raise IngestError(f"--{role}-base-url needs --{role}-model (the model name that server serves)")
        if (url, model) not in by_url:
            llm, _ = make_llm(settings.model_copy(update={"base_url": url, "model": model}))
            by_url[(url, model)] = llm
        roles[role] = (by_url[(url, model)], model)
    return roles
