"""One training step of a full ``tp x cp x pp x dp (x ep)`` layout: micro-batches through the pipeline,
the communication inside each layer, and the data-parallel (or ZeRO) traffic overlapped with backward.

Composition (what runs where, and why each reuse is exact):

1. **Per chunk and micro-batch**, the compute of its blocks (``compute.chunk_work``) plus the
   communication the block cannot start without, simulated on the fabric with every group at once
   (``comm.StepComm``) and remembered by size:

   - TP (Shoeybi et al. 2019): two all-reduces per block forward and two backward of the block's
     activations, ``b s / cp x h`` x 2 bytes; with sequence parallelism (Korthikanti et al. 2022, section
     4.2.2) each all-reduce becomes an all-gather before and a reduce-scatter after the TP region, the
     same bytes. Exposed unless ``tp_comm_overlap`` (Megatron's ``--tp-comm-overlap`` pipelines them
     with the GEMMs: only what exceeds the block's GEMM time shows). TP groups stay inside one NVLink
     domain and every domain is alike, so the groups of one domain are simulated (exact by symmetry).
   - CP (ring attention: Liu et al., arXiv:2310.01889): ``cp - 1`` ring shifts of the key/value block,
     ``2 x b s/cp x kv_heads head_dim / tp`` x 2 bytes, each overlapped with the attention of the
     block already held (``1/cp`` of the attention core); backward passes keys, values and their
     gradients, twice the bytes against twice the compute. Exposed: what a shift takes beyond that
     compute.
   - EP (Megatron-Core's all-to-all token dispatcher): per MoE block, a dispatch and a combine
     all-to-all forward and two backward, ``top_k x tokens x h`` x 2 bytes per rank, fully exposed.
   - ZeRO-3: the chunk's forward lasts ``max(compute, parameter all-gather)``, its backward
     ``max(compute, all-gather + reduce-scatter)`` (``sharding``: prefetch overlap).

2. **The pipeline** (``pipeline.simulate_pipeline``): one SimPy process per stage runs 1F1B or
   interleaved 1F1B over those times; activations and gradients are P2P flow groups on the fabric,
   ``b s / cp x h / tp`` x 2 bytes per rank (Megatron's scatter-gather of pipeline tensors over TP),
   timed exactly or between two bounds (``p2p_bounds``; see ``simulate_pipeline``).

3. **Data parallel** (``sharding``): each stage's gradient buckets become ready during the final backward
   of each of its chunks and are reduced one at a time; ZeRO-1/2 parameter all-gathers gate each chunk's
   first forward. A bucket's duration is simulated with the data-parallel groups of EVERY stage at once:
   exact when the stages' buckets run at the same moments, and an upper bound on the contention otherwise
   (stages finish at different times), never optimistic. Every size is simulated up to
   ``EXACT_BUCKETS_GPUS``; beyond, the largest only, and the smaller remainders are bounded by it
   (``_BucketTimes``; the step reports the upper end, ``dp_bounds`` both).

The step ends when the last stage's last bucket does. The optimizer step itself (element-wise, memory
bound) is not timed. The breakdown splits the critical stage's time into compute, the pipeline bubble
(the same schedule with free communication, minus compute), exposed TP/CP/EP communication, P2P waits
(the schedule with communication minus the free one) and exposed data-parallel time (after the
pipeline).
"""

from __future__ import annotations

import numpy as np

from fabricsim.errors import InfeasibleError
from fabricsim.training.comm import StepComm
from fabricsim.training.compute import chunk_work, stage_layers
from fabricsim.training.pipeline import PipelineSpec, simulate_pipeline
from fabricsim.training.sharding import bucket_chain, bucket_params, bucket_sizes

__all__ = ["simulate_parallel_step"]


def _dp_cp_groups(groups, layout) -> list:
    """Ranks with the same TP and PP coordinates: the gradient-reduction group (dp x cp)."""
    by = {}
    for r, (t, c, d, s) in enumerate(groups.coords):
        by.setdefault((t, s), []).append(r)
    return [sorted(v) for _, v in sorted(by.items())]


def _chunk_params(model, blocks, first: bool, last: bool, pp: int) -> float:
    """Weights held by a chunk: its blocks, the input embedding on the first, the output layer on the last."""
    n = 0.0
    block_params = getattr(model, "block_params", None)
    for i in blocks:
        n += block_params(i) if block_params is not None else model.layer_params
    emb_in = model.vocab * model.hidden + (model.seq_len * model.hidden if model.position == "learned" else 0)
    if first:
        n += emb_in
    if last:
        n += model.embedding_params - emb_in + (model.vocab * model.hidden if model.tied_embeddings and pp > 1
                                                 else 0)
    return n


