"""Sweep files (axes in TOML) and the same sweep on a Dask cluster: identical rows."""

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.errors import ConfigError
from fabricsim.sweep import plan_points, run_and_write
from fabricsim.sweep_file import load_sweep_file, specs_from_dict

CHEAP = {"mode": "message", "estimate": "analytic", "topology": ["dgx-h100-ib", "dgx-b200-ib", "gb200-nvl72-ib"],
         "network": ["rail", "fat-tree"], "oversubscription": [1.0, 2.0], "sizes": list(range(2, 44)),
         "algorithms": ["ring", "tree"], "bytes": ["1MiB", "1GiB"]}


def test_axes_make_the_cartesian_product():
    specs = specs_from_dict(CHEAP)
    assert len(specs) == 3 * 2 * 2
    assert {(s.topology, s.topology_options["network"], s.topology_options["oversubscription"]) for s in specs} == {
        (t, n, o) for t in CHEAP["topology"] for n in ("rail", "fat-tree") for o in (1.0, 2.0)}
    assert len(plan_points(specs)) == 504


def test_fault_scenarios_are_an_axis():
    specs = specs_from_dict({"mode": "message", "topology": "dgx-h100-ib", "sizes": [64], "algorithms": "ring",
                             "faults": [[], ["spine0"], ["spine0", "spine1"]]})
    assert [s.faults for s in specs] == [(), ("spine0",), ("spine0", "spine1")]


def test_sweep_file_compares_two_fabrics_in_one_plot(tmp_path):
    path = tmp_path / "fabrics.toml"
    path.write_text('mode = "message"\ntopology = ["dgx-h100-ib", "gb200-nvl72-ib"]\nsizes = [64, 128]\n'
                    'algorithms = ["ring"]\nbytes = ["64MiB"]\n')
    res = CliRunner().invoke(cli, ["sweep", "--file", str(path), "-o", str(tmp_path / "out"), "-j", "1"])
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "out" / "message.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and {r.split(",")[1] for r in rows[1:]} == {"dgx-h100-ib", "gb200-nvl72-ib"}
    assert (tmp_path / "out" / "busbw_vs_gpus.png").stat().st_size > 1000


@pytest.mark.parametrize("doc, match", [({"topologies": ["x"]}, "unknown key 'topologies'"),
                                        ({"topology": "dgx-h100", "sizes": [64]}, "no size fits dgx-h100")])
def test_bad_sweep_files(doc, match):
    with pytest.raises(ConfigError, match=match):
        specs_from_dict(doc)


def test_missing_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep_file(tmp_path / "nope.toml")


def test_500_points_on_a_local_dask_cluster_match_a_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    specs = specs_from_dict(CHEAP)
    local = run_and_write(specs, tmp_path / "local", jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        remote = run_and_write(specs, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert remote.points == 504 and len(remote.rows) == 504 * 2 * 2
    assert remote.rows == local.rows
    for name in ("message.csv", "message.json", "points.jsonl"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_unreachable_scheduler_is_one_line(tmp_path):
    pytest.importorskip("distributed")
    res = CliRunner().invoke(cli, ["sweep", "-t", "dgx-h100-ib", "--sizes", "8", "--mode", "message", "-a", "ring",
                                   "--bytes", "1M", "--scheduler", "tcp://127.0.0.1:9", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "cannot reach the Dask scheduler" in res.output


def test_shipped_fabrics_file_compares_hopper_and_blackwell_from_64_to_8192_gpus():
    """examples/fabrics.toml (the README's Hopper-against-Blackwell sweep) plans both fabrics at every size."""
    from pathlib import Path

    specs = load_sweep_file(Path(__file__).parent.parent / "examples" / "fabrics.toml")
    assert [s.topology for s in specs] == ["dgx-h100-ib", "gb200-nvl72-ib"]
    assert all(s.sizes == (64, 128, 256, 512, 1024, 2048, 4096, 8192) and s.estimate == "simulate" for s in specs)
    assert len(plan_points(specs)) == 16
