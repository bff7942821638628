"""What every collective shares: the group of ranks, steps of transfers, running them, and results.

A collective is a *schedule*: a sequence of steps. Each step is a set of transfers that start together
(one flow group on the fabric) plus, in data-carrying mode, what those transfers do to the ranks' buffers
(copy or reduce a segment). Running a schedule on a Simulation moves the step's bytes over the fabric and
waits for the last one; steps whose traffic repeats reuse one FlowGroup, so the fabric's round cache makes
a 16,382-step ring on 8,192 GPUs cost a handful of bandwidth solves.

Ranks are positions in ``topology.gpus``. Data-carrying buffers are numpy arrays, one per rank of the
group, and a correct all-reduce leaves the elementwise sum in every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np

from fabricsim.collectives.kinds import KINDS
from fabricsim.collectives.protocol import Protocol
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.simulator.fabric import Fabric, FlowGroup

__all__ = ["Step", "Schedule", "CollectiveResult", "GroupLayout", "busbw_factor", "run_schedule", "parallel",
           "sequence", "carry", "element"]


def busbw_factor(p: int) -> float:
    """nccl-tests' all-reduce bus-bandwidth factor 2(p-1)/p (row C091)."""
    return 2 * (p - 1) / p if p > 1 else 1.0


@dataclass
class Step:
    """Transfers that start together.

    ``src``/``dst`` are fabric node indices (GPUs, or switch chips for in-switch reduction), ``nbytes``
    their sizes, ``key`` the channel used for ECMP. ``pattern`` names the traffic: two steps with equal
    patterns move identical traffic, so the FlowGroup is built once. ``latency_class`` is "nvlink" or
    "net" (which protocol latency the step pays); ``apply`` performs the step on data buffers.
    """

    pattern: Hashable
    traffic: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    latency_class: str = "nvlink"
    apply: Callable[[dict], None] | None = None
    label: str = ""
    extra_latency: float | None = None  # overrides the protocol's step latency when set
    pipelined: bool = False  # steady pipeline stage: wire latency hidden behind earlier chunks
    base: tuple | None = None  # (pattern, traffic) of a superset; traffic() then returns indices into it
    carries: Callable[[], list] | None = None  # per flow, the data it moves (see ``carry``)
    protocol: Protocol | None = None  # the protocol timing this step, when not the schedule's (a level's own)
    once: bool = False  # no other step of the schedule has this pattern: the round cache need not keep it

    def arrays(self):
        """The step's (src, dst, nbytes, key) arrays, resolving a subset of a base."""
        if self.base is None:
            return self.traffic()
        idx = self.traffic()
        return tuple(np.asarray(a)[idx] for a in self.base[1]())


@dataclass
class Schedule:
    """A named sequence of steps with the protocol that times them."""

    name: str
    steps: Iterator[Step]
    protocol: Protocol
    latency_algorithm: str = "ring"  # which NCCL latency row the steps use
    launch_latency: float | None = None
    view: Callable[[dict], dict] | None = None  # the part of the data buffers this schedule works on
    protocol_label: str = ""  # how results name the protocol(s), when not ``protocol.name``

    def step_latency(self, step: Step) -> float:
        """Protocol latency the step must take in all (wire latency included)."""
        if step.extra_latency is not None:
            return step.extra_latency
        return self.protocol.step_latency.get((self.latency_algorithm, step.latency_class), 0.0)


def element(fraction: float, n: int) -> int:
    """The element index where ``fraction`` of an n-element buffer starts (the one rounding rule every
    data-carrying schedule uses, so that parts computed by different schedules meet exactly)."""
    return int(np.floor(fraction * n + 1e-7))


def carry(data: dict, state: dict, node_rank: dict, arrays: tuple, payload: list) -> None:
    """Move and reduce data buffers exactly as a step's flows do (data-carrying mode).

    ``payload[i]`` describes flow ``i`` of ``arrays`` (its fabric endpoints come from the arrays, so a
    flow that is missing or misrouted moves its data wrongly): ``(order, segments)``, each segment
    ``(tag, a, b, op)`` a part ``[a, b)`` of the buffer (fractions of its length). The flow reads the part
    from its source, a GPU's buffer or what a switch holds under ``tag``, and at its destination either
    adds it (``"add"``: a switch reducing what reaches it, or a GPU accumulating) or overwrites with it
    (``"put"``). Flows run in ``order`` (data reaching a switch before the switch forwards it), those of
    one order at once (each reads its source as it was before any of them); a switch that never received
    a part holds zeros.
    """
    src, dst = np.asarray(arrays[0]), np.asarray(arrays[1])
    if len(payload) != len(src):
        raise ValueError(f"{len(src)} flows but {len(payload)} payload entries")
    n = next(iter(data.values())).shape[0]

    def at(x: float) -> int:
        return element(x, n)

    by_order: dict = {}
    for i, (order, _) in enumerate(payload):
        by_order.setdefault(order, []).append(i)
    for order in sorted(by_order):
        moves = []  # flows of one order are simultaneous: every source is read before anything is written
        for i in by_order[order]:
            u, v = int(src[i]), int(dst[i])
            for tag, a, b, op in payload[i][1]:
                lo, hi = at(a), at(b)
                if hi <= lo:
                    continue
                if u in node_rank:
                    value = data[node_rank[u]][lo:hi].copy()
                else:
                    value = state.get((u, tag, lo, hi))
                    value = np.zeros_like(data[next(iter(data))][lo:hi]) if value is None else value.copy()
                moves.append((v, tag, lo, hi, op, value))
        for v, tag, lo, hi, op, value in moves:
            if v in node_rank:
                target = data[node_rank[v]]
                if op == "add":
                    target[lo:hi] += value
                else:
                    target[lo:hi] = value
            else:
                held = state.get((v, tag, lo, hi))
                state[(v, tag, lo, hi)] = value if op != "add" or held is None else held + value


