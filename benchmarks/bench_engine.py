"""Engine speed: the traffic of a 1 GiB ring all-reduce on the gb200-nvl72-ib family.

2(p-1) rounds; in each, every GPU sends 1 GiB / p to its ring neighbour (rank order, so most hops stay
inside an NVL72 rack and one per rack crosses the InfiniBand fabric), with contention fully modelled.
Each size runs in a fresh process so that its peak RSS is its own.

    python benchmarks/bench_engine.py [--sizes 72,576,1024,4096,8192] [--planes aggregate|per-chip]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GiB = 2**30


def one(p: int, planes: str) -> dict:
    import numpy as np

    from fabricsim.simulator import Simulation
    from fabricsim.topologies.io import build

    t0 = time.perf_counter()
    topo = build("gb200-nvl72-ib", gpus=p, planes=planes)
    t1 = time.perf_counter()
    sim = Simulation(topo, record=None)
    ranks = np.arange(p)
    group = sim.fabric.group_by_rank(ranks, (ranks + 1) % p, GiB / p, label="ring step")

    def ring(sim):
        for _ in range(2 * (p - 1)):
            yield sim.fabric.transfer_group(group)

    sim.process(ring(sim))
    result = sim.run()
    t2 = time.perf_counter()
    flows = result.stats["flows"]
    return {"gpus": p, "build_s": t1 - t0, "simulate_s": t2 - t1, "wall_s": t2 - t0,
            "simulated_ms": result.time * 1e3, "flows": flows, "flows_per_s": flows / (t2 - t1),
            "solves": result.stats["solves"], "cache_hits": result.stats["cache_hits"],
            "busbw_GBps": GiB / result.time * 2 * (p - 1) / p / 1e9,
            "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="72,576,1024,4096,8192")
    parser.add_argument("--planes", default="aggregate", choices=["aggregate", "per-chip"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.planes)))
        return
    print(f"1 GiB ring all-reduce traffic on gb200-nvl72-ib (NVLink planes: {args.planes})")
    print(f"{'GPUs':>6} {'build s':>8} {'sim s':>8} {'wall s':>8} {'simulated':>11} {'flows':>12} "
          f"{'flows/s':>12} {'solves':>7} {'busbw':>10} {'peak RSS':>9}")
    for p in [int(s) for s in args.sizes.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--one", str(p), "--planes", args.planes],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"{r['gpus']:>6} {r['build_s']:>8.2f} {r['simulate_s']:>8.2f} {r['wall_s']:>8.2f} "
              f"{r['simulated_ms']:>8.3f} ms {r['flows']:>12,} {r['flows_per_s']:>12.3g} {r['solves']:>7} "
              f"{r['busbw_GBps']:>5.1f} GB/s {r['peak_rss_MiB']:>5.0f} MiB")


if __name__ == "__main__":
    main()
