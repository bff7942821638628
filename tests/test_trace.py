import json

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
