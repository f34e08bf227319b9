"""``Store``: the state database with every query qagen runs, one class over the concern modules."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from qagen.llm.base import ChatResponse
from qagen.store.cache import CacheQueries
from qagen.store.corpus import CorpusQueries
from qagen.store.facts import FactQueries
from qagen.store.flow import FlowQueries
from qagen.store.pairs import PairQueries
from qagen.store.report import ReportQueries
from qagen.store.reviews import ReviewQueries
from qagen.store.rewrites import RewriteQueries


class Store(CacheQueries, CorpusQueries, ReviewQueries, PairQueries, FactQueries, RewriteQueries, FlowQueries,
            ReportQueries):
    """The state store (see :mod:`qagen.store.db`): the connection and group commit, plus the queries of

    - :mod:`qagen.store.cache`: requests with their responses, failures;
    - :mod:`qagen.store.corpus`: documents, chunks, a run's documents;
    - :mod:`qagen.store.pairs`: pairs, a run's pairs, refinements, verdicts;
    - :mod:`qagen.store.facts`: the fact ledger (each chunk's answer spans), a run's facts;
    - :mod:`qagen.store.rewrites`: rewrites of chunks for continued pretraining, a run's rewrites;
    - :mod:`qagen.store.flow`: runs, flow stages, notifications;
    - :mod:`qagen.store.report`: the report's and the dataset card's read queries;
    - :mod:`qagen.store.reviews`: a human's decisions on pairs (``qagen review``) and how export applies them.
    """


class ShardStore(Store):
    """A worker's own state shard (``--executor ray``): writes go here, cached replies also come from ``base``.

    ``base`` is the main store's database, opened read-only, so a worker pays
    only for requests neither its shard nor the main store has seen. The
    driver merges every shard into the main store at the end
    (:meth:`Store.merge_shard`).
    """

    def __init__(self, folder: Path, base: Path | None, **kwargs: object):
        super().__init__(folder, **kwargs)  # type: ignore[arg-type]
        self.base: sqlite3.Connection | None = None
        if base is not None and base.exists():
            self.base = sqlite3.connect(f"{base.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)

    def get_response(self, key: str) -> ChatResponse | None:
        found = super().get_response(key)
        if found is None and self.base is not None:
            found = self._response_from(self.base, key)
        return found

    def close(self) -> None:
        if self.base is not None:
            self.base.close()
        super().close()
