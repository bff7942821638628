"""Compute of one transformer block, one pipeline chunk and one micro-batch: FLOPs and time.

FLOPs per token of one block's forward pass (a multiply-add is 2 FLOPs; Narayanan et al., arXiv:2104.04473,
section 5.1, and Korthikanti et al., arXiv:2205.05198, section 5):

- projections: ``2 x attention weights`` (Q, K, V and output; grouped-query and latent attention through
  the model's own weight count);
- attention core: the scores ``Q K^T`` and the weighted values ``A V``, ``2 x s x (qk_dim + v_dim)`` over a
  full ``s x s`` matrix; a causal mask halves it (FlashAttention skips the masked blocks: Dao,
  arXiv:2307.08691, section 3.1), which is what the GPU executes;
- MLP: ``2 x MLP weights``; a mixture-of-experts block instead runs every token through ``top_k`` routed
  and the shared experts, ``2 x (top_k + shared) x expert weights``, plus the router ``2 x d x experts``;
- the output layer (logits) on the last pipeline stage: ``2 x d x vocab``.

Backward is twice the forward (the gradients of inputs and of weights: Kaplan et al., arXiv:2001.08361,
section 2.1). Recomputation (Korthikanti et al. 2022) reruns forward work during backward: ``"full"``
the whole block forward, ``"selective"`` the attention core only.

Each GPU of a (tensor, context)-parallel group does ``1 / (tp x cp)`` of its stage's FLOPs (Megatron
splits the matrices over TP and balances the causal attention over CP by giving each rank two opposite
chunks of the sequence). Time is FLOPs over ``peak(precision) x efficiency``, where ``efficiency`` is ONE
number per GPU generation and precision (``EFFICIENCY``; see there for where each comes from). A user
may override it (``StepConfig.mfu``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fabricsim.errors import ConfigError

__all__ = ["EFFICIENCY", "FITTED_ROWS", "gpu_generation", "compute_efficiency", "block_flops", "ChunkWork",
           "stage_layers", "chunk_work"]

# Share of dense tensor-core peak that a training step's kernels reach (GEMMs, flash attention, the
# memory-bound element-wise work between them), by GPU generation and precision.
#
# hopper/bf16 is fitted on ONE published row, D149-96 (Megatron-Core GPT-3 175B on 96 H100, MFU 47%, 384
# micro-batches per replica, communication almost entirely overlapped): the simulated step of that row
# reproduces 47% with this efficiency (`fabricsim validate`). It is a share of the FLOPs the kernels
# execute (causal attention counted once), and absorbs what the simulation does not time: the optimizer
# step, memory-bound kernels, launch gaps. That row is therefore not evidence; every other training row
# (D149-4608, the D149 scaling ratio, D151-*) is. The other entries are assumptions, not fits:
# - hopper/fp8: Transformer Engine FP8 speeds GEMMs up by about 1.3-1.5x end to end, not 2x, because the
#   non-GEMM work and the casts do not speed up; we take 0.7 x the bf16 share of the doubled peak.
# - blackwell: no published training MFU at scale yet; the Hopper shares are used (an assumption to
#   revisit when one appears), fp4 as fp8.
FITTED_ROWS = {"EFFICIENCY[hopper,bf16]": ["D149-96"]}
_HOPPER_BF16 = 0.488
EFFICIENCY = {
    ("hopper", "bf16"): _HOPPER_BF16, ("hopper", "fp16"): _HOPPER_BF16, ("hopper", "fp8"): 0.7 * _HOPPER_BF16,
    ("blackwell", "bf16"): _HOPPER_BF16, ("blackwell", "fp16"): _HOPPER_BF16,
    ("blackwell", "fp8"): 0.7 * _HOPPER_BF16, ("blackwell", "fp4"): 0.7 * _HOPPER_BF16,
}
_GENERATION = {"H100": "hopper", "H200": "hopper", "H800": "hopper", "B200": "blackwell", "GB200": "blackwell",
               "B300": "blackwell", "GB300": "blackwell"}


def gpu_generation(gpu) -> str:
    """"hopper" or "blackwell" from a hardware preset (its name), else ConfigError."""
    name = getattr(gpu, "name", str(gpu))
    try:
        return _GENERATION[name.upper()]
    except KeyError:
        raise ConfigError(f"no compute efficiency known for GPU {name!r} (known: {', '.join(_GENERATION)}); "
                          "give --mfu") from None


def compute_efficiency(gpu, precision: str) -> float:
    """The documented share of dense peak for this GPU's generation at ``precision``."""
    gen = gpu_generation(gpu)
    try:
        return EFFICIENCY[(gen, precision.lower())]
    except KeyError:
        raise ConfigError(f"no compute efficiency for {gen} at {precision!r}; give --mfu") from None


def _get(model, name, default):
    return getattr(model, name, default)


