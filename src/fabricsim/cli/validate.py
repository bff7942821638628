"""``fabricsim validate``: simulated vs published figures, per-group error, markdown report and plot."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabricsim.cli.params import calibration_option
from fabricsim.validation import plot_validation, validate as run_validation, write_markdown
from fabricsim.validation.report import summary_lines, table_header, table_line


@click.command()
@calibration_option
@click.option("--quick", is_flag=True, help="Only the fast rows (collectives below 1,000 GPUs; no training steps).")
@click.option("--collectives", is_flag=True, help="Only collective rows, every system class (no training steps).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write validation.md and validation.png into this directory [default: print only]. The "
                   "project's committed copy is made with --out docs.")
@click.option("--strict", is_flag=True, help="Exit 1 when any row is outside its bound or could not run.")
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
def validate(quick: bool, collectives: bool, out_dir: str, strict: bool, no_plot: bool, calibration=None) -> None:
    """Run every published reference figure through the simulator and report the error.

    Prints simulated vs published per row with the error in percent and whether it is within the row's
    bound, then the geometric-mean absolute error per group with rows used for fitting shown apart.
    Reports only (exit 0) unless --strict. Files are written only with --out DIR.
    """
    click.echo(table_header())
    report = run_validation(quick=quick, collectives=collectives, calibration=calibration,
                            on_result=lambda r: click.echo(table_line(r)))
    click.echo("")
    for line in summary_lines(report):
        click.echo(line)
    if out_dir is not None:
        out = Path(out_dir)
        command = ("fabricsim validate" + (" --quick" if quick else "") + (" --collectives" if collectives else "")
                   + f" --out {out_dir}")
        png = None
        if not no_plot:
            png = out / "validation.png"
            plot_validation(report, png)
        md = write_markdown(report, out / "validation.md", command=command, plot=png.name if png else None)
        click.echo(f"\nwrote {md}" + (f" and {png}" if png else ""))
    failures = report.failures
    pending = sum(r.status == "pending" for r in report.results)
    click.echo(f"{len(report.results)} rows: {len(failures)} outside their bound or failed, {pending} not yet "
               "modelled")
    if strict and failures:
        sys.exit(1)
