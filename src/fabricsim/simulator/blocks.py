"""Jobs that share a fabric, simulated apart in blocks that cannot affect each other (an exact shortcut).

Why. The data-parallel groups of a training step all-reduce at the same instant. Simulated together,
their rounds interleave: groups on different fabric positions run at different speeds, so the fabric is
never idle when a round starts and the round cache (``fabric``) can serve none of them; every event of
any group re-solves rates. On 8,192 GB200 GPUs with TP 8, the eight 1,024-rank rings took 50 s together;
simulated as four pairs, each pair repeats its rounds in lockstep and the cache serves them (0.1 s each).

The rule. Split the jobs into blocks and simulate each block alone, recording every link's *peak load*
(its highest total rate at any instant of that run). If on every link crossed by flows of two or more
blocks the blocks' peak loads sum to less than the link's capacity (by the relative ``MARGIN``), the
joint run moves every flow exactly as the block runs do. Proof, by induction over events: suppose up to
some instant every flow has had the same rate as in its block's run. Then the union of the blocks'
allocations is feasible on shared links (loads never exceed the summed peaks) and on the others (one
block's allocation is). In each block's allocation every flow has a bottleneck, a link its block fills
on which no flow of the block is faster; that link is full from that block alone, so no other block's
flow crosses it (its peak there would be positive and the sum would exceed the capacity). Feasible with
a bottleneck for every flow is the characterisation of the unique max-min fair allocation
(Bertsekas & Gallager, *Data Networks*, 2nd ed., section 6.5.2), so the joint rates are the blocks'
rates; flows then finish, and processes start their next transfers, at the same instants, and the
induction goes on. Blocks that overload a shared link are merged and simulated together, until the
condition holds; in the worst case one block is left, which is the joint run itself.

Exactness. The times are those of the joint run up to float rounding (a few ulps: the joint run
subtracts a flow's bytes at other blocks' events too, and flows due within 1e-9 of each other finish
together there, ``fluid._FINISH_RTOL``). The margin keeps a shared link clear of the fluid solver's own
"full" tolerance (1e-9). Not decomposed (one block, the joint run): runs whose fabric changes on the way
(timed faults: a rate change re-routes every job) and completion batching (``finish_rtol > 0``
finishes flows of one block at another block's events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import numpy as np

from fabricsim.errors import ConfigError

if TYPE_CHECKING:
    from simpy.events import Process

    from fabricsim.simulator.engine import Simulation

__all__ = ["MARGIN", "BlockRuns", "run_in_blocks"]

#: Relative headroom a shared link must keep under the blocks' summed peak loads.
MARGIN = 1e-6


class BlockRuns(NamedTuple):
    """What ``run_in_blocks`` found: each job's value, the blocks, and each block's SimulationResult."""

    values: list
    blocks: list
    results: list


def run_in_blocks(simulation: Callable[..., Simulation], starters: Sequence[Callable[[Simulation], Process]], *,
                  blocks: Sequence[Sequence[int]] | None = None) -> BlockRuns:
    """Run jobs that start together on one fabric; their results equal those of one joint simulation.

    Parameters
    ----------
    simulation : callable
        ``simulation(peak_loads=True)`` returns a fresh Simulation of the fabric (same topology, link
        efficiencies and router every time).
    starters : sequence of callables
        ``starter(sim)`` starts one job in ``sim`` (its processes submit transfers and delays only) and
        returns the process whose value is the job's result.
    blocks : sequence of lists of int, optional
        A partition of the jobs to try first (for example the one a similar run ended with); by default
        every job is a block of its own. Blocks are only ever merged, never split.

    Returns
    -------
    BlockRuns
        ``values``: each starter's process value, in the order of ``starters``; ``blocks``: the partition
        they were simulated in (``[[0, 1, ...]]``: the joint run); ``results``: each block's
        SimulationResult (its ``time`` is when its last job ended; its group log holds its jobs' flows).
    """
    n = len(starters)
    if not n:
        raise ValueError("run_in_blocks needs at least one job")
    parts = _partition(blocks, n)
    runs: dict[tuple, tuple] = {}  # block -> (values, link ids, peak loads, capacities, result)
    while True:
        for block in parts:
            if block not in runs:
                run = _run_block(simulation, starters, block, alone=len(parts) == 1)
                if run is None:  # these jobs cannot be split: only the joint run is exact
                    parts = [tuple(range(n))]
                    runs = {parts[0]: _run_block(simulation, starters, parts[0], alone=True)}
                    break
                runs[block] = run
        merged = _merge(parts, runs)
        if merged == parts:
            break
        parts = merged
    values: list = [None] * n
    for block in parts:
        for i, v in zip(block, runs[block][0]):
            values[i] = v
    return BlockRuns(values, [list(b) for b in parts], [runs[b][4] for b in parts])


def _run_block(simulation, starters, block: tuple, *, alone: bool) -> tuple | None:
    """Simulate the jobs of ``block`` together: (values, link ids, their peak loads, capacities, the
    SimulationResult), or None if the jobs may not be split (``alone`` False and the run is not separable)."""
    sim = simulation(peak_loads=not alone)
    procs = [starters[i](sim) for i in block]
    # timed actions (faults: capacity changes) or completion batching couple every job (module docstring)
    if not alone and (sim.pending_actions or sim.fabric.fluid.finish_rtol != 0):
        return None
    result = sim.run()
    if alone:
        return [p.value for p in procs], None, None, None, result
    ids = np.flatnonzero(result.link_peak != 0)
    return [p.value for p in procs], ids, result.link_peak[ids], sim.fabric.capacity, result


def _partition(blocks, n: int) -> list[tuple]:
    """The first partition: the given blocks (checked), each job not in them alone."""
    if blocks is None:
        return [(i,) for i in range(n)]
    seen: set = set()
    parts = []
    for b in blocks:
        b = tuple(sorted(int(i) for i in b))
        if not b or seen & set(b) or b[0] < 0 or b[-1] >= n:
            raise ConfigError(f"blocks must partition the jobs 0..{n - 1}, got {blocks!r}")
        seen.update(b)
        parts.append(b)
    parts += [(i,) for i in range(n) if i not in seen]
    return sorted(parts)


def _merge(parts: list[tuple], runs: dict) -> list[tuple]:
    """The partition with every set of blocks that overloads a shared link merged into one block."""
    if len(parts) == 1:
        return parts
    capacity = runs[parts[0]][3]
    users = np.zeros(capacity.shape[0], dtype=np.int64)
    total = np.zeros(capacity.shape[0])
    for block in parts:
        _, ids, peak = runs[block][:3]
        users[ids] += 1
        total[ids] += peak
    bad = (users > 1) & (total > capacity * (1 - MARGIN))
    if not bad.any():
        return parts
    parent = list(range(len(parts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner = np.full(capacity.shape[0], -1, dtype=np.int64)  # the first block seen on each bad link
    for j, block in enumerate(parts):
        ids = runs[block][1]
        hit = ids[bad[ids]]
        first = owner[hit]
        owner[hit[first < 0]] = j
        for k in np.unique(first[first >= 0]).tolist():
            parent[root(k)] = root(j)
    groups: dict[int, list] = {}
    for j, block in enumerate(parts):
        groups.setdefault(root(j), []).extend(block)
    return sorted(tuple(sorted(g)) for g in groups.values())
