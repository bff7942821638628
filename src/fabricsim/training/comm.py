"""The collectives a training step issues, simulated on the fabric with every group of a kind at once.

A step issues the same collective on many symmetric groups at the same instant: the TP all-reduces of
every TP group, the gradient reduce-scatter of every data-parallel group of a stage, the all-to-all of
every expert-parallel group. ``StepComm.concurrent`` runs ALL those groups together on an idle fabric, so
they contend where their traffic shares links (spine links, NICs shared by two groups), and returns when
the slowest group is done: the time the step waits for. Results are remembered by (kind, size, groups,
algorithm): a step that issues the same collective 1,000 times simulates it once. That reuse is exact
whenever each issue starts on a fabric that nothing else uses at that moment, which is how the step
composes them (see ``step``); the bytes every rank sent are measured from the simulated flows.

Kinds: ``all_reduce`` (any algorithm of ``collectives.allreduce``), ``reduce_scatter`` and ``all_gather``
(NCCL's ring), ``all_to_all`` (NCCL's grouped send/receive: every rank posts one send to every other rank
of its group at once, Megatron's token dispatch and combine) and ``send_recv`` (every rank of a group
sends to the next one: a ring shift, as ring attention passes key/value blocks). When the `collectives`
package offers first-class runners for these, they are used instead of the local ring/all-to-all
schedules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fabricsim.errors import ConfigError

__all__ = ["CommResult", "StepComm", "KINDS"]

KINDS = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv")


@dataclass(frozen=True)
class CommResult:
    """One concurrent issue: ``time`` until the slowest group is done, ``bytes_per_rank`` sent on average."""

    kind: str
    nbytes: int
    groups: int
    ranks: int
    time: float
    bytes_per_rank: float
    algorithm: str = ""


def _first_class(kind: str):
    """The `collectives` package's own runner for ``kind``, when it has one (returns None otherwise)."""
    try:
        import fabricsim.collectives as c
    except ImportError:  # pragma: no cover
        return None
    fn = getattr(c, "collective", None)
    return fn if callable(fn) else None


class StepComm:
    """Times collectives over sets of groups on one topology (routes and results kept across calls)."""

    def __init__(self, runner):
        self.runner = runner
        self._memo: dict = {}

    def concurrent(self, kind: str, nbytes: float, groups, *, algorithm: str = "ring") -> CommResult:
        """All ``groups`` run ``kind`` of ``nbytes`` (the per-rank buffer: NCCL's count x type size) at once.

        ``nbytes`` is the full buffer for all-reduce, reduce-scatter (input) and all-gather (output), the
        total a rank sends for all-to-all (split evenly over the group), and the block for send_recv.
        """
        if kind not in KINDS:
            raise ConfigError(f"unknown collective kind {kind!r}; use one of {', '.join(KINDS)}")
        nbytes = int(round(nbytes))
        groups = [list(map(int, g)) for g in groups if len(g) > 1]
        if nbytes <= 0 or not groups:
            return CommResult(kind, nbytes, len(groups), 0, 0.0, 0.0, algorithm)
        key = (kind, nbytes, algorithm, tuple(tuple(g) for g in groups))
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._run(kind, nbytes, groups, algorithm)
        return hit

    # ------------------------------------------------------------------------------------------------
    def _run(self, kind, nbytes, groups, algorithm) -> CommResult:
        runner = self.runner
        sim = runner.simulation(record="groups")
        fabric = sim.fabric
        env = sim.env
        procs = []
        if kind == "all_reduce":
            from fabricsim.collectives import allreduce

            procs = [allreduce(sim, nbytes, ranks=g, algorithm=algorithm, protocol=runner.protocol,
                               calibration=runner.calibration) for g in groups]
        elif kind in ("reduce_scatter", "all_gather"):
            procs = [env.process(self._ring_phase(sim, kind, nbytes, g)) for g in groups]
        elif kind == "all_to_all":
            src, dst = [], []
            for g in groups:
                p = len(g)
                a = np.repeat(np.asarray(g), p - 1)
                b = np.asarray([g[(i + k) % p] for i in range(p) for k in range(1, p)])
                src.append(a)
                dst.append(b)
            p_sizes = np.concatenate([np.full(len(g) * (len(g) - 1), nbytes / len(g)) for g in groups])
            group = fabric.group_by_rank(np.concatenate(src), np.concatenate(dst), p_sizes,
                                         key=np.arange(p_sizes.shape[0]) % 64, label="all-to-all")
            procs = [fabric.transfer_group(group)]
        else:  # send_recv: ring shift inside every group
            src = np.concatenate([np.asarray(g) for g in groups])
            dst = np.concatenate([np.roll(np.asarray(g), -1) for g in groups])
            procs = [fabric.transfer_group(fabric.group_by_rank(src, dst, float(nbytes), label="send/recv"))]
        result = sim.run()
        ranks = sum(len(g) for g in groups)
        sent = float(sum(row[2] for row in result.groups))
        name = algorithm if kind == "all_reduce" else ("ring" if kind in ("reduce_scatter", "all_gather")
                                                        else "pairwise" if kind == "all_to_all" else "p2p")
        del procs
        return CommResult(kind, nbytes, len(groups), ranks, float(result.time), sent / ranks, name)

    def _ring_phase(self, sim, kind, nbytes, ranks):
        from fabricsim.collectives.base import GroupLayout, run_schedule
        from fabricsim.collectives.protocol import choose_protocol
        from fabricsim.collectives.ring import ring_allgather, ring_reduce_scatter
        from fabricsim.collectives.select import protocol_cost

        layout = GroupLayout.of(sim.fabric, ranks)
        proto = choose_protocol(nbytes, self.runner.protocol,
                                cost=protocol_cost(sim.fabric, layout, nbytes, "ring"))
        build = ring_reduce_scatter if kind == "reduce_scatter" else ring_allgather
        yield sim.env.process(run_schedule(sim, build(sim.fabric, layout, nbytes, proto)))