def _expert_params(model, blocks) -> float:
    fn = getattr(model, "is_moe_layer", None)
    if fn is None:
        return 0.0
    return float(sum(model.experts * model.expert_params for i in blocks if fn(i)))


class _BucketTimes:
    """Durations of one collective over every data-parallel group at once, by bucket size.

    The largest size is simulated (``StepComm.concurrent``); a smaller bucket (each chunk's remainder) is
    not, unless ``exact``: it takes at most the largest one's time (a smaller buffer on the same groups,
    algorithm and fabric never takes longer: ``hi``) and at least its share of it, ``T(F) x size / F`` (the
    time is a fixed latency part plus a part proportional to the bytes: ``lo``). Bytes sent scale with
    the size (every algorithm here moves a fixed multiple of the buffer).
    """

    def __init__(self, comm, kind, groups, algorithm, sizes, exact: bool):
        self.comm, self.kind, self.groups, self.algorithm, self.exact = comm, kind, groups, algorithm, exact
        self.full = max(sizes, default=0)
        self._ref = comm.concurrent(kind, self.full, groups, algorithm=algorithm) if self.full else None

    def _run(self, size):
        return self.comm.concurrent(self.kind, size, self.groups, algorithm=self.algorithm)

    def hi(self, size) -> float:
        return self._run(size).time if self.exact else self._ref.time

    def lo(self, size) -> float:
        return self._run(size).time if self.exact else self._ref.time * size / self.full

    def bytes_per_rank(self, size) -> float:
        return self._run(size).bytes_per_rank if self.exact else self._ref.bytes_per_rank * size / self.full


#: Up to this many GPUs every bucket size is simulated (``exact_buckets`` None); above it, the largest only.
EXACT_BUCKETS_GPUS = 1024


