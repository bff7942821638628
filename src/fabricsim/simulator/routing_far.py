"""Far pairs routed with array operations: ``Router.route_many``'s path for pairs three or more hops apart.

A pair of GPUs in different NVLink domains (every pair crossing the fat tree) is routed by ``Router._plan``
and ``Router._walk`` one pair at a time in Python; here whole arrays of such pairs are routed at once, bit
for bit the same (``tests/test_routing_batch.py`` compares every batch with ``Router.route`` pair by pair):

- the conditions under which ``_plan_over`` routes a pair through a shared middle (X1, X2 of the source,
  Y1, Y2 of the destination non-empty, X1 and X2 disjoint from Y1, Y2 disjoint from X1) are tested per pair
  by looking the set members up among the adjacency's link codes (``v`` is in Y1(d) exactly when the link
  ``v -> d`` is up and ``v`` forwards); the sides X2 and Y2 (``Router._side``) are found per node with
  array operations and interned;
- the middles (X2 -> Y2) are searched once per distinct (X2, Y2) by ``Router._middle`` (shared with the
  pair-by-pair path); the first hops' distances are looked up in them (a few per pair);
- the first hops (forwarding neighbours of the source one hop nearer, sharing by bandwidth, rule 3) and the
  hops after them are taken for every path at once, hop by hop: a node one hop from d goes to d, a node
  two hops from d to those of d's forwarding predecessors (Y1) it links to, a node farther to its
  forwarding successors one hop nearer d in the middle (found by one set intersection per distinct (Y2,
  node, hops) state and cached: the same for every middle ending in Y2, see ``Router._plan_far``); where
  there are several, the ECMP hash (splitmix64 steps of the source, destination, key and node name
  digests) is computed for every path with numpy's wrapping uint64 arithmetic.

Pairs this path does not cover (adaptive routing, pairs inside one domain, unreachable or irregular pairs)
are left to the pair-by-pair path, which decides and words every error.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from fabricsim.simulator.fluid import _ranges

__all__ = ["route_far", "walk_far"]

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_C1, _C2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_S30, _S27, _S31 = _U64(30), _U64(27), _U64(31)


def mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``routing._mix`` on uint64 arrays (arithmetic modulo 2**64, as its masks do)."""
    with np.errstate(over="ignore"):
        h = h + v + _GOLDEN
        z = (h ^ (h >> _S30)) * _C1
        z = (z ^ (z >> _S27)) * _C2
    return z ^ (z >> _S31)


def array_sums(values: np.ndarray) -> np.ndarray:
    """``routing._array_sum`` of every row of ``values`` (rows of one length), to the last bit."""
    rows, n = values.shape
    if n < 8:
        total = np.zeros(rows)
        for j in range(n):
            total = total + values[:, j]
        return total
    r = values[:, :8].copy()
    i = 8
    while i < n - n % 8:
        r += values[:, i:i + 8]
        i += 8
    total = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    for j in range(i, n):
        total = total + values[:, j]
    return total


