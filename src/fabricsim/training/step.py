"""One training step: compute, bucketed data-parallel all-reduce overlapping backward, tensor parallelism.

The model (DESIGN.md, "Training step"):

- **Compute.** ``compute = flops_per_token x tokens / (gpus x peak_flops(precision) x mfu)``, forward 1/3,
  backward 2/3. ``mfu`` is the share of dense peak that the GEMMs reach; the default, 0.45, is the middle of
  Megatron-LM's measured 47% -> 42% MFU for GPT-3 175B on 96 -> 4,608 H100 (row D149) and close to Llama 3
  405B's 430 BF16 TFLOPS per H100 at 8,192 GPUs, 430 / 989 = 43% (rows D151, A033). Those published figures
  are end to end, exposed communication included, so using them as the compute-only efficiency makes
  compute slightly slow: a conservative choice for the question "how much communication is exposed".
- **Data parallel.** Every GPU holds ``params / tp`` gradients of ``bytes_per_grad`` bytes (bf16: 2). The
  backward pass produces them at a constant rate, last layers first, and they are grouped into buckets of
  ``bucket_bytes`` (PyTorch DDP's default 25 MiB); the last bucket holds the remainder. A bucket is
  all-reduced over its data-parallel group as soon as it is full; a group reduces one bucket at a time,
  in order (NCCL serialises the collectives of one stream). All ``tp`` data-parallel groups reduce their
  bucket at the same instant, so they contend on the fabric: each bucket size is simulated with every
  group running at once.
- **Tensor parallel.** ``tp`` consecutive ranks of one NVLink domain form a TP group (every domain, the
  partial last one included, must hold a multiple of ``tp`` GPUs); data-parallel group ``t`` takes position
  ``t`` of every TP group, so it is strided across TP groups and domains. Megatron-LM's tensor parallelism
  all-reduces the activations twice per layer forward and twice backward (Shoeybi et al., arXiv:1909.08053,
  section 3, the f and g operators), each of ``seq_len x hidden x activation_bytes`` bytes per sequence, on
  the critical path. TP groups are symmetric and each stays inside its NVLink domain, so one TP group's
  all-reduce is simulated alone (algorithm "auto": the fastest on NVLink) and its time added to forward and
  backward; it is fully exposed. TP traffic does not contend with the data-parallel buckets in this model.
- **The step.** ``step = forward + max(backward, end of the overlapped bucket chain)``: bucket ``i`` starts at
  ``max(ready_i, end_{i-1})``. Exposed communication is ``step - compute`` (TP time plus the tail of the
  chain after backward), never negative and never above the total.

Speed: the chain is composed from one simulated duration per distinct bucket size (at most two: the full
bucket and the remainder). That is exact here, not an approximation: the buckets of a group run one at a
time, every group starts its bucket at the same instant, and nothing else uses the fabric, so each bucket
all-reduce starts on an idle fabric and lasts as long as the first one of its size. ``engine="events"``
runs the same step as SimPy processes, one simulated all-reduce per bucket, and the tests check that both
agree; it is the slow reference (and what ``trace`` records), the default engine is the fast one.

Weak scaling fixes the sequences per data-parallel replica (``batch``); strong scaling fixes the global
batch (``global_batch`` sequences; default 1,152 as in row D149), which must give every replica at least one
sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fabricsim.collectives import CALIBRATED, AllreduceRunner, CollectiveResult, allreduce, busbw_factor
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.training.compute import block_flops, compute_efficiency
from fabricsim.training.layout import DEFAULT_ORDER, Layout, rank_groups
from fabricsim.training.models import Model
from fabricsim.training.trace import write_step_trace

if TYPE_CHECKING:
    from fabricsim.topologies.base import Topology
    from fabricsim.training.memory import MemoryReport

__all__ = ["BREAKDOWN_KINDS", "compute_rate", "check_memory", "step_memory", "memory_columns", "DEFAULT_MFU", "DEFAULT_BUCKET", "StepConfig", "StepLayout", "StepResult", "step_layout",
           "simulate_step", "write_step_trace"]

MIN_MFU = 1e-3
DEFAULT_MFU = None  # the per-generation efficiency of compute.EFFICIENCY (see there for its source)
DEFAULT_BUCKET = 25 * 2**20  # PyTorch DistributedDataParallel bucket_cap_mb default (25 MiB)
BREAKDOWN_KINDS = ("compute", "pp_bubble", "pp_p2p", "tp", "cp", "ep", "dp")
DEFAULT_GLOBAL_BATCH = 1152  # sequences, D149 (Megatron-LM GPT-3 175B strong scaling)


@dataclass(frozen=True)
class StepConfig:
    """What is trained and how (independent of the fabric).

    Parameters
    ----------
    model : Model
    algorithm : str
        Data-parallel all-reduce: "ring", "tree", "hierarchical", "nvls" or "auto".
    precision : str
        GPU tensor-core precision for the compute ("bf16", "fp8", "fp4").
    mfu : float, optional
        Share of dense peak the model FLOPs reach in compute, in [0.001, 1] (below 0.1% the step is all
        compute and its times lose their precision); default: the documented efficiency of the GPU
        generation and precision (``compute.EFFICIENCY``) applied to the FLOPs the kernels execute
        (``compute.block_flops``).
    tp : int
        Tensor-parallel width, inside one NVLink domain.
    scaling : {"weak", "strong"}
    batch : int
        Weak scaling: sequences per data-parallel replica per step.
    global_batch : int
        Strong scaling: sequences per step in all.
    bucket_bytes, bytes_per_grad, activation_bytes : int
    attention_flops : bool
        Count attention FLOPs (see ``Model.flops_per_token``).
    peak_flops : float, optional
        Per-GPU dense peak (FLOP/s) instead of the topology's GPU preset; ``inf`` gives zero compute.
    cp, pp, dp, ep, virtual_stages, micro_batch, zero, recompute, sequence_parallel, order
        The parallel layout (see ``layout.Layout``); ``dp`` defaults to what the GPU count leaves.
    tp_comm_overlap : bool
        Megatron's ``--tp-comm-overlap``: TP communication hidden behind the block's GEMMs where it fits.

    Raises
    ------
    ConfigError
        ``model`` not a Model, ``mfu`` outside [0.001, 1], a non-positive integer field, an unknown
        scaling, a non-string algorithm or precision, a non-positive peak.
    """

    model: Model
    algorithm: str = "ring"
    precision: str = "bf16"
    mfu: float | None = None
    tp: int = 1
    scaling: str = "weak"
    batch: int = 2
    global_batch: int = DEFAULT_GLOBAL_BATCH
    bucket_bytes: int = DEFAULT_BUCKET
    bytes_per_grad: int = 2
    activation_bytes: int = 2
    attention_flops: bool = False
    peak_flops: float | None = None
    cp: int = 1
    pp: int = 1
    dp: int | None = None
    ep: int = 1
    virtual_stages: int = 1
    micro_batch: int = 1
    zero: int = 0
    recompute: str = "none"
    sequence_parallel: bool | None = None
    order: str = DEFAULT_ORDER
    tp_comm_overlap: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, Model):
            raise ConfigError(f"model must be a Model (e.g. fabricsim.resolve_model('llama3-8b')), "
                              f"got {type(self.model).__name__}")
        if self.mfu is not None and (isinstance(self.mfu, bool) or not isinstance(self.mfu, (int, float))
                                     or not MIN_MFU <= self.mfu <= 1):
            raise ConfigError(f"mfu must be in [{MIN_MFU:g}, 1], got {self.mfu!r}")
        for name in ("algorithm", "precision"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.scaling not in ("weak", "strong"):
            raise ConfigError(f"scaling must be 'weak' or 'strong', got {self.scaling!r}")
        for name in ("tp", "batch", "global_batch", "bucket_bytes", "bytes_per_grad", "activation_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.peak_flops is not None and (isinstance(self.peak_flops, bool) or not isinstance(
                self.peak_flops, (int, float)) or not self.peak_flops > 0):
            raise ConfigError(f"peak FLOP/s must be positive, got {self.peak_flops!r}")
        dp = self.dp or self.ep  # validates the layout options (dp is derived later from the GPU count)
        self.layout_for(self.tp * self.cp * self.pp * dp)

    def layout_for(self, gpus: int) -> Layout:
        """The Layout of this step on ``gpus`` GPUs (``dp`` derived from the GPU count unless given)."""
        return Layout.for_gpus(gpus, tp=self.tp, cp=self.cp, pp=self.pp, dp=self.dp, ep=self.ep,
                               virtual_stages=self.virtual_stages, micro_batch=self.micro_batch, zero=self.zero,
                               recompute=self.recompute, sequence_parallel=self.sequence_parallel, order=self.order)

    @property
    def data_parallel_only(self) -> bool:
        """Whether the step is the plain DP (+TP) model: no pipeline, CP, EP or sharding."""
        return (self.pp == 1 and self.cp == 1 and self.ep == 1 and self.zero == 0
                and not getattr(self.model, "experts", 0))


@dataclass(frozen=True)
class StepLayout:
    """How the ranks split into tensor-parallel and data-parallel groups."""

    tp_groups: list
    dp_groups: list

    @property
    def tp(self) -> int:
        return len(self.tp_groups[0])

    @property
    def dp(self) -> int:
        return len(self.dp_groups[0])


def step_layout(topology: Topology, tp: int) -> StepLayout:
    """TP groups of ``tp`` consecutive ranks inside each NVLink domain; DP group t = position t of each.

    The data-parallel plus tensor-parallel case of :func:`fabricsim.training.layout.rank_groups`.

    Raises InfeasibleError when ``tp`` is wider than a domain or does not divide every domain's GPUs.
    """
    rank = {g: r for r, g in enumerate(topology.gpus)}
    domains = [sorted(rank[g] for g in dom) for dom in topology.domains if dom]
    widest = max(len(d) for d in domains)
    if tp > widest:
        raise InfeasibleError(f"--tp {tp} is larger than the NVLink domain ({widest} GPUs in "
                              f"{topology.name or 'this topology'}): tensor parallelism stays inside a domain")
    for dom in domains:
        if len(dom) % tp:
            which = "the last, partial domain" if dom is domains[-1] and len(domains) > 1 else "a domain"
            raise InfeasibleError(f"--tp {tp} does not divide {which} of {len(dom)} GPUs "
                                  f"({topology.num_gpus} GPUs in all)")
    groups = rank_groups(topology, Layout(tp=tp, dp=topology.num_gpus // tp))
    return StepLayout(groups.tp, groups.dp)


@dataclass
class StepResult:
    """One simulated step. Times in seconds, sizes in bytes, bandwidth in B/s (per direction)."""

    gpus: int
    tp: int
    dp: int
    algorithm: str
    tokens: float
    compute_time: float
    forward_time: float  # forward wall time, TP all-reduces included
    backward_time: float  # backward wall time, TP all-reduces included
    tp_comm_time: float
    dp_comm_time: float  # sum of the bucket all-reduces
    step_time: float
    grad_bytes: int
    model_flops: float  # FLOPs of the step, all GPUs
    peak_flops: float  # per GPU
    busbw: float  # data-parallel, nccl-tests convention, over the whole chain
    tp_allreduce: CollectiveResult | None = None
    bucket_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    bucket_ready: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    bucket_start: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    bucket_end: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    bucket_results: dict = field(default_factory=dict, repr=False)  # size -> CollectiveResult (one group)
    layout: Layout | None = None
    micro_batches: int = 1
    breakdown: dict = field(default_factory=dict)  # seconds of the critical stage by kind (BREAKDOWN_KINDS)
    traffic: dict = field(default_factory=dict)  # bytes each GPU sends per step, by kind
    pipeline: object = field(default=None, repr=False)  # pipeline.PipelineResult (pipelined steps)
    p2p_bounds: tuple = (0.0, 0.0)  # pipeline end with the P2P sends' lower / upper bounds (pipeline.py)
    dp_bounds: tuple = (0.0, 0.0)  # step end with the gradient buckets' lower / upper times (parallel_step.py)
    dp_chains: list = field(default_factory=list, repr=False)  # per stage: (sizes, ready, start, end)
    comm_results: dict = field(default_factory=dict, repr=False)
    chunk_comm: dict = field(default_factory=dict, repr=False)  # (global chunk, "F"/"B") -> {kind: exposed s}
    sim: object = field(default=None, repr=False)  # the Simulation, when a trace was asked for

    @property
    def pp(self) -> int:
        return self.layout.pp if self.layout is not None else 1

    @property
    def cp(self) -> int:
        return self.layout.cp if self.layout is not None else 1

    @property
    def ep(self) -> int:
        return self.layout.ep if self.layout is not None else 1

    @property
    def comm_time(self) -> float:
        return self.tp_comm_time + self.dp_comm_time

    @property
    def exposed_comm(self) -> float:
        return max(0.0, self.step_time - self.compute_time)

    @property
    def exposed_share(self) -> float:
        return self.exposed_comm / self.step_time if self.step_time > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_time if self.step_time > 0 else math.inf

    @property
    def mfu(self) -> float:
        """Achieved model FLOPs utilisation: step FLOPs / (GPUs x peak x step time)."""
        if self.step_time <= 0 or math.isinf(self.peak_flops):
            return 0.0
        return self.model_flops / (self.gpus * self.peak_flops * self.step_time)

    @property
    def buckets(self) -> int:
        return len(self.bucket_sizes)

    def row(self) -> dict:
        """Flat dict of the headline figures (for tables, CSV and JSON)."""
        return {
            "gpus": self.gpus, "tp": self.tp, "dp": self.dp, "algorithm": self.algorithm,
            "step_time_s": self.step_time, "compute_time_s": self.compute_time,
            "comm_time_s": self.comm_time, "exposed_comm_s": self.exposed_comm,
            "exposed_share": self.exposed_share, "tp_comm_s": self.tp_comm_time, "dp_comm_s": self.dp_comm_time,
            "busbw_GBps": self.busbw / 1e9, "mfu": self.mfu, "tokens_per_s": self.tokens_per_s,
            "tokens": self.tokens, "buckets": self.buckets, "grad_bytes": self.grad_bytes,
            "pp": self.pp, "cp": self.cp, "ep": self.ep, "zero": self.layout.zero if self.layout else 0,
            "virtual_stages": self.layout.virtual_stages if self.layout else 1, "micro_batches": self.micro_batches,
            **{f"{k}_s": float(self.breakdown.get(k, 0.0)) for k in BREAKDOWN_KINDS},
        }


def _peak(topology, config: StepConfig) -> float:
    if config.peak_flops is not None:
        return float(config.peak_flops)
    gpu = getattr(topology, "hardware", {}).get("gpu")
    if gpu is None or not hasattr(gpu, "peak_flops"):
        raise ConfigError(f"topology {topology.name or ''} names no GPU preset: give the peak FLOP/s explicitly "
                          "(StepConfig(peak_flops=...); on the command line --peak-flops or --gpu)")
    return gpu.peak_flops(config.precision)


def compute_rate(topology, config: StepConfig, peak: float) -> float:
    """Sustained FLOP/s of one GPU on the FLOPs the kernels execute (``compute.block_flops``).

    Default: ``peak x compute.EFFICIENCY[generation, precision]``. With ``config.mfu`` the rate is scaled so
    that the model FLOPs (``Model.flops_per_token``) reach that share of peak, as the option promises.
    """
    model = config.model
    if config.mfu is None:
        if config.peak_flops is not None:
            gpu = getattr(topology, "hardware", {}).get("gpu")
            eff = compute_efficiency(gpu, config.precision) if gpu is not None else 1.0
        else:
            eff = compute_efficiency(topology.hardware["gpu"], config.precision)
        return peak * eff
    kernel = 3 * (sum(block_flops(model, i).total for i in range(model.layers)) + 2.0 * model.hidden * model.vocab)
    return peak * config.mfu * kernel / model.flops_per_token(attention=config.attention_flops)


def _sequences(config: StepConfig, dp: int) -> float:
    if config.scaling == "weak":
        return float(config.batch * dp)
    if config.global_batch < dp:
        raise InfeasibleError(f"strong scaling: a global batch of {config.global_batch} sequences cannot feed "
                              f"{dp} data-parallel replicas (raise --global-batch or --tp, or use fewer GPUs)")
    return float(config.global_batch)


#: Most gradient buckets a step may hold: DDP's 25 MiB buckets give 16,000 for a 405B model in bf16.
MAX_BUCKETS = 1_000_000


def _bucket_sizes(grad_bytes: int, bucket: int) -> np.ndarray:
    full, rest = divmod(grad_bytes, bucket)
    if full + bool(rest) > MAX_BUCKETS:
        raise ConfigError(f"a {bucket}-byte bucket cuts {grad_bytes:,} gradient bytes into {full + bool(rest):,} "
                          f"buckets (at most {MAX_BUCKETS:,}): use a larger bucket (e.g. 25MiB)")
    sizes = [bucket] * full + ([rest] if rest else [])
    return np.asarray(sizes, dtype=np.int64)


def _concurrent_allreduce(runner: AllreduceRunner, groups: list, nbytes: int, algorithm: str):
    """Every group all-reduces ``nbytes`` at the same instant on an idle fabric; the slowest group's result."""
    return runner.run_concurrent(int(nbytes), groups, algorithm)


