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
route in about a second. Routes are cached per (source, destination, flow key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Hashable, Iterable

import numpy as np

from fabricsim.errors import TopologyError
from fabricsim.topologies.base import Topology

__all__ = ["LinkTable", "Route", "Router", "stable_hash"]

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


class Router:
    """Shortest-path routing with first-hop spreading and ECMP, cached. See the module docstring."""

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
        # ECMP hashes node names, not indices: equivalent fabrics built in another order (or with NVLink
        # planes aggregated) make the same choices in their shared scale-out network
        self._name_hash = [int.from_bytes(hashlib.blake2b(str(node).encode(), digest_size=8).digest(), "little")
                           for node in lt.nodes]
        self._cache: dict[tuple[int, int, int], Route] = {}
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

    # --- internals ---------------------------------------------------------------------------------------
    def _distances(self, s: int, d: int, succ: list, pred: list) -> dict | None:
        """Hops to ``d`` of every node on a shortest s->d path (bidirectional BFS); None if unreachable."""
        fwd = self._forwarding
        if d in succ[s]:
            return {s: 1, d: 0}
        df, db = {s: 0}, {d: 0}
        f_front = [v for v in succ[s] if fwd[v]]
        b_front = [v for v in pred[d] if fwd[v]]
        df.update((v, 1) for v in f_front)
        db.update((v, 1) for v in b_front)
        f_levels = [[s], f_front]
        meet = [v for v in f_front if v in db]
        while not meet:
            if not f_front or not b_front:
                return None
            if len(f_front) <= len(b_front):
                f_front = self._next_level(f_front, succ, df)
                f_levels.append(f_front)
                meet = [v for v in f_front if v in db]
            else:
                b_front = self._next_level(b_front, pred, db)
                meet = [v for v in b_front if v in df]
        length = min(df[v] + db[v] for v in meet)
        # nodes found backwards have exact distances; prune the forward side back from them
        h = dict(db)
        for level in reversed(f_levels):
            for u in level:
                if u in h:
                    continue
                best = min((h[v] for v in succ[u] if v in h and (fwd[v] or v == d)), default=None)
                if best is not None and df[u] + best + 1 == length:
                    h[u] = best + 1
        return h if h.get(s) == length else None

    def _next_level(self, front: list, adjacency: list, dist: dict) -> list:
        """One breadth-first level: forwarding neighbours of ``front`` not yet in ``dist`` (recorded there)."""
        fwd = self._forwarding
        depth = dist[front[0]] + 1
        nxt = []
        for u in front:
            for v in adjacency[u]:
                if fwd[v] and v not in dist:
                    dist[v] = depth
                    nxt.append(v)
        return nxt

    def _build(self, s: int, d: int, key: int, h: dict, succ: list) -> tuple[Route, bool]:
        lt = self.links
        fwd = self._forwarding
        length = h[s]
        first = [v for v in succ[s] if h.get(v) == length - 1 and (fwd[v] or v == d)]
        weights = np.array([lt.bandwidth[lt.edge_index[(s, v)]] for v in first], dtype=float)
        fractions = weights / weights.sum()
        paths, shares = [], []
        hashed = False
        nh = self._name_hash
        for v, first_share in zip(first, fractions.tolist()):
            stack = [([lt.edge_index[(s, v)]], v, first_share)]
            while stack:
                hops, u, share = stack.pop()
                while u != d:
                    r = h[u]
                    options = [w for w in succ[u] if h.get(w) == r - 1 and (fwd[w] or w == d)]
                    if len(options) == 1:
                        w = options[0]
                    elif self.adaptive:  # spread evenly over every next hop (rule 4)
                        share /= len(options)
                        stack += [(hops + [lt.edge_index[(u, x)]], x, share) for x in options[1:]]
                        w = options[0]
                    else:
                        hashed = True
                        w = options[stable_hash(nh[s], nh[d], key, nh[u]) % len(options)]
                    hops.append(lt.edge_index[(u, w)])
                    u = w
                paths.append(np.asarray(hops, dtype=np.int64))
                shares.append(share)
        fractions = np.asarray(shares)
        latencies = np.array([lt.latency[p].sum() for p in paths])
        ptr = np.zeros(len(paths) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(p) for p in paths])
        return Route(np.concatenate(paths), ptr, fractions, latencies, np.diff(ptr)), hashed
