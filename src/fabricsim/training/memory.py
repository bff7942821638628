"""Per-GPU memory of a training layout: weights, gradients, optimizer states and activations, against HBM.

**Model states** (mixed precision with Adam; Rajbhandari et al., "ZeRO", arXiv:1910.02054, section 3.1):
per parameter 2 B of bf16 weights, 2 B of bf16 gradients (4 B when gradients accumulate in fp32, as
Megatron-LM's ``main_grad`` does), and 12 B of optimizer state (fp32 master weights, first and second
moments). ZeRO-1 shards the 12 B over the data-parallel group, ZeRO-2 the gradients too, ZeRO-3 (FSDP) the
weights too. Megatron-Core's distributed optimizer shards over the data-parallel group *with* context
parallelism, ``dp x cp`` ranks, and the routed experts' states over the expert-data-parallel group,
``dp x cp / ep`` ranks. A GPU holds its pipeline stage's layers, split ``tp`` ways (Shoeybi et al.,
arXiv:1909.08053, vocabulary-parallel embeddings included); routed experts are split over ``ep`` and, as
Megatron-Core does by default (expert tensor parallelism equal to ``tp``), over ``tp``. Norm weights are
divided by ``tp`` too (a few MB; they are replicated in practice). ZeRO-3 also needs the gathered weights of
the layer being computed and of the one being prefetched: two blocks' weights, counted as working memory.

**Activations** (Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models",
arXiv:2205.05198, section 4): per layer and micro-batch of ``b`` sequences of ``s`` tokens, hidden ``h``, ``a``
heads, 2-byte activations and 1-byte dropout masks, a GPT layer keeps ``sbh (34 + 5as/h)`` bytes; with
tensor parallelism ``t``, ``sbh (10 + 24/t + 5as/(ht))``; with sequence parallelism too, ``sbh (34 + 5as/h) / t``.
The ``5as/h`` term is the ``s x s`` attention scores an unfused kernel keeps (softmax output, its dropout mask
and dropout output, section 4.1). Fused (flash) attention (Dao et al., "FlashAttention", arXiv:2205.14135,
section 3.1), what Megatron-Core runs through Transformer Engine by default, never materialises them: it
keeps the output (already in the 34) and the softmax's log-sum-exp, one fp32 number per head and token,
``4 a s b`` bytes (``/ t``). So with ``fused_attention=True`` (the default) no recomputation keeps
``sbh (34 + 4a/h)`` (``/ t`` with SP); ``fused_attention=False`` gives Korthikanti's unfused figures.
Selective recomputation drops the attention-score term (``34 sbh / t`` with SP); full recomputation
keeps only each layer's input, ``2 sbh`` (``/ t`` with SP), plus the working set of the one layer being
recomputed. Context parallelism splits the sequence: ``s -> s / cp``. The 34 is a sum this module keeps term
by term so that it generalises: 10h replicated over TP (layer-norm inputs 4h, attention and MLP inputs 2h
each, two dropout masks h each) and 24h split over TP (Q, K, V and the output projection's input 8h; the
MLP's intermediate tensors 16h = 2 x 2 x 4h). Grouped-query attention shrinks K and V to ``kv_heads x head_dim``
wide; SwiGLU keeps three intermediate tensors of width ``ffn`` (6 ffn bytes per token instead of 4 ffn);
a MoE layer keeps, per token, ``top_k`` dispatched copies of its input (2h each) and the intermediates of
its ``top_k`` routed and its shared experts. For GPT-3 (GELU, 4h MLP, multi-head attention) the sum is
exactly Korthikanti's 34. The last stage also keeps one micro-batch of fp32 logits for the loss,
``4 s b vocab / (t cp)`` bytes (assumption: the loss is computed in fp32 on vocabulary-parallel logits).

**Pipeline in flight** (Narayanan et al., arXiv:2104.04473, section 2.2; Megatron-LM's schedules): under 1F1B,
pipeline rank ``r`` of ``p`` starts ``p - r - 1`` warm-up micro-batches before its first backward, so it keeps
``min(p - r, m)`` micro-batches of its ``L / p`` layers: the first stage holds ``L`` layers' worth, whatever
``p`` is (Korthikanti, section 4.2.3). Interleaved with ``v`` model chunks, rank ``r`` warms up
``2 (p - r - 1) + (v - 1) p`` chunks, so the first rank holds ``L (1 + (p - 1) / (p v))`` layers' worth.

The report is the busiest pipeline rank (the largest total); capacity is the GPU's HBM from the hardware
presets, all of it (no allowance for the CUDA context, NCCL buffers or fragmentation, which take a few GB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabricsim.errors import ConfigError

__all__ = ["MemoryReport", "memory_report", "stage_layers", "layer_activation_bytes", "gpu_capacity",
           "PARAM_BYTES", "OPTIMIZER_BYTES", "FUSED_ATTENTION"]

PARAM_BYTES = 2  # bf16 weights
OPTIMIZER_BYTES = 12  # fp32 master weights + Adam's two moments (ZeRO, arXiv:1910.02054 section 3.1)
ACT = 2  # bytes per activation (bf16); dropout masks are 1 byte
GB = 1e9


@dataclass(frozen=True)
class MemoryReport:
    """Bytes per GPU on the busiest pipeline rank.

    Attributes
    ----------
    params, grads, optimizer : float
        Model states by kind (after ZeRO sharding).
    activations : float
        Activations kept for backward (every micro-batch in flight), plus the last stage's logits.
    working : float
        Transient buffers: the layer being recomputed (full recompute), ZeRO-3's gathered weights.
    stage : int
        Which pipeline rank this is.
    params_per_gpu : float
        Parameters (count) whose weights this GPU keeps, before ZeRO-3.
    capacity : float or None
        The GPU's HBM, when known.
    """

    params: float
    grads: float
    optimizer: float
    activations: float
    working: float
    stage: int = 0
    params_per_gpu: float = 0.0
    capacity: float | None = None
    detail: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def states(self) -> float:
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> float:
        return self.states + self.activations + self.working

    def fits(self, capacity: float | None = None) -> bool:
        """Whether the total fits in ``capacity`` bytes (default: the report's own capacity)."""
        cap = self.capacity if capacity is None else capacity
        if cap is None:
            raise ConfigError("no memory capacity known: give one (the topology names no GPU preset)")
        return self.total <= cap

    def breakdown(self) -> dict:
        """Bytes by kind, and the total (for tables and CSV)."""
        return {"params": self.params, "grads": self.grads, "optimizer": self.optimizer,
                "activations": self.activations, "working": self.working, "total": self.total}

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.1f}" for k, v in self.breakdown().items() if k != "total")
        cap = f" of {self.capacity / GB:.0f} GB" if self.capacity else ""
        return (f"{self.total / GB:.1f} GB per GPU{cap} (pipeline rank {self.stage}: {parts} GB; "
                f"{self.params_per_gpu / 1e9:.2f} B parameters)")


