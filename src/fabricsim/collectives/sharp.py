"""In-network reduction in the scale-out switches: InfiniBand SHARP under NVLS (NCCL's CollNet path).

Inside every switch island the NVLink switches reduce-scatter the message (NVLS); each GPU then sends its
reduced shard once into the InfiniBand fabric, where the switches add the shards of all islands up on an
aggregation tree and send the sum back; NVLS multicasts the result inside each island. Per GPU the NIC
carries N/m each way (m GPUs per island), against 2 (d-1)/d N/m for a ring across d islands, and no
step count grows with d. The three phases are pipelined chunk by chunk (one NVLS stage, ``nvls.nvls_stage``): stage r
reduce-scatters chunk r, aggregates chunk r-1 in the network and all-gathers chunk r-2.

The aggregation point of a shard is the switch nearest to all its owners' NICs (the rail leaf when they
share one, else a spine or core switch chosen by a stable hash), which is where a SHARP tree rooted at the
lowest common switch reduces. Quantum-2 switches support SHARP (NVIDIA Quantum-2 product page: "SHARPv3
in-network computing"); the latency is NCCL's model for multi-node NVLS, intra plus inter (row C104).
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.nodes import memo_table, node_kinds, switch_distances
from fabricsim.collectives.nvls import (island_phase, island_pipeline_stage, nvls_stage, owned_shares,
                                        pipeline_chunks, switch_islands)
from fabricsim.collectives.protocol import NVLS_LATENCY, Calibration, Protocol
from fabricsim.errors import InfeasibleError
from fabricsim.simulator.routing import stable_hash

__all__ = ["aggregation_switch", "aggregation_tree", "sharp_allreduce", "sharp_capable"]


def _first_switch(fabric, rank: int) -> int:
    """The network switch behind a GPU's NIC (its leaf; kept per router)."""
    memo = memo_table(fabric, "sharp-leaf")
    leaf = memo.get(rank)
    if leaf is not None:
        return leaf
    kinds = node_kinds(fabric)
    gpu = int(fabric.gpu_index[rank])
    for nic in fabric.router.successors(gpu):
        if kinds[nic] == "nic":
            for sw in fabric.router.successors(nic):
                if kinds[sw] == "switch":
                    memo[rank] = sw
                    return sw
    raise InfeasibleError(f"SHARP needs a NIC and a network switch behind GPU {fabric.topology.gpus[rank]!r}")


def aggregation_switch(fabric, ranks: list[int], salt: int = 0) -> int:
    """The switch nearest (in the worst case) to the leaves of all ``ranks``; ties broken by a stable hash
    over the tied switches in node order. Hops count through network switches only (``switch_distances``)."""
    switches, dist = switch_distances(fabric, sorted({_first_switch(fabric, r) for r in ranks}))
    common = (dist >= 0).all(axis=0)
    if not common.any():
        raise InfeasibleError("SHARP needs one switch reachable from every island's NIC")
    worst = dist.max(axis=0)
    radius = worst[common].min()
    best = switches[common & (worst == radius)]
    return int(best[stable_hash(salt, len(best)) % len(best)])


def sharp_capable(fabric) -> bool:
    """Whether the fabric declares SHARP-capable network switches (node attribute ``sharp=True``)."""
    return any(d.get("kind") == "switch" and d.get("sharp") is True
               for _, d in fabric.topology.graph.nodes(data=True))


def aggregation_tree(fabric, leaves: list[int], root: int, key: int) -> dict[int, int]:
    """Parent of every switch of the SHARP tree joining ``leaves`` to ``root``: the union of each leaf's
    route up to the root (ECMP-hashed with ``key``); a path stops where it meets the tree already built."""
    lt = fabric.links
    parent: dict[int, int] = {root: -1}
    others = np.array([leaf for leaf in leaves if leaf != root], dtype=np.int64)
    if not others.size:
        return parent
    # every leaf's route at once (what ``route`` gives leaf by leaf); its first path is the one followed
    rs = fabric.router.route_many(others, np.full(others.shape, root, dtype=np.int64),
                                  np.full(others.shape, key, dtype=np.int64))
    first = np.searchsorted(rs.flow, np.arange(others.shape[0]))
    starts, stops = rs.ptr[first].tolist(), rs.ptr[first + 1].tolist()
    src, dst = lt.src, lt.dst
    for leaf, a, b in zip(others.tolist(), starts, stops):
        if leaf in parent:
            continue
        for link in rs.links[a:b].tolist():
            u, v = int(src[link]), int(dst[link])
            if u in parent:
                break
            parent[u] = v
    return parent


