"""One simulated training step of Llama 3 405B on 8,192 GB200 GPUs: TP 8, PP 16, DP 64, 1F1B with 16
micro-batches (the issue's scale target: under 60 s wall and 2 GiB peak RSS on two cores).

Run: ``python benchmarks/bench_step.py [--quick]``. Prints one row per configuration: wall and CPU seconds,
peak RSS of this process, the simulated step time and MFU. Figures are printed, never asserted; on a
shared machine compare CPU seconds (wall includes waiting for the cores).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from fabricsim.topologies.io import build
from fabricsim.training import StepConfig, model_preset, simulate_step

CASES = [
    ("llama3-405b TP8 PP16 DP64 1F1B m=16", "gb200-nvl72-ib", 8192,
     dict(tp=8, pp=16, scaling="strong", global_batch=1024)),
    ("llama3-405b TP8 PP16 DP64 interleaved v=2 m=16", "gb200-nvl72-ib", 8192,
     dict(tp=8, pp=16, virtual_stages=2, scaling="strong", global_batch=1024, zero=1)),
]
QUICK = [("llama3-70b TP8 PP4 DP18 m=8", "gb200-nvl72-ib", 576,
          dict(model="llama3-70b", tp=8, pp=4, scaling="strong", global_batch=144))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 576-GPU case only")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'case':<50}{'GPUs':>6}{'wall s':>9}{'CPU s':>8}{'RSS MiB':>9}{'step s':>9}{'MFU %':>7}")
    for label, topology, gpus, options in (QUICK if args.quick else CASES):
        options = dict(options)
        model = model_preset(options.pop("model", "llama3-405b"))
        t0, c0 = time.perf_counter(), time.process_time()
        res = simulate_step(build(topology, gpus=gpus), StepConfig(model, **options))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{label:<50}{gpus:>6}{wall:>9.1f}{cpu:>8.1f}{rss:>9.0f}{res.step_time:>9.3f}{100 * res.mfu:>7.1f}")


if __name__ == "__main__":
    main()
