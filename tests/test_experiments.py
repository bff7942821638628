"""Shared clusters: placement policies, each job's step alone and together, the links they share."""

import json

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.errors import ConfigError, InfeasibleError
from fabricsim.experiments import Job, parse_ranks, place, run_cluster
from fabricsim.experiments.cluster import job_view
from fabricsim.topologies.io import build
from fabricsim.training import StepConfig, model_preset, simulate_step

# one bucket holding every gradient: the data-parallel all-reduce is exposed after backward, so a slower
# all-reduce shows in the step time directly (and one simulated size per job keeps the test fast)
CONFIG = StepConfig(model_preset("llama3-8b"), algorithm="ring", bucket_bytes=64 * 2**30)


@pytest.fixture(scope="module")
def small():
    return build("dgx-h100-ib", gpus=32)


def test_packed_takes_lowest_ranks_and_scattered_every_domain(small):
    packed = place(small, [(8, "packed"), (8, "packed")])
    assert packed == [list(range(8)), list(range(8, 16))]
    scattered = place(small, [(16, "scattered"), (16, "scattered")])
    # the first half of every 8-GPU node, then the second half
    assert scattered[0] == [r for r in range(32) if r % 8 < 4] and scattered[1] == [r for r in range(32) if r % 8 >= 4]


def test_explicit_ranks_come_first(small):
    out = place(small, [(4, "packed"), (None, "0-3")])
    assert out == [[4, 5, 6, 7], [0, 1, 2, 3]]
    assert parse_ranks([3, 1]) == [3, 1]


@pytest.mark.parametrize("jobs, err, match", [
    ([(40, "packed")], InfeasibleError, "only 32 are free"),
    ([(None, "0-3"), (None, "3-5")], InfeasibleError, "already another job's"),
    ([(4, "tight")], ConfigError, "placement 'tight'"),
    ([(2, "0-3")], ConfigError, "4 ranks listed for a job of 2"),
    ([(None, "5-2")], ConfigError, "runs backwards"),
])
def test_placement_refusals(small, jobs, err, match):
    with pytest.raises(err, match=match):
        place(small, jobs)


def test_alone_matches_simulate_step_on_the_jobs_gpus(small):
    cfg = StepConfig(model_preset("llama3-8b"), algorithm="ring", bucket_bytes=2**30, tp=2)
    res = run_cluster(small, [Job("a", cfg, 16, "scattered"), Job("b", cfg, 16, "scattered")])
    for j in res.jobs:
        assert j.step_alone == pytest.approx(simulate_step(job_view(small, j.ranks), cfg).step_time, rel=1e-12)
        assert j.step_together >= j.step_alone * (1 - 1e-12)


@pytest.fixture(scope="module")
def two_racks_jobs():
    return [Job("a", CONFIG, 576), Job("b", CONFIG, 576)]


def test_packed_jobs_on_a_non_blocking_fabric_do_not_slow_down(two_racks_jobs):
    topo = build("gb200-nvl72-ib", gpus=1152)
    res = run_cluster(topo, two_racks_jobs)
    assert [j.ranks[0] for j in res.jobs] == [0, 576]
    for j in res.jobs:
        assert j.slowdown == pytest.approx(1.0, abs=1e-9)
        assert j.dp_together == pytest.approx(j.dp_alone, rel=1e-9)
    assert all(load <= 1.0 + 1e-9 for _, load, _ in res.shared_links)


def test_scattered_jobs_on_an_oversubscribed_fabric_slow_down_and_the_links_are_named(two_racks_jobs):
    topo = build("gb200-nvl72-ib", gpus=1152, oversubscription=2.0)
    jobs = [Job(j.name, j.config, j.gpus, "scattered") for j in two_racks_jobs]
    res = run_cluster(topo, jobs)
    for j in res.jobs:
        assert j.slowdown > 1.02
        assert j.dp_together > 1.2 * j.dp_alone
    name, load, by_job = res.shared_links[0]
    assert load > 1.0 and set(by_job) == {"a", "b"}
    assert ("leaf" in name and "spine" in name)