def gpu_capacity(topology) -> float | None:
    """HBM bytes of the topology's GPU preset, or None when it names none."""
    gpu = getattr(topology, "hardware", {}).get("gpu")
    return float(gpu.hbm_bytes) if gpu is not None and hasattr(gpu, "hbm_bytes") else None


def stage_layers(layers: int, pp: int, virtual_stages: int = 1) -> list[list[int]]:
    """Block indices each pipeline rank holds: ``pp x v`` contiguous chunks sized as the step model sizes
    them (``compute.stage_layers``: uneven counts come off the end chunks), chunk ``c`` on rank ``c % pp``
    (Megatron's interleaved assignment)."""
    from fabricsim.training.compute import stage_layers as chunk_sizes

    out: list[list[int]] = [[] for _ in range(pp)]
    start = 0
    for c, n in enumerate(chunk_sizes(layers, pp * virtual_stages)):
        out[c % pp].extend(range(start, start + n))
        start += n
    return out


#: Fused (flash) attention never stores the s x s scores (see the module docstring).
FUSED_ATTENTION = True
LSE_BYTES = 4  # fp32 log-sum-exp per head and token, kept by the fused kernel for its backward


def layer_activation_bytes(model, layout, *, moe: bool = False, recompute: str | None = None,
                           seq_len: int | None = None, fused_attention: bool = FUSED_ATTENTION) -> float:
    """Bytes one block keeps for backward, for one micro-batch (see the module docstring).

    Examples
    --------
    >>> from fabricsim.training.models import model_preset
    >>> from fabricsim.training.layout import Layout
    >>> m = model_preset("gpt3-175b")
    >>> sbh = m.seq_len * m.hidden
    >>> layer_activation_bytes(m, Layout(tp=8, recompute="selective")) == 34 * sbh / 8
    True
    """
    recompute = layout.recompute if recompute is None else recompute
    s = (seq_len or model.seq_len) / layout.cp
    b, h, t = layout.micro_batch, model.hidden, layout.tp
    sp = bool(layout.sequence_parallel)
    tokens = s * b
    if recompute == "full":
        return ACT * h * tokens / (t if sp else 1)
    # replicated over TP without SP: two norm inputs, attention and MLP inputs, two dropout masks
    replicated = 4 * h + ACT * h + h + ACT * h + h
    if model.latent_attention:
        q = k = model.qk_dim
        v = model.v_dim
    else:
        q, k = h, model.kv_heads * model.head_dim
        v = k
    split = ACT * (q + k + v + model.v_dim)  # Q, K, V, the output projection's input
    per_ffn = 6 if model.mlp == "swiglu" else 4  # bytes per unit of inner width: 3 (SwiGLU) or 2 tensors
    if moe:
        replicated += model.top_k * ACT * h  # dispatched copies of each token
        split += per_ffn * model.expert_ffn * (model.top_k + model.shared_experts)
    else:
        split += per_ffn * model.ffn
    if recompute != "none":
        scores = 0.0
    elif fused_attention:
        scores = LSE_BYTES * model.heads  # the kernel's log-sum-exp (bytes per token)
    else:
        scores = 5 * model.heads * s  # softmax output, dropout mask and dropout output (unfused)
    per_token = (replicated / t if sp else replicated) + (split + scores) / t
    return per_token * tokens


