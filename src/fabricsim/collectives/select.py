"""Choosing and running an all-reduce: algorithm names, ``"auto"``, and the simulate-one-collective API.

``algorithm="auto"`` does what NCCL's tuner does, pick the fastest algorithm for this size and fabric,
but measures instead of estimating: each available algorithm is simulated alone on an idle copy of the
fabric and the fastest wins (the choice is remembered per group and size).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fabricsim.collectives.base import CollectiveResult, GroupLayout, Schedule, run_schedule, step_group
from fabricsim.collectives.cost import Shape, hierarchical_cost, nvls_cost, ring_cost, tree_cost
from fabricsim.collectives.hierarchical import hierarchical_allreduce
from fabricsim.collectives.nvls import nvls_allreduce, switch_islands
from fabricsim.collectives.nvls_tree import nvls_tree_allreduce
from fabricsim.collectives.protocol import CALIBRATED, PROTOCOLS, Calibration, Protocol, choose_protocol
from fabricsim.collectives.ring import MAX_CHANNELS, ring_allreduce
from fabricsim.collectives.sharp import sharp_allreduce, sharp_capable
from fabricsim.collectives.tree import tree_allreduce
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.simulator.fabric import capacity_digest
from fabricsim.simulator.fluid import _ranges
from fabricsim.topologies.base import paused_gc

if TYPE_CHECKING:
    from simpy.events import Process

    from fabricsim.simulator.engine import Simulation
    from fabricsim.simulator.fabric import Fabric
    from fabricsim.topologies.base import Topology

__all__ = ["ALGORITHMS", "available_algorithms", "build_allreduce", "allreduce", "AllreduceRunner",
           "concurrent_allreduce", "estimate_allreduce", "fastest_protocol", "group_shape", "protocol_cost"]

ALGORITHMS = ("ring", "tree", "hierarchical", "nvls", "sharp", "auto")


def _has_nvls(fabric, layout: GroupLayout) -> bool:
    """NVLS needs NVLink switch chips, and NCCL leaves it off for two GPUs or fewer in one island
    (src/transport/nvls.cc: ``gpuCount <= 2``)."""
    try:
        islands = switch_islands(fabric, layout)
    except InfeasibleError:
        return False
    return any(len(i) > 2 for i in islands) or (len(islands) > 1 and any(len(i) > 1 for i in islands))


def available_algorithms(fabric: Fabric, layout: GroupLayout) -> list[str]:
    """Algorithms that make sense for this group: ring and tree always; hierarchical across domains;
    NVLS where the GPUs hang off NVLink switch chips; SHARP where, in addition, several switch islands
    are joined by network switches that the fabric declares SHARP-capable (``sharp=True``)."""
    algos = ["ring", "tree"]
    if layout.multi_domain:
        algos.append("hierarchical")
    if _has_nvls(fabric, layout):
        algos.append("nvls")
        if layout.multi_domain and len(switch_islands(fabric, layout)) > 1 and sharp_capable(fabric):
            algos.append("sharp")
    return algos


def group_shape(topology, calibration: Calibration, domains: Sequence[Sequence[int]]) -> Shape:
    """The cost model's view of a group whose ranks are split by NVLink domain as ``domains``:
    per-GPU usable NVLink, NIC and NVLS bandwidths of its first GPU, channels as the ring uses them."""
    gpu = topology.gpus[domains[0][0]]
    nvl_kind = next((d.get("kind") for _, _, d in topology.graph.out_edges(gpu, data=True)
                     if str(d.get("kind", "")).startswith("nvlink")), None)
    nvl = topology.injection_bandwidth(gpu)
    nic = topology.nic_bandwidth(gpu)
    b_nic = nic * max([v for k, v in calibration.link_efficiency.items() if not k.startswith("nvlink")] or [1.0])
    if nvl == 0 and nic == 0:  # a user fabric of other link kinds: the GPU's own links carry everything
        nvl_kind = next((d.get("kind") for _, _, d in topology.graph.out_edges(gpu, data=True)), None)
        nvl = topology.injection_bandwidth(gpu, kind_prefix="")
    m = max(len(d) for d in domains)
    return Shape(sum(len(d) for d in domains), len(domains), m,
                 nvl * calibration.link_efficiency.get(nvl_kind, 1.0), b_nic,
                 1 if len(domains) == 1 else max(1, min(MAX_CHANNELS, m)),
                 nvl * calibration.link_efficiency.get(nvl_kind, 1.0)
                 / calibration.nvls_factor(nvl_kind, m if len(domains) > 1 else sum(len(d) for d in domains))
                 if str(nvl_kind).startswith("nvlink") else 0.0)


def protocol_cost(fabric, layout: GroupLayout, nbytes: int, algorithm: str, *,
                  calibration: Calibration = CALIBRATED):
    """``cost(protocol) -> s``: the cost model's estimate of a ring (or tree) all-reduce of this group, for
    collectives that rank protocols by estimate (reduce-scatter and all-gather are its halves)."""
    shape = group_shape(fabric.topology, calibration, layout.domains)
    cost = tree_cost if algorithm == "tree" else ring_cost
    return lambda proto: cost(proto, shape, nbytes)


#: Distinct step patterns per schedule whose busiest link ``_lower_bound`` finds by routing them; the rest
#: take the injection bound alone (a pipeline's fill rounds are each their own pattern).
LINK_BOUND_PATTERNS = 4096


def _lower_bound(fabric, schedule: Schedule, drains: dict | None = None, capacity: np.ndarray | None = None) -> float:
    """No run of ``schedule`` on an idle fabric is faster: launch, then per step its protocol latency
    plus the time the step's bytes need to drain (``run_schedule`` waits out the protocol latency beyond
    the wire latency all of the step's flows pay, then the flows pay theirs and drain, and the next step
    starts when the last flow has arrived).

    A step drains no faster than its busiest node injects its bytes (sent / the node's usable link
    capacity out), nor than its busiest link carries them: ``max_l bytes_l / capacity_l`` over the
    step's routes (each flow split over its paths as the fabric splits it), which is the tighter bound
    (the busiest of a node's links carries at least its share) and the one that sees a NIC or a
    switch uplink. Both are computed on the traffic before the protocol's wire efficiency, which
    divides them. Link loads need routes, so only the ``LINK_BOUND_PATTERNS`` patterns that repeat most
    are routed, and not at all when timed faults may re-route flows during the run. ``drains`` caches
    a pattern's drain time across the candidate protocols of one choice (patterns name traffic, not
    protocols: ``Step``). ``capacity``: the usable link capacities the schedule will run on (default
    ``fabric.capacity``; ``fastest_protocol`` passes those of the calibration it simulates with).
    """
    lt = fabric.links
    capacity = fabric.capacity if capacity is None else capacity
    proto = schedule.protocol
    total = schedule.launch_latency
    if total is None:
        total = proto.launch_latency.get(schedule.latency_algorithm, 0.0)
    drains = {} if drains is None else drains
    steps = list(schedule.steps)
    if "inject" not in drains:
        drains["inject"] = np.bincount(lt.src, weights=capacity, minlength=len(lt.nodes))
        drains["capacity"] = capacity
    if "routed" not in drains:
        count: dict = {}
        for step in steps:
            count[step.pattern] = count.get(step.pattern, 0) + 1
        timed = bool(fabric.topology.meta.get("timed_faults"))
        drains["routed"] = set() if timed else {pat for pat, n in sorted(
            count.items(), key=lambda kv: -kv[1])[:LINK_BOUND_PATTERNS]}
    for step in steps:
        sp = step.protocol or proto
        drain = drains.get(("drain", step.pattern))
        if drain is None:
            drain = drains[("drain", step.pattern)] = _step_drain(fabric, step, drains, schedule.name)
        total += schedule.step_latency(step) + drain / sp.wire_efficiency
    return total


def _step_drain(fabric, step, drains: dict, name: str = "") -> float:
    """Least time ``step``'s raw bytes need to leave their sources and cross the busiest link (see
    ``_lower_bound``); a step that is a subset of a larger pattern routes that pattern once.

    Given ``drains["groups"]`` (``run_schedule``'s FlowGroup cache, ``name`` the schedule's) and
    ``drains["groups_protocol"]``, a routed subset step's loads are read from the FlowGroup that the
    simulation under that protocol submits for it (``step_group``), made here and kept there: a
    pipeline round is then expanded once, for its bound and its run."""
    routed = step.pattern in drains["routed"]
    if step.base is not None:
        if routed and "groups" in drains:
            return _group_drain(fabric, step, drains, name)
        return _subset_drain(fabric, step, drains, routed)
    src, dst, nbytes, key = step.traffic()
    src = np.asarray(src, dtype=np.int64)
    nbytes = np.broadcast_to(np.asarray(nbytes, dtype=float), src.shape)
    inject = drains["inject"]
    sent = np.bincount(src, weights=nbytes, minlength=len(inject))
    drain = _busiest(sent, inject)
    if not routed or not src.size:
        return drain
    rs = fabric.router.route_many(src, np.asarray(dst, dtype=np.int64),
                                  np.broadcast_to(np.asarray(key, dtype=np.int64), src.shape))
    load = np.bincount(rs.links, weights=np.repeat(nbytes[rs.flow] * rs.frac, np.diff(rs.ptr)),
                       minlength=len(drains["capacity"]))
    return max(drain, _busiest(load, drains["capacity"]))


def _busiest(load: np.ndarray, capacity: np.ndarray, count: np.ndarray | None = None) -> float:
    """max over loaded entries of load / capacity (0 if none); ``count``: entries with no flow are unloaded."""
    on = load > 0 if count is None else (count > 0) & (load > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.where(on, load / capacity, 0.0), initial=0.0))


class _SubsetLoads:
    """Bytes sent per node and carried per link by a subset of a base pattern's flows, kept up to date
    from one subset to the next by adding the flows that joined and removing those that left.

    The steps of a pipeline (a tree's rounds) are subsets of one base that differ from the previous
    round by a few levels of the tree, so each base flow is added once and removed once instead of
    every round re-summing all of its flows. Integer counts of flows per node and per link say which are
    loaded at all (a float sum of added and removed bytes may leave a residue where nothing flows); the
    loads themselves may differ from a fresh sum by float rounding, far below the ``_BOUND_RTOL`` slack
    of the bound test."""

    def __init__(self, fabric, base: list, drains: dict, routed: bool):
        self.b_src, self.b_bytes, (b_dst, b_key) = base[0], base[1], base[2]
        self.routes = None
        if routed:  # the whole base routed once (the router caches it for the simulation too)
            rs = fabric.router.route_many(self.b_src, np.asarray(b_dst, dtype=np.int64),
                                          np.broadcast_to(np.asarray(b_key, dtype=np.int64), self.b_src.shape))
            self.routes = (rs, np.searchsorted(rs.flow, np.arange(len(self.b_src) + 1)))  # flows sorted
        self.n_nodes, self.n_links = len(drains["inject"]), len(drains["capacity"])
        self.member = np.zeros(len(self.b_src), dtype=bool)  # the base flows of the current subset
        self.rows = np.zeros(0, dtype=np.int64)  # and their positions, sorted
        self.mark = np.zeros(len(self.b_src), dtype=bool)  # scratch, all False between calls
        self.sent, self.sent_n = np.zeros(self.n_nodes), np.zeros(self.n_nodes, dtype=np.int64)
        self.load, self.load_n = np.zeros(self.n_links), np.zeros(self.n_links, dtype=np.int64)

    def _sums(self, flows: np.ndarray) -> tuple:
        src = self.b_src[flows]
        sent = np.bincount(src, weights=self.b_bytes[flows], minlength=self.n_nodes)
        sent_n = np.bincount(src, minlength=self.n_nodes)
        if self.routes is None:
            return sent, sent_n, None, None
        rs, first = self.routes
        subs = _ranges(first[flows], first[flows + 1])
        lens = rs.ptr[subs + 1] - rs.ptr[subs]
        weight = np.repeat(self.b_bytes[rs.flow[subs]] * rs.frac[subs], lens)
        links = rs.links[_ranges(rs.ptr[subs], rs.ptr[subs + 1])]
        return (sent, sent_n, np.bincount(links, weights=weight, minlength=self.n_links),
                np.bincount(links, minlength=self.n_links))

    def move_to(self, idx: np.ndarray) -> bool:
        """Make the loads those of base flows ``idx`` (distinct); False if ``idx`` repeats a flow.

        In time proportional to this subset and the previous one, not to the base."""
        rows = idx if idx.shape[0] < 2 or bool((idx[1:] > idx[:-1]).all()) else np.sort(idx)
        if rows.shape[0] > 1 and rows is not idx and not bool((rows[1:] > rows[:-1]).all()):
            return False
        joined = rows[~self.member[rows]]
        self.mark[rows] = True
        left = self.rows[~self.mark[self.rows]]
        self.mark[rows] = False
        if joined.size + left.size >= idx.shape[0]:  # little in common: sum afresh
            self.sent, self.sent_n, self.load, self.load_n = self._sums(idx)
        else:
            for flows, sign in ((joined, 1), (left, -1)):
                if flows.size:
                    sent, sent_n, load, load_n = self._sums(flows)
                    self.sent += sign * sent
                    self.sent_n += sign * sent_n
                    if load is not None:
                        self.load += sign * load
                        self.load_n += sign * load_n
        self.member[left] = False
        self.member[joined] = True
        self.rows = rows
        return True


def _group_drain(fabric, step, drains: dict, name: str) -> float:
    """``_step_drain`` of a routed subset step, from its FlowGroup (see ``_step_drain``): the busiest link's
    load over capacity, in raw bytes (the group's are divided by its protocol's wire efficiency). That
    is the whole bound: every flow leaves its source on one of the source's links, so a node's sent
    bytes over its capacity out never exceed its busiest link's load over capacity; unless a flow
    crosses no link (no path latency at all), whose bytes are then counted at their source."""
    protocol = drains["groups_protocol"]
    group, _ = step_group(fabric, step, protocol, drains["groups"], name)
    if not len(group):
        return 0.0
    links, load = fabric.link_loads(group)
    drain = _busiest(load, drains["capacity"][links]) * protocol.wire_efficiency
    if fabric.path_latency(group, shortest=True) <= 0.0:
        sent = np.bincount(np.asarray(group.src), weights=np.asarray(group.nbytes) * protocol.wire_efficiency,
                           minlength=len(drains["inject"]))
        drain = max(drain, _busiest(sent, drains["inject"]))
    return drain


def _subset_drain(fabric, step, drains: dict, routed: bool) -> float:
    """``_step_drain`` of a step that selects flows of a base pattern (``Step.base``)."""
    base = drains.get(("base", step.base[0]))
    if base is None:
        b_src, b_dst, b_bytes, b_key = step.base[1]()
        b_src = np.asarray(b_src, dtype=np.int64)
        b_bytes = np.broadcast_to(np.asarray(b_bytes, dtype=float), b_src.shape)
        base = drains[("base", step.base[0])] = [b_src, b_bytes, (b_dst, b_key), {}]
    idx = np.asarray(step.traffic(), dtype=np.int64)
    if not idx.size:
        return 0.0
    loads = base[3].get(routed)
    if loads is None:
        loads = base[3][routed] = _SubsetLoads(fabric, base, drains, routed)
    if not loads.move_to(idx):  # a flow listed twice: sum this subset on its own
        sent, _, load, _ = loads._sums(idx)
        drain = _busiest(sent, drains["inject"])
        return drain if load is None else max(drain, _busiest(load, drains["capacity"]))
    drain = _busiest(loads.sent, drains["inject"], loads.sent_n)
    if loads.routes is None:
        return drain
    return max(drain, _busiest(loads.load, drains["capacity"], loads.load_n))


def _time_alone(fabric, schedule: Schedule, calibration: Calibration, groups: dict | None = None) -> tuple[float, int]:
    """Simulated time and step count of ``schedule`` alone on an idle copy of the fabric (``groups``: the
    FlowGroups of its steps made so far, see ``run_schedule``)."""
    from fabricsim.simulator.engine import Simulation

    sim = Simulation(fabric.topology, efficiency=calibration.link_efficiency, router=fabric.router, record=None)
    proc = sim.process(run_schedule(sim, schedule, groups=groups))
    sim.run()
    return sim.env.now, proc.value


def fastest_protocol(fabric, make, estimate, calibration: Calibration, memo: dict | None = None,
                     key=None, alone: tuple | None = None) -> Protocol:
    """The protocol under which ``make(protocol)`` (a schedule builder) finishes first when simulated.

    NCCL's tuner takes the protocol of smallest estimated time; here every candidate gets a lower bound
    on its simulated time (``_lower_bound``), candidates are simulated in the order of their bounds, and
    one is simulated only while its bound is below the best simulated time so far (the bounds are tight:
    usually only the winner is simulated). The estimate (``estimate(protocol)``, the algorithm's cost
    model) breaks ties: among equal simulated times the protocol it ranks first wins. The choice is
    therefore exactly the protocol of smallest simulated time, so a collective's time with ``auto`` is
    the minimum of its times under each protocol: it grows with the message and falls when links get
    faster whenever each protocol's does.

    ``alone`` (a key naming this group and collective, see ``_alone_key``): the winner's simulation is
    kept in ``memo``, so that running the chosen schedule alone on an idle fabric afterwards
    (``alone_result``) is not simulated a second time.
    """
    if memo is not None and key in memo:
        return memo[key]
    ranked = sorted((calibration.protocols or PROTOCOLS).values(), key=estimate)
    # the bounds read their steps' loads from the FlowGroups that the simulation of the protocol of
    # largest wire efficiency submits (simple: NCCL's pick for large messages, where a pipeline's rounds
    # are the costliest to expand), so that simulation expands each step once, not twice
    shared = max(ranked, key=lambda pr: pr.wire_efficiency)
    drains: dict = {"groups": {}, "groups_protocol": shared}
    # what _time_alone's fabric drains at (the caller's fabric may use other efficiencies)
    capacity = fabric.usable_capacity(fabric.links, calibration.link_efficiency)
    candidates = []
    for rank, proto in enumerate(ranked):
        # schedules are built again to be simulated: holding every candidate's steps costs ~1 KB a step;
        # thousands of small steps and closures: no full collections over the fabric while they are made
        with paused_gc():
            bound = _lower_bound(fabric, make(proto), drains, capacity) if len(ranked) > 1 else 0.0
        candidates.append((bound, rank, proto))
    best, best_rank, best_time, best_steps = None, len(ranked), float("inf"), 0
    for bound, rank, proto in sorted(candidates, key=lambda c: c[:2]):
        # it cannot beat the best, nor tie it ranked earlier (the slack absorbs the bound's float rounding,
        # which can put a tight bound a few ulps above the simulated time)
        if (bound * (1 - _BOUND_RTOL), rank) > (best_time, best_rank):
            break
        t, steps = _time_alone(fabric, make(proto), calibration, drains["groups"] if proto is shared else None)
        if (t, rank) < (best_time, best_rank):
            best, best_rank, best_time, best_steps = proto, rank, t, steps
    if memo is not None:
        memo[key] = best
        if alone is not None:
            memo[alone] = (fabric.router, capacity_digest(capacity), best.name, best_time, best_steps)
    return best


#: Relative slack of the bound test in ``fastest_protocol`` (float rounding, not modelling).
_BOUND_RTOL = 1e-9


def _alone_key(layout: GroupLayout, nbytes: int, algorithm: str, channels, calibration) -> tuple:
    """What a run of one all-reduce alone on an idle fabric depends on besides the fabric itself: the
    group's exact ranks (not only its shape: routes differ), size, algorithm, channels, calibration."""
    return ("alone", layout.ident, nbytes, algorithm, channels, _Same(calibration))


def alone_result(memo: dict | None, fabric, layout: GroupLayout, nbytes: int, algorithm: str, channels,
                 calibration: Calibration, schedule: Schedule) -> CollectiveResult | None:
    """The result of running ``schedule`` (built by ``build_allreduce`` with ``memo``) alone on an idle
    fabric like ``fabric``, if choosing its protocol already simulated exactly that; else None.

    The choice's simulation used the same routes (``fabric.router``), the same usable capacities and
    the same schedule, so its time is the run's time (up to float rounding of the round cache). A
    hierarchical all-reduce is its levels one after the other, each starting on an idle fabric (the
    next phase starts when the last flow of the previous one has arrived), so its time and steps are
    the sums of its levels' (the intra level pays the launch latency, the inter level none), except under
    timed faults, which strike each level at another point of its run than in the whole run.
    """
    if memo is None or algorithm not in ("ring", "tree", "hierarchical"):
        return None
    if algorithm == "hierarchical" and fabric.topology.meta.get("timed_faults"):
        return None  # its inter level was simulated from time 0, but runs later: it meets the faults elsewhere
    key = _alone_key(layout, nbytes, algorithm, channels, calibration)
    want = [(key, schedule.protocol.name)]
    if algorithm == "hierarchical":
        inter = schedule.protocol_label.split("+")[-1] if schedule.protocol_label else schedule.protocol.name
        want = [(key + ("intra",), schedule.protocol.name)]
        if layout.multi_domain:
            want.append((key + ("inter",), inter))
    time, steps = 0.0, 0
    digest = None
    for k, name in want:
        hit = memo.get(k)
        if hit is None or hit[0] is not fabric.router or hit[2] != name:
            return None
        digest = digest or capacity_digest(fabric.capacity)
        if hit[1] != digest:
            return None
        time, steps = time + hit[3], steps + hit[4]
    return CollectiveResult(schedule.name, schedule.protocol_label or schedule.protocol.name, layout.p, nbytes,
                            time, steps)


def build_allreduce(fabric, layout: GroupLayout, nbytes: int, algorithm: str, *, protocol: str = "auto",
                    calibration: Calibration = CALIBRATED, channels: int | None = None,
                    memo: dict | None = None) -> Schedule:
    """The schedule of one all-reduce (not ``"auto"``: see AllreduceRunner).

    ``protocol="auto"`` picks, per algorithm, the protocol that is fastest in simulation
    (``fastest_protocol``); hierarchical picks one for its intra-domain phases and one for its
    inter-domain phase. NVLS and SHARP run on Simple only, as in NCCL. ``memo`` remembers the choices
    (keyed by group, size and algorithm; an AllreduceRunner keeps one).
    """
    if algorithm not in ALGORITHMS or algorithm == "auto":
        raise ConfigError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    choose = protocol == "auto" and algorithm in ("ring", "tree", "hierarchical") and layout.p > 1 and nbytes > 0
    if not choose:
        proto = choose_protocol(nbytes, "simple" if algorithm in ("nvls", "sharp") or protocol == "auto"
                                else protocol, protocols=getattr(calibration, "protocols", None))
    if algorithm in ("ring", "tree"):
        build = ring_allreduce if algorithm == "ring" else tree_allreduce
        cost = ring_cost if algorithm == "ring" else tree_cost

        def make(pr: Protocol) -> Schedule:
            return build(fabric, layout, nbytes, pr, channels=channels)
        if choose:
            shape = group_shape(fabric.topology, calibration, layout.domains)
            proto = fastest_protocol(fabric, make, lambda pr: cost(pr, shape, nbytes), calibration, memo,
                                     _choice_key(layout, shape, nbytes, algorithm, channels, calibration),
                                     _alone_key(layout, nbytes, algorithm, channels, calibration))
        return make(proto)
    if algorithm == "hierarchical":
        def make_level(levels):
            return lambda pr: hierarchical_allreduce(fabric, layout, nbytes, pr, intra="ring", inter="ring",
                                                     calibration=calibration, levels=levels)
        inter = None
        if choose:
            shape = group_shape(fabric.topology, calibration, layout.domains)
            simple = calibration.protocol("simple")
            key = _choice_key(layout, shape, nbytes, algorithm, None, calibration)
            alone = _alone_key(layout, nbytes, algorithm, None, calibration)
            proto = fastest_protocol(fabric, make_level(("intra",)),
                                     lambda pr: hierarchical_cost(pr, simple, shape, nbytes), calibration, memo,
                                     key + ("intra",), alone + ("intra",))
            inter = fastest_protocol(fabric, _no_launch(make_level(("inter",))),
                                     lambda pr: hierarchical_cost(simple, pr, shape, nbytes), calibration, memo,
                                     key + ("inter",), alone + ("inter",)) if layout.multi_domain else proto
        sched = hierarchical_allreduce(fabric, layout, nbytes, proto, intra="ring", inter="ring",
                                       calibration=calibration, inter_protocol=inter)
        if inter is not None and inter is not proto:
            sched.protocol_label = f"{proto.name}+{inter.name}"
        return sched
    if not _has_nvls(fabric, layout):
        raise InfeasibleError(f"{algorithm} needs more than two GPUs attached to the same NVLink switch chips "
                              "(NCCL never runs NVLS on two GPUs or fewer)")
    if algorithm == "sharp":
        return sharp_allreduce(fabric, layout, nbytes, proto, calibration)
    if len(switch_islands(fabric, layout)) == 1:
        return nvls_allreduce(fabric, layout, nbytes, proto, calibration)
    return nvls_tree_allreduce(fabric, layout, nbytes, proto, calibration)


def _choice_key(layout: GroupLayout, shape: Shape, nbytes: int, algorithm: str, channels, calibration) -> tuple:
    """What a protocol choice depends on, as in NCCL's tuner: the group's shape (ranks per NVLink domain,
    per-GPU bandwidths), not which GPUs it holds, so equal groups (the data-parallel groups of a step)
    share one choice, made by simulating the first of them."""
    return (shape, tuple(len(d) for d in layout.domains), nbytes, algorithm, channels, _Same(calibration))


class _Same:
    """A memo key's part standing for one object by identity, holding it: while the key exists the
    object lives, so no other object can take its ``id`` (a bare ``id`` could be reused by a calibration
    made after this one was dropped, and find this one's protocol choices). Calibrations hold dicts, so
    they cannot be hashed by value."""

    __slots__ = ("obj",)

    def __init__(self, obj) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def _no_launch(make):
    """A schedule builder whose schedules pay no launch latency (a level after the first)."""
    def build(pr: Protocol) -> Schedule:
        sched = make(pr)
        sched.launch_latency = 0.0
        return sched
    return build


def allreduce(sim: Simulation, nbytes: int, *, ranks: Sequence[int] | None = None, algorithm: str = "ring",
              protocol: str = "auto", calibration: Calibration = CALIBRATED, channels: int | None = None,
              data: dict | None = None, groups: dict | None = None, memo: dict | None = None) -> Process:
    """Start an all-reduce in ``sim``; returns the SimPy process, whose value is a CollectiveResult.

    ``memo`` remembers protocol choices across calls (pass ``AllreduceRunner.memo``)."""
    if algorithm == "auto":
        raise ConfigError("algorithm 'auto' is resolved by AllreduceRunner.choose before a run")
    _check_run(nbytes, algorithm, channels)
    layout = GroupLayout.of(sim.fabric, ranks)
    if layout.p == 1:  # one rank: a zero-byte, zero-time operation on any fabric (busbw reported as 0)
        return sim.env.process(nothing(CollectiveResult(algorithm, "simple", 1, nbytes, 0.0, 0)))
    schedule = build_allreduce(sim.fabric, layout, nbytes, algorithm, protocol=protocol,
                               calibration=calibration, channels=channels, memo=memo)
    return _start(sim, layout, nbytes, schedule, data, groups)


def _start(sim: Simulation, layout: GroupLayout, nbytes: int, schedule: Schedule, data: dict | None = None,
           groups: dict | None = None) -> Process:
    """Run a built all-reduce schedule in ``sim``; the process's value is its CollectiveResult."""
    def body():
        start = sim.env.now
        steps = 0
        if layout.p > 1 and nbytes > 0:
            steps = yield sim.env.process(run_schedule(sim, schedule, data=data, groups=groups))
        return CollectiveResult(schedule.name, schedule.protocol_label or schedule.protocol.name, layout.p, nbytes,
                                sim.env.now - start, steps)
    return sim.env.process(body())


#: Most channels a run accepts: a bound that keeps a run finite, above the 32 rings NCCL builds at most.
MAX_RUN_CHANNELS = 64


def _check_run(nbytes, algorithm, channels) -> None:
    """The arguments every all-reduce entry point shares, checked before any work (ConfigError)."""
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    check_size_and_channels(nbytes, channels)


def check_size_and_channels(nbytes, channels) -> None:
    """A size in 0..2**50 bytes and ``channels`` None or in 1..MAX_RUN_CHANNELS (ConfigError), for any
    collective's entry point."""
    from fabricsim.units import MAX_BYTES

    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes <= MAX_BYTES:
        raise ConfigError(f"message size must be a non-negative whole number of bytes, at most 2**50, "
                          f"got {nbytes!r}")
    if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int)
                                 or not 1 <= channels <= MAX_RUN_CHANNELS):
        raise ConfigError(f"channels must be an integer in 1..{MAX_RUN_CHANNELS}, got {channels!r}")


