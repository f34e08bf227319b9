"""One error root. The CLI maps a ``QagenError`` to its exit code in one place (``qagen.cli.common``).

The categories say what the user can do about it:

* ``InputError``: the documents folder, a settings value, a prompt or a
  question file is unusable (fix the input);
* ``BackendError``: a model backend cannot be used (endpoint unreachable,
  embedded model or an optional extra not installed);
* ``StoreError``: the state database cannot be used (locked, damaged, too new);
* ``StageError``: a later stage failed (train, eval, notify, report, card);
* ``FailFast``: a stage's failure rate passed its limit early in the run.

Modules subclass these where a caller needs a finer name (``IngestError``,
``TrainError``...). Every one of them exits 1 unless it says otherwise.
"""

from __future__ import annotations


class QagenError(Exception):
    """The root of every error qagen raises on purpose."""

    exit_code = 1


class InputError(QagenError, ValueError):
    """Bad input: a missing folder, an invalid setting, a malformed prompt or question file."""


class BackendError(QagenError):
    """A model backend cannot be used."""


class StoreError(QagenError):
    """The state database cannot be used (locked, corrupted, too new)."""


class StageError(QagenError):
    """A stage after ingest failed (train, eval, notify, report, card, the run flow)."""


class FailFast(QagenError):
    """A stage's failure rate passed its limit early in the run: stop instead of wasting the rest."""

    def __init__(self, stage: str, rate: float, seen: int, limit: float, example: str):
        super().__init__(
            f"stopped early: {rate:.0%} of the first {seen} {stage} items failed (limit {limit:.0%}). "
            f"Example: {example or '(none recorded)'}"
        )
        self.stage, self.rate, self.seen, self.limit, self.example = stage, rate, seen, limit, example

    def __reduce__(self) -> tuple[object, ...]:  # picklable with its fields (Ray sends it back to the driver)
        return (FailFast, (self.stage, self.rate, self.seen, self.limit, self.example))
