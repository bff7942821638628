"""Every reproduction of issue 12 gives a correct answer or one line and exit 2 (plus the error contract).

Each test names the input a user tried; the expected outcome is either a checked number or a one-line
``Error: ...`` on stderr with exit code 2, never a traceback, a hang or a silently wrong figure.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import fabricsim
import fabricsim.topologies.io
import fabricsim.training.models
from fabricsim.cli.main import EXIT_BUG, cli
from fabricsim.errors import ConfigError, FabricsimError, TopologyError
from fabricsim.topologies.io import load

TWO_GPUS = """name = "two"
nodes = [
  {{id = "g0", kind = "gpu", rank = 0}},
  {{id = "g1", kind = "gpu", rank = 1}},
  {{id = "sw", kind = "switch"}},
]
links = [
  {{a = "g0", b = "sw", bandwidth = "{bw}", kind = "{kind}"{extra}}},
  {{a = "g1", b = "sw", bandwidth = "{bw}", kind = "{kind}"}},
]
"""


def fabric(tmp_path, bw="400 Gb/s", kind="eth", extra="", name="f.toml"):
    path = tmp_path / name
    path.write_text(TWO_GPUS.format(bw=bw, kind=kind, extra=extra))
    return str(path)


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def rows_of(text: str) -> list:
    """The rows of a command's JSON output (a list of rows, or an object holding them)."""
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    return data["rows"] if isinstance(data, dict) else data


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


# --- wrong answers, silently ------------------------------------------------------------------------------
def test_400_gb_per_s_in_a_fabric_file_is_bits(tmp_path):
    for spelling in ("400 Gb/s", "400 Gbit/s", "400 Gbps", "50 GB/s"):
        topo = load(fabric(tmp_path, bw=spelling))
        assert topo.graph["g0"]["sw"]["bandwidth"] == 50e9, spelling


def test_one_gpu_allreduce_is_zero_time_with_zero_busbw_and_valid_json():
    result = invoke("allreduce", "--topology", "gb200-nvl72-ib", "--gpus", 1, "--min-bytes", "1G", "--max-bytes",
                    "1G", "--format", "json")
    assert result.exit_code == 0, result.output
    row = rows_of(result.stdout)[0]
    assert row["time_us"] == 0 and row["busbw_GBps"] == 0 and row["algbw_GBps"] == 0


