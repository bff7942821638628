"""Broadcast and reduce: data flowing down from a root, or reduced up to it, pipelined in chunks.

Both run over trees whose edges carry a share of the buffer in chunks of ``PIPELINE_CHUNK`` bytes: a
rank forwards (or adds its own data to, and forwards) a chunk as soon as it has it. Such a pipeline of K
chunks over hops h takes sum_h (a_h + c/B_h) + (K-1) c/B_min: the first chunk crosses every hop at that
hop's latency and rate, the others follow at the slowest hop's pace. It is simulated as its fluid limit:
one step in which every edge streams its whole share at the rate the fabric gives it (so contention
between edges, channels and other traffic acts on it), after the first chunk's extra time along the
longest path (``_fill``). Lock-step rounds would make every chunk wait for the slowest hop of the whole
tree at every hop (20x too slow for a chain crossing eight NVL72 racks). Two shapes:

- ``ring`` (NCCL's only algorithm for broadcast and reduce): one chain per channel along the channel's
  ring (ring.py) starting at (broadcast) or ending at (reduce) the root, each channel carrying 1/C of the
  buffer. Contention-free, per-hop latency a, rank bandwidth B, K chunks of c = N/K:
  T = (p-1) a + (p-2) c/B + N/B, tending to N / B: nccl-tests' busbw factor 1.
- ``tree``: a chain inside every NVLink domain and a binary tree across domains (the inter-domain shape
  of NCCL's all-reduce trees), rooted at the root's domain: fewer network hops on the longest path than
  a chain, at the price of interior ranks sending twice (to two child domains). NCCL offers no tree for
  these two collectives; this is fabricsim's, for latency-bound sizes across many domains.
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.protocol import Protocol
from fabricsim.collectives.ring import default_channels, ring_orders
from fabricsim.collectives.tree import _rerooted, _Tree, binary_tree
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
    """Tree t streams part t of the buffer down from its root, or reduced up to it (module docstring).

    One step: every edge of every tree carries its tree's share at once (the steady pipeline, each edge at
    the rate the fabric gives it), after the pipeline's fill (``_fill``) has elapsed.
    """
    parts = len(trees)
    share = nbytes / parts
    K = chunks or max(1, math.ceil(share / PIPELINE_CHUNK))
    gi = fabric.gpu_index
    # every edge in the direction data flows, parents before children (broadcast) or after (reduce)
    edges = [((v, u) if up else (u, v), ti) for ti, t in enumerate(trees) for u, v in t.down_edges]
    if up:
        edges.reverse()
    if not edges:
        return Schedule(name, iter(()), protocol, latency_algorithm)
    src = np.array([e[0][0] for e in edges], dtype=np.int64)
    dst = np.array([e[0][1] for e in edges], dtype=np.int64)
    tree_of = np.array([e[1] for e in edges], dtype=np.int64)
    fill = _fill(fabric, layout, trees, share / K, protocol, latency_algorithm, up)
    roots = tuple(t.root for t in trees)

    def traffic():
        return gi[src], gi[dst], np.full(src.shape, share), tree_of

    def apply(data: dict) -> None:
        n = next(iter(data.values())).shape[0]
        h = np.linspace(0, n, parts + 1).astype(int)
        buf = {r: data[r].copy() for r in layout.ranks} if up else data
        for (u, v), ti in edges:  # in data order: a rank forwards only what it has received
            lo, hi = h[ti], h[ti + 1]
            if up:
                buf[v][lo:hi] += buf[u][lo:hi]
            else:
                buf[v][lo:hi] = buf[u][lo:hi]
        if up:
            for ti, root in enumerate(roots):
                data[root][h[ti]:h[ti + 1]] = buf[root][h[ti]:h[ti + 1]]

    def steps():
        yield Step(("rooted", name, layout.ident, roots, share, up), traffic,
                   "net" if layout.multi_domain else "nvlink", apply, name, extra_latency=fill, pipelined=True)
    return Schedule(name, steps(), protocol, latency_algorithm)


def _fill(fabric, layout: GroupLayout, trees: list[_Tree], chunk: float, protocol: Protocol, algorithm: str,
          up: bool) -> float:
    """Time for the first chunk to cross the longest path, less what the steady stream already counts.

    A pipeline of K chunks over hops h takes sum_h (a_h + c/B_h) + (K-1) c/B_min: the first chunk
    crosses every hop, the others follow at the slowest hop's pace. The fluid step counts K c/B_min, so
    the fill is sum_h a_h + sum_h c/B_h - c/B_min along the path where that is largest. a_h is the hop's
    protocol step latency (NVLink or network row, C099/C101), no less than its wire latency; B_h its
    route's usable capacity (its narrowest link, per path share).
    """
    dom = {r: k for k, d in enumerate(layout.domains) for r in d}
    cap = fabric.capacity
    route = fabric.router.route
    a = {c: protocol.step_latency.get((algorithm, c), 0.0) for c in ("nvlink", "net")}
    worst = 0.0
    for ti, tree in enumerate(trees):
        best = {tree.root: (0.0, 0.0)}  # rank -> (a + c/B summed from the root, largest c/B on the way)
        for u, v in tree.down_edges:  # parents before children
            s, d = (v, u) if up else (u, v)
            r = route(int(fabric.gpu_index[s]), int(fabric.gpu_index[d]), ti)
            rate = min(cap[r.links[lo:hi]].min() / f for lo, hi, f in zip(r.ptr[:-1], r.ptr[1:], r.fractions))
            hop = max(a["nvlink" if dom[u] == dom[v] else "net"], float(r.latencies.max()))
            total, slowest = best[u]
            best[v] = (total + hop + chunk / rate, max(slowest, chunk / rate))
        worst = max(worst, max(t - m for t, m in best.values()))
    return worst


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
