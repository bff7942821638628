import json
import os
import tempfile

from fabricsim.collectives import AllreduceRunner
from fabricsim.simulator import Simulation
from fabricsim.topologies.io import build
from fabric_helpers import star


def test_trace_holds_compute_flows_and_link_counters(tmp_path):
    sim = Simulation(star(3), trace=True)

    def gpu(sim):
        yield sim.compute(0, 1e-3, "forward")
        yield sim.fabric.transfer("g0", "g1", 10**6, label="grad")

    sim.process(gpu(sim))
    sim.run()
    path = tmp_path / "t.json"
    sim.write_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    compute = [e for e in events if e.get("cat") == "compute"]
    flows = [e for e in events if e.get("cat") == "flow"]
    counters = [e for e in events if e["ph"] == "C"]
    assert compute == [{"ph": "X", "cat": "compute", "name": "forward", "pid": 0, "tid": 0, "ts": 0.0, "dur": 1e3}]
    assert len(flows) == 1 and flows[0]["tid"] == 0 and flows[0]["ts"] == 1e3
    assert flows[0]["dur"] > 1e3  # 1 MB at 1 GB/s: 1 ms plus latency, in microseconds
    assert {e["name"] for e in counters} == {"g0->sw", "sw->g1"}
    assert max(e["args"]["utilisation"] for e in counters) == 1.0


def test_allreduce_trace_file(tmp_path):
    path = tmp_path / "ar.json"
    AllreduceRunner(build("dgx-h100")).run(2**20, "ring", trace=str(path))
    events = json.loads(path.read_text())["traceEvents"]
    assert sum(e.get("cat") == "flow" for e in events) == 8 * 14  # 8 ranks x 2(p-1) steps


def test_trace_ranks_keep_only_the_selected_tracks(tmp_path):
    path = tmp_path / "sel.json"
    AllreduceRunner(build("dgx-h100")).run(2**20, "ring", trace=str(path), trace_ranks=[1, 5])
    events = json.loads(path.read_text())["traceEvents"]
    flows = [e for e in events if e.get("cat") == "flow"]
    assert {e["tid"] for e in flows} == {1, 5} and len(flows) == 2 * 14
    assert all(e["args"]["bytes"] > 0 for e in flows)


def test_failed_run_leaves_no_trace_file(tmp_path):
    path = tmp_path / "broken.json"
    sim = Simulation(star(2), trace=str(path))

    def gpu(sim):
        yield sim.fabric.transfer("g0", "g1", 10**6)
        raise RuntimeError("boom")

    sim.process(gpu(sim))
    try:
        sim.run()
    except RuntimeError:
        sim.tracer.discard()
    assert list(tmp_path.iterdir()) == []


def test_cli_trace_ranks(tmp_path):
    from click.testing import CliRunner

    from fabricsim.cli.main import cli

    path = tmp_path / "t.json"
    args = ["allreduce", "--topology", "dgx-h100", "--algorithm", "ring", "--min-bytes", "1M", "--max-bytes", "1M",
            "--trace", str(path)]
    ok = CliRunner().invoke(cli, args + ["--trace-ranks", "0-1"])
    assert ok.exit_code == 0, ok.output
    assert {e["tid"] for e in json.loads(path.read_text())["traceEvents"] if e.get("cat") == "flow"} == {0, 1}
    bad = CliRunner().invoke(cli, args + ["--trace-ranks", "0-99"])
    assert bad.exit_code == 2 and "--trace-ranks" in bad.output and "Traceback" not in bad.output
    assert "outside 0-" in bad.output
    reversed_range = CliRunner().invoke(cli, args + ["--trace-ranks", "3-1"])
    assert reversed_range.exit_code == 2 and "'3-1' is empty" in reversed_range.output


def test_unnamed_trace_spools_privately_and_writes_an_ordinary_file(tmp_path, monkeypatch):
    # the spool of a trace with no output yet sits in the shared temporary directory: only its owner
    # reads it; the file written at the end gets the umask's permissions, as any other output
    import stat

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sim = Simulation(star(3), trace=True)
    spool = sim.tracer._tmp
    assert os.path.dirname(spool) == str(tmp_path) and stat.S_IMODE(os.stat(spool).st_mode) == 0o600

    def gpu(sim):
        yield sim.fabric.transfer("g0", "g1", 10**6, label="grad")

    sim.process(gpu(sim))
    sim.run()
    old = os.umask(0o022)
    try:
        sim.write_trace(tmp_path / "t.json")  # in the spool's own directory: copied, not renamed
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "t.json").st_mode) == 0o644
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert sorted(os.listdir(tmp_path)) == ["t.json"]