def parallel(schedules: Sequence[Schedule], name: str, *, key_stride: int = 64) -> Schedule:
    """Schedules run side by side, step i of each in one combined step (e.g. one ring per shard).

    Flow keys of schedule j are offset by ``j * key_stride`` so that ECMP spreads the schedules apart;
    a combined step waits for the slowest part and pays the largest part's latency.
    """
    import itertools

    schedules = list(schedules)

    def steps():
        for parts in itertools.zip_longest(*(s.steps for s in schedules)):
            live = [(j, st) for j, st in enumerate(parts) if st is not None]

            based = all(st.base is not None for _, st in live)

            def traffic(live=live, based=based):
                pieces = [st.traffic() if based else st.arrays() for _, st in live]
                if based:
                    sizes = [len(st.base[1]()[0]) for _, st in live]
                    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
                    return np.concatenate([np.asarray(p, dtype=np.int64) + o for p, o in zip(pieces, offsets)])
                return _concat_traffic(pieces, [j for j, _ in live], key_stride)

            base = None
            if based:
                def base_traffic(live=live):
                    return _concat_traffic([st.base[1]() for _, st in live], [j for j, _ in live], key_stride)
                base = (tuple((j, st.base[0]) for j, st in live), _memo(base_traffic))

            def apply(data, live=live):
                for j, st in live:
                    if st.apply is not None:
                        sched = schedules[j]
                        st.apply(sched.view(data) if sched.view is not None else data)

            def carries(live=live):
                return [entry for _, st in live for entry in
                        (st.carries() if st.carries is not None else [(0, ())] * len(st.arrays()[0]))]

            yield Step(tuple((j, st.pattern) for j, st in live), traffic,
                       "net" if any(st.latency_class == "net" for _, st in live) else "nvlink", apply, name,
                       extra_latency=max(schedules[j].step_latency(st) for j, st in live),
                       pipelined=all(st.pipelined for _, st in live), base=base,
                       carries=carries if any(st.carries is not None for _, st in live) else None,
                       protocol=live[0][1].protocol or schedules[live[0][0]].protocol,
                       once=any(st.once for _, st in live))

    proto = schedules[0].protocol if schedules else None
    return Schedule(name, steps(), proto, schedules[0].latency_algorithm if schedules else "ring", launch_latency=0.0)


def _concat_traffic(pieces: list, owners: list[int], key_stride: int) -> tuple:
    """(src, dst, nbytes, key) arrays of several schedules' steps as one, keys offset per schedule."""
    return (np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces]),
            np.concatenate([np.asarray(p[2], dtype=float) for p in pieces]),
            np.concatenate([np.asarray(p[3]) + j * key_stride for j, p in zip(owners, pieces)]))


def _memo(fn):
    """A zero-argument function computed once."""
    box = []

    def once():
        if not box:
            box.append(fn())
        return box[0]
    return once


def sequence(schedules: Sequence[Schedule], name: str) -> Schedule:
    """Schedules one after another (phases), each keeping its own latency rules."""
    def steps():
        for sched in schedules:
            for st in sched.steps:
                if st.extra_latency is None:
                    st.extra_latency = sched.step_latency(st)
                if st.protocol is None:
                    st.protocol = sched.protocol
                if sched.view is not None and st.apply is not None:
                    st.apply = (lambda f, v: (lambda data: f(v(data))))(st.apply, sched.view)
                yield st
    return Schedule(name, steps(), schedules[0].protocol, schedules[0].latency_algorithm)


@dataclass(frozen=True)
class CollectiveResult:
    """One collective's outcome, reported as nccl-tests does (C090, C091)."""

    algorithm: str
    protocol: str
    ranks: int
    nbytes: int
    time: float
    steps: int = 0
    kind: str = "allreduce"  # which collective; ``nbytes`` follows nccl-tests' size for it (kinds.py)

    @property
    def algbw(self) -> float:
        """nbytes / time; 0 for a zero-time collective (one rank, or no bytes), which moves nothing."""
        return self.nbytes / self.time if self.time > 0 else 0.0

    @property
    def busbw(self) -> float:
        """algbw x the kind's nccl-tests factor (2(p-1)/p for all-reduce, (p-1)/p for all-gather...)."""
        return self.algbw * KINDS[self.kind].factor(self.ranks)