def _attention_weights(model) -> int:
    if hasattr(model, "attention_params"):
        return int(model.attention_params)
    d, kv = model.hidden, model.kv_heads * model.head_dim
    return 2 * d * d + 2 * d * kv


def _mlp_weights(model, width=None) -> int:
    if hasattr(model, "mlp_params"):
        return int(model.mlp_params(width))
    f = model.ffn if width is None else width
    return (3 if model.mlp == "swiglu" else 2) * model.hidden * f


def _is_moe(model, i: int) -> bool:
    fn = getattr(model, "is_moe_layer", None)
    return bool(fn(i)) if fn is not None else False


@dataclass(frozen=True)
class BlockFlops:
    """Forward FLOPs per token of one block: GEMMs (projections, MLP/experts) and the attention core."""

    gemm: float
    attention: float
    moe: bool = False

    @property
    def total(self) -> float:
        return self.gemm + self.attention


def block_flops(model, i: int, seq_len: int | None = None, *, causal: bool = True) -> BlockFlops:
    """Forward FLOPs per token of block ``i`` (see the module docstring for the formula)."""
    s = model.seq_len if seq_len is None else seq_len
    qk = _get(model, "qk_dim", model.hidden)
    v = _get(model, "v_dim", model.hidden)
    attention = 2.0 * s * (qk + v) * (0.5 if causal else 1.0)
    gemm = 2.0 * _attention_weights(model)
    moe = _is_moe(model, i)
    if moe:
        experts = model.top_k + _get(model, "shared_experts", 0)
        gemm += 2.0 * experts * _mlp_weights(model, model.expert_ffn) + 2.0 * model.hidden * model.experts
    else:
        gemm += 2.0 * _mlp_weights(model)
    return BlockFlops(gemm, attention, moe)


def stage_layers(layers: int, chunks: int) -> list[int]:
    """Blocks per pipeline chunk (``pp x virtual_stages`` chunks, in model order).

    Even when ``chunks`` divides ``layers``. Otherwise every chunk gets ``ceil(layers / chunks)`` and the
    deficit comes off the ends, last chunk first, then the first, then the second-to-last...: the ends carry
    the embedding and the output layer, which is how Llama 3 balanced 126 layers on 16 stages (one fewer
    layer on the first and the last stage: arXiv:2407.21783, section 3.3.2).

    Up to two chunks more than layers are allowed: the end chunks then hold no block, the first only the
    embedding and the last only the output layer and the loss. That is Llama 3's own split: "the first
    model chunk on the first stage has only the embedding, and the last model chunk on the last stage has
    only output projection and loss calculation" (arXiv:2407.21783, section 3.3.2), 126 blocks in
    ``16 x 8 = 128`` chunks. More chunks would leave a middle chunk empty, which nothing does.
    """
    if chunks > layers + 2:
        raise ConfigError(f"{chunks} pipeline chunks is more than the model's {layers} layers plus the two end "
                          "chunks that may hold only the embedding and the output layer")
    q, r = divmod(layers, chunks)
    if r == 0:
        return [q] * chunks
    counts = [q + 1] * chunks
    deficit = chunks - r
    order = []
    lo, hi = 0, chunks - 1
    while lo <= hi:
        order.append(hi)
        if lo != hi:
            order.append(lo)
        lo, hi = lo + 1, hi - 1
    for c in order[:deficit]:
        counts[c] -= 1
    return counts


@dataclass(frozen=True)
class ChunkWork:
    """One pipeline chunk's work for one micro-batch on one GPU.

    ``forward``/``backward`` are compute seconds (recomputation included in backward); ``flops_*`` the FLOPs
    behind them; ``blocks`` the block indices; ``moe_blocks`` how many have experts; ``attention_forward``
    the seconds of the attention core in one forward (what a CP ring overlaps with).
    """

    blocks: tuple
    forward: float
    backward: float
    flops_forward: float
    flops_backward: float
    attention_forward: float
    gemm_forward: float
    moe_blocks: int
    logits: bool


def chunk_work(model, blocks, *, tokens: float, tp: int, cp: int, rate: float, recompute: str = "none",
               logits: bool = False) -> ChunkWork:
    """Compute of ``blocks`` for a micro-batch of ``tokens`` tokens on one GPU of a tp x cp group.

    ``rate`` is the sustained FLOP/s (peak x efficiency). ``logits`` adds the output layer.
    """
    per_gpu = tokens / (tp * cp)
    gemm = attn = 0.0
    moe = 0
    for i in blocks:
        f = block_flops(model, i)
        gemm += f.gemm * per_gpu
        attn += f.attention * per_gpu
        moe += f.moe
    if logits:
        gemm += 2.0 * model.hidden * model.vocab * per_gpu
    fwd = gemm + attn
    bwd = 2.0 * fwd
    if recompute == "full":
        bwd += fwd
    elif recompute == "selective":
        bwd += attn
    return ChunkWork(tuple(blocks), fwd / rate, bwd / rate, fwd, bwd, attn / rate, gemm / rate, moe, logits)
