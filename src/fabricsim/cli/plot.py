"""``fabricsim plot``: the figures of a sweep's CSV file, as PNG and SVG."""

from __future__ import annotations

import os

import click


@click.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--out", "-o", "out_dir", default=None, help="Directory for the figures [default: next to RESULTS].")
@click.option("--curve", type=click.Path(dir_okay=False), default=None,
              help="busbw-vs-size rows [default: busbw.csv next to a step.csv].")
@click.option("--breakdown/--no-breakdown", default=None,
              help="Step-time breakdown bars (compute, PP bubble, exposed TP/CP/EP/PP/DP) "
                   "[default: when the CSV has exposed_<kind>_s columns].")
def plot(results, out_dir, curve, breakdown) -> None:
    """Plot RESULTS.csv from `fabricsim sweep` (step or message rows)."""
    from fabricsim.plots import read_rows, write_plots

    rows = read_rows(results)
    out_dir = out_dir or os.path.dirname(os.path.abspath(results))
    if curve is None:
        guess = os.path.join(os.path.dirname(os.path.abspath(results)), "busbw.csv")
        curve = guess if "step_time_s" in rows[0] and os.path.exists(guess) else None
    paths = write_plots(rows, out_dir, curve_rows=read_rows(curve) if curve else None, breakdown=breakdown)
    for path in paths:
        click.echo(f"wrote {path}")