@dataclass
class GroupLayout:
    """The ranks of a group split by NVLink domain, in rank order: what schedules are built from."""

    ranks: list[int]
    domains: list[list[int]] = field(default_factory=list)

    @classmethod
    def of(cls, fabric: Fabric, ranks: Sequence[int] | None) -> "GroupLayout":
        topo = fabric.topology
        p_all = topo.num_gpus
        try:
            ranks = list(range(p_all)) if ranks is None else [int(r) for r in ranks]
        except (TypeError, ValueError):
            raise ConfigError(f"ranks must be a list of integers, got {ranks!r}") from None
        if len(ranks) < 1:
            raise ConfigError("a collective needs at least one rank")
        if len(set(ranks)) != len(ranks):
            raise ConfigError("a collective's group lists a rank twice")
        bad = [r for r in ranks if not 0 <= r < p_all]
        if bad:
            raise InfeasibleError(f"rank {bad[0]} is not in the topology, which has {p_all} GPUs")
        ranks = sorted(ranks)
        by_domain: dict[int, list[int]] = {}
        for r in ranks:
            by_domain.setdefault(topo.domain_of(topo.gpus[r]), []).append(r)
        return cls(ranks, [by_domain[d] for d in sorted(by_domain)])

    @property
    def p(self) -> int:
        return len(self.ranks)

    @property
    def ident(self) -> bytes:
        """A digest of the group's ranks and domains: step patterns of different groups never collide."""
        import hashlib

        shape = (id(self.domains), len(self.domains), sum(len(d) for d in self.domains))
        cached = self.__dict__.get("_ident")
        if cached is not None and cached[0] == shape:
            return cached[1]  # schedules ask for it once per step
        h = hashlib.blake2b(digest_size=12)
        for dom in self.domains:
            h.update(np.asarray(dom, dtype=np.int64).tobytes())
            h.update(b"|")
        self.__dict__["_ident"] = (shape, h.digest())
        return h.digest()

    @property
    def multi_domain(self) -> bool:
        return len(self.domains) > 1


def step_group(fabric: Fabric, step: Step, protocol: Protocol, groups: dict, name: str = "") -> tuple:
    """(FlowGroup of ``step`` timed by ``protocol``, the wire latency every one of its flows pays): what
    ``run_schedule`` submits for the step, kept in ``groups`` under (protocol, pattern). A step that
    selects flows of a base pattern is a selection of the base's group (one per protocol and base), so
    the fabric routes the base once. ``name``: the schedule's, the groups' label when the step has none."""
    cached = groups.get((protocol.name, step.pattern))
    if cached is None:
        label = step.label or name
        if step.base is not None:
            base = groups.get((protocol.name, "base", step.base[0]))
            if base is None:
                src, dst, nbytes, key = step.base[1]()
                base = groups[(protocol.name, "base", step.base[0])] = FlowGroup(
                    src, dst, np.asarray(nbytes, dtype=float) / protocol.wire_efficiency, key,
                    label=label, charge_latency=not step.pipelined)
            group = base.select(step.traffic(), charge_latency=not step.pipelined, cache=not step.once)
        else:
            src, dst, nbytes, key = step.traffic()
            group = FlowGroup(src, dst, np.asarray(nbytes, dtype=float) / protocol.wire_efficiency, key,
                              label=label, charge_latency=not step.pipelined, cache=not step.once)
        # the wire latency every flow of the step pays anyway is part of the protocol latency; a flow
        # on a longer path pays the difference on top (so a step never gets faster by gaining a flow)
        wire = fabric.path_latency(group, shortest=True) if len(group) and not step.pipelined else 0.0
        cached = groups[(protocol.name, step.pattern)] = (group, wire)
    return cached


def run_schedule(sim, schedule: Schedule, *, data: dict | None = None, groups: dict | None = None):
    """SimPy process body: run ``schedule`` on ``sim`` (a Simulation); returns the number of steps.

    ``groups`` caches FlowGroups by step pattern across runs of equal schedules (pass the same dict to
    reuse routes and round-cache keys).
    """
    fabric: Fabric = sim.fabric
    env = sim.env
    groups = {} if groups is None else groups
    proto = schedule.protocol
    launch = schedule.launch_latency
    if launch is None:
        launch = proto.launch_latency.get(schedule.latency_algorithm, 0.0)
    if launch > 0:
        yield env.timeout(launch)
    n = 0
    state: dict = {}  # data-carrying mode: what switches hold
    node_rank = {int(v): r for r, v in enumerate(fabric.gpu_index)} if data is not None else {}
    for step in schedule.steps:
        n += 1
        if data is not None and step.apply is not None:
            step.apply(data)
        if data is not None and step.carries is not None:
            carry(data, state, node_rank, step.arrays(), step.carries())
        cached = step_group(fabric, step, step.protocol or proto, groups, schedule.name)
        group, wire_latency = cached
        extra = schedule.step_latency(step) - wire_latency
        if extra > 0:
            yield env.timeout(extra)
        if len(group):
            yield fabric.transfer_group(group)
    return n
