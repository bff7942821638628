"""All-to-all as NCCL runs it: every rank sends a distinct block to every other rank, all posted at once.

``nbytes`` is nccl-tests' size: one rank's send buffer, p blocks of N/p, block j for the rank at group
position j (the block a rank "sends" to itself is a local copy and never touches the fabric). NCCL (and
nccl-tests' alltoall_perf) issues one ``ncclSend`` and one ``ncclRecv`` per peer inside one
``ncclGroupStart``/``ncclGroupEnd``, so all p (p-1) transfers are in flight together; here they are one
flow group sharing the fabric max-min fairly (p2p.py), not p-1 rounds of a pairwise exchange. Rounds
would add (p-2) step latencies and lose nothing in bandwidth on a non-blocking fabric; posting all at
once is what lets the fabric's bottlenecks (NICs, spine uplinks) show as they do for NCCL.

Each rank sends and receives (p-1)/p N, so on a non-blocking switch with per-rank bandwidth B:
T >= (p-1)/p N/B, the bound nccl-tests' busbw factor (p-1)/p compares against.

Cost: p (p-1) flows whose finishes are staggered when some cross the network and some do not (ECMP
spreads the cross-rack ones unevenly), and every finish re-solves the rates: exactly, 144 ranks on two
NVL72 racks are 5,364 re-solves and 63 s of CPU for 1 MiB. ``CollectiveRunner`` therefore runs an
all-to-all with ``FINISH_RTOL``: one event also finishes the flows due within 0.1% of their own draining
time (``simulator.fluid``), so no flow is reported more than 0.1% of its time early; the same run takes
210 re-solves and 3.5 s (18x less), and its time agrees with the exact run to 14 digits, because the
last flow, which sets the time, is the one least affected. ``python benchmarks/bench_alltoall.py``
prints both side by side. Groups above ``MAX_RANKS`` are refused rather than left to run for long.
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule
from fabricsim.collectives.p2p import exchange
from fabricsim.collectives.protocol import Protocol
from fabricsim.collectives.shards import shard_bounds
from fabricsim.errors import InfeasibleError

__all__ = ["all_to_all", "MAX_RANKS", "FINISH_RTOL"]

MAX_RANKS = 256  # 65,280 flows in one group; see the module docstring for measured costs
#: Completion batching for an all-to-all run alone (module docstring): flows finish at most 0.1% early.
FINISH_RTOL = 1e-3


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
