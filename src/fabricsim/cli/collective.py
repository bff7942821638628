"""``fabricsim allreduce | reducescatter | allgather | broadcast | reduce | alltoall | sendrecv``.

One implementation makes the seven commands, each an nccl-tests ``*_perf`` on a simulated fabric:
the same flags (``-b -e -f -i -g -n -w -d -o -r -z -c``), the same columns, the same busbw factor.
"""

from __future__ import annotations

import time

import click

from fabricsim.cli.fabric_options import preset_options
from fabricsim.cli.faults import fault_options, with_faults
from fabricsim.cli.output import FORMATS, make_writer
from fabricsim.cli.params import GPUS, SIZE, STEP_FACTOR, calibration_option
from fabricsim.collectives import KINDS, CollectiveRunner
from fabricsim.collectives.check import count_wrong
from fabricsim.collectives.records import DTYPES, REDOPS, dtype_name, dtype_size, nccl_size, record
from fabricsim.errors import ConfigError
from fabricsim.simulator.trace import parse_ranks
from fabricsim.topologies.io import resolve

__all__ = ["COMMANDS", "make_command", "size_series", "MAX_SIZES"]

#: Most sizes one command runs (nccl-tests' -b/-e/-f/-i can ask for millions).
MAX_SIZES = 10_000
PROGRESS_AFTER = 2.0  # s of wall time after which each finished size is also reported on stderr


def size_series(min_bytes: int, max_bytes: int, step_factor: float | None = None,
                step_bytes: int | None = None) -> list[int]:
    """Sizes from min to max as nccl-tests' -b/-e walks them: times ``-f`` if given (above 1), else
    plus ``-i`` bytes, else doubling.

    >>> size_series(8, 64), size_series(1, 10, step_bytes=4)
    ([8, 16, 32, 64], [1, 5, 9])
    """
    if min_bytes > max_bytes:
        raise ConfigError(f"--min-bytes ({min_bytes}) is larger than --max-bytes ({max_bytes})")
    if step_factor is None and step_bytes is None:
        step_factor = 2.0
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(int(size))
        if len(sizes) > MAX_SIZES:
            raise ConfigError(f"-b/-e/-f/-i ask for more than {MAX_SIZES} sizes; use a larger step")
        nxt = int(size * step_factor) if step_factor is not None else size + step_bytes
        size = nxt if nxt > size else size + 1
    return sizes


def _algorithms(name: str) -> list[str]:
    k = KINDS[name]
    extra = ["tree"] if name in ("reducescatter", "allgather") else []  # refused with NCCL's reason
    return [*k.algorithms, *extra, "auto"]


def make_command(name: str) -> click.Command:
    """The click command for collective ``name`` (a key of KINDS)."""
    k = KINDS[name]

    @click.command(name=name, help=f"""{k.title.capitalize()} time, algbw and busbw per size, like nccl-tests'
{k.binary}.

\b
Sizes are nccl-tests' for this collective (bytes; count = elements of --dtype);
busbw = algbw x {k.factor_text}; bandwidths in GB/s (1e9 B/s). nccl-tests flags are
accepted as aliases: -g is the total GPU count here; -n, -w and -z are accepted and
change nothing (a simulation is deterministic: every iteration takes the same time).""")
    @click.option("--topology", "topology_name", required=True, help="Preset name or topology file.")
    @click.option("-g", "--gpus", type=GPUS, default=None, help="GPUs (all of them take part).")
    @preset_options
    @click.option("--algorithm", type=click.Choice(_algorithms(name)), default="auto", show_default=True)
    @click.option("--protocol", type=click.Choice(["auto", "ll", "ll128", "simple"]), default="auto",
                  show_default=True)
    @click.option("-b", "--min-bytes", type=SIZE, default="8", show_default=True, help="Smallest size (8, 1M, 1GiB).")
    @click.option("-e", "--max-bytes", type=SIZE, default="8G", show_default=True, help="Largest size.")
    @click.option("-f", "--step-factor", type=STEP_FACTOR, default=None,
                  help="Multiply the size by this each step [default: 2 unless -i is given].")
    @click.option("-i", "--step-bytes", type=SIZE, default=None, help="Add this many bytes each step instead.")
    @click.option("-d", "--dtype", default="float", show_default=True,
                  help=f"Element type for count: {', '.join(DTYPES)} (and bf16, fp16, fp32...).")
    @click.option("-o", "--op", type=click.Choice(REDOPS), default="sum", show_default=True,
                  help="Reduction op (printed; the time does not depend on it).")
    @click.option("-r", "--root", type=click.IntRange(0), default=0, show_default=True,
                  help="Root rank of broadcast and reduce (others print -1, as nccl-tests).")
    @click.option("-c", "--check", type=click.IntRange(0, 1), is_flag=False, flag_value=1, default=0,
                  help="Run each size again carrying data and report #wrong elements (--check or -c 1).")
    @click.option("-n", "--iters", type=click.IntRange(0), default=20, help="Accepted; changes nothing.")
    @click.option("-w", "--warmup-iters", type=click.IntRange(0), default=5, help="Accepted; changes nothing.")
    @click.option("-z", "--blocking", type=click.IntRange(0, 1), default=0, help="Accepted; changes nothing.")
    @click.option("--model", type=click.Choice(["simulate", "analytic"]), default="simulate", show_default=True,
                  help="Simulate on the fabric, or its closed-form alpha-beta estimate (no contention; fast).")
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
    @click.option("--trace", type=click.Path(dir_okay=False), default=None,
                  help="Perfetto trace of the largest size (simulate only).")
    @click.option("--trace-ranks", default=None, metavar="RANKS",
                  help="GPU tracks the trace keeps, e.g. 0-7,64 (default: all).")
    @click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
    @calibration_option
    @fault_options
    def command(topology_name, gpus, fabric, algorithm, protocol, min_bytes, max_bytes, step_factor, step_bytes,
                dtype, op, root, check, iters, warmup_iters, blocking, model, fmt, trace, trace_ranks, quiet,
                calibration=None, **faults):
        run_collective(name, faults=faults, calibration=calibration, topology_name=topology_name, gpus=gpus,
                       fabric=fabric, algorithm=algorithm,
                       protocol=protocol, sizes=size_series(min_bytes, max_bytes, step_factor, step_bytes),
                       dtype=dtype, op=op, root=root, check=bool(check), model=model, fmt=fmt, trace=trace,
                       trace_ranks=trace_ranks, quiet=quiet, header=dict(min=min_bytes, max=max_bytes, factor=step_factor, step=step_bytes,
                                                iters=iters, warmup=warmup_iters))
    return command


