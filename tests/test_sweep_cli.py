"""``fabricsim sweep``, ``step`` and ``plot`` through click's CliRunner: output, files, and one-line refusals."""

import csv
import json

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.sweep import SweepSpec, default_sizes, run_sweep
from fabricsim.training import StepConfig, model_preset

TINY_TOML = 'name = "tiny"\nlayers = 2\nhidden = 256\nffn = 1024\nheads = 4\nvocab = 1000\nseq_len = 128\n'


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def test_default_sizes():
    sizes = default_sizes()
    assert sizes[0] == 8 and sizes[-1] == 8192
    assert {72, 576, 4608} <= set(sizes)
    assert all(b == 2 * a for a, b in zip([s for s in sizes if s & (s - 1) == 0][:-1],
                                          [s for s in sizes if s & (s - 1) == 0][1:]))


def test_sweep_writes_rows_table_and_plots(tmp_path, tiny):
    out = tmp_path / "out"
    res = invoke("sweep", "-t", "dgx-h100-ib", "--sizes", "8,16,32", "-m", tiny, "--bucket", "1MiB",
                 "--curve-gpus", "16", "-o", out, "-j", "2")
    assert res.exit_code == 0, res.output
    assert "GPUs  TP algorithm" in res.output and "Traceback" not in res.output
    rows = list(csv.DictReader(open(out / "step.csv")))
    assert [(r["gpus"], r["algorithm"]) for r in rows][:3] == [("8", "ring"), ("8", "tree"), ("8", "nvls")]
    assert {r["algorithm"] for r in rows if r["gpus"] == "16"} == {"ring", "tree", "hierarchical", "nvls"}
    assert json.load(open(out / "meta.json"))["step"]["model"] == "tiny"
    assert len(json.load(open(out / "step.json"))) == len(rows)
    assert max(float(r["scaling_eff"]) for r in rows if r["gpus"] == "8") == pytest.approx(1.0)
    for stem in ("step_time", "exposed_share", "scaling_efficiency", "busbw_vs_size"):
        assert (out / f"{stem}.png").stat().st_size > 1000 and (out / f"{stem}.svg").exists()
    for r in rows:
        assert 0 <= float(r["exposed_comm_s"]) <= float(r["comm_time_s"]) * (1 + 1e-9)
        # the breakdown `fabricsim step` prints, and the memory check, are columns too
        parts = sum(float(r[f"{k}_s"]) for k in ("compute", "pp_bubble", "pp_p2p", "tp", "cp", "ep", "dp"))
        assert parts == pytest.approx(float(r["step_time_s"]), rel=1e-6)
        assert r["pp"] == "1" and r["zero"] == "0" and r["fits"] == "1" and 0 < float(r["memory_GB"]) < 80


def test_same_arguments_same_numbers(tiny):
    spec = SweepSpec(topology="dgx-h100-ib", sizes=(8, 16, 24), step=StepConfig(model_preset("llama3-8b"),
                     bucket_bytes=2**30))
    one = [p["rows"] for p in run_sweep(spec, jobs=1)]
    two = [p["rows"] for p in run_sweep(spec, jobs=2)]
    assert one == two


def test_message_mode(tmp_path):
    out = tmp_path / "m"
    res = invoke("sweep", "-t", "dgx-h100-ib", "--sizes", "8,16", "--mode", "message", "--bytes", "1M,64M",
                 "-a", "ring,tree", "-o", out, "-j", "1")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "message.csv")))
    assert len(rows) == 2 * 2 * 2 and {r["size_bytes"] for r in rows} == {str(2**20), str(64 * 2**20)}
    assert (out / "busbw_vs_size.png").exists() and (out / "busbw_vs_gpus.png").exists()


def test_a_sweep_into_an_earlier_sweeps_folder_leaves_none_of_its_figures(tmp_path, tiny):
    out = tmp_path / "o"
    step = ("sweep", "-t", "dgx-h100-ib", "--sizes", "8,16", "-m", tiny, "-o", out, "-j", "1")
    assert invoke(*step).exit_code == 0
    assert (out / "step_time.png").exists() and (out / "exposed_share.svg").exists()
    # without plots: the earlier figures (of other rows) must not sit beside the new CSV
    assert invoke(*step, "--no-plots", "-a", "tree").exit_code == 0
    assert not list(out.glob("*.png")) and not list(out.glob("*.svg"))
    assert invoke(*step).exit_code == 0
    res = invoke("sweep", "-t", "dgx-h100-ib", "--sizes", "8", "--mode", "message", "--bytes", "1M,4M", "-a", "ring",
                 "-o", out, "-j", "1")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.png")) == ["busbw_vs_size.png"]


def test_step_command(tmp_path, tiny):
    trace = tmp_path / "t.json"
    res = invoke("step", "-t", "dgx-h100-ib", "-n", "16", "-m", tiny, "--bucket", "1MiB", "--tp", "2",
                 "-a", "tree", "--trace", trace)
    assert res.exit_code == 0, res.output
    assert "bucket" in res.output and "step time" in res.output and "TP all-reduce" in res.output
    assert json.load(open(trace))["traceEvents"]


def test_plot_command(tmp_path, tiny):
    out = tmp_path / "o"
    assert invoke("sweep", "-t", "dgx-h100-ib", "--sizes", "8,16", "-m", tiny, "--no-plots", "-o", out,
                  "-j", "1").exit_code == 0
    res = invoke("plot", out / "step.csv", "-o", tmp_path / "figs")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "figs" / "step_time.png").exists()


@pytest.mark.parametrize("args, message", [
    (("sweep", "-m", "nosuch.toml"), "does not exist"),
    (("sweep", "-m", "llama9"), "unknown model"),
    (("sweep", "-t", "dgx-h100-ib", "--sizes", "16", "--tp", "16"), "larger than the NVLink domain"),
    (("step", "-t", "dgx-h100-ib", "-n", "16", "--tp", "16"), "larger than the NVLink domain"),
    (("sweep", "-t", "gb200-nvl72", "--sizes", "72,144"), "144"),
    (("sweep", "-t", "nosuch-fabric"), "unknown topology"),
    (("sweep", "--sizes", "8,x"), "comma-separated"),
    (("sweep", "-a", "ring,magic"), "unknown algorithm"),
    (("sweep", "-t", "dgx-h100-ib", "--sizes", "64", "--scaling", "strong", "--global-batch", "32"), "cannot feed"),
    (("plot", "missing.csv"), "does not exist"),
])
def test_errors_are_one_line_exit_2(tmp_path, args, message):
    res = invoke(*args, *(("-o", tmp_path) if args[0] == "sweep" else ()))
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("Error")]) == 1


def test_bad_model_file_cli(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TOML + "depth = 3\n")
    res = invoke("step", "-m", bad, "-n", "8")
    assert res.exit_code == 2 and "unknown key(s) depth" in res.output and "Traceback" not in res.output
