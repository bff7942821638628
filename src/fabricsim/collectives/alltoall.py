"""All-to-all as NCCL runs it: every rank sends a distinct block to every other rank, all posted at once.

``nbytes`` is nccl-tests' size: one rank's send buffer, p blocks of N/p, block j for the rank at group
position j (the block a rank "sends" to itself is a local copy and never touches the fabric). NCCL (and
nccl-tests' alltoall_perf) issues one ``ncclSend`` and one ``ncclRecv`` per peer inside one
``ncclGroupStart``/``ncclGroupEnd``, so all p (p-1) transfers are in flight together; here they are one
flow group sharing the fabric max-min fairly (p2p.py), not p-1 rounds of a pairwise exchange. Rounds
would add (p-2) step latencies and lose nothing in bandwidth on a non-blocking fabric; posting all at
once is what lets the fabric's bottlenecks (NICs, spine uplinks) show as they do for NCCL.

Each rank sends and receives (p-1)/p N, so on a non-blocking switch with per-rank bandwidth B:
T >= (p-1)/p N/B, the bound nccl-tests' busbw factor (p-1)/p compares against. Cost: p (p-1) flows,
whose finishes are staggered when some cross the network and some do not (each finish re-solves the
rates): on this 2-core machine 64 ranks across 8 NVL72 racks take 2.4 s the first time (routes) and
0.3 s after, 144 ranks (20,592 flows) about a minute, 288 ranks more than 15 minutes. Expert-parallel
groups (8 to 64) are cheap; groups above ``MAX_RANKS`` are refused rather than left to run for hours.
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule
from fabricsim.collectives.p2p import exchange
from fabricsim.collectives.protocol import Protocol
from fabricsim.collectives.shards import shard_bounds
from fabricsim.errors import InfeasibleError

__all__ = ["all_to_all", "MAX_RANKS"]

MAX_RANKS = 256  # 65,280 flows in one group; see the module docstring for measured costs


def all_to_all(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol) -> Schedule:
    """Block j of the rank at position i goes to block i of the rank at position j, for every i != j."""
    p = layout.p
    if p > MAX_RANKS:
        raise InfeasibleError(f"all-to-all on {p} ranks is {p * (p - 1):,} flows at once; fabricsim simulates "
                              f"up to {MAX_RANKS} ranks (use expert-parallel groups of that size or less)")
    ranks = np.asarray(layout.ranks, dtype=np.int64)
    i, j = np.nonzero(~np.eye(p, dtype=bool))

    def apply(data: dict) -> None:
        b = shard_bounds(next(iter(data.values())).shape[0], p)
        blocks = {(a, c): data[ranks[a]][b[c]:b[c + 1]].copy() for a, c in zip(i.tolist(), j.tolist())}
        for (a, c), payload in blocks.items():
            data[ranks[c]][b[a]:b[a + 1]] = payload

    return exchange(fabric, ranks[i], ranks[j], np.full(len(i), nbytes / p), protocol, name="pairwise",
                    apply=apply, pattern=("alltoall", layout.ident, nbytes))
