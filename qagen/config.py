"""Settings. The only module that reads the environment.

Precedence: CLI flags > environment (``QAGEN_*``; the API key also from
``OPENAI_API_KEY``) > defaults. Secrets are held as ``SecretStr`` so they
never show up in a repr, a log line or the state database.
"""

from __future__ import annotations

import os

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Chunking defaults sized for a 7B model (Mistral-7B-Instruct: 32k context).
# A ~1k-token chunk leaves room for the instruction and several pairs, and
# keeps each call focused enough for specific questions.
DEFAULT_CHUNK_TOKENS = 1000
DEFAULT_CHUNK_OVERLAP = 100
# The embedded 135M model is slow on CPU (~50-90 tokens/s), and prefill costs
# as much as decoding there, so it gets smaller chunks by default.
EMBEDDED_CHUNK_TOKENS = 600
EMBEDDED_CHUNK_OVERLAP = 60


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QAGEN_", extra="ignore", populate_by_name=True)

    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QAGEN_API_KEY", "OPENAI_API_KEY", "api_key")
    )
    concurrency: int = Field(default=8, ge=1, le=4096)
    request_timeout: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    # "auto": fold the system prompt into the first user turn for model
    # families whose chat template has no system role (Mistral-Instruct).
    system_role: str = Field(default="auto", pattern="^(auto|yes|no)$")

    chunk_size: int | None = Field(default=None, gt=0)
    chunk_overlap: int | None = Field(default=None, ge=0)
    tokenizer: str | None = None
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    split_by: str = Field(default="auto", pattern="^(auto|document|chunk|pair)$")

    # Refinement (critic -> regenerator). Off by default until the judge and
    # the demo sizing land (issue 3); --refine turns it on.
    refine: bool = False
    max_rounds: int = Field(default=3, ge=1, le=10)
    min_rounds: int = Field(default=0, ge=0, le=10)

    # Benchmark / held-out question files; near matches are dropped from the dataset.
    decontaminate: list[str] = Field(default_factory=list)

    # Embedded llama.cpp server (used when no base_url is configured).
    # Measured on a quiet 2-core box: 2 threads 48 tok/s, 1 thread 32 tok/s
    # (benchmarks/RESULTS.md). Bigger boxes keep one core for the client.
    embedded_threads: int = Field(default_factory=lambda: max(2, (os.cpu_count() or 2) - 1), ge=1)
    embedded_parallel: int = Field(default=4, ge=1, le=64)
    embedded_ctx_per_slot: int = Field(default=2048, ge=512)

    @property
    def uses_embedded(self) -> bool:
        return not self.base_url

    def api_key_value(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else "not-needed"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with non-``None`` overrides applied on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)
