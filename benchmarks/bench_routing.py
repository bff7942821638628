"""Routing cost inside real runs: CPU seconds in Router construction and Router.route_many, old vs new.

Each case runs twice in fresh processes, once with ``--old`` (another checkout's ``src``, e.g. the commit
before the batched routing) and once with this checkout, in one sitting, so the ratios compare like with
like on a noisy machine. A case is a 1 GiB all-reduce on gb200-nvl72-ib (``GPUS:ALGO``) or a CLI command
(``sweep``: the default ``fabricsim sweep``); the whole process's CPU seconds are shown beside the routing
share, and the simulated result, which must not move.

    python benchmarks/bench_routing.py --old DIR [--cases 8192:ring,65536:hierarchical,...|sweep] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

DEFAULT = "8192:ring,8192:tree,8192:hierarchical,8192:nvls,8192:sharp,65536:ring,65536:hierarchical," \
          "131072:ring,131072:hierarchical,sweep"

# wraps the two routing entry points with CPU-time counters and reports them (and the process's CPU time)
_PROBE = """
import atexit, json, resource, sys, time
from fabricsim.simulator import routing
_acc = {"__init__": 0.0, "route_many": 0.0, "pairs": 0}
def _timed(name):
    f = getattr(routing.Router, name)
    def g(self, *a, **k):
        t = time.process_time()
        try:
            return f(self, *a, **k)
        finally:
            _acc[name] += time.process_time() - t
            if name == "route_many":
                _acc["pairs"] += len(a[0])
    setattr(routing.Router, name, g)
_timed("__init__"); _timed("route_many")
def _report():
    r = resource.getrusage(resource.RUSAGE_SELF)
    _acc["cpu"] = r.ru_utime + r.ru_stime
    _acc["rss_MiB"] = r.ru_maxrss / 1024
    print("__ROUTING__" + json.dumps(_acc), file=sys.stderr)
atexit.register(_report)
"""

_ALLREDUCE = """
import json, sys
from fabricsim.collectives import AllreduceRunner
from fabricsim.topologies.io import build
p, algo = int(sys.argv[1]), sys.argv[2]
topo = build("gb200-nvl72-ib", gpus=p, **({"switch": "ib-xdr-switch"} if p > 65536 else {}))
res = AllreduceRunner(topo).run(2**30, algo)
print(json.dumps({"result": f"{float(res.time)!r} s simulated"}))
"""

_SWEEP = """
import hashlib, json, os, sys
from fabricsim.cli.main import cli
try:
    cli(["sweep", "--jobs", "1", "--no-plots", "--out", sys.argv[1]], standalone_mode=False)
finally:
    with open(os.path.join(sys.argv[1], "step.csv"), "rb") as fh:
        print(json.dumps({"result": "step.csv " + hashlib.blake2b(fh.read(), digest_size=6).hexdigest()}))
"""


def run(case: str, src: str, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    with tempfile.TemporaryDirectory() as tmp:
        if case == "sweep":
            code, argv = _SWEEP, [tmp]
        else:
            p, algo = case.split(":")
            code, argv = _ALLREDUCE, [p, algo]
        try:
            out = subprocess.run([sys.executable, "-c", _PROBE + code, *argv], capture_output=True, text=True,
                                 env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timeout {timeout:g} s"}
    probe = [line for line in out.stderr.splitlines() if line.startswith("__ROUTING__")]
    if out.returncode != 0 or not probe:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][:60]}
    row = json.loads(probe[-1][len("__ROUTING__"):])
    row["routing"] = row["__init__"] + row["route_many"]
    row["result"] = json.loads(out.stdout.strip().splitlines()[-1])["result"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the old side's src directory (another checkout)")
    parser.add_argument("--new", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    parser.add_argument("--cases", default=DEFAULT)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    print("CPU seconds in Router() + Router.route_many, and of the whole process; old = --old, new = this checkout")
    print(f"{'case':<22} {'routing old':>11} {'new':>7} {'ratio':>6}   {'process old':>11} {'new':>7} {'ratio':>6}"
          f"   {'RSS old':>8} {'new':>8}  same result")
    for case in args.cases.split(","):
        old, new = run(case, args.old, args.timeout), run(case, args.new, args.timeout)
        label = "sweep (default)" if case == "sweep" else f"{int(case.split(':')[0]):,} {case.split(':')[1]}"
        if "error" in old or "error" in new:
            print(f"{label:<22} FAILED: old {old.get('error', 'ok')}; new {new.get('error', 'ok')}", flush=True)
            continue
        print(f"{label:<22} {old['routing']:>11.2f} {new['routing']:>7.2f} {old['routing'] / new['routing']:>5.1f}x"
              f"   {old['cpu']:>11.2f} {new['cpu']:>7.2f} {old['cpu'] / new['cpu']:>5.2f}x   {old['rss_MiB']:>4.0f} MiB"
              f" {new['rss_MiB']:>4.0f} MiB"
              f"  {'yes' if old['result'] == new['result'] else 'NO: ' + old['result'] + ' vs ' + new['result']}",
              flush=True)


if __name__ == "__main__":
    main()