def _resolve_algorithm(runner: AllreduceRunner, algorithm: str, nbytes: int, groups) -> str:
    """``auto``: the algorithm fastest with all ``groups`` running at once, as they do in the step."""
    return runner.choose(int(nbytes), groups=groups) if algorithm == "auto" else algorithm


def simulate_step(topology: Topology, config: StepConfig, *, runner: AllreduceRunner | None = None,
                  engine: str = "fast", trace: str | None = None) -> StepResult:
    """Simulate one training step of ``config`` on ``topology``.

    Parameters
    ----------
    topology : Topology
    config : StepConfig
    runner : AllreduceRunner, optional
        Reused across calls on one topology to keep its routes (sweeps pass one).
    engine : {"fast", "events"}
        "fast" composes the chain from one simulated all-reduce per bucket size; "events" simulates every
        bucket as SimPy processes (slow; the reference the tests compare against).
    trace : str, optional
        With ``engine="events"``: write the fabric's Perfetto trace of the whole step to this path.

    Raises
    ------
    InfeasibleError
        ``tp`` wider than a domain or not dividing it; a strong-scaling batch smaller than the replicas.
    ConfigError
        A precision the GPU lacks, an unknown algorithm, an algorithm the fabric lacks, a topology or
        config of the wrong type, a fabric file with no GPU preset and no ``peak_flops``, buckets so small
        that a step would hold more than ``MAX_BUCKETS`` of them.
    """
    from fabricsim.topologies.base import Topology

    if not isinstance(topology, Topology):
        raise ConfigError(f"simulate_step needs a Topology (fabricsim.build(name)), got {type(topology).__name__}")
    if not isinstance(config, StepConfig):
        raise ConfigError(f"simulate_step needs a StepConfig, got {type(config).__name__}")
    if engine not in ("fast", "events"):
        raise ConfigError(f"engine must be 'fast' or 'events', got {engine!r}")
    runner = runner or AllreduceRunner(topology, calibration=CALIBRATED)
    gpus, model = topology.num_gpus, config.model
    lay = config.layout_for(gpus)
    lay.check_model(model.layers, getattr(model, "experts", 0))
    groups = rank_groups(topology, lay)
    peak = _peak(topology, config)
    sequences = _sequences(config, lay.dp)
    tokens = sequences * model.seq_len
    flops = model.flops_per_token(attention=config.attention_flops) * tokens
    rate = compute_rate(topology, config, peak)
    if not config.data_parallel_only:
        from fabricsim.training.parallel_step import simulate_parallel_step

        return simulate_parallel_step(topology, config, lay, groups, runner, sequences=sequences, rate=rate,
                                      peak=peak, model_flops=flops, trace=trace is not None)
    layout = StepLayout(groups.tp, groups.dp)
    kernel = sum(block_flops(model, i).total for i in range(model.layers)) + 2.0 * model.hidden * model.vocab
    compute = 3 * kernel * tokens / (gpus * rate)

    # tensor parallel: 2 all-reduces per layer forward, 2 backward, per sequence of each replica (with
    # sequence parallelism each is an all-gather and a reduce-scatter of the same buffer)
    tp_result = None
    tp_fwd = tp_bwd = 0.0
    if layout.tp > 1:
        tp_bytes = model.seq_len * model.hidden * config.activation_bytes
        ranks = layout.tp_groups[0]
        if lay.sequence_parallel:
            from fabricsim.training.comm import StepComm

            comm = StepComm(runner)
            rs = comm.concurrent("reduce_scatter", tp_bytes, [ranks])
            ag = comm.concurrent("all_gather", tp_bytes, [ranks])
            tp_result = CollectiveResult("ring reduce-scatter + all-gather", "simple", len(ranks), int(tp_bytes),
                                         rs.time + ag.time)
        else:
            tp_result = runner.run(tp_bytes, _resolve_algorithm(runner, "auto", tp_bytes, [ranks]), ranks=ranks)
        per_pass = 2 * model.layers * (sequences / layout.dp) * tp_result.time
        tp_fwd = tp_bwd = per_pass

    forward = compute / 3 + tp_fwd
    backward = 2 * compute / 3 + tp_bwd
    grad_bytes = math.ceil(model.params / layout.tp) * config.bytes_per_grad
    sizes = _bucket_sizes(grad_bytes, config.bucket_bytes) if layout.dp > 1 else np.zeros(0, dtype=np.int64)
    ready = forward + backward * np.cumsum(sizes) / grad_bytes if len(sizes) else np.zeros(0)

    results: dict[int, CollectiveResult] = {}
    algorithm = config.algorithm
    if len(sizes):
        algorithm = _resolve_algorithm(runner, config.algorithm, int(sizes[0]), layout.dp_groups)
    if engine == "fast" or not len(sizes):
        for size in np.unique(sizes).tolist():
            chosen = _resolve_algorithm(runner, config.algorithm, size, layout.dp_groups)
            results[size] = _concurrent_allreduce(runner, layout.dp_groups, size, chosen)
        durations = np.array([results[s].time for s in sizes.tolist()], dtype=float)
        # end_i = max_j<=i (ready_j + sum_{k=j..i} d_k): a running maximum over a prefix sum
        csum = np.cumsum(durations)
        if len(sizes):
            end = csum + np.maximum.accumulate(ready - (csum - durations))
            start = end - durations
        else:
            end = start = np.zeros(0)
    else:
        start, end, results = _events_chain(runner, layout, sizes, ready, algorithm, trace, forward, backward)

    step = max(forward + backward, float(end[-1]) if len(end) else 0.0)
    dp_comm = float(np.sum(end - start)) if len(end) else 0.0
    busbw = (grad_bytes * busbw_factor(layout.dp) / dp_comm) if dp_comm > 0 else 0.0
    breakdown = {"compute": compute, "tp": tp_fwd + tp_bwd, "dp": max(0.0, step - forward - backward)}
    return StepResult(gpus=gpus, tp=layout.tp, dp=layout.dp, algorithm=algorithm if len(sizes) else "-",
                      tokens=tokens, compute_time=compute, forward_time=forward, backward_time=backward,
                      tp_comm_time=tp_fwd + tp_bwd, dp_comm_time=dp_comm, step_time=step, grad_bytes=grad_bytes,
                      model_flops=flops, peak_flops=peak, busbw=busbw, tp_allreduce=tp_result, bucket_sizes=sizes,
                      bucket_ready=ready, bucket_start=start, bucket_end=end, bucket_results=results, layout=lay,
                      micro_batches=1, breakdown=breakdown,
                      traffic={"tp": 0.0, "dp": 2 * (layout.dp - 1) / layout.dp * grad_bytes})


