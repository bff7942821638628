"""``fabricsim plan``: search the parallel layouts of a training job and rank them (table, CSV and JSON)."""

from __future__ import annotations

import sys

import click

from fabricsim.cli.sweep import _int_list


def _choices(text, what, cast=int):
    if text is None:
        return None
    if cast is int:
        return _int_list(text, what)
    return tuple(v.strip() for v in text.split(",") if v.strip())


@click.command()
@click.option("--model", "-m", required=True, help="Model preset (e.g. llama3-405b, mixtral-8x7b) or a TOML file.")
@click.option("--topology", "-t", default="gb200-nvl72-ib", show_default=True, help="Topology preset or file.")
@click.option("--gpus", "-n", type=int, default=None, help="GPUs (presets; default: the preset's size).")
@click.option("--global-batch", "-b", type=int, required=True, help="Sequences per step.")
@click.option("--precision", default="bf16", show_default=True, help="Tensor-core precision of the compute.")
@click.option("--simulate", "top", type=int, default=3, show_default=True,
              help="Simulate the best N estimates on the fabric (0: estimates only).")
@click.option("--rows", type=int, default=10, show_default=True, help="Rows of the table to print (0: all).")
@click.option("--show-oom", is_flag=True, help="Keep the layouts that do not fit in memory, as rows.")
@click.option("--tp", "tps", default=None, help="Restrict the search: tensor-parallel widths (e.g. 4,8).")
@click.option("--cp", "cps", default=None, help="Restrict: context-parallel widths.")
@click.option("--pp", "pps", default=None, help="Restrict: pipeline stages.")
@click.option("--ep", "eps", default=None, help="Restrict: expert-parallel widths.")
@click.option("--virtual-stages", "vs", default=None, help="Restrict: virtual stages per pipeline rank.")
@click.option("--micro-batch", "mbs", default=None, help="Restrict: sequences per micro-batch.")
@click.option("--zero", "zeros", default=None, help="Restrict: ZeRO stages (0-3).")
@click.option("--recompute", "rcs", default=None, help="Restrict: none, selective, full (comma-separated).")
@click.option("--out", "-o", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write plan.csv and plan.json into this directory.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def plan(model, topology, gpus, global_batch, precision, top, rows, show_oom, tps, cps, pps, eps, vs, mbs, zeros,
         rcs, out_dir, progress) -> None:
    """Rank the parallel layouts of MODEL on GPUS of TOPOLOGY for a global batch: step time, MFU, memory."""
    from fabricsim.topologies.io import PRESETS, resolve
    from fabricsim.training.models import resolve_model
    from fabricsim.training.plan import FabricFigures, SearchSpace, format_table, step_simulator, write_plan

    mod = resolve_model(model)
    topo = resolve(topology, gpus=gpus if topology in PRESETS else None)
    fabric = FabricFigures.from_topology(topo, precision)
    space = SearchSpace(**{k: v for k, v in (
        ("tp", _choices(tps, "--tp")), ("cp", _choices(cps, "--cp")), ("pp", _choices(pps, "--pp")),
        ("ep", _choices(eps, "--ep")), ("virtual_stages", _choices(vs, "--virtual-stages")),
        ("micro_batch", _choices(mbs, "--micro-batch")), ("zero", _choices(zeros, "--zero")),
        ("recompute", _choices(rcs, "--recompute", str))) if v is not None})
    simulate = step_simulator(topo, mod, global_batch, precision=precision) if top > 0 else None
    from fabricsim.training.plan import plan as search

    bar = click.progressbar(length=1, label="planning", file=sys.stderr) if progress else None

    def tick(done, total):
        bar.length = total
        bar.update(done - bar.pos)

    if bar is not None:
        with bar:
            result = search(mod, fabric, global_batch, top=top, simulate=simulate, keep_oom=show_oom, space=space,
                            progress=tick)
    else:
        result = search(mod, fabric, global_batch, top=top, simulate=simulate, keep_oom=show_oom, space=space)
    click.echo(mod.describe())
    sim = f"best {result.simulated} simulated on the fabric" if result.simulated else "estimates only"
    click.echo(f"{topo.num_gpus} GPUs on {topo.name or topology}, global batch {global_batch} x {mod.seq_len} "
               f"tokens: {result.enumerated} layouts, {result.fitting} fit in {fabric.capacity / 1e9:.0f} GB; "
               f"{sim}; {result.seconds:.1f} s")
    for line in format_table(result, rows=rows):
        click.echo(line)
    if out_dir:
        for path in write_plan(result, out_dir, meta={"topology": topo.name or topology, "precision": precision}):
            click.echo(f"wrote {path}")
