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

In data-carrying mode the ring steps move data step by step; the NVLS steps and each phase of the
hierarchical forms apply their effect once (the phase's ring mechanics are proved by the ring schedules).
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step, parallel, sequence
from fabricsim.collectives.nvls import nvls_phase, switch_islands
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


def _nvls_step(fabric, islands, nbytes, calibration, scatter: bool, pattern, apply, label) -> Step:
    """Every island at once: GPUs send N (scatter) or N/m (gather) into their switches, receive the rest."""
    def traffic():
        parts = []
        for isl in islands:
            small = nbytes / len(isl)
            up, down = (nbytes, small) if scatter else (small, nbytes)
            parts.append(nvls_phase(fabric, isl, up, down, calibration, fanin=len(isl)))  # NVLS_FANIN
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
    return Step(pattern, traffic, "nvlink", apply, label, extra_latency=NVLS_LATENCY["nvlink"])


def _nvls_single(fabric, layout, nbytes, protocol, calibration, scatter) -> Schedule:
    p = layout.p

    def apply(data: dict) -> None:
        b = shard_bounds(next(iter(data.values())).shape[0], p)
        if scatter:
            total = sum(data[r] for r in layout.ranks)
            for j, r in enumerate(layout.ranks):
                data[r][b[j]:b[j + 1]] = total[b[j]:b[j + 1]]
        else:
            full = np.concatenate([data[r][b[j]:b[j + 1]] for j, r in enumerate(layout.ranks)])
            for r in layout.ranks:
                data[r][:] = full

    def steps():
        if p > 1:
            yield _nvls_step(fabric, [layout.ranks], nbytes, calibration, scatter,
                             ("nvls-rs" if scatter else "nvls-ag", layout.ident, nbytes), apply, "nvls")
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

    def column_index(n: int, s: int) -> np.ndarray:
        """Elements of the shards owned by column s: what its GPUs hold between the two phases."""
        b = shard_bounds(n, layout.p)
        return np.concatenate([np.arange(b[pos[r]], b[pos[r] + 1]) for r in columns[s]])

    def intra_effect(data: dict) -> None:
        n = next(iter(data.values())).shape[0]
        for isl in islands:
            for s, r in enumerate(isl):
                idx = column_index(n, s)
                if scatter:  # r holds the island's sum of its column's shards
                    data[r][idx] = sum(data[g][idx] for g in isl)
                else:  # every GPU of the island receives every column's shards
                    for g in isl:
                        if g != r:
                            data[g][idx] = data[r][idx]

    def inter_effect(data: dict) -> None:
        n = next(iter(data.values())).shape[0]
        b = shard_bounds(n, layout.p)
        for col in columns:
            for r in col:
                sl = slice(b[pos[r]], b[pos[r] + 1])
                if scatter:
                    data[r][sl] = sum(data[g][sl] for g in col)
                else:
                    for g in col:
                        if g != r:
                            data[g][sl] = data[r][sl]

    if intra == "nvls":
        step = _nvls_step(fabric, islands, nbytes, calibration, scatter, ("h-nvls", layout.ident, scatter, nbytes),
                          intra_effect, "nvls intra")
        inner = Schedule("nvls intra", iter([step]), protocol, "nvls", launch_latency=0.0)
    else:
        build = ring_reduce_scatter if scatter else ring_allgather
        inner = _with_effect(parallel([build(fabric, GroupLayout(list(isl), [list(isl)]), nbytes, protocol)
                                       for isl in islands], "intra ring"), intra_effect)
    build = ring_reduce_scatter if scatter else ring_allgather
    outer = _with_effect(parallel([build(fabric, GroupLayout(col, [[r] for r in col]), nbytes / m, protocol)
                                   for col in columns], "inter ring"), inter_effect)
    phases = [inner, outer] if scatter else [outer, inner]
    if len(islands) == 1:
        phases = [inner]
    return sequence(phases, f"hierarchical({intra}+ring)")


def _with_effect(schedule: Schedule, effect) -> Schedule:
    """The schedule's traffic and timing, with its data effect applied once, by its last step."""
    def steps():
        last = None
        for st in schedule.steps:
            if last is not None:
                yield last
            st.apply = None
            last = st
        if last is not None:
            last.apply = effect
            yield last
    return Schedule(schedule.name, steps(), schedule.protocol, schedule.latency_algorithm,
                    launch_latency=schedule.launch_latency, view=None)
