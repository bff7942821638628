"""Root command group and the one place where errors become one line on stderr and an exit code.

Exit codes (the README's "Errors and exit codes" states the same):

- 0: done.
- 1: ``validate --strict`` found rows outside their bounds (a result, not an error).
- 2: the input was wrong: a bad option or value (click's usage errors), an error fabricsim raises on
  purpose (:class:`~fabricsim.errors.FabricsimError`), or a file the user named that cannot be read or
  written. One line ``Error: ...``, never a traceback.
- 3: a bug in fabricsim (any other exception): one line asking for a bug report. ``fabricsim --debug
  COMMAND ...`` shows the traceback instead.

Output cut short by a closed pipe (``fabricsim ... | head``) ends quietly with exit 0.
"""

from __future__ import annotations

import os
import sys

import click
from click.exceptions import NoArgsIsHelpError

from fabricsim import __version__
from fabricsim.errors import FabricsimError

__all__ = ["cli", "main", "EXIT_USAGE", "EXIT_BUG", "EXIT_INTERRUPTED", "BUG_REPORT_URL"]

EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
BUG_REPORT_URL = "https://github.com/fabricsim/fabricsim/issues"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {_one_line(message)}", err=True)
    sys.exit(code)


def _quiet_broken_pipe() -> None:
    """The reader went away (``| head``): stop writing, and keep Python from complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
        pass
    sys.exit(0)


def _usage_error(exc: click.UsageError) -> None:
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    _fail(exc.format_message() + hint, EXIT_USAGE)


class FabricsimGroup(click.Group):
    """A click group that turns every error into one line and an exit code (see the module docstring)."""

    def make_context(self, info_name, args, parent=None, **extra):
        """The root's own options (``fabricsim --bogus``) are reported in one line too."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            if parent is not None:
                raise
            _usage_error(exc)

    def invoke(self, ctx: click.Context):
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except NoArgsIsHelpError:
            raise  # a group named alone: click prints its help
        except click.UsageError as exc:
            _usage_error(exc)
        except (click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            _quiet_broken_pipe()
        except KeyboardInterrupt:  # Ctrl-C: one line and 130, not click's "Aborted!" and 1 (validate --strict's code)
            if debug:
                raise
            _fail("interrupted", EXIT_INTERRUPTED)
        except FabricsimError as exc:
            if debug:
                raise
            _fail(str(exc), EXIT_USAGE)
        except OSError as exc:
            if debug:
                raise
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror or exc}{where}", EXIT_USAGE)
        except MemoryError:
            if debug:
                raise
            _fail("out of memory: the request is too large for this machine (fewer GPUs, sizes or buckets)",
                  EXIT_USAGE)
        except Exception as exc:  # noqa: BLE001 - the boundary where a bug becomes one line
            if debug:
                raise
            _fail(f"internal error ({type(exc).__name__}: {exc}). This is a bug in fabricsim; please report it "
                  f"at {BUG_REPORT_URL} with the command line (add --debug after 'fabricsim' for the traceback)",
                  EXIT_BUG)


@click.group(cls=FabricsimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fabricsim")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error (for bug reports).")
def cli(debug: bool) -> None:
    """Simulate multi-GPU cluster interconnects: topologies, collectives and training steps.

    Exit codes: 0 done, 2 bad input (one line on stderr), 3 a bug in fabricsim (rerun with --debug),
    130 interrupted (Ctrl-C).
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``fabricsim`` and ``python -m fabricsim``."""
    try:
        cli.main(args=argv, prog_name="fabricsim")
    except BrokenPipeError:
        _quiet_broken_pipe()


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
    from fabricsim.cli import cluster; cli.add_command(cluster.cluster)  # noqa: E702
    from fabricsim.cli import calibrate; cli.add_command(calibrate.calibrate)  # noqa: E702


_register()
