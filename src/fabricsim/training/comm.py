"""The collectives a training step issues, simulated on the fabric with every group of a kind at once.

A step issues the same collective on many symmetric groups at the same instant: the TP all-reduces of
every TP group, the gradient reduce-scatter of every data-parallel group of a stage, the all-to-all of
every expert-parallel group. ``StepComm.concurrent`` runs ALL those groups together on an idle fabric, so
they contend where their traffic shares links (spine links, NICs shared by two groups), and returns when
the slowest group is done: the time the step waits for. Results are remembered by (kind, size, groups,
algorithm): a step that issues the same collective 1,000 times simulates it once. That reuse is exact
whenever each issue starts on a fabric that nothing else uses at that moment, which is how the step
composes them (see ``step``); the bytes every rank sent are measured from the simulated flows.

Kinds, run through ``fabricsim.collectives.collective``: ``all_reduce`` (any all-reduce algorithm),
``reduce_scatter`` and ``all_gather`` (NCCL's ring), ``all_to_all`` (NCCL's pairwise send/receive,
Megatron's token dispatch and combine) and ``send_recv`` (every rank of a group sends to the next one: a
ring shift, as ring attention passes key/value blocks). Sizes follow nccl-tests (``collectives.kinds``).
"""

from __future__ import annotations

from dataclasses import dataclass

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


_NCCL = {"all_reduce": "allreduce", "reduce_scatter": "reducescatter", "all_gather": "allgather",
         "all_to_all": "alltoall", "send_recv": "sendrecv"}


class StepComm:
    """Times collectives over sets of groups on one topology (routes and results kept across calls)."""

    def __init__(self, runner):
        self.runner = runner
        self._memo: dict = {}

    def concurrent(self, kind: str, nbytes: float, groups, *, algorithm: str = "ring") -> CommResult:
        """All ``groups`` run ``kind`` of ``nbytes`` (the per-rank buffer: NCCL's count x type size) at once.

        ``nbytes`` is the full buffer for all-reduce, reduce-scatter (input) and all-gather (output), one
        rank's send buffer for all-to-all (one block per peer), and the block for send_recv.
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
        from fabricsim.collectives import collective

        runner = self.runner
        sim = runner.simulation(record="groups")
        name = _NCCL[kind]
        algo = algorithm if kind == "all_reduce" else None
        procs = [collective(sim, name, nbytes, ranks=g, algorithm=algo, protocol=runner.protocol,
                            calibration=runner.calibration, memo=getattr(runner, "memo", None)) for g in groups]
        result = sim.run()
        ranks = sum(len(g) for g in groups)
        sent = float(sum(row[2] for row in result.groups))
        return CommResult(kind, nbytes, len(groups), ranks, float(result.time), sent / ranks,
                          procs[0].value.algorithm)
