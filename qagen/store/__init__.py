"""The state store: one SQLite database (WAL) beside the output, and every SQL statement qagen runs."""

from qagen.core.errors import StoreError
from qagen.store.db import DB_NAME, ShardStore, Store

__all__ = ["DB_NAME", "ShardStore", "Store", "StoreError"]