def test_one_gpu_sweep_message_mode_writes_finite_json(tmp_path):
    result = invoke("sweep", "--topology", "dgx-h100", "--sizes", 1, "--mode", "message", "--bytes", "1G",
                    "--algorithms", "ring", "--no-plots", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "message.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert "Infinity" not in text and data


def test_topology_info_of_a_fabric_without_nvlink_names_its_links(tmp_path):
    result = invoke("topology", "info", fabric(tmp_path))
    assert result.exit_code == 0
    assert "NVLink per GPU  none; GPU links 50 GB/s each way (eth)" in result.stdout
    assert "0 B/s" not in result.stdout


def test_self_loops_are_refused(tmp_path):
    path = tmp_path / "loop.toml"
    path.write_text(TWO_GPUS.format(bw="50 GB/s", kind="eth", extra="").replace(
        "]\n", ']\n', 1).replace('links = [\n', 'links = [\n  {a = "sw", b = "sw", bandwidth = "1 GB/s"},\n'))
    assert_one_line_error(invoke("topology", "info", path), "itself")
    import networkx as nx
    G = nx.Graph()
    G.add_nodes_from([("a", {"kind": "gpu"}), ("s", {"kind": "switch"})])
    G.add_edge("a", "s", bandwidth=1e9)
    G.add_edge("s", "s", bandwidth=1e9)
    with pytest.raises(TopologyError, match="itself"):
        fabricsim.topologies.io.from_graph(G)


@pytest.mark.parametrize("lanes", ["-3", "0", "1.5", '"two"'])
def test_bad_lanes_are_refused(tmp_path, lanes):
    assert_one_line_error(invoke("topology", "info", fabric(tmp_path, extra=f", lanes = {lanes}")), "lanes")


# --- tracebacks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["topology", "info"], ["allreduce", "--topology"], ["step", "--topology"]])
def test_binary_topology_file(tmp_path, command):
    path = tmp_path / "garbage.toml"
    path.write_bytes(bytes(range(256)) * 3)
    assert_one_line_error(invoke(*command, path), "not a text file")


def test_a_link_kind_that_is_not_text_is_refused(tmp_path):
    """Found by the long fuzz profile: a node-link JSON edge with "kind": 0.0 crashed topology info."""
    path = tmp_path / "f.json"
    edges = [{"source": a, "target": b, "bandwidth": 5e10, "kind": "nvlink5"} for a, b in
             (("g0", "s"), ("s", "g0"), ("g1", "s"), ("s", "g1"))]
    edges[0]["kind"] = 0.0
    path.write_text(json.dumps({"directed": True, "multigraph": False, "graph": {}, "edges": edges, "nodes": [
        {"id": "g0", "kind": "gpu"}, {"id": "g1", "kind": "gpu"}, {"id": "s", "kind": "switch"}]}))
    for command in (["topology", "info"], ["allreduce", "--topology"]):
        assert_one_line_error(invoke(*command, path), "kind 0.0")


def test_binary_model_file(tmp_path):
    path = tmp_path / "garbage.toml"
    path.write_bytes(b"\xb9\x00\xff" * 50)
    assert_one_line_error(invoke("step", "--gpus", 8, "--model", path), "not a text file")


def test_bucket_of_one_byte():
    assert_one_line_error(invoke("step", "--gpus", 72, "--bucket", 1), "--bucket")


def test_model_with_a_billion_layers(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text('name = "big"\nlayers = 1000000000\nhidden = 4096\nffn = 14336\nheads = 32\nvocab = 128256\n'
                    'seq_len = 8192\n')
    assert_one_line_error(invoke("step", "--gpus", 8, "--model", path), "layers")
    path.write_text(path.read_text().replace("1000000000", "1e9"))
    assert_one_line_error(invoke("step", "--gpus", 8, "--model", path), "layers")


def test_tiny_mfu():
    assert_one_line_error(invoke("step", "--gpus", 8, "--mfu", "1e-300"), "--mfu")
    with pytest.raises(ConfigError, match="mfu"):
        fabricsim.StepConfig(fabricsim.resolve_model("llama3-8b"), mfu=1e-300)


@pytest.mark.parametrize("command", [["step", "--gpus", 8], ["plan", "--gpus", 8, "--global-batch", 16,
                                                                "--no-progress", "--model", "llama3-8b"],
                                     ["sweep", "--sizes", 8, "--no-plots"]])
@pytest.mark.parametrize("option,value", [("--tp", "0"), ("--cp", "x"), ("--pp", "9" * 30), ("--dp", "1.5"),
                                          ("--ep", "-2"), ("--virtual-stages", "5000"), ("--micro-batch", "0")])
def test_layout_options_are_bounded_where_they_enter(command, option, value, tmp_path):
    """A layout width that is no positive integer, or absurdly large, is refused by the option's type."""
    result = invoke(*command, "--topology", "dgx-h100", option, value, *(["-o", tmp_path / "o"]
                                                                        if command[0] == "sweep" else []))
    assert_one_line_error(result, option)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("factor", ["inf", "nan", "1", "0.5", "1e300"])
def test_step_factor_out_of_range(factor):
    assert_one_line_error(invoke("allreduce", "--topology", "dgx-h100", "--step-factor", factor), "--step-factor")


@pytest.mark.parametrize("bw", ["1e-300 B/s", "1e308 B/s", "0.5 B/s", "2 PB/s"])
def test_link_bandwidth_outside_the_physical_range(tmp_path, bw):
    path = fabric(tmp_path, bw=bw)
    for command in (["topology", "info", path], ["allreduce", "--topology", path, "--max-bytes", "1M"]):
        assert_one_line_error(invoke(*command), "bandwidth", "outside")


def test_plot_of_a_csv_cut_mid_row(tmp_path):
    out = tmp_path / "sweep"
    assert invoke("sweep", "--topology", "dgx-h100", "--sizes", 8, "--algorithms", "ring", "--no-plots",
                  "-o", out).exit_code == 0
    text = (out / "step.csv").read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: len(text.splitlines()[0]) + 40])
    figures = tmp_path / "figures"
    assert_one_line_error(invoke("plot", cut, "-o", figures), "cut short")
    assert not figures.exists()


