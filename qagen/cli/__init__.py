"""The ``qagen`` command line: thin wrappers over library calls (one module per command group)."""

from qagen.cli.app import app, main

__all__ = ["app", "main"]