def nothing(result):
    """A SimPy process body that returns ``result`` at once (a one-rank collective)."""
    return result
    yield  # a generator: SimPy runs it as a process that ends at once


def concurrent_allreduce(runner: AllreduceRunner, nbytes: int, groups: Sequence[Sequence[int]],
                         algorithm: str) -> list[CollectiveResult]:
    """Every group all-reduces ``nbytes`` at the same instant on an idle fabric: each group's result.

    The groups are simulated in independent blocks (``simulator.blocks``: the times of one joint
    simulation, up to float rounding). The partition found is remembered in ``runner.memo`` and tried
    first by the next call with the same groups (another size or algorithm usually splits alike).
    """
    from fabricsim.simulator.blocks import run_in_blocks

    def starter(ranks):
        return lambda sim: allreduce(sim, nbytes, ranks=ranks, algorithm=algorithm, protocol=runner.protocol,
                                     calibration=runner.calibration, memo=runner.memo)

    hint = ("concurrent blocks", tuple(tuple(int(r) for r in g) for g in groups))
    runs = run_in_blocks(lambda **options: runner.simulation(record=None, **options), [starter(g) for g in groups],
                         blocks=runner.memo.get(hint))
    runner.memo[hint] = runs.blocks
    return runs.values


class AllreduceRunner:
    """Simulates single all-reduces on one topology, reusing its routes across runs (for sweeps).

    ``memo`` keeps the protocol choices of ``protocol="auto"`` and ``_choice`` the algorithm choices of
    ``"auto"``, per group and size.

    Raises
    ------
    ConfigError
        ``topology`` is not a Topology (build one with ``fabricsim.build(name)``), or an unknown
        ``protocol``; :meth:`run` also refuses a size outside 0..2**50 bytes, an unknown algorithm and
        ``channels`` outside 1..64.
    """

    def __init__(self, topology: Topology, *, calibration: Calibration = CALIBRATED,
                 protocol: str = "auto") -> None:
        from fabricsim.simulator.engine import Simulation
        from fabricsim.topologies.base import Topology

        if not isinstance(topology, Topology):
            hint = f" (build it with fabricsim.build({topology!r}))" if isinstance(topology, str) else ""
            raise ConfigError(f"AllreduceRunner needs a Topology, got {type(topology).__name__}{hint}")
        if not isinstance(calibration, Calibration):
            raise ConfigError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        if protocol != "auto":
            choose_protocol(0, protocol)  # ConfigError for an unknown name

        self.topology = topology
        self.calibration = calibration
        self.protocol = protocol
        self._Simulation = Simulation
        self._router = None
        self._choice: dict = {}
        self.memo: dict = {}
        self._concurrent: dict = {}

    def simulation(self, **options: Any) -> Simulation:
        sim = self._Simulation(self.topology, efficiency=self.calibration.link_efficiency, router=self._router,
                               **options)
        self._router = sim.fabric.router
        return sim

    def run(self, nbytes: int, algorithm: str = "ring", *, ranks: Sequence[int] | None = None,
            data: dict | None = None, trace: str | None = None, channels: int | None = None,
            trace_ranks: str | Sequence[int] | None = None) -> CollectiveResult:
        """One all-reduce alone on an idle fabric; ``trace`` writes its Perfetto timeline (only the
        GPU tracks of ``trace_ranks``, if given; a failed run leaves no file)."""
        _check_run(nbytes, algorithm, channels)
        if algorithm == "auto":
            algorithm = self.choose(nbytes, ranks)
        if data is None and trace is None:
            return self._alone(nbytes, ranks, algorithm, channels)
        sim = self.simulation(trace=trace if trace is not None else False, record="groups" if trace else None,
                              trace_ranks=trace_ranks)
        try:
            proc = allreduce(sim, nbytes, ranks=ranks, algorithm=algorithm, protocol=self.protocol,
                             calibration=self.calibration, channels=channels, data=data, memo=self.memo)
            sim.run()
            if trace is not None:
                sim.write_trace(trace)
        finally:
            if sim.tracer is not None:
                sim.tracer.discard()  # a no-op once written; a failed run leaves no file
        return proc.value

    def run_concurrent(self, nbytes: int, groups: Sequence[Sequence[int]], algorithm: str) -> CollectiveResult:
        """Every group all-reduces ``nbytes`` at the same instant on an idle fabric; the slowest result."""
        if algorithm == "auto":
            algorithm = self.choose(nbytes, groups=groups)
        key = (tuple(tuple(g) for g in groups), int(nbytes), algorithm)
        if key not in self._concurrent and len(groups) == 1:
            self._concurrent[key] = self._alone(int(nbytes), groups[0], algorithm, None)
        if key not in self._concurrent:  # simulated in independent blocks (simulator/blocks.py)
            self._concurrent[key] = max(concurrent_allreduce(self, int(nbytes), groups, algorithm),
                                        key=lambda r: r.time)
        return self._concurrent[key]

    def _alone(self, nbytes: int, ranks, algorithm: str, channels: int | None) -> CollectiveResult:
        """One all-reduce alone on an idle fabric: the simulation that chose its protocol, if that was
        exactly this run (``alone_result``), else a fresh one."""
        sim = self.simulation(record=None)
        _check_run(nbytes, algorithm, channels)
        layout = GroupLayout.of(sim.fabric, ranks)
        if layout.p == 1:
            return CollectiveResult(algorithm, "simple", 1, nbytes, 0.0, 0)
        schedule = build_allreduce(sim.fabric, layout, nbytes, algorithm, protocol=self.protocol,
                                   calibration=self.calibration, channels=channels, memo=self.memo)
        hit = alone_result(self.memo, sim.fabric, layout, nbytes, algorithm, channels, self.calibration, schedule)
        if hit is not None:
            return hit
        proc = _start(sim, layout, nbytes, schedule)
        sim.run()
        return proc.value

    def choose(self, nbytes: int, ranks: Sequence[int] | None = None, *,
               groups: Sequence[Sequence[int]] | None = None) -> str:
        """The fastest available algorithm for this size: for the group ``ranks`` alone, or with all of
        ``groups`` running at once (as the data-parallel groups of a training step do). Simulated,
        remembered."""
        sim = self.simulation(record=None)
        if groups is not None:
            layouts = [GroupLayout.of(sim.fabric, g) for g in groups]
            key = (tuple(lay.ident for lay in layouts), nbytes)
            if key not in self._choice:
                times = {a: self.run_concurrent(nbytes, groups, a).time
                         for a in available_algorithms(sim.fabric, layouts[0])}
                self._choice[key] = min(times, key=times.get)
            return self._choice[key]
        layout = GroupLayout.of(sim.fabric, ranks)
        key = (layout.ident, nbytes)
        if key not in self._choice:
            times = {a: self.run(nbytes, a, ranks=ranks).time for a in available_algorithms(sim.fabric, layout)}
            self._choice[key] = min(times, key=times.get)
        return self._choice[key]