def test_library_entry_points_raise_project_errors():
    topo = fabricsim.build("dgx-h100")
    runner = fabricsim.AllreduceRunner(topo)
    calls = [
        lambda: fabricsim.load(5),
        lambda: fabricsim.AllreduceRunner("dgx-h100"),
        lambda: fabricsim.StepConfig(model=None),
        lambda: runner.run(2**20, "ring", channels=-1),
        lambda: runner.run(2**20, "ring", channels=10**6),
        lambda: runner.run(-1, "ring"),
        lambda: runner.run(2**20, "bogus"),
        lambda: fabricsim.build("dgx-h100", gpus=0),
        lambda: fabricsim.resolve_model(None),
        lambda: fabricsim.resolve(None),
        lambda: fabricsim.topologies.io.from_graph(5),
        lambda: fabricsim.simulate_step(topo, None),
        lambda: fabricsim.simulate_step("dgx-h100", fabricsim.StepConfig(fabricsim.resolve_model("llama3-8b"))),
        lambda: fabricsim.StepConfig(fabricsim.resolve_model("llama3-8b"), precision=5),
        lambda: runner.run(1024, ranks=["a"]),
        lambda: runner.run(1024, trace="/nonexistent/dir/t.json"),
        lambda: fabricsim.CollectiveRunner(topo).run("allgather", 1024, channels=10**6),
        lambda: fabricsim.training.models.load_model(5),
        lambda: topo.domain_of("nope"),
    ]
    for call in calls:
        with pytest.raises(FabricsimError):
            call()


# --- hangs ------------------------------------------------------------------------------------------------
def test_step_factor_barely_above_one_is_refused_not_run():
    result = invoke("allreduce", "--topology", "dgx-h100", "--min-bytes", "1M", "--max-bytes", "4M",
                    "--step-factor", "1.0000001")
    assert_one_line_error(result, "more than", "sizes")


# --- misleading -------------------------------------------------------------------------------------------
def test_sharp_with_the_analytic_model_says_why():
    result = invoke("allreduce", "--topology", "dgx-h100", "--algorithm", "sharp", "--model", "analytic")
    assert_one_line_error(result, "sharp", "--model simulate")
    assert "unknown algorithm" not in result.stderr


def test_trace_with_the_analytic_model_is_refused(tmp_path):
    result = invoke("allreduce", "--topology", "dgx-h100", "--model", "analytic", "--trace", tmp_path / "t.json")
    assert_one_line_error(result, "--trace")
    assert not (tmp_path / "t.json").exists()


