"""``fabricsim allreduce``: an all_reduce_perf-style sweep of message sizes on a simulated fabric."""

from __future__ import annotations

import json

import click

from fabricsim.collectives import ALGORITHMS, AllreduceRunner
from fabricsim.collectives.select import estimate_allreduce
from fabricsim.errors import ConfigError
from fabricsim.simulator.trace import parse_ranks
from fabricsim.topologies.io import resolve
from fabricsim.units import format_size, parse_size

COLUMNS = ("size_bytes", "count", "algorithm", "protocol", "time_us", "algbw_GBps", "busbw_GBps")


def message_sizes(min_bytes: int, max_bytes: int, step_factor: float) -> list[int]:
    """Sizes from min to max multiplying by step_factor, as nccl-tests' -b/-e/-f."""
    if min_bytes > max_bytes:
        raise ConfigError(f"--min-bytes ({min_bytes}) is larger than --max-bytes ({max_bytes})")
    if not step_factor > 1:
        raise ConfigError(f"--step-factor must be above 1, got {step_factor}")
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(int(size))
        size = int(size * step_factor) if int(size * step_factor) > size else size + 1
    return sizes


@click.command()
@click.option("--topology", "name", required=True, help="Preset name or topology file.")
@click.option("--gpus", type=int, default=None, help="GPUs (all of them take part).")
@click.option("--planes", type=click.Choice(["per-chip", "aggregate"]), default=None)
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="auto", show_default=True)
@click.option("--protocol", type=click.Choice(["auto", "ll", "ll128", "simple"]), default="auto", show_default=True)
@click.option("--min-bytes", default="8", show_default=True, help="Smallest message (e.g. 8, 1M, 1GiB).")
@click.option("--max-bytes", default="8G", show_default=True, help="Largest message.")
@click.option("--step-factor", type=float, default=2.0, show_default=True)
@click.option("--model", type=click.Choice(["simulate", "analytic"]), default="simulate", show_default=True,
              help="Simulate on the fabric, or a closed-form estimate.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--trace", type=click.Path(dir_okay=False), default=None,
              help="Perfetto trace of the largest size (simulate only).")
@click.option("--trace-ranks", default=None, metavar="RANKS",
              help="GPU tracks the trace keeps, e.g. 0-7,64 (default: all).")
def allreduce(name, gpus, planes, algorithm, protocol, min_bytes, max_bytes, step_factor, model, fmt, trace,
              trace_ranks):
    """All-reduce time, algbw and busbw per message size, like nccl-tests' all_reduce_perf.

    busbw = algbw x 2(p-1)/p. Bandwidths are GB/s (1e9 B/s); sizes are bytes (count = float32 elements).
    """
    topo = resolve(name, gpus=gpus, planes=planes)
    sizes = message_sizes(parse_size(min_bytes), parse_size(max_bytes), step_factor)
    runner = AllreduceRunner(topo, protocol=protocol)
    try:
        selected = parse_ranks(trace_ranks, topo.num_gpus)
    except ValueError as exc:
        raise ConfigError(f"--trace-ranks: {exc}") from None
    rows = []
    for i, size in enumerate(sizes):
        if model == "analytic":
            res = estimate_allreduce(topo, size, algorithm, protocol=protocol)
        else:
            last = trace is not None and i == len(sizes) - 1
            res = runner.run(size, algorithm, trace=trace if last else None, trace_ranks=selected)
        rows.append({"size_bytes": size, "count": size // 4, "algorithm": res.algorithm, "protocol": res.protocol,
                     "time_us": res.time * 1e6, "algbw_GBps": res.algbw / 1e9, "busbw_GBps": res.busbw / 1e9})
        if fmt == "table":
            if i == 0:
                click.echo(f"# {topo.name}: {topo.num_gpus} GPUs, model {model}")
                click.echo(f"{'size':>12} {'count':>12} {'algorithm':>24} {'proto':>6} {'time (us)':>12} "
                           f"{'algbw (GB/s)':>13} {'busbw (GB/s)':>13}")
            r = rows[-1]
            click.echo(f"{format_size(size):>12} {r['count']:>12} {r['algorithm']:>24} {r['protocol']:>6} "
                       f"{r['time_us']:>12.2f} {r['algbw_GBps']:>13.2f} {r['busbw_GBps']:>13.2f}")
    if fmt == "csv":
        click.echo(",".join(COLUMNS))
        for r in rows:
            click.echo(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS))
    elif fmt == "json":
        click.echo(json.dumps({"topology": topo.name, "gpus": topo.num_gpus, "model": model, "rows": rows}, indent=1))
    if trace and model == "simulate":
        click.echo(f"wrote trace {trace} (open in ui.perfetto.dev)", err=True)
