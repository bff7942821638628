"""The fluid (flow-level) state of a fabric: which flows are in flight, how fast each drains.

No SimPy here: ``FluidNetwork`` is advanced from event to event by its caller (``fabric.Fabric``), which
keeps simulated time. A flow first spends its path latency in flight holding no bandwidth, then drains
its bytes at its max-min fair rate; rates are re-solved whenever a flow starts draining or finishes
(progressive filling, ``sharing.max_min_rates``). All state is numpy arrays over flows and over
(flow, link) entries, so one event costs a handful of vector operations however many flows are active.
"""

from __future__ import annotations

import numpy as np

from fabricsim.simulator.sharing import max_min_rates

__all__ = ["FluidNetwork"]

# Flows whose finish times differ by less than this fraction of the step finish together: float noise in
# a symmetric pattern must not turn one completion event into thousands.
_FINISH_RTOL = 1e-9


class FluidNetwork:
    """Flows draining over links of given capacities (B/s).

    Each flow carries an integer ``tag`` chosen by the caller; :meth:`step` returns the tags of the flows
    that finished. ``busy`` accumulates, per link, the time during which the link carried any traffic, and
    ``on_rates`` (optional) is called with ``(time, loads)`` after every re-solve.
    """

    def __init__(self, capacity: np.ndarray, *, on_rates=None):
        self.capacity = np.asarray(capacity, dtype=float)
        self.n_links = self.capacity.shape[0]
        self.now = 0.0
        self.busy = np.zeros(self.n_links)
        self.on_rates = on_rates
        self._remaining = np.zeros(0)
        self._drain_at = np.zeros(0)
        self._rate = np.zeros(0)
        self._tag = np.zeros(0, dtype=np.int64)
        self._weight = np.zeros(0)
        self._entry_flow = np.zeros(0, dtype=np.int64)
        self._entry_link = np.zeros(0, dtype=np.int64)
        self._loaded = np.zeros(0, dtype=np.int64)  # links with positive load under the current rates
        self._stale = False  # rates must be re-solved before time moves on
        self.solves = 0

    # --- state ------------------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        """Number of flows in flight (latency phase or draining)."""
        return self._remaining.shape[0]

    def add(self, nbytes: np.ndarray, drain_at: np.ndarray, path_ptr: np.ndarray, path_links: np.ndarray,
            tags: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Start flows: flow ``i`` crosses ``path_links[path_ptr[i]:path_ptr[i+1]]`` from time ``drain_at[i]``.

        ``weight[i]`` > 1 stands for that many identical flows (each drains ``nbytes[i]`` at the rate
        reported for flow ``i``)."""
        n0 = self.active
        counts = np.diff(path_ptr)
        self._remaining = np.concatenate([self._remaining, np.asarray(nbytes, dtype=float)])
        self._drain_at = np.concatenate([self._drain_at, np.asarray(drain_at, dtype=float)])
        self._rate = np.concatenate([self._rate, np.zeros(len(counts))])
        self._tag = np.concatenate([self._tag, np.asarray(tags, dtype=np.int64)])
        self._weight = np.concatenate([self._weight, np.ones(len(counts)) if weight is None
                                       else np.asarray(weight, dtype=float)])
        self._entry_flow = np.concatenate([self._entry_flow, n0 + np.repeat(np.arange(len(counts)), counts)])
        self._entry_link = np.concatenate([self._entry_link, np.asarray(path_links, dtype=np.int64)])
        if np.any(self._drain_at[n0:] <= self.now):
            self._stale = True

    def next_event_time(self) -> float:
        """Time of the next change: a flow starting to drain or finishing (``inf`` if nothing is active)."""
        if self.active == 0:
            return np.inf
        if self._stale:
            return self.now
        t = np.inf
        waiting = self._drain_at > self.now
        if waiting.any():
            t = self._drain_at[waiting].min()
        moving = self._rate > 0
        if moving.any():
            t = min(t, self.now + (self._remaining[moving] / self._rate[moving]).min())
        return t

    def advance(self, t: float) -> tuple[np.ndarray, float]:
        """Move time to ``t`` (no later than the next event); returns tags of flows finished by then.

        Flows due to finish within a tiny relative tolerance of ``t`` finish at ``t``.
        """
        dt = t - self.now
        finished = np.zeros(0, dtype=bool)
        if dt > 0 and self._loaded.size:
            self.busy[self._loaded] += dt
        if self.active:
            moving = self._rate > 0
            if moving.any():
                eta = np.full(self.active, np.inf)
                eta[moving] = self._remaining[moving] / self._rate[moving]
                # due by t within tolerance, or so close that now + eta rounds to no later than t
                finished = (eta <= dt * (1 + _FINISH_RTOL)) | (self.now + eta <= t)
                if dt > 0:
                    self._remaining -= self._rate * dt
                self._remaining[finished] = 0.0
            else:
                finished = np.zeros(self.active, dtype=bool)
            # zero-byte flows finish as soon as they start draining
            finished |= (self._remaining <= 0) & (self._drain_at <= t)
        self.now = max(self.now, t)
        done_tags = self._tag[finished] if finished.size else np.zeros(0, dtype=np.int64)
        started = self.active and bool(np.any((self._drain_at <= self.now) & (self._rate == 0) & ~finished))
        if finished.any():
            self._remove(finished)
        if finished.any() or started or self._stale:
            self._solve()
        return done_tags, self.now

    def step(self) -> tuple[np.ndarray, float]:
        """Advance to the next event; returns (finished tags, time). Nothing active -> no change."""
        t = self.next_event_time()
        if t == np.inf:
            return np.zeros(0, dtype=np.int64), self.now
        return self.advance(t)

    def rates(self) -> dict[int, float]:
        """Current rate of every active flow, by tag (for tests and traces)."""
        return dict(zip(self._tag.tolist(), self._rate.tolist()))

    # --- internals ---------------------------------------------------------------------------------------
    def _remove(self, mask: np.ndarray) -> None:
        keep = ~mask
        new_index = np.cumsum(keep) - 1
        keep_entry = keep[self._entry_flow]
        self._entry_flow = new_index[self._entry_flow[keep_entry]]
        self._entry_link = self._entry_link[keep_entry]
        self._remaining = self._remaining[keep]
        self._drain_at = self._drain_at[keep]
        self._rate = self._rate[keep]
        self._tag = self._tag[keep]
        self._weight = self._weight[keep]

    def _solve(self) -> None:
        self._stale = False
        self.solves += 1
        n = self.active
        rate = np.zeros(n)
        draining = self._drain_at <= self.now
        if draining.any():
            sub = np.flatnonzero(draining)
            remap = np.full(n, -1, dtype=np.int64)
            remap[sub] = np.arange(sub.size)
            e_ok = draining[self._entry_flow]
            ef = remap[self._entry_flow[e_ok]]
            el = self._entry_link[e_ok]
            w = self._weight[sub]
            r = max_min_rates(ef, el, self.capacity, sub.size, weight=w)
            rate[sub] = r
            loads = np.bincount(el, weights=r[ef] * w[ef], minlength=self.n_links)
            self._loaded = np.flatnonzero(loads > 0)
            if self.on_rates is not None:
                self.on_rates(self.now, self._loaded, loads[self._loaded])
        else:
            self._loaded = np.zeros(0, dtype=np.int64)
            if self.on_rates is not None:
                self.on_rates(self.now, self._loaded, np.zeros(0))
        # a flow with no links (never happens for real routes) drains instantly
        rate[np.isinf(rate)] = np.finfo(float).max
        self._rate = rate


    def set_capacity(self, link_ids: np.ndarray, capacity: np.ndarray) -> None:
        """Change links' capacities from now on (a timed fault); rates are re-solved before time moves."""
        self.capacity[np.asarray(link_ids, dtype=np.int64)] = capacity
        self._stale = True

    def evict(self, link_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Take out the flows crossing any of ``link_ids``: their (tags, bytes left, weights, drain times),
        for the caller to put back on other paths."""
        on = np.zeros(self.n_links, dtype=bool)
        on[np.asarray(link_ids, dtype=np.int64)] = True
        hit = np.zeros(self.active, dtype=bool)
        hit[self._entry_flow[on[self._entry_link]]] = True
        out = (self._tag[hit], self._remaining[hit], self._weight[hit], self._drain_at[hit])
        if hit.any():
            self._remove(hit)
            self._stale = True
        return out

    def reset_clock(self, t: float) -> None:
        """Set the clock of an idle network (no flows in flight) to ``t``."""
        if self.active:
            raise RuntimeError("cannot move the clock of a network with flows in flight")
        self.now = t
        self._loaded = np.zeros(0, dtype=np.int64)