def _events_chain(runner, layout: StepLayout, sizes, ready, algorithm, trace, forward, backward):
    """The bucket chain as SimPy processes: a backward process releases buckets, a stream reduces them."""
    import simpy

    sim = runner.simulation(record="groups", trace=trace is not None)
    env = sim.env
    released = simpy.Store(env)
    n = len(sizes)
    start, end = np.zeros(n), np.zeros(n)
    results: dict[int, CollectiveResult] = {}

    def compute():
        yield sim.compute(0, forward, "forward")
        t = forward
        for i in range(n):
            yield sim.compute(0, float(ready[i]) - t, f"backward to bucket {i}")
            t = float(ready[i])
            yield released.put(i)

    def stream():
        for _ in range(n):
            i = yield released.get()
            start[i] = env.now
            procs = [allreduce(sim, int(sizes[i]), ranks=g, algorithm=algorithm, protocol=runner.protocol,
                               calibration=runner.calibration, memo=runner.memo) for g in layout.dp_groups]
            yield env.all_of(procs)
            end[i] = env.now
            results.setdefault(int(sizes[i]), max((p.value for p in procs), key=lambda r: r.time))

    sim.process(compute())
    sim.process(stream())
    sim.run()
    if trace is not None:
        sim.write_trace(trace)
    return start, end, results


