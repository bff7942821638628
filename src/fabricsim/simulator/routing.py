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
the neighbourhoods of the two endpoints in a fat tree: no all-pairs table is built. Pairs four or more
hops apart share the search of their middle (from the nodes two hops after the source to those two hops
before the destination: leaf switch to leaf switch in a fat tree), and the middles share the breadth-first
levels of their two sides, so an 8,192-GPU fabric searches each leaf's neighbourhood twice, not once per
pair of leaves. Routes are cached per (source, destination, flow key), and whole pair arrays
(``route_many``) per content digest: the same traffic pattern built again (the next step of a schedule, the
same collective simulated under another protocol, a fresh simulation sharing this router) is routed once.

``route_many`` routes a pair array in a batch that gives bit for bit the routes of ``route`` pair by pair
(``_route_pairs``, the reference its tests compare against): every (source, destination) is planned once
for all its flow keys, and walked once per key only when ECMP made a choice on its way; pairs one or two
hops apart (all traffic inside an NVLink domain) are routed with array operations, and so are farther
pairs across domains (every pair crossing the fat tree: ``routing_far``); the other farther pairs share
their next hops per (middle, node) and their first hops per (source, middle); the routes live in one flat
store that a pair array's RouteSet is gathered from.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Iterable

import numpy as np

from fabricsim.errors import TopologyError
from fabricsim.simulator.fluid import _ranges
from fabricsim.simulator.routing_far import bandwidth_shares, route_far
from fabricsim.topologies.base import Topology, paused_gc as _paused_gc

