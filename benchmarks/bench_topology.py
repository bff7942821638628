"""Build and validate the scale-out presets at 1,024 / 8,192 / 16,384 GPUs; print time, size and peak RSS.

Run: ``python benchmarks/bench_topology.py``. Figures are printed, never asserted (tests check correctness).
Peak RSS is the process high-water mark (``resource.getrusage``), so it only grows down the table.
"""

from __future__ import annotations

import resource
import sys
import time

from fabricsim.topologies import build

SIZES = (1024, 8192, 16384)
PRESETS = ("gb200-nvl72-ib", "dgx-b200-ib")


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def main() -> None:
    print(f"{'preset':<16}{'GPUs':>7}{'build+validate s':>18}{'figures s':>11}{'nodes':>9}{'edges':>9}"
          f"{'tiers':>7}{'bisection TB/s':>16}{'peak RSS MiB':>14}")
    for name in PRESETS:
        for gpus in SIZES:
            start = time.perf_counter()
            topo = build(name, gpus=gpus)  # builders validate before returning
            built = time.perf_counter() - start
            start = time.perf_counter()
            bisection = topo.bisection_bandwidth()
            topo.diameter_hops()
            figures = time.perf_counter() - start
            print(f"{name:<16}{gpus:>7}{built:>18.2f}{figures:>11.3f}{topo.graph.number_of_nodes():>9}"
                  f"{topo.graph.number_of_edges():>9}{topo.meta['tiers']:>7}{bisection / 1e12:>16.1f}"
                  f"{peak_rss_mib():>14.0f}")


if __name__ == "__main__":
    main()
