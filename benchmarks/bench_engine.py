"""Engine speed: one simulation of 1 GiB all-reduce traffic on the gb200-nvl72-ib family.

``--algorithm ring`` (default) sends the traffic of a ring all-reduce: 2(p-1) rounds in which every GPU
sends 1 GiB / p to its ring neighbour (rank order, so most hops stay inside an NVL72 rack and one per
rack crosses the InfiniBand fabric); the rounds repeat, so the round cache carries most of them.
``--algorithm tree|nvls|hierarchical|sharp`` runs one simulation of that algorithm's schedule on the
Simple protocol (``collectives.select.build_allreduce``, no protocol search), whose rounds mostly never
repeat: a pipelined tree fills and drains through ~150 distinct rounds at 8,192 GPUs, so every fluid
event is solved. The table shows the fluid events (re-solves), the flows they visited, and the CPU time
per event of the whole simulation. Each size runs in a fresh process so that its peak RSS is its own;
``--src`` runs another checkout's ``src`` (before/after ratios measured in one sitting).

    python benchmarks/bench_engine.py [--sizes 72,576,1024,4096,8192] [--algorithm ring|tree|...]
                                      [--planes aggregate|per-chip] [--src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from bench_scale import THIS_SRC, missing_package

GiB = 2**30


def one(p: int, planes: str, algorithm: str) -> dict:
    import numpy as np

    from fabricsim.simulator import Simulation
    from fabricsim.topologies.io import build

    t0 = time.perf_counter()
    topo = build("gb200-nvl72-ib", gpus=p, planes=planes)
    t1 = time.perf_counter()
    c1 = time.process_time()
    if algorithm == "ring":
        sim = Simulation(topo, record=None)
        ranks = np.arange(p)
        group = sim.fabric.group_by_rank(ranks, (ranks + 1) % p, GiB / p, label="ring step")

        def body(sim):
            for _ in range(2 * (p - 1)):
                yield sim.fabric.transfer_group(group)
        sim.process(body(sim))
    else:
        from fabricsim.collectives.base import GroupLayout, run_schedule
        from fabricsim.collectives.protocol import CALIBRATED
        from fabricsim.collectives.select import build_allreduce

        sim = Simulation(topo, efficiency=CALIBRATED.link_efficiency, record=None)
        schedule = build_allreduce(sim.fabric, GroupLayout.of(sim.fabric, None), GiB, algorithm, protocol="simple")
        sim.process(run_schedule(sim, schedule))
    result = sim.run()
    t2 = time.perf_counter()
    cpu = time.process_time() - c1
    stats = result.stats
    return {"gpus": p, "build_s": t1 - t0, "simulate_s": t2 - t1, "simulate_cpu_s": cpu, "wall_s": t2 - t0,
            "simulated_ms": result.time * 1e3, "flows": stats["flows"], "launches": stats["launches"],
            "cache_hits": stats["cache_hits"], "solves": stats["solves"],
            "solved_flows": sim.fabric.fluid.solved_flows, "us_per_solve": cpu / max(stats["solves"], 1) * 1e6,
            "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="72,576,1024,4096,8192")
    parser.add_argument("--planes", default="aggregate", choices=["aggregate", "per-chip"])
    parser.add_argument("--algorithm", default="ring", choices=["ring", "tree", "nvls", "hierarchical", "sharp"])
    parser.add_argument("--src", default=None, help="PYTHONPATH for the cases (another checkout's src)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.planes, args.algorithm)))
        return
    src = args.src or THIS_SRC
    error = missing_package(src)
    if error:
        parser.error(error)
    env = dict(os.environ, PYTHONPATH=src)
    print(f"1 GiB {args.algorithm} all-reduce traffic on gb200-nvl72-ib (NVLink planes: {args.planes}; src {src})")
    print(f"{'GPUs':>6} {'build s':>8} {'sim s':>8} {'sim cpu':>8} {'simulated':>11} {'flows':>11} {'launch':>7} "
          f"{'hits':>5} {'solves':>7} {'solved flows':>13} {'us/solve':>9} {'peak RSS':>9}")
    for p in [int(s) for s in args.sizes.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--one", str(p), "--planes", args.planes,
                              "--algorithm", args.algorithm], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
            print(f"{p:>6} failed: {last}", flush=True)
            continue
        r = json.loads(out.stdout)
        print(f"{r['gpus']:>6} {r['build_s']:>8.2f} {r['simulate_s']:>8.2f} {r['simulate_cpu_s']:>8.2f} "
              f"{r['simulated_ms']:>8.3f} ms {r['flows']:>11,} {r['launches']:>7} {r['cache_hits']:>5} "
              f"{r['solves']:>7} {r['solved_flows']:>13,} {r['us_per_solve']:>9.0f} {r['peak_rss_MiB']:>5.0f} MiB",
              flush=True)


if __name__ == "__main__":
    main()
