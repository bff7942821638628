"""Speed of the layout search: enumeration + memory + estimates, then each fabric simulation of the best.

    python benchmarks/bench_plan.py [--model llama3-405b] [--gpus 8192] [--global-batch 2048] [--simulate 3]

Prints wall and CPU seconds of each phase (the machine is shared: CPU seconds are the steadier figure).
"""

from __future__ import annotations

import argparse
import resource
import time


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama3-405b")
    ap.add_argument("--topology", default="gb200-nvl72-ib")
    ap.add_argument("--gpus", type=int, default=8192)
    ap.add_argument("--global-batch", type=int, default=2048)
    ap.add_argument("--simulate", type=int, default=3)
    args = ap.parse_args()

    from fabricsim.topologies.io import build
    from fabricsim.training.models import resolve_model
    from fabricsim.training.plan import FabricFigures, plan, step_simulator

    rows = []

    def phase(name, fn):
        w, c = time.perf_counter(), cpu()
        out = fn()
        rows.append((name, time.perf_counter() - w, cpu() - c))
        return out

    model = resolve_model(args.model)
    topo = phase("build topology", lambda: build(args.topology, gpus=args.gpus))
    fabric = FabricFigures.from_topology(topo)
    result = phase("enumerate + memory + estimate", lambda: plan(model, fabric, args.global_batch, top=0))
    simulate = step_simulator(topo, model, args.global_batch)
    for cand in result.candidates[:args.simulate]:
        sim = phase(f"simulate {cand.layout.describe()}", lambda: simulate(cand.layout, cand.micro_batches))
        rows[-1] = rows[-1] + (f"{sim.step_time:.3f} s (estimate {cand.estimate.step_time:.3f} s)",)
    print(f"{args.model} on {args.gpus} GPUs of {args.topology}, global batch {args.global_batch}: "
          f"{result.enumerated} layouts, {result.fitting} fit")
    print(f"{'phase':<78}{'wall s':>9}{'CPU s':>9}  result")
    for name, wall, c, *extra in rows:
        print(f"{name:<78}{wall:>9.1f}{c:>9.1f}  {extra[0] if extra else ''}")
    total_w, total_c = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'total':<78}{total_w:>9.1f}{total_c:>9.1f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
