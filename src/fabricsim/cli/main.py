"""Root command group and the one place where library errors become one-line messages with exit 2."""

from __future__ import annotations

import sys

import click

from fabricsim import __version__
from fabricsim.errors import FabricsimError


class FabricsimGroup(click.Group):
    """A click group that turns a FabricsimError, or a file the user named that cannot be read or written
    (OSError), into one line ``Error: ...`` and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FabricsimError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"Error: {exc.strerror or exc}{where}", err=True)
            sys.exit(2)


@click.group(cls=FabricsimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fabricsim")
def cli() -> None:
    """Simulate multi-GPU cluster interconnects: topologies, collectives and training steps."""


def _register() -> None:
    from fabricsim.cli import collective, topology

    cli.add_command(topology.topology)
    for command in collective.COMMANDS.values():  # allreduce, reducescatter, ... sendrecv
        cli.add_command(command)
    from fabricsim.cli import validate
    cli.add_command(validate.validate)
    from fabricsim.cli import plot, step, sweep
    cli.add_command(sweep.sweep)
    cli.add_command(step.step)
    cli.add_command(plot.plot)
    from fabricsim.cli import plan; cli.add_command(plan.plan)  # noqa: E702


_register()