def test_one_gpu_fabric_file(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text('name = "one"\nnodes = [{id = "g0", kind = "gpu"}]\nlinks = []\n')
    for model in ("simulate", "analytic"):
        result = invoke("allreduce", "--topology", path, "--min-bytes", "1M", "--max-bytes", "1M", "--model", model,
                        "--format", "json")
        assert result.exit_code == 0, result.output
        assert rows_of(result.stdout)[0]["time_us"] == 0
    assert invoke("topology", "info", path).exit_code == 0


@pytest.mark.parametrize("command", ["step", "sweep"])
def test_step_and_sweep_on_a_fabric_file_take_a_peak(tmp_path, command):
    path = fabric(tmp_path)
    extra = ["--no-plots", "-o", tmp_path / "out", "--algorithms", "ring"] if command == "sweep" else []
    assert_one_line_error(invoke(command, "--topology", path, *extra), "--peak-flops")
    by_peak = invoke(command, "--topology", path, "--peak-flops", "2250 TFLOPS", *extra)
    by_gpu = invoke(command, "--topology", path, "--gpu", "b200", *extra)
    assert by_peak.exit_code == 0 and by_gpu.exit_code == 0, by_peak.output + by_gpu.output
    assert_one_line_error(invoke(command, "--topology", path, "--gpu", "b200", "--peak-flops", "1e15", *extra),
                          "not both")


def test_empty_sizes_are_refused():
    assert_one_line_error(invoke("sweep", "--sizes", ""), "--sizes")
    assert_one_line_error(invoke("sweep", "--mode", "message", "--bytes", ""), "--bytes")


def test_export_format_that_contradicts_the_suffix(tmp_path):
    assert_one_line_error(invoke("topology", "export", "dgx-h100", "--format", "toml", "-o", tmp_path / "x.json"),
                          "x.json")
    assert not (tmp_path / "x.json").exists()
    assert invoke("topology", "export", "dgx-h100", "--format", "toml", "-o", tmp_path / "x.toml").exit_code == 0


# --- the error contract -----------------------------------------------------------------------------------
def test_unexpected_exception_is_one_line_naming_a_bug_report(monkeypatch):
    import fabricsim.cli.topology as topology_cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(topology_cli, "format_summary", broken)
    result = CliRunner().invoke(cli, ["topology", "info", "dgx-h100"])
    assert result.exit_code == EXIT_BUG
    assert "Traceback" not in result.output
    assert "bug in fabricsim" in result.stderr and "--debug" in result.stderr and "boom" in result.stderr
    debug = CliRunner().invoke(cli, ["--debug", "topology", "info", "dgx-h100"])
    assert isinstance(debug.exception, ZeroDivisionError)


def test_debug_shows_the_traceback_of_a_project_error():
    result = CliRunner().invoke(cli, ["--debug", "topology", "info", "no-such-fabric"])
    assert isinstance(result.exception, TopologyError)


def test_python_dash_m_and_a_closed_pipe(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fabricsim", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "fabricsim" in proc.stdout
    # many lines into a pipe whose reader stops after one: no traceback, no 'Exception ignored'
    code = ("import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-m', 'fabricsim', 'allreduce', '--topology', 'dgx-h100',"
            " '--model', 'analytic', '--min-bytes', '8', '--max-bytes', '1T', '--step-factor', '1.05'],"
            " stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
            "p.stdout.readline(); p.stdout.close(); err = p.stderr.read(); sys.exit(p.wait() if err == b'' else 99)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc


def test_finite_json_everywhere_for_a_tiny_message():
    result = invoke("allreduce", "--topology", "dgx-h100", "--min-bytes", 8, "--max-bytes", 64, "--format", "json")
    rows = rows_of(result.stdout)
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))


def test_top_level_entry_points_load_lazily():
    import subprocess
    import sys

    code = ("import sys, fabricsim\n"
            "heavy = [m for m in ('networkx', 'simpy', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from fabricsim import build, AllreduceRunner, CollectiveRunner, simulate_step, StepConfig\n"
            "assert fabricsim.AllreduceRunner is AllreduceRunner\n"
            "assert set(fabricsim.__all__) <= set(dir(fabricsim))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AttributeError):
        fabricsim.no_such_thing


def test_json_export_uses_the_edges_key_and_both_keys_load(tmp_path):
    from fabricsim.topologies.io import save

    topo = fabricsim.build("dgx-h100", gpus=2)
    path = tmp_path / "f.json"
    save(topo, str(path))
    data = json.loads(path.read_text())
    assert "edges" in data and "links" not in data
    assert load(str(path)).graph.number_of_edges() == topo.graph.number_of_edges()
    data["links"] = data.pop("edges")
    path.write_text(json.dumps(data))
    assert load(str(path)).graph.number_of_edges() == topo.graph.number_of_edges()


def test_validate_writes_nothing_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", "--quick", "--no-plot")
    assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == []


def test_package_ships_py_typed_and_a_license():
    from importlib import resources
    from pathlib import Path

    assert resources.files("fabricsim").joinpath("py.typed").is_file()
    root = Path(__file__).resolve().parents[1]
    assert "Apache License" in (root / "LICENSE").read_text()
    import tomllib
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["fabricsim"]
    assert meta["project"]["urls"]


def test_readme_images_render_on_the_package_index():
    """PyPI shows the README without the repository: every image is an absolute URL to a file the repository
    holds (the URL's host is the project URL of pyproject.toml, an assumption nothing else depends on)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", (root / "README.md").read_text())
    prefix = "https://raw.githubusercontent.com/fabricsim/fabricsim/main/"
    assert images and all(i.startswith(prefix) and (root / i[len(prefix):]).is_file() for i in images), images


def test_protocol_auto_picks_simple_for_1_gib_on_a_fabric_without_nvlink(tmp_path):
    runner = fabricsim.AllreduceRunner(load(fabric(tmp_path)))
    assert runner.run(2**30, "ring").protocol == "simple"


@pytest.mark.parametrize("args", [["--bogus"], ["allreduce", "--topology", "dgx-h100", "--bogus"],
                                  ["topology", "info"], ["--debug"]])
def test_usage_errors_are_one_line_naming_the_help(args):
    assert_one_line_error(invoke(*args), "--help")


def test_a_group_named_alone_prints_its_help():
    result = invoke("topology")
    assert "Commands:" in result.output and "Traceback" not in result.output
