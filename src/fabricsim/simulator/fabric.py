"""Transfers on a SimPy Environment: flow groups, their routes, and the fluid model that moves them.

``Fabric.transfer`` and ``Fabric.transfer_group`` return SimPy events that fire when the last byte has
arrived. Groups submitted at the same simulated instant form one *launch*; the launch is handed to the
fluid model (``fluid.FluidNetwork``) once every process running at that instant has had its turn.

Round caching is what makes 8,192 GPUs affordable: a launch that starts on an otherwise idle fabric and
finishes before anything else starts has a duration that depends only on its flow pattern. Such launches
are remembered by a digest of their (source, destination, size, key) arrays; when the same pattern starts
again on an idle fabric, its groups complete after the remembered durations without solving anything. If
another launch arrives while a remembered one is still running, the remembered one is replayed into the
fluid model up to the present and both continue there, contending as usual: the cache changes no answer
(beyond float rounding: a cached finish time is start + remembered offset), it only skips recomputing one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import numpy as np
import simpy
from numpy.typing import ArrayLike

from fabricsim.errors import ConfigError, InfeasibleError, TopologyError
from fabricsim.simulator.fluid import FluidNetwork, _ranges
from fabricsim.simulator.routing import LinkTable, Router, stable_hash
from fabricsim.topologies.base import Topology

__all__ = ["FlowGroup", "GroupResult", "Fabric"]

_TAG_BITS = 26  # subflow index bits in a fluid tag; the group id sits above them
_TAG_MASK = (1 << _TAG_BITS) - 1


def _path_rows(ptr: np.ndarray, links: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paths ``rows`` of a CSR path table (``links[ptr[i]:ptr[i+1]]`` is path i), as a new table."""
    starts, ends = ptr[rows], ptr[rows + 1]
    new_ptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=new_ptr[1:])
    return new_ptr, links[_ranges(starts, ends)]


def capacity_digest(capacity: np.ndarray) -> bytes:
    """A digest of usable link capacities: what a launch's timing depends on besides its routes."""
    return hashlib.blake2b(np.ascontiguousarray(capacity, dtype=float).tobytes(), digest_size=16).digest()


@dataclass
class FlowGroup:
    """Transfers that start together: flow ``i`` moves ``nbytes[i]`` from node ``src[i]`` to ``dst[i]``.

    Sizes are floats: a collective may split N bytes into p equal shares that are not whole bytes, as
    its closed form does.

    ``src`` and ``dst`` are node indices of the fabric's link table (see ``Fabric.group`` to build one
    from node names or ranks); ``key`` separates flows of one pair for ECMP (e.g. the NCCL channel).
    A group may be submitted many times: its routes and its digest are computed once. ``cache=False``
    marks a group submitted once (a pipeline's fill round): the round cache neither digests nor keeps
    it, which saves both on traffic that never repeats; the fluid model runs it exactly as any other.
    """

    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray
    key: np.ndarray
    label: str = ""
    charge_latency: bool = True
    cache: bool = True  # False: a pattern submitted once, that the round cache neither looks up nor keeps
    _digest: bytes | None = field(default=None, repr=False, compare=False)
    _expanded: tuple | None = field(default=None, repr=False, compare=False)
    _merged: tuple | None = field(default=None, repr=False, compare=False)
    _parent: "FlowGroup | None" = field(default=None, repr=False, compare=False)
    _index: np.ndarray | None = field(default=None, repr=False, compare=False)
    _parent_sub: np.ndarray | None = field(default=None, repr=False, compare=False)
    _routes: object = field(default=None, repr=False, compare=False)  # a root group's RouteSet

    def __post_init__(self):
        self.src = np.asarray(self.src, dtype=np.int64)
        self.dst = np.asarray(self.dst, dtype=np.int64)
        self.nbytes = np.asarray(self.nbytes, dtype=float)
        self.key = np.broadcast_to(np.asarray(self.key, dtype=np.int64), self.src.shape).copy()
        if not (self.src.shape == self.dst.shape == self.nbytes.shape):
            raise ConfigError("a flow group needs as many destinations and sizes as sources")
        if self.nbytes.size and self.nbytes.min() < 0:
            raise ConfigError("a transfer cannot move a negative number of bytes")

    def __len__(self) -> int:
        return self.src.shape[0]

    def select(self, index: ArrayLike, label: str | None = None, charge_latency: bool | None = None,
               cache: bool | None = None) -> "FlowGroup":
        """The flows ``index`` (distinct positions) of this group, as a group of their own.

        A fabric routes a selection from its parent's routes with array operations: a schedule whose
        rounds are subsets of one set of flows (a pipelined tree filling and draining) routes once.
        """
        index = np.asarray(index)
        if index.dtype != np.int32:  # int32 is kept (a pipeline's rounds hold many large indices)
            index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise ConfigError(f"a selection's positions must lie in [0, {len(self)})")
        return _Selection(self, index, self.label if label is None else label,
                          self.charge_latency if charge_latency is None else charge_latency,
                          self.cache if cache is None else cache)

    @property
    def digest(self) -> bytes:
        """Content digest of the flow pattern (sources, destinations, sizes, keys).

        A selection digests its parent's digest and its index (a quarter of the bytes): equal digests
        still mean equal patterns, though a selection and an equal group built afresh differ."""
        if self._digest is None:
            h = hashlib.blake2b(digest_size=16, person=b"lat" if self.charge_latency else b"nolat")
            if self._parent is not None:
                h.update(b"select")
                h.update(self._parent.digest)
                # the index through SHA-256 first (hardware-accelerated on most CPUs: twice blake2b's speed
                # on a pipeline round's ~600 KB index)
                h.update(hashlib.sha256(np.ascontiguousarray(self._index, dtype=np.int64)).digest())
            else:
                arrays = hashlib.sha256()
                for a in (self.src, self.dst, self.nbytes, self.key):
                    arrays.update(np.ascontiguousarray(a))
                h.update(arrays.digest())
            self._digest = h.digest()
        return self._digest

    @property
    def total_bytes(self) -> float:
        return float(self.nbytes.sum())


