"""NVLS tree: in-switch reduction inside every NVLink island, a tree across islands, pipelined (NCCL's NVLSTree).

Across nodes or racks NCCL does not run NVLS and then a separate network all-reduce: its NVLSTree kernel
streams the message in stages through three concurrent parts, as the SHARP path does (``sharp.py``):

1. NVLS reduce-scatter inside each island: each GPU ends a stage owning the island's sum of one shard
   (``S`` shards, ``S`` = the largest island's size; a GPU of a smaller island owns several, the partial-
   island rule of ``hierarchical.py``);
2. the owners of a shard, one per island, all-reduce it over the network (one NIC per GPU in every preset,
   so each GPU uses its own NIC: only 1/S of the message leaves an island per GPU);
3. NVLS all-gather (multicast) of the reduced shards inside each island.

Stage r reduce-scatters chunk r, exchanges chunk r-1 across islands and all-gathers chunk r-2; a chunk is
NCCL's NVLS loop (``protocol.nvls_stage_bytes``: channels x heads x 128 KiB, 32 channels on Blackwell
across nodes). Per chunk c each owner sends and receives c/S across two islands (each island's half of a
two-tree exchange) and 2 c/S across more (an inner tree node forwards to two children: NCCL's model
halves an NVLS tree's network bandwidth beyond two nodes, row C104). Network flows go owner to owner
(the next island's owner of the same shard) over the rail the two share.

Time, with intra-island NVLS at B_nvls and per-GPU network rate B_net:
    T = a + N max((1 + 1/m + f log2 m) / B_nvls, k / (m B_net)) + fill,  k = 1 (two islands) or 2,
    a = NVLS_LATENCY["nvlink"] + 2 ceil(log2 d) a_net,
a_net being the network step of NCCL's tree on Simple (C101) or the path's wire latency if larger. So two
NVL72 racks joined by 400G NICs all-reduce nearly as fast as one rack: the network carries N/72 per GPU.
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.nvls import nvlink_kind, nvls_phase, switch_islands
from fabricsim.collectives.protocol import NVLS_LATENCY, PROTOCOLS, Calibration, Protocol, nvls_stage_bytes
from fabricsim.errors import InfeasibleError

__all__ = ["nvls_tree_allreduce", "inter_island_latency"]


def inter_island_latency(fabric, owners: list[int], islands: int) -> float:
    """Latency of the network part of a tree across ``islands``: 2 ceil(log2 d) crossings, each the larger
    of NCCL's tree/Simple network step (C101) and the wire latency between two owners of one shard."""
    if islands < 2:
        return 0.0
    src, dst = int(fabric.gpu_index[owners[0]]), int(fabric.gpu_index[owners[1]])
    wire = float(fabric.router.route(src, dst, 0).latencies.max())
    step = max(PROTOCOLS["simple"].step_latency[("tree", "net")], wire)
    return 2 * math.ceil(math.log2(islands)) * step


def nvls_tree_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol,
                        calibration: Calibration) -> Schedule:
    """NVLS reduce-scatter, tree across islands, NVLS all-gather, pipelined in NVLS stages."""
    islands = switch_islands(fabric, layout)
    if len(islands) < 2:
        raise InfeasibleError("an NVLS tree joins several switch islands; this group has one (use nvls)")
    d = len(islands)
    S = max(len(i) for i in islands)
    K = max(1, math.ceil(nbytes / nvls_stage_bytes(nvlink_kind(fabric, layout.ranks[0]), S, multi_node=True)))
    c = nbytes / K
    gi = fabric.gpu_index
    owners = [[isl[s % len(isl)] for isl in islands] for s in range(S)]
    share = 1.0 if d == 2 else 2.0

    def nvls(phase: str):
        parts = [nvls_phase(fabric, isl, c if phase == "rs" else c / len(isl), c / len(isl) if phase == "rs" else c,
                            calibration, fanin=len(isl)) for isl in islands if len(isl) > 1]
        return [np.concatenate([p[i] for p in parts]) for i in range(4)] if parts else [np.zeros(0)] * 4

    def network():
        src, dst = [], []
        for group in owners:
            for k, r in enumerate(group):
                src.append(int(gi[r]))
                dst.append(int(gi[group[(k + 1) % d]]))
        return [np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), np.full(len(src), share * c / S),
                np.repeat(np.arange(S, dtype=np.int64), d)]

    pieces = {"rs": nvls("rs"), "net": network(), "ag": nvls("ag")}
    first_latency = NVLS_LATENCY["nvlink"] + inter_island_latency(fabric, owners[0], d)

    def apply(data: dict) -> None:
        total = sum(data[r] for r in layout.ranks)
        for r in layout.ranks:
            data[r][:] = total

    def stage(r: int) -> Step:
        live = tuple(k for k, first in (("rs", 0), ("net", 1), ("ag", 2)) if first <= r < K + first)

        def traffic():
            return tuple(np.concatenate([pieces[k][i] for k in live]) for i in range(4))
        return Step(("nvls-tree", layout.ident, c, live), traffic, "net", apply if r == K + 1 else None,
                    "nvls tree", extra_latency=first_latency if r == 0 else 0.0, pipelined=r > 0)

    return Schedule("nvls-tree", (stage(r) for r in range(K + 2)), protocol, "nvls", launch_latency=0.0)
