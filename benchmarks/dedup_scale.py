"""Near-duplicate filtering time vs the number of questions (``NearDuplicateFilter.select``).

Two synthetic shapes: the instant stub's old strings ("<11 hex digits> N": every question shares its
number token with thousands of others) and template questions ("What did <6 pseudo-words> do in 19xx?":
they share the template's words, as many real generated questions do). Give the qagen tree to import
(a ``git worktree`` of an older commit compares two versions in one run), then the sizes::

    python benchmarks/dedup_scale.py . 10000 20000 40000
"""

import random
import sys
import time

import xxhash

sys.path.insert(0, sys.argv[1])
from qagen.curate.quality import NearDuplicateFilter


def hexq(i: int) -> str:
    return f"{xxhash.xxh64_hexdigest(str(i).encode())[:11]} {i % 7 + 1}"


rng = random.Random(0)
vocab = ["".join(rng.choice("bcdfghjklmnprstvwz" if j % 2 == 0 else "aeiou") for j in range(5)) for _ in range(20000)]


def wordq(i: int) -> str:
    return "What did " + " ".join(rng.choice(vocab) for _ in range(6)) + f" do in {1900 + i % 100}?"


for shape, make in (("hex", hexq), ("words", wordq)):
    for n in map(int, sys.argv[2:]):
        items = [(str(i), make(i), 0.5) for i in range(n)]
        started = time.perf_counter()
        kept, dropped = NearDuplicateFilter().select(items)
        print(shape, n, f"{time.perf_counter() - started:.1f}s", "kept", len(kept), "dropped", len(dropped), flush=True)
