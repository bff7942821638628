"""Training step: models, layout, and the invariants of compute + bucketed all-reduce overlap."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric_helpers import star
from fabricsim.collectives import IDEAL, AllreduceRunner
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.topologies.io import build
from fabricsim.training import MODELS, Model, StepConfig, load_model, model_preset, resolve_model, simulate_step
from fabricsim.training import step_layout, write_step_trace

TINY = Model("tiny", layers=2, hidden=256, ffn=1024, heads=4, vocab=1000, seq_len=128)
MiB = 2**20


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count_matches_published(name):
    m = MODELS[name]
    assert m.params == pytest.approx(m.published_params, rel=0.01)


def test_flops_per_token():
    m = model_preset("llama3-8b")
    assert m.flops_per_token() == 6 * m.params
    assert m.flops_per_token(attention=True) - 6 * m.params == 12 * 32 * 4096 * 8192


def test_model_file(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('name = "mine"\nlayers = 2\nhidden = 256\nffn = 1024\nheads = 4\nvocab = 1000\nseq_len = 128\n')
    assert load_model(path) == TINY.__class__("mine", layers=2, hidden=256, ffn=1024, heads=4, vocab=1000,
                                              seq_len=128)
    assert resolve_model(str(path)).name == "mine"


@pytest.mark.parametrize("text, message", [
    ('name = "x"\nlayers = 2\n', "missing key"),
    ('name = "x"\nlayers = 2\nhidden = 256\nffn = 1\nheads = 4\nvocab = 1\nseq_len = 1\nwidth = 3\n', "unknown key"),
    ('name = "x"\nlayers = -2\nhidden = 256\nffn = 1\nheads = 4\nvocab = 1\nseq_len = 1\n', "layers must be"),
    ('name = "x"\nlayers = 2\nhidden = 250\nffn = 1\nheads = 4\nvocab = 1\nseq_len = 1\n', "multiple of heads"),
    ('name = "x\nlayers = 2', "not valid TOML"),
])
def test_bad_model_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_model(path)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_model("llama9-1t")


def test_layout_tp_inside_domains():
    topo = build("dgx-h100-ib", gpus=16)
    lay = step_layout(topo, 4)
    assert lay.tp_groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert lay.dp_groups[1] == [1, 5, 9, 13]
    with pytest.raises(InfeasibleError, match="larger than the NVLink domain"):
        step_layout(topo, 16)
    with pytest.raises(InfeasibleError, match="does not divide the last, partial domain"):
        step_layout(build("dgx-h100-ib", gpus=12), 8)


def fast_star(n=4, bandwidth=1e30):
    return star(n, bandwidth=bandwidth, latency=0.0)


def test_infinite_bandwidth_step_is_compute():
    topo = fast_star()
    cfg = StepConfig(TINY, peak_flops=1e11, bucket_bytes=MiB)
    res = simulate_step(topo, cfg, runner=AllreduceRunner(topo, calibration=IDEAL))
    last = res.bucket_results[int(res.bucket_sizes[-1])].time  # protocol latency only: no bytes on the wire
    assert res.compute_time > 0
    assert res.step_time == pytest.approx(res.compute_time + last, rel=1e-9)
    assert res.exposed_comm <= last + 1e-12
    assert res.exposed_comm < 1e-3 * res.step_time


def test_zero_compute_step_is_the_chain():
    topo = star(4, bandwidth=1e9, latency=1e-6)
    cfg = StepConfig(TINY, peak_flops=math.inf, bucket_bytes=MiB)
    res = simulate_step(topo, cfg)
    assert res.compute_time == 0 and res.buckets > 1
    assert res.step_time == pytest.approx(sum(res.bucket_results[int(s)].time for s in res.bucket_sizes), rel=1e-9)
    assert res.step_time == pytest.approx(res.dp_comm_time, rel=1e-12)
    assert res.exposed_comm == pytest.approx(res.comm_time, rel=1e-12)


@pytest.mark.parametrize("algorithm, tp", [("ring", 1), ("tree", 2), ("hierarchical", 2)])
def test_fast_engine_equals_event_engine(algorithm, tp):
    topo = build("dgx-h100-ib", gpus=16)
    runner = AllreduceRunner(topo)
    cfg = StepConfig(TINY, algorithm=algorithm, tp=tp, bucket_bytes=MiB, batch=64)
    fast = simulate_step(topo, cfg, runner=runner)
    slow = simulate_step(topo, cfg, runner=runner, engine="events")
    assert fast.buckets == slow.buckets > 1
    assert slow.step_time == pytest.approx(fast.step_time, rel=1e-9)
    assert slow.bucket_end.tolist() == pytest.approx(fast.bucket_end.tolist(), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(mfu=st.floats(0.05, 1.0), bucket=st.integers(64 * 1024, 8 * MiB), batch=st.integers(1, 64),
       bandwidth=st.sampled_from([1e8, 1e9, 1e11]))
def test_exposed_comm_bounds(mfu, bucket, batch, bandwidth):
    topo = star(4, bandwidth=bandwidth, latency=1e-6)
    res = simulate_step(topo, StepConfig(TINY, mfu=mfu, bucket_bytes=bucket, batch=batch, peak_flops=1e13))
    assert 0.0 <= res.exposed_comm <= res.comm_time * (1 + 1e-9) + 1e-15
    assert res.step_time >= res.compute_time
    assert 0 < res.mfu <= mfu * (1 + 1e-9)
    assert (res.bucket_start >= res.bucket_ready - 1e-15).all()


def test_weak_scaling_never_shortens_compute_and_strong_scaling_does():
    m = model_preset("llama3-8b")
    prev = None
    for g in (8, 16, 32, 64):
        topo = build("dgx-h100-ib", gpus=g)
        weak = simulate_step(topo, StepConfig(m, bucket_bytes=2**30))
        strong = simulate_step(topo, StepConfig(m, scaling="strong", global_batch=64, bucket_bytes=2**30))
        if prev:
            assert weak.compute_time >= prev[0].compute_time * (1 - 1e-12)
            assert strong.compute_time == pytest.approx(prev[1].compute_time / 2)
        prev = (weak, strong)
    with pytest.raises(InfeasibleError, match="cannot feed"):
        simulate_step(build("dgx-h100-ib", gpus=16), StepConfig(m, scaling="strong", global_batch=8))


def test_tp_time_is_exposed_and_trace(tmp_path):
    topo = build("dgx-h100-ib", gpus=16)
    res = simulate_step(topo, StepConfig(TINY, tp=8, bucket_bytes=MiB))
    assert res.tp == 8 and res.dp == 2 and res.tp_comm_time > 0
    assert res.exposed_comm >= res.tp_comm_time * (1 - 1e-9)
    path = tmp_path / "t.json"
    write_step_trace(res, path)
    assert '"bucket 0"' in path.read_text()


def test_bad_step_options():
    with pytest.raises(ConfigError, match="mfu"):
        StepConfig(TINY, mfu=1.5)
    with pytest.raises(ConfigError, match="no 'fp4'"):
        simulate_step(build("dgx-h100", gpus=8), StepConfig(TINY, precision="fp4"))