def sharp_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol,
                    calibration: Calibration) -> Schedule:
    """NVLS reduce-scatter, SHARP across islands, NVLS all-gather, pipelined in chunks.

    Shard s of a chunk is owned by GPU s of every island; the owners send it up the shard's aggregation
    tree (rooted at ``aggregation_switch``): every switch adds what reaches it and forwards one stream to
    its parent, and the root's sum comes down the same tree, each switch multicasting it to its children.
    Per stage a NIC and every tree link carry c/S each way.
    """
    islands = switch_islands(fabric, layout)
    if len(islands) < 2:
        raise InfeasibleError("sharp reduces across several switch islands; this group has one (use nvls)")
    if not sharp_capable(fabric):
        raise InfeasibleError("sharp needs SHARP-capable network switches; this fabric declares none "
                              "(build the scale-out fabric with sharp=True)")
    S = max(len(i) for i in islands)
    chunks = pipeline_chunks(nbytes, nvls_stage(fabric, islands))
    K = len(chunks)
    gi = fabric.gpu_index
    owners = [[isl[s % len(isl)] for isl in islands] for s in range(S)]
    trees = []  # per shard: (parent of every switch, leaf switch of every owner)
    for s, group in enumerate(owners):
        root = aggregation_switch(fabric, group, salt=s)
        leaf = [_first_switch(fabric, r) for r in group]
        trees.append((aggregation_tree(fabric, leaf, root, s), leaf))

    # the network flows of one chunk, all shards: owner -> leaf, switch -> parent, and back down
    n_src, n_dst, n_shard, n_order, n_up = [], [], [], [], []
    for s, (parent, leaf) in enumerate(trees):
        height = {}
        for u in parent:  # a switch's height: the longest climb from it to the root
            h, v = 0, u
            while parent[v] != -1:
                v, h = parent[v], h + 1
            height[u] = h
        top = max(height.values())
        for r, sw in zip(owners[s], leaf):
            n_src += [int(gi[r]), sw]
            n_dst += [sw, int(gi[r])]
            n_shard += [s, s]
            n_order += [0, 2 * top + 2]
            n_up += [True, False]
        for u, v in parent.items():
            if v != -1:
                n_src += [u, v]
                n_dst += [v, u]
                n_shard += [s, s]
                n_order += [1 + top - height[u], top + 2 + height[v]]
                n_up += [True, False]
    n_src, n_dst = np.array(n_src, dtype=np.int64), np.array(n_dst, dtype=np.int64)
    n_shard = np.array(n_shard, dtype=np.int64)

    def sizes(q: int | None) -> float:
        return (chunks[q][1] - chunks[q][0]) * nbytes if q is not None and 0 <= q < K else 0.0

    owned = owned_shares(islands, S)

    def nvls(phase: str, q: int):
        return island_phase(fabric, islands, owned, phase, sizes(q), calibration)

    def network(q: int):
        return [n_src, n_dst, np.full(len(n_src), sizes(q) / S), np.zeros(len(n_src), dtype=np.int64)]

    def island_shards(q: int, isl: list[int], phase: str) -> list[tuple]:
        a, b = chunks[q]
        edges = [a + (b - a) * j / S for j in range(S)] + [b]
        return [((phase, q, j), edges[j], edges[j + 1], isl[j % len(isl)]) for j in range(S)]

    def network_payload(q: int) -> list:
        a, b = chunks[q]
        edges = [a + (b - a) * j / S for j in range(S)] + [b]
        # up the tree switches add what reaches them; down it the root's sum overwrites the owners' shards
        return [(o, [(("net", q, j), edges[j], edges[j + 1], "add" if up else "put")])
                for j, o, up in zip(n_shard.tolist(), n_order, n_up)]

    def stage(r: int) -> Step:
        return island_pipeline_stage(r, K, "sharp", "sharp", layout.ident, fabric=fabric, islands=islands,
                                     nvls=nvls, network=network, network_payload=network_payload,
                                     island_shards=island_shards, sizes=sizes,
                                     first_latency=NVLS_LATENCY["nvlink"] + NVLS_LATENCY["net"])

    return Schedule("sharp", (stage(r) for r in range(K + 2)), protocol, "nvls", launch_latency=0.0)
