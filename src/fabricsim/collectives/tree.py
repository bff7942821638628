"""Double-binary-tree all-reduce (NCCL's "tree") and pipelined broadcast.

NCCL builds, per tree, a chain through the GPUs of each NVLink domain and a binary tree across domains
(the chain's head joins the inter-domain tree). Two trees are used at once, each carrying half the data:
the second inter-domain tree is the first shifted by one position, which makes every domain interior in
at most one of them, so leaves of one tree carry the other's forwarding load. The two chains run in
opposite directions, so their heads sit on different rails.

Each half is cut into K chunks that flow up (reduce) and then down (broadcast), pipelined: a node of height
h (leaves 0) sends chunk c up in round c + h; a node at depth d sends chunk c down in round c + H + d. A
round is one step on the fabric; only the first H + D rounds, where the pipeline fills, pay per-hop
latency, since afterwards each chunk's latency hides behind the chunks ahead of it. Contention-free, with
per-hop latency a, per-rank bandwidth B and every rank sending at most s chunks per round:

    T ~= (H + D) a + (K + H + D - 1) * s * (N / 2K) / B
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.protocol import Protocol

__all__ = ["binary_tree", "double_binary_tree", "tree_allreduce", "tree_broadcast", "default_chunks"]

CHUNK_TARGET = 1 * 2**20  # bytes per tree chunk we aim for: many chunks for large messages
MAX_CHUNKS = 256


def binary_tree(n: int) -> list[int]:
    """Parent (or -1 for the root) of items 0..n-1 in a balanced binary tree.

    Item i sits at position q = i + 1; a position's level is its number of trailing zero bits, so odd
    positions (even items) are leaves and the root is the largest power of two not above n.

    >>> binary_tree(7)
    [1, 3, 1, -1, 5, 3, 5]
    """
    parent = [-1] * n
    root = 1 << (n.bit_length() - 1) if n else 0
    for q in range(1, n + 1):
        if q == root:
            continue
        low, a = q & -q, q
        while True:
            up = a + low if (a // low) % 4 == 1 else a - low  # the neighbour one level up
            low *= 2
            if up <= n:
                break
            a = up  # that ancestor is missing at this n: climb on
        parent[q - 1] = up - 1
    return parent


def double_binary_tree(n: int) -> tuple[list[int], list[int]]:
    """Two trees over n items; the second is the first with every item shifted by one position.

    Every item is interior in at most one of the two trees.
    """
    first = binary_tree(n)
    second = [-1] * n
    for q, par in enumerate(first):
        second[(q + 1) % n] = -1 if par == -1 else (par + 1) % n
    return first, second


def default_chunks(nbytes: int) -> int:
    return max(1, min(MAX_CHUNKS, math.ceil(nbytes / 2 / CHUNK_TARGET)))


def chunk_sizes(part_bytes: float, chunks: int | None = None) -> tuple[int, float, float]:
    """(K, full chunk, last chunk) of ``part_bytes`` cut into pipeline chunks.

    As NCCL does, chunks have a fixed size (CHUNK_TARGET) and the last one holds the rest, so a larger
    message never has smaller chunks and its pipeline never fills faster: time grows with the message.
    Beyond MAX_CHUNKS chunks, or when ``chunks`` is given, the part is cut into equal chunks.
    """
    if chunks is None:
        K = max(1, min(MAX_CHUNKS, math.ceil(part_bytes / CHUNK_TARGET)))
        if K < MAX_CHUNKS:
            return K, (CHUNK_TARGET if K > 1 else part_bytes), part_bytes - (K - 1) * CHUNK_TARGET
    else:
        K = chunks
    return K, part_bytes / K, part_bytes / K


class _Tree:
    """One tree over ranks: parent, children, heights, depths, and fabric node arrays for its edges."""

    def __init__(self, parent: dict[int, int]):
        self.parent = parent
        self.children: dict[int, list[int]] = {r: [] for r in parent}
        for r, par in parent.items():
            if par != -1:
                self.children[par].append(r)
        self.root = next(r for r, par in parent.items() if par == -1)
        self.depth = {self.root: 0}
        order = [self.root]
        for r in order:
            for c in self.children[r]:
                self.depth[c] = self.depth[r] + 1
                order.append(c)
        self.height = {}
        for r in reversed(order):
            self.height[r] = 1 + max((self.height[c] for c in self.children[r]), default=-1)
        self.H = self.height[self.root]
        self.up_edges = [(r, par) for r, par in parent.items() if par != -1]
        self.down_edges = [(r, c) for r in order for c in self.children[r]]

    def rounds(self, chunks: int) -> int:
        last_up = max((self.height[u] for u, _ in self.up_edges), default=-1) + chunks - 1
        last_down = self.H + max((self.depth[u] for u, _ in self.down_edges), default=-1) + chunks - 1
        return max(last_up, last_down) + 1


def _chain_trees(layout: GroupLayout) -> tuple[list[int], list[_Tree]]:
    """NCCL-style trees in positions, not ranks: chains inside domains, a double binary tree over the
    domains. Position ``start[k] + i`` is the i-th GPU along domain k's chain, whose head joins the tree
    over domains; the second tree's domain tree is the first's shifted by one (``double_binary_tree``).
    Which rank sits at each position depends on the channel (``_chain_ranks``), the shape does not."""
    doms = layout.domains
    inter = double_binary_tree(len(doms))
    start = [0]
    for d in doms[:-1]:
        start.append(start[-1] + len(d))
    trees = []
    for t in range(2):
        parent = {}
        for k, d in enumerate(doms):
            for i in range(len(d)):
                parent[start[k] + i] = start[k] + i - 1 if i else (-1 if inter[t][k] == -1 else start[inter[t][k]])
        trees.append(_Tree(parent))
    return start, trees


def _chain_ranks(layout: GroupLayout, start: list[int], channel: int, t: int) -> np.ndarray:
    """Rank at every position of tree ``t`` of ``channel``: channel c's first tree enters every domain
    at local GPU c and chains upwards; its second enters at local GPU c + m/2 and chains downwards, so
    inter-domain edges stay on one rail and channels use different NICs."""
    sizes = np.array([len(d) for d in layout.domains], dtype=np.int64)
    m = np.repeat(sizes, sizes)
    first = np.repeat(np.asarray(start, dtype=np.int64), sizes)
    i = np.arange(m.shape[0]) - first
    head = (channel + t * (m // 2)) % m
    local = (head + i) % m if t == 0 else (head - i) % m
    return np.concatenate([np.asarray(d, dtype=np.int64) for d in layout.domains])[first + local]


def _bounds(n: int, part: int, parts: int, chunks: int, full: float = 1.0, last: float = 1.0) -> np.ndarray:
    """Element bounds of the chunks of ``part``: chunks-1 of relative size ``full``, the last ``last``."""
    h = np.linspace(0, n, parts + 1).astype(int)
    edges = np.append(np.arange(chunks) * full, (chunks - 1) * full + last) / ((chunks - 1) * full + last)
    return (h[part] + np.floor(edges * (h[part + 1] - h[part]) + 1e-9)).astype(int)


_EDGES: dict = {}  # (group ident, channels) -> _tree_edges' arrays, the few most recent


def _tree_edges(layout: GroupLayout, channels: int) -> tuple:
    """Every edge of every tree (two per channel, ``_chain_trees``) once, as arrays (source rank,
    destination rank, tree, up?, level: the round offset at which it carries its first chunk), with per
    tree (H, last up level, deepest down edge's depth) and its root, and the edges in order of level
    with each level's first position there. Depends on the group and channels
    alone, so the schedules of one group under every protocol and size share it (kept for the 4 most
    recent groups). The two trees' shapes are built once in positions; each channel only places its
    ranks on them."""
    key = (layout.ident, channels)
    hit = _EDGES.get(key)
    if hit is not None:
        return hit
    start, trees = _chain_trees(layout)
    shape = []  # per tree t, in positions: (source, destination, up?, level) of its edges, stats, root
    for tree in trees:
        up, down = tree.up_edges, tree.down_edges
        shape.append((np.array([u for u, _ in up] + [u for u, _ in down], dtype=np.int64),
                      np.array([v for _, v in up] + [v for _, v in down], dtype=np.int64),
                      np.array([True] * len(up) + [False] * len(down), dtype=bool),
                      np.array([tree.height[u] for u, _ in up] + [tree.H + tree.depth[u] for u, _ in down],
                               dtype=np.int64),
                      (tree.H, max((tree.height[u] for u, _ in up), default=-1),
                       max((tree.depth[u] for u, _ in down), default=-1)), tree.root))
    e_src, e_dst, e_tree, e_up, e_level, stats, roots = [], [], [], [], [], [], []
    for c in range(channels):  # tree 2c + t: tree t's shape with channel c's ranks at its positions
        for t, (p_src, p_dst, p_up, p_level, stat, root) in enumerate(shape):
            rank = _chain_ranks(layout, start, c, t)
            e_src.append(rank[p_src]), e_dst.append(rank[p_dst]), e_up.append(p_up), e_level.append(p_level)
            e_tree.append(np.full(p_src.shape[0], 2 * c + t, dtype=np.int64))
            stats.append(stat), roots.append(int(rank[root]))
    level = np.concatenate(e_level)
    # the edges in order of level, and where each level starts there: a round's edges are a few levels
    by_level = np.argsort(level, kind="stable").astype(np.int32)
    level_start = np.searchsorted(level[by_level], np.arange(int(level.max(initial=0)) + 2))
    out = (np.concatenate(e_src), np.concatenate(e_dst), np.concatenate(e_tree), np.concatenate(e_up),
           level, stats, roots, (by_level, level_start))
    while len(_EDGES) >= 4:
        del _EDGES[next(iter(_EDGES))]
    _EDGES[key] = out
    return out


def tree_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *,
                   chunks: int | None = None, channels: int | None = None) -> Schedule:
    """Double-binary-tree all-reduce; see the module docstring for the round structure."""
    from fabricsim.collectives.ring import default_channels

    C = channels or default_channels(layout)
    e_src, e_dst, e_tree, e_up, e_level, stats, roots, (by_level, level_start) = _tree_edges(layout, C)
    parts = len(roots)
    K, chunk_bytes, last_bytes = chunk_sizes(nbytes / parts, chunks)
    split = last_bytes != chunk_bytes  # the last chunk's flows are their own copies of the edges
    rounds = max(max(top_up, H + top_down) + K for H, top_up, top_down in stats)
    fill = max(H + top_down + 1 for H, _, top_down in stats)
    net = layout.multi_domain
    # NCCL's tree latency (C103): 2 ((m-1) intra + log2(domains) inter) hops along the pipeline
    m = max(len(d) for d in layout.domains)
    hops = {"nvlink": 2 * (m - 1), "net": 2 * math.ceil(math.log2(len(layout.domains))) if net else 0}
    fill_latency = sum(n * protocol.step_latency.get(("tree", c), 0.0) for c, n in hops.items())
    per_fill_round = fill_latency / fill if fill else 0.0
    gi = fabric.gpu_index
    E = len(e_src)
    copies = 2 if split else 1
    base_traffic = (np.tile(gi[e_src], copies), np.tile(gi[e_dst], copies),
                    np.repeat([chunk_bytes, last_bytes][:copies], E), np.tile(e_tree, copies))
    base = (("tree-edges", layout.ident, C, chunk_bytes, last_bytes), lambda: base_traffic)
    state: dict = {}
    index_type = np.int32 if copies * E < 2**31 else np.int64

    top = level_start.shape[0] - 1

    def active(t: int) -> np.ndarray:
        """Base indices of round t's flows: edge e carries chunk t - level(e) (levels t-K+1..t), the last
        one from copy 2; in edge order (the edges of those levels, cut from the edges in level order)."""
        lo, hi = level_start[min(max(t - K + 1, 0), top)], level_start[min(max(t + 1, 0), top)]
        e = np.sort(by_level[lo:hi]).astype(index_type)  # int32 when it fits: the rounds' indices are most of a schedule's memory
        return np.where(e_level[e] == t - K + 1, e + index_type(E), e) if split else e

    def make_step(t: int) -> Step:
        steady = fill <= t < K - (1 if split else 0)

        def apply(data: dict) -> None:
            n = next(iter(data.values())).shape[0]
            if "acc" not in state:
                state["acc"] = {r: data[r].copy() for r in layout.ranks}
            acc = state["acc"]
            moves = []
            for e in (active(t) % E).tolist():
                u, v, ti = int(e_src[e]), int(e_dst[e]), int(e_tree[e])
                b = _bounds(n, ti, parts, K, chunk_bytes, last_bytes)
                c = t - int(e_level[e])
                lo, hi = b[c], b[c + 1]
                if e_up[e]:
                    moves.append((True, v, lo, hi, acc[u][lo:hi].copy()))
                else:
                    if u == roots[ti]:
                        data[u][lo:hi] = acc[u][lo:hi]
                    moves.append((False, v, lo, hi, data[u][lo:hi].copy()))
            for up, v, lo, hi, payload in moves:
                if up:
                    acc[v][lo:hi] += payload
                else:
                    data[v][lo:hi] = payload

        pattern = ("tree", layout.ident, C, K, chunk_bytes, last_bytes, "steady" if steady else t)
        return Step(pattern, lambda: active(t), "net" if net else "nvlink", apply, "tree",
                    extra_latency=per_fill_round if t < fill else 0.0, pipelined=t >= fill, base=base,
                    once=not steady)

    def steps():
        if layout.p == 1:
            return
        for t in range(rounds):
            yield make_step(t)
    return Schedule("tree", steps(), protocol, "tree")


def tree_broadcast(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *, root: int | None = None,
                   chunks: int | None = None) -> Schedule:
    """Pipelined broadcast of ``nbytes`` from ``root`` (default: the group's first rank) down a chain
    inside domains and a binary tree across them; every rank ends with the root's buffer (rooted.py)."""
    from fabricsim.collectives.rooted import broadcast

    return broadcast(fabric, layout, nbytes, protocol, algorithm="tree", root=root, chunks=chunks)


def _rerooted(parent: list[int], node: int) -> int:
    """Parent of ``node`` once the tree is re-rooted at position 0 (edges kept, directions flipped)."""
    path = [0]
    while parent[path[-1]] != -1:
        path.append(parent[path[-1]])
    flipped = {path[i + 1]: path[i] for i in range(len(path) - 1)}
    if node == 0:
        return -1
    if node in flipped:
        return flipped[node]
    return parent[node]
