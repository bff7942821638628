"""Hierarchical all-reduce: reduce-scatter inside islands, all-reduce across them, all-gather inside.

Islands are NVLink domains (or, with NVLS, switch islands). Phase 1 leaves each GPU of an island owning
the island's sum of some shards; phase 2 all-reduces every shard among its owners, one per island (a ring
or a double binary tree per shard, all shards at once); phase 3 spreads the shards back inside islands.
Intra-island phases run as rings or as in-switch reduction (NVLS; NCCL's "NVLS tree" when the inter phase
is a tree).

Partial islands (p not a multiple of the island size) follow one rule: the buffer is cut into S shards,
S = the largest island's GPU count, and in an island of m GPUs shard s belongs to its GPU s mod m. A GPU
of a small island therefore owns several shards and takes part in several inter-island collectives at
once, which is what makes a partial node or rack slow the whole group down (up to 2x).

The ring and tree schedules of phase 2 move data step by step. Phases 1 and 3 move bytes as rings (or
NVLS) of the island's size; in data-carrying mode their effect is applied once per phase (owners receive
the island's sum of their shards; then every GPU receives every shard), the ring mechanics themselves being
proved by the ring schedules.
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step, parallel, sequence
from fabricsim.collectives.nvls import nvls_phase, switch_islands
from fabricsim.collectives.protocol import NVLS_LATENCY, Calibration, Protocol
from fabricsim.collectives.ring import ring_allreduce
from fabricsim.collectives.tree import tree_allreduce
from fabricsim.errors import ConfigError

__all__ = ["hierarchical_allreduce"]


def _shard_bounds(n: int, shards: int) -> np.ndarray:
    return np.linspace(0, n, shards + 1).astype(int)


def hierarchical_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *,
                           intra: str = "ring", inter: str = "ring",
                           calibration: Calibration | None = None) -> Schedule:
    """Three-phase all-reduce over the group's islands; see the module docstring."""
    if intra not in ("ring", "nvls") or inter not in ("ring", "tree"):
        raise ConfigError(f"hierarchical needs intra ring|nvls and inter ring|tree, got {intra!r}/{inter!r}")
    islands = switch_islands(fabric, layout) if intra == "nvls" else layout.domains
    S = max(len(i) for i in islands)
    owners = [[isl[s % len(isl)] for s in range(S)] for isl in islands]
    shard_bytes = nbytes / S
    gi = fabric.gpu_index
    ident = layout.ident

    def owner_sums(data: dict) -> None:
        n = next(iter(data.values())).shape[0]
        b = _shard_bounds(n, S)
        for isl, own in zip(islands, owners):
            for s in range(S):
                lo, hi = b[s], b[s + 1]
                data[own[s]][lo:hi] = sum(data[g][lo:hi] for g in isl)

    def spread(data: dict) -> None:
        n = next(iter(data.values())).shape[0]
        b = _shard_bounds(n, S)
        for isl, own in zip(islands, owners):
            for s in range(S):
                lo, hi = b[s], b[s + 1]
                for g in isl:
                    if g != own[s]:
                        data[g][lo:hi] = data[own[s]][lo:hi]

    def intra_steps(phase: str, last_apply):
        if intra == "nvls":
            up, down = (nbytes, shard_bytes) if phase == "rs" else (shard_bytes, nbytes)

            def traffic():
                # a GPU of an m-GPU island owns S/m shards on average: N/m bytes
                parts = [nvls_phase(fabric, isl, up * S / len(isl) if phase == "ag" else up,
                                    down * S / len(isl) if phase == "rs" else down, calibration,
                                    fanin=len(isl))
                         for isl in islands if len(isl) > 1]
                return tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4))
            yield Step(("h-nvls", ident, phase, nbytes), traffic, "nvlink", last_apply, f"nvls {phase}",
                       extra_latency=NVLS_LATENCY["nvlink"])
            return
        # ring phase inside every island at once: island of m GPUs runs m-1 steps of N/m per GPU
        steps = max(len(i) for i in islands) - 1
        for t in range(steps):
            live = [isl for isl in islands if len(isl) - 1 > t]

            def traffic(live=live):
                src = np.concatenate([gi[np.array(isl)] for isl in live])
                dst = np.concatenate([gi[np.roll(np.array(isl), -1)] for isl in live])
                nb = np.concatenate([np.full(len(isl), nbytes / len(isl)) for isl in live])
                return src, dst, nb, np.zeros(src.shape[0], dtype=np.int64)
            uniform = all(len(isl) - 1 > t for isl in islands)
            yield Step(("h-ring", ident, nbytes, "all" if uniform else t), traffic, "nvlink",
                       last_apply if t == steps - 1 else None, f"intra {phase}")

    def inter_schedule() -> Schedule:
        per_shard = []
        for s in range(S):
            group = [own[s] for own in owners]
            sub = GroupLayout(group, [[r] for r in group])
            build = ring_allreduce if inter == "ring" else tree_allreduce
            sched = build(fabric, sub, shard_bytes, protocol)
            sched.view = (lambda s=s, group=group: (lambda data: _shard_view(data, group, s, S)))()
            per_shard.append(sched)
        return parallel(per_shard, f"inter {inter}")

    phases = [Schedule("intra reduce-scatter", intra_steps("rs", owner_sums), protocol, "ring", launch_latency=0.0)]
    if len(islands) > 1:
        phases.append(inter_schedule())
    phases.append(Schedule("intra all-gather", intra_steps("ag", spread), protocol, "ring", launch_latency=0.0))
    name = f"hierarchical({intra}+{inter})"
    sched = sequence(phases, name)
    sched.latency_algorithm = "tree" if inter == "tree" else "ring"
    return sched


def _shard_view(data: dict, group: list[int], s: int, shards: int) -> dict:
    n = next(iter(data.values())).shape[0]
    b = _shard_bounds(n, shards)
    return {r: data[r][b[s]:b[s + 1]] for r in group}
