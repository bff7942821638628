"""Mixture-of-experts presets: parameters from the architecture against the published totals; model files."""

import pytest

from fabricsim.errors import ConfigError
from fabricsim.training import MODELS, Model, load_model

MOE = [m for m in MODELS.values() if m.is_moe]


def test_moe_presets_exist():
    assert {"mixtral-8x7b", "deepseek-v3"} <= {m.name for m in MOE}


@pytest.mark.parametrize("m", MOE, ids=lambda m: m.name)
def test_total_and_active_match_published(m):
    assert m.params == pytest.approx(m.published_params, rel=0.01)
    # DeepSeek counts 36.6B without the input embedding, 37B rounded: 2% covers both conventions
    assert m.active_params == pytest.approx(m.published_active_params, rel=0.02)
    assert m.flops_per_token() == 6 * m.active_params


def test_mixtral_by_hand():
    m = MODELS["mixtral-8x7b"]
    d, f = 4096, 14336
    attention = 2 * d * d + 2 * d * 1024
    expert = 3 * d * f
    layer = attention + 8 * expert + d * 8 + 2 * d
    assert m.params == 32 * layer + 2 * 32000 * d + d
    assert m.params - m.active_params == 32 * 6 * expert
    assert m.routed_expert_params == 32 * 8 * expert


def test_deepseek_layers_and_latent_attention():
    m = MODELS["deepseek-v3"]
    assert [m.is_moe_layer(i) for i in range(4)] == [False, False, False, True]
    assert m.moe_layer_count == 58
    # MLA: q down 7168x1536, q up 1536x128x192, kv down 7168x576, kv up 512x128x256, out 16384x7168, 2 norms
    assert m.attention_params == (7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512
                                  + 512 * 128 * 256 + 128 * 128 * 7168)
    assert m.qk_dim == 128 * 192 and m.v_dim == 128 * 128
    flops = m.flops_per_token(attention=True) - m.flops_per_token()
    assert flops == 6 * 61 * 4096 * (128 * 192 + 128 * 128)


def test_llama4_interleaves():
    m = MODELS["llama4-maverick"]
    assert [m.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    assert m.moe_layer_count == 24


def test_dense_models_unchanged():
    for m in MODELS.values():
        if not m.is_moe:
            assert m.active_params == m.params and m.moe_layer_count == 0 and m.routed_expert_params == 0
            assert m.flops_per_token(attention=True) - m.flops_per_token() == 12 * m.layers * m.hidden * m.seq_len


BASE = 'name = "moe"\nlayers = 4\nhidden = 256\nffn = 1024\nheads = 4\nvocab = 1000\nseq_len = 128\n'


def test_moe_model_file(tmp_path):
    path = tmp_path / "moe.toml"
    path.write_text(BASE + "experts = 4\ntop_k = 2\nexpert_ffn = 512\ndense_layers = 1\n"
                           "published_active_params = 1e6\n")
    m = load_model(path)
    assert m == Model("moe", layers=4, hidden=256, ffn=1024, heads=4, vocab=1000, seq_len=128, experts=4, top_k=2,
                      expert_ffn=512, dense_layers=1, published_active_params=1e6)
    assert m.moe_layer_count == 3
    assert m.params - m.active_params == 3 * 2 * 3 * 256 * 512


@pytest.mark.parametrize("extra, message", [
    ("experts = 4\ntop_k = 5\n", "top_k must be between 1 and experts"),
    ("experts = 4\n", "top_k must be between"),
    ("top_k = 2\n", "need experts > 0"),
    ("experts = -1\n", "experts must be a non-negative integer"),
    ("experts = 4\ntop_k = 1\ndense_layers = 4\n", "leaves no MoE layer"),
    ("experts = 4\ntop_k = 1\nmoe_every = 0\n", "moe_every must be a positive"),
    ("experts = 4\ntop_k = 1\nmoe_every = 5\n", "leaves no MoE layer"),
    ("experts = 4\ntop_k = 1\nexpert_ffn = 0\n", "expert_ffn must be"),
    ("kv_lora_rank = 64\n", "needs qk_nope_dim"),
    ("v_head_dim = 64\n", "need kv_lora_rank"),
    ("experts = 4\ntop_k = 1\nexpert = 3\n", "unknown key"),
    ("published_active_params = -1\n", "published_active_params must be a positive number"),
])
def test_bad_moe_files(tmp_path, extra, message):
    path = tmp_path / "bad.toml"
    path.write_text(BASE + extra)
    with pytest.raises(ConfigError, match=message):
        load_model(path)
