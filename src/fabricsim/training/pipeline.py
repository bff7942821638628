"""Pipeline parallelism: 1F1B and interleaved 1F1B as SimPy processes, one per stage, exchanging
activations and their gradients as point-to-point flows on the fabric.

Schedules (Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM", arXiv:2104.04473, section 2.2; Megatron-Core's ``forward_backward_pipelining_with_interleaving``):
stage ``s`` of ``p`` holds ``v`` model chunks; chunk ``k`` of stage ``s`` is global chunk ``g = k p + s``, so a
micro-batch's forward walks the stages ``v`` times around. With ``m`` micro-batches there are ``m v``
virtual micro-batches per stage. Stage ``s`` first runs ``W_s`` warm-up forwards (``p - s - 1`` for
1F1B; ``2 (p - s - 1) + (v - 1) p`` interleaved, at most ``m v``), then alternates one forward and one
backward, then drains the remaining backwards. Virtual micro-batch ``i`` is micro-batch
``(i // (p v)) p + i % p`` of chunk ``(i % (p v)) // p`` going forward (chunks in reverse going backward);
Megatron requires ``m`` to be a multiple of ``p`` for the interleaved schedule and so does this module.

Every operation waits for its input: a forward for the activation of the previous global chunk, a
backward for the gradient from the next one (the last chunk's backward for its own forward). The stage
computes for the operation's time, then sends its output asynchronously (Llama 3's asynchronous P2P,
Megatron's overlapped P2P) and moves on. No formula produces the bubble: it is whatever idle time this
schedule leaves. With free communication and equal stages, the step is ``(m + p - 1)(t_f + t_b)`` for
1F1B, a bubble of ``(p - 1) / (m + p - 1)``, and ``(m v + p - 1)(t_f + t_b) / v`` interleaved, a bubble of
``(p - 1) / (v m + p - 1)`` (the tests' oracle).

Scale: the data-parallel replicas, tensor ranks and context ranks of a stage run the same schedule in
lock-step (they are symmetric and wait for each other at every collective), so ONE process per stage
stands for all of them, and each stage boundary's sends are ONE flow group holding the pairs of every
replica (``gpus / p`` pairs, each over ``P2P_CHANNELS`` flows as NCCL splits them): 8,192 GPUs in 16 stages
is 16 processes and one group per send, contending with each other on the fabric. A group completes when
its slowest flow does, which is when the slowest replica could proceed: with many replicas this takes the
worst replica at every hop, an upper bound on the step (the worst replica overall may differ per hop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fabricsim.errors import ConfigError

__all__ = ["PipelineSpec", "PipelineResult", "BoundaryTimes", "boundary_times", "schedule_ops", "simulate_pipeline",
           "P2P_CHANNELS", "P2P_MODES"]

# NCCL spreads a point-to-point transfer to a network peer over NCCL_NCHANNELS_PER_NET_PEER channels
# (default 2, NCCL environment-variable documentation), i.e. two flows with their own ECMP hash.
P2P_CHANNELS = 2


def _boundary_group(fabric, src_ranks, dst_ranks, nbytes: float, label: str):
    """One stage boundary's sends, every replica's pair split over P2P_CHANNELS flows."""
    src = np.repeat(np.asarray(src_ranks, dtype=np.int64), P2P_CHANNELS)
    dst = np.repeat(np.asarray(dst_ranks, dtype=np.int64), P2P_CHANNELS)
    key = np.tile(np.arange(P2P_CHANNELS, dtype=np.int64), len(src_ranks))
    return fabric.group_by_rank(src, dst, float(nbytes) / P2P_CHANNELS, key=key, label=label)


@dataclass
class PipelineSpec:
    """What the pipeline simulation needs.

    ``forward[g]`` / ``backward[g]``: seconds of one micro-batch's forward / backward on global chunk ``g``
    (``p v`` chunks); ``stage_ranks[s]``: the ranks of stage ``s`` (every replica), position-aligned so
    that ``stage_ranks[s][i]`` sends to ``stage_ranks[s+1][i]``; ``p2p_bytes``: bytes each rank sends per
    activation (the same back for its gradient). ``gate[s][k]``: the earliest time chunk ``k`` of stage ``s``
    may finish its first forward (parameters gathered: ZeRO-1/2 overlapped all-gather), optional.
    """

    stages: int
    virtual: int
    micro_batches: int
    forward: list
    backward: list
    stage_ranks: list | None = None
    p2p_bytes: float = 0.0
    gate: list | None = None
    label: str = ""

    def __post_init__(self):
        p, v, m = self.stages, self.virtual, self.micro_batches
        if len(self.forward) != p * v or len(self.backward) != p * v:
            raise ConfigError(f"pipeline needs {p * v} chunk times, got {len(self.forward)}/{len(self.backward)}")
        if m < 1:
            raise ConfigError("a pipeline needs at least one micro-batch")
        if v > 1 and m % p:
            raise ConfigError(f"the interleaved schedule needs the micro-batches ({m}) to be a multiple of the "
                              f"pipeline stages ({p}), as Megatron-LM requires")


@dataclass
class PipelineResult:
    """When each stage did what: ``ops[s]`` = list of (kind "F"/"B", chunk k, micro-batch, start, end)."""

    time: float
    ops: list
    sends: list = field(default_factory=list)  # (boundary label, start, end)
    p2p_bytes_per_rank: float = 0.0
    p2p_bounds: tuple = (0.0, 0.0)  # (lo, hi) step time of the P2P bracket; lo == hi when exact

    def busy(self, s: int) -> float:
        return float(sum(e - b for _, _, _, b, e in self.ops[s]))

    def last_backward(self, s: int, k: int) -> tuple[float, float]:
        """(start, end) of the final backward of chunk ``k`` on stage ``s`` (when its gradients are done)."""
        rows = [(b, e) for kind, kk, _, b, e in self.ops[s] if kind == "B" and kk == k]
        return max(rows, key=lambda r: r[1])

    def first_forward_start(self, s: int) -> float:
        return min(b for kind, _, _, b, _ in self.ops[s] if kind == "F")


def schedule_ops(p: int, v: int, m: int, s: int) -> list[tuple[str, int, int]]:
    """The operations of stage ``s`` in order: (kind, local chunk, micro-batch); see the module docstring."""
    total = m * v
    if v == 1:
        warmup = min(p - s - 1, m)
    else:
        warmup = min((p - s - 1) * 2 + (v - 1) * p, total)

    def which(i: int, forward: bool) -> tuple[int, int]:
        chunk = (i % (p * v)) // p
        if not forward:
            chunk = v - 1 - chunk
        return chunk, (i // (p * v)) * p + i % p

    ops = [("F", *which(i, True)) for i in range(warmup)]
    for i in range(total - warmup):
        ops.append(("F", *which(warmup + i, True)))
        ops.append(("B", *which(i, False)))
    ops += [("B", *which(i, False)) for i in range(total - warmup, total)]
    return ops


class _Overlap(Exception):
    """Two sends over one stage boundary overlapped in time: the shortcut is not exact, simulate flows."""


def _boundaries(spec: PipelineSpec) -> list[tuple[int, int]]:
    """(from stage, to stage) of every send direction the schedule uses."""
    p = spec.stages
    pairs = {(s, s + 1) for s in range(p - 1)} | {(s + 1, s) for s in range(p - 1)}
    if spec.virtual > 1:
        pairs |= {(p - 1, 0), (0, p - 1)}
    return sorted(pairs)


@dataclass(frozen=True)
class BoundaryTimes:
    """Each boundary's send (every replica's pairs): bounds on its duration, and its exact time when alone.

    ``lo[(a, b)]``: no send over ``a -> b`` can be faster, whatever else runs: every link it crosses must
    carry its bytes, ``min latency + max over links (its bytes on the link / capacity)``. ``hi[(a, b)]``: no
    send can be slower while at most one send per boundary and direction is in flight: under max-min
    fairness a flow gets at least ``capacity / flows`` on its bottleneck link, so at least
    ``min over its links (capacity / flows)`` at every instant, counting the subflows of every boundary's
    send on each link; the subflow ends by ``latency + bytes / that rate`` (a bound that holds for any
    subset of those flows, so for any moment of the schedule). ``disjoint``: no two boundaries' sends
    share a link; then ``alone`` holds each send simulated alone on an idle fabric, which is exact.
    """

    lo: dict
    hi: dict
    disjoint: bool
    alone: dict | None = None


def boundary_times(make_sim, spec: PipelineSpec) -> BoundaryTimes:
    """Bound every stage boundary's send (see ``BoundaryTimes``); simulate each alone when they are disjoint."""
    fabric = make_sim().fabric
    cap = fabric.capacity
    paths, counts = {}, np.zeros(cap.shape[0])
    groups = {}
    for a, b in _boundaries(spec):
        groups[(a, b)] = _boundary_group(fabric, spec.stage_ranks[a], spec.stage_ranks[b], spec.p2p_bytes,
                                         f"pp {a}->{b}")
        paths[(a, b)] = fabric.subflows(groups[(a, b)])
        counts += np.bincount(paths[(a, b)][3], minlength=cap.shape[0])
    share = cap / np.maximum(counts, 1.0)
    lo, hi, disjoint = {}, {}, True
    for key, (sub_bytes, lat, ptr, links) in paths.items():
        per_link = np.repeat(sub_bytes, np.diff(ptr))
        load = np.bincount(links, weights=per_link, minlength=cap.shape[0])
        used = np.flatnonzero(load)
        lo[key] = float(lat.min() + np.max(load[used] / cap[used]))
        hi[key] = float(np.max(lat + sub_bytes / np.minimum.reduceat(share[links], ptr[:-1])))
        disjoint &= bool(np.all(counts[used] == np.bincount(links, minlength=cap.shape[0])[used]))
    alone = None
    if disjoint:
        alone = {}
        for key, group in groups.items():
            one = make_sim()
            one.fabric.transfer_group(group)
            alone[key] = one.run().time
    return BoundaryTimes(lo, hi, disjoint, alone)


