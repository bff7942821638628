"""nccl-tests' data check for a simulated collective: run it carrying data, count the wrong elements.

Every rank starts with its own integers (int64, so that any reduction order gives the exact answer),
the collective runs data-carrying on the fabric with the same schedule as the timed run (same size,
chunks and channels; the buffers are at most ``MAX_CHECK_ELEMENTS`` long, cut the same way), and each
rank's buffer is compared with what the collective must leave there (kinds.py). ``#wrong`` is the sum
over ranks of mismatching elements, as nccl-tests reports it.
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.kinds import kind as lookup
from fabricsim.collectives.p2p import ring_shift_pairs
from fabricsim.collectives.shards import shard_bounds

__all__ = ["MAX_CHECK_ELEMENTS", "expected", "count_wrong"]

MAX_CHECK_ELEMENTS = 4096


def expected(kind: str, inputs: dict, ranks: list[int], *, root: int | None = None, pairs=None) -> dict:
    """rank -> (elements that must hold a value, the value) after ``kind`` on ``inputs``."""
    name = lookup(kind).name
    ranks = sorted(ranks)
    n = len(inputs[ranks[0]])
    b = shard_bounds(n, len(ranks))
    total = sum(inputs[r] for r in ranks)
    root = ranks[0] if root is None else root
    everything = slice(0, n)
    if name == "allreduce":
        return {r: (everything, total) for r in ranks}
    if name == "reducescatter":
        return {r: (slice(b[j], b[j + 1]), total[b[j]:b[j + 1]]) for j, r in enumerate(ranks)}
    if name == "allgather":
        full = np.concatenate([inputs[r][b[j]:b[j + 1]] for j, r in enumerate(ranks)])
        return {r: (everything, full) for r in ranks}
    if name == "broadcast":
        return {r: (everything, inputs[root]) for r in ranks}
    if name == "reduce":
        return {root: (everything, total)}
    if name == "alltoall":
        return {r: (everything, np.concatenate([inputs[s][b[i]:b[i + 1]] for s in ranks]))
                for i, r in enumerate(ranks)}
    pairs = ring_shift_pairs(ranks) if pairs is None else pairs
    return {d: (everything, inputs[s]) for s, d in pairs}


def count_wrong(runner, kind: str, nbytes: int, algorithm: str | None, *, ranks=None, root: int | None = None,
                count: int | None = None, seed: int = 0) -> int:
    """Elements left wrong, summed over ranks, by a data-carrying run of ``kind`` on ``runner``."""
    name = lookup(kind).name
    group = list(range(runner.topology.num_gpus)) if ranks is None else sorted(int(r) for r in ranks)
    p = len(group)
    n = min(MAX_CHECK_ELEMENTS, count if count is not None else nbytes)
    if name == "alltoall":
        n -= n % p
    if n <= 0 or p < 2:
        return 0
    rng = np.random.default_rng(seed)
    inputs = {r: rng.integers(-2**20, 2**20, n).astype(np.int64) for r in group}
    data = {r: a.copy() for r, a in inputs.items()}
    runner.run(name, nbytes, algorithm, ranks=group, root=root, data=data)
    wrong = 0
    for r, (where, want) in expected(name, inputs, group, root=root).items():
        wrong += int(np.count_nonzero(data[r][where] != want))
    return wrong
