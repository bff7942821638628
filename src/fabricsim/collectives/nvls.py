"""In-switch reduction (NVLink SHARP, "NVLS") inside one switch island.

With NVLS the NVLink switch chips add up what the GPUs send and multicast the result: for an all-reduce of
N bytes over p GPUs each GPU sends N (its whole buffer, reduced in the switch, as a reduce-scatter) plus
N/p (its reduced shard, multicast back, as an all-gather) and receives the same, so

    T = a + N [(1 + 1/p) + f log2 p] / B

(plus the fill of a chunked pipeline, see ``nvls_allreduce``) against 2 (p-1)/p N / B for the best
algorithm without in-network reduction. B is NVLS's usable rate (``protocol.NVLS_EFFICIENCY``) and
f log2 p the cost of waiting for p GPUs (``protocol.NVLS_FANIN``; zero on Hopper), charged as extra bytes on every
stage's flows, so contention still acts on them. Charging it on the last, multicast-only stage as well is
what makes the pipeline fill cost a full stage at NVLS speed (the ~0.5 ms the NVL72 rows show at 0.5-2 GiB). A GPU spreads this traffic
over its switch chips in proportion to its links to each (all 18 planes of an NVL72, 5/4/4/5 on a DGX
H100). An *island* is a set of GPUs attached to the same switch chips: a DGX node, an NVL72 rack, one rack
of an NVL576 (whose second tier carries no reduction in this model).
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.protocol import NVLS_LATENCY, Calibration, Protocol, nvls_stage_bytes
from fabricsim.errors import InfeasibleError

__all__ = ["switch_islands", "nvls_phase", "nvls_allreduce", "nvlink_kind"]


def _attachment(fabric, rank: int) -> tuple[tuple[int, float], ...]:
    """The NVLink switch chips a GPU is wired to, with the bandwidth of its links to each."""
    lt = fabric.links
    node = int(fabric.gpu_index[rank])
    out = []
    for v in fabric.router.successors(node, nvlink_only=True):
        if fabric.topology.graph.nodes[lt.nodes[v]].get("kind") == "nvswitch":
            out.append((v, float(lt.bandwidth[lt.edge_index[(node, v)]])))
    return tuple(out)


def nvlink_kind(fabric, rank: int) -> str:
    """The kind of the NVLink ports between a GPU and its switch chips ("nvlink4", "nvlink5", ...)."""
    lt = fabric.links
    node = int(fabric.gpu_index[rank])
    for chip, _ in _attachment(fabric, rank):
        return str(lt.kind[lt.edge_index[(node, chip)]])
    return ""


def switch_islands(fabric, layout: GroupLayout) -> list[list[int]]:
    """The group's ranks split by the set of switch chips they attach to, in rank order."""
    islands: dict[tuple, list[int]] = {}
    for r in layout.ranks:
        chips = tuple(sorted(v for v, _ in _attachment(fabric, r)))
        if not chips:
            raise InfeasibleError(f"NVLS needs NVLink switch chips: GPU {fabric.topology.gpus[r]!r} has none")
        islands.setdefault(chips, []).append(r)
    return list(islands.values())


def nvls_phase(fabric, island: list[int], up: float, down: float, calibration: Calibration, fanin: int = 0):
    """Arrays of the flows by which every GPU of ``island`` sends ``up`` bytes into its switch chips and
    receives ``down`` bytes from them, spread over the chips by link bandwidth. ``fanin`` is the island's size:
    every stage of an NVLS kernel waits for that many GPUs (its multimem loads, and its per-step flags when
    it only multicasts), so its bytes carry the fan-in cost (NVLS_FANIN); 0 or 1 for none."""
    src, dst, nbytes = [], [], []
    for r in island:
        chips = _attachment(fabric, r)
        total = sum(bw for _, bw in chips)
        node = int(fabric.gpu_index[r])
        for chip, bw in chips:
            kind = fabric.links.kind[fabric.links.edge_index[(node, chip)]]
            factor = calibration.nvls_factor(kind, fanin) * bw / total
            src += [node, chip]
            dst += [chip, node]
            nbytes += [up * factor, down * factor]
    return np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), np.array(nbytes), np.zeros(len(src), dtype=np.int64)


def nvls_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol,
                   calibration: Calibration) -> Schedule:
    """All-reduce inside one switch island by in-switch reduction, pipelined as NCCL's NVLS kernel loops.

    A stage moves c = channels x p x NVLS_CHUNK bytes (``protocol.nvls_stage_bytes``); stage r
    reduce-scatters chunk r while all-gathering chunk r-1, so K chunks take K + 1 stages:
    T = a + N [(1 + 1/p) + f log2 p] / B + c (1 - 1/p) / B (one chunk: both phases in turn).
    """
    islands = switch_islands(fabric, layout)
    if len(islands) > 1:
        raise InfeasibleError(f"NVLS alone covers one switch island; this group spans {len(islands)} "
                              "(use hierarchical or nvls with an inter-island tree/ring)")
    p = layout.p
    K = max(1, math.ceil(nbytes / nvls_stage_bytes(nvlink_kind(fabric, layout.ranks[0]), p)))
    c = nbytes / K

    def apply(data: dict) -> None:
        total = sum(data[r] for r in layout.ranks)
        for r in layout.ranks:
            data[r][:] = total

    def stage(r: int) -> Step:
        rs, ag = r < K, r >= 1
        up = (c if rs else 0.0) + (c / p if ag else 0.0)
        down = (c / p if rs else 0.0) + (c if ag else 0.0)
        kind = "first" if r == 0 else ("last" if r == K else "steady")
        return Step(("nvls", layout.ident, c, kind),
                    lambda: nvls_phase(fabric, layout.ranks, up, down, calibration, fanin=p),
                    "nvlink", apply if r == K else None, "nvls",
                    extra_latency=NVLS_LATENCY["nvlink"] if r == 0 else 0.0, pipelined=r > 0)

    def steps():
        if p > 1:
            for r in range(K + 1):
                yield stage(r)
    return Schedule("nvls", steps(), protocol, "nvls", launch_latency=0.0)
