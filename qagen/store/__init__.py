"""The state store: one SQLite database (WAL) beside the output, and every SQL statement qagen runs.

``db`` is the connection (lock, migrations, group commit, shard merge; ``schema`` the tables); ``cache``, ``corpus``,
``pairs``, ``rewrites``, ``flow``, ``report`` and ``reviews`` hold the queries, one concern each; ``store`` puts them
together as :class:`Store`. Code outside this package calls Store's named methods and
never writes SQL itself.
"""

from qagen.core.errors import StoreError
from qagen.store.db import DB_NAME
from qagen.store.flow import RunRecord
from qagen.store.store import ShardStore, Store

__all__ = ["DB_NAME", "RunRecord", "ShardStore", "Store", "StoreError"]
