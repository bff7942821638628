"""``fabricsim topology``: list, inspect, export and draw fabric presets or topology files."""

from __future__ import annotations

import functools

import click

from fabricsim.cli.fabric_options import preset_options
from fabricsim.cli.params import GPUS
from fabricsim.topologies.base import format_summary
from fabricsim.topologies.io import FORMATS, PRESETS, resolve, save


@click.group()
def topology() -> None:
    """Inspect the fabric presets (bandwidths are one way per direction unless marked bidirectional)."""


def fabric_options(command):
    """NAME plus the options every subcommand uses to size and shape a preset."""
    @click.argument("name")
    @click.option("--gpus", type=GPUS, default=None, help="GPUs in the fabric (a partial node or rack if not a "
                                                          "multiple of the domain size).")
    @preset_options
    @functools.wraps(command)
    def wrapper(name, gpus, fabric, **kwargs):
        return command(resolve(name, gpus=gpus, **fabric), **kwargs)
    return wrapper


@topology.command("list")
def list_presets() -> None:
    """One line per named preset."""
    for name, preset in PRESETS.items():
        size = f"{preset.max_gpus} GPUs" if preset.max_gpus else "any size"
        click.echo(f"{name:<16}{size:<11}{preset.description}")


@topology.command()
@fabric_options
def info(topo) -> None:
    """GPUs, switches, links, per-GPU bandwidth, bisection and diameter of NAME (a preset or a file)."""
    for line in format_summary(topo.summary()):
        click.echo(line)


@topology.command()
@fabric_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="File format (default: from the output file's suffix).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
def export(topo, fmt, output) -> None:
    """Write NAME as GraphML, DOT, node-link JSON, TOML (or YAML with PyYAML)."""
    save(topo, output, format=fmt)
    click.echo(f"wrote {output}: {topo.num_gpus} GPUs, {topo.graph.number_of_nodes()} nodes, "
               f"{topo.graph.number_of_edges()} directed edges")


@topology.command()
@fabric_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="A .png or .svg file.")
def draw(topo, output) -> None:
    """Draw NAME layered by tier into a PNG or SVG file."""
    from fabricsim.topologies.draw import save_drawing

    save_drawing(topo, output)
    click.echo(f"wrote {output}")