class _Selection(FlowGroup):
    """Flows ``index`` of a parent group. Only the index is stored: the flows' arrays are gathered from
    the parent when read (a schedule keeps one selection per round, so this is most of its memory)."""

    def __init__(self, parent: FlowGroup, index: np.ndarray, label: str, charge_latency: bool, cache: bool = True):
        self._parent, self._index = parent, index
        self.label, self.charge_latency, self.cache = label, charge_latency, cache
        self._digest = self._expanded = self._merged = self._parent_sub = self._routes = None

    src = property(lambda self: self._parent.src[self._index])
    dst = property(lambda self: self._parent.dst[self._index])
    nbytes = property(lambda self: self._parent.nbytes[self._index])
    key = property(lambda self: self._parent.key[self._index])

    def __len__(self) -> int:
        return self._index.shape[0]


@dataclass(frozen=True)
class GroupResult:
    """When a submitted group started and finished; per-flow finish times when the fabric records flows."""

    start: float
    finish: float
    flow_finish: np.ndarray | None = None

    @property
    def duration(self) -> float:
        return self.finish - self.start


class _Subflows:
    """A routed group's subflows, one per flow and path: the flow of each (``flow``), its share of the
    flow (``frac``), bytes and path latency, the path table (subflow i crosses ``links[ptr[i]:ptr[i+1]]``),
    the links the group loads (``used``) and its bytes on them, where each flow's subflows start when
    they are grouped by flow in flow order (``first``, else None) and whether subflow i is flow i."""

    __slots__ = ("flow", "frac", "sub_bytes", "lat", "ptr", "links", "used", "used_bytes", "first", "one_path")

    def __init__(self, flow, frac, sub_bytes, lat, ptr, links, used, used_bytes, first, one_path):
        self.flow, self.frac, self.sub_bytes, self.lat, self.ptr, self.links = flow, frac, sub_bytes, lat, ptr, links
        self.used, self.used_bytes, self.first, self.one_path = used, used_bytes, first, one_path

    @property
    def size(self) -> int:
        """Array elements held (what the fabric's expansion budget counts)."""
        return self.links.shape[0] + 8 * self.flow.shape[0]


class _Picked:
    """A selection's subflows: the parent's subflows ``keep`` (in the parent's order), ``flow`` their
    flows in the selection. Their bytes, latencies, shares and paths are read from the parent's only
    when asked for (a round of a pipeline needs none of them: ``Fabric._expand_selection``), and so is
    ``flow`` when subflow i is flow i (``identity``): a round's expansion holds little beyond its index.
    ``present``: the parent's merged flows it holds, in order (its own merged flows)."""

    __slots__ = ("parent", "keep", "_flow", "used", "used_bytes", "one_path", "present", "_cut")
    first = None  # selections are cut from, in the general way (``Fabric._select``)

    def __init__(self, parent: _Subflows | "_Picked", keep: np.ndarray, flow: np.ndarray | None, one_path: bool):
        self.parent, self.keep, self._flow, self.one_path = parent, keep, flow, one_path
        self.used = self.used_bytes = self.present = None
        self._cut: dict = {}

    @property
    def flow(self) -> np.ndarray:
        return np.arange(self.keep.shape[0]) if self._flow is None else self._flow

    def _get(self, name: str) -> np.ndarray:
        value = self._cut.get(name)
        if value is None:
            if name in ("ptr", "links"):
                self._cut["ptr"], self._cut["links"] = _path_rows(self.parent.ptr, self.parent.links, self.keep)
                return self._cut[name]
            value = self._cut[name] = getattr(self.parent, name)[self.keep]
        return value

    sub_bytes = property(lambda self: self._get("sub_bytes"))
    lat = property(lambda self: self._get("lat"))
    frac = property(lambda self: self._get("frac"))
    ptr = property(lambda self: self._get("ptr"))
    links = property(lambda self: self._get("links"))

    def size(self, index: np.ndarray) -> int:
        """Array elements held beyond the selection's ``index`` (which ``keep`` may be)."""
        own = [self.keep] if self.keep is not index else []
        own += [] if self._flow is None else [self._flow]
        return sum(a.shape[0] for a in own + list(self._cut.values()))


@dataclass
class _Run:
    """One submission of a group: its event and the subflows still in flight."""

    gid: int
    group: FlowGroup
    event: simpy.Event
    start: float
    left: int
    launch: "_Launch"
    rep_finish: np.ndarray | None = None  # finish time of every merged fluid flow (see Fabric._merged)
    flow_finish: np.ndarray | None = None  # finish time of every flow, once all have finished
    weight: np.ndarray | None = None  # of each merged fluid flow: how many subflows it stands for
    completed: bool = False


@dataclass
class _Launch:
    """Groups submitted at one instant; ``solo`` while nothing else has shared the fabric with them."""

    key: tuple
    start: float
    runs: list
    solo: bool
    busy0: np.ndarray | None = None
    done: int = 0


