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

**Activations**, counted tensor by tensor from the model's architecture (``activation_tensors``): what each
op of one block keeps for its backward, in bf16 (2 B) unless said, per token of a micro-batch of ``b``
sequences of ``s`` tokens (hidden ``h``, ``a`` heads, ``kv`` key/value width = KV heads x head dimension,
MLP width ``f``):

* attention: the norm's input ``2h`` (RMSNorm and LayerNorm both keep their input; their fp32 per-token
  statistics, 4-8 B, are left out), the QKV GEMM's input ``2h``, Q ``2h``, K and V ``2 kv`` each
  (grouped-query attention: Llama 3 405B has 8 KV heads, ``kv = h / 16``), the attention output ``2h``,
  which is also the output GEMM's input (one tensor, counted once);
* the attention kernel: fused (flash) attention (Dao et al., arXiv:2205.14135 section 3.1; flash-attn's
  backward takes ``q, k, v, out, softmax_lse`` and the RNG state, which regenerates any dropout mask) adds
  only the fp32 log-sum-exp, ``4a``; unfused attention keeps the ``s x s`` softmax output ``2as``, plus,
  with dropout, its 1-byte mask and the dropout output ``3as`` (Korthikanti et al., arXiv:2205.05198
  section 4.1);
* MLP: the norm's input ``2h``, FC1's input ``2h``; GeLU keeps its input ``2f`` and FC2's input ``2f``;
  SwiGLU, fused as Megatron-Core runs it (``fusions/fused_bias_swiglu.py``: the function saves its input),
  keeps FC1's output (gate and up, ``4f``) and FC2's input ``2f``: ``6f`` (an unfused
  ``w2(silu(w1 x) * w3 x)`` in plain PyTorch keeps ``8f``: the SiLU output too);
* multi-head latent attention (DeepSeek-V2/V3): Q and K are ``heads x (qk_nope + qk_rope)`` wide, V
  ``heads x v_head_dim``, and the two latents' norms and up-projections keep their inputs,
  ``4 q_lora_rank + 4 kv_lora_rank`` (counted with the tensors outside TP);
* dropout: a 1-byte mask ``h`` after attention and after the MLP, only when ``model.dropout > 0``
  (GPT-3 as Megatron-LM trains it; Llama has none);