def _in_flight(layout, rank: int, micro_batches: int | None) -> float:
    """Model chunks whose activations pipeline rank ``rank`` keeps at once (1F1B / interleaved warm-up + 1)."""
    p, v = layout.pp, layout.virtual_stages
    if v == 1:
        chunks = p - rank
    else:
        chunks = 2 * (p - rank - 1) + (v - 1) * p + 1
    if micro_batches is not None:
        chunks = min(chunks, micro_batches * v)
    return chunks


def memory_report(model, layout, *, capacity: float | None = None, grad_bytes: int = 2,
                  micro_batches: int | None = None, seq_len: int | None = None) -> MemoryReport:
    """Bytes per GPU of ``model`` trained with ``layout`` on its busiest pipeline rank.

    Parameters
    ----------
    model : Model
    layout : Layout
        Any object with ``tp, cp, pp, dp, ep, virtual_stages, micro_batch, zero, recompute,
        sequence_parallel``.
    capacity : float, optional
        HBM bytes per GPU (``gpu_capacity(topology)``), for ``fits()``.
    grad_bytes : {2, 4}
        Gradient bytes per parameter: bf16, or fp32 accumulation.
    micro_batches : int, optional
        Micro-batches per step per pipeline; fewer than the stages leaves fewer in flight.
    seq_len : int, optional
        Tokens per sequence (default the model's).

    Examples
    --------
    The issue's example: Llama 3 405B with TP 8 on 1,024 GPUs, no ZeRO, holds 50.7 B parameters and about
    810 GB of model states per GPU, which a 186 GB GB200 refuses:

    >>> from fabricsim.training.models import model_preset
    >>> from fabricsim.training.layout import Layout
    >>> r = memory_report(model_preset("llama3-405b"), Layout(tp=8, dp=128), capacity=186e9)
    >>> round(r.params_per_gpu / 1e9, 1), round(r.states / 1e9), r.fits()
    (50.7, 812, False)
    """
    if grad_bytes not in (2, 4):
        raise ConfigError(f"gradient bytes per parameter must be 2 (bf16) or 4 (fp32), got {grad_bytes!r}")
    t, p = layout.tp, layout.pp
    dense_shards = layout.dp * layout.cp  # distributed optimizer group (DP with CP)
    expert_shards = layout.dp * layout.cp // layout.ep  # expert data parallel
    routed = model.experts * model.expert_params  # routed weights of one MoE block
    input_embedding = model.vocab * model.hidden + (model.seq_len * model.hidden if model.position == "learned" else 0)
    # the last stage: the output projection and the final norm (a tied projection is a copy when pp > 1)
    output = model.embedding_params - input_embedding
    if model.tied_embeddings and p > 1:
        output += model.vocab * model.hidden
    act_dense = act_moe = None
    best = None
    for rank, blocks in enumerate(stage_layers(model.layers, p, layout.virtual_stages)):
        dense = expert = 0.0
        moe_blocks = 0
        for i in blocks:
            if model.is_moe_layer(i):
                moe_blocks += 1
                dense += model.moe_layer_params - routed
                expert += routed
            else:
                dense += model.layer_params
        if rank == 0:
            dense += input_embedding
        if rank == p - 1:
            dense += output
        dense /= t
        expert /= t * layout.ep
        weights = dense + expert
        states_shard = {k: (dense / dense_shards + expert / expert_shards) if layout.zero >= z else weights
                        for k, z in (("optimizer", 1), ("grads", 2), ("params", 3))}
        params = PARAM_BYTES * states_shard["params"]
        grads = grad_bytes * states_shard["grads"]
        optimizer = OPTIMIZER_BYTES * states_shard["optimizer"]

        if act_dense is None:
            act_dense = layer_activation_bytes(model, layout, seq_len=seq_len)
            act_moe = layer_activation_bytes(model, layout, moe=True, seq_len=seq_len) if model.is_moe else 0.0
        per_chunk = (act_dense * (len(blocks) - moe_blocks) + act_moe * moe_blocks) / layout.virtual_stages
        activations = _in_flight(layout, rank, micro_batches) * per_chunk
        s_local = (seq_len or model.seq_len) / layout.cp
        if rank == p - 1:
            activations += 4 * s_local * layout.micro_batch * model.vocab / t  # fp32 logits for the loss
        working = 0.0
        if layout.recompute == "full":
            working += layer_activation_bytes(model, layout, moe=model.is_moe, recompute="selective",
                                              seq_len=seq_len)
        if layout.zero >= 3:
            biggest = max((model.block_params(i) for i in blocks), default=0)
            working += 2 * PARAM_BYTES * biggest / t
        report = MemoryReport(params=params, grads=grads, optimizer=optimizer, activations=activations,
                              working=working, stage=rank, params_per_gpu=weights, capacity=capacity,
                              detail={"layers": len(blocks), "moe_layers": moe_blocks, "dense_weights": dense,
                                      "expert_weights": expert,
                                      "in_flight_chunks": _in_flight(layout, rank, micro_batches)})
        if best is None or report.total > best.total:
            best = report
    return best
