"""The fluid (flow-level) state of a fabric: which flows are in flight, how fast each drains.

No SimPy here: ``FluidNetwork`` is advanced from event to event by its caller (``fabric.Fabric``), which
keeps simulated time. A flow first spends its path latency in flight holding no bandwidth, then drains
its bytes at its max-min fair rate; rates are re-solved whenever a flow starts draining or finishes
(progressive filling, ``sharing.progressive_filling``).

Incremental events. Max-min fair sharing decomposes over connected components: flows that share no
link, even through other flows, do not affect each other's rates. An event (flows finishing or starting
to drain) therefore re-solves only the part of the fabric it touched: a set S of flows, at first those
on the links of the flows that started and those whose bottleneck was a link of a flow that finished,
in the capacity the other flows leave; then every link S touches is checked for the max-min condition,
and flows that fail it join S (see ``_resolve``). A flow that merely shared a link with a finished flow
keeps its rate: its own bottleneck kept its load, so it is still a bottleneck (an NVLS tree's IB flows
finish beside thousands held back elsewhere: 0.08% of the flows such events used to re-solve changed
rate).
When no other flow crosses S's links (S is closed) the check is skipped: S's solve is exact. Flows
elsewhere keep their rates and their projected finish times, which are stored as absolute times, so
nothing outside S is visited beyond one vectorised minimum per event. S is found through a
link -> entries index (entries sorted by link, plus a short unsorted tail of recent additions that is
merged in once it grows past an eighth of the index). ``incremental=False`` re-solves every draining
flow at every event (the reference the tests compare against).

Events are many and mostly small (a pipelined tree on 8,192 GPUs has ~10,000, re-solving ~8 flows at
the median), so their cost is the count of numpy calls, not their size: distinct values are taken by
writing positions into scratch arrays (no sort), links are numbered locally through a scratch map (no
search), calls take their cheapest forms (``ndarray.nonzero``, ``count_nonzero``, ``add.accumulate``),
and the next event time is kept between events. When S grows, only the links and entries its newcomers
add are looked up. Seed links that no draining flow crosses any more are set idle without joining the
solve (a round's NVLink hops finishing together leave thousands). An event whose starting flows are at
least half the draining ones (``_ALL_AT_ONCE``: a pipelined round whose flows all start together) solves
every draining flow at once, skipping the look-ups. A pure-Python solve of small sets was tried and
measured slower than these ~100 numpy calls (numpy 2.4, two-core machine).

Batching completions. ``finish_rtol`` (default 0: exact) lets one event also finish the flows due within
``finish_rtol`` times their own draining time so far: each such flow is reported before its projected
finish by at most that fraction of its draining time and leaves at most that fraction of its bytes
undelivered. The projection can still grow (max-min is not monotone: a flow leaving can slow another
down) and a flow freed early lets its neighbours finish early, so errors add along a chain: a finish
time moves by about ``finish_rtol`` of the run's length per early completion before it (the bound
``tests/test_fluid.py`` checks). Independently of it, flows due within 1e-9 of their time since the last rate
change finish together: float noise in a symmetric pattern must not turn one completion into thousands.
"""

from __future__ import annotations

import numpy as np

from fabricsim.simulator.sharing import progressive_filling

__all__ = ["FluidNetwork"]

# Flows whose finish times differ by less than this fraction of their time since the last rate change
# finish together (float noise, not a modelling choice).
_FINISH_RTOL = 1e-9
# Tolerance of the incremental solver's optimality check ("this link is full", "no flow is faster").
_CHECK_RTOL = 1e-9
_EMPTY_I = np.zeros(0, dtype=np.int64)
_FLOAT_MAX = np.finfo(float).max
# An event whose starting flows are at least this share of the draining ones re-solves every draining
# flow (a round whose flows all start together); ``inf``: never (the tests compare both ways).
_ALL_AT_ONCE = 0.5
# (attribute, dtype, value of an unused slot): unused slots never finish, never start and weigh nothing.
# _when is a flow's next change: its drain start while in flight, its projected finish while draining.
# _in_s and _pos are scratch (membership of the set being solved, positions for `_distinct`).
_SLOTS = [("_rem", float, 0.0), ("_t_upd", float, 0.0), ("_rate", float, 0.0), ("_when", float, np.inf),
          ("_drain_at", float, 0.0), ("_tag", np.int64, 0), ("_weight", float, 1.0),
          ("_draining", bool, False), ("_alive", bool, False), ("_bneck", np.int64, -1),
          ("_f_start", np.int64, 0), ("_f_end", np.int64, 0), ("_in_s", bool, False), ("_pos", np.int64, 0)]
