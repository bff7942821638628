"""Wall time of ``fabricsim sweep`` with no arguments, and of heavier sweeps up to 8,192 GPUs.

Run: ``python benchmarks/bench_sweep.py [--jobs N] [--heavy]``. Figures are printed, never asserted; CPU
seconds count this process and its worker processes (the number to compare on a shared machine).

1. the default sweep (Llama 3 8B, data parallel, gb200-nvl72-ib, 8..8,192 GPUs, four algorithms,
   plus the busbw curve at 576 GPUs), exactly what the CLI runs, without plots;
2. message mode, one 1 GiB all-reduce per size and algorithm, 8..8,192 GPUs;
3. Llama 3 70B with TP 8 at 8,192 GPUs (eight data-parallel groups contending; ``fabricsim sweep --model
   llama3-70b --tp 8 --sizes 8192``);
4. with ``--heavy``: the same from 8 to 8,192 GPUs.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from fabricsim.sweep import SweepSpec, default_sizes, run_and_write
from fabricsim.training import StepConfig, model_preset


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the sweep's worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(label: str, spec: SweepSpec, jobs: int | None) -> None:
    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), _cpu()
        writer = run_and_write(spec, out, jobs=jobs)
        wall, cpu = time.perf_counter() - start, _cpu() - cpu
    points = len(writer.rows) + len(writer.curve)
    print(f"{label:<58}{len(spec.sizes):>6}{points:>8}{wall:>10.1f}{cpu:>10.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--heavy", action="store_true", help="also the TP 8 Llama 3 70B sweep")
    args = parser.parse_args()
    sizes = tuple(default_sizes(8192))
    print(f"cores: {os.cpu_count()}, jobs: {args.jobs or os.cpu_count()}, load average: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'sweep':<58}{'sizes':>6}{'rows':>8}{'wall s':>10}{'cpu s':>10}")
    timed("default: llama3-8b DP, 4 algorithms, busbw curve at 576", SweepSpec(
        sizes=sizes, step=StepConfig(model_preset("llama3-8b")), curve_gpus=576), args.jobs)
    timed("message: 1 GiB all-reduce, 4 algorithms", SweepSpec(sizes=sizes, mode="message"), args.jobs)
    timed("llama3-70b TP 8 at 8,192 GPUs (README target)", SweepSpec(
        sizes=(8192,), step=StepConfig(model_preset("llama3-70b"), tp=8)), args.jobs)
    if args.heavy:
        timed("llama3-70b TP 8, 4 algorithms", SweepSpec(
            sizes=sizes, step=StepConfig(model_preset("llama3-70b"), tp=8)), args.jobs)


if __name__ == "__main__":
    main()
