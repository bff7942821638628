"""CPU time of one all-to-all alone, exact completions against the runner's batched ones (alltoall.FINISH_RTOL).

Run: ``python benchmarks/bench_alltoall.py [--quick]``. Both columns are measured in this one run, on the same
routes (built before timing); the times they compute are printed with their relative difference. Nothing is
asserted.
"""

from __future__ import annotations

import sys
import time

from fabricsim.collectives import CollectiveRunner, collective
from fabricsim.collectives.alltoall import FINISH_RTOL
from fabricsim.topologies import build


def one(runner, nbytes: int, rtol: float):
    sim = runner.simulation(record=None, finish_rtol=rtol)
    start = time.process_time()
    proc = collective(sim, "alltoall", nbytes, algorithm="pairwise")
    sim.run()
    return time.process_time() - start, proc.value.time, sim.fabric.fluid.solves


def main() -> None:
    quick = "--quick" in sys.argv
    cases = [("dgx-h100-ib", 32, 2**22), ("dgx-h100-ib", 64, 2**22), ("gb200-nvl72-ib", 144, 2**20)]
    cases += [] if quick else [("gb200-nvl72-ib", 144, 2**30)]
    print(f"{'topology':<16}{'ranks':>6}{'size':>8}{'exact cpu s':>13}{'solves':>8}{'batched cpu s':>15}{'solves':>8}{'speed-up':>10}"
          f"{'time diff':>11}")
    for name, ranks, nbytes in cases:
        runner = CollectiveRunner(build(name, gpus=ranks))
        one(runner, 1024, FINISH_RTOL)  # routes built once, outside the timing
        cpu0, t0, s0 = one(runner, nbytes, 0.0)
        cpu1, t1, s1 = one(runner, nbytes, FINISH_RTOL)
        size = f"{nbytes >> 20} MiB" if nbytes < 2**30 else f"{nbytes >> 30} GiB"
        print(f"{name:<16}{ranks:>6}{size:>8}{cpu0:>13.2f}{s0:>8}{cpu1:>15.2f}{s1:>8}{cpu0 / cpu1:>9.1f}x{(t1 - t0) / t0:>11.1e}")


if __name__ == "__main__":
    main()
