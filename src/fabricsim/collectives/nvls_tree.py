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
NCCL's NVLSTree loop (``nvls.nvls_stage``: channels x heads x NCCL's NVLSTree chunk, 32 channels on
Blackwell across nodes; the chunk shrinks from 512 KiB to 32 KiB as the message gets smaller,
``protocol.nvls_chunk``). Across islands the owners of a shard run NCCL's double binary tree (``tree.double_binary_tree``),
each tree on half the shard: partial sums go up (a parent adds its children's), the root's sum comes down.
Per chunk c an owner's NIC carries c/S each way across two islands and 2 c/S across more (an inner tree
node hears from two children and forwards to two: NCCL's model halves an NVLS tree's network bandwidth
beyond two nodes, row C104). Network flows go owner to owner over the rail the two share.

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
from fabricsim.collectives.nvls import (island_phase, island_pipeline_stage, nvls_stage, owned_shares,
                                        pipeline_chunks, switch_islands)
from fabricsim.collectives.protocol import NVLS_LATENCY, PROTOCOLS, Calibration, Protocol
from fabricsim.collectives.tree import double_binary_tree
from fabricsim.errors import InfeasibleError

__all__ = ["nvls_tree_allreduce", "inter_island_latency", "tree_flows"]


def inter_island_latency(fabric, owners: list[int], islands: int) -> float:
    """Latency of the network part of a tree across ``islands``: 2 ceil(log2 d) crossings, each the larger
    of NCCL's tree/Simple network step (C101) and the wire latency between two owners of one shard."""
    if islands < 2:
        return 0.0
    src, dst = int(fabric.gpu_index[owners[0]]), int(fabric.gpu_index[owners[1]])
    wire = float(fabric.router.route(src, dst, 0).latencies.max())
    step = max(PROTOCOLS["simple"].step_latency[("tree", "net")], wire)
    return 2 * math.ceil(math.log2(islands)) * step


def tree_flows(d: int) -> list[tuple[int, int, int, int, bool]]:
    """Flows of NCCL's double binary tree over d positions: ``(src, dst, tree, order, up)``; up flows (child
    to parent, in order of the child's height) then down flows (parent to child, in order of depth)."""
    out = []
    for t, parent in enumerate(double_binary_tree(d)):
        height = [0] * d
        for q in range(d):  # a node's height: the longest climb from a leaf below it
            h, v = 0, q
            while parent[v] != -1:
                h, v = h + 1, parent[v]
                height[v] = max(height[v], h)
        depth = [0] * d
        for q in range(d):
            v = q
            while parent[v] != -1:
                depth[q], v = depth[q] + 1, parent[v]
        top = max(height)
        for q in range(d):
            if parent[q] != -1:
                out.append((q, parent[q], t, height[q], True))
                out.append((parent[q], q, t, top + 1 + depth[parent[q]], False))
    return out


def nvls_tree_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol,
                        calibration: Calibration) -> Schedule:
    """NVLS reduce-scatter, double binary tree across islands, NVLS all-gather, pipelined in NVLS stages."""
    islands = switch_islands(fabric, layout)
    if len(islands) < 2:
        raise InfeasibleError("an NVLS tree joins several switch islands; this group has one (use nvls)")
    d = len(islands)
    S = max(len(i) for i in islands)
    chunks = pipeline_chunks(nbytes, nvls_stage(fabric, islands, nbytes, tree=True))
    K = len(chunks)
    gi = fabric.gpu_index
    owners = [[isl[s % len(isl)] for isl in islands] for s in range(S)]
    flows = tree_flows(d)
    n_src = np.array([int(gi[owners[s][f[0]]]) for s in range(S) for f in flows], dtype=np.int64)
    n_dst = np.array([int(gi[owners[s][f[1]]]) for s in range(S) for f in flows], dtype=np.int64)
    n_key = np.repeat(np.arange(S, dtype=np.int64), len(flows))
    owned = owned_shares(islands, S)
    first_latency = NVLS_LATENCY["nvlink"] + inter_island_latency(fabric, owners[0], d)

    def sizes(q: int) -> float:
        return (chunks[q][1] - chunks[q][0]) * nbytes if 0 <= q < K else 0.0

    def nvls(phase: str, q: int):
        return island_phase(fabric, islands, owned, phase, sizes(q), calibration)

    def network(q: int):
        return [n_src, n_dst, np.full(len(n_src), sizes(q) / S / 2), n_key]  # each tree carries half a shard

    def edges(q: int) -> list[float]:
        a, b = chunks[q]
        return [a + (b - a) * j / S for j in range(S)] + [b]

    def island_shards(q: int, isl: list[int], phase: str) -> list[tuple]:
        e = edges(q)
        return [((phase, q, j), e[j], e[j + 1], isl[j % len(isl)]) for j in range(S)]

    def network_payload(q: int) -> list:
        e = edges(q)
        out = []
        for j in range(S):
            half = (e[j] + e[j + 1]) / 2
            parts = ((e[j], half), (half, e[j + 1]))
            for _, _, t, order, up in flows:
                a, b = parts[t]  # up, a parent adds its child's partial sum; down, the root's sum overwrites
                out.append((order, [(("net", q, j, t), a, b, "add" if up else "put")]))
        return out

    def stage(r: int) -> Step:
        return island_pipeline_stage(r, K, "nvls-tree", "nvls tree", layout.ident, fabric=fabric, islands=islands,
                                     nvls=nvls, network=network, network_payload=network_payload,
                                     island_shards=island_shards, sizes=sizes, first_latency=first_latency)

    return Schedule("nvls-tree", (stage(r) for r in range(K + 2)), protocol, "nvls", launch_latency=0.0)