def estimate_allreduce(topology, nbytes: int, algorithm: str, *, calibration: Calibration = CALIBRATED,
                       protocol: str = "auto") -> CollectiveResult:
    """A closed-form estimate (``--model analytic``): the cost model of ``cost.py`` (the one that ranks
    protocols for ``auto``) with the fabric's per-GPU NVLink and NIC bandwidths, the calibrated
    efficiencies and NCCL's latency rows. No contention beyond the per-GPU bottleneck; all GPUs of the
    topology take part. ``protocol="auto"`` takes the protocol (for hierarchical, the pair) of smallest
    estimate."""
    from fabricsim.topologies.base import Topology

    if not isinstance(topology, Topology):
        raise ConfigError(f"estimate_allreduce needs a Topology, got {type(topology).__name__}")
    _check_run(nbytes, algorithm, None)
    if algorithm == "sharp":
        raise InfeasibleError("sharp has no closed-form estimate; run it with --model simulate")
    p = topology.num_gpus
    rank = {g: i for i, g in enumerate(topology.gpus)}
    doms = [[rank[g] for g in d] for d in topology.domains]
    shape = group_shape(topology, calibration, doms)
    has_nvlink = shape.b_nvls > 0 and any(str(k).startswith("nvlink") for _, _, k in
                                          topology.graph.out_edges(topology.gpus[0], data="kind"))
    if algorithm == "auto":
        options = ["ring", "tree"] + (["hierarchical"] if shape.domains > 1 else []) + (["nvls"] if has_nvlink else [])
        results = [estimate_allreduce(topology, nbytes, a, calibration=calibration, protocol=protocol) for a in options]
        return min(results, key=lambda r: r.time)
    names = list(PROTOCOLS) if protocol == "auto" and algorithm != "nvls" else \
        [choose_protocol(nbytes, "simple" if protocol == "auto" else protocol).name]
    if p == 1 or nbytes == 0:
        return CollectiveResult(algorithm, names[0], p, nbytes, 0.0)
    if shape.domains > 1 and shape.b_nic <= 0:
        raise InfeasibleError("the topology has several NVLink domains but no NICs between them")
    if algorithm == "nvls":
        if not has_nvlink:
            raise InfeasibleError("nvls needs NVLink switch chips")
        return CollectiveResult(algorithm, "simple", p, nbytes, nvls_cost(shape, nbytes))
    if algorithm == "hierarchical" and shape.domains > 1:
        t, a, b = min((hierarchical_cost(PROTOCOLS[a], PROTOCOLS[b], shape, nbytes), a, b) for a in names for b in names)
        return CollectiveResult(algorithm, a if a == b else f"{a}+{b}", p, nbytes, t)
    cost = tree_cost if algorithm == "tree" else ring_cost
    t, name = min((cost(PROTOCOLS[n], shape, nbytes), n) for n in names)
    return CollectiveResult(algorithm, name, p, nbytes, t)
