"""Where one 1 GiB all-reduce's CPU goes: the fluid solver, routing, and everything else (per-round work).

Each case runs in a fresh process (``bench_scale.run_case``); the process's CPU seconds are split by
timing, outermost call only, every ``FluidNetwork`` method that advances or loads flows (the solver)
and every ``Router`` method that builds or routes (routing); "rest" is the simulation's remainder:
building schedules, selecting and merging each round's flows, the protocol choice's bounds, the
event loop. ``--src`` also runs another checkout's ``src`` (before/after ratios in one sitting).

    python benchmarks/bench_phases.py [--cases 8192:tree,8192:nvls] [--src OLD/src] [--repeat N]
"""

from __future__ import annotations

import argparse
import json

from bench_scale import THIS_SRC, run_case

_CASE = """
import functools, json, sys, time
from fabricsim.simulator import fluid, routing
spent = {"fluid": 0.0, "routing": 0.0}

def timed(cls, names, bucket):
    depth = [0]
    for name in names:
        if not hasattr(cls, name):
            continue
        def wrap(f):
            @functools.wraps(f)
            def inner(*a, **k):
                if depth[0]:
                    return f(*a, **k)
                depth[0] += 1
                t = time.process_time()
                try:
                    return f(*a, **k)
                finally:
                    depth[0] -= 1
                    spent[bucket] += time.process_time() - t
            return inner
        setattr(cls, name, wrap(getattr(cls, name)))

timed(fluid.FluidNetwork, ["advance", "step", "add", "next_event_time", "reset_clock"], "fluid")
timed(routing.Router, ["__init__", "route_many", "route"], "routing")
from fabricsim.collectives import AllreduceRunner
from fabricsim.topologies.io import build
p, algo = int(sys.argv[1]), sys.argv[2]
t0 = time.process_time()
topo = build("gb200-nvl72-ib", gpus=p)
t1 = time.process_time()
res = AllreduceRunner(topo).run(2**30, algo)
t2 = time.process_time()
print(json.dumps({"build": t1 - t0, "run": t2 - t1, "simulated_s": res.time, **spent}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="8192:tree,8192:nvls", help="GPUS:ALGO[,...]")
    parser.add_argument("--src", default=None, help="another checkout's src directory (before)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case and side (before, after alternate)")
    args = parser.parse_args()
    print(f"{'case':<24}{'side':>7}{'build':>7}{'run':>7}{'fluid':>7}{'routing':>8}{'rest':>7}  simulated (s)")
    for item in args.cases.split(","):
        p, algo = item.split(":")
        for _ in range(args.repeat):
            for side, src in (("before", args.src), ("after", THIS_SRC)):
                if side == "before" and not src:
                    continue
                row = run_case(_CASE, [p, algo], src, timeout=600.0)
                if "error" in row:
                    print(f"{item:<24}{side:>7}  FAILED: {row['error']}", flush=True)
                    continue
                r = json.loads(row["stdout"])
                rest = r["run"] - r["fluid"] - r["routing"]
                print(f"{item:<24}{side:>7}{r['build']:>7.2f}{r['run']:>7.2f}{r['fluid']:>7.2f}{r['routing']:>8.2f}"
                      f"{rest:>7.2f}  {r['simulated_s']!r}", flush=True)


if __name__ == "__main__":
    main()
