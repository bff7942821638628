"""Layout search: enumeration meets the constraints, pruning keeps the best, the estimate's closed forms."""

import csv
import itertools
import json
import math

import pytest

from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.training.compute import block_flops
from fabricsim.training.layout import Layout
from fabricsim.training.memory import memory_report
from fabricsim.training.models import MODELS, Model
from fabricsim.training.plan import (Estimate, FabricFigures, SearchSpace, enumerate_layouts, estimate_step, plan,
                                     write_plan)

SMALL = Model("small", layers=8, hidden=1024, ffn=4096, heads=16, kv_heads=4, vocab=32000, seq_len=2048)
SMALL_MOE = Model("small-moe", layers=8, hidden=1024, ffn=4096, heads=16, kv_heads=4, vocab=32000, seq_len=2048,
                  experts=8, top_k=2, expert_ffn=1024, dense_layers=1)


def fabric(gpus=64, domain=(8,), capacity=80e9, nvlink=450e9, nic=50e9, lat=(1e-6, 4e-6)):
    return FabricFigures(gpus=gpus, domain_sizes=domain, nvlink_bandwidth=nvlink, nic_bandwidth=nic,
                         nvlink_latency=lat[0], network_latency=lat[1], peak_flops=1e15, capacity=capacity)


def brute_force(model, gpus, batch, domain):
    """Every layout meeting the documented constraints, by exhaustive product (the oracle)."""
    out = set()
    rng = range(1, gpus + 1)
    for tp, cp, pp in itertools.product(rng, [1, 2, 4, 8, 16], rng):
        if gpus % (tp * cp * pp) or model.heads % tp or model.kv_heads % tp or any(d % tp for d in domain):
            continue
        if cp > 1 and model.seq_len % (2 * cp):
            continue
        dp = gpus // (tp * cp * pp)
        for v, mb, zero, rc in itertools.product([1, 2, 4, 8], [1, 2, 4], [0, 1, 2, 3],
                                                 ["none", "selective", "full"]):
            if pp * v > model.layers or (v > 1 and pp == 1) or batch % (dp * mb) or (zero and dp * cp == 1):
                continue
            m = batch // (dp * mb)
            if v > 1 and m % pp:
                continue
            for ep in range(1, dp * cp + 1):
                if (dp * cp) % ep or (ep > 1 and not model.is_moe) or (model.is_moe and model.experts % ep):
                    continue
                out.add((tp, cp, pp, dp, ep, v, mb, zero, rc, m))
    return out


@pytest.mark.parametrize("model, gpus, batch, domain", [(SMALL, 64, 64, (8,)), (SMALL_MOE, 32, 32, (8,)),
                                                         (SMALL, 24, 48, (4,))])
def test_enumeration_is_exactly_the_constrained_set(model, gpus, batch, domain):
    got = [(lay, m) for lay, m in enumerate_layouts(model, gpus, batch, domain_sizes=domain)]
    for lay, m in got:
        assert lay.tp * lay.cp * lay.pp * lay.dp == gpus
        assert m * lay.micro_batch * lay.dp == batch
    keys = {(l.tp, l.cp, l.pp, l.dp, l.ep, l.virtual_stages, l.micro_batch, l.zero, l.recompute, m) for l, m in got}
    assert len(keys) == len(got)
    assert keys == brute_force(model, gpus, batch, domain)


def test_search_space_restricts():
    got = list(enumerate_layouts(SMALL, 64, 64, domain_sizes=(8,),
                                 space=SearchSpace(tp=(2, 3), pp=(2,), zero=(1,), recompute=("full",))))
    assert got and all(l.tp == 2 and l.pp == 2 and l.zero == 1 and l.recompute == "full" for l, _ in got)


def exhaustive_best(model, fab, batch):
    best = None
    for lay, m in enumerate_layouts(model, fab.gpus, batch, domain_sizes=fab.domain_sizes):
        mem = memory_report(model, lay, micro_batches=m)
        if mem.total > fab.capacity:
            continue
        t = estimate_step(model, lay, m, fab, memory=mem).step_time
        if best is None or t < best[0]:
            best = (t, lay)
    return best


@pytest.mark.parametrize("model, capacity, gpus", [(SMALL, 80e9, 64), (SMALL, 2.5e9, 64), (SMALL_MOE, 3e9, 16)])
def test_pruning_keeps_the_estimate_best(model, capacity, gpus):
    fab = fabric(capacity=capacity, gpus=gpus)
    t, lay = exhaustive_best(model, fab, 64)
    res = plan(model, fab, 64, top=0)
    assert res.best.estimate.step_time == pytest.approx(t, rel=1e-12)
    assert all(c.fits for c in res.candidates)
    times = [c.estimate.step_time for c in res.candidates]
    assert times == sorted(times)
    # with a simulation, the estimate-best layout is among those simulated
    calls = []

    def simulate(layout, m):
        calls.append(layout)
        return Estimate(compute=1.0 + len(calls), bubble=0.0, exposed={}, model_flops=1.0, peak=1.0,
                        source="simulated")

    res = plan(model, fab, 64, top=3, simulate=simulate, budget=0.0)  # spent: only the best is simulated
    assert len(calls) == 1 and res.simulated == 1
    assert res.candidates[0].simulated is not None
    assert res.candidates[0].estimate.step_time == pytest.approx(t, rel=1e-12)
    calls.clear()
    res = plan(model, fab, 64, top=3, simulate=simulate)
    assert len(calls) == 3 and res.simulated == 3
    assert min(c.estimate.step_time for c in res.candidates[:3]) == pytest.approx(t, rel=1e-12)
    assert [c.simulated.step_time for c in res.candidates[:3]] == [2.0, 3.0, 4.0]
    assert res.candidates[0].row()["source"] == "simulated"