* mixture of experts (a MoE block's MLP): the fp32 router probabilities ``4E`` for ``E`` experts, the
  ``top_k`` dispatched copies of each token ``2h`` each (the routed experts' FC1 inputs), the ``top_k``
  expert outputs ``2h`` each (the combine's gradient with respect to the gate weights needs them), and the
  MLP intermediates above at width ``expert_ffn`` for each of ``top_k + shared_experts`` experts.

The GEMM inputs after a norm are inside the tensor-parallel region; the four hidden-width tensors outside
it (two norm inputs, two GEMM inputs; Megatron keeps the sequence-parallel shard and gathers it again in
backward, Korthikanti section 4.2.2) and the router's and dispatch tensors are divided by ``t`` only with
sequence parallelism; the rest always. Bytes per layer and micro-batch:
``s b / cp x (outside / (t if SP else 1) + inside / t)``. For GPT-3 (dropout, GeLU with ``f = 4h``,
multi-head attention) the sum is exactly Korthikanti's ``sbh (34 + 5as/h)`` (with SP ``/ t``); for a
Llama block with flash attention it is ``sb (12h + 4kv + 6f + 4a) / t`` with SP: 533 MB per layer for
Llama 3 405B at TP 8 and 8,192 tokens, where Korthikanti's ``34 sbh / t`` gives 570 MB (5.9 GB with
the unfused ``s x s`` term).
Selective recomputation drops the attention-score terms (log-sum-exp or ``s x s``); full recomputation
keeps only each layer's input, ``2h`` (``/ t`` with SP), plus the working set of the one layer being
recomputed. Context parallelism splits the sequence: ``s -> s / cp``. The last stage also keeps one
micro-batch of fp32 logits for the loss, ``4 s b vocab / (t cp)`` bytes (assumption: the loss is computed
in fp32 on vocabulary-parallel logits; under interleaving the last chunk's backward follows its forward).
Not counted: the stage's received input and sent output beyond the tensors above (Megatron frees the sent
output's data after the send, ``deallocate_output_tensor``; Llama 3 frees both, arXiv:2407.21783 section
3.3.2), allocator fragmentation, the CUDA context and NCCL buffers.

**Pipeline in flight** (Narayanan et al., arXiv:2104.04473, section 2.2; Megatron-Core's
``pipeline_parallel/schedules.py``): under 1F1B, pipeline rank ``r`` of ``p`` runs ``p - r - 1`` warm-up
forwards before its first backward, then one forward and one backward, so it keeps ``min(p - r, m)``
micro-batches of its ``L / p`` layers: the first stage holds ``L`` layers' worth, whatever ``p`` is
(Korthikanti, section 4.2.3). Interleaved with ``v`` model chunks, rank ``r`` warms up
``2 (p - r - 1) + (v - 1) p`` chunks (``microbatch_group_size_per_vp_stage`` = ``p``, the default), capped
at all ``m v`` (then every forward runs first), so it keeps ``min(2 (p - r - 1) + (v - 1) p + 1, m v)``
chunks and the first rank ``L (1 + (p - 1) / (p v))`` layers' worth when ``m`` is large. The chunks are
taken at the rank's average size: exact for ranks whose chunks hold equal layer counts, an over-count for an
end rank with an empty chunk (Llama 3's embedding-only first chunk), which is not the busiest there.

The report is the busiest pipeline rank (the largest total); capacity is the GPU's HBM from the hardware
presets, all of it (no allowance for the CUDA context, NCCL buffers or fragmentation, which take a few GB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabricsim.errors import ConfigError

__all__ = ["MemoryReport", "memory_report", "stage_layers", "activation_tensors", "layer_activation_bytes",
           "gpu_capacity",
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
ROUTER_BYTES = 4  # fp32 router probabilities per expert and token, kept for the softmax's backward
MASK_BYTES = 1  # a dropout mask (Korthikanti et al. count one byte per element)


def activation_tensors(model, layout, *, moe: bool = False, recompute: str | None = None,
                       seq_len: int | None = None,
                       fused_attention: bool = FUSED_ATTENTION) -> dict[str, tuple[float, bool]]:
    """What one block keeps for backward, tensor by tensor: ``name -> (bytes per token, split)``.

    ``split`` tensors are divided over tensor parallelism always; the others (the hidden-width tensors
    outside the TP region) only with sequence parallelism. Bytes are per token of the *full* width (divide
    by ``tp`` as ``split`` says); the attention-score entries of unfused attention grow with the local
    sequence length ``s / cp``. See the module docstring for which op keeps which tensor.
    """
    recompute = layout.recompute if recompute is None else recompute
    s = (seq_len or model.seq_len) / layout.cp
    h = model.hidden
    drop = model.dropout > 0
    out: dict[str, tuple[float, bool]] = {}
    if recompute == "full":
        out["block input"] = (ACT * h, False)
        return out
    # attention half: RMSNorm/LayerNorm input, the QKV GEMM's input (the norm output)
    out["attention norm input"] = (ACT * h, False)
    out["QKV GEMM input"] = (ACT * h, False)
    if model.latent_attention:
        q = k = model.qk_dim
        v = model.v_dim
        # the compressed latents: each latent norm keeps its input, each up-projection its input
        if model.q_lora_rank:
            out["query latent (norm and up-projection inputs)"] = (2 * ACT * model.q_lora_rank, False)
        out["key-value latent (norm and up-projection inputs)"] = (2 * ACT * model.kv_lora_rank, False)
    else:
        q, k = h, model.kv_heads * model.head_dim  # grouped-query attention: kv_heads x head_dim wide
        v = k
    out["Q"] = (ACT * q, True)
    out["K"] = (ACT * k, True)
    out["V"] = (ACT * v, True)
    out["attention output (output GEMM input)"] = (ACT * model.v_dim, True)
    if recompute == "none":
        if fused_attention:
            out["log-sum-exp (fp32)"] = (LSE_BYTES * model.heads, True)
        else:
            out["softmax output"] = (ACT * model.heads * s, True)
            if drop:
                out["attention dropout mask"] = (MASK_BYTES * model.heads * s, True)
                out["attention dropout output"] = (ACT * model.heads * s, True)
    if drop:
        out["attention residual dropout mask"] = (MASK_BYTES * h, False)
    # MLP half
    out["MLP norm input"] = (ACT * h, False)
    out["MLP input (FC1 GEMM input)"] = (ACT * h, False)  # also the router's and shared experts' input
    if model.mlp == "swiglu":
        widths = {"FC1 output (gate and up, SwiGLU input)": 2 * ACT, "FC2 GEMM input": ACT}
    else:
        widths = {"FC1 output (GeLU input)": ACT, "FC2 GEMM input": ACT}
    if moe:
        copies = model.top_k + model.shared_experts
        out["router probabilities (fp32)"] = (ROUTER_BYTES * model.experts, False)
        out["dispatched tokens (routed experts' FC1 input)"] = (model.top_k * ACT * h, False)
        out["routed experts' outputs (for the combine's gate gradient)"] = (model.top_k * ACT * h, False)
        for name, w in widths.items():
            out[name] = (w * model.expert_ffn * copies, True)
    else:
        for name, w in widths.items():
            out[name] = (w * model.ffn, True)
    if drop:
        out["MLP residual dropout mask"] = (MASK_BYTES * h, False)
    return out


def layer_activation_bytes(model, layout, *, moe: bool = False, recompute: str | None = None,
                           seq_len: int | None = None, fused_attention: bool = FUSED_ATTENTION) -> float:
    """Bytes one block keeps for backward, for one micro-batch: the sum of ``activation_tensors``,
    ``s b / cp x (replicated / (tp if SP else 1) + split / tp)``.

    Examples
    --------
    GPT-3 175B as Korthikanti et al. count it (dropout, GeLU 4h MLP, multi-head attention), selective
    recomputation, TP 8 with SP: ``34 s b h / t``.

    >>> from fabricsim.training.models import model_preset
    >>> from fabricsim.training.layout import Layout
    >>> m = model_preset("gpt3-175b")
    >>> sbh = m.seq_len * m.hidden
    >>> layer_activation_bytes(m, Layout(tp=8, recompute="selective")) == 34 * sbh / 8
    True
    """
    tensors = activation_tensors(model, layout, moe=moe, recompute=recompute, seq_len=seq_len,
                                 fused_attention=fused_attention)
    t = layout.tp
    sp = bool(layout.sequence_parallel)
    split = sum(b for b, is_split in tensors.values() if is_split)
    replicated = sum(b for b, is_split in tensors.values() if not is_split)
    tokens = (seq_len or model.seq_len) / layout.cp * layout.micro_batch
    return ((replicated / t if sp else replicated) + split / t) * tokens


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
                                      "in_flight_chunks": _in_flight(layout, rank, micro_batches),
                                      "layer_activation_bytes": act_dense,
                                      "moe_layer_activation_bytes": act_moe})
        if best is None or report.total > best.total:
            best = report
    return best
