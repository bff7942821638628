"""Routes between GPUs: shortest paths through forwarding nodes, multi-plane spreading and ECMP.

Rules, in order:

1. A route's interior holds only forwarding nodes (NVSwitch chips, NICs, switches): GPUs do not forward.
2. Inside one NVLink domain only NVLink edges are used (NVLink is preferred over the NIC path even when
   the scale-out path would be as short); across domains every edge kind is allowed.
3. Among shortest paths (in hops), the source spreads its traffic over all its first-hop links that start
   a shortest path, in proportion to their bandwidth: a GPU with one link to each of 18 NVLink switch chips
   sends 1/18 through each plane, as NCCL channels do. Every later hop picks one next hop by a stable hash
   of (source, destination, flow key, node) names: ECMP as switches do it, identical in every run (Python's
   ``hash()`` of strings is salted per process, so names are digested with blake2b and mixed with
   splitmix64 steps instead).
4. Adaptive routing (``topology.meta["adaptive_routing"]``, set by ``scale_out(adaptive_routing=True)``):
   a switch with several next hops on shortest paths spreads a flow evenly over all of them instead of
   hashing it onto one, so the route holds every shortest path with its share. This is the fluid limit of
   InfiniBand adaptive routing, where a switch picks the output port by its load for every packet among
   the ports of minimal hops to the destination (NVIDIA "InfiniBand Cluster Bring-up Procedure",
   Adaptive Routing: the TREE algorithm's AR groups for fat trees; "AR is enabled by default in the
   opensm.conf file"), and NCCL sends large messages in messages that may use it (support since NCCL 2.6.4,
   release notes; NCCL_IB_AR_THRESHOLD, NCCL environment variables, default 8,192 bytes). Off by default:
   whether a given fabric runs it is the operator's choice.

Distances come from a bidirectional breadth-first search over the forwarding nodes, which touches only
the neighbourhoods of the two endpoints in a fat tree: no all-pairs table is built, so 8,192-GPU fabrics
route in about a second. Routes are cached per (source, destination, flow key), and whole pair arrays
(``route_many``) per content digest: the same traffic pattern built again (the next step of a schedule, the
same collective simulated under another protocol, a fresh simulation sharing this router) is routed once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Iterable

import numpy as np

from fabricsim.errors import TopologyError
from fabricsim.topologies.base import Topology

__all__ = ["LinkTable", "Route", "RouteSet", "Router", "stable_hash"]

_MASK64 = (1 << 64) - 1


def stable_hash(*values: int) -> int:
    """A 64-bit mix of integers (splitmix64 steps), the same in every process and run.

    >>> stable_hash(1, 2, 3) == stable_hash(1, 2, 3), stable_hash(1, 2) != stable_hash(2, 1)
    (True, True)
    """
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h + (v & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h


@dataclass(frozen=True)
class LinkTable:
    """The topology's directed edges as arrays: link ``i`` goes ``src[i] -> dst[i]`` (node indices)."""

    nodes: list
    node_index: dict
    src: np.ndarray
    dst: np.ndarray
    bandwidth: np.ndarray
    latency: np.ndarray
    kind: list
    edge_index: dict  # (u_index, v_index) -> link id

    @classmethod
    def from_topology(cls, topology: Topology) -> "LinkTable":
        G = topology.graph
        nodes = list(G.nodes)
        index = {n: i for i, n in enumerate(nodes)}
        src, dst, bw, lat, kind = [], [], [], [], []
        for u, v, d in G.edges(data=True):
            src.append(index[u])
            dst.append(index[v])
            bw.append(d["bandwidth"])
            lat.append(d.get("latency", 0.0))
            kind.append(str(d.get("kind", "")))
        edge_index = {(a, b): i for i, (a, b) in enumerate(zip(src, dst))}
        return cls(nodes, index, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64),
                   np.asarray(bw, dtype=float), np.asarray(lat, dtype=float), kind, edge_index)

    def __len__(self) -> int:
        return self.src.shape[0]

    def name(self, link: int) -> str:
        return f"{self.nodes[self.src[link]]}->{self.nodes[self.dst[link]]}"

    @property
    def names(self) -> list[str]:
        """Every link's name, in link order (computed once; do not modify the list)."""
        cached = self.__dict__.get("_names")
        if cached is None:
            nodes = self.nodes
            cached = [f"{nodes[a]}->{nodes[b]}" for a, b in zip(self.src.tolist(), self.dst.tolist())]
            object.__setattr__(self, "_names", cached)
        return cached


