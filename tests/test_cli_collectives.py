"""The seven collective commands: nccl-tests' flags and columns, one schema across table, CSV and JSON."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.cli.output import make_writer, nccl_time
from fabricsim.collectives.kinds import KINDS
from fabricsim.collectives.records import COLUMNS

# nccl-tests 2.20.0 all_reduce_perf header and first row, as posted in NVIDIA/dgx-spark-playbooks pull
# request 103 (two GB10 nodes); kept to check that our table lines up with real output column by column
PUBLISHED = [
    "#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong",
    "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)  (GB/s)  (GB/s)",
    "        8192          2048     float     sum      -1    35.15    0.23    0.23       0    30.33    0.27    0.27       0",
]


def run(*args):
    return CliRunner().invoke(cli, list(args))


def ends(line):
    """Character positions where each whitespace-separated field of a line ends."""
    out, inside = [], False
    for i, ch in enumerate(line + " "):
        if ch != " " and not inside:
            inside = True
        elif ch == " " and inside:
            inside = False
            out.append(i)
    return out


def table(name, *extra):
    res = run(name, "--topology", "dgx-h100", "-b", "1M", "-e", "4M", *extra)
    assert res.exit_code == 0, res.output
    return res.stdout.splitlines()


def test_allreduce_table_lines_up_with_all_reduce_perf_column_by_column():
    lines = table("allreduce", "-g", "8", "-f", "2", "--check")
    names = next(line for line in lines if "#wrong" in line)
    units = next(line for line in lines if "(elements)" in line)
    rows = [line for line in lines if not line.startswith("#")]
    assert names.startswith(PUBLISHED[0])
    assert units == PUBLISHED[1]
    assert len(rows) == 3
    for row in rows:
        assert ends(row)[:13] == ends(PUBLISHED[2])  # every nccl-tests field ends where all_reduce_perf's does
        size, count, dtype, redop, root = row.split()[:5]
        assert (int(size), int(count), dtype, redop, root) == (int(size), int(size) // 4, "float", "sum", "-1")
        assert row.split()[8] == "0" and row.split()[12] == "0"  # #wrong from the data check
    assert lines[-3] == "# Out of bounds values : 0 OK"
    assert lines[-2].startswith("# Avg bus bandwidth    : ")


@pytest.mark.parametrize("name", list(KINDS))
def test_every_command_prints_nccl_tests_columns_with_its_busbw_factor(name):
    lines = table(name, "--check", "-r", "2")
    rows = [line.split() for line in lines if not line.startswith("#")]
    assert len(rows) == 3
    k = KINDS[name]
    for f in rows:
        size, count = int(f[0]), int(f[1])
        assert f[3] == ("sum" if k.reduces else "none")
        assert f[4] == ("2" if k.rooted else "-1")
        per_rank = name in ("reducescatter", "allgather", "alltoall")
        assert count == (size // 4 // 8 if per_rank else size // 4)  # nccl-tests' count column
        assert f[5:9] == f[9:13]  # out-of-place and in-place are the same run
        assert f[8] == "0"


@pytest.mark.parametrize("name", list(KINDS))
def test_table_csv_and_json_share_one_schema_at_full_precision(name):
    base = [name, "--topology", "dgx-h100-ib", "-g", "16", "-b", "64K", "-e", "1M", "-f", "4", "-d", "bf16"]
    rows_csv = list(csv.DictReader(io.StringIO(run(*base, "--format", "csv").stdout)))
    rows_json = json.loads(run(*base, "--format", "json").stdout)
    table_rows = [line.split() for line in run(*base).stdout.splitlines() if not line.startswith("#")]
    assert list(rows_csv[0]) == list(COLUMNS)
    assert isinstance(rows_json, list) and all(list(r) == list(COLUMNS) for r in rows_json)  # records
    assert len(rows_csv) == len(rows_json) == len(table_rows) == 3
    factor = KINDS[name].factor(16)
    for c, j, t in zip(rows_csv, rows_json, table_rows):
        assert j["collective"] == c["collective"] == name and j["type"] == "bfloat16" and j["gpus"] == 16
        for col in ("time_us", "algbw_GBps", "busbw_GBps"):
            assert float(c[col]) == j[col]  # CSV keeps every digit
        assert j["busbw_GBps"] == pytest.approx(j["algbw_GBps"] * factor, rel=1e-12)
        assert j["algbw_GBps"] == pytest.approx(j["size_bytes"] / j["time_us"] / 1e3, rel=1e-12)
        assert int(t[0]) == j["size_bytes"] and int(t[1]) == j["count"]
        assert t[5] == nccl_time(j["time_us"]).strip() and float(t[7]) == round(j["busbw_GBps"], 2)
        assert j["wrong"] is None and c["wrong"] == ""  # not checked


def test_json_loads_with_pandas():
    pd = pytest.importorskip("pandas")
    out = run("alltoall", "--topology", "dgx-h100", "-b", "1M", "-e", "2M", "--format", "json").stdout
    frame = pd.read_json(io.StringIO(out))
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 2


def test_every_command_writes_the_collective_schema(tmp_path):
    """Sweep message mode, the sweep's busbw curve and the collective commands share records.COLUMNS, at full
    precision, as CSV and as JSON arrays of records; the same all-reduce gives the same row everywhere."""
    sweep = run("sweep", "-t", "dgx-h100", "--sizes", "8", "--mode", "message", "--bytes", "1M,64M", "-a", "ring",
                "-j", "1", "--no-plots", "-o", str(tmp_path / "m"))
    assert sweep.exit_code == 0, sweep.output
    model = tmp_path / "tiny.toml"
    model.write_text('name = "tiny"\nlayers = 2\nhidden = 256\nffn = 1024\nheads = 4\nvocab = 1000\nseq_len = 128\n')
    step = run("sweep", "-t", "dgx-h100", "--sizes", "8", "-m", str(model), "-a", "ring", "--curve-gpus", "8", "-j",
               "1", "--no-plots", "-o", str(tmp_path / "s"))
    assert step.exit_code == 0, step.output
    command = json.loads(run("allreduce", "--topology", "dgx-h100", "-b", "1M", "-e", "64M", "-f", "64",
                             "--algorithm", "ring", "--format", "json").stdout)
    for stem in (tmp_path / "m" / "message", tmp_path / "s" / "busbw"):
        rows_csv = list(csv.DictReader(open(f"{stem}.csv")))
        rows_json = json.loads(open(f"{stem}.json").read())
        assert list(rows_csv[0]) == list(COLUMNS), stem
        assert isinstance(rows_json, list) and all(list(r) == list(COLUMNS) for r in rows_json), stem
        for c, j in zip(rows_csv, rows_json):
            assert float(c["time_us"]) == j["time_us"] and float(c["busbw_GBps"]) == j["busbw_GBps"]
    message = json.loads(open(tmp_path / "m" / "message.json").read())
    same = ("collective", "gpus", "size_bytes", "count", "type", "redop", "root", "time_us", "busbw_GBps", "algorithm",
            "protocol", "model")
    assert [{k: r[k] for k in same} for r in message] == [{k: r[k] for k in same} for r in command]
    pd = pytest.importorskip("pandas")
    for path in ("m/message.json", "s/busbw.json", "s/step.json"):
        frame = pd.read_json(tmp_path / path)
        assert len(frame) >= 1 and "gpus" in frame.columns, path


def test_nccl_tests_flags_that_do_not_change_a_simulation_are_accepted():
    plain = json.loads(run("allreduce", "--topology", "dgx-h100", "-b", "1M", "-e", "1M", "--format", "json").stdout)
    noisy = json.loads(run("allreduce", "--topology", "dgx-h100", "-b", "1M", "-e", "1M", "-n", "100", "-w", "1",
                           "-z", "1", "-o", "max", "-d", "double", "--format", "json").stdout)
    assert noisy[0]["time_us"] == plain[0]["time_us"]
    assert (noisy[0]["redop"], noisy[0]["type"], noisy[0]["count"]) == ("max", "double", 2**20 // 8)


def test_sizes_round_as_nccl_tests_and_step_bytes_walk_linearly():
    rows = json.loads(run("reducescatter", "--topology", "dgx-h100", "-b", "8", "-e", "1000", "-i", "300",
                          "--format", "json").stdout)
    # 8, 308, 608, 908 B of float on 8 ranks: whole elements per rank, as reduce_scatter_perf prints them
    assert [(r["size_bytes"], r["count"]) for r in rows] == [(0, 0), (288, 9), (608, 19), (896, 28)]
    assert rows[0]["time_us"] == 0 and rows[0]["busbw_GBps"] == 0


def test_progress_goes_to_stderr_and_rows_stream(monkeypatch):
    import fabricsim.cli.collective as command

    monkeypatch.setattr(command, "PROGRESS_AFTER", 0.0)
    res = run("allgather", "--topology", "dgx-h100", "-b", "1M", "-e", "4M", "--format", "csv")
    assert res.exit_code == 0
    assert len(list(csv.DictReader(io.StringIO(res.stdout)))) == 3
    assert res.stderr.count("progress: ") == 2
    quiet = run("allgather", "--topology", "dgx-h100", "-b", "1M", "-e", "4M", "--format", "csv", "--quiet")
    assert quiet.stderr == ""
    seen = []
    writer = make_writer("json", echo=seen.append)
    writer.row({c: 1 for c in COLUMNS})
    assert len(seen) == 1  # a row is out as soon as it is given
    writer.close()
    assert json.loads("\n".join(seen)) == [{c: 1 for c in COLUMNS}]


@pytest.mark.parametrize("args, needle", [
    (["reducescatter", "--algorithm", "tree"], "NCCL has no tree"),
    (["alltoall", "--model", "analytic", "--trace", "t.json"], "needs --model simulate"),
    (["allgather", "--model", "analytic", "--algorithm", "tree"], "NCCL has no tree"),
    (["allreduce", "--check", "-o", "max"], "reduces with sum"),
    (["broadcast", "-r", "99"], "--root 99"),
    (["allgather", "-d", "complex"], "unknown data type"),
    (["sendrecv", "-b", "1G", "-e", "1M"], "larger than"),
    (["allreduce", "-f", "1"], "step-factor"),
    (["allreduce", "-b", "1", "-e", "1G", "-i", "1"], "more than 10000 sizes"),
])
def test_bad_input_exits_2_with_the_reason(args, needle):
    res = run(*args[:1], "--topology", "dgx-h100", *args[1:])
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output
    assert res.stdout == ""  # nothing half-written
