"""The parallel-layout options, defined once for every command that takes a layout (step, sweep, plan).

``@layout_options`` adds ``--tp --cp --pp --dp --ep --virtual-stages --micro-batch --zero --recompute
--sequence-parallel/--no-sequence-parallel --order --tp-comm-overlap`` and hands the command ONE keyword
argument, ``layout``: a dict of the values given, ready for ``StepConfig(**layout)`` (``dp`` omitted when
not given: it is what the GPU count leaves).
"""

from __future__ import annotations

import functools

import click

from fabricsim.cli.params import MAX_GPUS, BoundedInt

__all__ = ["layout_options", "LAYOUT_KEYS"]

#: A parallel width: one GPU up to the most GPUs any option accepts (the layout then checks it divides the job).
WIDTH = BoundedInt(1, MAX_GPUS)
#: Model chunks per pipeline rank: the deepest published models have ~130 layers, so 1024 chunks is no limit.
VIRTUAL_STAGES = BoundedInt(1, 1024)
#: Sequences per micro-batch: the same bound as the sweep's --batch.
MICRO_BATCH = BoundedInt(1, 10**7)

LAYOUT_KEYS = ("tp", "cp", "pp", "dp", "ep", "virtual_stages", "micro_batch", "zero", "recompute",
               "sequence_parallel", "order", "tp_comm_overlap")


def layout_options(command):
    """Decorator: the layout options, collected into a ``layout`` dict argument."""
    from fabricsim.training.layout import DEFAULT_ORDER, RECOMPUTE

    options = [
        click.option("--tp", type=WIDTH, default=1, show_default=True,
                     help="Tensor-parallel width (inside one NVLink domain)."),
        click.option("--cp", type=WIDTH, default=1, show_default=True,
                     help="Context-parallel width (ring attention over the sequence)."),
        click.option("--pp", type=WIDTH, default=1, show_default=True, help="Pipeline stages."),
        click.option("--dp", type=WIDTH, default=None,
                     help="Data-parallel replicas [default: GPUs / (tp x cp x pp)]."),
        click.option("--ep", type=WIDTH, default=1, show_default=True,
                     help="Expert-parallel width for MoE models (divides dp x cp and the experts; 1 for dense models)."),
        click.option("--virtual-stages", type=VIRTUAL_STAGES, default=1, show_default=True,
                     help="Model chunks per pipeline rank (interleaved 1F1B when > 1)."),
        click.option("--micro-batch", type=MICRO_BATCH, default=1, show_default=True, help="Sequences per micro-batch."),
        click.option("--zero", type=click.IntRange(0, 3), default=0, show_default=True,
                     help="0 plain DP; 1 sharded optimizer (Megatron distributed optimizer); 2 + gradients; "
                          "3 + parameters (FSDP)."),
        click.option("--recompute", type=click.Choice(RECOMPUTE), default="none", show_default=True,
                     help="Activation recomputation."),
        click.option("--sequence-parallel/--no-sequence-parallel", default=None,
                     help="Megatron sequence parallelism with TP [default: on when --tp > 1]."),
        click.option("--order", default=DEFAULT_ORDER, show_default=True,
                     help="Rank order of the dimensions, fastest first."),
        click.option("--tp-comm-overlap/--no-tp-comm-overlap", default=False, show_default=True,
                     help="Overlap TP communication with the GEMMs (Megatron --tp-comm-overlap)."),
    ]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        layout = {k: kwargs.pop(k) for k in LAYOUT_KEYS}
        if layout["dp"] is None:
            del layout["dp"]
        return command(*args, layout=layout, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
