"""In-switch reduction (NVLink SHARP, "NVLS") inside one switch island.

With NVLS the NVLink switch chips add up what the GPUs send and multicast the result: for an all-reduce of
N bytes over p GPUs each GPU sends N (its whole buffer, reduced in the switch, as a reduce-scatter) plus
N/p (its reduced shard, multicast back, as an all-gather) and receives the same, so

    T = a + N [(1 + 1/p) + f log2 p] / B

(plus the fill of a chunked pipeline, see ``nvls_allreduce``) against 2 (p-1)/p N / B for the best
algorithm without in-network reduction. B is NVLS's usable rate (``protocol.NVLS_EFFICIENCY``) and
f log2 p the cost of waiting for p GPUs (``protocol.NVLS_FANIN``; zero on Hopper), charged as extra bytes
on every stage's flows, so contention still acts on them. Charging it on the last, multicast-only stage
as well is what makes the pipeline fill cost a full stage at NVLS speed (the ~0.5 ms the NVL72 rows show
at 0.5-2 GiB). A GPU spreads this traffic
over its switch chips in proportion to its links to each (all 18 planes of an NVL72, 5/4/4/5 on a DGX
H100). An *island* is a set of GPUs attached to the same switch chips: a DGX node, an NVL72 rack, one rack
of an NVL576 (whose second tier carries no reduction in this model).
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.collectives.base import GroupLayout, Schedule, Step
from fabricsim.collectives.nodes import memo_table, node_kinds
from fabricsim.collectives.protocol import NVLS_LATENCY, Calibration, Protocol, nvls_stage_bytes
from fabricsim.errors import InfeasibleError

__all__ = ["switch_islands", "nvls_phase", "owned_shares", "island_phase", "nvls_payload", "nvls_allreduce", "pipeline_chunks", "shards",
           "nvlink_kind", "nvls_stage"]


def _attachments(fabric) -> tuple[list, list]:
    """Per rank, the NVLink switch chips its GPU is wired to with the bandwidth of its link to each (in
    node order, as ``router.successors(nvlink_only=True)`` lists them), and the chips as a sorted tuple
    (what ``switch_islands`` groups by); found for every GPU at once from the link arrays, kept per router."""
    memo = fabric.router.memo
    hit = memo.get("nvls-attachment")
    if hit is None:
        lt = fabric.links
        gpu = np.asarray(fabric.gpu_index, dtype=np.int64)
        rank_of = np.full(len(lt.nodes), -1, dtype=np.int64)
        rank_of[gpu] = np.arange(gpu.shape[0])
        sel = np.flatnonzero(fabric.router.up_links(nvlink_only=True) & (rank_of[lt.src] >= 0)
                             & (node_kinds(fabric)[lt.dst] == "nvswitch"))
        owner = rank_of[lt.src[sel]]
        order = np.lexsort((lt.dst[sel], owner))
        sel, owner = sel[order], owner[order]
        bounds = np.searchsorted(owner, np.arange(gpu.shape[0] + 1)).tolist()
        chips, bws = lt.dst[sel].tolist(), lt.bandwidth[sel].tolist()
        links = [tuple(zip(chips[a:b], bws[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
        hit = memo["nvls-attachment"] = (links, [tuple(sorted(chips[a:b])) for a, b in zip(bounds[:-1], bounds[1:])])
    return hit


def _attachment(fabric, rank: int) -> tuple[tuple[int, float], ...]:
    """The NVLink switch chips a GPU is wired to, with the bandwidth of its links to each."""
    return _attachments(fabric)[0][rank]


def _island_links(fabric, island: list[int]) -> tuple:
    """Per GPU of ``island`` and chip it attaches to, in that order: (GPU node, chip node, link bandwidth,
    the GPU's total bandwidth to its chips, link kind code), the kinds, and chips per GPU (kept per router)."""
    memo = memo_table(fabric, "nvls-island")
    key = tuple(island)
    hit = memo.get(key)
    if hit is None:
        lt = fabric.links
        node, chip, bw, total, kind, count = [], [], [], [], [], []
        for r in island:
            chips = _attachment(fabric, r)
            t = sum(b for _, b in chips)
            n = int(fabric.gpu_index[r])
            count.append(len(chips))
            for c, b in chips:
                node.append(n), chip.append(c), bw.append(b), total.append(t)
                kind.append(lt.kind[lt.edge_index[(n, c)]])
        kinds = sorted(set(kind))
        code = {k: i for i, k in enumerate(kinds)}
        hit = memo[key] = (np.array(node, dtype=np.int64), np.array(chip, dtype=np.int64), np.array(bw, dtype=float),
                           np.array(total, dtype=float), np.array([code[k] for k in kind], dtype=np.int64), kinds,
                           np.array(count, dtype=np.int64))
    return hit


def nvlink_kind(fabric, rank: int) -> str:
    """The kind of the NVLink ports between a GPU and its switch chips ("nvlink4", "nvlink5", ...)."""
    lt = fabric.links
    node = int(fabric.gpu_index[rank])
    for chip, _ in _attachment(fabric, rank):
        return str(lt.kind[lt.edge_index[(node, chip)]])
    return ""


def nvls_stage(fabric, islands: list[list[int]], nbytes: int | None = None, tree: bool = False) -> int:
    """Bytes of one NVLS pipeline stage for these islands: NCCL's loop, channels x heads x chunk, with
    heads = the largest island's GPUs, NCCL's multi-node channel count across several islands and, for the
    NVLS tree (``tree``), NCCL's chunk for a message of ``nbytes`` (``protocol.nvls_chunk``)."""
    kind = nvlink_kind(fabric, islands[0][0])
    return nvls_stage_bytes(kind, max(len(i) for i in islands), multi_node=len(islands) > 1, nbytes=nbytes,
                            tree=tree)


def switch_islands(fabric, layout: GroupLayout) -> list[list[int]]:
    """The group's ranks split by the set of switch chips they attach to, in rank order (kept per router
    and group; the caller gets its own lists)."""
    memo = memo_table(fabric, "nvls-islands")
    hit = memo.get(layout.ident)
    if hit is not None and hit[0] == layout.ranks:
        return [list(isl) for isl in hit[1]]
    islands: dict[tuple, list[int]] = {}
    chips_of = _attachments(fabric)[1]
    for r in layout.ranks:
        chips = chips_of[r]
        if not chips:
            raise InfeasibleError(f"NVLS needs NVLink switch chips: GPU {fabric.topology.gpus[r]!r} has none")
        islands.setdefault(chips, []).append(r)
    memo[layout.ident] = (list(layout.ranks), [list(isl) for isl in islands.values()])
    return list(islands.values())


def nvls_phase(fabric, island: list[int], up: float, down: float, calibration: Calibration, fanin: int = 0,
               network: bool = False):
    """Arrays of the flows by which every GPU of ``island`` sends ``up`` bytes into its switch chips and
    receives ``down`` bytes from them (one figure for all, or one per GPU), spread over the chips by link
    bandwidth: per GPU and chip, the flow up then the flow down. ``fanin`` is the island's size: every stage
    of an NVLS kernel waits for that many GPUs (its multimem loads, and its per-step flags when it only
    multicasts), so its bytes carry the fan-in cost (``protocol.NVLS_FANIN``); 0 or 1 for none. ``network``:
    the phase belongs to a multi-node kernel (NVLS tree, SHARP), at ``protocol.NVLS_NETWORK_EFFICIENCY``."""
    return _up_and_down(*_island_links_bytes(fabric, island, up, down, calibration, fanin, network))


def _island_links_bytes(fabric, island: list[int], up, down, calibration: Calibration, fanin: int,
                        network: bool) -> tuple:
    """Per (GPU, chip) link of ``island``: (GPU node, chip node, factor, the GPU's bytes up, its bytes down);
    a flow carries its GPU's bytes times the factor (NVLS factor of the link kind x link / GPU bandwidth)."""
    node, chip, bw, total, code, kinds, count = _island_links(fabric, island)
    f = np.array([calibration.nvls_factor(k, fanin, network) for k in kinds], dtype=float)[code]
    ups = np.repeat(np.broadcast_to(up, len(island)), count)  # per GPU, or one for all
    downs = np.repeat(np.broadcast_to(down, len(island)), count)
    return node, chip, f * bw / total, ups, downs


def _up_and_down(node: np.ndarray, chip: np.ndarray, factor: np.ndarray, ups: np.ndarray, downs: np.ndarray):
    """Per (GPU, chip) link, the flow up (``ups`` x ``factor`` bytes) then the flow down: (src, dst, bytes,
    keys) arrays."""
    n = node.shape[0]
    src, dst, nbytes = np.empty(2 * n, dtype=np.int64), np.empty(2 * n, dtype=np.int64), np.empty(2 * n)
    src[0::2], src[1::2] = node, chip
    dst[0::2], dst[1::2] = chip, node
    nbytes[0::2], nbytes[1::2] = ups * factor, downs * factor
    return src, dst, nbytes, np.zeros(2 * n, dtype=np.int64)


def owned_shares(islands: list[list[int]], S: int) -> list[np.ndarray]:
    """Per island, the share of the S shards each GPU owns: a GPU of an island of m GPUs owns the shards
    j = its position mod m, S/m of them, rounded (the partial-island rule of ``hierarchical.py``)."""
    return [np.array([len(range(k, S, len(isl))) / S for k in range(len(isl))]) for isl in islands]


def island_phase(fabric, islands: list[list[int]], owned: list[np.ndarray], phase: str, c: float,
                 calibration: Calibration):
    """Flows of one multi-node NVLS phase on chunk bytes ``c`` in every island of more than one GPU:
    ``"rs"`` each GPU sends c and receives its owned share, ``"ag"`` the reverse (``nvls_phase`` with
    ``network=True``: the multi-node kernels' NVLS rate). Shared by the NVLS tree and SHARP."""
    parts = []
    for isl, own in zip(islands, owned):
        if len(isl) > 1:  # nvls_phase's arrays, concatenated over the islands before the arithmetic
            up, down = (c, c * own) if phase == "rs" else (c * own, c)
            parts.append(_island_links_bytes(fabric, isl, up, down, calibration, len(isl), True))
    if not parts:
        return [np.zeros(0)] * 4
    return list(_up_and_down(*(np.concatenate(x) for x in zip(*parts))))


def pipeline_chunks(nbytes: float, chunk: float) -> list[tuple[float, float]]:
    """Parts ``[a, b)`` (fractions of the buffer) of each pipeline chunk: chunks of ``chunk`` bytes (one NVLS
    stage, ``nvls_stage``), the last one holding the rest, so a larger message never has smaller chunks."""
    K = max(1, math.ceil(nbytes / chunk)) if nbytes > 0 else 1
    edges = [min(1.0, i * chunk / nbytes) for i in range(K)] + [1.0] if nbytes > 0 else [0.0, 1.0]
    return list(zip(edges[:-1], edges[1:]))


def shards(tag, a: float, b: float, owners: list[int]) -> list[tuple]:
    """``[a, b)`` cut into one equal shard per owner: ``(tag, start, stop, owner)``."""
    n = len(owners)
    edges = [a + (b - a) * j / n for j in range(n)] + [b]
    return [(tag, edges[j], edges[j + 1], o) for j, o in enumerate(owners)]


def nvls_payload(fabric, island: list[int], rs: list[tuple] = (), ag: list[tuple] = (), *,
                 orders: tuple[int, int] = (0, 1)) -> list:
    """What each flow of ``nvls_phase(fabric, island, ...)`` carries, in its order (see ``base.carry``).

    ``rs``: shards ``(tag, a, b, owner)`` being reduce-scattered: every GPU sends its part of every shard
    to the switch chips, which add them up; each chip sends its sum of a shard to the shard's owner.
    ``ag``: shards being all-gathered: the owner stores its shard into the chips, which multicast it to
    every GPU. Each chip handles its share of every shard (by the link bandwidth of the island's first GPU).
    """
    chips = _attachment(fabric, island[0])
    total = sum(bw for _, bw in chips)
    cut, acc = {}, 0.0
    for chip, bw in chips:
        cut[chip] = (acc / total, (acc + bw) / total if chip != chips[-1][0] else 1.0)
        acc += bw

    def part(tag, a, b, chip, op):
        lo, hi = cut[chip]
        return (tag, chip, a + (b - a) * lo, a + (b - a) * hi, op)

    out = []
    for r in island:
        for chip, _ in _attachment(fabric, r):
            up = [part(t, a, b, chip, "add") for t, a, b, _ in rs]
            up += [part(t, a, b, chip, "put") for t, a, b, o in ag if o == r]
            down = [part(t, a, b, chip, "put") for t, a, b, o in rs if o == r]
            down += [part(t, a, b, chip, "put") for t, a, b, _ in ag]
            out += [(orders[0], [((t, c), a, b, op) for t, c, a, b, op in up]),
                    (orders[1], [((t, c), a, b, op) for t, c, a, b, op in down])]
    return out


def nvls_allreduce(fabric, layout: GroupLayout, nbytes: int, protocol: Protocol,
                   calibration: Calibration) -> Schedule:
    """All-reduce inside one switch island by in-switch reduction, pipelined as NCCL's NVLS kernel loops.

    Stage r reduce-scatters chunk r while all-gathering chunk r-1, so K chunks take K + 1 stages:
    T = a + N [(1 + 1/p) + f log2 p] / B + c (1 - 1/p) / B for chunk size c (one chunk: both phases in
    turn). Chunks are one NVLS stage (``nvls_stage``: channels x p x 128 KiB), the last one the rest.
    """
    islands = switch_islands(fabric, layout)
    if len(islands) > 1:
        raise InfeasibleError(f"NVLS alone covers one switch island; this group spans {len(islands)} "
                              "(use hierarchical or nvls with an inter-island tree/ring)")
    p = layout.p
    chunks = pipeline_chunks(nbytes, nvls_stage(fabric, islands))
    K = len(chunks)
    ranks = layout.ranks

    def stage(r: int) -> Step:
        rs = chunks[r] if r < K else None
        ag = chunks[r - 1] if r >= 1 else None
        c_rs = (rs[1] - rs[0]) * nbytes if rs else 0.0
        c_ag = (ag[1] - ag[0]) * nbytes if ag else 0.0
        up, down = c_rs + c_ag / p, c_rs / p + c_ag

        def carries():
            return nvls_payload(fabric, ranks, shards(("rs", r), *rs, ranks) if rs else [],
                                shards(("ag", r - 1), *ag, ranks) if ag else [])
        return Step(("nvls", layout.ident, c_rs, c_ag, r == 0),
                    lambda: nvls_phase(fabric, ranks, up, down, calibration, fanin=p), "nvlink", None, "nvls",
                    extra_latency=NVLS_LATENCY["nvlink"] if r == 0 else 0.0, pipelined=r > 0, carries=carries)

    def steps():
        if p > 1:
            for r in range(K + 1):
                yield stage(r)
    return Schedule("nvls", steps(), protocol, "nvls", launch_latency=0.0)


def island_pipeline_stage(r: int, chunks: int, name: str, label: str, ident, *, fabric, islands, nvls, network,
                          network_payload, island_shards, sizes, first_latency: float) -> Step:
    """Stage ``r`` of a chunk pipeline in three phases one stage apart: NVLS reduce-scatter inside each
    island ("rs"), a network phase between islands ("net"), NVLS all-gather ("ag"); stage 0 pays
    ``first_latency``, later stages are pipelined. Shared by the NVLS tree and SHARP, which differ only in
    their network phase (``network(q)`` traffic and ``network_payload(q)`` data movement)."""
    live = tuple(k for k, first in (("rs", 0), ("net", 1), ("ag", 2)) if first <= r < chunks + first)
    q = {"rs": r, "net": r - 1, "ag": r - 2}

    def traffic():
        pieces = {k: (network(q[k]) if k == "net" else nvls(k, q[k])) for k in live}
        return tuple(np.concatenate([pieces[k][i] for k in live]) for i in range(4))

    def carries():
        out = []
        for k in live:
            if k == "net":
                out += network_payload(q[k])
                continue
            for isl in islands:
                if len(isl) > 1:
                    own = island_shards(q[k], isl, k)
                    out += nvls_payload(fabric, isl, own if k == "rs" else [], own if k == "ag" else [])
        return out
    return Step((name, ident, tuple((k, sizes(q[k])) for k in live)), traffic, "net", None, label,
                extra_latency=first_latency if r == 0 else 0.0, pipelined=r > 0, carries=carries)
