"""In-network reduction in the scale-out switches: InfiniBand SHARP under NVLS (NCCL's CollNet path).

Inside every switch island the NVLink switches reduce-scatter the message (NVLS); each GPU then sends its
reduced shard once into the InfiniBand fabric, where the switches add the shards of all islands up on an
aggregation tree and send the sum back; NVLS multicasts the result inside each island. Per GPU the NIC
carries N/m each way (m GPUs per island), against 2 (d-1)/d N/m for a ring across d islands, and no
step count grows with d. The three phases are pipelined chunk by chunk (NCCL's NVLS loop,
``protocol.nvls_stage_bytes``): stage r
reduce-scatters chunk r, aggregates chunk r-1 in the network and all-gathers chunk r-2.

The aggregation point of a shard is the switch nearest to all its owners' NICs (the rail leaf when they
share one, else a spine or core switch chosen by a stable hash), which is where a SHARP tree rooted at the
lowest common switch reduces. Quantum-2 switches support SHARP (NVIDIA Quantum-2 product page: "SHARPv3
in-network computing"); the latency is NCCL's model for multi-node NVLS, intra plus inter (row C104).
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.nvls import nvlink_kind, nvls_phase, switch_islands
from fabricsim.collectives.protocol import NVLS_LATENCY, Calibration, Protocol, nvls_stage_bytes
from fabricsim.errors import InfeasibleError
from fabricsim.simulator.routing import stable_hash

__all__ = ["aggregation_switch", "sharp_allreduce"]


def _kind(fabric, node: int) -> str:
    return fabric.topology.graph.nodes[fabric.links.nodes[node]].get("kind")


def _first_switch(fabric, rank: int) -> int:
    """The network switch behind a GPU's NIC (its leaf)."""
    gpu = int(fabric.gpu_index[rank])
    for nic in fabric.router.successors(gpu):
        if _kind(fabric, nic) == "nic":
            for sw in fabric.router.successors(nic):
                if _kind(fabric, sw) == "switch":
                    return sw
    raise InfeasibleError(f"SHARP needs a NIC and a network switch behind GPU {fabric.topology.gpus[rank]!r}")


def _switch_distances(fabric, start: int, cache: dict) -> dict:
    """Hops from ``start`` to every network switch, through network switches only."""
    if start not in cache:
        dist, front = {start: 0}, [start]
        while front:
            nxt = []
            for u in front:
                for v in fabric.router.successors(u):
                    if v not in dist and _kind(fabric, v) == "switch":
                        dist[v] = dist[u] + 1
                        nxt.append(v)
            front = nxt
        cache[start] = dist
    return cache[start]


def aggregation_switch(fabric, ranks: list[int], salt: int = 0, cache: dict | None = None) -> int:
    """The switch nearest (in the worst case) to the leaves of all ``ranks``; ties broken by a stable hash."""
    cache = {} if cache is None else cache
    dists = [_switch_distances(fabric, leaf, cache) for leaf in {_first_switch(fabric, r) for r in ranks}]
    common = set(dists[0]).intersection(*dists[1:])
    if not common:
        raise InfeasibleError("SHARP needs one switch reachable from every island's NIC")
    radius = min(max(d[s] for d in dists) for s in common)
    best = sorted(s for s in common if max(d[s] for d in dists) == radius)
    return best[stable_hash(salt, len(best)) % len(best)]


def sharp_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol,
                    calibration: Calibration) -> Schedule:
    """NVLS reduce-scatter, SHARP across islands, NVLS all-gather, pipelined in chunks."""
    islands = switch_islands(fabric, layout)
    if len(islands) < 2:
        raise InfeasibleError("sharp reduces across several switch islands; this group has one (use nvls)")
    S = max(len(i) for i in islands)
    K = max(1, math.ceil(nbytes / nvls_stage_bytes(nvlink_kind(fabric, layout.ranks[0]), S, multi_node=True)))
    c = nbytes / K
    gi = fabric.gpu_index
    cache: dict = {}
    owners = [[isl[s % len(isl)] for isl in islands] for s in range(S)]
    agg = [aggregation_switch(fabric, group, salt=s, cache=cache) for s, group in enumerate(owners)]

    def nvls(phase: str):
        parts = [nvls_phase(fabric, isl, c if phase == "rs" else c / len(isl), c / len(isl) if phase == "rs" else c,
                            calibration, fanin=len(isl)) for isl in islands if len(isl) > 1]
        return [np.concatenate([p[i] for p in parts]) for i in range(4)] if parts else [np.zeros(0)] * 4

    def network():
        src, dst = [], []
        for s, group in enumerate(owners):
            for r in group:
                src += [int(gi[r]), agg[s]]
                dst += [agg[s], int(gi[r])]
        return [np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), np.full(len(src), c / S),
                np.zeros(len(src), dtype=np.int64)]

    pieces = {"rs": nvls("rs"), "net": network(), "ag": nvls("ag")}

    def apply(data: dict) -> None:
        total = sum(data[r] for r in layout.ranks)
        for r in layout.ranks:
            data[r][:] = total

    def stage(r: int) -> Step:
        live = tuple(k for k, first in (("rs", 0), ("net", 1), ("ag", 2)) if first <= r < K + first)

        def traffic():
            return tuple(np.concatenate([pieces[k][i] for k in live]) for i in range(4))
        return Step(("sharp", layout.ident, c, live), traffic, "net", apply if r == K + 1 else None, "sharp",
                    extra_latency=NVLS_LATENCY["nvlink"] + NVLS_LATENCY["net"] if r == 0 else 0.0,
                    pipelined=r > 0)

    return Schedule("sharp", (stage(r) for r in range(K + 2)), protocol, "nvls", launch_latency=0.0)