#: How the P2P sends are timed: "auto" (exact shortcut when boundaries share no link, else the bracket
#: when it is narrow or the flows too many), "bracket" (always the bracket), "flows" (every send simulated
#: as flows on the fabric, the reference: exact and slow).
P2P_MODES = ("auto", "bracket", "flows")
#: "auto" accepts the bracket when ``hi - lo <= BRACKET_TOLERANCE x hi``.
BRACKET_TOLERANCE = 0.01
#: "auto" simulates flows when the bracket is wider and the schedule's sends hold at most this many flows
#: in all (sends x flows per send; about 10 s of CPU).
FLOW_BUDGET = 1_000_000


def simulate_pipeline(sim, spec: PipelineSpec, *, trace_ranks: bool = False, make_sim=None,
                      p2p: str = "auto") -> PipelineResult:
    """Run the schedule on ``sim`` (a Simulation whose fabric carries the P2P flows); returns the timeline.

    Without ``stage_ranks`` or with ``p2p_bytes == 0`` communication is free (the oracle case). With
    ``make_sim`` (a factory of fresh Simulations of the same fabric) and ``p2p`` "auto" or "bracket",
    the sends are not simulated as flows during the schedule; each boundary's send is timed beforehand
    (``boundary_times``) and the schedule is run with those durations:

    - the boundaries share no link ("auto"): each send takes its time simulated alone, exact as long as
      no two sends over one boundary overlap in time (checked while running; otherwise the bracket);
    - otherwise, the bracket: the schedule runs twice, with every send taking its lower bound (``lo``:
      its bytes through its busiest link) and its upper bound (``hi``: every flow at its worst-case
      max-min share with every boundary sending in both directions at once), see ``BoundaryTimes``.
      Sends that overlap over one boundary share it: in ``lo`` they go first in, first out (for equal
      sends the earliest each can finish under any sharing), in ``hi`` all the sends of a busy period
      arrive when the period ends (the latest any can). A step is a max-plus function of the send
      arrival times, so it is monotone in them: the step with flow-level contention lies between the two
      runs (the tests check it against the flow simulation). The ``hi`` run is returned (never
      optimistic) with ``p2p_bounds = (lo.time, hi.time)``. "auto" returns it when the bracket is
      narrower than ``BRACKET_TOLERANCE`` of the step or the sends are too many flows to simulate
      (``FLOW_BUDGET``), and otherwise simulates the flows.

    ``p2p="flows"`` (or ``make_sim`` None, or ``trace_ranks``) simulates every send as flows on ``sim``.
    """
    if p2p not in P2P_MODES:
        raise ConfigError(f"p2p must be one of {', '.join(P2P_MODES)}, got {p2p!r}")
    free = spec.stage_ranks is None or spec.p2p_bytes <= 0 or spec.stages == 1
    if make_sim is not None and not free and not trace_ranks and p2p != "flows":
        times = boundary_times(make_sim, spec)
        if times.alone is not None and p2p == "auto":
            try:
                res = _run(make_sim(), spec, False, times.alone)
                res.p2p_bounds = (res.time, res.time)
                return res
            except _Overlap:
                pass
        lo = _run(make_sim(), spec, False, times.lo, queue="fifo")
        hi = _run(make_sim(), spec, False, times.hi, queue="batch")
        hi.p2p_bounds = (lo.time, hi.time)
        flows = len(hi.sends) * P2P_CHANNELS * len(spec.stage_ranks[0])
        if p2p == "bracket" or hi.time - lo.time <= BRACKET_TOLERANCE * hi.time or flows > FLOW_BUDGET:
            return hi
    res = _run(sim, spec, trace_ranks, None)
    res.p2p_bounds = (res.time, res.time)
    return res