@dataclass(frozen=True)
class _Record:
    """What a solo launch's pattern costs: per-group durations and per-flow finish offsets, link stats."""

    offsets: tuple
    flow_offsets: tuple
    link_ids: np.ndarray
    link_bytes: np.ndarray
    busy_ids: np.ndarray
    busy_time: np.ndarray


class _RecordStore:
    """Solo launches' records of one router, by (usable capacities, batching tolerance, launch key), the
    least recently used dropped beyond ``budget`` array elements."""

    budget = 8_000_000

    def __init__(self):
        self._items: OrderedDict[tuple, _Record] = OrderedDict()
        self._size = 0

    @classmethod
    def of(cls, router: Router, capacity: np.ndarray, finish_rtol: float) -> "_RecordView":
        store = router.memo.get("rounds")
        if store is None:
            store = router.memo["rounds"] = cls()
        digest = capacity_digest(capacity)
        return _RecordView(store, (digest, float(finish_rtol)))

    @staticmethod
    def _size_of(rec: _Record) -> int:
        return sum(np.size(f) for f in rec.flow_offsets) + 2 * (rec.link_ids.size + rec.busy_ids.size)

    def get(self, key: tuple) -> _Record | None:
        rec = self._items.get(key)
        if rec is not None:
            self._items.move_to_end(key)
        return rec

    def put(self, key: tuple, rec: _Record) -> None:
        size = self._size_of(rec)
        if size > self.budget:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= self._size_of(old)
        self._items[key] = rec
        self._size += size
        while self._size > self.budget:
            self._size -= self._size_of(self._items.popitem(last=False)[1])


@dataclass
class _RecordView:
    """The records of one fabric configuration in a router's shared store."""

    store: _RecordStore
    prefix: tuple

    def get(self, key: tuple) -> _Record | None:
        return self.store.get(self.prefix + (key,))

    def put(self, key: tuple, rec: _Record) -> None:
        self.store.put(self.prefix + (key,), rec)


