"""Ring all-reduce, reduce-scatter and all-gather, over several channels, as NCCL runs them.

Ring all-reduce is a reduce-scatter (p-1 steps) then an all-gather (p-1 steps); in every step each rank
sends one segment of N/(C p) bytes per channel to its ring successor. Without contention and with per-step
latency a and per-rank bandwidth B (row C093):

    T = 2 (p-1) a + 2 (p-1)/p * N/B

Ring order follows the topology: the GPUs of one NVLink domain are adjacent. Across domains each channel
enters and leaves a domain through GPUs of the same local index on both sides, alternating direction
from one domain to the next, so that every inter-domain hop stays on one rail (NIC j to NIC j through
rail switch j) as NCCL's ring search arranges it; channels use different local indices, so C channels use
C NICs per domain. With an odd number of domains the closing hop cannot be rail-aligned.

Steps are timed as a pipeline, not in lock-step: a chunk's latency accumulates along the ring, so the
run pays NCCL's ring latency (row C102) once, (2(p-1) - 2(d-1)) intra-domain hops at the NVLink step
latency and 2(d-1) hops at the network one for d domains (each no less than the wire latency of such a
hop), spread evenly over the steps; the steps' flows then drain without paying path latency again.
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.nodes import memo_table, nvlink_hops_alike
from fabricsim.collectives.protocol import Protocol

__all__ = ["ring_orders", "default_channels", "ring_allreduce", "ring_reduce_scatter", "ring_allgather"]

MAX_CHANNELS = 16


def default_channels(layout: GroupLayout) -> int:
    """One ring inside a domain (it already spreads over every NVLink plane); across domains one channel
    per GPU of the largest domain part, up to MAX_CHANNELS, so that inter-domain traffic uses that many
    NICs per domain."""
    if not layout.multi_domain:
        return 1
    return max(1, min(MAX_CHANNELS, max(len(d) for d in layout.domains)))


def ring_orders(layout: GroupLayout, channels: int) -> list[list[int]]:
    """The ring (a list of ranks) of every channel; see the module docstring for the rail rule."""
    if not layout.multi_domain:
        return [list(layout.ranks) for _ in range(channels)]
    orders = []
    for c in range(channels):
        order: list[int] = []
        for k, dom in enumerate(layout.domains):
            m = len(dom)
            a, b = c % m, (c + 1) % m
            if k % 2 == 0:  # enter at local a, leave at local b
                order += [dom[(a - i) % m] for i in range(m)]
            else:  # enter at local b, leave at local a
                order += [dom[(b + i) % m] for i in range(m)]
        orders.append(order)
    return orders


def _segments(n: int, channels: int, p: int) -> list[list[tuple[int, int]]]:
    """Element bounds of segment j of channel c: ``seg[c][j] = (start, stop)``."""
    out = []
    chan = np.linspace(0, n, channels + 1).astype(int)
    for c in range(channels):
        b = np.linspace(chan[c], chan[c + 1], p + 1).astype(int)
        out.append([(int(b[j]), int(b[j + 1])) for j in range(p)])
    return out


def _shard_segments(n: int, orders: list[list[int]], ranks: list[int], shift: int) -> list[list[tuple[int, int]]]:
    """Segment bounds when segment k of channel c is part c of the shard of rank ``order_c[k - shift]``.

    Shard j (elements ``j n/p .. (j+1) n/p``) belongs to group position j, as NCCL's reduce-scatter output
    and all-gather input of rank j; each channel carries one of C parts of every shard.
    """
    p, C = len(ranks), len(orders)
    pos = {r: j for j, r in enumerate(ranks)}
    shard = np.linspace(0, n, p + 1).astype(int)
    out = []
    for c, order in enumerate(orders):
        row = []
        for k in range(p):
            j = pos[order[(k - shift) % p]]
            part = np.linspace(shard[j], shard[j + 1], C + 1).astype(int)
            row.append((int(part[c]), int(part[c + 1])))
        out.append(row)
    return out


def ring_wire_latency(fabric, layouts: list[GroupLayout], channels: int) -> list[dict]:
    """Per group, the largest wire latency of its rings' intra-domain hops ("nvlink") and of their
    inter-domain hops ("net"), for ``channels`` rings (``ring_orders``). Every inter-domain hop is routed,
    and one intra-domain hop per channel where all are alike (``nodes.nvlink_hops_alike``), else every
    one of them, those of all the groups in one batch; the
    answer depends on the group, channels and routes alone, so it is kept per router (``nodes.memo_table``)
    and the rings of a group built under every protocol (or the per-shard rings of a hierarchical
    all-reduce, ``hierarchical.py``) route their hops once."""
    memo = memo_table(fabric, "ring-wire")
    keys = [(lay.ident, channels) for lay in layouts]
    found = {k: memo.get(k) for k in keys}
    todo = {k: lay for k, lay in zip(keys, layouts) if found[k] is None and lay.p > 1}
    if todo:
        alike = nvlink_hops_alike(fabric)
        src, dst, key, owner, intra_all = [], [], [], [], []
        for j, layout in enumerate(todo.values()):
            dom = np.zeros(max(layout.ranks) + 1, dtype=np.int64)
            for k, d in enumerate(layout.domains):
                dom[d] = k
            order = np.array(ring_orders(layout, channels), dtype=np.int64)  # (C, p) ranks
            nxt = np.roll(order, -1, axis=1)
            intra = dom[order] == dom[nxt]
            first_intra = np.zeros_like(intra)
            has = intra.any(axis=1)
            first_intra[np.flatnonzero(has), intra.argmax(axis=1)[has]] = True
            pick = ~intra | first_intra if alike else np.ones_like(intra)
            chan = np.broadcast_to(np.arange(order.shape[0])[:, None], order.shape)
            src.append(fabric.gpu_index[order[pick]])
            dst.append(fabric.gpu_index[nxt[pick]])
            key.append(chan[pick])
            intra_all.append(intra[pick])
            owner.append(np.full(int(pick.sum()), j, dtype=np.int64))
        rs = fabric.router.route_many(np.concatenate(src), np.concatenate(dst), np.concatenate(key))
        owner, is_intra = np.concatenate(owner), np.concatenate(intra_all)
        hop_lat = np.zeros(owner.shape[0])
        np.maximum.at(hop_lat, rs.flow, rs.lat)
        for j, k in enumerate(todo):
            mine = owner == j
            memo[k] = found[k] = {"nvlink": float(hop_lat[mine & is_intra].max(initial=0.0)),
                                  "net": float(hop_lat[mine & ~is_intra].max(initial=0.0))}
    return [found[k] or {"nvlink": 0.0, "net": 0.0} for k in keys]


class _RingPlan:
    """Node arrays and segment bounds shared by the ring schedules of one group."""

    def __init__(self, fabric, layout: GroupLayout, nbytes: int, channels: int | None, protocol: Protocol):
        self.p = layout.p
        self.channels = channels or default_channels(layout)
        if self.channels < 1:
            raise ValueError("channels must be positive")
        self.orders = ring_orders(layout, self.channels)
        self.nbytes = nbytes
        order = np.array(self.orders, dtype=np.int64)  # (C, p) ranks
        nodes = fabric.gpu_index[order]
        self.src = nodes.ravel()
        self.dst = np.roll(nodes, -1, axis=1).ravel()
        self.key = np.repeat(np.arange(self.channels, dtype=np.int64), self.p)
        self.seg_bytes = nbytes / (self.channels * self.p)
        self.latency_class = "net" if layout.multi_domain else "nvlink"
        self.ident = layout.ident
        self.step_latency = self._pipeline_latency(fabric, layout, protocol)
        self.segments = lambda n: _segments(n, self.channels, self.p)  # element bounds of every segment

    def _pipeline_latency(self, fabric, layout: GroupLayout, protocol: Protocol) -> float:
        """Ring latency (C102) per step: hop latencies summed along the ring, spread over its steps."""
        if self.p < 2:
            return 0.0
        wire = ring_wire_latency(fabric, [layout], self.channels)[0]
        a = {cls: max(protocol.step_latency.get(("ring", cls), 0.0), wire[cls]) for cls in wire}
        steps = 2 * (self.p - 1)
        inter = 2 * (len(layout.domains) - 1)
        return ((steps - inter) * a["nvlink"] + inter * a["net"]) / steps

    def traffic(self):
        return self.src, self.dst, np.full(self.src.shape, self.seg_bytes), self.key

    def step(self, segment_of, reduce: bool, label: str) -> Step:
        """A ring step: position i of every channel sends segment ``segment_of(i)`` to position i+1."""
        def apply(data: dict) -> None:
            n = next(iter(data.values())).shape[0]
            segs = self.segments(n)
            moves = []
            for c, order in enumerate(self.orders):
                for i in range(self.p):
                    lo, hi = segs[c][segment_of(i) % self.p]
                    moves.append((order[(i + 1) % self.p], lo, hi, data[order[i]][lo:hi].copy()))
            for dst, lo, hi, payload in moves:
                if reduce:
                    data[dst][lo:hi] += payload
                else:
                    data[dst][lo:hi] = payload
        return Step(("ring", self.ident, self.channels, self.seg_bytes), self.traffic, self.latency_class, apply, label,
                    extra_latency=self.step_latency, pipelined=True)


def _reduce_scatter_steps(plan: _RingPlan):
    # step s: position i sends its partial sum of segment (i - s); after p-1 steps position i owns (i + 1)
    for s in range(plan.p - 1):
        yield plan.step(lambda i, s=s: i - s, True, "ring reduce-scatter")


def _allgather_steps(plan: _RingPlan, first_owned: int):
    # step t: position i forwards segment (i + first_owned - t), which it received (or owned) last step
    for t in range(plan.p - 1):
        yield plan.step(lambda i, t=t: i + first_owned - t, False, "ring all-gather")


def ring_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *,
                   channels: int | None = None) -> Schedule:
    """Ring all-reduce of ``nbytes`` over ``layout``: reduce-scatter then all-gather (2(p-1) steps)."""
    plan = _RingPlan(fabric, layout, nbytes, channels, protocol)

    def steps():
        yield from _reduce_scatter_steps(plan)
        yield from _allgather_steps(plan, 1)
    return Schedule("ring", steps(), protocol, "ring")


def ring_reduce_scatter(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *,
                        channels: int | None = None) -> Schedule:
    """Ring reduce-scatter of ``nbytes`` (the full input): p-1 steps of N/(C p) per rank and channel.

    Afterwards the rank at group position j holds shard j (elements ``j n/p .. (j+1) n/p``) reduced,
    as NCCL's in-place reduce-scatter leaves it. Contention-free: T = (p-1) a + (p-1)/p N/B.
    """
    plan = _RingPlan(fabric, layout, nbytes, channels, protocol)
    plan.segments = lambda n: _shard_segments(n, plan.orders, layout.ranks, 1)
    return Schedule("ring", _reduce_scatter_steps(plan), protocol, "ring")


def ring_allgather(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *,
                   channels: int | None = None) -> Schedule:
    """Ring all-gather of ``nbytes`` (the full output) where group position j starts owning shard j.

    p-1 steps of N/(C p) per rank and channel; contention-free T = (p-1) a + (p-1)/p N/B.
    """
    plan = _RingPlan(fabric, layout, nbytes, channels, protocol)
    plan.segments = lambda n: _shard_segments(n, plan.orders, layout.ranks, 0)
    return Schedule("ring", _allgather_steps(plan, 0), protocol, "ring")