def _run(sim, spec: PipelineSpec, trace_ranks: bool, times: dict | None, queue: str = "") -> PipelineResult:
    env, fabric = sim.env, sim.fabric
    p, v, m = spec.stages, spec.virtual, spec.micro_batches
    chunks = p * v
    done: dict = {}  # (kind, g, j) -> event fired when the output of that op has arrived where it is needed
    ops_log: list = [[] for _ in range(p)]
    sends: list = []
    free = spec.stage_ranks is None or spec.p2p_bytes <= 0 or p == 1

    def event(key):
        ev = done.get(key)
        if ev is None:
            ev = done[key] = env.event()
        return ev

    groups: dict = {}
    in_flight: dict = {}  # boundary -> end of its latest send (shortcut mode)
    waiting: dict = {}  # boundary -> (event, start) of the sends of its current busy period ("batch")

    def flow_group(s_from: int, s_to: int, what: str):
        key = (s_from, s_to)
        if key not in groups:
            groups[key] = _boundary_group(fabric, spec.stage_ranks[s_from], spec.stage_ranks[s_to], spec.p2p_bytes,
                                          f"pp {what} {s_from}->{s_to}")
        return groups[key]

    def deliver(target_key, s_from, s_to, what):
        target = event(target_key)
        if free:
            target.succeed()
            return
        t0 = env.now
        label = f"{what} {s_from}->{s_to}"
        if times is None:
            ev = fabric.transfer_group(flow_group(s_from, s_to, what))
            ev.callbacks.append(lambda _ev: (sends.append((label, t0, env.now)), target.succeed()))
            return
        key = (s_from, s_to)
        busy_until = in_flight.get(key, -1.0)
        if busy_until > t0 and not queue:
            raise _Overlap
        end = max(t0, busy_until) + times[key]
        in_flight[key] = end
        if queue != "batch":  # exact shortcut, or first-in first-out (each send in turn)
            env.timeout(end - t0).callbacks.append(lambda _ev: (sends.append((label, t0, env.now)), target.succeed()))
            return
        # every send of a busy period arrives when the period ends (the latest any of them can under sharing)
        waiting.setdefault(key, []).append((target, t0))
        n = len(waiting[key])

        def period_end(_ev):
            if len(waiting.get(key, ())) != n:
                return  # a later send extended the busy period: its own timeout delivers
            for tgt, start in waiting.pop(key, []):
                sends.append((label, start, env.now))
                tgt.succeed()
        env.timeout(end - t0).callbacks.append(period_end)

    def stage(s: int):
        gates = spec.gate[s] if spec.gate is not None else None
        first_fwd_of = set()
        for kind, k, j in schedule_ops(p, v, m, s):
            g = k * p + s
            if kind == "F":
                if g > 0:
                    yield event(("F", g - 1, j))
                start = env.now
                yield sim.compute(s, float(spec.forward[g]), f"F{j} chunk {k}") if trace_ranks \
                    else env.timeout(float(spec.forward[g]))
                if gates is not None and k not in first_fwd_of:
                    first_fwd_of.add(k)
                    if env.now < gates[k]:
                        yield env.timeout(gates[k] - env.now)
                ops_log[s].append(("F", k, j, start, env.now))
                if g < chunks - 1:
                    deliver(("F", g, j), s, (s + 1) % p, "act")
                else:
                    event(("F", g, j)).succeed()
            else:
                if g < chunks - 1:
                    yield event(("B", g + 1, j))
                else:
                    yield event(("F", g, j))
                start = env.now
                yield sim.compute(s, float(spec.backward[g]), f"B{j} chunk {k}") if trace_ranks \
                    else env.timeout(float(spec.backward[g]))
                ops_log[s].append(("B", k, j, start, env.now))
                if g > 0:
                    deliver(("B", g, j), s, (s - 1) % p, "grad")

    procs = [env.process(stage(s)) for s in range(p)]
    sim.run()
    for s, proc in enumerate(procs):
        if not proc.triggered:  # pragma: no cover - a schedule bug, never a user error
            raise RuntimeError(f"pipeline stage {s} deadlocked")
    end = max(ops[-1][4] for ops in ops_log)
    per_rank = 0.0 if free else float(spec.p2p_bytes) * len(sends) / p
    return PipelineResult(end, ops_log, sends, per_rank)