_ENTRIES = [("_e_flow", np.int64, 0), ("_e_link", np.int64, 0)]
_AR = np.arange(1 << 16)


def _arange(n: int) -> np.ndarray:
    """``np.arange(n)`` as a read-only view of a shared array (grown when too short)."""
    global _AR
    if n > _AR.shape[0]:
        _AR = np.arange(max(n, 2 * _AR.shape[0]))
        _AR.flags.writeable = False
    return _AR[:n]


_AR.flags.writeable = False


def _distinct(values: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Distinct values of an int array, unsorted, in time proportional to its length (no sort, no pass
    over the value range): write each position at its value in ``scratch`` (int64, indexable by every
    value; overwritten), and keep the positions that read back their own."""
    ar = _arange(values.shape[0])
    scratch[values] = ar
    return values[scratch[values] == ar]


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], ends[i])`` for every i, vectorised (a handful of numpy
    calls, in their cheapest forms: most calls are on a few dozen ranges)."""
    lengths = ends - starts
    if lengths.shape[0] == 0:
        return _EMPTY_I
    cum = np.add.accumulate(lengths)
    total = cum.item(-1)
    if total == 0:
        return _EMPTY_I
    return (ends - cum).repeat(lengths) + _arange(total)


class FluidNetwork:
    """Flows draining over links of given capacities (B/s).

    Each flow carries an integer ``tag`` chosen by the caller; :meth:`step` returns the tags of the flows
    that finished. ``busy`` gives, per link, the time during which the link carried any traffic, and
    ``on_rates`` (optional) is called with ``(time, link ids, loads)`` for the links whose load changed
    at every re-solve (loads in B/s; 0 means the link went idle).

    Parameters
    ----------
    capacity : array of float
        Capacity of every link (B/s).
    on_rates : callable, optional
    incremental : bool
        Re-solve only the component an event touches (default) or every draining flow.
    finish_rtol : float
        Batch completions within this fraction of each flow's draining time (0: exact).
    """

    def __init__(self, capacity: np.ndarray, *, on_rates=None, incremental: bool = True,
                 finish_rtol: float = 0.0):
        if not 0.0 <= finish_rtol < 1.0:
            raise ValueError(f"finish_rtol must be in [0, 1), got {finish_rtol!r}")
        self.capacity = np.asarray(capacity, dtype=float)
        self.n_links = self.capacity.shape[0]
        self.now = 0.0
        self.on_rates = on_rates
        self.incremental = incremental
        self.finish_rtol = float(finish_rtol)
        self.solves = 0
        self.solved_flows = 0  # flows visited by re-solves in all (a measure of the work done)
        self._busy = np.zeros(self.n_links)  # busy time accumulated up to each link's last change
        self._busy_since = np.full(self.n_links, np.nan)  # when a loaded link became loaded
        self._load = np.zeros(self.n_links)
        self._link_mark = np.zeros(self.n_links, dtype=bool)  # scratch, all False between calls
        self._link_pos = np.zeros(self.n_links, dtype=np.int64)  # scratch: local number of a link
        self._link_tmp = np.zeros(self.n_links, dtype=np.int64)  # scratch for `_distinct` over links
        self._link_in_s = np.zeros(self.n_links, dtype=bool)  # scratch: the links of S in `_resolve`
        self._n_alive = 0
        self._init_slots()

    def _init_slots(self) -> None:
        # per-flow arrays (slots) and per-(flow, link) entries, over-allocated and grown by doubling so
        # that adding a few flows to many costs no copy of them all; unused slots hold inert values
        for name, dtype, fill in _SLOTS + _ENTRIES:
            setattr(self, name, np.full(0, fill, dtype=dtype))
        self._ns = 0  # slots in use (finished flows keep theirs until compaction)
        self._ne = 0  # entries in use
        self._idx_order = np.zeros(0, dtype=np.int64)  # entries [0, _n_indexed) sorted by link
        self._idx_ptr = np.zeros(self.n_links + 1, dtype=np.int64)
        self._idx_end = self._idx_ptr[1:]
        self._n_indexed = 0
        self._t_next = np.inf  # earliest _when of a live flow (kept up to date by every change)
        self._n_draining = 0

    def _grow(self, slots: int, entries: int) -> None:
        for fields, used, need in ((_SLOTS, self._ns, slots), (_ENTRIES, self._ne, entries)):
            cap = getattr(self, fields[0][0]).shape[0]
            if need <= cap:
                continue
            cap = max(need, 2 * cap, 1024)
            for name, dtype, fill in fields:
                new = np.full(cap, fill, dtype=dtype)
                new[:used] = getattr(self, name)[:used]
                setattr(self, name, new)

    # --- state ------------------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        """Number of flows in flight (latency phase or draining)."""
        return self._n_alive

    @property
    def busy(self) -> np.ndarray:
        """Seconds during which each link carried traffic, up to now."""
        busy = self._busy.copy()
        loaded = ~np.isnan(self._busy_since)
        busy[loaded] += self.now - self._busy_since[loaded]
        return busy

    def add(self, nbytes: np.ndarray, drain_at: np.ndarray, path_ptr: np.ndarray, path_links: np.ndarray,
            tags: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Start flows: flow ``i`` crosses ``path_links[path_ptr[i]:path_ptr[i+1]]`` from time ``drain_at[i]``.

        ``weight[i]`` > 1 stands for that many identical flows (each drains ``nbytes[i]`` at the rate
        reported for flow ``i``)."""
        n = len(path_ptr) - 1
        if n <= 0:
            return
        dead = self._ns - self._n_alive
        if dead > 1024 and 4 * dead > self._n_alive:  # dead entries slow every look-up on their links
            self._compact()
        path_ptr = np.asarray(path_ptr, dtype=np.int64)
        m = int(path_ptr[-1] - path_ptr[0])
        ns, ne = self._ns, self._ne
        self._grow(ns + n, ne + m)
        drain_at = np.asarray(drain_at, dtype=float)
        sl = slice(ns, ns + n)
        self._rem[sl] = nbytes
        self._t_upd[sl] = drain_at
        self._rate[sl] = 0.0
        self._when[sl] = drain_at
        self._drain_at[sl] = drain_at
        self._tag[sl] = tags
        self._weight[sl] = 1.0 if weight is None else weight
        self._draining[sl] = False
        self._alive[sl] = True
        self._bneck[sl] = -1
        self._f_start[sl] = ne + path_ptr[:-1] - path_ptr[0]
        self._f_end[sl] = ne + path_ptr[1:] - path_ptr[0]
        self._e_flow[ne:ne + m] = ns + np.repeat(np.arange(n, dtype=np.int64), np.diff(path_ptr))
        self._e_link[ne:ne + m] = path_links
        self._ns, self._ne = ns + n, ne + m
        self._n_alive += n
        self._t_next = min(self._t_next, float(drain_at.min()))
        tail = self._ne - self._n_indexed
        if tail > 1024 and 8 * tail > self._n_indexed:
            self._reindex()

    def next_event_time(self) -> float:
        """Time of the next change: a flow starting to drain or finishing (``inf`` if nothing is active)."""
        if self._n_alive == 0:
            return np.inf
        return max(self._t_next, self.now)

    def advance(self, t: float) -> tuple[np.ndarray, float]:
        """Move time to ``t`` (no later than the next event); returns tags of flows finished by then.

        Flows due within a tiny relative tolerance of ``t`` (or ``finish_rtol``, see the module
        docstring) finish at ``t``.
        """
        t = max(self.now, t)
        self.now = t
        if self._n_alive == 0 or self._t_next > t * (1 + _FINISH_RTOL + self.finish_rtol):
            return _EMPTY_I, t
        # candidates first (a superset: t_upd, drain_at >= 0), then each flow's own tolerance
        due = (self._when[:self._ns] <= t * (1 + _FINISH_RTOL + self.finish_rtol)).nonzero()[0]
        draining = self._draining[due]
        finished = due[draining]
        if finished.size:
            slack = _FINISH_RTOL * (t - self._t_upd[finished])
            if self.finish_rtol:
                slack = np.maximum(slack, self.finish_rtol * (t - self._drain_at[finished]))
            finished = finished[self._when[finished] <= t + slack]
        starting = due[~draining]
        if starting.size:
            starting = starting[self._when[starting] <= t]
        if starting.size:
            self._draining[starting] = True
            self._n_draining += starting.size
            self._t_upd[starting] = t
            self._when[starting] = np.inf  # until the re-solve below gives them a rate
            # zero-byte flows whose drain starts now finish at once, like any flow already due, and so do
            # flows that cross no link (nothing holds them back; no seed link would bring them into a solve)
            empty = (self._rem[starting] <= 0) | (self._f_end[starting] == self._f_start[starting])
            if empty.any():
                finished = np.union1d(finished, starting[empty])
                starting = starting[~empty]
        if finished.size == 0 and starting.size == 0:
            return _EMPTY_I, t
        done_tags = self._tag[finished]
        start_links = self._links_of(starting) if starting.size else _EMPTY_I
        seeds = np.concatenate((self._links_of(finished), start_links)) if starting.size else self._links_of(finished)
        if finished.size:
            self._retire(finished)
        self._resolve(seeds, starting.size, start_links)
        return done_tags, t

    def step(self) -> tuple[np.ndarray, float]:
        """Advance to the next event; returns (finished tags, time). Nothing active -> no change."""
        t = self.next_event_time()
        if t == np.inf:
            return _EMPTY_I, self.now
        return self.advance(t)

    def rates(self) -> dict[int, float]:
        """Current rate of every active flow, by tag (for tests and traces)."""
        alive = np.flatnonzero(self._alive)
        return dict(zip(self._tag[alive].tolist(), self._rate[alive].tolist()))

    def set_capacity(self, link_ids: np.ndarray, capacity: np.ndarray) -> None:
        """Change links' capacities from now on (a timed fault); rates are re-solved at once, from the
        flows on those links outwards, as after any other event."""
        link_ids = np.asarray(link_ids, dtype=np.int64)
        self.capacity[link_ids] = capacity
        if self._n_alive:
            self._resolve(link_ids)

    def evict(self, link_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Take out the flows (draining or in their latency phase) crossing any of ``link_ids``: their
        (tags, bytes left, weights, drain times), for the caller to put back on other paths."""
        on = np.zeros(self.n_links, dtype=bool)
        on[np.asarray(link_ids, dtype=np.int64)] = True
        e_flow = self._e_flow[:self._ne]
        hit = np.unique(e_flow[on[self._e_link[:self._ne]]])
        hit = hit[self._alive[hit]]
        if hit.size == 0:
            return _EMPTY_I, np.zeros(0), np.zeros(0), np.zeros(0)
        draining = hit[self._draining[hit]]
        self._bring_to_now(draining)
        out = (self._tag[hit].copy(), np.maximum(self._rem[hit], 0.0), self._weight[hit].copy(),
               self._drain_at[hit].copy())
        seeds = self._links_of(draining)
        self._retire(hit)
        if seeds.size:
            self._resolve(seeds)
        else:
            self._update_next()
        return out

    def reset_clock(self, t: float) -> None:
        """Set the clock of an idle network (no flows in flight) to ``t``."""
        if self._n_alive:
            raise RuntimeError("cannot move the clock of a network with flows in flight")
        self._close_busy(np.flatnonzero(~np.isnan(self._busy_since)))
        self.now = t
        self._load[:] = 0.0
        self._init_slots()

    # --- internals ---------------------------------------------------------------------------------------
    def _retire(self, flows: np.ndarray) -> None:
        """Flows leave the network (finished, or evicted to be re-added elsewhere); slots stay until
        compaction (a dead slot is never draining, so no solve reads its rate or bytes)."""
        self._alive[flows] = False
        self._n_draining -= int(np.count_nonzero(self._draining[flows]))
        self._draining[flows] = False
        self._when[flows] = np.inf
        self._rate[flows] = 0.0
        self._n_alive -= flows.size

    def _update_next(self) -> None:
        self._t_next = float(self._when[:self._ns].min()) if self._n_alive else np.inf

    def _links_of(self, flows: np.ndarray) -> np.ndarray:
        return self._e_link[_ranges(self._f_start[flows], self._f_end[flows])]

    def _entries_on(self, links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entries of draining flows on ``links`` (distinct link ids), and their flows."""
        entries = self._idx_order[_ranges(self._idx_ptr[links], self._idx_end[links])]
        if self._ne > self._n_indexed:
            mark = self._link_mark
            mark[links] = True
            on = np.flatnonzero(mark[self._e_link[self._n_indexed:self._ne]])
            mark[links] = False
            if on.size:
                entries = np.concatenate([entries, on + self._n_indexed])
        e_flow = self._e_flow[entries]
        on = self._draining[e_flow]
        return entries[on], e_flow[on]

    def _bring_to_now(self, flows: np.ndarray) -> None:
        self._rem[flows] -= self._rate[flows] * (self.now - self._t_upd[flows])
        self._t_upd[flows] = self.now

    def _resolve(self, seed_links: np.ndarray, n_starting: int = 0, start_links: np.ndarray | None = None) -> None:
        """New max-min rates after flows on ``seed_links`` finished or started draining.

        Incremental: re-solve a set S of flows (at first those on the seed links; given ``start_links``,
        the links of the flows that started, only those on them and those whose bottleneck is a seed
        link: removing finished flows lowers loads only on their links, so a flow bottlenecked elsewhere
        keeps a full bottleneck on which it is fastest) in the capacity the
        others leave, then check the max-min condition on every link S touches: each flow there must
        still have a bottleneck, a full link on which no flow gets more. Flows that fail join S and the
        solve repeats (S's links and the entries on them are extended by the newcomers' alone); flows
        elsewhere are untouched. The fixed point is the unique max-min allocation
        (feasible, and every flow has a bottleneck), so this equals a full re-solve up to float rounding.
        When no flow outside S crosses S's links, S's own solve is the answer and the check is skipped;
        S then holds every draining flow, or a closed part of them. When ``n_starting`` flows that just
        started draining are at least half (``_ALL_AT_ONCE``) of all draining flows, S is every draining flow at
        once (no look-up of which flows the seed links reach: a pipelined round whose flows all start
        together).
        """
        self.solves += 1
        seeds = _distinct(np.asarray(seed_links, dtype=np.int64), self._link_pos)
        pos_of = self._link_pos
        if not self.incremental or (n_starting and n_starting >= _ALL_AT_ONCE * self._n_draining):
            flows = np.flatnonzero(self._draining[:self._ns])
            self._bring_to_now(flows)
            f_links = self._links_of(flows)
            links = _distinct(f_links, pos_of)
            pos_of[links] = _arange(links.size)
            el, ef = self._solve_set(flows, links, self.capacity[links].copy(), f_links)
            self.solved_flows += flows.size
            self._finish_set(flows)
            self._set_loads(*self._with_idle(seeds, links, self._loads(flows, el, ef, links.size)))
            self._update_next()
            return
        in_s = self._in_s
        s_entries, s_flows = self._entries_on(seeds)
        if start_links is not None and s_flows.shape[0]:
            # only flows finished: a flow still on their links changes rate only if one of them was its
            # bottleneck (its other links kept their loads); flows on a starting flow's links all join
            mark = self._link_mark
            mark[seeds] = True
            b = self._bneck[s_flows]
            freed = (b < 0) | mark[b]
            mark[seeds] = False
            if start_links.shape[0]:
                mark[start_links] = True
                freed |= mark[self._e_link[s_entries]]
                mark[start_links] = False
            flows = _distinct(s_flows[freed], self._pos)
        else:
            flows = _distinct(s_flows, self._pos)
        if flows.size == 0:  # no rate changes: the seed links keep the loads of the flows left on them
            self._set_loads(seeds, self._seed_loads(seeds, s_entries, s_flows))
            self._update_next()
            return
        new = flows
        rate, weight = self._rate, self._weight
        mark = self._link_in_s  # S's links, while S grows
        f_links = links = cap = e_flow = e_pos = None
        while True:
            # S grew by `new`: extend its links, and the entries on them, by what `new` adds
            in_s[new] = True
            self._bring_to_now(new)
            new_links = self._links_of(new)
            add = _distinct(new_links, self._link_tmp)
            if links is None:  # S's first links (a seed link whose flows all stay out of S is not one: `_with_idle`)
                f_links, links = new_links, add
            else:
                f_links = np.concatenate((f_links, new_links))
                add = add[~mark[add]]
                links = np.concatenate((links, add))
            mark[add] = True
            n_links = links.shape[0]
            pos_of[add] = _arange(n_links)[n_links - add.shape[0]:]
            cap = self.capacity[links]
            if flows.size == self._n_draining:  # S holds every draining flow: closed, no look-up needed
                el, ef = self._solve_set(flows, links, cap.copy(), f_links)
                load = self._loads(flows, el, ef, n_links)
                break
            entries, add_flow = self._entries_on(add)
            add_pos = pos_of[self._e_link[entries]]
            if e_flow is None:
                e_flow, e_pos = add_flow, add_pos
            else:
                e_flow, e_pos = np.concatenate((e_flow, add_flow)), np.concatenate((e_pos, add_pos))
            inside = in_s[e_flow]
            if np.count_nonzero(inside) == inside.shape[0]:  # S is closed: its solve is exact, nothing else to check
                el, ef = self._solve_set(flows, links, cap.copy(), f_links)
                load = self._loads(flows, el, ef, n_links)
                break
            outside = ~inside
            e_out = e_flow[outside]
            p_out = e_pos[outside]
            other = np.bincount(p_out, weights=rate[e_out] * weight[e_out], minlength=n_links)
            self._solve_set(flows, links, cap - other, f_links)
            e_rate = rate[e_flow]
            load = np.bincount(e_pos, weights=e_rate * weight[e_flow], minlength=n_links)
            top = np.zeros(n_links)
            np.maximum.at(top, e_pos, e_rate)
            full = load >= cap * (1 - _CHECK_RTOL)
            # flows outside S on these links: is their bottleneck (if it is here) still one? (checked
            # at the entry on that link, so each such flow once)
            r_out = rate[e_out]
            at_b = links[p_out] == self._bneck[e_out]
            bad = e_out[at_b & ~(full[p_out] & (r_out >= top[p_out] * (1 - _CHECK_RTOL)))]
            # flows of S whose bottleneck has a faster outside flow: that flow must give way
            b = self._bneck[flows]
            pos = np.minimum(pos_of[b], n_links - 1)  # one of S's links, or -1 (a flow with no links)
            ok_s = (b < 0) | (full[pos] & (rate[flows] >= top[pos] * (1 - _CHECK_RTOL)))
            if not ok_s.all():
                floor = np.full(n_links, np.inf)
                np.minimum.at(floor, pos[~ok_s], rate[flows[~ok_s]])
                bad = np.concatenate([bad, e_out[r_out > floor[p_out]]])
            if bad.size:
                bad = _distinct(bad, self._pos)
            if bad.size == 0:
                break
            new = bad
            flows = np.concatenate([flows, new])
        in_s[flows] = False
        mark[links] = False
        self.solved_flows += flows.size
        self._finish_set(flows)
        self._set_loads(*self._with_idle(seeds, links, load, s_entries, s_flows))
        self._update_next()

    def _solve_set(self, flows: np.ndarray, links: np.ndarray, capacity: np.ndarray,
                   f_links: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Max-min rates of ``flows`` over ``links`` (numbered by ``_link_pos``) with the given
        capacities (a fresh array, consumed); ``f_links`` is ``_links_of(flows)`` if known. Returns the
        entries of ``flows`` as (local link number, index into ``flows``) for ``_loads``."""
        if flows.size == 0:
            return _EMPTY_I, _EMPTY_I
        counts = self._f_end[flows] - self._f_start[flows]
        ef = _arange(flows.size).repeat(counts)
        el = self._link_pos[self._links_of(flows) if f_links is None else f_links]
        w = self._weight[flows]
        r, limit = progressive_filling(ef, el, capacity, flows.size, w[ef])
        # a flow with no links (never happens for real routes) drains instantly
        np.minimum(r, _FLOAT_MAX, out=r)
        self._rate[flows] = r
        self._bneck[flows] = np.where(limit >= 0, links[limit], -1)
        return el, ef

    def _loads(self, flows: np.ndarray, el: np.ndarray, ef: np.ndarray, n_links: int) -> np.ndarray:
        """Load of each local link from ``flows`` alone, given their entries (from ``_solve_set``)."""
        return np.bincount(el, weights=(self._rate[flows] * self._weight[flows])[ef], minlength=n_links)

    def _finish_set(self, flows: np.ndarray) -> None:
        r = self._rate[flows]
        rem = np.maximum(self._rem[flows], 0.0)
        left = np.empty(flows.size)
        left.fill(np.inf)
        self._when[flows] = self.now + np.divide(rem, r, out=left, where=r > 0)

    def _set_loads(self, links: np.ndarray, load: np.ndarray) -> None:
        """New loads of ``links``; keeps the busy clocks and reports changes."""
        old = self._load[links]
        was, now_on = old > 0, load > 0
        flip = was != now_on
        if np.count_nonzero(flip):
            self._close_busy(links[flip & was])
            self._busy_since[links[flip & now_on]] = self.now
        self._load[links] = load
        if self.on_rates is not None:
            changed = old != load
            self.on_rates(self.now, links[changed], load[changed])

    def _with_idle(self, seeds: np.ndarray, links: np.ndarray, load: np.ndarray, s_entries: np.ndarray | None = None,
                   s_flows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``links`` and their ``load``, plus the seed links that are not among them, with the load of
        the draining flows on them (``s_entries``/``s_flows``: their entries, from ``_entries_on(seeds)``;
        none given: they carry no draining flow now, load 0).

        (Many flows finishing alone on their links, as a round's NVLink hops do, leave many such
        seeds; keeping them out of the solve keeps its link set to the links still in use.)"""
        mark = self._link_mark
        mark[links] = True
        idle = seeds[~mark[seeds]]
        mark[links] = False
        if idle.shape[0] == 0:
            return links, load
        rest = np.zeros(idle.shape[0]) if s_entries is None else self._seed_loads(idle, s_entries, s_flows)
        return np.concatenate((links, idle)), np.concatenate((load, rest))

    def _seed_loads(self, seeds: np.ndarray, entries: np.ndarray, flows: np.ndarray) -> np.ndarray:
        """Load of each of ``seeds`` (distinct links) from the draining flows on them: ``entries`` and
        their ``flows``, at least those on ``seeds`` (summed afresh, as a solve's loads are)."""
        if entries.shape[0] == 0:
            return np.zeros(seeds.shape[0])
        pos = self._link_tmp
        pos[self._e_link[entries]] = -1
        pos[seeds] = _arange(seeds.shape[0])
        p = pos[self._e_link[entries]]
        on = p >= 0
        return np.bincount(p[on], weights=(self._rate[flows] * self._weight[flows])[on], minlength=seeds.shape[0])

    def _close_busy(self, links: np.ndarray) -> None:
        if links.size:
            self._busy[links] += self.now - self._busy_since[links]
            self._busy_since[links] = np.nan

    def _reindex(self) -> None:
        """Sort every entry by link (the index the solver's look-ups read)."""
        links = self._e_link[:self._ne]
        self._idx_order = np.argsort(links, kind="stable")
        self._idx_ptr = np.zeros(self.n_links + 1, dtype=np.int64)
        np.cumsum(np.bincount(links, minlength=self.n_links), out=self._idx_ptr[1:])
        self._idx_end = self._idx_ptr[1:]
        self._n_indexed = self._ne

    def _compact(self) -> None:
        """Drop finished flows and their entries (slot numbers change; the index is rebuilt)."""
        ns, ne = self._ns, self._ne
        keep = self._alive[:ns]
        new_index = np.cumsum(keep) - 1
        e_flow = self._e_flow[:ne]
        keep_entry = keep[e_flow]
        counts = (self._f_end[:ns] - self._f_start[:ns])[keep]
        for name, _, _ in _SLOTS:
            setattr(self, name, getattr(self, name)[:ns][keep])
        self._e_flow = new_index[e_flow[keep_entry]]
        self._e_link = self._e_link[:ne][keep_entry]
        ptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        self._f_start, self._f_end = ptr[:-1].copy(), ptr[1:].copy()
        self._ns, self._ne = int(keep.sum()), int(keep_entry.sum())
        self._reindex()