def step_memory(topology: Topology, config: StepConfig) -> MemoryReport | None:
    """The per-GPU memory report of the busiest pipeline rank (``training.memory``), or None when the
    topology names no GPU preset (no capacity to compare with)."""
    from fabricsim.training.memory import gpu_capacity, memory_report

    capacity = gpu_capacity(topology)
    if capacity is None:
        return None
    layout = config.layout_for(topology.num_gpus)
    sequences = _sequences(config, layout.dp)
    micro = max(1, int(sequences // (layout.dp * layout.micro_batch)))
    return memory_report(config.model, layout, capacity=capacity, grad_bytes=config.bytes_per_grad,
                         micro_batches=micro)


def memory_columns(topology: Topology, config: StepConfig) -> dict:
    """``memory_GB`` and ``fits`` (1 or 0) for a table row (a sweep marks a layout that does not fit, it
    does not drop it); empty when the topology names no GPU preset."""
    report = step_memory(topology, config)
    return {} if report is None else {"memory_GB": report.total / 1e9, "fits": int(report.fits())}


def check_memory(topology: Topology, config: StepConfig) -> MemoryReport | None:
    """Refuse a layout whose busiest GPU needs more memory than its HBM (InfeasibleError with the numbers).

    Returns the report (``step_memory``), or None when the topology names no GPU preset. A layout the
    model cannot take (``Layout.check_model``) is refused first: its memory means nothing.
    """
    config.layout_for(topology.num_gpus).check_model(config.model.layers, getattr(config.model, "experts", 0))
    report = step_memory(topology, config)
    if report is not None and not report.fits():
        raise InfeasibleError(f"{config.layout_for(topology.num_gpus).describe()} does not fit in memory: "
                              f"{report.describe()} (raise --tp/--pp, use --zero or --recompute, or add GPUs)")
    return report


def with_options(config: StepConfig, **changes: Any) -> StepConfig:
    """A copy of ``config`` with some fields changed (validated again)."""
    return replace(config, **changes)
