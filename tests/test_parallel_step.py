"""Steps of full layouts: sharded data parallelism's traffic, pipeline composition, CP, the CLI."""

import json

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.topologies.io import build
from fabricsim.training import Model, StepConfig, model_preset, simulate_step
from fabricsim.training.compute import block_flops
from fabricsim.training.sharding import bucket_chain, dp_bytes_per_gpu

SMALL = Model("small", layers=8, hidden=1024, ffn=4096, heads=8, vocab=8192, seq_len=1024)


@pytest.fixture(scope="module")
def topo():
    return build("dgx-h100-ib", gpus=16)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_data_parallel_traffic_equals_closed_form(topo, zero):
    """Bytes each GPU sends for DP, measured from the simulated flows, equal the ZeRO closed forms:
    ZeRO-3 with one micro-batch moves 3 x the parameter bytes (x (d-1)/d), the others 2 x."""
    cfg = StepConfig(SMALL, tp=4, zero=zero, scaling="strong", global_batch=4, pp=1)
    res = simulate_step(topo, cfg)
    d = 4
    param_bytes = 2 * SMALL.params / 4
    assert res.micro_batches == 1 and res.dp == d
    expected = dp_bytes_per_gpu(zero, param_bytes, param_bytes, d, 1)
    assert res.traffic["dp"] == pytest.approx(expected, rel=1e-6)
    factor = {0: 2, 1: 2, 2: 2, 3: 3}[zero]
    assert res.traffic["dp"] == pytest.approx(factor * (d - 1) / d * param_bytes, rel=1e-6)


def test_pipeline_step_breakdown_adds_up(topo):
    res = simulate_step(topo, StepConfig(SMALL, tp=4, pp=2, zero=1, scaling="strong", global_batch=16))
    assert res.pp == 2 and res.micro_batches == 8
    b = res.breakdown
    assert b["pp_bubble"] > 0 and b["compute"] > 0
    assert sum(b.values()) == pytest.approx(res.step_time, rel=1e-6)
    assert res.step_time >= res.pipeline.time
    assert 0 < res.mfu < 1


def test_interleaving_shrinks_the_bubble(topo):
    base = dict(tp=4, pp=2, scaling="strong", global_batch=8)
    plain = simulate_step(topo, StepConfig(SMALL, **base))
    inter = simulate_step(topo, StepConfig(SMALL, virtual_stages=2, **base))
    assert inter.breakdown["pp_bubble"] < plain.breakdown["pp_bubble"]


def test_llama3_split_end_chunks_hold_only_embedding_and_output(topo):
    """pp x v = layers + 2 (Llama 3's split, arXiv:2407.21783 section 3.3.2): the first chunk computes
    nothing (embedding only), the last only the output layer, and the step does the same work in all as
    the plain pipeline (no block lost or doubled)."""
    base = dict(pp=2, scaling="strong", global_batch=32)  # dp 8, 4 micro-batches per replica
    split = simulate_step(topo, StepConfig(SMALL, virtual_stages=5, **base))  # 10 chunks, 8 blocks
    plain = simulate_step(topo, StepConfig(SMALL, **base))
    ops = split.pipeline.ops
    first = [e - b for kind, k, _, b, e in ops[0] if kind == "F" and k == 0]
    last = [e - b for kind, k, _, b, e in ops[1] if kind == "F" and k == 4]
    middle = [e - b for kind, k, _, b, e in ops[1] if kind == "F" and k == 0]
    assert len(first) == 4 and max(first) == 0.0
    # the last chunk's forward is the output layer alone, a middle chunk's one block (no TP: pure compute)
    assert last[0] / middle[0] == pytest.approx(2 * SMALL.hidden * SMALL.vocab / block_flops(SMALL, 0).total)
    work = lambda res: sum(e - b for stage in res.pipeline.ops for _, _, _, b, e in stage)  # noqa: E731
    assert work(split) == pytest.approx(work(plain), rel=1e-9)
    assert sum(split.breakdown.values()) == pytest.approx(split.step_time, rel=1e-6)


def test_llama3_rank_order_keeps_stage_sends_under_one_leaf():
    """Llama 3's order [TP, CP, PP, DP] (arXiv:2407.21783, 3.3.2) puts neighbouring stages on neighbouring
    servers, under one rail leaf of the fat tree; Megatron's default (PP outermost) sends them 64 servers
    away, across the spine, where static ECMP collides flows. Same step otherwise: the slowest boundary send
    and the P2P waits must be smaller with Llama 3's order, and the data-parallel groups, now spread over
    the spine instead, expose more."""
    topo = build("dgx-h100-ib", gpus=2048)
    model = model_preset("llama3-8b")
    res = {order: simulate_step(topo, StepConfig(model, tp=8, pp=4, order=order, scaling="strong", global_batch=256))
           for order in ("tp-cp-dp-pp", "tp-cp-pp-dp")}
    slowest = {o: max(e - b for _, b, e in r.pipeline.sends) for o, r in res.items()}
    assert slowest["tp-cp-pp-dp"] < 0.5 * slowest["tp-cp-dp-pp"]
    assert res["tp-cp-pp-dp"].breakdown["pp_p2p"] < res["tp-cp-dp-pp"].breakdown["pp_p2p"]
    assert res["tp-cp-pp-dp"].breakdown["dp"] > res["tp-cp-dp-pp"].breakdown["dp"]
    assert res["tp-cp-pp-dp"].compute_time == res["tp-cp-dp-pp"].compute_time