@dataclass(frozen=True)
class Route:
    """How one (src, dst, key) transfer crosses the fabric.

    Path ``i`` is ``links[ptr[i]:ptr[i+1]]`` (link ids), carries ``fractions[i]`` of the bytes and pays
    ``latencies[i]`` (sum of its links' latencies) before its first byte arrives.
    """

    links: np.ndarray
    ptr: np.ndarray
    fractions: np.ndarray
    latencies: np.ndarray
    lengths: np.ndarray  # links per path

    @property
    def paths(self) -> list[np.ndarray]:
        return [self.links[a:b] for a, b in zip(self.ptr[:-1], self.ptr[1:])]


@dataclass
class RouteSet:
    """The routes of a whole pair array, as flat arrays of *subflows* (one per path of every pair).

    Subflow ``j`` belongs to pair ``flow[j]``, carries ``frac[j]`` of its bytes, pays ``lat[j]`` and
    crosses ``links[ptr[j]:ptr[j+1]]``. Shared read-only between every group with these pairs.
    """

    flow: np.ndarray
    frac: np.ndarray
    lat: np.ndarray
    ptr: np.ndarray
    links: np.ndarray
    _classes: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Array elements held (what the router's cache budget counts)."""
        return int(self.links.shape[0] + 4 * self.flow.shape[0])

    def classes(self) -> np.ndarray:
        """Per subflow, the rank of its path among the distinct paths, in lexicographic order of link ids
        (a shorter path before its extensions): subflows of equal class cross the same links."""
        if self._classes is None:
            sub_len = np.diff(self.ptr)
            width = int(sub_len.max()) if sub_len.size else 0
            base = int(self.links.max()) + 2 if self.links.size else 1
            rank = np.zeros(sub_len.shape[0], dtype=np.int64)
            for col in range(width):
                # ranks of the first col+1 links (a missing link, -1, sorts first), refined one link at a time
                has = sub_len > col
                link = np.full(sub_len.shape[0], -1, dtype=np.int64)
                link[has] = self.links[self.ptr[:-1][has] + col]
                rank = np.unique(rank * base + (link + 1), return_inverse=True)[1].reshape(-1).astype(np.int64)
            self._classes = rank
        return self._classes


class Router:
    """Shortest-path routing with first-hop spreading and ECMP, cached. See the module docstring."""

    #: Array elements the pair-array cache (``route_many``) may hold; least recently used sets go first.
    set_budget = 32_000_000

    def __init__(self, topology: Topology, links: LinkTable | None = None, *, down: Iterable[int] = ()) -> None:
        """``down``: link ids routes must avoid (links a timed fault took out; see ``Fabric.set_capacity``)."""
        self.topology = topology
        self.links = links if links is not None else LinkTable.from_topology(topology)
        lt = self.links
        n = len(lt.nodes)
        G = topology.graph
        kinds = [G.nodes[node].get("kind") for node in lt.nodes]
        self._forwarding = [k != "gpu" for k in kinds]
        self._domain = [G.nodes[node].get("domain") if k == "gpu" else None for node, k in zip(lt.nodes, kinds)]
        nvlink = [k.startswith("nvlink") for k in lt.kind]
        # adjacency restricted to forwarding neighbours: all edge kinds, and NVLink-only
        self._succ_all = [[] for _ in range(n)]
        self._pred_all = [[] for _ in range(n)]
        self._succ_nvl = [[] for _ in range(n)]
        self._pred_nvl = [[] for _ in range(n)]
        down = set(np.asarray(down, dtype=np.int64).tolist())
        for i, (a, b, is_nvl) in enumerate(zip(lt.src.tolist(), lt.dst.tolist(), nvlink)):
            if i in down:
                continue
            self._succ_all[a].append(b)
            self._pred_all[b].append(a)
            if is_nvl:
                self._succ_nvl[a].append(b)
                self._pred_nvl[b].append(a)
        for lists in (self._succ_all, self._pred_all, self._succ_nvl, self._pred_nvl):
            for lst in lists:
                lst.sort()
        # the same, forwarding neighbours only: what searches expand (GPUs never forward)
        fwd = self._forwarding
        self._fwd_of = {id(lists): [[v for v in lst if fwd[v]] for lst in lists]
                        for lists in (self._succ_all, self._pred_all, self._succ_nvl, self._pred_nvl)}
        # ECMP hashes node names, not indices: equivalent fabrics built in another order (or with NVLink
        # planes aggregated) make the same choices in their shared scale-out network
        self._name_hash = [int.from_bytes(hashlib.blake2b(str(node).encode(), digest_size=8).digest(), "little")
                           for node in lt.nodes]
        self._cache: dict[tuple[int, int, int], Route] = {}
        self._bandwidth = np.asarray(lt.bandwidth, dtype=float)
        self._latency = [float(x) for x in lt.latency.tolist()]
        self._sets: OrderedDict[bytes, RouteSet] = OrderedDict()
        self.memo: dict = {}  # for the simulations sharing this router (the fabric's round records)
        self._middles: dict = {}  # (adjacency, X2, Y2) -> shared middle of routes (see _distances)
        self._sets_size = 0
        self.adaptive = bool(topology.meta.get("adaptive_routing", False))

    def node(self, name: Hashable) -> int:
        try:
            return self.links.node_index[name]
        except KeyError:
            raise TopologyError(f"no node {name!r} in topology {self.topology.name!r}") from None

    # --- public ------------------------------------------------------------------------------------------
    def successors(self, node: int, *, nvlink_only: bool = False) -> list[int]:
        """Node indices one directed edge away from ``node`` (over NVLink edges only, if asked)."""
        return (self._succ_nvl if nvlink_only else self._succ_all)[node]

    def route(self, src: int, dst: int, key: int = 0) -> Route:
        """The route from node index ``src`` to ``dst`` for flow key ``key`` (cached)."""
        cached = self._cache.get((src, dst, key)) or self._cache.get((src, dst, None))
        if cached is not None:
            return cached
        if src == dst:
            raise TopologyError(f"a transfer needs two different endpoints, got {self.links.nodes[src]!r} twice")
        h, succ = None, None
        if self._domain[src] is not None and self._domain[src] == self._domain[dst]:
            succ = self._succ_nvl
            h = self._distances(src, dst, succ, self._pred_nvl)
        if h is None:
            succ = self._succ_all
            h = self._distances(src, dst, succ, self._pred_all)
        if h is None:
            raise TopologyError(f"no route from {self.links.nodes[src]!r} to {self.links.nodes[dst]!r}")
        route, hashed = self._build(src, dst, key, h, succ)
        # a route that made no ECMP choice is the same for every key
        self._cache[(src, dst, key if hashed else None)] = route
        return route

    def route_many(self, src: np.ndarray, dst: np.ndarray, key: np.ndarray) -> RouteSet:
        """The routes of pairs ``(src[i], dst[i], key[i])`` (int64 arrays of node indices and keys) as one
        RouteSet, cached by the arrays' content: the same pattern is routed once per router."""
        src = np.ascontiguousarray(src, dtype=np.int64)
        dst = np.ascontiguousarray(dst, dtype=np.int64)
        key = np.ascontiguousarray(key, dtype=np.int64)
        h = hashlib.blake2b(digest_size=16)
        for a in (src, dst, key):
            h.update(a.tobytes())
        digest = h.digest()
        hit = self._sets.get(digest)
        if hit is not None:
            self._sets.move_to_end(digest)
            return hit
        route = self.route
        routes = [route(s, d, k) for s, d, k in zip(src.tolist(), dst.tolist(), key.tolist())]
        n_paths = np.fromiter((r.fractions.shape[0] for r in routes), dtype=np.int64, count=len(routes))
        flow = np.repeat(np.arange(len(routes)), n_paths)
        if routes:
            frac = np.concatenate([r.fractions for r in routes])
            lat = np.concatenate([r.latencies for r in routes])
            sub_len = np.concatenate([r.lengths for r in routes])
            links = np.concatenate([r.links for r in routes])
        else:
            frac, lat, sub_len, links = np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ptr = np.zeros(sub_len.shape[0] + 1, dtype=np.int64)
        np.cumsum(sub_len, out=ptr[1:])
        rs = RouteSet(flow, frac, lat, ptr, links)
        if rs.size <= self.set_budget:
            self._sets[digest] = rs
            self._sets_size += rs.size
            while self._sets_size > self.set_budget:
                self._sets_size -= self._sets.popitem(last=False)[1].size
        return rs

    # --- internals ---------------------------------------------------------------------------------------
    def _distances(self, s: int, d: int, succ: list, pred: list) -> dict | None:
        """Hops to ``d`` of the nodes on shortest s->d paths (and of some other nodes, all exact); None if
        unreachable.

        When s and d are at least four hops apart, every shortest path enters the set X2 of nodes two
        hops from s and leaves through the set Y2 of nodes two hops before d: the middle part, shortest
        paths from X2 to Y2, is searched once per (X2, Y2) and shared by every pair with the same sets
        (all GPUs behind one leaf switch share X2 = {that leaf}). Closer pairs search directly.
        """
        if d in succ[s]:
            return {s: 1, d: 0}
        succ_f, pred_f = self._fwd_of[id(succ)], self._fwd_of[id(pred)]
        x1, y1 = succ_f[s], pred_f[d]
        if x1 and y1:
            y1_set = set(y1)
            if not any(v in y1_set for v in x1):
                x1_set = set(x1)
                x2 = sorted({v for u in x1 for v in succ_f[u]} - x1_set)
                y2 = sorted({v for u in y1 for v in pred_f[u]} - y1_set)
                if x2 and y2 and not any(v in y1_set for v in x2) and not any(v in x1_set for v in y2):
                    return self._via_middle(s, d, x1, y1, tuple(x2), tuple(y2), succ_f, pred_f)
        return self._search(s, d, succ_f, pred_f)

    def _via_middle(self, s, d, x1, y1, x2, y2, succ_f, pred_f) -> dict | None:
        """``_distances`` of a pair at least four hops apart, from the shared search of X2 -> Y2.

        A forwarding node that is not one hop before d is two hops more from d than from Y2 (its shortest
        path to d passes a node two hops before d), so the middle's distances, plus two, are exact; the
        nodes one hop before d get 1, and the first hops and s are pruned back as in ``_search``."""
        key = (id(succ_f), x2, y2)
        mid = self._middles.get(key)
        if mid is None:
            if len(self._middles) >= 20_000:
                self._middles.clear()
            found = self._search_sets(x2, y2, succ_f, pred_f)
            mid = self._middles[key] = None if found is None else (
                found[0] + 4, {v: k + 2 for v, k in found[1].items()})
        if mid is None:
            return None
        length, h = mid[0], dict(mid[1])
        h.update(dict.fromkeys(y1, 1))
        h[d] = 0
        for u in x1:
            if u not in h:
                best = min((h[v] for v in succ_f[u] if v in h), default=None)
                if best is not None and best + 2 == length:
                    h[u] = best + 1
        best = min((h[v] for v in x1 if v in h), default=None)
        if best is None or best + 1 != length:
            return None
        h[s] = length
        return h

    def _search_sets(self, xs: tuple, ys: tuple, succ_f: list, pred_f: list) -> tuple | None:
        """(hops, distances to ``ys``) of shortest paths from any node of ``xs`` to any of ``ys`` over
        forwarding nodes: bidirectional BFS, then the forward side pruned as in ``_search``."""
        df, db = dict.fromkeys(xs, 0), dict.fromkeys(ys, 0)
        return self._meet_and_prune(df, db, [list(xs)], list(ys), succ_f, pred_f)

    def _search(self, s: int, d: int, succ_f: list, pred_f: list) -> dict | None:
        """``_distances`` by a bidirectional BFS of the pair alone."""
        df, db = {s: 0}, {d: 0}
        df.update((v, 1) for v in succ_f[s])
        db.update((v, 1) for v in pred_f[d])
        found = self._meet_and_prune(df, db, [[s], succ_f[s]], pred_f[d], succ_f, pred_f)
        if found is None:
            return None
        length, h = found
        return h if h.get(s) == length else None

    def _meet_and_prune(self, df: dict, db: dict, f_levels: list, b_front: list, succ_f: list,
                        pred_f: list) -> tuple | None:
        """Grow the smaller of the forward (last level ``f_levels[-1]``, distances ``df``) and backward
        (``b_front``, ``db``) searches until they meet; then (length, distances to the target) with the
        forward side pruned to nodes on shortest paths. None when they never meet.

        Nodes found backwards have exact distances. A node of forward level k on a shortest path is
        length - k from the target: when that is within the backward search's depth it was found
        backwards already, so only the shallower forward levels need pruning (a node with the target
        among its successors was found backwards at once, so only forwarding successors count)."""
        f_front = f_levels[-1]
        meet = [v for v in f_front if v in db]
        while not meet:
            if not f_front or not b_front:
                return None
            if len(f_front) <= len(b_front):
                f_front = self._next_level(f_front, succ_f, df)
                f_levels.append(f_front)
                meet = [v for v in f_front if v in db]
            else:
                b_front = self._next_level(b_front, pred_f, db)
                meet = [v for v in b_front if v in df]
        length = min(df[v] + db[v] for v in meet)
        h = dict(db)
        depth_b = max(db.values())
        for level in reversed(f_levels[:max(0, length - depth_b)]):
            for u in level:
                if u in h:
                    continue
                best = min((h[v] for v in succ_f[u] if v in h), default=None)
                if best is not None and df[u] + best + 1 == length:
                    h[u] = best + 1
        return length, h

    @staticmethod
    def _next_level(front: list, adjacency: list, dist: dict) -> list:
        """One breadth-first level: neighbours of ``front`` in ``adjacency`` (forwarding nodes only) not
        yet in ``dist`` (recorded there)."""
        depth = dist[front[0]] + 1
        nxt = []
        for u in front:
            for v in adjacency[u]:
                if v not in dist:
                    dist[v] = depth
                    nxt.append(v)
        return nxt

    def _build(self, s: int, d: int, key: int, h: dict, succ: list) -> tuple[Route, bool]:
        lt = self.links
        fwd = self._forwarding
        edge = lt.edge_index
        length = h[s]
        first = [v for v in succ[s] if h.get(v) == length - 1 and (fwd[v] or v == d)]
        succ_f = self._fwd_of[id(succ)]
        weights = self._bandwidth[[edge[(s, v)] for v in first]]
        fractions = weights / weights.sum()
        paths, shares = [], []
        hashed = False
        nh = self._name_hash
        for v, first_share in zip(first, fractions.tolist()):
            stack = [([edge[(s, v)]], v, first_share)]
            while stack:
                hops, u, share = stack.pop()
                while u != d:
                    r = h[u]
                    # one hop left: only d itself is at distance 0; otherwise forwarding nodes one closer
                    options = [d] if r == 1 else [w for w in succ_f[u] if h.get(w) == r - 1]
                    if len(options) == 1:
                        w = options[0]
                    elif self.adaptive:  # spread evenly over every next hop (rule 4)
                        share /= len(options)
                        stack += [(hops + [edge[(u, x)]], x, share) for x in options[1:]]
                        w = options[0]
                    else:
                        hashed = True
                        w = options[stable_hash(nh[s], nh[d], key, nh[u]) % len(options)]
                    hops.append(edge[(u, w)])
                    u = w
                paths.append(hops)
                shares.append(share)
        fractions = np.asarray(shares)
        lat = self._latency
        latencies = np.array([_array_sum([lat[e] for e in p]) for p in paths])
        lengths = np.array([len(p) for p in paths], dtype=np.int64)
        ptr = np.zeros(len(paths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        links = np.array([e for p in paths for e in p], dtype=np.int64)
        return Route(links, ptr, fractions, latencies, lengths), hashed


def _array_sum(values: list) -> float:
    """``np.array(values).sum()`` to the last bit, in plain Python (numpy's pairwise summation: eight
    running sums from eight values on, a sequential sum below), for short lists where numpy's per-call
    cost dominates."""
    n = len(values)
    if n < 8:
        total = 0.0
        for x in values:
            total += x
        return total
    r = list(values[:8])
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += values[i + j]
        i += 8
    total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for x in values[i:]:
        total += x
    return total
