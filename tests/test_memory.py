"""Per-GPU memory: model states by ZeRO stage, activations by Korthikanti et al.'s formulas, pipelines in flight."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.errors import ConfigError
from fabricsim.hardware import GB200
from fabricsim.topologies.io import build
from fabricsim.training.layout import Layout
from fabricsim.training.memory import (activation_tensors, gpu_capacity, layer_activation_bytes, memory_report,
                                      stage_layers)
from fabricsim.training.models import MODELS, Model

GPT3 = MODELS["gpt3-175b"]
L70 = MODELS["llama3-70b"]


def test_issue_example_405b_tp8_refused():
    r = memory_report(MODELS["llama3-405b"], Layout(tp=8, dp=128), capacity=GB200.hbm_bytes)
    assert r.params_per_gpu == pytest.approx(50.7e9, rel=0.002)
    assert r.states == pytest.approx(16 * r.params_per_gpu)
    assert r.states == pytest.approx(810e9, rel=0.005)
    assert not r.fits()


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_llama3_70b_zero_over_dp8(zero):
    p = L70.params
    r = memory_report(L70, Layout(dp=8, zero=zero))
    assert r.optimizer == pytest.approx(12 * p / (8 if zero >= 1 else 1))
    assert r.grads == pytest.approx(2 * p / (8 if zero >= 2 else 1))
    assert r.params == pytest.approx(2 * p / (8 if zero >= 3 else 1))
    assert r.optimizer / 1e9 == pytest.approx(105.8 if zero else 846.6, abs=0.1)


def test_fp32_gradients_and_cp_in_the_optimizer_group():
    assert memory_report(L70, Layout(dp=8), grad_bytes=4).grads == pytest.approx(4 * L70.params)
    # the distributed optimizer shards over dp x cp
    r = memory_report(L70, Layout(dp=4, cp=2, zero=1))
    assert r.optimizer == pytest.approx(12 * L70.params / 8)
    with pytest.raises(ConfigError, match="gradient bytes"):
        memory_report(L70, Layout(), grad_bytes=3)


def test_korthikanti_formulas_gpt3():
    s, h, a, t = GPT3.seq_len, GPT3.hidden, GPT3.heads, 8
    sbh = s * h
    unfused = {"fused_attention": False}  # Korthikanti et al.'s figures keep the s x s scores
    none = layer_activation_bytes(GPT3, Layout(), **unfused)
    assert none == pytest.approx(sbh * (34 + 5 * a * s / h))
    tp = layer_activation_bytes(GPT3, Layout(tp=t, sequence_parallel=False), **unfused)
    assert tp == pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    sp = layer_activation_bytes(GPT3, Layout(tp=t), **unfused)
    assert sp == pytest.approx(sbh * (34 + 5 * a * s / h) / t)
    assert layer_activation_bytes(GPT3, Layout(tp=t, recompute="selective")) == pytest.approx(34 * sbh / t)
    assert layer_activation_bytes(GPT3, Layout(tp=t, recompute="full")) == pytest.approx(2 * sbh / t)
    assert layer_activation_bytes(GPT3, Layout(tp=t, recompute="full", sequence_parallel=False)) == 2 * sbh
    # micro-batch scales, CP divides the sequence (the score term by cp^2)
    assert layer_activation_bytes(GPT3, Layout(micro_batch=3, recompute="selective")) == 3 * 34 * sbh
    cp = layer_activation_bytes(GPT3, Layout(cp=4), **unfused)
    assert cp == pytest.approx(s / 4 * h * (34 + 5 * a * s / 4 / h))


def test_fused_attention_keeps_no_scores():
    """Flash attention keeps an fp32 log-sum-exp per head and token instead of the s x s scores."""
    s, h, a, t = GPT3.seq_len, GPT3.hidden, GPT3.heads, 8
    fused = layer_activation_bytes(GPT3, Layout(tp=t))
    assert fused == pytest.approx(s * h * (34 + 4 * a / h) / t)
    # worked example: GPT-3 175B (s 2048, h 12288, a 96), TP 8 with SP: 2048 x 12288 x 34.03 / 8 bytes,
    # 107 MB per layer and sequence fused; unfused keeps 5 x 96 x 2048 / 12288 = 80 more units of sbh/t,
    # 252 MB more
    assert (s, h, a) == (2048, 12288, 96)
    assert round(fused / 1e6) == 107
    unfused = layer_activation_bytes(GPT3, Layout(tp=t), fused_attention=False)
    assert unfused - fused == pytest.approx(s * h * (5 * a * s / h - 4 * a / h) / t)
    assert round((unfused - fused) / 1e6) == 252
    assert layer_activation_bytes(GPT3, Layout(tp=t, recompute="selective")) < fused < unfused


def test_swiglu_gqa_and_moe_layers_keep_more_or_less():
    m = MODELS["llama3-70b"]
    h, f, kv = m.hidden, m.ffn, m.kv_heads * m.head_dim
    # no dropout: two norm inputs and two GEMM inputs (8h), Q, K, V and the attention output, SwiGLU's 6f
    per_token = 8 * h + 2 * (h + 2 * kv + h) + 6 * f
    assert layer_activation_bytes(m, Layout(recompute="selective")) == pytest.approx(per_token * m.seq_len)
    mx = MODELS["mixtral-8x7b"]
    dense = layer_activation_bytes(mx, Layout(recompute="selective"))
    moe = layer_activation_bytes(mx, Layout(recompute="selective"), moe=True)
    # fp32 router probabilities (8 experts), two dispatched copies in and two expert outputs back (2h each),
    # and a second expert's SwiGLU intermediates
    assert moe - dense == pytest.approx(mx.seq_len * (4 * 8 + 2 * 2 * 2 * mx.hidden + 6 * mx.expert_ffn * (2 - 1)))


def test_worked_example_llama3_8b_by_hand():
    """Llama 3 8B (h 4096, 8 KV heads of 128, SwiGLU 14,336, 32 heads, s 8192), flash attention, bf16, per
    token: norm inputs 2 x 8192 B, QKV and FC1 GEMM inputs 2 x 8192, Q 8192, K 2048, V 2048, attention output
    8192, log-sum-exp 32 x 4 = 128, SwiGLU input (gate and up) 57,344, FC2 input 28,672: 139,392 B."""
    m = MODELS["llama3-8b"]
    assert (m.hidden, m.kv_heads * m.head_dim, m.ffn, m.heads, m.seq_len) == (4096, 1024, 14336, 32, 8192)
    tensors = activation_tensors(m, Layout())
    assert not any("dropout" in name for name in tensors)  # Llama has no dropout
    assert sum(b for b, _ in tensors.values()) == 139_392
    assert layer_activation_bytes(m, Layout()) == 139_392 * 8192  # 1.14 GB per layer and sequence
    # TP 2 with SP divides everything; without SP the four hidden-width tensors outside TP stay whole
    assert layer_activation_bytes(m, Layout(tp=2)) == 139_392 / 2 * 8192
    outside = 4 * 8192
    assert layer_activation_bytes(m, Layout(tp=2, sequence_parallel=False)) == \
        (outside + (139_392 - outside) / 2) * 8192
    # selective recomputation drops the log-sum-exp only; full keeps the block input
    assert layer_activation_bytes(m, Layout(recompute="selective")) == (139_392 - 128) * 8192
    assert layer_activation_bytes(m, Layout(recompute="full")) == 8192 * 8192


def test_latent_attention_keeps_its_latents():
    m = MODELS["deepseek-v3"]
    tensors = activation_tensors(m, Layout())
    assert tensors["Q"][0] == tensors["K"][0] == 2 * 128 * (128 + 64)
    assert tensors["V"][0] == 2 * 128 * 128
    latents = [b for name, (b, _) in tensors.items() if "latent" in name]
    assert sorted(latents) == [4 * 512, 4 * 1536]


def test_dropout_from_a_model_file(tmp_path):
    from fabricsim.training.models import load_model

    text = 'name = "d"\nlayers = 2\nhidden = 64\nffn = 256\nheads = 4\nvocab = 8\nseq_len = 16\n'
    (tmp_path / "d.toml").write_text(text + "dropout = 0.1\n")
    assert load_model(tmp_path / "d.toml").dropout == 0.1
    (tmp_path / "bad.toml").write_text(text + "dropout = true\n")
    with pytest.raises(ConfigError, match="dropout"):
        load_model(tmp_path / "bad.toml")


def test_dropout_masks_only_with_dropout():
    """GPT-3 configured as Korthikanti et al. (dropout) keeps 34 sbh; without dropout the two 1-byte residual
    masks go (32 sbh), and unfused attention keeps the softmax output alone (2as) instead of 5as."""
    from dataclasses import fields

    def gpt3(dropout):
        kept = {f.name: getattr(GPT3, f.name) for f in fields(Model) if f.name != "expert_ffn"}
        return Model(**{**kept, "dropout": dropout})

    s, h, a = GPT3.seq_len, GPT3.hidden, GPT3.heads
    plain = gpt3(0.0)
    sel = Layout(recompute="selective")
    assert layer_activation_bytes(GPT3, sel) == 34 * s * h
    assert layer_activation_bytes(plain, sel) == 32 * s * h
    assert layer_activation_bytes(plain, Layout(), fused_attention=False) == s * h * (32 + 2 * a * s / h)
    with pytest.raises(ConfigError, match="dropout"):
        gpt3(1.0)


def test_llama3_405b_fits_at_metas_layout():
    """arXiv:2407.21783 section 3.3 and Table 4: 16,384 H100 ("80 GB": 81,559 MiB), TP 8, PP 16 with 8 chunks per rank,
    DP 128, 16 sequences of 8,192 tokens per replica, micro-batch 1, no activation checkpointing, FSDP
    sharding gradients and optimizer states (ZeRO-2, FP32 gradients)."""
    from fabricsim.hardware import H100

    m = MODELS["llama3-405b"]
    lay = Layout(tp=8, pp=16, dp=128, virtual_stages=8, zero=2)
    h, kv, f, a, t = m.hidden, m.kv_heads * m.head_dim, m.ffn, m.heads, 8
    # by hand: 12h + 4 kv + 6 f + 4a bytes per token, all over TP with SP: 533 MB per layer
    per_layer = (12 * h + 4 * kv + 6 * f + 4 * a) / t * m.seq_len
    assert layer_activation_bytes(m, lay) == pytest.approx(per_layer)
    assert round(per_layer / 1e6) == 533
    r = memory_report(m, lay, capacity=H100.hbm_bytes, grad_bytes=4, micro_batches=16)
    # 16 micro-batches x 8 chunks = 128 in flight at most: ranks 1-7 run every forward first (Megatron's
    # warm-up 2 (p - r - 1) + (v - 1) p >= 128), holding all 8 of their one-block chunks for 16 micro-batches
    assert r.stage == 1 and r.detail["in_flight_chunks"] == 128
    assert r.detail["layer_activation_bytes"] == pytest.approx(per_layer)
    assert r.activations == pytest.approx(128 * per_layer)
    assert r.fits() and 74e9 < r.total < 76e9


@pytest.mark.parametrize("change, seq_len", [({}, 16384), ({"tp": 2, "dp": 512}, None)])
def test_llama3_405b_refused_where_it_truly_does_not_fit(change, seq_len):
    """Twice the sequence (136 GB of activations), or TP 2 (four times the weights and activations per GPU);
    TP 4 (81.4 GB) fits in the 81,559 MiB (85.5 GB) an "80 GB" H100 holds."""
    from fabricsim.hardware import H100

    m = MODELS["llama3-405b"]
    lay = Layout(**{**dict(tp=8, pp=16, dp=128, virtual_stages=8, zero=2), **change})
    micro = 2048 // lay.dp
    r = memory_report(m, lay, capacity=H100.hbm_bytes, grad_bytes=4, micro_batches=micro, seq_len=seq_len)
    assert not r.fits() and r.total > H100.hbm_bytes > 85e9


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(1, 4), st.integers(1, 6))
def test_in_flight_matches_megatrons_schedule(p, v, groups):
    """Replays Megatron-Core's interleaved 1F1B order (schedules.py: warm-up 2 (p - r - 1) + (v - 1) p
    forwards, capped at all m v, then one forward and one backward, then the cool-down) and counts the
    chunks held at once; m is a multiple of p as the schedule requires."""
    m_batches = groups * p
    model = Model("p", layers=p * v * 2, hidden=64, ffn=256, heads=4, vocab=8, seq_len=16, mlp="gelu")
    lay = Layout(pp=p, virtual_stages=v)
    for rank in range(p):
        total = m_batches * v
        if v == 1:
            warm = min(p - rank - 1, total)
        else:
            warm = min(2 * (p - rank - 1) + (v - 1) * p, total)
        held = peak = 0
        for step in range(total):
            held += 1  # a forward (warm-up, or the forward half of a steady 1F1B pair)
            peak = max(peak, held)
            if step >= warm:
                held -= 1  # its paired backward
        from fabricsim.training.memory import _in_flight

        assert _in_flight(lay, rank, m_batches) == peak


@pytest.mark.parametrize("p, v", [(2, 1), (4, 1), (8, 1), (4, 2), (8, 3)])
def test_first_stage_holds_l_layers_times_interleave_factor(p, v):
    m = Model("p", layers=48, hidden=1024, ffn=4096, heads=8, vocab=8, seq_len=512, mlp="gelu")
    lay = Layout(pp=p, virtual_stages=v, recompute="selective")
    per_layer = layer_activation_bytes(m, lay)
    r = memory_report(m, lay)
    assert r.stage == 0  # the first rank keeps the most
    expected = m.layers * per_layer * (1 + (p - 1) / (p * v))
    assert r.activations == pytest.approx(expected if v > 1 else m.layers * per_layer)
    # fewer micro-batches than stages: fewer in flight
    few = memory_report(m, lay, micro_batches=1)
    assert few.activations < r.activations


def test_stage_layers_cover_every_block_once():
    for layers, p, v in [(126, 16, 1), (61, 8, 1), (48, 4, 3), (10, 3, 1), (126, 16, 8), (7, 4, 2)]:
        stages = stage_layers(layers, p, v)
        assert sorted(i for s in stages for i in s) == list(range(layers))
        assert max(map(len, stages)) - min(map(len, stages)) <= v
    with pytest.raises(ConfigError):
        stage_layers(4, 4, 2)


def test_llama3_split_ends_hold_only_embedding_and_output():
    """126 blocks in 16 x 8 chunks (arXiv:2407.21783, 3.3.2): one block per chunk, none in the first chunk
    (embedding only) and the last (output layer only), so the end stages hold 7 blocks and the others 8."""
    from fabricsim.training.compute import stage_layers as chunk_sizes

    sizes = chunk_sizes(126, 128)
    assert sizes[0] == sizes[-1] == 0 and set(sizes[1:-1]) == {1}
    stages = stage_layers(126, 16, 8)
    assert [len(s) for s in stages] == [7] + [8] * 14 + [7]
    # chunk c holds block c - 1 on rank c % 16: block 0 on rank 1, the last block on rank 126 % 16 = 14
    assert stages[1][0] == 0 and stages[0][0] == 15 and stages[14][-1] == 125


def test_expert_parallel_shards_experts():
    m = MODELS["mixtral-8x7b"]
    one = memory_report(m, Layout(dp=8))
    ep = memory_report(m, Layout(dp=8, ep=8))
    assert one.params_per_gpu == m.params
    assert ep.params_per_gpu == pytest.approx(m.params - m.routed_expert_params * 7 / 8)
    # ZeRO-1 shards expert optimizer states over dp x cp / ep = 1: the expert part stays whole
    z = memory_report(m, Layout(dp=8, ep=8, zero=1))
    non_expert = m.params - m.routed_expert_params
    assert z.optimizer == pytest.approx(12 * (non_expert / 8 + m.routed_expert_params / 8))


def test_capacity_from_topology_and_fits():
    topo = build("gb200-nvl72-ib", gpus=72)
    cap = gpu_capacity(topo)
    assert cap == GB200.hbm_bytes
    r = memory_report(MODELS["llama3-8b"], Layout(tp=8, dp=9, recompute="selective"), capacity=cap)
    assert r.fits() and r.total < cap
    assert not r.fits(r.total * 0.99)
    with pytest.raises(ConfigError, match="no memory capacity"):
        memory_report(GPT3, Layout()).fits()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["llama3-70b", "mixtral-8x7b", "deepseek-v3"]), st.sampled_from([1, 2, 4, 8]),
       st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 8]), st.sampled_from(["none", "selective", "full"]))
def test_more_sharding_never_needs_more_memory(name, tp, pp, dp, recompute):
    m = MODELS[name]
    base = dict(tp=tp, pp=pp, dp=dp, recompute=recompute)
    totals = [memory_report(m, Layout(**base, zero=z)).total for z in range(4) if not (z == 3 and dp == 1)]
    # ZeRO-3 adds two gathered blocks of working memory, which only pays once sharding saves more
    assert all(a >= b for a, b in zip(totals[:3], totals[1:3]))
    assert memory_report(m, Layout(**{**base, "tp": tp * 2})).states <= memory_report(m, Layout(**base)).states
    order = ["none", "selective", "full"]
    if recompute != "full":
        stronger = order[order.index(recompute) + 1]
        assert memory_report(m, Layout(**{**base, "recompute": stronger})).activations < \
            memory_report(m, Layout(**base)).activations