def _cluster(tmp_path, text: str, *options):
    """``fabricsim cluster`` on a scenario file holding ``text``."""
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    return CliRunner().invoke(cli, ["cluster", str(path), *options])


def test_cluster_command(tmp_path):
    text = ('topology = "dgx-h100-ib"\ngpus = 32\nplacement = "scattered"\nfaults = ["spine0"]\n'
            '[[job]]\nname = "big"\ngpus = 16\nbucket = "1GiB"\n'
            '[[job]]\nname = "small"\nranks = "4-7,12-15"\ntp = 2\nbucket = "1GiB"\n')
    res = _cluster(tmp_path, text)
    assert res.exit_code == 0, res.output
    assert "big" in res.output and "slowdown" in res.output
    doc = json.loads(_cluster(tmp_path, text, "--json").output)
    assert [j["name"] for j in doc["jobs"]] == ["big", "small"] and doc["jobs"][1]["ranks"] == [4, 5, 6, 7, 12, 13, 14, 15]


@pytest.mark.parametrize("text, match", [('topology = "dgx-h100-ib"\n', "no \\[\\[job\\]\\]"),
                                         ('[[job]]\nname = "x"\ncolour = 1\n', "unknown key 'colour'"),
                                         ('flavour = 1\n', "unknown key 'flavour'")])
def test_cluster_refusals(tmp_path, text, match):
    res = _cluster(tmp_path, text)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert pytest.importorskip("re").search(match, res.output)


@pytest.fixture(scope="module")
def layered():
    """A pipelined TP job and a ZeRO-1 context-parallel job scattered over a 2:1 plain fat tree, where
    their gradient reductions meet on the leaf-spine links."""
    topo = build("dgx-h100-ib", gpus=64, oversubscription=2.0, network="fat-tree")
    m = model_preset("llama3-8b")
    jobs = [Job("pp", StepConfig(m, tp=4, pp=2, global_batch=64, scaling="strong"), 32, "scattered"),
            Job("z1", StepConfig(m, zero=1, cp=2), 32, "scattered")]
    return topo, jobs, run_cluster(topo, jobs)


def test_full_layout_jobs_alone_match_simulate_step(layered):
    topo, jobs, res = layered
    for job, j in zip(jobs, res.jobs):
        assert j.step_alone == pytest.approx(simulate_step(job_view(topo, j.ranks), job.config).step_time, rel=1e-12)
        assert j.step_together >= j.step_alone * (1 - 1e-12)
        assert j.dp_together >= j.dp_alone * (1 - 1e-12)


def test_full_layout_jobs_share_their_gradient_reduction(layered):
    """Max-min sharing: the job asking less than half of each shared link keeps its rate (pp), the other
    one (z1, a reduce-scatter over 32 ranks) gets what is left and its gradient reduction slows down."""
    _, _, res = layered
    assert res.job("z1").dp_together > 1.3 * res.job("z1").dp_alone
    assert res.job("pp").dp_together == pytest.approx(res.job("pp").dp_alone, rel=1e-3)
    name, load, by_job = res.shared_links[0]
    assert load > 1.0 and set(by_job) == {"pp", "z1"} and "spine" in name and "leaf" in name


def test_zero3_job_refused_with_the_reason(small):
    cfg = StepConfig(model_preset("llama3-8b"), zero=3)
    with pytest.raises(ConfigError, match="job z3: ZeRO-3 gathers parameters inside every layer"):
        run_cluster(small, [Job("z3", cfg, 16)])


def test_cluster_command_takes_parallel_layouts(tmp_path):
    text = ('topology = "dgx-h100-ib"\ngpus = 32\n'
            '[[job]]\nname = "pipe"\ngpus = 16\ntp = 4\npp = 2\nmicro_batch = 1\nbatch = 4\n'
            '[[job]]\nname = "zero"\ngpus = 16\nzero = 3\n')
    res = _cluster(tmp_path, text)
    assert res.exit_code == 2 and "ZeRO-3" in res.output and "Traceback" not in res.output
    res = _cluster(tmp_path, text.replace("zero = 3", "zero = 2\ncp = 2"))
    assert res.exit_code == 0, res.output
    assert "pipe" in res.output and "zero" in res.output
