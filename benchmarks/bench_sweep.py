"""Wall and CPU time of ``fabricsim sweep`` runs, optionally side by side with another checkout.

Run: ``python benchmarks/bench_sweep.py [--src OLD/src] [--jobs N] [--plots] [--heavy]``. Figures are
printed, never asserted. Every case is the CLI command in a fresh process (no plots unless ``--plots``).
CPU seconds are that process's own, which is all of the work with ``--jobs 1`` (the default): pool
workers are started by a fork server, so their CPU time is not counted under ``--jobs 2`` (compare
wall seconds there). With ``--src`` each case also runs on that ``src`` directory (an older commit),
and the last column compares the two CSVs cell by cell: ``identical``, or how many numbers differ and
by how much at most (relative).

1. the default sweep (Llama 3 8B, data parallel, gb200-nvl72-ib, 8..8,192 GPUs, four algorithms,
   plus the busbw curve at 576 GPUs): ``fabricsim sweep``;
2. Llama 3 70B with TP 8 at 8,192 GPUs (eight data-parallel groups all-reducing at once):
   ``fabricsim sweep --model llama3-70b --tp 8 --sizes 8192``;
3. with ``--heavy``: message mode (one 1 GiB all-reduce per size and algorithm, 8..8,192 GPUs) and
   Llama 3 70B with TP 8 from 8 to 8,192 GPUs.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile

from bench_scale import THIS_SRC, run_case

CASES = [("default sweep", [], "step.csv"),
         ("llama3-70b TP 8 at 8,192 GPUs", ["--model", "llama3-70b", "--tp", "8", "--sizes", "8192"], "step.csv")]
HEAVY = [("message: 1 GiB all-reduce", ["--mode", "message"], "message.csv"),
         ("llama3-70b TP 8, 8..8,192 GPUs", ["--model", "llama3-70b", "--tp", "8"], "step.csv")]


def run(args: list[str], out: str, src: str | None, jobs: int, plots: bool) -> dict:
    """One sweep as the CLI, in a fresh process (``bench_scale.run_case``): wall_s, cpu_s, peak_rss_MiB."""
    argv = ["sweep", *args, "--out", out, "--jobs", str(jobs)] + ([] if plots else ["--no-plots"])
    return run_case("from fabricsim.cli.main import cli; cli()", argv, src, timeout=3600.0)


def compare(a: str, b: str) -> str:
    """``identical``, or how many numeric cells of two CSV files differ and the largest relative gap."""
    with open(a, newline="") as fa, open(b, newline="") as fb:
        ra, rb = list(csv.reader(fa)), list(csv.reader(fb))
    if len(ra) != len(rb) or ra[:1] != rb[:1]:
        return "different rows or columns"
    differ, worst = 0, 0.0
    for x_row, y_row in zip(ra[1:], rb[1:]):
        for x, y in zip(x_row, y_row):
            if x == y:
                continue
            try:
                fx, fy = float(x), float(y)
            except ValueError:
                return f"text differs: {x!r} / {y!r}"
            differ += 1
            worst = max(worst, abs(fx - fy) / max(abs(fx), abs(fy)))
    return "identical" if not differ else f"{differ} numbers differ, at most {worst:.1e} relative"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=None, help="another checkout's src directory (before)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes per sweep (default 1: CPU is exact)")
    parser.add_argument("--plots", action="store_true", help="also write the plots, as the CLI does by default")
    parser.add_argument("--heavy", action="store_true", help="also message mode and the 70B sweep at every size")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, jobs: {args.jobs}, load average: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; before: {args.src or '-'}")
    print(f"{'case':<34}{'before wall s':>14}{'cpu s':>8}{'after wall s':>14}{'cpu s':>8}{'cpu ratio':>10}  CSV")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, sweep_args, table) in enumerate(CASES + (HEAVY if args.heavy else [])):
            sides = {}
            for side, src in (("before", args.src), ("after", THIS_SRC)):
                if side == "before" and not src:
                    continue
                sides[side] = run(sweep_args, os.path.join(tmp, f"{i}-{side}"), src, args.jobs, args.plots)
            cells, ratio, same = [], "", ""
            for side in ("before", "after"):
                r = sides.get(side)
                cells.append(f"{'-':>14}{'-':>8}" if r is None or "error" in r else f"{r['wall_s']:>14.1f}{r['cpu_s']:>8.1f}")
            if all(s in sides and "error" not in sides[s] for s in ("before", "after")):
                ratio = f"{sides['before']['cpu_s'] / sides['after']['cpu_s']:.1f}x"
                same = compare(*(os.path.join(tmp, f"{i}-{s}", table) for s in ("before", "after")))
            errors = [f"{s}: {r['error']}" for s, r in sides.items() if "error" in r]
            print(f"{label:<34}{cells[0]}{cells[1]}{ratio:>10}  {same}{'; '.join(errors)}", flush=True)


if __name__ == "__main__":
    main()
