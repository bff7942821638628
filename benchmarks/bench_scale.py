"""Engine speed and scale: 1 GiB all-reduce on gb200-nvl72-ib up to 131,072 GPUs, the sweeps, a big trace.

Every case runs in a fresh process, so its peak RSS is its own; wall and CPU seconds are the whole
process (topology build, routing, simulation). 131,072 GPUs need a fat tree of 144-port Quantum-X800
switches (64-port Quantum-2 tops out at 65,536 GPUs in three tiers). ``--src`` runs another checkout's
``src`` directory (an older commit). ``--compare DIR`` measures this checkout's ``src`` (or ``--src``'s)
and DIR's case by case, alternating them ``--repeat`` times, and prints the fastest of each side and their
ratio: the machine's speed drifts over minutes (a shared two-core VM), so two tables run one after the
other can disagree by 20% where the alternated ratio does not.

    python benchmarks/bench_scale.py [--cases all|allreduce|cli|QUICK] [--src DIR] [--compare DIR [--repeat N]]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

GiB = 2**30
ALGOS = ("ring", "tree", "hierarchical", "nvls", "sharp")

ALLREDUCE = [(8192, a, None) for a in ALGOS] + [(65536, "ring", None), (65536, "hierarchical", None),
                                                 (131072, "ring", "ib-xdr-switch"),
                                                 (131072, "hierarchical", "ib-xdr-switch")]
CLI = [
    ("sweep (default)", ["sweep", "--out", "{tmp}/sweep"]),
    ("sweep llama3-70b tp8 8192", ["sweep", "--model", "llama3-70b", "--tp", "8", "--sizes", "8192",
                                   "--out", "{tmp}/sweep70"]),
    ("allreduce 1024 1G --trace", ["allreduce", "--topology", "gb200-nvl72-ib", "--gpus", "1024", "--min-bytes", "1G",
                                   "--max-bytes", "1G", "--trace", "{tmp}/t.json"]),
]


def one_allreduce(p: int, algorithm: str, switch: str | None) -> dict:
    from fabricsim.collectives import AllreduceRunner
    from fabricsim.topologies.io import build

    topo = build("gb200-nvl72-ib", gpus=p, **({"switch": switch} if switch else {}))
    res = AllreduceRunner(topo).run(GiB, algorithm)
    return {"simulated_s": res.time, "busbw_GBps": res.busbw / 1e9}


# every case reports its own peak RSS and CPU time on the way out (also through click's sys.exit)
_REPORT = ("import atexit, resource, sys\n"
           "def _report():\n"
           "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
           "    print('__RUSAGE__', r.ru_maxrss / 1024, r.ru_utime + r.ru_stime, file=sys.stderr)\n"
           "atexit.register(_report)\n")


def missing_package(src: str) -> str | None:
    """Why ``src`` cannot stand for a checkout's ``src`` (None if it can): a directory without the
    package on PYTHONPATH would silently run the installed fabricsim instead."""
    if os.path.isfile(os.path.join(src, "fabricsim", "__init__.py")):
        return None
    return f"no fabricsim package in {src} (give a checkout's src directory)"


def run_case(code: str, argv: list[str], src: str | None, timeout: float) -> dict:
    env = dict(os.environ)
    if src:
        error = missing_package(src)
        if error:
            return {"error": error}
        env["PYTHONPATH"] = src
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", _REPORT + code, *argv], capture_output=True, text=True, env=env,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:g} s"}
    row = {"wall_s": time.perf_counter() - t0}
    lines = out.stderr.strip().splitlines()
    usage = [line.split() for line in lines if line.startswith("__RUSAGE__")]
    if usage:
        row["peak_rss_MiB"], row["cpu_s"] = float(usage[-1][1]), float(usage[-1][2])
    if out.returncode != 0 or not usage:
        errors = [line for line in lines if not line.startswith("__RUSAGE__")]
        row["error"] = (errors or ["exit %d" % out.returncode])[-1][:80]
    else:
        row["stdout"] = out.stdout
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="all", help="all, allreduce, cli, or GPUS:ALGO[,...] e.g. 8192:tree")
    parser.add_argument("--src", default=None, help="PYTHONPATH for the cases (another checkout's src)")
    parser.add_argument("--compare", default=None, metavar="DIR",
                        help="alternate this checkout with DIR (another checkout's src), case by case")
    parser.add_argument("--repeat", type=int, default=2, help="with --compare: runs of each side per case")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        p, algo, switch = args.one
        print(json.dumps(one_allreduce(int(p), algo, None if switch == "-" else switch)))
        return
    if args.cases in ("all", "allreduce", "cli"):
        allreduce = ALLREDUCE if args.cases in ("all", "allreduce") else []
        cli = CLI if args.cases in ("all", "cli") else []
    else:
        allreduce, cli = [], []
        for item in args.cases.split(","):
            p, algo = item.split(":")
            allreduce.append((int(p), algo, "ib-xdr-switch" if int(p) > 65536 else None))
    if args.compare:
        compare(allreduce, cli, args.compare, args.repeat, args.timeout, args.src or THIS_SRC)
        return
    src = args.src or THIS_SRC
    print(f"fabricsim engine benchmark (src {src}); each case a fresh process; peak RSS of that process")
    print(f"{'case':<34} {'wall s':>8} {'cpu s':>8} {'peak RSS':>10}  result")
    for p, algo, switch in allreduce:
        row = run_case(_ONE, ["--one", str(p), algo, switch or "-"], src, args.timeout)
        label = f"all-reduce 1 GiB {algo} {p:,}"
        _print(label, row, lambda r: "{simulated_s:.6f} s simulated, busbw {busbw_GBps:.1f} GB/s".format(
            **json.loads(r["stdout"])))
    with tempfile.TemporaryDirectory() as tmp:
        for label, cmd in cli:
            cmd = [c.format(tmp=tmp) for c in cmd]
            row = run_case(_CLI, cmd, src, args.timeout)
            trace = os.path.join(tmp, "t.json")

            def result(r, trace=trace, label=label):
                if "--trace" in label and os.path.exists(trace):
                    size = os.path.getsize(trace) / 2**20
                    with open(trace) as fh:
                        n = len(json.load(fh)["traceEvents"])
                    return f"trace {size:.1f} MiB, valid JSON, {n:,} events"
                return "ok"
            _print(label, row, result)


# this checkout's own src (what "this checkout" means in --compare, whatever fabricsim is installed)
THIS_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
_ONE = f"import runpy, sys; sys.argv[0] = {__file__!r}; runpy.run_path(sys.argv[0], run_name=\"__main__\")"
_CLI = "from fabricsim.cli.main import cli; cli()"


def compare(allreduce: list, cli: list, old_src: str, repeat: int, timeout: float, new_src: str = THIS_SRC) -> None:
    """Each case alternately with ``new_src`` (this checkout's, or ``--src``) and ``old_src``, ``repeat`` times
    each; the fastest run of each side (CPU and wall), the old/new CPU ratio, and whether the simulated
    results agree."""
    print(f"fabricsim engine benchmark: src {new_src} vs src {old_src}, alternated, best of {repeat} each")
    print(f"{'case':<34} {'old cpu s':>9} {'new cpu s':>9} {'ratio':>6} {'old wall':>9} {'new wall':>9} "
          f"{'old RSS':>8} {'new RSS':>8}  results")
    cases = [(f"all-reduce 1 GiB {algo} {p:,}", _ONE, ["--one", str(p), algo, switch or "-"])
             for p, algo, switch in allreduce] + [(label, _CLI, cmd) for label, cmd in cli]
    for label, code, argv in cases:
        best: dict = {}
        outputs: dict = {}
        failed = None
        for _ in range(repeat):
            for side, src in (("old", old_src), ("new", new_src)):
                with tempfile.TemporaryDirectory() as tmp:
                    row = run_case(code, [a.format(tmp=tmp) for a in argv], src, timeout)
                if "error" in row:
                    failed = f"FAILED ({side}): {row['error']}"
                    break
                outputs.setdefault(side, row["stdout"].replace(tmp, "{tmp}"))  # paths the output names
                b = best.setdefault(side, dict(row))
                for key in ("cpu_s", "wall_s", "peak_rss_MiB"):
                    b[key] = min(b[key], row[key])
            if failed:
                break
        if failed:
            print(f"{label:<34} {failed}", flush=True)
            continue
        o, n = best["old"], best["new"]
        same = "identical" if outputs["old"] == outputs["new"] else "DIFFER"
        print(f"{label:<34} {o['cpu_s']:>9.2f} {n['cpu_s']:>9.2f} {o['cpu_s'] / n['cpu_s']:>5.2f}x "
              f"{o['wall_s']:>9.2f} {n['wall_s']:>9.2f} {o['peak_rss_MiB']:>4.0f} MiB {n['peak_rss_MiB']:>4.0f} MiB  "
              f"{same}", flush=True)


def _print(label: str, row: dict, result) -> None:
    if "error" in row:
        print(f"{label:<34} {'-':>8} {'-':>8} {'-':>10}  FAILED: {row['error']}", flush=True)
        return
    print(f"{label:<34} {row['wall_s']:>8.2f} {row['cpu_s']:>8.2f} {row['peak_rss_MiB']:>6.0f} MiB  {result(row)}",
          flush=True)


if __name__ == "__main__":
    main()
