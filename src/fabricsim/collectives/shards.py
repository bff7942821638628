"""Reduce-scatter and all-gather: the two halves of an all-reduce, as collectives of their own.

``nbytes`` is nccl-tests' size: the full buffer (a reduce-scatter's input, an all-gather's output), cut
into p shards; shard j (elements ``j n/p .. (j+1) n/p``) belongs to the rank at group position j (its
output for a reduce-scatter, its input for an all-gather), as with NCCL's in-place calls.

Algorithms (per rank bandwidth B, per-step latency a, p ranks):

- ``ring``: p-1 steps of N/(C p) per channel (ring.py). Contention-free T = (p-1) a + (p-1)/p N/B, the
  bandwidth lower bound of both collectives without in-network help (nccl-tests' busbw factor (p-1)/p).
- ``nvls`` (NVLink SHARP, one switch island): a reduce-scatter pulls every shard reduced out of the
  switches (each GPU sends its N in and receives its N/p shard); an all-gather multicasts each shard (each
  GPU sends N/p and receives N). T = a + N/B on the heavy side: no better than a ring in bandwidth, but
  one step of latency instead of p-1. Across several islands: hierarchical with NVLS inside islands.
- ``hierarchical``: a reduce-scatter inside every island (NVLink domain, or switch island with NVLS), then
  one across islands among the GPUs of equal local index (rail-aligned, N/m bytes each for islands of m);
  an all-gather runs the mirror image (across, then inside). Inter-island bytes per GPU: (d-1)/d N/m for
  d islands, against the flat ring's channels crossing islands with (p-1)/p N spread over C NICs. The
  islands must all hold the same number of the group's GPUs (otherwise shards cannot be split evenly
  between them): partial islands are refused, use ``ring``.
- ``tree``: NCCL has none for these two collectives (its trees reduce towards a root and broadcast back,
  the shape of an all-reduce); refused with that reason.

In data-carrying mode every step moves data as its flows do: the flat ring by its own segments, the NVLS
flows their parts of the shards (reduced in, or multicast from, the switch chips) and the hierarchical
form's rings the shards each GPU owns between the phases (``base.carry``).
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step, parallel, sequence
from fabricsim.collectives.nvls import nvls_payload, nvls_phase, switch_islands
from fabricsim.collectives.protocol import NVLS_LATENCY, Calibration, Protocol
from fabricsim.collectives.ring import ring_allgather, ring_reduce_scatter
from fabricsim.errors import ConfigError, InfeasibleError

__all__ = ["reduce_scatter", "all_gather", "ALGORITHMS", "shard_bounds"]

ALGORITHMS = ("ring", "nvls", "hierarchical")


def shard_bounds(n: int, p: int) -> np.ndarray:
    """Element bounds of the p shards of an n-element buffer: shard j is ``b[j]:b[j+1]``."""
    return np.linspace(0, n, p + 1).astype(int)


def reduce_scatter(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *, algorithm: str = "ring",
                   calibration: Calibration | None = None, channels: int | None = None) -> Schedule:
    """Schedule of a reduce-scatter of ``nbytes`` (full input); see the module docstring."""
    return _build(fabric, layout, nbytes, protocol, algorithm, calibration, channels, scatter=True)


def all_gather(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *, algorithm: str = "ring",
               calibration: Calibration | None = None, channels: int | None = None) -> Schedule:
    """Schedule of an all-gather of ``nbytes`` (full output); see the module docstring."""
    return _build(fabric, layout, nbytes, protocol, algorithm, calibration, channels, scatter=False)


def _build(fabric, layout, nbytes, protocol, algorithm, calibration, channels, *, scatter: bool) -> Schedule:
    what = "reduce-scatter" if scatter else "all-gather"
    if algorithm == "tree":
        raise InfeasibleError(f"NCCL has no tree {what} (its trees reduce to a root and broadcast back, an "
                              "all-reduce); use ring, nvls or hierarchical")
    if algorithm == "ring":
        build = ring_reduce_scatter if scatter else ring_allgather
        return build(fabric, layout, nbytes, protocol, channels=channels)
    if algorithm == "nvls":
        islands = switch_islands(fabric, layout)
        if len(islands) == 1:
            return _nvls_single(fabric, layout, nbytes, protocol, calibration, scatter)
        return _hierarchical(fabric, layout, nbytes, protocol, calibration, scatter, islands, "nvls")
    if algorithm == "hierarchical":
        return _hierarchical(fabric, layout, nbytes, protocol, calibration, scatter, layout.domains, "ring")
    raise ConfigError(f"unknown {what} algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")


def _nvls_step(fabric, islands, nbytes, calibration, scatter: bool, pattern, owned, label) -> Step:
    """Every island at once: GPUs send N (scatter) or N/m (gather) into their switches, receive the rest.

    ``owned(rank)`` lists the parts ``[a, b)`` (fractions of the buffer) that ``rank`` ends owning (scatter)
    or starts owning (gather); the flows carry exactly those parts (``base.carry``), reduced in the switches
    on their way up for a reduce-scatter, multicast from them for an all-gather.
    """
    def traffic():
        parts = []
        for isl in islands:
            small = nbytes / len(isl)
            up, down = (nbytes, small) if scatter else (small, nbytes)
            parts.append(nvls_phase(fabric, isl, up, down, calibration, fanin=len(isl)))  # NVLS_FANIN
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))

    def carries():
        out = []
        for k, isl in enumerate(islands):
            mine = [((label, k, j), a, b, r) for r in isl for j, (a, b) in enumerate(owned(r))]
            out += nvls_payload(fabric, isl, rs=mine) if scatter else nvls_payload(fabric, isl, ag=mine)
        return out
    return Step(pattern, traffic, "nvlink", None, label, extra_latency=NVLS_LATENCY["nvlink"], carries=carries)


def _nvls_single(fabric, layout, nbytes, protocol, calibration, scatter) -> Schedule:
    p = layout.p
    pos = {r: j for j, r in enumerate(layout.ranks)}

    def steps():
        if p > 1:
            yield _nvls_step(fabric, [layout.ranks], nbytes, calibration, scatter,
                             ("nvls-rs" if scatter else "nvls-ag", layout.ident, nbytes),
                             lambda r: [(pos[r] / p, (pos[r] + 1) / p)], "nvls")
    return Schedule("nvls", steps(), protocol, "nvls", launch_latency=0.0)


def _hierarchical(fabric, layout, nbytes, protocol, calibration, scatter, islands, intra) -> Schedule:
    """Reduce-scatter inside islands then across (or all-gather across then inside); module docstring."""
    sizes = {len(i) for i in islands}
    if len(sizes) > 1:
        raise InfeasibleError("hierarchical reduce-scatter/all-gather needs every island to hold the same "
                              f"number of the group's GPUs (they hold {sorted(sizes)}); use ring")
    m = sizes.pop()
    pos = {r: j for j, r in enumerate(layout.ranks)}
    columns = [[isl[s] for isl in islands] for s in range(m)]  # GPUs of local index s, one per island

    def shard(r) -> tuple[float, float]:  # rank r's final shard, as fractions of the buffer
        return pos[r] / layout.p, (pos[r] + 1) / layout.p

    def column(r) -> list[tuple[float, float]]:  # what GPU r owns between the phases: its column's shards
        s = next(isl.index(r) for isl in islands if r in isl)
        return [shard(g) for g in columns[s]]

    if intra == "nvls":
        step = _nvls_step(fabric, islands, nbytes, calibration, scatter, ("h-nvls", layout.ident, scatter, nbytes),
                          column, "nvls intra")
        inner = Schedule("nvls intra", iter([step]), protocol, "nvls", launch_latency=0.0)
    else:
        inner = parallel([_carried_ring(fabric, isl, [list(isl)], nbytes, protocol, scatter, column)
                          for isl in islands], "intra ring")
    outer = parallel([_carried_ring(fabric, col, [[r] for r in col], nbytes / m, protocol, scatter,
                                    lambda r: [shard(r)]) for col in columns], "inter ring")
    phases = [inner, outer] if scatter else [outer, inner]
    if len(islands) == 1:
        phases = [inner]
    return sequence(phases, f"hierarchical({intra}+ring)")


def _carried_ring(fabric, ranks: list[int], domains: list[list[int]], nbytes: float, protocol: Protocol,
                  scatter: bool, owned) -> Schedule:
    """A one-channel ring reduce-scatter (or all-gather) over ``ranks`` whose segment for rank r is
    ``owned(r)``, the parts (fractions of the buffer) r ends owning (starts owning): the ring schedule's
    traffic and timing, its data moved by its flows (``base.carry``).

    Step s of a reduce-scatter: position i adds its partial sum of segment (i - s) into position i + 1,
    where segment k is what position k - 1 ends owning; step t of an all-gather: position i forwards
    segment (i - t), where segment k is what position k starts owning.
    """
    build = ring_reduce_scatter if scatter else ring_allgather
    sched = build(fabric, GroupLayout(list(ranks), domains), nbytes, protocol, channels=1)
    order = ranks  # one channel: ring_orders keeps the given order for these layouts
    m, shift, op = len(ranks), 1 if scatter else 0, "add" if scatter else "put"

    def steps():
        for s, st in enumerate(sched.steps):
            st.apply = None
            st.carries = (lambda s=s: [(0, [(None, a, b, op) for a, b in owned(order[(i - s - shift) % m])])
                                       for i in range(m)])
            yield st
    return Schedule(sched.name, steps(), sched.protocol, sched.latency_algorithm, launch_latency=sched.launch_latency)
