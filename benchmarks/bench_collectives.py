"""Wall time of one simulated collective of every kind, first run (routes built) and again (routes reused).

Run: ``python benchmarks/bench_collectives.py [--quick]``. Figures are printed, never asserted. The group
sizes are those the training step uses: a tensor/expert-parallel group inside one NVL72 rack, an
expert-parallel group spread over eight racks, and a data-parallel group of one GPU per rack position.
"""

from __future__ import annotations

import sys
import time

from fabricsim.collectives import CollectiveRunner, collective
from fabricsim.topologies import build

NBYTES = 2**28


def groups(quick: bool) -> list[tuple[str, list[int]]]:
    out = [("8 in one rack", list(range(8))), ("64 over 8 racks", list(range(0, 576, 9)))]
    if not quick:
        out.append(("576, all GPUs", list(range(576))))
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    runner = CollectiveRunner(build("gb200-nvl72-ib", gpus=576))
    print(f"{'group':<18}{'collective':<15}{'algorithm':<14}{'first s':>9}{'again s':>9}{'busbw GB/s':>12}")
    for label, ranks in groups(quick):
        for kind in ("allreduce", "reducescatter", "allgather", "broadcast", "alltoall", "sendrecv"):
            if kind == "alltoall" and len(ranks) > 64:
                continue  # p (p-1) flows: see alltoall.py for its cost
            algorithm = "pairwise" if kind == "alltoall" else ("p2p" if kind == "sendrecv" else "ring")
            start = time.perf_counter()
            runner.run(kind, NBYTES, algorithm, ranks=ranks)
            first = time.perf_counter() - start
            start = time.perf_counter()  # again in a fresh simulation (the runner would remember the result)
            sim = runner.simulation()
            proc = collective(sim, kind, NBYTES, ranks=ranks, algorithm=algorithm)
            sim.run()
            again, res = time.perf_counter() - start, proc.value
            print(f"{label:<18}{kind:<15}{algorithm:<14}{first:>9.2f}{again:>9.2f}{res.busbw / 1e9:>12.1f}")


if __name__ == "__main__":
    main()