def test_out_of_memory_rows_and_refusals(tmp_path):
    fab = fabric(capacity=1.5e9)
    res = plan(SMALL, fab, 64, top=0, keep_oom=True)
    oom = [c for c in res.candidates if not c.fits]
    assert oom and all(c.estimate is None for c in oom)
    assert res.candidates.index(oom[0]) == res.fitting
    row = oom[0].row()
    assert row["source"] == "out of memory" and math.isnan(row["step_time_s"]) and row["memory_GB"] > 1.5
    with pytest.raises(InfeasibleError, match="fits in"):
        plan(SMALL, fabric(capacity=1e6), 64)
    with pytest.raises(InfeasibleError, match="meets the constraints"):
        plan(SMALL, fabric(gpus=64), 1, space=SearchSpace(cp=(1,)))  # tp x pp <= 32: dp >= 2 > batch
    with pytest.raises(InfeasibleError, match="GPUs asked for"):
        plan(SMALL, fabric(gpus=64), 64, gpus=32)
    with pytest.raises(ConfigError, match="global-batch"):
        list(enumerate_layouts(SMALL, 64, 0))


def test_bubble_and_compute_closed_forms():
    """Free communication, balanced stages: step = compute x (1 + (p-1)/(v m)), the 1F1B / interleaved bubble."""
    fab = fabric(nvlink=1e30, nic=1e30, lat=(0.0, 0.0))
    balanced = Model("balanced", layers=8, hidden=1024, ffn=4096, heads=16, vocab=8, seq_len=2048)  # no logits
    for p, v, mb in [(1, 1, 1), (4, 1, 1), (4, 2, 2), (8, 1, 4)]:
        lay = Layout(tp=2, pp=p, dp=32 // p, virtual_stages=v, micro_batch=mb, recompute="selective")
        m = 256 // (lay.dp * mb)
        est = estimate_step(balanced, lay, m, fab)
        assert est.bubble == pytest.approx(est.compute * (p - 1) / (v * m), rel=1e-3)
        assert sum(est.exposed.values()) == pytest.approx(0.0, abs=1e-12)
        # the bubble's share of the step, the issue's oracle
        assert est.bubble / est.step_time == pytest.approx((p - 1) / (v * m + p - 1), rel=1e-3)
    # recomputation costs FLOPs: full adds a forward (4/3 of the executed FLOPs); MFU counts model FLOPs only
    none = estimate_step(balanced, Layout(dp=64), 4, fab)
    full = estimate_step(balanced, Layout(dp=64, recompute="full"), 4, fab)
    assert full.compute == pytest.approx(none.compute * 4 / 3)
    assert full.mfu == pytest.approx(none.mfu * 3 / 4)


def test_unbalanced_stages_cost_the_slowest():
    """The last stage also computes the logits: with 8 layers on 4 stages it is the slowest and sets the pace."""
    fab = fabric(nvlink=1e30, nic=1e30, lat=(0.0, 0.0))
    lay = Layout(pp=4, dp=16)
    est = estimate_step(SMALL, lay, 8, fab)
    balanced = estimate_step(SMALL, Layout(dp=64), 2, fab)  # same tokens, no pipeline
    assert est.compute > balanced.compute * 1.0001
    per_token = [sum(block_flops(SMALL, i).total for i in range(j, j + 2)) for j in (0, 2, 4, 6)]
    per_token[-1] += 2 * SMALL.hidden * SMALL.vocab
    assert est.compute == pytest.approx(8 * 3 * max(per_token) * 2048 / 1e15)


def test_exposed_communication_grows_with_slower_links():
    lay = Layout(tp=4, cp=2, pp=2, dp=4, zero=1)
    fast = estimate_step(SMALL, lay, 8, fabric(nvlink=900e9, nic=100e9))
    slow = estimate_step(SMALL, lay, 8, fabric(nvlink=90e9, nic=10e9))
    for kind in ("tp", "pp", "dp"):
        assert slow.exposed[kind] > fast.exposed[kind] > 0
    moe = estimate_step(SMALL_MOE, Layout(tp=2, dp=32, ep=8), 2, fabric())
    assert moe.exposed["ep"] > 0 and estimate_step(SMALL_MOE, Layout(tp=2, dp=32), 2, fabric()).exposed["ep"] == 0


def test_write_plan_csv_and_json(tmp_path):
    res = plan(SMALL, fabric(capacity=1.5e9), 64, top=0, keep_oom=True)
    paths = write_plan(res, str(tmp_path), meta={"topology": "test"})
    with open(paths[0], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res.candidates) and rows[0]["rank"] == "1"
    assert {"step_time_s", "mfu", "memory_GB", "compute_s", "pp_bubble_s", "tp_s", "cp_s", "ep_s", "pp_p2p_s",
            "dp_s"} <= set(rows[0])
    doc = json.loads(open(paths[1]).read())
    assert doc["topology"] == "test" and doc["rows"][-1]["step_time_s"] is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".plan-")]


def test_llama3_405b_issue_example_fits_and_refuses_tp8_alone():
    fab = FabricFigures(gpus=1024, domain_sizes=(72, 16), nvlink_bandwidth=900e9, nic_bandwidth=50e9,
                        nvlink_latency=6e-7, network_latency=3.8e-6, peak_flops=2.5e15, capacity=186e9)
    res = plan(MODELS["llama3-405b"], fab, 1024, top=0, space=SearchSpace(tp=(8,), cp=(1,), pp=(1,), zero=(0,)),
               keep_oom=True)
    assert res.fitting == 0 and all(not c.fits for c in res.candidates)
