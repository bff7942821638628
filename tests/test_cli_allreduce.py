import csv
import io
import json

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli


def run(*args):
    result = CliRunner().invoke(cli, ["allreduce", *args])
    return result


def test_csv_rows_report_busbw_as_nccl_tests_does():
    res = run("--topology", "dgx-h100", "--algorithm", "ring", "--min-bytes", "1M", "--max-bytes", "8M",
              "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [int(r["size_bytes"]) for r in rows] == [2**20, 2**21, 2**22, 2**23]
    for r in rows:
        assert float(r["busbw_GBps"]) == pytest.approx(float(r["algbw_GBps"]) * 2 * 7 / 8, rel=1e-4)
        assert float(r["algbw_GBps"]) == pytest.approx(int(r["size_bytes"]) / float(r["time_us"]) / 1e3, rel=1e-4)


def test_published_dgx_h100_large_message_figures_from_the_command_line():
    ring = json.loads(run("--topology", "dgx-h100", "--algorithm", "ring", "--min-bytes", "8G", "--max-bytes", "8G",
                          "--format", "json").output)[0]
    nvls = json.loads(run("--topology", "dgx-h100", "--algorithm", "nvls", "--min-bytes", "8G", "--max-bytes", "8G",
                          "--format", "json").output)[0]
    assert ring["busbw_GBps"] == pytest.approx(370, rel=0.05)  # B053
    assert nvls["busbw_GBps"] == pytest.approx(480, rel=0.05)  # B054


def test_table_and_analytic_model():
    res = run("--topology", "gb200-nvl72-ib", "--gpus", "144", "--model", "analytic", "--max-bytes", "1M",
              "--step-factor", "16")
    assert res.exit_code == 0, res.output
    assert "gb200-nvl72-ib, 144 GPUs, model analytic" in res.output.splitlines()[0]
    rows = [line for line in res.output.splitlines() if not line.startswith("#")]
    assert [int(r.split()[0]) for r in rows] == [8, 128, 2048, 32768, 524288]


@pytest.mark.parametrize("args, needle", [
    (["--topology", "nowhere"], "unknown topology"),
    (["--topology", "dgx-h100", "--gpus", "9"], "at most 8"),
    (["--topology", "dgx-h100", "--min-bytes", "1G", "--max-bytes", "1M"], "larger than"),
    (["--topology", "dgx-h100", "--max-bytes", "-4"], "size"),
    (["--topology", "dgx-h100", "--step-factor", "1"], "step-factor"),
])
def test_bad_input_is_one_error_line_and_exit_2(args, needle):
    res = run(*args)
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and needle in errors[0]


def test_unwritable_output_is_one_line_and_exit_2(tmp_path):
    target = tmp_path / "missing-dir" / "t.json"
    res = run("--topology", "dgx-h100", "--min-bytes", "1M", "--max-bytes", "1M", "--trace", str(target))
    assert res.exit_code == 2
    assert "No such file or directory" in res.output and "Traceback" not in res.output
