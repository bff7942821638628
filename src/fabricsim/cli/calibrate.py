"""``fabricsim calibrate LOG... --topology NAME -o FILE``: the model's parameters fitted to nccl-tests logs.

Thin over ``collectives.ncclog`` (reading the logs) and ``collectives.calibrate`` (the fit); prints the
fitted values with their standard errors and every size's residual, and writes the TOML calibration that
``--calibration FILE`` reads.
"""

from __future__ import annotations

import click

from fabricsim.cli.params import GPUS, SIZE
from fabricsim.collectives import KINDS
from fabricsim.errors import ConfigError


@click.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--topology", "topology_name", required=True, help="Preset name or topology file the logs ran on.")
@click.option("-g", "--gpus", type=GPUS, default=None, help="GPUs of the preset [default: the logs' rank count].")
@click.option("--collective", type=click.Choice(list(KINDS)), default=None,
              help="The collective, when a log does not name it.")
@click.option("--algorithm", default="auto", show_default=True,
              help="The algorithm NCCL ran (NCCL_ALGO); auto: the model's choice per size.")
@click.option("--fit-min", type=SIZE, default="1", show_default=True, help="Smallest size fitted.")
@click.option("--fit-max", type=SIZE, default=None, help="Largest size fitted [default: all]; larger sizes are predicted.")
@click.option("--every", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Fit every N-th size of the range; the others are predicted.")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="Calibration TOML to write.")
def calibrate(logs, topology_name, gpus, collective, algorithm, fit_min, fit_max, every, out) -> None:
    """Fit the model's link efficiencies and protocol latencies to nccl-tests LOG files, and write them."""
    from fabricsim.collectives.calibrate import fit, measured_points
    from fabricsim.collectives.ncclog import parse_log
    from fabricsim.topologies.io import PRESETS, resolve

    runs = [run for path in logs for run in parse_log(path, collective)]
    kind, ranks, measured = measured_points(runs, collective)
    topo = resolve(topology_name, gpus=(gpus or ranks) if topology_name in PRESETS else None)
    if topo.num_gpus != ranks:
        raise ConfigError(f"the logs ran on {ranks} ranks but {topology_name} has {topo.num_gpus} GPUs; pass -g {ranks}")
    chosen = [s for s in measured if s >= fit_min and (fit_max is None or s <= fit_max)][::every]
    result = fit(topo, kind, measured, fit_sizes=chosen, algorithm=algorithm)
    where = ", ".join(logs)
    span = f"{_size(chosen[0])}-{_size(chosen[-1])}, {len(chosen)} sizes" if chosen else "no sizes"
    cal = result.calibration.replace(source=f"fabricsim calibrate on {where} ({kind}, {ranks} ranks, "
                                     f"{topo.name or topology_name}; fitted on {span})")
    click.echo(f"{kind} on {ranks} ranks of {topo.name or topology_name}: {len(measured)} sizes, fitted on {span}")
    click.echo(f"\n  {'parameter':<42}{'shipped':>12}{'fitted':>12}{'± 1 s.e.':>12}")
    for key, start, value, err in result.values:
        text = "not seen" if err is None else _value(key, err)
        click.echo(f"  {key:<42}{_value(key, start):>12}{_value(key, value):>12}{text:>12}")
    click.echo(f"\n  {'size (B)':>14}{'measured us':>13}{'model us':>11}{'error':>9}  {'algorithm':<13}{'protocol':<9}set")
    for p in result.points:
        click.echo(f"  {p.size:>14}{p.measured * 1e6:>13.2f}{p.simulated * 1e6:>11.2f}{100 * p.error:>8.1f}%  "
                   f"{p.algorithm:<13}{p.protocol:<9}{'fit' if p.fitted else 'predicted'}")
    held = [abs(p.error) for p in result.points if not p.fitted]
    fitted = [abs(p.error) for p in result.points if p.fitted]
    click.echo(f"\nlargest error: {100 * max(fitted):.1f}% on fitted sizes"
               + (f", {100 * max(held):.1f}% on predicted sizes" if held else ""))
    cal.save(out)
    click.echo(f"wrote {out} (use it with --calibration {out})")


def _size(n: int) -> str:
    from fabricsim.units import format_size

    return format_size(n)


def _value(key: str, v: float) -> str:
    return f"{v * 1e6:.3f} us" if key.startswith("protocols.") else f"{v:.4f}"