def test_context_parallel_and_recompute(topo):
    base = dict(tp=2, cp=2, scaling="strong", global_batch=4)
    res = simulate_step(topo, StepConfig(SMALL, **base))
    assert res.cp == 2 and res.breakdown["cp"] >= 0
    full = simulate_step(topo, StepConfig(SMALL, recompute="full", **base))
    assert full.compute_time > res.compute_time * 1.2  # a forward more in every backward


def test_layout_refusals(topo):
    with pytest.raises(InfeasibleError, match="more than the model's 8 layers"):
        simulate_step(topo, StepConfig(SMALL, pp=16, scaling="strong", global_batch=16))
    with pytest.raises(InfeasibleError, match="micro-batches"):
        simulate_step(topo, StepConfig(SMALL, tp=4, pp=2, micro_batch=3, scaling="strong", global_batch=4))
    with pytest.raises(ConfigError, match="--zero"):
        StepConfig(SMALL, zero=5)


def test_bucket_chain_waits_for_ready_and_previous():
    start, end = bucket_chain([1.0, 1.5, 5.0], [1.0, 1.0, 1.0])
    assert start.tolist() == [1.0, 2.0, 5.0] and end.tolist() == [2.0, 3.0, 6.0]


def test_cli_step_pipeline_and_trace(tmp_path):
    path = tmp_path / "t.json"
    out = CliRunner().invoke(cli, ["step", "-t", "dgx-h100-ib", "-n", "32", "-m", "llama3-8b", "--tp", "8",
                                   "--pp", "2", "--zero", "1", "--scaling", "strong", "--global-batch", "8",
                                   "--no-memory-check", "--trace", str(path)])
    assert out.exit_code == 0, out.output
    assert "pp_bubble" in out.output and "TP 8 (SP) x PP 2 x DP 2" in out.output
    names = {e["args"]["name"] for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "M"}
    assert {"stage 0 (16 GPUs in lock-step)", "stage 1 (16 GPUs in lock-step)"} <= names
    assert any(n.startswith("act 0->1") for n in names)


@pytest.mark.parametrize("args, message", [
    (["--tp", "3"], "does not divide"),
    (["--pp", "64", "-n", "64"], "more than the model's 32 layers"),
    (["--zero", "7"], "--zero"),
    (["--ep", "3"], "--ep 3 must divide"),
    (["--ep", "2"], "--ep 2: the model has no experts"),
])
def test_cli_step_refusals_are_one_line(args, message):
    out = CliRunner().invoke(cli, ["step", "-t", "dgx-h100-ib", "-n", "32", "-m", "llama3-8b", *args])
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output


def test_memory_refusal_names_the_numbers():
    from fabricsim.training import check_memory, model_preset

    big = StepConfig(model_preset("llama3-405b"), tp=8)
    with pytest.raises(InfeasibleError, match=r"does not fit in memory: .* GB per GPU of 186 GB"):
        check_memory(build("gb200-nvl72-ib", gpus=1024), big)
    fits = check_memory(build("gb200-nvl72-ib", gpus=1024), StepConfig(model_preset("llama3-405b"), tp=8, pp=16,
                                                                        zero=1, scaling="strong", global_batch=512))
    assert fits is None or fits.fits()


def test_sweep_takes_the_layout_options(tmp_path):
    model = tmp_path / "m.toml"
    model.write_text('name = "m"\nlayers = 4\nhidden = 512\nffn = 2048\nheads = 8\nvocab = 4096\nseq_len = 512\n')
    out = CliRunner().invoke(cli, ["sweep", "-t", "dgx-h100-ib", "-m", str(model), "--tp", "2", "--pp", "2",
                                   "--zero", "1", "--sizes", "8,16", "-a", "ring", "--no-plots", "-o",
                                   str(tmp_path / "out"), "--jobs", "1"])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "out" / "step.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert {r["pp"] for r in rows} == {2} and {r["zero"] for r in rows} == {1}
    assert all(r["pp_bubble_s"] > 0 for r in rows)


@pytest.mark.parametrize("zero", [0, 2])
def test_remainder_buckets_bracket_the_exact_chain(topo, zero):
    """Buckets smaller than the largest take its time (upper bound) or its share of it (lower bound);
    simulating every size exactly lands between the two, and the bytes are the same."""
    from fabricsim.collectives import CALIBRATED, AllreduceRunner
    from fabricsim.training.layout import rank_groups
    from fabricsim.training.parallel_step import simulate_parallel_step
    from fabricsim.training.step import _peak, compute_rate

    big = Model("big", layers=8, hidden=4096, ffn=16384, heads=32, vocab=32768, seq_len=1024)
    cfg = StepConfig(big, tp=4, pp=2, zero=zero, scaling="strong", global_batch=8)
    lay = cfg.layout_for(topo.num_gpus)
    runner = AllreduceRunner(topo, calibration=CALIBRATED)
    peak = _peak(topo, cfg)
    args = dict(sequences=8.0, rate=compute_rate(topo, cfg, peak), peak=peak, model_flops=1.0)
    fast = simulate_parallel_step(topo, cfg, lay, rank_groups(topo, lay), runner, exact_buckets=False, **args)
    exact = simulate_parallel_step(topo, cfg, lay, rank_groups(topo, lay), runner, exact_buckets=True, **args)
    sizes = {int(x) for sz, *_ in fast.dp_chains for x in sz}
    assert len(sizes) > 1  # full buckets and remainders
    lo, hi = fast.dp_bounds
    assert hi == fast.step_time and lo <= exact.step_time * (1 + 1e-12) and exact.step_time <= hi * (1 + 1e-12)
    assert fast.traffic["dp"] == pytest.approx(exact.traffic["dp"], rel=1e-6)
