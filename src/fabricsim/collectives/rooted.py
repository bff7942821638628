"""Broadcast and reduce: data flowing down from a root, or reduced up to it, pipelined in chunks.

Both run over trees whose edges carry a share of the buffer cut into K chunks. A broadcast sends chunk c
down edge (u, v) in round depth(u) + c; a reduce sends chunk c up from u in round height(u) + c, once u has
added what its children sent. Only the rounds that fill the pipeline pay the per-hop latency; afterwards a
chunk's latency hides behind the chunks ahead of it. Two shapes:

- ``ring`` (NCCL's only algorithm for broadcast and reduce): one chain per channel along the channel's
  ring (ring.py) starting at (broadcast) or ending at (reduce) the root, each channel carrying 1/C of the
  buffer. Contention-free, per-hop latency a, rank bandwidth B:
  T = (p-1) a + (K + p - 2) N / (K B), tending to N / B: nccl-tests' busbw factor 1.
- ``tree``: a chain inside every NVLink domain and a binary tree across domains (the inter-domain shape
  of NCCL's all-reduce trees), rooted at the root's domain: (D + 1) a of latency for depth D instead of
  (p-1) a, at the price of interior ranks sending twice (to two child domains). NCCL offers no tree for
  these two collectives; this is fabricsim's, for latency-bound sizes across many domains.
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.protocol import Protocol
from fabricsim.collectives.ring import default_channels, ring_orders
from fabricsim.collectives.tree import MAX_CHUNKS, _rerooted, _Tree, binary_tree
from fabricsim.errors import InfeasibleError

__all__ = ["broadcast", "reduce", "chain_trees", "domain_tree", "PIPELINE_CHUNK"]

# Bytes a chain or tree edge forwards at a time: NCCL's Simple step, its 4 MiB channel buffer
# (NCCL_BUFFSIZE) over its 8 pipeline steps (NCCL_STEPS), per NCCL's environment documentation and source.
PIPELINE_CHUNK = 4 * 2**20 // 8


def _root(layout: GroupLayout, root: int | None) -> int:
    root = layout.ranks[0] if root is None else int(root)
    if root not in layout.ranks:
        raise InfeasibleError(f"root {root} is not one of the group's ranks")
    return root


def chain_trees(layout: GroupLayout, root: int, channels: int | None = None) -> list[_Tree]:
    """One chain per channel: the channel's ring cut open at the root (parent = the previous rank)."""
    trees = []
    for order in ring_orders(layout, channels or default_channels(layout)):
        i = order.index(root)
        chain = order[i:] + order[:i]
        trees.append(_Tree({r: (chain[k - 1] if k else -1) for k, r in enumerate(chain)}))
    return trees


def domain_tree(layout: GroupLayout, root: int) -> _Tree:
    """Chains inside domains (the root first in its own), joined by a binary tree over the domains."""
    doms = [d if root not in d else [root] + [r for r in d if r != root] for d in layout.domains]
    doms.sort(key=lambda d: root not in d)
    inter = binary_tree(len(doms))  # re-rooted at item 0, the root's domain
    parent = {}
    for k, chain in enumerate(doms):
        for i, r in enumerate(chain):
            if i:
                parent[r] = chain[i - 1]
            else:
                up = _rerooted(inter, k)
                parent[r] = -1 if up == -1 else doms[up][0]
    return _Tree(parent)


def _pipelined(fabric, layout: GroupLayout, trees: list[_Tree], nbytes: int, protocol: Protocol, *,
               up: bool, chunks: int | None, name: str, latency_algorithm: str) -> Schedule:
    """Tree t moves part t of the buffer in K chunks: down from its root, or reduced up to it."""
    parts = len(trees)
    K = chunks or max(1, min(MAX_CHUNKS, math.ceil(nbytes / parts / PIPELINE_CHUNK)))
    chunk_bytes = nbytes / parts / K
    gi = fabric.gpu_index
    # every edge of every tree, with the round offset at which it sends chunk 0
    edges = [(u, v, ti, (t.height[u] if up else t.depth[u]))
             for ti, t in enumerate(trees) for u, v in (t.up_edges if up else t.down_edges)]
    if not edges:
        return Schedule(name, iter(()), protocol, latency_algorithm)
    src = np.array([e[0] for e in edges], dtype=np.int64)
    dst = np.array([e[1] for e in edges], dtype=np.int64)
    tree_of = np.array([e[2] for e in edges], dtype=np.int64)
    level = np.array([e[3] for e in edges], dtype=np.int64)
    D = int(level.max())
    rounds = D + K
    base_traffic = (gi[src], gi[dst], np.full(src.shape, chunk_bytes), tree_of)
    base = (("rooted", name, layout.ident, parts, chunk_bytes, up), lambda: base_traffic)
    net = "net" if layout.multi_domain else "nvlink"
    state: dict = {}

    def active(t: int) -> np.ndarray:
        return np.flatnonzero((t - level >= 0) & (t - level < K))

    def make_step(t: int) -> Step:
        def apply(data: dict) -> None:
            n = next(iter(data.values())).shape[0]
            if up and "acc" not in state:
                state["acc"] = {r: data[r].copy() for r in layout.ranks}
            buf = state["acc"] if up else data
            moves = []
            for e in active(t).tolist():
                h = np.linspace(0, n, parts + 1).astype(int)
                b = np.linspace(h[tree_of[e]], h[tree_of[e] + 1], K + 1).astype(int)
                c = t - int(level[e])
                moves.append((int(dst[e]), int(tree_of[e]), b[c], b[c + 1], buf[int(src[e])][b[c]:b[c + 1]].copy()))
            for v, ti, lo, hi, payload in moves:
                if up:
                    buf[v][lo:hi] += payload
                    if v == trees[ti].root:
                        data[v][lo:hi] = buf[v][lo:hi]
                else:
                    buf[v][lo:hi] = payload

        key = ("rooted", name, layout.ident, parts, K, chunk_bytes, up)
        if t <= D or t >= K:  # rounds that fill or drain the pipeline differ; steady rounds are alike
            key += (max(0, t - K + 1), min(t, D))
        # fill rounds pay the protocol's per-hop latency; later chunks' latency hides behind earlier ones
        return Step(key, lambda: active(t), net, apply, name, extra_latency=0.0 if t > D else None,
                    pipelined=t > D, base=base)

    return Schedule(name, (make_step(t) for t in range(rounds)), protocol, latency_algorithm)


def broadcast(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *, algorithm: str = "ring",
              root: int | None = None, chunks: int | None = None, channels: int | None = None) -> Schedule:
    """Every rank ends with the root's ``nbytes`` buffer (root: the group's first rank by default)."""
    root = _root(layout, root)
    trees = chain_trees(layout, root, channels) if algorithm == "ring" else [domain_tree(layout, root)]
    return _pipelined(fabric, layout, trees, nbytes, protocol, up=False, chunks=chunks, name=algorithm,
                      latency_algorithm="ring" if algorithm == "ring" else "tree")


def reduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *, algorithm: str = "ring",
           root: int | None = None, chunks: int | None = None, channels: int | None = None) -> Schedule:
    """The root ends with the elementwise sum of every rank's ``nbytes`` buffer; the others keep theirs."""
    root = _root(layout, root)
    trees = chain_trees(layout, root, channels) if algorithm == "ring" else [domain_tree(layout, root)]
    return _pipelined(fabric, layout, trees, nbytes, protocol, up=True, chunks=chunks, name=algorithm,
                      latency_algorithm="ring" if algorithm == "ring" else "tree")
