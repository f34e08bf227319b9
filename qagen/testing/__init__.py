"""Test helpers shipped with qagen: an in-process ``FakeLLM`` and a stub HTTP server (needs the ``aiohttp`` test extra)."""

from .fake_llm import FakeLLM, FakeReply
from .json_schema import schema_instance
from .stub_server import FaultInjector, StubReply, StubServer, default_handler

__all__ = ["FakeLLM", "FakeReply", "FaultInjector", "StubReply", "StubServer", "default_handler", "schema_instance"]
