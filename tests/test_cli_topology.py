"""``fabricsim topology``: output of list/info/export/draw and one-line refusals with exit code 2."""

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.topologies import PRESETS, load


def run(*args):
    return CliRunner().invoke(cli, ["topology", *args])


def test_list_has_one_line_per_preset():
    result = run("list")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)


def test_info_gb200_nvl72():
    result = run("info", "gb200-nvl72")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "72 GB200 in 1 NVLink domain" in out
    assert "18 NVLink" in out
    assert "900 GB/s each way, 1.8 TB/s bidirectional" in out          # A004, A005
    assert "NVLink total    129.6 TB/s" in out                            # A018: "130 TB/s"
    assert "bisection       64.8 TB/s" in out
    assert "diameter        2 hops" in out


def test_info_dgx_h100_and_partial():
    out = run("info", "dgx-h100").output
    assert "450 GB/s each way, 900 GB/s bidirectional" in out            # A007
    assert "bisection       3.6 TB/s" in out                             # A011
    out = run("info", "gb200-nvl72", "--gpus", "36", "--planes", "aggregate").output
    assert "36 GB200" in out and "nvl72-crossbar" in out


def test_info_scale_out_and_nvl576():
    out = run("info", "dgx-b200-ib", "--gpus", "20", "--network", "fat-tree").output
    assert "20 B200 in 3 NVLink domains (2 x 8 + 4 GPUs)" in out
    assert "NIC per GPU     50 GB/s each way" in out                      # A027
    out = run("info", "nvl576").output
    assert "518.4 TB/s" in out and "diameter        4 hops" in out and "assumption" in out


@pytest.mark.parametrize("fmt", ["graphml", "toml", "json", "dot"])
def test_export(tmp_path, fmt):
    path = tmp_path / f"fabric.{fmt}"
    result = run("export", "dgx-h100-ib", "--gpus", "12", "--format", fmt, "-o", str(path))
    assert result.exit_code == 0, result.output
    assert path.stat().st_size > 0
    if fmt != "dot":
        assert load(str(path)).num_gpus == 12
        info = run("info", str(path))                                    # NAME may be a file
        assert info.exit_code == 0 and "12 H100" in info.output


def test_draw_png_and_svg(tmp_path):
    for suffix in ("png", "svg"):
        path = tmp_path / f"h100.{suffix}"
        result = run("draw", "dgx-h100-ib", "--gpus", "16", "-o", str(path))
        assert result.exit_code == 0, result.output
        assert path.stat().st_size > 1000


def bad_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("nodes = [\n")
    return str(path)


def disconnected_toml(tmp_path):
    path = tmp_path / "split.toml"
    path.write_text('nodes = [{id = "a", kind = "gpu"}, {id = "b", kind = "gpu"}]\nlinks = []\n')
    return str(path)


@pytest.mark.parametrize("args, message", [
    (["info", "dgx-a100"], "unknown topology 'dgx-a100'; known: dgx-h100"),
    (["info", "dgx-h100", "--gpus", "9"], "at most 8 GPUs"),
    (["info", "gb200-nvl72", "--gpus", "73"], "at most 72 GPUs"),
    (["info", "nvl576", "--gpus", "600"], "at most 576 GPUs"),
    (["info", "dgx-h100", "--gpus", "0"], "Invalid value for '--gpus'"),
    (["info", "dgx-b200-ib", "--gpus", "-8"], "Invalid value for '--gpus'"),
    (["info", "dgx-h100", "--planes", "aggregate"], "takes no option 'planes'"),
    (["info", "dgx-h100-ib", "--gpus", "1000000"], "at most 65536 GPUs"),
    (["info", "dgx-h100-ib", "--oversubscription", "-1"], "oversubscription"),
    (["info", "missing.toml"], "cannot read"),
    (["export", "dgx-h100", "-o", "out.xyz"], "cannot tell the format"),
    (["draw", "dgx-h100", "-o", "out.jpg"], ".png or .svg"),
    (["draw", "dgx-h100-ib", "--gpus", "4096", "-o", "big.png"], "draw a smaller instance"),
])
def test_refusals_are_one_line_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


def test_malformed_and_disconnected_files(tmp_path):
    for path, message in ((bad_toml(tmp_path), "not valid TOML"),
                          (disconnected_toml(tmp_path), "disconnected")):
        result = run("info", path)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.output.count("\n") == 1 and path in result.output and message in result.output


def test_bad_option_value_is_a_usage_error():
    result = run("info", "dgx-h100", "--gpus", "many")
    assert result.exit_code == 2 and "Traceback" not in result.output and "not a valid integer" in result.output
