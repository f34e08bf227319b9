"""Test helpers shipped with qagen (need the ``aiohttp`` test extra)."""

from .stub_server import (
    FaultInjector,
    StubReply,
    StubServer,
    default_handler,
    schema_instance,
)

__all__ = ["FaultInjector", "StubReply", "StubServer", "default_handler", "schema_instance"]
