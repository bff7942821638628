"""Closed-form estimates of every collective (``--model analytic``, collectives/estimate.py).

On one non-blocking NVLink domain the simulated schedules are contention-free, so the estimate must equal
the simulation (reduce-scatter, all-gather, all-to-all, send/recv: the same alpha-beta terms) or come
close (broadcast/reduce: the pipeline fill is the simulated one's, up to the chunk count). No estimate is
faster than its collective's bandwidth lower bound over the per-GPU line rate.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.collectives import CollectiveRunner
from fabricsim.collectives.estimate import estimate
from fabricsim.collectives.kinds import KINDS
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.topologies.io import build

SIZES = (64 * 2**10, 8 * 2**20, 2**30)


@pytest.fixture(scope="module")
def node():
    topo = build("dgx-h100")
    return topo, CollectiveRunner(topo)


@pytest.mark.parametrize("kind,algorithm", [("reducescatter", "ring"), ("allgather", "ring"),
                                            ("alltoall", "pairwise"), ("sendrecv", "p2p")])
def test_estimate_equals_the_contention_free_simulation(node, kind, algorithm):
    topo, runner = node
    for n in SIZES:
        sim, est = runner.run(kind, n, algorithm), estimate(topo, kind, n, algorithm)
        assert est.protocol == sim.protocol and est.time == pytest.approx(sim.time, rel=1e-9), (n, sim, est)


@pytest.mark.parametrize("name,gpus", [("dgx-h100", None), ("dgx-h100-ib", 32), ("gb200-nvl72-ib", 144)])
@pytest.mark.parametrize("kind", ["broadcast", "reduce"])
def test_rooted_ring_estimate_is_within_ten_percent(name, gpus, kind):
    topo = build(name, gpus=gpus)
    runner = CollectiveRunner(topo)
    for n in SIZES:
        sim, est = runner.run(kind, n, "ring"), estimate(topo, kind, n, "ring")
        assert est.time == pytest.approx(sim.time, rel=0.10), (n, sim.time, est.time)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "allreduce"])
def test_no_estimate_beats_the_bandwidth_bound(kind):
    for name, gpus in (("dgx-h100", None), ("dgx-h100-ib", 16), ("gb200-nvl72-ib", 144)):
        topo = build(name, gpus=gpus)
        line = max(sum(d["bandwidth"] for _, _, d in topo.graph.out_edges(g, data=True)) for g in topo.gpus)
        p = topo.num_gpus
        for n in SIZES:
            res = estimate(topo, kind, n)
            moved = {"reducescatter": (p - 1) / p, "allgather": (p - 1) / p, "alltoall": (p - 1) / p}.get(kind, 1.0)
            assert res.time >= moved * n / line, (name, n, res)
            assert res.busbw <= line * (1 + 1e-12)


def test_one_gpu_and_zero_bytes_take_no_time():
    assert estimate(build("dgx-h100", gpus=1), "allgather", 2**20).time == 0.0
    assert estimate(build("dgx-h100"), "broadcast", 0).time == 0.0


@pytest.mark.parametrize("args, error, match", [
    (("allgather", 2**20, "tree"), InfeasibleError, "NCCL has no tree"),
    (("alltoall", 2**20, "ring"), ConfigError, "no algorithm 'ring'"),
    (("bcast", 2**20), ConfigError, "unknown collective"),
    (("reduce", -1), ConfigError, "non-negative"),
])
def test_refusals(node, args, error, match):
    with pytest.raises(error, match=match):
        estimate(node[0], *args)
    with pytest.raises(ConfigError, match="Topology"):
        estimate("dgx-h100", "allgather", 8)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_command_takes_the_analytic_model(kind):
    res = CliRunner().invoke(cli, [kind, "--topology", "dgx-h100-ib", "-g", "16", "-b", "1M", "-e", "1G", "-f", "32",
                                   "--model", "analytic", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 3 and all(r["model"] == "analytic" and r["time_us"] > 0 for r in rows)
