"""``fabricsim plan``: search the parallel layouts of a training job and rank them (table, CSV and JSON).

The layout options are the ones every command shares (``cli.layout_options``); here an option given on the
command line pins that dimension of the search, and the dimensions left out are searched.
"""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from fabricsim.cli.fabric_options import preset_options
from fabricsim.cli.layout_options import layout_options
from fabricsim.cli.params import GPUS, BoundedInt, BoundedFloat, calibration_option

_SEARCHED = ("tp", "cp", "pp", "dp", "ep", "virtual_stages", "micro_batch", "zero", "recompute")


@click.command()
@click.option("--model", "-m", required=True, help="Model preset (e.g. llama3-405b, mixtral-8x7b) or a TOML file.")
@click.option("--topology", "-t", default="gb200-nvl72-ib", show_default=True, help="Topology preset or file.")
@click.option("--gpus", "-n", type=GPUS, default=None, help="GPUs (presets; default: the preset's size).")
@click.option("--global-batch", "-b", type=BoundedInt(1, 10**9), required=True, help="Sequences per step.")
@click.option("--precision", default="bf16", show_default=True, help="Tensor-core precision of the compute.")
@layout_options
@click.option("--simulate", "top", type=BoundedInt(0, 1000), default=3, show_default=True,
              help="Simulate the best N estimates on the fabric (0: estimates only).")
@click.option("--budget", type=BoundedFloat(0.0, 1e6), default=150.0, show_default=True,
              help="Seconds after which no further simulation starts (the best estimate is always simulated).")
@click.option("--rows", type=BoundedInt(0, 10**6), default=10, show_default=True,
              help="Rows of the table to print (0: all).")
@click.option("--show-oom", is_flag=True, help="Keep the layouts that do not fit in memory, as rows.")
@click.option("--out", "-o", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write plan.csv and plan.json into this directory.")
@calibration_option
@preset_options
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def plan(model, topology, gpus, global_batch, precision, layout, top, budget, rows, show_oom, out_dir,
         fabric, progress, calibration=None) -> None:
    """Rank the parallel layouts of MODEL on GPUS of TOPOLOGY for a global batch: step time, MFU, memory.

    Layout options pin a dimension (--tp 8 searches only TP 8); the others are searched.
    """
    from fabricsim.topologies.io import PRESETS, resolve
    from fabricsim.training.models import resolve_model
    from fabricsim.training.plan import FabricFigures, SearchSpace, format_table, step_simulator, write_plan
    from fabricsim.training.plan import plan as search

    ctx = click.get_current_context()
    pinned = {k: (layout[k],) for k in _SEARCHED
              if k in layout and ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    space = SearchSpace(**pinned, order=layout["order"], sequence_parallel=layout["sequence_parallel"])
    mod = resolve_model(model)
    topo = resolve(topology, gpus=gpus if topology in PRESETS else None, **fabric)
    fabric = FabricFigures.from_topology(topo, precision)
    overlap = layout["tp_comm_overlap"]
    from fabricsim.collectives import AllreduceRunner
    runner = AllreduceRunner(topo, calibration=calibration) if calibration else None
    simulate = (step_simulator(topo, mod, global_batch, precision=precision, tp_comm_overlap=overlap, runner=runner)
                if top > 0 else None)
    options = dict(top=top, simulate=simulate, keep_oom=show_oom, space=space, budget=budget,
                   tp_comm_overlap=overlap)
    if progress:
        with click.progressbar(length=1, label="planning", file=sys.stderr) as bar:
            def tick(done, total):
                bar.length = total
                bar.update(done - bar.pos)

            result = search(mod, fabric, global_batch, progress=tick, **options)
    else:
        result = search(mod, fabric, global_batch, **options)
    click.echo(mod.describe())
    sim = f"best {result.simulated} simulated on the fabric" if result.simulated else "estimates only"
    click.echo(f"{topo.num_gpus} GPUs on {topo.name or topology}, global batch {global_batch} x {mod.seq_len} "
               f"tokens: {result.enumerated} layouts, {result.fitting} fit in {fabric.capacity / 1e9:.1f} GB; "
               f"{sim}; {result.seconds:.1f} s")
    for line in format_table(result, rows=rows):
        click.echo(line)
    if out_dir:
        for path in write_plan(result, out_dir, meta={"topology": topo.name or topology, "precision": precision}):
            click.echo(f"wrote {path}")
