"""Reading nccl-tests logs: real published output, every nccl-tests layout, and every refusal."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.collectives.ncclog import parse_log, parse_text
from fabricsim.errors import ConfigError

DATA = Path(__file__).parent / "data" / "ncclog"

NEW_HEADER = """# nThread 1 nGpus 1 minBytes 8 maxBytes 134217728 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0
#
# Using devices
#  Rank  0 Group  0 Pid   1001 on      node-a device  0 [0x18] NVIDIA H100 80GB HBM3
#  Rank  1 Group  0 Pid   1002 on      node-a device  1 [0x2a] NVIDIA H100 80GB HBM3
#  Rank  2 Group  0 Pid   2001 on      node-b device  0 [0x18] NVIDIA H100 80GB HBM3
#  Rank  3 Group  0 Pid   2002 on      node-b device  1 [0x2a] NVIDIA H100 80GB HBM3
#
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
"""
# A 4-rank, two-host run: 1 GiB in 10 ms is 107.37 GB/s algbw, x 2(4-1)/4 = 161.06 busbw.
ROW = "  1073741824     268435456     float     sum      -1  10000.0  107.37  161.06      0  10000.0  107.37  161.06      0"


def refused(text, match, **options):
    with pytest.raises(ConfigError, match=match):
        parse_text(text, "run.log", **options)


def test_published_dgx_h100_log():
    (run,) = parse_log(DATA / "dgx_h100_all_reduce.log")
    assert run.collective == "allreduce" and run.nranks == 8 and run.hosts == ["dgx-h100"]
    assert run.devices == ["NVIDIA H100 80GB HBM3"]
    assert [r.size for r in run.rows] == [2**k for k in range(3, 35)]
    last = run.rows[-1]
    assert last.time_oop == pytest.approx(62648e-6) and last.time_ip == pytest.approx(62636e-6)
    assert last.time == pytest.approx(62636e-6) and last.busbw_oop == pytest.approx(479.90e9)


def test_pasted_table_takes_its_ranks_from_busbw():
    (run,) = parse_log(DATA / "h20_2node_nvls_all_reduce.log", "allreduce")
    assert run.nranks == 16 and len(run.rows) == 10


def test_multi_node_ranks_and_hosts():
    (run,) = parse_text(NEW_HEADER + ROW + "\n# Avg bus bandwidth    : 161.06\n")
    assert run.nranks == 4 and run.hosts == ["node-a", "node-b"] and run.collective == "allreduce"


def test_old_layout_without_root_and_with_error_column_and_debug_lines():
    text = ("$ mpirun -np 2 ./build/all_reduce_perf -b 1G -e 1G -g 1\n"
            "# nThread 1 nGpus 1 minBytes 1073741824 maxBytes 1073741824 step: 1048576(bytes) warmup iters: 5 iters: 20 validation: 1\n"
            "#   Rank  0 Pid   1320 on host-a device  0 [0x00] Tesla V100-SXM2-16GB\n"
            "host-a:1320:1320 [0] NCCL INFO Bootstrap : Using eth0\n"
            "#   Rank  1 Pid   2066 on host-b device  0 [0x00] Tesla V100-SXM2-16GB\n"
            "#       size         count      type   redop     time   algbw   busbw  error     time   algbw   busbw  error\n"
            "  1073741824     268435456     float     sum   100000    10.74   10.74  0e+00   100000    10.74   10.74  0e+00\n")
    with pytest.raises(ConfigError, match="not an integer"):  # nccl-tests of 2019 printed the error as a float
        parse_text(text)
    (run,) = parse_text(text.replace("0e+00", "0"))
    assert run.nranks == 2 and run.collective == "allreduce" and run.rows[0].redop == "sum"


def test_collective_named_by_newer_versions_and_no_in_place_group():
    text = ("# Collective test starting: all_gather_perf\n# nThread 1 nGpus 2 minBytes 8 maxBytes 8 step: 2(factor)\n"
            "#       size         count      type   redop    root     time   algbw   busbw #wrong\n"
            "    16777216       4194304  bfloat16    none      -1    108.8  154.20   77.10    N/A\n")
    (run,) = parse_text(text)
    assert run.collective == "allgather" and run.rows[0].time_ip is None and run.nranks == 2


@pytest.mark.parametrize("text, match", [
    ("", "no nccl-tests result rows"),
    (NEW_HEADER, "no nccl-tests result rows"),
    (NEW_HEADER + ROW.replace("1073741824 ", "1e9 ", 1), "size '1e9' is not an integer"),
    (NEW_HEADER + ROW.replace("10000.0", "fast", 1), "time 'fast' is not a number"),
    (NEW_HEADER + ROW.replace("10000.0", "inf", 1), "not finite"),
    (NEW_HEADER + ROW.replace("10000.0", "-1.0", 1).replace("107.37", "0.00", 1), "time must be positive"),
    (NEW_HEADER + ROW.rsplit(" ", 1)[0], "fields where the column header has"),
    (NEW_HEADER + ROW[:-1] + "3", "3 wrong values"),
    (NEW_HEADER + ROW.replace("107.37", "50.00", 1), "is not size / time"),
    ("# Collective test starting: all_reduce_perf\n" + NEW_HEADER + ROW.replace("161.06", "80.53", 1),
     "has factor 1.500"),
    ("# Collective test starting: fancy_perf\n" + NEW_HEADER + ROW, "unknown collective 'fancy'"),
    ("[0]  " + ROW + "\n", r"MPI output tags"),
    (ROW.replace("      0", "    0.0"), "not an integer"),
    ("    1024   256   float   sum   -1   12.0   0.09   0.15   0\n", "cannot tell which collective"),
])
def test_refusals_name_the_line(text, match):
    refused(text, match)


def test_refusal_names_file_and_line():
    with pytest.raises(ConfigError, match=r"^run\.log:11: algbw .*'1073741824"):
        parse_text(NEW_HEADER + ROW.replace("107.37", "50.00", 1), "run.log")


def test_pasted_broadcast_has_no_rank_count():
    refused("  1048576  262144  float  none  0  100.0  10.49  10.49  0\n", "rank count is unknown",
            collective="broadcast")


@pytest.mark.parametrize("name, match", [
    ("tagged_output_refused.log", r"tagged_output_refused\.log:3: MPI output tags"),
    ("reduce_scatter_small_refused.log", "cannot tell which collective"),
])
def test_published_logs_refused(name, match):
    with pytest.raises(ConfigError, match=match):
        parse_log(DATA / name)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        parse_log(tmp_path / "missing.log")
    binary = tmp_path / "binary.log"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match="not a text log"):
        parse_log(binary)


def test_cli_refuses_in_one_line(tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_text(NEW_HEADER + ROW.replace("107.37", "50.00", 1))
    res = CliRunner().invoke(cli, ["calibrate", str(bad), "--topology", "dgx-h100", "-o", str(tmp_path / "c.toml")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1].startswith(f"Error: {bad}:11: algbw 50.0 GB/s")
    assert not (tmp_path / "c.toml").exists()