class Fabric:
    """Flows of bytes over a topology on a SimPy environment, with max-min fair contention.

    Parameters
    ----------
    env : simpy.Environment
    topology : Topology
    cache : bool
        Reuse the timing of a repeated flow pattern that starts on an idle fabric (see module docstring).
    record : {"groups", "flows", None}
        Keep every group's start and finish (default), also every flow's finish, or nothing.
    on_rates : callable, optional
        ``f(time, link_ids, loads)`` after every bandwidth re-solve, for the links whose load changed;
        disables the cache, since a cached launch has no re-solves to report (``Simulation`` traces keep
        the cache and take cached launches through ``on_cached`` instead).
    efficiency : dict, optional
        Usable share of line rate per link kind (e.g. protocol overheads); other kinds get 1.0.
    router : Router, optional
        A router of the same topology to reuse (its route cache survives across simulations).
    finish_rtol : float
        Batch flow completions due within this fraction of their draining time (0, the default, is
        exact; see ``fluid.FluidNetwork``).
    """

    #: Routed groups keep their subflow arrays for reuse; past this many array elements in all, the
    #: least recently used groups not in flight drop theirs, down to three quarters of it (recomputed if
    #: they are submitted again). Sized to hold every round of a 1 GiB tree all-reduce on 8,192 GPUs
    #: (185 rounds of up to ~200k elements each, and the 524k-flow base's ~5M), so the rounds that choosing
    #: its protocol expanded are still there when it is simulated.
    expansion_budget = 32_000_000

    def __init__(self, env: simpy.Environment, topology: Topology, *, cache: bool = True,
                 record: str | None = "groups",
                 on_rates: Callable[[float, np.ndarray, np.ndarray], None] | None = None,
                 efficiency: dict | None = None, router: Router | None = None, finish_rtol: float = 0.0) -> None:
        if record not in ("groups", "flows", None):
            raise ConfigError(f"record must be 'groups', 'flows' or None, not {record!r}")
        self.env = env
        self.topology = topology
        self.router = router if router is not None and router.topology is topology else Router(topology)
        self.links = self.router.links
        self.cache_enabled = cache and on_rates is None
        self.record = record
        self.capacity = self.usable_capacity(self.links, efficiency)
        if not 0.0 <= finish_rtol < 1.0:
            raise ConfigError(f"finish_rtol must be in [0, 1), got {finish_rtol!r}")
        self.fluid = FluidNetwork(self.capacity, on_rates=on_rates, finish_rtol=finish_rtol)
        self._expanded: OrderedDict[int, tuple[FlowGroup, int]] = OrderedDict()
        self._expanded_size = 0
        self.gpu_index = self.router.memo.get("gpu_index")  # node index of every GPU, once per router
        if self.gpu_index is None:
            self.gpu_index = self.router.memo["gpu_index"] = np.array(
                [self.router.node(g) for g in topology.gpus], dtype=np.int64)
            self.gpu_index.flags.writeable = False
        self.link_bytes = np.zeros(len(self.links))
        self.log: list[tuple[str, int, int, float, float]] = []  # label, flows, bytes, start, finish
        self.stats = {"launches": 0, "cache_hits": 0, "replays": 0, "groups": 0, "flows": 0}
        self._pending: list[_Run] = []
        self._runs: dict[int, _Run] = {}
        self._next_gid = 0
        self._version = 0
        # records live on the router, so fresh simulations of the same fabric (same routes, same usable
        # capacities, same batching) reuse them: a launch's timing depends on nothing else
        self._records = _RecordStore.of(self.router, self.capacity, finish_rtol)
        self._uses: dict[tuple, list] = {}  # launch key -> [record, cache hits in this fabric]
        self._solo: _Launch | None = None  # the launch that may become a cache record
        self._fast: tuple | None = None  # (launch, record, pending run indices in finish order)
        self.on_group_done = None  # optional f(group, start, flow_finish) when flows are recorded
        self.on_cached = None  # optional f(start, end, link ids, link bytes) when a cached launch has run to its end
        self._down: np.ndarray | None = None  # links a timed fault took out (set_capacity)
        self._nominal: np.ndarray | None = None
        self._rerouted: dict[int, tuple] = {}
        self._fault = ""

    def keep_own_records(self) -> None:
        """Serve cached launches from this fabric's own round records only, not from earlier simulations'
        (each launch pattern is then solved here once, so ``fluid.on_rates`` sees every load of the run)."""
        self._records = _RecordView(_RecordStore(), self._records.prefix)

    @staticmethod
    def usable_capacity(links: LinkTable, efficiency: dict | None) -> np.ndarray:
        """Every link's line rate times its kind's usable share (``efficiency``; other kinds 1.0): the
        capacities a Fabric of these links drains flows at."""
        codes, kinds = links.kind_codes
        share = np.ones(len(kinds))
        for kind, factor in (efficiency or {}).items():
            if not 0 < factor <= 1:
                raise ConfigError(f"efficiency of {kind!r} links must be in (0, 1], got {factor!r}")
            if kind in kinds:
                share[kinds.index(kind)] = factor
        return links.bandwidth * share[codes]

    # --- building groups --------------------------------------------------------------------------------
    def group(self, src: Sequence[Hashable], dst: Sequence[Hashable], nbytes: ArrayLike, key: ArrayLike = 0,
              label: str = "") -> FlowGroup:
        """A FlowGroup from node names."""
        node = self.router.node
        return FlowGroup(np.array([node(s) for s in src], dtype=np.int64),
                         np.array([node(d) for d in dst], dtype=np.int64),
                         np.broadcast_to(np.asarray(nbytes, dtype=float), (len(src),)), key, label)

    def group_by_rank(self, src_ranks: ArrayLike, dst_ranks: ArrayLike, nbytes: ArrayLike, key: ArrayLike = 0,
                      label: str = "") -> FlowGroup:
        """A FlowGroup between GPUs given by rank (position in ``topology.gpus``)."""
        src_ranks = np.asarray(src_ranks, dtype=np.int64)
        dst_ranks = np.asarray(dst_ranks, dtype=np.int64)
        p = self.gpu_index.shape[0]
        for ranks in (src_ranks, dst_ranks):
            if ranks.size and (ranks.min() < 0 or ranks.max() >= p):
                raise ConfigError(f"rank out of range: the topology has {p} GPUs")
        return FlowGroup(self.gpu_index[src_ranks], self.gpu_index[dst_ranks],
                         np.broadcast_to(np.asarray(nbytes, dtype=float), src_ranks.shape), key, label)

    def links_used(self, group: FlowGroup) -> np.ndarray:
        """Indices of the links the group's flows cross (sorted, unique)."""
        return self._expand(group).used

    def link_loads(self, group: FlowGroup) -> tuple[np.ndarray, np.ndarray]:
        """(links the group's flows cross, sorted; the bytes it puts on each), every flow's bytes split
        over its paths as the fabric splits them."""
        sub = self._expand(group)
        return sub.used, sub.used_bytes

    def subflows(self, group: FlowGroup) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The group's fluid subflows (one per flow and path): (bytes, path latency, path pointer into
        links, links), so that subflow ``i`` crosses ``links[ptr[i]:ptr[i + 1]]``."""
        sub = self._expand(group)
        return sub.sub_bytes, sub.lat, sub.ptr, sub.links

    def path_latency(self, group: FlowGroup, *, shortest: bool = False) -> float:
        """Longest (or shortest) path latency among the group's flows (s)."""
        # a selection's merged flows hold every latency its subflows have (subflows alike share one)
        lat = self._expand(group).lat if group._parent is None else self._merged(group)[6]
        return float(lat.min() if shortest else lat.max()) if lat.size else 0.0

    # --- submitting ---------------------------------------------------------------------------------------
    def transfer(self, src: Hashable, dst: Hashable, nbytes: int, *, key: int = 0, label: str = "") -> simpy.Event:
        """Move ``nbytes`` from node ``src`` to node ``dst``; the event fires when the last byte arrives."""
        return self.transfer_group(self.group([src], [dst], [nbytes], key, label))

    def transfer_group(self, group: FlowGroup) -> simpy.Event:
        """Start every flow of ``group`` now; the event fires with a GroupResult when all have arrived."""
        event = self.env.event()
        if len(group) == 0:
            event.succeed(GroupResult(self.env.now, self.env.now))
            return event
        if self._down is not None:
            group = self._avoiding_down(group)
        self._expand(group)  # routing errors surface here, in the caller's process
        run = _Run(self._next_gid, group, event, self.env.now, 0, None)  # type: ignore[arg-type]
        self._next_gid += 1
        if not self._pending:
            flush = self.env.event()
            flush.callbacks.append(self._flush)
            flush.succeed()
        self._pending.append(run)
        return event

    # --- timed faults -------------------------------------------------------------------------------------
    def set_capacity(self, link_ids: ArrayLike, factor: ArrayLike, label: str = "") -> None:
        """From now on links ``link_ids`` carry ``factor`` of their usable rate (0: the link is down).

        Rates are re-solved at once. Flows in flight on a link that went down move, with the bytes they
        have left, onto a route that avoids every down link (one path each, picked among the new route's
        paths by a stable hash weighted by their shares); groups submitted later route around the down
        links too. The round cache is off from here on: its records describe the fabric as it was.

        Raises
        ------
        InfeasibleError
            A flow in flight, or a later group, has no route left (the fault cut its endpoints apart).
        """
        link_ids = np.asarray(link_ids, dtype=np.int64)
        factor = np.broadcast_to(np.asarray(factor, dtype=float), link_ids.shape)
        now = self.env.now
        if self._fast is not None:
            self._replay_fast()
        self.cache_enabled = False
        if self._solo is not None:
            self._solo.solo = False
            self._solo = None
        self._progress(now)
        tags, t = self.fluid.advance(now)
        if tags.size:
            self._finish_subflows(tags, t)
        if self._nominal is None:
            self._nominal = self.capacity.copy()
        self.fluid.set_capacity(link_ids, self._nominal[link_ids] * factor)
        self._fault = label or "a timed fault"
        down = np.flatnonzero(self.fluid.capacity <= 0)
        if down.size:
            self._down = np.zeros(len(self.links), dtype=bool)
            self._down[down] = True
            self.router = Router(self.topology, self.links, down=down)
            self._reroute(*self.fluid.evict(down))
        elif self._down is not None:  # every link is back: route as the fabric was built
            self._down = None
            self.router = Router(self.topology, self.links)
        self._schedule()

    def _no_route(self, exc: Exception) -> InfeasibleError:
        from fabricsim.units import format_time

        return InfeasibleError(f"{self._fault} (at {format_time(self.env.now)}) leaves no route: {exc}")

    def _reroute(self, tags, left, weight, drain) -> None:
        """Put evicted fluid flows back on routes that avoid the down links (see ``set_capacity``)."""
        if not tags.size:
            return
        paths, lengths = [], []
        for tag, nbytes, w in zip(tags.tolist(), left.tolist(), weight.tolist()):
            run = self._runs[tag >> _TAG_BITS]
            sub_flows = self._expand(run.group)
            flow, ptr, links = sub_flows.flow, sub_flows.ptr, sub_flows.links
            sub = int(self._merged(run.group)[0][tag & _TAG_MASK])
            f = int(flow[sub])
            s, d, k = int(run.group.src[f]), int(run.group.dst[f]), int(run.group.key[f])
            try:
                route = self.router.route(s, d, k)
            except TopologyError as exc:
                raise self._no_route(exc) from None
            u = stable_hash(s, d, k, tag) / 2.0**64
            pick = min(int(np.searchsorted(np.cumsum(route.fractions), u, side="right")), len(route.lengths) - 1)
            path = route.links[route.ptr[pick]:route.ptr[pick + 1]]
            self.link_bytes[links[ptr[sub]:ptr[sub + 1]]] -= nbytes * w
            self.link_bytes[path] += nbytes * w
            paths.append(path)
            lengths.append(path.shape[0])
        new_ptr = np.zeros(len(paths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_ptr[1:])
        self.fluid.add(left, np.maximum(drain, self.env.now), new_ptr, np.concatenate(paths), tags, weight)

    def _avoiding_down(self, group: FlowGroup) -> FlowGroup:
        """``group``, or a fresh copy routed around the down links if its routes (made earlier) cross one."""
        original = group
        seen = self._rerouted.get(id(group))
        if seen is not None and seen[0] is group:
            group = seen[1]
        try:
            if not self._down[self._expand(group).used].any():
                return group
            fresh = FlowGroup(group.src, group.dst, group.nbytes, group.key, group.label, group.charge_latency)
            self._expand(fresh)
        except TopologyError as exc:
            raise self._no_route(exc) from None
        self._rerouted[id(original)] = (original, fresh)
        return fresh

    # --- results ------------------------------------------------------------------------------------------
    def link_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(bytes carried, busy seconds) per link so far, cached launches included."""
        total_bytes = self.link_bytes.copy()
        busy = self.fluid.busy.copy()
        for rec, uses in self._uses.values():
            np.add.at(total_bytes, rec.link_ids, rec.link_bytes * uses)
            np.add.at(busy, rec.busy_ids, rec.busy_time * uses)
        return total_bytes, busy

    # --- internals ----------------------------------------------------------------------------------------
    def _expand(self, group: FlowGroup) -> _Subflows | _Picked:
        """The group's subflows (``_Subflows``), computed once per group; a selection derives its own
        from its parent's (``_expand_selection``)."""
        if group._expanded is None:
            if group._parent is not None:
                return self._expand_selection(group)
            rs = self.router.route_many(group.src, group.dst, group.key)
            flow, frac, lat, ptr, links = rs.flow, rs.frac, rs.lat, rs.ptr, rs.links
            group._routes = rs  # kept for its path classes (merging)
            sub_bytes = group.nbytes[flow] * frac
            if sub_bytes.shape[0] > _TAG_MASK:
                raise ConfigError(f"a flow group may hold at most {_TAG_MASK} paths")
            link_bytes = np.bincount(links, weights=np.repeat(sub_bytes, np.diff(ptr)), minlength=len(self.links))
            used = np.flatnonzero(link_bytes != 0)  # (a bool array: several times faster than floats)
            first = None
            one_path = False
            if flow.shape[0] and flow[0] >= 0 and np.all(flow[1:] >= flow[:-1]):
                count = np.bincount(flow, minlength=len(group))
                first = np.zeros(len(group) + 1, dtype=np.int64)
                np.cumsum(count, out=first[1:])
                one_path = flow.shape[0] == count.shape[0] and bool((count == 1).all())
            group._expanded = _Subflows(flow, frac, sub_bytes, lat, ptr, links, used, link_bytes[used], first, one_path)
            self._track(group, group._expanded.size)
        elif id(group) in self._expanded:
            self._expanded.move_to_end(id(group))
        return group._expanded

    def _expand_selection(self, group: FlowGroup) -> _Picked:
        """``_expand`` of a selection, with its merged flows (``_merged``), in time proportional to the
        selection's flows and its merged flows' path links: a pipeline round selects much of a large
        base whose paths, bytes and latencies it never copies (``_Picked``). Its merged flows are its
        parent's merged flows that it holds (subflows alike in the parent are alike here), their path
        rows read from the parent's table, and its link bytes are those of its merged flows (weight x
        bytes summed on each of their links, as the fluid model loads them)."""
        parent = group._parent
        # the parent first: re-expanding it may drop other groups' arrays (memory budget), never this one's
        p_rep, _, _, _, _, p_rep_bytes, p_rep_lat = self._merged(parent)
        p_inverse = self._inverse(parent)
        p_sub = self._expand(parent)
        flow, keep = self._select(p_sub, group._index, len(parent))
        # merge by counting the parent's merged flows, in their order; the last member represents them
        parent_n = p_rep.shape[0]
        cls = p_inverse[keep]
        weight = np.bincount(cls, minlength=parent_n)
        present = np.flatnonzero(weight != 0)
        weight = weight[present].astype(float)
        member = np.empty(parent_n, dtype=np.int64)
        member[cls] = np.arange(cls.shape[0])
        rep = member[present]
        rep_ptr, rep_links = _path_rows(p_sub.ptr, p_sub.links, keep[rep])
        rep_bytes, rep_lat = p_rep_bytes[present], p_rep_lat[present]
        link_bytes = np.bincount(rep_links, weights=np.repeat(rep_bytes * weight, np.diff(rep_ptr)),
                                 minlength=len(self.links))
        # each selected flow keeps its one subflow (unless a flow was listed twice)
        sub = _Picked(p_sub, keep, flow, p_sub.one_path and keep.shape[0] == len(group))
        sub.used = np.flatnonzero(link_bytes != 0)
        sub.used_bytes = link_bytes[sub.used]
        sub.present = present
        group._parent_sub = keep
        group._expanded = sub
        group._merged = (rep, weight, rep_ptr, rep_links, None, rep_bytes, rep_lat)  # inverse: ``_inverse``
        self._track(group, sub.size(group._index) + 6 * rep.shape[0] + rep_links.shape[0] + sub.used.shape[0])
        return sub

    def _inverse(self, group: FlowGroup) -> np.ndarray:
        """The merged flow of every subflow of a group (``_merged``'s inverse; a selection's is made when
        first asked for: only per-flow finish times need it)."""
        merged = self._merged(group)
        if merged[4] is None:
            p_inverse = self._inverse(group._parent)
            sub = self._expand(group)
            new_id = np.empty(self._merged(group._parent)[0].shape[0], dtype=np.int64)
            new_id[sub.present] = np.arange(sub.present.shape[0])
            merged = group._merged = merged[:4] + (new_id[p_inverse[sub.keep]],) + merged[5:]
        return merged[4]

    def _track(self, group: FlowGroup, size: int) -> None:
        """Count a group's expansion against the budget; drop the oldest idle ones beyond it."""
        old = self._expanded.pop(id(group), None)
        if old is not None:
            self._expanded_size -= old[1]
        self._expanded[id(group)] = (group, size)
        self._expanded_size += size
        if self._expanded_size <= self.expansion_budget:
            return
        busy = {id(r.group) for r in self._runs.values()} | {id(r.group) for r in self._pending}
        for key in list(self._expanded):
            if self._expanded_size <= self.expansion_budget * 3 // 4:
                break
            g, n = self._expanded[key]
            if key in busy or g is group or g is group._parent or any(
                    g is r.group._parent for r in self._runs.values()):  # a selection keeps its parent
                continue
            del self._expanded[key]
            self._expanded_size -= n
            g._expanded = g._merged = g._parent_sub = g._routes = None

    def _merged(self, group: FlowGroup) -> tuple:
        """Identical subflows (same links, bytes and latency) as one weighted fluid flow.

        Returns (representative subflow of each merged flow, weights, path ptr, path links, inverse:
        merged flow of every subflow, bytes, path latency). Channels of a collective often send equal
        chunks between the same GPUs: one flow of weight w drains exactly like w flows, at a w-th of the
        cost. A selection's are made with its subflows (``_expand_selection``).
        """
        if group._merged is None and group._parent is not None:
            group._expanded = None  # dropped with its merged flows (memory budget): made again together
            self._expand(group)
        if group._merged is None:
            cls = self._classes(group)
            sub = self._expand(group)
            # subflows alike: same path class (same links, hence the same latency), then same bytes;
            # one key in the order of (links, bytes), as rows of a path table would sort
            ub, b_inv = np.unique(np.ascontiguousarray(sub.sub_bytes).view(np.int64), return_inverse=True)
            _, rep, inverse, weight = np.unique(cls * ub.shape[0] + b_inv.reshape(-1), return_index=True,
                                                return_inverse=True, return_counts=True)
            rep_ptr, rep_links = _path_rows(sub.ptr, sub.links, rep)
            group._merged = (rep, weight.astype(float), rep_ptr, rep_links, inverse.reshape(-1),
                             sub.sub_bytes[rep], sub.lat[rep])
        return group._merged

    def _classes(self, group: FlowGroup) -> np.ndarray:
        """Per subflow, its path's rank among the distinct paths of the root group it comes from (the
        order of link ids, so any subset keeps the order of its rows)."""
        if group._parent is None:
            self._expand(group)
            return group._routes.classes()
        parent = self._classes(group._parent)
        self._expand(group)  # after the parent: re-expanding it may have dropped this group's arrays
        return parent[group._parent_sub]

    @staticmethod
    def _select(parent: _Subflows | _Picked, index: np.ndarray, n_parent: int) -> tuple[np.ndarray, np.ndarray]:
        """Subflows of the parent's flows ``index``: (flow of each, in the selection; the parent subflow
        it is), in the parent's order (vectorised: no routing, no Python loop per flow).

        When the parent's subflows are grouped by flow in flow order (a routed group's are), the
        selected flows' runs of subflows are cut out directly, in time proportional to the selection
        (a pipeline round selects a part of its base); otherwise every parent subflow is tested."""
        flow, first, one_path = parent.flow, parent.first, parent.one_path
        rows = None
        if first is not None:  # parent subflows sorted by flow: flow i owns [first[i], first[i+1])
            if index.shape[0] < 2 or bool((index[1:] > index[:-1]).all()):
                rows, order = index, None
            else:  # the selected flows in parent order; order[j]: the position of rows[j] in index
                order = np.argsort(index, kind="stable")
                rows = index[order]
                if not bool((rows[1:] > rows[:-1]).all()):
                    rows = None  # a flow listed twice: the general path below
        if rows is None:
            new_id = np.full(n_parent, -1, dtype=np.int64)
            new_id[index] = np.arange(index.shape[0])
            keep = np.flatnonzero(new_id[flow] >= 0)
            return new_id[flow[keep]], keep
        if one_path:  # one subflow per flow: subflow i is flow i (None: the selection's flows in order)
            return (None if order is None else order), rows
        if order is None:
            order = np.arange(index.shape[0])
        return np.repeat(order, first[rows + 1] - first[rows]), _ranges(first[rows], first[rows + 1])

    def _flush(self, _event) -> None:
        runs, self._pending = self._pending, []
        now = self.env.now
        self._progress(now)
        idle = self.cache_enabled and self.fluid.active == 0 and self._fast is None
        # the pattern key serves the cache alone, which only launches on an idle fabric use, and only
        # those whose groups may repeat (a group with cache=False says it will not)
        solo = idle and all(r.group.cache for r in runs)
        launch = _Launch(tuple(r.group.digest for r in runs) if solo else (), now, runs, solo=solo)
        self.stats["launches"] += 1
        self.stats["groups"] += len(runs)
        self.stats["flows"] += sum(len(r.group) for r in runs)
        for r in runs:
            r.launch = launch
        record = self._records.get(launch.key) if launch.solo else None
        if record is not None:
            self.stats["cache_hits"] += 1
            self._start_fast(launch, record)
            return
        if self._fast is not None:
            self._replay_fast()
        if self._solo is not None:
            self._solo.solo = False
            self._solo = None
        if idle:  # with the cache on, a launch on an idle fabric starts from a clean fluid state
            self.fluid.reset_clock(now)
        if launch.solo:
            self._solo = launch
            launch.busy0 = self.fluid.busy.copy()
        tags, t = self.fluid.advance(now)  # flows due within float tolerance of now finish here
        if tags.size:
            self._finish_subflows(tags, t)
        for r in runs:
            self._add_to_fluid(r, now)
        self._schedule()

    def _add_to_fluid(self, run: _Run, start: float) -> None:
        sub = self._expand(run.group)
        rep, weight, rep_ptr, rep_links, _, rep_bytes, rep_lat = self._merged(run.group)
        run.left = sub.keep.shape[0] if run.group._parent is not None else sub.flow.shape[0]
        if self.record == "flows" or run.launch.solo:
            run.rep_finish = np.full(rep.shape[0], np.nan)
        self._runs[run.gid] = run
        run.weight = weight
        tags = (run.gid << _TAG_BITS) | np.arange(rep.shape[0], dtype=np.int64)
        drain = start + rep_lat if run.group.charge_latency else np.full(rep.shape, start)
        self.fluid.add(rep_bytes, drain, rep_ptr, rep_links, tags, weight)
        self.link_bytes[sub.used] += sub.used_bytes

    def _schedule(self) -> None:
        t = self.fluid.next_event_time()
        if t == np.inf:
            return
        self._version += 1
        version = self._version
        wake = self.env.timeout(max(0.0, t - self.env.now))
        wake.callbacks.append(lambda _e: self._on_wake(version, t))

    def _on_wake(self, version: int, target: float) -> None:
        if version != self._version:
            return  # rates changed since this wake-up was planned
        self._progress(max(self.env.now, target))
        self._schedule()

    def _progress(self, until: float) -> None:
        """Process every fluid event due by ``until``."""
        fluid = self.fluid
        while fluid.active and fluid.next_event_time() <= until:
            tags, t = fluid.step()
            if tags.size:
                self._finish_subflows(tags, t)

    def _finish_subflows(self, tags: np.ndarray, t: float) -> None:
        gid = int(tags[0]) >> _TAG_BITS
        if gid == int(tags[-1]) >> _TAG_BITS and (tags.shape[0] < 3 or (
                int(tags.min()) >> _TAG_BITS == gid and int(tags.max()) >> _TAG_BITS == gid)):
            parts = [(tags & _TAG_MASK, gid)]  # one group (the common case)
        else:  # several groups: sort them apart
            gids = tags >> _TAG_BITS
            subs = tags & _TAG_MASK
            order = np.argsort(gids, kind="stable")
            gids, subs = gids[order], subs[order]
            bounds = np.flatnonzero(np.diff(gids)) + 1
            parts = zip(np.split(subs, bounds), gids[np.r_[0, bounds]].tolist())
        for g_reps, gid in parts:
            run = self._runs[gid]
            run.left -= int(run.weight[g_reps].sum())
            if run.rep_finish is not None:
                run.rep_finish[g_reps] = t
            if run.left == 0:
                del self._runs[gid]
                if run.completed:
                    continue  # replayed from the cache: its event fired already
                if run.rep_finish is not None:
                    run.flow_finish = self._flow_finish(run)
                self._complete(run, t, run.flow_finish)

    def _complete(self, run: _Run, t: float, flow_finish: np.ndarray | None) -> None:
        run.completed = True
        if self.record is not None:
            self.log.append((run.group.label, len(run.group), run.group.total_bytes, run.start, t))
        launch = run.launch
        launch.done += 1
        if self.on_group_done is not None and flow_finish is not None:
            self.on_group_done(run.group, run.start, flow_finish)
        run.event.succeed(GroupResult(run.start, float(t), flow_finish if self.record == "flows" else None))
        if launch.solo and launch.done == len(launch.runs):
            self._remember(launch)

    def _flow_finish(self, run: _Run) -> np.ndarray:
        """Finish time of every flow of a run: the last of its subflows (a flow may take several paths)."""
        sub_finish = run.rep_finish[self._inverse(run.group)]
        sub = self._expand(run.group)
        if sub.one_path:  # one subflow per flow
            finish = np.empty(len(run.group))
            finish[sub.flow] = sub_finish
            return finish
        finish = np.full(len(run.group), -np.inf)
        np.maximum.at(finish, sub.flow, sub_finish)
        return finish

    def _remember(self, launch: _Launch) -> None:
        """Store a finished solo launch's timing under its pattern key."""
        self._solo = None
        offsets, flow_offsets, ids, vals = [], [], [], []
        for r in launch.runs:
            finish = r.flow_finish if r.flow_finish is not None else self._flow_finish(r)
            flow_offsets.append(finish - launch.start)
            offsets.append(float(finish.max() - launch.start))
            sub = self._expand(r.group)
            ids.append(sub.used)
            vals.append(sub.used_bytes)
        link_ids = np.concatenate(ids)
        link_bytes = np.concatenate(vals)
        busy = self.fluid.busy - launch.busy0
        busy_ids = np.flatnonzero(busy != 0)
        self._records.put(launch.key, _Record(tuple(offsets), tuple(flow_offsets), link_ids, link_bytes,
                                            busy_ids, busy[busy_ids]))
        # this first run's bytes and busy time are already in the dense totals; later hits add via _uses

    # --- cached launches ------------------------------------------------------------------------------------
    def _start_fast(self, launch: _Launch, record: _Record) -> None:
        order = sorted(range(len(launch.runs)), key=lambda i: record.offsets[i])
        self._fast = (launch, record, order)
        self._version += 1
        self._schedule_fast()

    def _schedule_fast(self) -> None:
        launch, record, order = self._fast
        version = self._version
        wake = self.env.timeout(max(0.0, launch.start + record.offsets[order[0]] - self.env.now))
        wake.callbacks.append(lambda _e: self._on_fast(version))

    def _on_fast(self, version: int) -> None:
        if version != self._version or self._fast is None:
            return
        launch, record, order = self._fast
        while order and launch.start + record.offsets[order[0]] <= self.env.now:
            i = order.pop(0)
            run = launch.runs[i]
            run.completed = True
            finish = launch.start + record.offsets[i]
            flow_finish = launch.start + record.flow_offsets[i] if self.record == "flows" else None
            if self.record is not None:
                self.log.append((run.group.label, len(run.group), run.group.total_bytes, run.start, finish))
            if self.on_group_done is not None and flow_finish is not None:
                self.on_group_done(run.group, run.start, flow_finish)
            run.event.succeed(GroupResult(run.start, float(finish), flow_finish))
        if order:
            self._schedule_fast()
        else:
            self._fast = None
            self._uses.setdefault(launch.key, [record, 0])[1] += 1
            if self.on_cached is not None:  # told once it ran to its end: a replayed launch reports its own rates
                self.on_cached(launch.start, launch.start + max(record.offsets), record.link_ids, record.link_bytes)

    def _replay_fast(self) -> None:
        """Another launch arrives during a cached one: rebuild the cached one's fluid state up to now.

        Every group of the launch is replayed from its start, those already completed included, so that
        link bytes and busy time come out exactly as if the launch had never been cached.
        """
        launch, _record, _order = self._fast
        self._fast = None
        self._version += 1
        self.stats["replays"] += 1
        launch.solo = False
        self.fluid.reset_clock(launch.start)
        for run in launch.runs:
            self._add_to_fluid(run, launch.start)
        self._progress(self.env.now)
