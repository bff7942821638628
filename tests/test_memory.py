"""Per-GPU memory: model states by ZeRO stage, activations by Korthikanti et al.'s formulas, pipelines in flight."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.errors import ConfigError
from fabricsim.hardware import GB200
from fabricsim.topologies.io import build
from fabricsim.training.layout import Layout
from fabricsim.training.memory import gpu_capacity, layer_activation_bytes, memory_report, stage_layers
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
    per_token = 10 * h + 2 * (h + 2 * kv + h) + 6 * f
    assert layer_activation_bytes(m, Layout(recompute="selective")) == pytest.approx(per_token * m.seq_len)
    mx = MODELS["mixtral-8x7b"]
    dense = layer_activation_bytes(mx, Layout(recompute="selective"))
    moe = layer_activation_bytes(mx, Layout(recompute="selective"), moe=True)
    assert moe - dense == pytest.approx(mx.seq_len * (2 * 2 * mx.hidden + 6 * mx.expert_ffn * (2 - 1)))


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