class _Tables:
    """The router's adjacency (every link kind) as sorted arrays, built once per router."""

    def __init__(self, router) -> None:
        lt, n = router.links, len(router.links.nodes)
        self.n = n
        codes, links, ptr, to_fwd = router._near_tables(0)
        self.up_codes, self.up_links = codes, links  # up links by code src * n + dst
        self.fwd_ptr, self.to_fwd = ptr, to_fwd  # up links to forwarding nodes, CSR by source
        all_codes = lt.src * n + lt.dst
        order = np.argsort(all_codes, kind="stable")
        self.all_codes, self.all_links = all_codes[order], order.astype(np.int64)  # edge_index as arrays
        self.fwd = router._fwd
        self.dst = lt.dst
        self.nh = np.array(router._name_hash, dtype=np.uint64)
        self.bandwidth = router._bandwidth
        self.latency = lt.latency
        # forwarding neighbours as CSR arrays of nodes: successors (X1) and predecessors (Y1), in node order
        up = np.flatnonzero(router._up[0])
        into = up[self.fwd[lt.src[up]]]
        into = into[np.lexsort((lt.src[into], lt.dst[into]))]
        pred_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(lt.dst[into], minlength=n), out=pred_ptr[1:])
        self.x2 = _Sides(ptr, lt.dst[to_fwd])
        self.y2 = _Sides(pred_ptr, lt.src[into])
        self.y1 = self.y2._neighbours

    @staticmethod
    def lookup(codes: np.ndarray, links: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Link id of every code in ``q``, -1 where there is none."""
        if not codes.size:
            return np.full(q.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(codes, q), codes.shape[0] - 1)
        return np.where(codes[pos] == q, links[pos], -1)

    def up(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.lookup(self.up_codes, self.up_links, a * self.n + b)

    def edge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.lookup(self.all_codes, self.all_links, a * self.n + b)

    def x1(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner index, link) of every up link from ``s[i]`` to a forwarding node, in node order."""
        count = self.fwd_ptr[s + 1] - self.fwd_ptr[s]
        return np.repeat(np.arange(s.shape[0]), count), self.to_fwd[_ranges(self.fwd_ptr[s], self.fwd_ptr[s] + count)]


class _Sides:
    """X2 (or Y2) of nodes as interned ids with their members flat: the forwarding neighbours of the node's
    forwarding neighbours that are not among those (``Router._side``'s X2, sorted), per node once."""

    def __init__(self, ptr: np.ndarray, nbr: np.ndarray) -> None:
        self.adj_ptr, self.adj = ptr, nbr  # forwarding neighbours of every node (CSR, sorted)
        self.id_of = np.full(ptr.shape[0] - 1, -1, dtype=np.int64)
        self.index: dict = {}
        self.sets: list = []
        self.ptr = np.zeros(1, dtype=np.int64)
        self.flat = np.zeros(0, dtype=np.int64)
        self.sizes = np.zeros(0, dtype=np.int64)

    def _expand(self, nodes: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.adj_ptr[nodes], self.adj_ptr[nodes + 1]
        return np.repeat(owner, b - a), self.adj[_ranges(a, b)]

    def _neighbours(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner index, node) of the forwarding neighbours of every node of ``nodes``, in node order."""
        return self._expand(nodes, np.arange(nodes.shape[0]))

    def ids(self, nodes: np.ndarray) -> np.ndarray:
        new = np.unique(nodes[self.id_of[nodes] < 0])
        if new.size:
            n = self.id_of.shape[0]
            own1, x1 = self._expand(new, np.arange(new.shape[0]))
            own2, x2 = self._expand(x1, own1)
            code = np.unique(own2 * n + x2)
            code = code[~np.isin(code, own1 * n + x1)]
            owner, member = code // n, code % n
            bounds = np.searchsorted(owner, np.arange(new.shape[0] + 1)).tolist()
            member = member.tolist()
            index, sets, grown = self.index, self.sets, []
            ids = np.empty(new.shape[0], dtype=np.int64)
            for j in range(new.shape[0]):
                x = tuple(member[bounds[j]:bounds[j + 1]])
                i = index.get(x)
                if i is None:
                    i = index[x] = len(sets)
                    sets.append(x)
                    grown.append(x)
                ids[j] = i
            self.id_of[new] = ids
            if grown:
                sizes = np.array([len(x) for x in grown], dtype=np.int64)
                self.sizes = np.concatenate([self.sizes, sizes])
                self.ptr = np.concatenate([self.ptr, self.ptr[-1] + np.cumsum(sizes)])
                self.flat = np.concatenate([self.flat, np.fromiter((v for x in grown for v in x), dtype=np.int64,
                                                                   count=int(sizes.sum()))])
        return self.id_of[nodes]

    def members(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner index, member) of the sets ``ids``."""
        count = self.sizes[ids]
        return np.repeat(np.arange(ids.shape[0]), count), self.flat[_ranges(self.ptr[ids], self.ptr[ids] + count)]


def _tables(router) -> _Tables:
    t = router.__dict__.get("_far_tables")
    if t is None:
        t = router._far_tables = _Tables(router)
    return t


def bandwidth_shares(k: np.ndarray, links: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """Each of ``links`` (in groups of ``k[i]`` consecutive first hops of one pair) as its share of its
    group's bandwidth, ``w / w.sum()`` as ``Router._first_hops`` computes it (rule 3; one hop: 1.0)."""
    share = np.ones(links.shape[0])
    starts = np.cumsum(k) - k
    for kk in np.unique(k[k > 1]).tolist():
        pos = _ranges(starts[k == kk], starts[k == kk] + kk).reshape(-1, kk)
        w = bandwidth[links[pos]]
        share[pos] = w / w.sum(axis=1, keepdims=True)
    return share


_NONE: frozenset = frozenset()


def _any(owner: np.ndarray, hit: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(owner[hit], minlength=n) > 0


def _plans(router, s: np.ndarray, d: np.ndarray):
    """The far plans of pairs (s, d) in different domains: (pairs covered, their lengths, Y2 ids, middle
    distances as a list, per covered pair its middle's index, first hops as (ptr, link, node, share)).
    Pairs not covered are left out (the pair-by-pair path routes them)."""
    t = _tables(router)
    n_pairs = s.shape[0]
    ok = np.ones(n_pairs, dtype=bool)
    own_x1, x1_link = t.x1(s)
    x1 = t.dst[x1_link]
    # Y1(d): forwarding nodes with an up link to d. Non-empty, and disjoint from X1 and X2
    pred_f = router._fwd_of[id(router._pred_all)]
    y1_n = np.fromiter((len(pred_f[v]) for v in d.tolist()), dtype=np.int64, count=n_pairs)
    ok &= (np.bincount(own_x1, minlength=n_pairs) > 0) & (y1_n > 0)
    ok &= ~_any(own_x1, t.up(x1, d[own_x1]) >= 0, n_pairs)
    x2_id, y2_id = t.x2.ids(s), t.y2.ids(d)
    ok &= (t.x2.sizes[x2_id] > 0) & (t.y2.sizes[y2_id] > 0)
    own, mem = t.x2.members(x2_id)
    ok &= ~_any(own, t.up(mem, d[own]) >= 0, n_pairs)
    own, mem = t.y2.members(y2_id)
    ok &= ~_any(own, (t.up(s[own], mem) >= 0) & t.fwd[mem], n_pairs)
    # the middles, once per distinct (X2, Y2)
    succ_f = router._fwd_of[id(router._succ_all)]
    pred_f = router._fwd_of[id(router._pred_all)]
    mcode = x2_id * (len(t.y2.sets) + 1) + y2_id
    ucode, inv = np.unique(np.where(ok, mcode, -1), return_inverse=True)
    inv = inv.reshape(-1)
    mids, length_u = [], np.zeros(ucode.shape[0], dtype=np.int64)
    for j, c in enumerate(ucode.tolist()):
        mid = None
        if c >= 0:
            xi, yi = divmod(c, len(t.y2.sets) + 1)
            mid = router._middle((id(succ_f), t.x2.sets[xi], t.y2.sets[yi]), succ_f, pred_f)
        mids.append(mid)
        length_u[j] = -1 if mid is None else mid[0]
    length = length_u[inv]
    ok &= length > 0
    # hops to d of the first-hop candidates (X1): the middle's, else one more than their best successor's
    # in the middle when that makes them exactly one hop short of the length ("extra" in _plan_far)
    m_of = inv  # per pair, its middle's index in ``mids``
    gets = [None if mid is None else mid[1].get for mid in mids]  # a middle's hops to d, by node

    def hops(nodes: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Hops to d of ``nodes`` in the middle of pair ``owner`` (-1 where it has none): a few per pair."""
        return np.array([gets[m](v, -1) for m, v in zip(m_of[owner].tolist(), nodes.tolist())], dtype=np.int64)

    sel = ok[own_x1]
    own_x1, x1_link, x1 = own_x1[sel], x1_link[sel], x1[sel]
    h = hops(x1, own_x1)
    miss = np.flatnonzero(h < 0)
    if miss.size:
        own2, link2 = t.x1(x1[miss])
        h2 = hops(t.dst[link2], own_x1[miss][own2])
        best = np.full(miss.shape[0], np.iinfo(np.int64).max)
        np.minimum.at(best, own2[h2 >= 0], h2[h2 >= 0])
        found = (best < np.iinfo(np.int64).max) & (best + 2 == length[own_x1[miss]])
        h[miss[found]] = best[found] + 1
    # the pair's best first hop must be one hop short of the length, else it is not routed this way
    big = np.iinfo(np.int64).max
    best = np.full(n_pairs, big)
    np.minimum.at(best, own_x1[h >= 0], h[h >= 0])
    ok &= (best < big) & (best + 1 == length)
    first = ok[own_x1] & (h == length[own_x1] - 1)
    own_f, link_f = own_x1[first], x1_link[first]
    k = np.bincount(own_f, minlength=n_pairs)
    share = bandwidth_shares(k, link_f, t.bandwidth)
    return ok, length, y2_id, mids, m_of, k, link_f, t.dst[link_f], share


def route_far(router, s: np.ndarray, d: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Route the pairs (s[i], d[i]) for flow ``key[i]``: (route id, -2 where not covered, e.g. for pairs
    of one domain; whether the route made an ECMP choice)."""
    rid = np.full(s.shape[0], -2, dtype=np.int64)
    hashed = np.zeros(s.shape[0], dtype=bool)
    if router.adaptive or not s.size:
        return rid, hashed
    ok, length, y2_id, mids, m_of, k, link_f, node_f, share = _plans(router, s, d)
    dom = router._domain_ids()
    ok &= (dom[s] < 0) | (dom[s] != dom[d])  # inside one domain ``route`` takes NVLink links alone: not here
    idx = np.flatnonzero(ok)
    if not idx.size:
        return rid, hashed
    walked = _walk(router, s, d, key, idx, length, y2_id, mids, m_of, k, link_f, node_f, share)
    if walked is None:
        return rid, hashed
    rid[idx], hashed[idx] = walked
    return rid, hashed


def _walk(router, s, d, key, idx, length, y2_id, mids, m_of, k, link_f, node_f, share):
    """Walk every path of pairs ``idx`` (one per first hop) to its destination at once and store the routes;
    (route ids, hashed) of those pairs, or None if a hop found no next hop (left to the pair-by-pair path)."""
    t = _tables(router)
    n_pairs = s.shape[0]
    # walkers: one per first hop of a covered pair, in pair order then first-hop order
    starts = np.cumsum(k) - k
    wsel = _ranges(starts[idx], starts[idx] + k[idx])
    pair = np.repeat(idx, k[idx])
    u, r = node_f[wsel], length[pair] - 1
    cols = [link_f[wsel]]
    nh = t.nh
    hk = mix(mix(mix(np.full(n_pairs, _GOLDEN), nh[s]), nh[d]), key.view(np.uint64))
    choice = np.zeros(n_pairs, dtype=bool)
    succ_f = router._fwd_of[id(router._succ_all)]
    y2_of, m_of_l = y2_id.tolist(), m_of.tolist()
    levels = [None if mid is None else mid[2] for mid in mids]  # the middle's nodes by hops to d
    succ_sets = router._succ_sets[id(succ_f)]
    width = int(length.max(initial=0))
    while True:
        act = np.flatnonzero(r > 0)
        if not act.size:
            break
        col = np.full(u.shape[0], -1, dtype=np.int64)
        cnt = np.zeros(act.shape[0], dtype=np.int64)
        pieces = []  # (positions in act, per position its option nodes and links, flat in position order)
        ua, ra, pa = u[act], r[act], pair[act]
        one = np.flatnonzero(ra == 1)
        if one.size:
            lk = t.edge(ua[one], d[pa[one]])
            if (lk < 0).any():
                return None
            cnt[one] = 1
            pieces.append((one, np.ones(one.size, dtype=np.int64), d[pa[one]], lk))
        two = np.flatnonzero(ra == 2)
        if two.size:  # to Y1(d) (d's forwarding predecessors, few), where u links to them
            own, w = t.y1(d[pa[two]])
            lk = t.up(ua[two][own], w)
            keep = lk >= 0
            c = np.bincount(own[keep], minlength=two.size)
            cnt[two] = c
            pieces.append((two, c, w[keep], lk[keep]))
        far = np.flatnonzero(ra >= 3)
        if far.size:  # a node with one forwarding successor: that is its next hop (a walker is on a shortest
            # path, r hops from d, and its next hop, at least two hops from d, forwards), a NIC's switch
            start = t.fwd_ptr[ua[far]]
            single = t.fwd_ptr[ua[far] + 1] - start == 1
            if single.any():
                lk = t.to_fwd[start[single]]
                cnt[far[single]] = 1
                pieces.append((far[single], np.ones(lk.size, dtype=np.int64), t.dst[lk], lk))
                far = far[~single]
        if far.size:
            code = (y2_id[pa[far]] * (width + 1) + ra[far]) * t.n + ua[far]
            ucode, first, inv = np.unique(code, return_index=True, return_inverse=True)
            inv = inv.reshape(-1)
            opts = []
            cache = router.__dict__.setdefault("_far_opts", {})  # (Y2 id, node, hops to d) -> next hops
            if len(cache) >= 500_000:  # ~100 MB
                cache.clear()
            for node, rr, p in zip(ua[far[first]].tolist(), ra[far[first]].tolist(), pa[far[first]].tolist()):
                ck = (y2_of[p], node, rr)  # Y2 ids are the router's (_Tables.y2 interns them)
                o = cache.get(ck)
                if o is None:  # u's forwarding successors one hop nearer d, in node order: a set intersection
                    level = levels[m_of_l[p]]
                    succ = succ_sets.get(node)
                    if succ is None:
                        succ = succ_sets[node] = frozenset(succ_f[node])
                    o = cache[ck] = tuple(sorted(succ & level.get(rr - 1, _NONE)))
                opts.append(o)
            c_u = np.fromiter(map(len, opts), dtype=np.int64, count=len(opts))
            ptr_u = np.cumsum(c_u) - c_u
            nodes_u = np.fromiter(chain.from_iterable(opts), dtype=np.int64, count=int(c_u.sum()))
            links_u = t.up(np.repeat(ua[far[first]], c_u), nodes_u)  # the up link u -> w (edge_index's)
            c = c_u[inv]
            cnt[far] = c
            sub = _ranges(ptr_u[inv], ptr_u[inv] + c)
            pieces.append((far, c, nodes_u[sub], links_u[sub]))
        if (cnt == 0).any():
            return None
        # options flat in act order: place every piece's options at its positions' offsets
        ptr = np.cumsum(cnt) - cnt
        opt_nodes = np.empty(int(cnt.sum()), dtype=np.int64)
        opt_links = np.empty_like(opt_nodes)
        for pos, c, nodes, links in pieces:
            dest = _ranges(ptr[pos], ptr[pos] + c)
            opt_nodes[dest], opt_links[dest] = nodes, links
        pick = np.zeros(act.shape[0], dtype=np.int64)
        many = np.flatnonzero(cnt > 1)
        if many.size:
            h = mix(hk[pa[many]], nh[ua[many]])
            pick[many] = (h % cnt[many].astype(np.uint64)).astype(np.int64)
            choice[pa[many]] = True
        sel = ptr + pick
        col[act] = opt_links[sel]
        u[act] = opt_nodes[sel]
        r[act] -= 1
        cols.append(col)
    hops = np.stack(cols, axis=1)
    n_w = pair.shape[0]
    lengths = length[pair]
    lat = np.empty(n_w)
    for L in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == L)
        lat[rows] = array_sums(t.latency[hops[rows, :L]])
    flat = hops[np.arange(hops.shape[1])[None, :] < lengths[:, None]]
    rids = router._store.add_block(k[idx], share[wsel], lat, lengths, flat)
    return rids, choice[idx]