def run_collective(name: str, *, faults=None, topology_name, gpus, fabric=None, algorithm, protocol, sizes, dtype, op,
                   root, check, model, fmt, trace, quiet, header, trace_ranks=None, calibration=None) -> None:
    """Run ``sizes`` of collective ``name`` and write one row per size as it finishes."""
    k = KINDS[name]
    dtype = dtype_name(dtype)
    if trace is not None and model == "analytic":
        raise ConfigError("--trace needs --model simulate (a closed-form estimate has no timeline)")
    if check and op != "sum":
        raise ConfigError(f"--check reduces with sum; -o {op} can be timed but not checked")
    topo = with_faults(resolve(topology_name, gpus=gpus, **(fabric or {})), **(faults or {}))
    p = topo.num_gpus
    if k.rooted and root >= p:
        raise ConfigError(f"--root {root} is not a rank of the {p} GPUs")
    runner = CollectiveRunner(topo, protocol=protocol, **({"calibration": calibration} if calibration else {}))
    try:
        selected = parse_ranks(trace_ranks, p)
    except ValueError as exc:
        raise ConfigError(f"--trace-ranks: {exc}") from None
    step = f"{header['factor']:g}(factor)" if header["factor"] else \
        (f"{header['step']}(bytes)" if header["step"] else "2(factor)")
    writer = make_writer(fmt, preamble=[
        f"fabricsim {name} ({k.binary} columns): {topo.name}, {p} GPUs, model {model}, algorithm {algorithm}, "
        f"protocol {protocol}",
        f"nThread 1 nGpus {p} minBytes {header['min']} maxBytes {header['max']} step: {step} warmup iters: "
        f"{header['warmup']} iters: {header['iters']} agg iters: 1 validation: {int(check)} graph: 0",
        "A model: every iteration takes the same time; in-place and out-of-place columns are equal."])
    start, written = time.monotonic(), 0
    try:
        for i, requested in enumerate(sizes):
            size, count = nccl_size(name, requested, p, dtype)
            where = root if k.rooted else None
            if model == "analytic":
                from fabricsim.collectives.estimate import estimate

                res = estimate(topo, name, size, algorithm, protocol=protocol,
                               **({"calibration": calibration} if calibration else {}))
            else:
                chosen = runner.choose(name, size, root=where) if algorithm == "auto" else algorithm
                last = trace is not None and i == len(sizes) - 1
                res = runner.run(name, size, chosen, root=where, trace=trace if last else None,
                                 trace_ranks=selected)
            wrong = None
            if check and model == "simulate":
                wrong = count_wrong(runner, name, size, chosen, root=where, count=size // dtype_size(dtype), seed=i)
            writer.row(record(res, topology=topo.name, count=count, dtype=dtype, redop=op, root=root, wrong=wrong,
                              model=model))
            written += 1
            elapsed = time.monotonic() - start
            if not quiet and elapsed >= PROGRESS_AFTER and i + 1 < len(sizes):
                click.echo(f"progress: {i + 1}/{len(sizes)} sizes, {size} B done, {elapsed:.1f} s", err=True)
    except BaseException:
        if written:  # rows already out stay a well-formed table, CSV or JSON array
            writer.close()
        raise
    writer.close()
    if trace and model == "simulate":
        click.echo(f"wrote trace {trace} (open in ui.perfetto.dev)", err=True)


COMMANDS = {name: make_command(name) for name in KINDS}
