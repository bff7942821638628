"""Layout search: enumerate the parallel layouts of a job, keep those that fit, rank them, simulate the best.

``plan(model, fabric, gpus, global_batch)`` walks every layout ``tp x cp x pp x dp`` (``ep`` for a mixture of
experts), with virtual stages, micro-batch size, ZeRO stage and recomputation, that satisfies:

- ``tp`` divides the heads, the key/value heads and every NVLink domain of the fabric (TP stays in a domain);
- ``cp`` divides the sequence into ``2 cp`` chunks (Megatron-Core's load-balanced causal ring attention);
- ``pp x virtual_stages`` is at most the layers (plus two when interleaved: end chunks holding only the
  embedding and the output layer, Llama 3's split); interleaving needs ``m`` divisible by ``pp`` (Megatron-LM);
- ``dp x micro_batch`` divides the global batch (``m`` micro-batches per pipeline);
- ``ep`` divides the experts and ``dp x cp``; ZeRO 1-3 only with more than one data-parallel rank.

Each layout gets its per-GPU memory (``memory.memory_report``) and, when it fits, a closed-form estimate
(``estimate_step``); the ``top`` best estimates are then handed to ``simulate`` (a callable, normally the
training step simulated on the fabric) and the table is ranked by simulated time where there is one.
Pruning is by memory (a layout that does not fit is never estimated or simulated) and by the estimate
(only the best ``top`` are simulated): the estimate-best feasible layout is therefore always simulated.

**The estimate** (every term per step, seconds; ``m`` micro-batches, ``p`` stages, ``v`` virtual stages):

- compute = ``m`` micro-batches of the slowest pipeline rank: ``3 x`` its forward FLOPs per token (those the
  step model executes, ``compute.block_flops``: causal attention, experts; the logits on the last rank) x
  the micro-batch's tokens per GPU ``/ (tp x cp)``, at ``peak x`` the GPU generation's one documented
  efficiency (``compute.EFFICIENCY``); recomputation adds its FLOPs, the attention core's forward
  (selective) or a whole forward (full; Korthikanti et al., arXiv:2205.05198, section 5). Unbalanced stages
  (the output layer, MoE and dense blocks) therefore cost what they cost. MFU counts the model FLOPs,
  ``6 x active parameters`` per token.
- TP: per layer per micro-batch 4 all-reduces (or reduce-scatter + all-gather with SP, the same bytes) of
  ``s/cp x b x h x 2`` bytes, ring alpha-beta on the group's bandwidth, on the critical path; 2 more per layer
  with full recomputation.
- CP: per layer per micro-batch ``cp - 1`` key/value blocks forward and twice that backward, overlapped with
  the attention compute of the layer; only the excess is exposed.
- EP: per MoE layer per micro-batch 4 all-to-alls (dispatch and combine, forward and backward) of the
  micro-batch's ``top_k`` token copies, ``(n-1)/n`` of them leaving the GPU; exposed.
- PP: the 1F1B bubble, ``(p - 1) / v`` micro-batch slots of the mean stage (Narayanan et al., arXiv:2104.04473),
  plus the point-to-point activation transfers: 1F1B blocks on them, ``2 (m + p - 1)`` on the critical path;
  interleaved 1F1B overlaps them with compute (Megatron-LM's ``overlap_p2p_comm``) but in the fill and
  drain, ``2 v (p - 1)``. A transfer is ``s/cp x b x h x 2`` bytes (``/ tp`` with SP).
- DP: gradient all-reduce (ZeRO-0) or reduce-scatter + all-gather (ZeRO-1/2) of the stage's gradients after
  the last micro-batch, overlapped with that micro-batch's backward (all-gather with the next forward);
  ZeRO-3 also all-gathers the weights in forward and backward of every micro-batch, overlapped with compute.
- A group is on NVLink when every domain holds whole groups (consecutive-rank blocks of its span);
  otherwise it runs at the GPU's scale-out NIC bandwidth (a ring crossing nodes through rail-aligned NICs
  reaches the NIC rate per GPU). Latencies: the path latencies of the hardware presets (2 NVLink hops;
  GPU-NIC-leaf-spine-leaf-NIC-GPU).

The estimate is a ranking device, not a measurement; the simulated step is the answer.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator, Sequence

from fabricsim.atomic_file import replacing
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.training.layout import DEFAULT_ORDER, Layout
from fabricsim.training.memory import MemoryReport, gpu_capacity, memory_report, stage_layers
from fabricsim.training.models import Model

__all__ = ["KINDS", "FabricFigures", "SearchSpace", "Estimate", "Candidate", "PlanResult", "enumerate_layouts",
           "estimate_step", "plan", "write_plan", "format_table", "step_simulator"]

KINDS = ("tp", "cp", "ep", "pp", "dp")  # exposed communication by kind, in table order
# CSV/JSON columns of the breakdown: the names StepResult.row() uses (pp: the pipeline's P2P waits)
_COLUMNS = {"tp": "tp_s", "cp": "cp_s", "ep": "ep_s", "pp": "pp_p2p_s", "dp": "dp_s"}


@dataclass(frozen=True)
class FabricFigures:
    """What the estimate needs of a fabric: bandwidths (B/s one way per GPU), latencies (s), domains, GPU."""

    gpus: int
    domain_sizes: tuple
    nvlink_bandwidth: float
    nic_bandwidth: float
    nvlink_latency: float
    network_latency: float
    peak_flops: float
    capacity: float | None
    name: str = ""
    efficiency: float = 1.0  # share of peak the kernels sustain (compute.EFFICIENCY of the GPU and precision)

    @classmethod
    def from_topology(cls, topology, precision: str = "bf16", *, peak_flops: float | None = None) -> "FabricFigures":
        from fabricsim.training.compute import compute_efficiency

        hw = getattr(topology, "hardware", {}) or {}
        gpu = hw.get("gpu")
        if gpu is None:
            raise ConfigError(f"topology {topology.name or ''} names no GPU preset: the search needs its peak "
                              f"FLOP/s and memory")
        if peak_flops is None:
            peak_flops = gpu.peak_flops(precision)
        link, nic, switch = hw.get("nvlink"), hw.get("nic"), hw.get("switch")
        nv_lat = 2 * link.latency if link is not None else 0.6e-6
        net_lat = (2 * nic.latency if nic is not None else 2e-6) + 3 * (switch.latency if switch is not None else 0.6e-6)
        nic_bw = topology.nic_bandwidth() if len(topology.domains) > 1 else 0.0
        return cls(gpus=topology.num_gpus, domain_sizes=tuple(sorted({len(d) for d in topology.domains})),
                   nvlink_bandwidth=topology.injection_bandwidth(), nic_bandwidth=nic_bw, nvlink_latency=nv_lat,
                   network_latency=net_lat, peak_flops=float(peak_flops), capacity=gpu_capacity(topology),
                   name=topology.name or "", efficiency=compute_efficiency(gpu, precision))

    def link(self, block: int) -> tuple[float, float]:
        """(bandwidth, latency) of groups whose ranks lie in consecutive blocks of ``block`` ranks."""
        if all(size % block == 0 for size in self.domain_sizes) or not self.nic_bandwidth:
            return self.nvlink_bandwidth, self.nvlink_latency
        return self.nic_bandwidth, self.network_latency


@dataclass(frozen=True)
class SearchSpace:
    """Values to try per dimension; ``None`` means every value the constraints allow (powers of two for
    ``cp``, ``micro_batch`` and ``virtual_stages``, divisors for the rest)."""

    tp: Sequence[int] | None = None
    cp: Sequence[int] | None = (1, 2, 4, 8, 16)
    pp: Sequence[int] | None = None
    dp: Sequence[int] | None = None
    ep: Sequence[int] | None = None
    virtual_stages: Sequence[int] | None = (1, 2, 4, 8)
    micro_batch: Sequence[int] | None = (1, 2, 4)
    zero: Sequence[int] | None = (0, 1, 2, 3)
    recompute: Sequence[str] | None = ("none", "selective", "full")
    order: str = DEFAULT_ORDER  # rank order of every layout (``layout.Layout``)
    sequence_parallel: bool | None = None  # None: on with TP

    def values(self, name: str, allowed: Sequence) -> list:
        """The allowed values of ``name`` that this space tries."""
        given = getattr(self, name)
        return list(allowed) if given is None else [x for x in allowed if x in set(given)]


@dataclass(frozen=True)
class Estimate:
    """One step, decomposed: compute, the pipeline bubble and exposed communication by kind (seconds)."""

    compute: float
    bubble: float
    exposed: dict
    model_flops: float  # the step's model FLOPs (6 x active parameters x tokens), all GPUs
    peak: float  # all GPUs
    source: str = "estimate"
    total: float | None = None  # the simulated step time, when the parts are a breakdown of it

    @property
    def step_time(self) -> float:
        if self.total is not None:
            return self.total
        return self.compute + self.bubble + sum(self.exposed.values())

    @property
    def mfu(self) -> float:
        return self.model_flops / (self.peak * self.step_time) if self.step_time > 0 else 0.0


@dataclass
class Candidate:
    """One layout of the search with its memory, its estimate and (for the best few) its simulation."""

    layout: Layout
    micro_batches: int
    memory: MemoryReport
    estimate: Estimate | None = None
    simulated: Estimate | None = None

    @property
    def fits(self) -> bool:
        return self.memory.capacity is None or self.memory.fits()

    @property
    def best(self) -> Estimate | None:
        return self.simulated or self.estimate

    def row(self) -> dict:
        lay, mem, res = self.layout, self.memory, self.best
        row = {"tp": lay.tp, "cp": lay.cp, "pp": lay.pp, "virtual_stages": lay.virtual_stages, "dp": lay.dp,
               "ep": lay.ep, "zero": lay.zero, "micro_batch": lay.micro_batch, "micro_batches": self.micro_batches,
               "recompute": lay.recompute, "fits": self.fits, "memory_GB": mem.total / 1e9,
               "params_GB": mem.params / 1e9, "grads_GB": mem.grads / 1e9, "optimizer_GB": mem.optimizer / 1e9,
               "activations_GB": (mem.activations + mem.working) / 1e9}
        nan = math.nan
        row.update({"source": res.source if res else "out of memory", "step_time_s": res.step_time if res else nan,
                    "mfu": res.mfu if res else nan, "compute_s": res.compute if res else nan,
                    "pp_bubble_s": res.bubble if res else nan})
        row.update({col: res.exposed.get(k, 0.0) if res else nan for k, col in _COLUMNS.items()})
        if self.simulated is not None and self.estimate is not None:
            row["estimate_s"] = self.estimate.step_time
        return row


@dataclass
class PlanResult:
    """The ranked candidates (fitting first, best first; out-of-memory ones after them when kept)."""

    model: Model
    gpus: int
    global_batch: int
    candidates: list
    enumerated: int
    fitting: int
    simulated: int
    seconds: float = 0.0

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates and self.candidates[0].fits else None

    def rows(self) -> list[dict]:
        return [{"rank": i + 1, **c.row()} for i, c in enumerate(self.candidates)]


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def enumerate_layouts(model: Model, gpus: int, global_batch: int, *, domain_sizes: Sequence[int] = (),
                      space: SearchSpace = SearchSpace()) -> Iterator[tuple[Layout, int]]:
    """Every ``(layout, micro_batches)`` meeting the constraints of the module docstring, in a fixed order."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"--gpus must be a positive integer, got {gpus!r}")
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise ConfigError(f"--global-batch must be a positive integer, got {global_batch!r}")
    divs = _divisors(gpus)
    tps = [t for t in divs if model.heads % t == 0 and model.kv_heads % t == 0
           and all(size % t == 0 for size in domain_sizes)]
    for tp in space.values("tp", tps):
        for cp in space.values("cp", [c for c in divs if model.seq_len % (2 * c) == 0 or c == 1]):
            if (gpus // tp) % cp or gpus % (tp * cp):
                continue
            rest = gpus // (tp * cp)
            for pp in space.values("pp", [p for p in _divisors(rest) if p <= model.layers]):
                dp = rest // pp
                if not space.values("dp", [dp]):
                    continue
                eps = [1]
                if model.is_moe:
                    eps = [e for e in _divisors(dp * cp) if model.experts % e == 0]
                for v in space.values("virtual_stages", [x for x in (1, 2, 3, 4, 6, 8, 16)
                                                         if pp * x <= model.layers + (2 if x > 1 else 0)
                                                         and (x == 1 or pp > 1)]):
                    for mb in space.values("micro_batch", [1, 2, 4, 8, 16]):
                        if global_batch % (dp * mb):
                            continue
                        m = global_batch // (dp * mb)
                        if v > 1 and m % pp:
                            continue
                        for ep in space.values("ep", eps):
                            for zero in space.values("zero", [0, 1, 2, 3] if dp * cp > 1 else [0]):
                                for rc in space.values("recompute", ["none", "selective", "full"]):
                                    yield (Layout(tp=tp, cp=cp, pp=pp, dp=dp, ep=ep, virtual_stages=v,
                                                  micro_batch=mb, zero=zero, recompute=rc, order=space.order,
                                                  sequence_parallel=space.sequence_parallel), m)


def _stride(layout: Layout, dim: str) -> int:
    """Rank distance between neighbours along ``dim`` in the layout's rank order (fastest first)."""
    stride = 1
    for d in layout.dims:
        if d == dim:
            return stride
        stride *= layout.size(d)
    raise ConfigError(f"unknown dimension {dim!r}")


def _span(layout: Layout, dim: str, n: int | None = None) -> int:
    """Consecutive ranks that hold a whole group of ``n`` (default all) neighbours along ``dim``."""
    return _stride(layout, dim) * (layout.size(dim) if n is None else n)


def _ep_span(layout: Layout) -> int:
    """An expert-parallel group takes ``ep`` consecutive (cp fastest, then dp) positions."""
    if layout.ep <= layout.cp:
        return _span(layout, "cp", layout.ep)
    return max(_span(layout, "cp"), _span(layout, "dp", -(-layout.ep // layout.cp)))


def _ring(n: int, nbytes: float, link) -> float:
    """Ring all-reduce, or reduce-scatter + all-gather: 2 (n-1) a + 2 (n-1)/n N / B."""
    bw, lat = link
    return 0.0 if n <= 1 else 2 * (n - 1) * lat + 2 * (n - 1) / n * nbytes / bw


def _half_ring(n: int, nbytes: float, link) -> float:
    """Reduce-scatter or all-gather alone; also the pairwise all-to-all: (n-1) a + (n-1)/n N / B."""
    bw, lat = link
    return 0.0 if n <= 1 else (n - 1) * lat + (n - 1) / n * nbytes / bw


@lru_cache(maxsize=256)
def _rank_flops(model: Model, pp: int, virtual_stages: int) -> tuple[tuple[float, ...], float]:
    """Forward FLOPs per token the GPUs of each pipeline rank execute (``compute.block_flops``: causal
    attention, experts; the logits on the last rank), and the attention core's share of the whole model."""
    from fabricsim.training.compute import block_flops

    per_rank = []
    attention = 0.0
    for r, blocks in enumerate(stage_layers(model.layers, pp, virtual_stages)):
        total = 0.0
        for i in blocks:
            f = block_flops(model, i)
            total += f.total
            attention += f.attention
        per_rank.append(total + (2.0 * model.hidden * model.vocab if r == pp - 1 else 0.0))
    return tuple(per_rank), attention


def estimate_step(model: Model, layout: Layout, micro_batches: int, fabric: FabricFigures, *,
                  efficiency: float | None = None, memory: MemoryReport | None = None,
                  grad_bytes: int = 2, tp_comm_overlap: bool = False) -> Estimate:
    """The closed-form step of the module docstring."""
    t, cp, p, dp, v, m = layout.tp, layout.cp, layout.pp, layout.dp, layout.virtual_stages, micro_batches
    gpus = layout.gpus
    b, h = layout.micro_batch, model.hidden
    s_local = model.seq_len / cp
    tokens = m * b * dp * model.seq_len
    ranks, attention_fwd = _rank_flops(model, p, v)
    forward = sum(ranks)
    share = {"none": 0.0, "selective": attention_fwd / forward, "full": 1.0}[layout.recompute]
    speed = fabric.peak_flops * (fabric.efficiency if efficiency is None else efficiency)  # one GPU
    micro_tokens = b * model.seq_len / (t * cp)  # tokens of one micro-batch per GPU of a tp x cp group
    # one micro-batch forward + backward (+ recomputation) on each pipeline rank; the slowest sets the pace
    per_rank = [(3 + share) * f * micro_tokens / speed for f in ranks]
    per_micro = max(per_rank)
    compute = m * per_micro
    attention = attention_fwd * tokens  # forward attention-core FLOPs of the step, all GPUs
    speed *= gpus

    layers = math.ceil(model.layers / p)  # the busiest stage
    moe_layers = math.ceil(model.moe_layer_count / p)
    exposed = dict.fromkeys(KINDS, 0.0)
    if t > 1:
        per_layer = 4 + (2 if layout.recompute == "full" else 0)
        exposed["tp"] = m * layers * per_layer * _ring(t, s_local * b * h * 2, fabric.link(_span(layout, "tp")))
        if tp_comm_overlap:  # Megatron's --tp-comm-overlap pipelines it with the GEMMs: only the excess shows
            exposed["tp"] = max(0.0, exposed["tp"] - compute * (1 - attention_fwd / forward))
    if cp > 1:
        kv = (model.kv_heads * model.head_dim if not model.latent_attention else model.qk_dim + model.v_dim)
        block = s_local * b * 2 * kv * 2 / t  # K and V of one chunk, bf16, split over TP heads
        bw, lat = fabric.link(_span(layout, "cp"))
        ring = 3 * (cp - 1) * (lat + block / bw)  # forward once, backward twice (KV and their gradients)
        attn_time = attention / speed / (m * model.layers / p)  # one layer's forward attention, one micro-batch
        exposed["cp"] = m * layers * max(0.0, ring - attn_time)
    if model.is_moe and layout.ep > 1:
        tokens_local = s_local * b / (t if layout.sequence_parallel else 1)
        exposed["ep"] = m * moe_layers * 4 * _half_ring(layout.ep, tokens_local * model.top_k * h * 2,
                                                         fabric.link(_ep_span(layout)))
    if p > 1:
        act = s_local * b * h * 2 / (t if layout.sequence_parallel else 1)
        hop = _half_ring(2, 2 * act, fabric.link(_span(layout, "pp", 2)))  # one activation to the next stage
        # 1F1B blocks on its sends and receives every micro-batch; interleaving overlaps them (Megatron-LM's
        # overlap_p2p_comm) except in the fill and drain
        exposed["pp"] = 2 * (m + p - 1) * hop if v == 1 else 2 * v * (p - 1) * hop
    # the fill and drain: (p - 1) / v micro-batch slots of a stage's time (compute and its exposed comm)
    bubble = (p - 1) / v * (sum(per_rank) / p + (exposed["tp"] + exposed["cp"] + exposed["ep"]) / m)

    # data parallel: dense weights over dp x cp, routed experts over dp x cp / ep; after the last backward
    mem = memory or memory_report(model, layout, micro_batches=m)
    span = max(_span(layout, "dp"), _span(layout, "cp"))
    parts = [(mem.detail.get("dense_weights", mem.params_per_gpu), dp * cp, span),
             (mem.detail.get("expert_weights", 0.0), dp * cp // layout.ep, span)]
    window_bwd, window_fwd = 2 * per_micro / 3, per_micro / 3
    for weights, group, span in parts:
        if group < 2 or weights <= 0:
            continue
        link = fabric.link(span)
        grads = weights * grad_bytes
        if layout.zero == 0:
            exposed["dp"] += max(0.0, _ring(group, grads, link) - window_bwd)
            continue
        exposed["dp"] += (max(0.0, _half_ring(group, grads, link) - window_bwd)
                          + max(0.0, _half_ring(group, weights * 2, link) - window_fwd))
        if layout.zero == 3:  # all-gather in forward and backward of every micro-batch, under compute
            exposed["dp"] += max(0.0, 2 * m * _half_ring(group, weights * 2, link) - compute)
    return Estimate(compute=compute, bubble=bubble, exposed=exposed, model_flops=model.flops_per_token() * tokens,
                    peak=fabric.peak_flops * gpus)


def plan(model: Model, fabric: FabricFigures, global_batch: int, *, gpus: int | None = None,
         space: SearchSpace = SearchSpace(), top: int = 5, simulate: Callable | None = None,
         keep_oom: bool = False, efficiency: float | None = None, budget: float | None = None,
         tp_comm_overlap: bool = False,
         progress: Callable[[int, int], None] | None = None) -> PlanResult:
    """Search the layouts of ``model`` on ``fabric`` (see the module docstring).

    Parameters
    ----------
    simulate : callable, optional
        ``simulate(layout, micro_batches) -> Estimate`` for the ``top`` best estimates, normally
        ``step_simulator(topology, ...)`` (the step simulated on the fabric); without it the table holds
        estimates only.
    keep_oom : bool
        Keep the layouts that do not fit as rows after the fitting ones.
    budget : float, optional
        Seconds (wall) after which no further simulation starts; the estimate-best is always simulated.
    progress : callable, optional
        ``progress(done, total)`` as the search advances (enumeration counts as one unit per layout, each
        simulation as a share of the same bar).

    Raises
    ------
    InfeasibleError
        No layout at all meets the constraints (e.g. a global batch smaller than any data-parallel width
        allows), or none fits in memory.
    """
    t0 = time.perf_counter()
    gpus = fabric.gpus if gpus is None else gpus
    if gpus != fabric.gpus:
        raise InfeasibleError(f"{gpus} GPUs asked for, the fabric has {fabric.gpus}")
    layouts = list(enumerate_layouts(model, gpus, global_batch, domain_sizes=fabric.domain_sizes, space=space))
    if not layouts:
        raise InfeasibleError(f"no layout of {model.name} on {gpus} GPUs meets the constraints with a global batch "
                              f"of {global_batch} sequences (tp must divide the heads and the NVLink domains, "
                              f"dp x micro-batch the global batch)")
    total = len(layouts) + top * 50
    fitting: list[Candidate] = []
    oom: list[Candidate] = []
    for i, (lay, m) in enumerate(layouts):
        mem = memory_report(model, lay, capacity=fabric.capacity, micro_batches=m)
        cand = Candidate(lay, m, mem)
        if cand.fits:
            cand.estimate = estimate_step(model, lay, m, fabric, efficiency=efficiency, memory=mem,
                                          tp_comm_overlap=tp_comm_overlap)
            fitting.append(cand)
        elif keep_oom:
            oom.append(cand)
        if progress and i % 256 == 0:
            progress(i, total)
    if not fitting and not keep_oom:
        raise InfeasibleError(f"none of the {len(layouts)} layouts of {model.name} on {gpus} GPUs fits in "
                              f"{(fabric.capacity or 0) / 1e9:.0f} GB per GPU")
    fitting.sort(key=lambda c: (c.estimate.step_time, c.memory.total))  # ties: the one leaving more memory free
    done = 0
    if simulate is not None:
        for k, cand in enumerate(fitting[:top]):
            if k and budget is not None and time.perf_counter() - t0 > budget:
                break
            cand.simulated = simulate(cand.layout, cand.micro_batches)
            done += 1
            if progress:
                progress(len(layouts) + (k + 1) * 50, total)
        head = sorted(fitting[:done], key=lambda c: (c.simulated.step_time, c.memory.total))
        fitting = head + fitting[done:]
    if progress:
        progress(total, total)
    return PlanResult(model=model, gpus=gpus, global_batch=global_batch, candidates=fitting + oom,
                      enumerated=len(layouts), fitting=len(fitting), simulated=done,
                      seconds=time.perf_counter() - t0)


def write_plan(result: PlanResult, out_dir: str, *, meta: dict | None = None) -> list[str]:
    """``plan.csv`` (one row per candidate) and ``plan.json`` (the search's figures and the same rows)."""
    os.makedirs(out_dir, exist_ok=True)
    rows = result.rows()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    csv_path, json_path = os.path.join(out_dir, "plan.csv"), os.path.join(out_dir, "plan.json")

    def write_csv(fh):
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    doc = {"model": result.model.name, "gpus": result.gpus, "global_batch": result.global_batch,
           "enumerated": result.enumerated, "fitting": result.fitting, "simulated": result.simulated,
           "seconds": result.seconds, **(meta or {}),
           "rows": [{k: clean(v) for k, v in row.items()} for row in rows]}
    with replacing(csv_path, newline="") as fh:
        write_csv(fh)
    with replacing(json_path) as fh:
        json.dump(doc, fh, indent=1)
    return [csv_path, json_path]


def format_table(result: PlanResult, *, rows: int = 10) -> list[str]:
    """The ranked table as text lines: layout, micro-batches, memory, step time, MFU, the breakdown."""
    shown = result.candidates if not rows else result.candidates[:rows]
    names = [c.layout.describe() + (f", mb {c.layout.micro_batch}" if c.layout.micro_batch > 1 else "")
             for c in shown]
    w = max([len("layout")] + [len(n) for n in names]) + 2
    head = (f"{'#':>3}  {'layout':<{w}}{'m':>5}{'mem GB':>8}{'step s':>9}{'MFU':>7}{'compute':>9}{'bubble':>8}"
            + "".join(f"{k.upper():>7}" for k in KINDS) + "  source")
    lines = [head]
    for i, (c, lay) in enumerate(zip(shown, names), start=1):
        res = c.best
        if res is None:
            lines.append(f"{i:>3}  {lay:<{w}}{c.micro_batches:>5}{c.memory.total / 1e9:>8.1f}"
                         f"  out of memory ({c.memory.capacity / 1e9:.0f} GB)")
            continue
        lines.append(f"{i:>3}  {lay:<{w}}{c.micro_batches:>5}{c.memory.total / 1e9:>8.1f}{res.step_time:>9.3f}"
                     f"{100 * res.mfu:>6.1f}%{res.compute:>9.3f}{res.bubble:>8.3f}"
                     + "".join(f"{res.exposed.get(k, 0.0):>7.3f}" for k in KINDS) + f"  {res.source}")
    if rows and len(result.candidates) > rows:
        lines.append(f"     ... {len(result.candidates) - rows} more (--rows 0 for all, -o DIR for CSV/JSON)")
    return lines


def step_simulator(topology, model: Model, global_batch: int, *, precision: str = "bf16",
                   algorithm: str = "auto", runner=None, **options) -> Callable:
    """``simulate(layout, micro_batches) -> Estimate``: the training step (``step.simulate_step``) of
    ``layout`` on ``topology`` at a fixed global batch, its breakdown by kind mapped onto ``KINDS``
    (``pp_p2p`` is the pipeline's exposed send/receive time). ``options`` are further ``StepConfig`` fields
    (``tp_comm_overlap``, ``bucket_bytes``...)."""
    from fabricsim.collectives import CALIBRATED, AllreduceRunner
    from fabricsim.training.step import StepConfig, simulate_step

    runner = runner or AllreduceRunner(topology, calibration=CALIBRATED)

    def simulate(layout: Layout, micro_batches: int) -> Estimate:
        config = StepConfig(model, algorithm=algorithm, precision=precision, scaling="strong",
                            global_batch=global_batch, tp=layout.tp, cp=layout.cp, pp=layout.pp, dp=layout.dp,
                            ep=layout.ep, virtual_stages=layout.virtual_stages, micro_batch=layout.micro_batch,
                            zero=layout.zero, recompute=layout.recompute,
                            sequence_parallel=layout.sequence_parallel, order=layout.order, **options)
        res = simulate_step(topology, config, runner=runner)
        part = res.breakdown
        exposed = {k: float(part.get("pp_p2p" if k == "pp" else k, 0.0)) for k in KINDS}
        return Estimate(compute=float(part.get("compute", res.compute_time)), bubble=float(part.get("pp_bubble", 0.0)),
                        exposed=exposed, model_flops=res.model_flops, peak=res.peak_flops * res.gpus,
                        source="simulated", total=res.step_time)

    return simulate