__all__ = ["LinkTable", "Route", "RouteSet", "Router", "stable_hash"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def stable_hash(*values: int) -> int:
    """A 64-bit mix of integers (splitmix64 steps), the same in every process and run.

    >>> stable_hash(1, 2, 3) == stable_hash(1, 2, 3), stable_hash(1, 2) != stable_hash(2, 1)
    (True, True)
    """
    h = _GOLDEN
    for v in values:
        h = _mix(h, v)
    return h


def _mix(h: int, v: int) -> int:
    """One splitmix64 step of ``stable_hash``: the state after one more value (so a hash of values that
    share a prefix can start from the prefix's state)."""
    h = (h + (v & _MASK64) + _GOLDEN) & _MASK64
    z = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


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
        with _paused_gc():
            nodes = list(G.nodes)
            index = {n: i for i, n in enumerate(nodes)}
            # the edges in G.edges order (every node's successors in turn), read from the adjacency dicts
            # directly: a quarter faster than the edge view at 655,360 edges
            degree, dst, bw, lat, kind = [], [], [], [], []
            for _, nbrs in G.adjacency():
                degree.append(len(nbrs))
                dst += map(index.__getitem__, nbrs)
                attrs = nbrs.values()
                bw += [d["bandwidth"] for d in attrs]
                lat += [d.get("latency", 0.0) for d in attrs]
                kind += [str(d.get("kind", "")) for d in attrs]
            src = np.repeat(np.arange(len(nodes), dtype=np.int64), degree)
            edge_index = dict(zip(zip(src.tolist(), dst), range(len(dst))))
        return cls(nodes, index, src, np.asarray(dst, dtype=np.int64), np.asarray(bw, dtype=float),
                   np.asarray(lat, dtype=float), kind, edge_index)

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

    @property
    def kind_codes(self) -> tuple[np.ndarray, list[str]]:
        """(code of every link's kind, the kinds in code order), computed once: per-kind arrays (usable
        capacities) index a table by code instead of comparing every link's kind string again."""
        cached = self.__dict__.get("_kind_codes")
        if cached is None:
            kinds, codes = np.unique(np.asarray(self.kind, dtype=str), return_inverse=True)
            cached = (codes.reshape(-1).astype(np.int64), kinds.tolist())
            object.__setattr__(self, "_kind_codes", cached)
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
    #: per subflow, the id of its path in the router's route store (None when not gathered from it):
    #: subflows of one stored path cross the same links, so ``classes`` ranks the distinct stored paths only
    _paths: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Array elements held (what the router's cache budget counts)."""
        return int(self.links.shape[0] + 4 * self.flow.shape[0])

    def classes(self) -> np.ndarray:
        """Per subflow, the rank of its path among the distinct paths, in lexicographic order of link ids
        (a shorter path before its extensions): subflows of equal class cross the same links."""
        if self._classes is None:
            starts, sub_len = self.ptr[:-1], np.diff(self.ptr)
            inv = None
            if self._paths is not None and self._paths.size:
                # one row per distinct stored path (its first subflow): the distinct link sequences are the
                # same, so are their ranks, at a fraction of the sorting
                # (a sort of this set's ids, not a table over the whole store, which grows with the router)
                _, rows, inv = np.unique(self._paths, return_index=True, return_inverse=True)
                inv = inv.reshape(-1)
                starts, sub_len = starts[rows], sub_len[rows]
            width = int(sub_len.max()) if sub_len.size else 0
            base = int(self.links.max()) + 2 if self.links.size else 1
            rank = np.zeros(sub_len.shape[0], dtype=np.int64)
            for col in range(width):
                # ranks of the first col+1 links (a missing link, -1, sorts first), refined one link at a time
                has = sub_len > col
                link = np.full(sub_len.shape[0], -1, dtype=np.int64)
                link[has] = self.links[starts[has] + col]
                rank = np.unique(rank * base + (link + 1), return_inverse=True)[1].reshape(-1).astype(np.int64)
            self._classes = rank if inv is None else rank[inv]
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
        with _paused_gc():
            nodes = G.nodes
            # a link table made from this graph lists its nodes in graph order: read the attributes in turn
            attrs = [a for _, a in nodes(data=True)] if list(nodes) == lt.nodes else [nodes[v] for v in lt.nodes]
            kinds = [a.get("kind") for a in attrs]
            self._forwarding = [k != "gpu" for k in kinds]
            self._domain = [a.get("domain") if k == "gpu" else None for a, k in zip(attrs, kinds)]
            del attrs
            is_nvl = {k: k.startswith("nvlink") for k in set(lt.kind)}
            nvlink = np.array([is_nvl[k] for k in lt.kind], dtype=bool)
            up = np.ones(len(lt), dtype=bool)
            up[np.asarray(list(down), dtype=np.int64)] = False
            fwd = np.array(self._forwarding, dtype=bool)
            self._fwd = fwd
            self._up = (up, up & nvlink)  # the links of the two adjacencies (all kinds, NVLink only)
            src, dst = lt.src, lt.dst
            # adjacency (sorted neighbour lists): all edge kinds, and NVLink-only; then the same restricted
            # to forwarding neighbours, what searches expand (GPUs never forward)
            self._succ_all = _neighbours(src, dst, up, n)
            self._pred_all = _Adjacency("predecessors over every link kind")
            self._fwd_of = {id(self._succ_all): _neighbours(src, dst, up & fwd[dst], n),
                            id(self._pred_all): _neighbours(dst, src, up & fwd[src], n)}
        # ECMP hashes node names, not indices: equivalent fabrics built in another order (or with NVLink
        # planes aggregated) make the same choices in their shared scale-out network
        with _paused_gc():
            self._name_hash = [int.from_bytes(hashlib.blake2b(str(node).encode(), digest_size=8).digest(), "little")
                               for node in lt.nodes]
        self._cache: dict[tuple[int, int, int], Route] = {}
        self._bandwidth = np.asarray(lt.bandwidth, dtype=float)
        self._latency = lt.latency.tolist()  # Python floats
        self._sets: OrderedDict[bytes, RouteSet] = OrderedDict()
        self.memo: dict = {}  # for the simulations sharing this router (the fabric's round records)
        self._middles: dict = {}  # (adjacency, X2, Y2) -> shared middle of routes (see _distances)
        self._bfs_sides: dict = {}  # (adjacency, X2 or Y2) -> _BfsSide (see _search_sets)
        self._mid_opts: dict = {}  # (adjacency, Y2) -> {(node, hops to d): next hops} (see _plan_far)
        self._far_first: dict = {}  # (s, middle) -> first hops (see _plan_far)
        self._sides: dict = {id(lists): {} for lists in self._fwd_of.values()}  # node -> (X1, set, X2, tuple)
        self._opts2: dict = {id(lists): {} for lists in self._fwd_of.values()}  # (node, Y1) -> next hops
        self._succ_sets: dict = {id(lists): {} for lists in self._fwd_of.values()}  # node -> neighbour set
        self._nvl_lists: tuple | None = None  # the NVLink-only adjacency, built on first use (see _nvl)
        self._pairs: dict = {}  # src * nodes + dst -> route id, or (plan, {key: route id}) when hashed
        self._store = _RouteStore()
        self._sets_size = 0
        self.adaptive = bool(topology.meta.get("adaptive_routing", False))

    @property
    def _succ_nvl(self) -> list:
        return self._nvl()[0]

    @property
    def _pred_nvl(self) -> list:
        return self._nvl()[1]

    def _nvl(self) -> tuple:
        """The NVLink-only adjacency (successors, predecessors), with its forwarding restrictions in
        ``_fwd_of``: built on first use, as only pairs of one NVLink domain that are not one or two hops
        apart (or ``successors(nvlink_only=True)``) need it; at 65,536 GPUs that saves ~100 MB of lists."""
        if self._nvl_lists is None:
            lt, n = self.links, len(self.links.nodes)
            src, dst, fwd = lt.src, lt.dst, self._fwd
            up_nvl = self._up[1]
            with _paused_gc():
                succ, pred = _neighbours(src, dst, up_nvl, n), _Adjacency("predecessors over NVLink")
                self._fwd_of[id(succ)] = succ_f = _neighbours(src, dst, up_nvl & fwd[dst], n)
                self._fwd_of[id(pred)] = pred_f = _neighbours(dst, src, up_nvl & fwd[src], n)
            for lists in (succ_f, pred_f):
                self._sides[id(lists)], self._opts2[id(lists)], self._succ_sets[id(lists)] = {}, {}, {}
            self._nvl_lists = (succ, pred)
        return self._nvl_lists

    def node(self, name: Hashable) -> int:
        try:
            return self.links.node_index[name]
        except KeyError:
            raise TopologyError(f"no node {name!r} in topology {self.topology.name!r}") from None

    # --- public ------------------------------------------------------------------------------------------
    def successors(self, node: int, *, nvlink_only: bool = False) -> list[int]:
        """Node indices one directed edge away from ``node`` (over NVLink edges only, if asked)."""
        return (self._succ_nvl if nvlink_only else self._succ_all)[node]

    def up_links(self, *, nvlink_only: bool = False) -> np.ndarray:
        """Per link id, whether routes may use it (it is up; and of an NVLink kind, if asked): the links
        ``successors`` follows. Read-only."""
        mask = self._up[1 if nvlink_only else 0].view()
        mask.flags.writeable = False
        return mask

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
        RouteSet, cached by the arrays' content: the same pattern is routed once per router.

        Bit for bit what ``route`` gives pair by pair (``_route_pairs``), but each (src, dst) pair's
        distances and first hops are found once for all its keys, the next hops towards a shared middle
        are found once per middle, and the pairs' routes are gathered from the router's flat route store
        with array operations instead of one small array per route."""
        src = np.ascontiguousarray(src, dtype=np.int64)
        dst = np.ascontiguousarray(dst, dtype=np.int64)
        key = np.ascontiguousarray(key, dtype=np.int64)
        h = hashlib.sha256()  # content digest (sha256 runs on the CPU's SHA extensions: ~3x blake2b here)
        for a in (src, dst, key):
            h.update(a)
        digest = h.digest()
        hit = self._sets.get(digest)
        if hit is not None:
            self._sets.move_to_end(digest)
            return hit
        n_nodes = len(self.links.nodes)
        if not src.size or (src == dst).any() or min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n_nodes:
            rs = self._route_pairs(src, dst, key)  # nothing to route, or the reference's error for a bad pair
        else:
            try:
                rs = self._route_batch(src, dst, key)
            except TopologyError:
                rs = self._route_pairs(src, dst, key)  # raises for the first unroutable pair, as route() does
        if rs.size <= self.set_budget:
            self._sets[digest] = rs
            self._sets_size += rs.size
            while self._sets_size > self.set_budget:
                self._sets_size -= self._sets.popitem(last=False)[1].size
        return rs

    def _route_pairs(self, src: np.ndarray, dst: np.ndarray, key: np.ndarray) -> RouteSet:
        """``route_many`` by ``route`` pair by pair (the reference the batched path must match)."""
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
        return RouteSet(flow, frac, lat, ptr, links)

    def _route_batch(self, src: np.ndarray, dst: np.ndarray, key: np.ndarray) -> RouteSet:
        """``route_many`` of valid pairs. Each distinct (src, dst) the router has not seen is routed once:
        pairs one or two hops apart (every pair inside an NVLink domain) all at once with array
        operations, the others planned (``_plan``) and walked for one key, and for every key only when
        that walk made an ECMP choice. The pairs' route ids then gather the RouteSet from the store."""
        with _paused_gc():
            n_nodes = len(self.links.nodes)
            code = src * n_nodes + dst
            ucode, first, inv = np.unique(code, return_index=True, return_inverse=True)
            inv = inv.reshape(-1)
            pairs, walk = self._pairs, self._walk
            found = list(map(pairs.get, ucode.tolist()))
            rid_u = np.fromiter((-2 if e is None else e if e.__class__ is int else -1 for e in found),
                                dtype=np.int64, count=len(found))
            new = np.flatnonzero(rid_u == -2)
            if new.size:
                rid_u[new] = self._route_near(ucode[new] // n_nodes, ucode[new] % n_nodes)
                far = new[rid_u[new] == -2]
                if far.size:  # three or more hops apart: with array operations where routing_far covers them
                    rid_f, hashed = route_far(self, ucode[far] // n_nodes, ucode[far] % n_nodes, key[first[far]])
                    done = rid_f >= 0
                    pairs.update(zip(ucode[far[done & ~hashed]].tolist(), rid_f[done & ~hashed].tolist()))
                    pairs.update((c, (divmod(c, n_nodes), {k: r})) for c, k, r in zip(
                        ucode[far[hashed]].tolist(), key[first[far[hashed]]].tolist(), rid_f[hashed].tolist()))
                    rid_u[far] = np.where(hashed, -1, rid_f)
                rest = new[rid_u[new] == -2]  # the pair-by-pair path
                for i, c, k in zip(rest.tolist(), ucode[rest].tolist(), key[first[rest]].tolist()):
                    plan = self._plan(*divmod(c, n_nodes))
                    rid, hashed = walk(plan, k)
                    e = pairs[c] = (plan, {k: rid}) if hashed else rid
                    rid_u[i] = -1 if hashed else rid
            rid = rid_u[inv]
            keyed = np.flatnonzero(rid < 0)
            if keyed.size:  # pairs whose route depends on the key: one walk per distinct (src, dst, key)
                kc, kk = code[keyed], key[keyed]
                order = np.lexsort((kk, kc))
                kc, kk = kc[order], kk[order]
                fresh = np.ones(order.shape[0], dtype=bool)
                fresh[1:] = (kc[1:] != kc[:-1]) | (kk[1:] != kk[:-1])
                starts = np.flatnonzero(fresh)
                rid_l = []
                todo = []  # new keys of pairs routed by routing_far (their plan is (s, d)): walked at once
                for c, k in zip(kc[starts].tolist(), kk[starts].tolist()):
                    plan, rids = pairs[c]
                    r = rids.get(k)
                    if r is None:
                        if len(plan) == 2:
                            todo.append((len(rid_l), c, k))
                            r = -1
                        else:
                            r = rids[k] = walk(plan, k)[0]
                    rid_l.append(r)
                rid_t = np.array(rid_l, dtype=np.int64)
                if todo:
                    j_t, c_t, k_t = (np.array(x, dtype=np.int64) for x in zip(*todo))
                    rid_f = route_far(self, c_t // n_nodes, c_t % n_nodes, k_t)[0]
                    for j, c, k, r in zip(j_t.tolist(), c_t.tolist(), k_t.tolist(), rid_f.tolist()):
                        if r < 0:  # not covered after all: the pair-by-pair walk
                            plan = pairs[c] = (self._plan(*divmod(c, n_nodes)), pairs[c][1])
                            r = walk(plan[0], k)[0]
                        rid_t[j] = pairs[c][1][k] = r
                out = np.empty(order.shape[0], dtype=np.int64)
                out[order] = rid_t[np.cumsum(fresh) - 1]
                rid[keyed] = out
            return self._store.gather(rid)

    def _domain_ids(self) -> np.ndarray:
        """Every node's NVLink domain as a small integer (-1: not a GPU, or no domain); built on first use."""
        dom = self.__dict__.get("_dom_id")
        if dom is None:
            ids_of: dict = {}
            dom = self._dom_id = np.array([-1 if x is None else ids_of.setdefault(x, len(ids_of))
                                           for x in self._domain], dtype=np.int64)
        return dom

    def _near_tables(self, which: int) -> tuple:
        """For adjacency ``which`` (0: every link kind, 1: NVLink only): its link codes (src * nodes + dst)
        sorted with their link ids, and its links to forwarding nodes sorted by (src, dst) with a pointer
        per source node (a CSR of ``_fwd_of``); built on first use."""
        tables = self.__dict__.setdefault("_near", {})
        t = tables.get(which)
        if t is None:
            lt, n = self.links, len(self.links.nodes)
            ids = np.flatnonzero(self._up[which])
            code = lt.src[ids] * n + lt.dst[ids]
            order = np.argsort(code, kind="stable")
            to_fwd = ids[self._fwd[lt.dst[ids]]]
            to_fwd = to_fwd[np.lexsort((lt.dst[to_fwd], lt.src[to_fwd]))]
            ptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(lt.src[to_fwd], minlength=n), out=ptr[1:])
            t = tables[which] = (code[order], ids[order], ptr, to_fwd)
        return t

    def _route_near(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Route the new pairs (s, d) that are one or two hops apart in the adjacency ``route`` uses for
        them, with array operations; their route ids, -2 for the other pairs.

        One hop: the link s -> d. Two hops (d not a neighbour of s, a forwarding node m with s -> m -> d):
        ``_search`` finds the hops {d: 0, Y1: 1, s: 2}, so the first hops are s's forwarding neighbours in
        Y1 in node order, sharing by bandwidth (rule 3), each going straight on to d: no ECMP choice, the
        route is the same for every key."""
        lt, n = self.links, len(self.links.nodes)
        out = np.full(s.shape[0], -2, dtype=np.int64)
        self._near_tables(0)
        dom = self._domain_ids()
        same = (dom[s] >= 0) & (dom[s] == dom[d])
        lat = lt.latency
        for which, sel in ((1, same), (0, ~same)):
            idx = np.flatnonzero(sel)
            if not idx.size:
                continue
            codes, links, ptr, to_fwd = self._near_tables(which)

            def link_of(q: np.ndarray) -> np.ndarray:
                pos = np.minimum(np.searchsorted(codes, q), max(codes.shape[0] - 1, 0))
                return np.where(codes[pos] == q, links[pos], -1) if codes.size else np.full(q.shape, -1)
            ps, pd = s[idx], d[idx]
            one = link_of(ps * n + pd)
            hit = one >= 0
            two = idx[~hit]
            ps, pd = s[two], d[two]
            count = ptr[ps + 1] - ptr[ps]
            cand = to_fwd[_ranges(ptr[ps], ptr[ps] + count)]
            owner = np.repeat(np.arange(two.shape[0]), count)
            second = link_of(lt.dst[cand] * n + pd[owner])
            keep = second >= 0
            cand, second, owner = cand[keep], second[keep], owner[keep]
            k = np.bincount(owner, minlength=two.shape[0])
            frac = bandwidth_shares(k, cand, self._bandwidth)
            done1, done2 = idx[hit], two[k > 0]
            counts = np.concatenate([np.ones(done1.shape[0], dtype=np.int64), k[k > 0]])
            path_frac = np.concatenate([np.ones(done1.shape[0]), frac])
            path_lat = np.concatenate([lat[one[hit]], lat[cand] + lat[second]])  # (0.0 + a) + b, as _array_sum
            path_len = np.concatenate([np.ones(done1.shape[0], dtype=np.int64), np.full(cand.shape[0], 2)])
            path_links = np.concatenate([one[hit], np.stack([cand, second], axis=1).ravel()])
            rids = self._store.add_block(counts, path_frac, path_lat, path_len, path_links)
            done = np.concatenate([done1, done2])
            out[done] = rids
            self._pairs.update(zip((s[done] * n + d[done]).tolist(), rids.tolist()))
        return out

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
        mid = self._middle((id(succ_f), x2, y2), succ_f, pred_f)
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

    def _middle(self, key: tuple, succ_f: list, pred_f: list) -> tuple | None:
        """(hops s -> d, hops to d, the same as {hops: frozenset of nodes}) shared by the pairs of middle
        ``key`` = (adjacency, X2, Y2), cached; None if X2 does not reach Y2."""
        mid = self._middles.get(key, _UNSEEN)
        if mid is _UNSEEN:
            if len(self._middles) >= 20_000:
                self._middles.clear()
                self._bfs_sides.clear()
                self._mid_opts.clear()
                self._far_first.clear()
            found = self._search_sets(key[1], key[2], succ_f, pred_f, plus=2)
            mid = self._middles[key] = None if found is None else (found[0] + 4, found[1], found[2])
        return mid

    def _search_sets(self, xs: tuple, ys: tuple, succ_f: list, pred_f: list, plus: int = 0) -> tuple | None:
        """(hops, distances to ``ys`` plus ``plus``, the same nodes grouped by distance as {distance:
        frozenset}) of shortest paths from any node of ``xs`` to any of ``ys`` over forwarding nodes.

        ``_meet_and_prune``'s bidirectional BFS, step for step, but over breadth-first levels kept per side
        (``_BfsSide``): every middle leaving one leaf switch grows the same forward levels, every middle
        ending at one the same backward levels, so each side is searched once. The forward side is pruned
        as there, by set tests: a node of forward level k on a shortest path (length L) has a successor
        L - k - 1 hops from ``ys`` (none has fewer), and those are the backward level L - k - 1 when the
        backward search went that deep, else the nodes the level below kept."""
        sides = self._bfs_sides
        fs = sides.get((id(succ_f), xs))
        if fs is None:
            fs = sides[(id(succ_f), xs)] = _BfsSide(xs, succ_f)
        bs = sides.get((id(pred_f), ys))
        if bs is None:
            bs = sides[(id(pred_f), ys)] = _BfsSide(ys, pred_f)
        kf = kb = 0
        f_front, b_front = fs.level(0), bs.level(0)
        met = not bs.level_set(0).isdisjoint(f_front)
        while not met:
            if not f_front or not b_front:
                return None
            if len(f_front) <= len(b_front):
                kf += 1
                f_front = fs.level(kf)
                met = any(not bs.level_set(j).isdisjoint(f_front) for j in range(kb + 1))
            else:
                kb += 1
                b_front = bs.level(kb)
                met = any(not fs.level_set(j).isdisjoint(b_front) for j in range(kf + 1))
        # the searches first met at these depths, so that is the length: a node common to both at a smaller
        # sum would have put its neighbour on the other side's last level into both searches a step earlier
        length = kf + kb
        h = {}  # the backward search's distances; depth kb is its deepest (non-empty) level
        for j in range(kb + 1):
            h.update(dict.fromkeys(bs.levels[j], j + plus))
        groups = {j + plus: bs.level_set(j) for j in range(kb + 1)}
        if length > kb:
            target = groups[kb + plus]
            for k in range(length - kb - 1, -1, -1):
                hops = length - k + plus
                kept = []
                for u in fs.levels[k]:
                    if u not in h and not target.isdisjoint(succ_f[u]):
                        h[u] = hops
                        kept.append(u)
                target = groups[hops] = frozenset(kept)
        return length, h, groups

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

    # --- the batched path of route_many: the same routes as _distances and _build ----------------------
    def _side(self, node: int, adj_f: list) -> tuple:
        """(X1, X1 as a set, X2, X1 as a tuple) of ``node`` in forwarding adjacency ``adj_f``: its forwarding
        neighbours, and theirs that are not neighbours (``_distances``), cached per node."""
        cache = self._sides[id(adj_f)]
        side = cache.get(node)
        if side is None:
            x1 = adj_f[node]
            x1_set = set(x1)
            x2 = tuple(sorted({v for u in x1 for v in adj_f[u]} - x1_set))
            side = cache[node] = (x1, x1_set, x2, tuple(x1))
        return side

    def _plan(self, s: int, d: int) -> tuple:
        """What ``route`` finds for (s, d) before it looks at the key: (s, d, first hops as (link, node,
        share), next hops of a node as (nodes, links), the hash state of (s, d)); the adjacency is chosen as
        in ``route``."""
        plan = None
        if self._domain[s] is not None and self._domain[s] == self._domain[d]:
            plan = self._plan_over(s, d, self._succ_nvl, self._pred_nvl)
        if plan is None:
            plan = self._plan_over(s, d, self._succ_all, self._pred_all)
        if plan is None:
            raise TopologyError(f"no route from {self.links.nodes[s]!r} to {self.links.nodes[d]!r}")
        return plan

    def _plan_over(self, s: int, d: int, succ: list, pred: list) -> tuple | None:
        """``_plan`` over one adjacency, None if d is unreachable there."""
        succ_f, pred_f = self._fwd_of[id(succ)], self._fwd_of[id(pred)]
        if d in succ[s]:
            get = {s: 1, d: 0}.get
        else:
            x1, x1_set, x2, _ = self._side(s, succ_f)
            y1, y1_set, y2, y1t = self._side(d, pred_f)
            if (x1 and y1 and x2 and y2 and not any(v in y1_set for v in x1) and not any(v in y1_set for v in x2)
                    and not any(v in x1_set for v in y2)):
                return self._plan_far(s, d, (id(succ_f), x2, y2), succ, succ_f, pred_f, y1_set, y1t)
            h = self._search(s, d, succ_f, pred_f)
            if h is None:
                return None
            get = h.get
        length = get(s)
        first = self._first_hops(s, d, length, get, succ)
        edge = self.links.edge_index
        memo = {}

        def step(u: int, r: int) -> tuple:
            """Next hops of u (r hops from d) towards d by the pair's own distances, as (nodes, links)."""
            o = memo.get(u)
            if o is None:
                ws = (d,) if r == 1 else tuple(w for w in succ_f[u] if get(w) == r - 1)
                o = memo[u] = (ws, tuple(edge[(u, w)] for w in ws))
            return o
        nh = self._name_hash
        return s, d, length, first, step, _mix(_mix(_GOLDEN, nh[s]), nh[d])

    def _first_hops(self, s: int, d: int, length: int, get, succ: list) -> list:
        """(link, node, share) of every first hop of a shortest s -> d path, shares in proportion to the
        links' bandwidth (rule 3)."""
        fwd, edge = self._forwarding, self.links.edge_index
        first = [v for v in succ[s] if get(v) == length - 1 and (fwd[v] or v == d)]
        if len(first) == 1:
            shares = [1.0]  # w / w
        else:
            weights = self._bandwidth[[edge[(s, v)] for v in first]]
            shares = (weights / weights.sum()).tolist()
        return [(edge[(s, v)], v, w) for v, w in zip(first, shares)]

    def _plan_far(self, s: int, d: int, mkey: tuple, succ: list, succ_f: list, pred_f: list, y1_set: set,
                  y1t: tuple) -> tuple | None:
        """``_plan_over`` of a pair at least four hops apart, through the shared middle ``mkey`` (X2 -> Y2).

        The distances ``_via_middle`` gives are the middle's, overridden by Y1 (1 hop), d (0) and s (the
        length), plus the first hops the middle lacks. Neither Y1 nor d is a neighbour of X1 (else the
        pair is not planned through a middle), so the first hops depend on s and the middle alone and are
        found once per (s, middle). Next hops: a node one hop from d goes to d; a node two hops from d to
        its neighbours in Y1 (nothing else is one hop from d); a node farther, r hops from d, to its
        neighbours r - 1 hops from d, which are r - 3 hops from Y2 and were found by any middle ending in
        Y2 that holds the node (the node lies on shortest paths to Y2), once per (Y2, node). Only s, d and
        Y1 have distances of their own that differ from the middle's, and none of them can be such a
        neighbour: s is farther than r - 1, d and Y1 are nearer than 2 hops, so a node next to them is
        nearer than 3."""
        mid = self._middle(mkey, succ_f, pred_f)
        if mid is None:
            return None
        length, mh = mid[0], mid[1]
        fkey = (s, mkey)
        first = self._far_first.get(fkey)
        if first is None:
            x1 = succ_f[s]
            extra = {}
            for u in x1:
                if u not in mh:
                    best = min((r for r in map(mh.get, succ_f[u]) if r is not None), default=None)
                    if best is not None and best + 2 == length:
                        extra[u] = best + 1
            best = min((r for r in (mh.get(v, extra.get(v)) for v in x1) if r is not None), default=None)
            if best is None or best + 1 != length:
                first = ()
            else:
                first = self._first_hops(s, d, length, lambda v: mh.get(v, extra.get(v)), succ)
            if len(self._far_first) >= 200_000:
                self._far_first.clear()
            self._far_first[fkey] = first
        if first == ():
            return None
        edge = self.links.edge_index
        opts2 = self._opts2[id(succ_f)]
        succ_sets = self._succ_sets[id(succ_f)]
        mopts = self._mid_opts.get(mkey[::2])
        if mopts is None:
            mopts = self._mid_opts[mkey[::2]] = {}

        def step(u: int, r: int) -> tuple:
            """Next hops of u (r hops from d) towards d, as (nodes, links)."""
            if r == 1:
                return (d,), (edge[(u, d)],)
            if r == 2:
                o = opts2.get((u, y1t))
                if o is None:
                    succ_set = succ_sets.get(u)
                    if succ_set is None:
                        succ_set = succ_sets[u] = frozenset(succ_f[u])
                    ws = tuple(sorted(w for w in y1t if w in succ_set))  # succ_f[u]'s order: sorted
                    o = opts2[(u, y1t)] = (ws, tuple(edge[(u, w)] for w in ws))
                return o
            o = mopts.get((u, r))
            if o is None:
                ws = tuple(w for w in succ_f[u] if mh.get(w) == r - 1)
                o = mopts[(u, r)] = (ws, tuple(edge[(u, w)] for w in ws))
            return o
        nh = self._name_hash
        return s, d, length, first, step, _mix(_mix(_GOLDEN, nh[s]), nh[d])

    def _walk(self, plan: tuple, key: int) -> tuple[int, bool]:
        """Store the route of ``plan`` for flow ``key`` (``_build``'s walk); (route id, whether it made an
        ECMP choice, i.e. depends on the key)."""
        s, d, length, first, step, hs = plan
        hk = _mix(hs, key)
        nh = self._name_hash
        adaptive = self.adaptive
        hashed = False
        paths, shares = [], []
        for link0, v, share0 in first:
            stack = [([link0], v, share0, length - 1)]
            while stack:
                hops, u, share, r = stack.pop()
                while u != d:
                    ws, ls = step(u, r)
                    n = len(ws)
                    if n == 1:
                        i = 0
                    elif adaptive:  # spread evenly over every next hop (rule 4)
                        share /= n
                        stack += [(hops + [ls[j]], ws[j], share, r - 1) for j in range(1, n)]
                        i = 0
                    else:
                        hashed = True
                        i = _mix(hk, nh[u]) % n
                    hops.append(ls[i])
                    u = ws[i]
                    r -= 1
                paths.append(hops)
                shares.append(share)
        lat = self._latency
        return self._store.add(paths, shares, [_array_sum([lat[e] for e in p]) for p in paths]), hashed

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


_UNSEEN = object()


class _Adjacency:
    """Stands for a predecessor adjacency, which the searches read only through its forwarding restriction
    (``Router._fwd_of``: no search steps back through a GPU), so its own lists are never built."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


class _BfsSide:
    """One side of ``Router._search_sets``: the breadth-first levels from a set of nodes over one forwarding
    adjacency (``levels[k]``: the nodes first found at depth k, in ``_next_level``'s order; ``dist``: every
    node found, with its depth), grown on demand, and each level as a frozenset (``level_set``)."""

    __slots__ = ("adj", "levels", "dist", "_sets")

    def __init__(self, start: tuple, adj: list) -> None:
        self.adj = adj
        self.levels = [list(start)]
        self.dist = dict.fromkeys(start, 0)
        self._sets: list = []  # frozenset of every level

    def level(self, k: int) -> list:
        levels = self.levels
        while len(levels) <= k:
            front = levels[-1]
            levels.append(Router._next_level(front, self.adj, self.dist) if front else [])
        return levels[k]

    def level_set(self, k: int) -> frozenset:
        sets = self._sets
        while len(sets) <= k:
            sets.append(frozenset(self.level(len(sets))))
        return sets[k]


def _neighbours(a: np.ndarray, b: np.ndarray, mask: np.ndarray, n: int) -> list[list[int]]:
    """Per node ``u`` of ``n``, the sorted ``b[i]`` of the links ``i`` in ``mask`` with ``a[i] == u``."""
    a, b = a[mask], b[mask]
    order = np.lexsort((b, a))
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(a, minlength=n), out=ptr[1:])
    flat, ptr = b[order].tolist(), ptr.tolist()
    return [flat[i:j] for i, j in zip(ptr[:-1], ptr[1:])]


class _RouteStore:
    """Every route ``route_many`` made, flat: route ``r`` is paths ``rptr[r]:rptr[r+1]``; path ``j`` carries
    ``frac[j]``, pays ``lat[j]`` and crosses ``links[lptr[j]:lptr[j+1]]``. New routes wait in lists until
    the next ``gather`` appends them to the arrays (amortised doubling)."""

    def __init__(self) -> None:
        self.n_routes = 0
        self._pending: tuple[list, list, list, list] = ([], [], [], [])  # paths per route, frac, lat, links
        self._len: list = []  # links per pending path
        self._arrays = {"rptr": np.zeros(1, dtype=np.int64), "frac": np.zeros(0), "lat": np.zeros(0),
                        "lptr": np.zeros(1, dtype=np.int64), "links": np.zeros(0, dtype=np.int64)}
        self._sizes = {name: a.shape[0] for name, a in self._arrays.items()}

    def add(self, paths: list, shares: list, latencies: list) -> int:
        counts, frac, lat, links = self._pending
        counts.append(len(paths))
        frac += shares
        lat += latencies
        for p in paths:
            links += p
            self._len.append(len(p))
        self.n_routes += 1
        return self.n_routes - 1

    def add_block(self, counts: np.ndarray, frac: np.ndarray, lat: np.ndarray, lengths: np.ndarray,
                  links: np.ndarray) -> np.ndarray:
        """Add routes given as arrays (paths per route; per path its share, latency and link count; the
        links); their ids."""
        self._flush()
        for name, ends in (("rptr", counts), ("lptr", lengths)):
            self._append(name, self._arrays[name][self._sizes[name] - 1] + np.cumsum(ends))
        self._append("frac", frac)
        self._append("lat", lat)
        self._append("links", links)
        first = self.n_routes
        self.n_routes += counts.shape[0]
        return np.arange(first, self.n_routes, dtype=np.int64)

    def _append(self, name: str, values: np.ndarray) -> None:
        a, n = self._arrays[name], self._sizes[name]
        if n + values.shape[0] > a.shape[0]:
            grown = np.empty(max(2 * a.shape[0], n + values.shape[0]), dtype=a.dtype)
            grown[:n] = a[:n]
            a = self._arrays[name] = grown
        a[n:n + values.shape[0]] = values
        self._sizes[name] = n + values.shape[0]

    def _flush(self) -> None:
        counts, frac, lat, links = self._pending
        if not counts:
            return
        for name, ends in (("rptr", counts), ("lptr", self._len)):
            last = self._arrays[name][self._sizes[name] - 1]
            self._append(name, last + np.cumsum(np.asarray(ends, dtype=np.int64)))
        self._append("frac", np.asarray(frac, dtype=float))
        self._append("lat", np.asarray(lat, dtype=float))
        self._append("links", np.asarray(links, dtype=np.int64))
        self._pending = ([], [], [], [])
        self._len = []

    def gather(self, rid: np.ndarray) -> RouteSet:
        """The RouteSet of routes ``rid`` (one per pair, repeats allowed)."""
        self._flush()
        a = self._arrays
        rptr, lptr = a["rptr"], a["lptr"]
        count = rptr[rid + 1] - rptr[rid]
        flow = np.repeat(np.arange(rid.shape[0]), count)
        sub = _ranges(rptr[rid], rptr[rid] + count)
        sub_len = lptr[sub + 1] - lptr[sub]
        ptr = np.zeros(sub.shape[0] + 1, dtype=np.int64)
        np.cumsum(sub_len, out=ptr[1:])
        links = a["links"][_ranges(lptr[sub], lptr[sub + 1])]
        return RouteSet(flow, a["frac"][sub], a["lat"][sub], ptr, links, _paths=sub)


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
