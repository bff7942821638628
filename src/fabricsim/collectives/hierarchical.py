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

In data-carrying mode every phase moves and reduces the data its flows carry (``base.carry`` for the
intra-island rings and NVLS, the ring and tree schedules' own steps for phase 2), so a schedule that
drops or misroutes a flow leaves a wrong result.
"""

from __future__ import annotations

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step, element, parallel, sequence
from fabricsim.collectives.nodes import memo_table
from fabricsim.collectives.nvls import nvls_payload, nvls_phase, switch_islands
from fabricsim.collectives.protocol import NVLS_LATENCY, Calibration, Protocol
from fabricsim.collectives.ring import default_channels, ring_allreduce, ring_wire_latency
from fabricsim.collectives.tree import tree_allreduce
from fabricsim.errors import ConfigError

__all__ = ["hierarchical_allreduce"]


def _shard_bounds(n: int, shards: int) -> np.ndarray:
    return np.array([element(s / shards, n) for s in range(shards)] + [n])


def hierarchical_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol, *,
                           intra: str = "ring", inter: str = "ring",
                           calibration: Calibration | None = None, inter_protocol: Protocol | None = None,
                           levels: tuple[str, ...] = ("intra", "inter")) -> Schedule:
    """Three-phase all-reduce over the group's islands; see the module docstring.

    ``protocol`` times the intra-island phases and ``inter_protocol`` (default: the same) the
    inter-island one: each level runs its own protocol, as NCCL tunes each of them. ``levels`` builds
    only some of them (the phases are sequential, so each level's time is its own: what ``auto`` needs
    to choose each level's protocol).
    """
    if intra not in ("ring", "nvls") or inter not in ("ring", "tree"):
        raise ConfigError(f"hierarchical needs intra ring|nvls and inter ring|tree, got {intra!r}/{inter!r}")
    islands = switch_islands(fabric, layout) if intra == "nvls" else layout.domains
    S = max(len(i) for i in islands)
    owners = [[isl[s % len(isl)] for s in range(S)] for isl in islands]
    shard_bytes = nbytes / S
    gi = fabric.gpu_index
    ident = layout.ident
    bounds = [s / S for s in range(S)] + [1.0]
    # GPU k of an island of m GPUs owns shards k, k + m, ...: its share of the buffer
    owned = [np.array([len(range(k, S, len(isl))) / S for k in range(len(isl))]) for isl in islands]

    def island_shards(isl: list[int], tag) -> list[tuple]:
        return [(tag, bounds[s], bounds[s + 1], isl[s % len(isl)]) for s in range(S)]

    def intra_steps(phase: str):
        if intra == "nvls":
            def traffic():
                parts = [nvls_phase(fabric, isl, nbytes if phase == "rs" else nbytes * own,
                                    nbytes * own if phase == "rs" else nbytes, calibration, fanin=len(isl))
                         for isl, own in zip(islands, owned) if len(isl) > 1]
                return tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4))

            def carries():
                out = []
                for k, isl in enumerate(islands):
                    if len(isl) > 1:
                        sh = island_shards(isl, ("h", phase, k))
                        out += nvls_payload(fabric, isl, sh if phase == "rs" else [], sh if phase == "ag" else [])
                return out
            yield Step(("h-nvls", ident, phase, nbytes), traffic, "nvlink", None, f"nvls {phase}",
                       extra_latency=NVLS_LATENCY["nvlink"], carries=carries)
            return
        # a ring inside every island at once: in step t position i sends to position i+1 the shards of
        # position i - t - 1 (reduce-scatter, added) or of position i - t (all-gather, copied), so that
        # GPU k ends owning (then hands out) shards k, k + m, ...
        steps = max(len(i) for i in islands) - 1
        shift = 1 if phase == "rs" else 0
        # every island's ring at once, as flat arrays: position i of island k sends to position i + 1
        m_all = np.repeat([len(isl) for isl in islands], [len(isl) for isl in islands])
        start = np.repeat(np.cumsum([0] + [len(isl) for isl in islands[:-1]]), [len(isl) for isl in islands])
        pos = np.arange(m_all.shape[0]) - start
        ring_src = gi[np.concatenate([np.asarray(isl, dtype=np.int64) for isl in islands])]
        ring_dst = ring_src[start + (pos + 1) % m_all]
        own_all = np.concatenate(owned)
        for t in range(steps):
            def traffic(t=t):
                on = m_all - 1 > t
                # np.roll(owned[k], t + shift) for every live island: position i gets (i - t - shift) mod m
                nb = nbytes * own_all[(start + (pos - t - shift) % m_all)[on]]
                return ring_src[on], ring_dst[on], nb, np.zeros(nb.shape[0], dtype=np.int64)

            def carries(t=t):
                out = []
                for isl in (isl for isl in islands if len(isl) - 1 > t):
                    m = len(isl)
                    for i in range(m):
                        seg = (i - t - shift) % m
                        out.append((0, [(None, bounds[s], bounds[s + 1], "add" if phase == "rs" else "put")
                                        for s in range(seg, S, m)]))
                return out
            uniform = all(len(isl) - 1 > t and S % len(isl) == 0 for isl in islands)
            yield Step(("h-ring", ident, nbytes, "all" if uniform else (phase, t)), traffic, "nvlink", None,
                       f"intra {phase}", carries=carries)

    def inter_schedule() -> Schedule:
        per_shard = []
        # one group per shard, its owners (kept per router: their digests and rings serve every build)
        memo = memo_table(fabric, "hierarchical-shards")
        subs = memo.get((ident, intra))
        if subs is None or [sub.ranks for sub in subs] != [[own[s] for own in owners] for s in range(S)]:
            subs = memo[(ident, intra)] = [GroupLayout(group, [[r] for r in group])
                                           for group in ([own[s] for own in owners] for s in range(S))]
        if inter == "ring":  # every shard's ring hops routed in one batch (one rank per domain: one channel)
            ring_wire_latency(fabric, subs, default_channels(subs[0]))
        for s, sub in enumerate(subs):
            group = sub.ranks
            build = ring_allreduce if inter == "ring" else tree_allreduce
            sched = build(fabric, sub, shard_bytes, inter_protocol or protocol)
            sched.view = (lambda s=s, group=group: (lambda data: _shard_view(data, group, s, S)))()
            per_shard.append(sched)
        return parallel(per_shard, f"inter {inter}")

    phases = []
    if "intra" in levels:
        phases.append(Schedule("intra reduce-scatter", intra_steps("rs"), protocol, "ring", launch_latency=0.0))
    if len(islands) > 1 and "inter" in levels:
        phases.append(inter_schedule())
    if "intra" in levels:
        phases.append(Schedule("intra all-gather", intra_steps("ag"), protocol, "ring", launch_latency=0.0))
    name = f"hierarchical({intra}+{inter})"
    if not phases:
        return Schedule(name, iter(()), protocol, "ring", launch_latency=0.0)
    sched = sequence(phases, name)
    sched.latency_algorithm = "tree" if inter == "tree" else "ring"
    return sched


def _shard_view(data: dict, group: list[int], s: int, shards: int) -> dict:
    n = next(iter(data.values())).shape[0]
    b = _shard_bounds(n, shards)
    return {r: data[r][b[s]:b[s + 1]] for r in group}