def simulate_parallel_step(topology, config, layout, groups, runner, *, sequences: float, rate: float,
                           peak: float, model_flops: float, trace: bool = False, exact_buckets: bool | None = None):
    from fabricsim.training.step import StepResult

    model = config.model
    if exact_buckets is None:
        exact_buckets = topology.num_gpus <= EXACT_BUCKETS_GPUS
    p, v = layout.pp, layout.virtual_stages
    per_replica = sequences / layout.dp
    m = per_replica / layout.micro_batch
    if m < 1 or abs(m - round(m)) > 1e-9:
        raise InfeasibleError(f"{per_replica:g} sequences per data-parallel replica do not split into micro-batches "
                              f"of {layout.micro_batch} (change --micro-batch, --global-batch or --batch)")
    m = int(round(m))
    comm = StepComm(runner)
    act = config.activation_bytes
    tokens_mb = layout.micro_batch * model.seq_len
    chunks = p * v
    counts = stage_layers(model.layers, chunks)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    blocks = [list(range(starts[g], starts[g + 1])) for g in range(chunks)]
    work = [chunk_work(model, blocks[g], tokens=tokens_mb, tp=layout.tp, cp=layout.cp, rate=rate,
                       recompute=layout.recompute, logits=g == chunks - 1) for g in range(chunks)]

    # --- communication inside a block, per micro-batch -----------------------------------------------
    domain = [topology.domain_of(gpu) for gpu in topology.gpus]
    tp_time = 0.0
    tp_bytes = tokens_mb / layout.cp * model.hidden * act
    results = {}
    if layout.tp > 1:
        local = [g for g in groups.tp if domain[g[0]] == domain[0]]
        if layout.sequence_parallel:
            rs = comm.concurrent("reduce_scatter", tp_bytes, local)
            ag = comm.concurrent("all_gather", tp_bytes, local)
            tp_time = rs.time + ag.time
            results["tp"] = (rs, ag)
        else:
            ar = comm.concurrent("all_reduce", tp_bytes, local, algorithm=_tp_algorithm(runner, tp_bytes, local[0]))
            tp_time = ar.time
            results["tp"] = (ar,)
    stage0 = set(groups.stage_ranks[0])
    if layout.cp > 1:
        kv = 2 * tokens_mb / layout.cp * model.kv_heads * model.head_dim * act / layout.tp
        cp_groups = [g for g in groups.cp if g[0] in stage0]
        shift_f = comm.concurrent("send_recv", kv, cp_groups)
        shift_b = comm.concurrent("send_recv", 2 * kv, cp_groups)
        results["cp"] = (shift_f, shift_b)
    ep_time = 0.0
    if layout.ep > 1 and getattr(model, "experts", 0):
        per_rank = tokens_mb / (layout.cp * (layout.tp if layout.sequence_parallel else 1))
        a2a_bytes = model.top_k * per_rank * model.hidden * act
        ep_groups = [g for g in groups.ep if g[0] in stage0]
        a2a = comm.concurrent("all_to_all", a2a_bytes, ep_groups)
        ep_time = a2a.time
        results["ep"] = (a2a,)

    dpcp = _dp_cp_groups(groups, layout)
    d = len(dpcp[0])
    param_bytes = [_chunk_params(model, blocks[g], g == 0, g == chunks - 1, p) / layout.tp
                   - _expert_params(model, blocks[g]) / layout.tp * (1 - 1 / layout.ep) for g in range(chunks)]
    pbytes = [2.0 * x for x in param_bytes]
    gbytes = [config.bytes_per_grad * x for x in param_bytes]

    fwd, bwd = [], []
    chunk_comm = {}
    dp_sent = 0.0  # bytes all data-parallel collectives of the step send, summed over the stages (measured)
    exposed = {"tp": np.zeros(chunks), "cp": np.zeros(chunks), "ep": np.zeros(chunks), "zero3": np.zeros(chunks)}
    for g, w in enumerate(work):
        nb = len(blocks[g])
        tp_f = 2 * nb * tp_time
        tp_b = tp_f * (2 if layout.recompute == "full" else 1)
        if config.tp_comm_overlap:
            tp_f = max(0.0, tp_f - w.gemm_forward)
            tp_b = max(0.0, tp_b - 2 * w.gemm_forward)
        cp_f = cp_b = 0.0
        if layout.cp > 1:
            per_block_attn = w.attention_forward / max(nb, 1)
            cp_f = nb * (layout.cp - 1) * max(0.0, results["cp"][0].time - per_block_attn / layout.cp)
            cp_b = nb * (layout.cp - 1) * max(0.0, results["cp"][1].time - 2 * per_block_attn / layout.cp)
        ep_f = 2 * w.moe_blocks * ep_time
        ep_b = ep_f  # the gradients of the combine and of the dispatch
        f = w.forward + tp_f + cp_f + ep_f
        b = w.backward + tp_b + cp_b + ep_b
        f0, b0 = f, b
        if layout.zero == 3 and d > 1:
            ag_r = comm.concurrent("all_gather", pbytes[g], dpcp)
            rs_r = comm.concurrent("reduce_scatter", gbytes[g], dpcp)
            ag, rs = ag_r.time, rs_r.time
            dp_sent += m * (2 * ag_r.bytes_per_rank + rs_r.bytes_per_rank)
            f2, b2 = max(f, ag), max(b, ag + rs)
            exposed["zero3"][g] = (f2 - f) + (b2 - b)
            f, b = f2, b2
        else:
            f2, b2 = f, b
        exposed["tp"][g], exposed["cp"][g], exposed["ep"][g] = tp_f + tp_b, cp_f + cp_b, ep_f + ep_b
        chunk_comm[(g, "F")] = {"TP": tp_f, "CP": cp_f, "EP": ep_f}
        chunk_comm[(g, "B")] = {"TP": tp_b, "CP": cp_b, "EP": ep_b}
        if layout.zero == 3:
            chunk_comm[(g, "F")]["ZeRO-3"] = f2 - f0
            chunk_comm[(g, "B")]["ZeRO-3"] = b2 - b0
        fwd.append(f)
        bwd.append(b)

    # --- ZeRO-1/2 parameter all-gather gates each chunk's first forward ----------------------------------
    bucket = bucket_params(d) * 2
    gate = None
    if layout.zero in (1, 2) and d > 1:
        gate = [[0.0] * v for _ in range(p)]
        plan = [[bucket_sizes(pbytes[k * p + s], bucket).tolist() for k in range(v)] for s in range(p)]
        ag = _BucketTimes(comm, "all_gather", dpcp, "ring", [x for row in plan for sz in row for x in sz],
                          exact_buckets)
        for s in range(p):
            t = 0.0
            for k in range(v):
                for size in plan[s][k]:
                    t += ag.hi(size)
                    dp_sent += ag.bytes_per_rank(size)
                gate[s][k] = t

    p2p = tokens_mb / layout.cp * model.hidden * act / layout.tp
    spec = PipelineSpec(p, v, m, fwd, bwd, stage_ranks=groups.stage_ranks, p2p_bytes=p2p, gate=gate)
    sim = runner.simulation(record=None, trace=trace)
    pipe = simulate_pipeline(sim, spec, trace_ranks=trace, make_sim=lambda: runner.simulation(record=None))
    free = simulate_pipeline(runner.simulation(record=None), PipelineSpec(p, v, m, fwd, bwd, gate=gate))

    # --- data-parallel gradient buckets ------------------------------------------------------------------
    kind = "all_reduce" if layout.zero == 0 else "reduce_scatter"
    algorithm = config.algorithm
    if kind == "all_reduce" and algorithm == "auto" and d > 1:
        algorithm = runner.choose(int(min(bucket, max(gbytes))), groups=dpcp)  # with every group running
    gbucket = bucket_params(d) * config.bytes_per_grad
    chains = []
    end_step = end_lo = pipe.time
    if layout.zero in (0, 1, 2) and d > 1:
        per_stage = []
        for s in range(p):
            ready, sizes = [], []
            for k in sorted(range(v), key=lambda k: pipe.last_backward(s, k)[1]):
                b0, b1 = pipe.last_backward(s, k)
                sz = bucket_sizes(gbytes[k * p + s], gbucket)
                if not len(sz):
                    continue
                ready += (b0 + (b1 - b0) * np.cumsum(sz) / sz.sum()).tolist()
                sizes += sz.tolist()
            per_stage.append((ready, sizes))
        dur = _BucketTimes(comm, kind, dpcp, algorithm, [x for _, sz in per_stage for x in sz], exact_buckets)
        for ready, sizes in per_stage:
            dp_sent += sum(dur.bytes_per_rank(x) for x in sizes)
            start, end = bucket_chain(np.asarray(ready), np.asarray([dur.hi(x) for x in sizes]))
            _, end_l = bucket_chain(np.asarray(ready), np.asarray([dur.lo(x) for x in sizes]))
            chains.append((np.asarray(sizes), np.asarray(ready), start, end))
            if len(end):
                end_step = max(end_step, float(end[-1]))
                end_lo = max(end_lo, float(end_l[-1]))
    step_time = end_step

    # --- accounting -------------------------------------------------------------------------------------
    crit = max(range(p), key=lambda s: pipe.ops[s][-1][4])
    compute_crit = sum(m * (work[k * p + crit].forward + work[k * p + crit].backward) for k in range(v))
    busy_crit = pipe.busy(crit)
    comm_in_ops = {key: m * sum(exposed[key][k * p + crit] for k in range(v)) for key in exposed}
    breakdown = {
        "compute": compute_crit,
        "pp_bubble": max(0.0, free.time - busy_crit),
        "pp_p2p": max(0.0, pipe.time - free.time),
        "tp": comm_in_ops["tp"], "cp": comm_in_ops["cp"], "ep": comm_in_ops["ep"],
        "dp": max(0.0, step_time - pipe.time) + comm_in_ops["zero3"],
    }
    dp_comm = float(sum(float(np.sum(e - st)) for _, _, st, e in chains))
    total_params = sum(param_bytes[k * p + s] for s in range(p) for k in range(v)) / p  # mean per GPU
    # per block: 2 all-reduce equivalents forward, 2 backward (2 more with full recomputation), each
    # 2 (t-1)/t of the buffer per rank (ring all-reduce, or reduce-scatter + all-gather)
    per_block = (6 if layout.recompute == "full" else 4) * 2 * (layout.tp - 1) / layout.tp * tp_bytes
    traffic = {
        "tp": m * model.layers / p * per_block,
        "pp": pipe.p2p_bytes_per_rank,
        "cp": (m * model.layers / p * (layout.cp - 1)
               * (results["cp"][0].bytes_per_rank + results["cp"][1].bytes_per_rank)) if "cp" in results else 0.0,
        "ep": (m * 4 * sum(w.moe_blocks for w in work) / p * results["ep"][0].bytes_per_rank)
        if "ep" in results else 0.0,
        "dp": dp_sent / p,
    }
    forward = sum(m * fwd[k * p + crit] for k in range(v))
    backward = sum(m * bwd[k * p + crit] for k in range(v))
    gb = float(config.bytes_per_grad * total_params)
    res = StepResult(gpus=topology.num_gpus, tp=layout.tp, dp=layout.dp, algorithm=algorithm if d > 1 else "-",
                     tokens=sequences * model.seq_len, compute_time=compute_crit, forward_time=forward,
                     backward_time=backward, tp_comm_time=float(comm_in_ops["tp"]), dp_comm_time=dp_comm,
                     step_time=step_time, grad_bytes=int(gb), model_flops=model_flops, peak_flops=peak,
                     busbw=0.0)
    res.layout = layout
    res.micro_batches = m
    res.breakdown = breakdown
    res.traffic = traffic
    res.pipeline = pipe
    res.p2p_bounds = tuple(float(x) for x in pipe.p2p_bounds)  # (lo, hi) of the P2P bracket
    res.dp_bounds = (float(end_lo), float(step_time))  # step end with the buckets' lower / upper times
    res.dp_chains = chains
    res.comm_results = results
    res.chunk_comm = chunk_comm
    res.sim = sim if trace else None
    return res


def _tp_algorithm(runner, nbytes, ranks) -> str:
    return runner.choose(int(nbytes), ranks)

