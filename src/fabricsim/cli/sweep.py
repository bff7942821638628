"""``fabricsim sweep``: training steps (or all-reduces) from one node to thousands of GPUs, in parallel."""

from __future__ import annotations

import sys

import click

from fabricsim.cli.fabric_options import preset_options
from fabricsim.cli.faults import fault_options, fault_texts
from fabricsim.cli.layout_options import layout_options
from fabricsim.cli.params import (FLOPS, GPUS, MAX_GPUS, MFU, BoundedInt, IntList, Size,
                                  SizeList, calibration_option)
from fabricsim.errors import ConfigError
from fabricsim.units import KiB, format_size, parse_size

BUCKET = Size(minimum=KiB)
BATCH = BoundedInt(1, 10**7)

DEFAULT_OUT = "./fabricsim-out"


def step_options(command):
    """Options that describe the training step (shared by ``sweep`` and ``step``)."""
    from fabricsim.training.step import DEFAULT_GLOBAL_BATCH, DEFAULT_MFU

    options = [
        click.option("--model", "-m", default="llama3-8b", show_default=True,
                     help="Model preset (llama3-8b, llama3-70b, llama3-405b, gpt3-175b) or a TOML model file."),
        click.option("--precision", default="bf16", show_default=True, help="Tensor-core precision of the compute."),
        click.option("--mfu", type=MFU, default=DEFAULT_MFU,
                     help="Share of dense peak the model FLOPs reach [default: the GPU generation's documented "
                          "efficiency]."),
        click.option("--scaling", type=click.Choice(["weak", "strong"]), default="weak", show_default=True,
                     help="weak: fixed sequences per data-parallel replica; strong: fixed global batch."),
        click.option("--batch", type=BATCH, default=2, show_default=True,
                     help="Weak scaling: sequences per data-parallel replica per step."),
        click.option("--global-batch", type=BATCH, default=DEFAULT_GLOBAL_BATCH, show_default=True,
                     help="Strong scaling: sequences per step in all."),
        click.option("--bucket", type=BUCKET, default="25MiB", show_default=True,
                     help="Gradient bucket size (at least 1 KiB)."),
        click.option("--grad-bytes", type=BoundedInt(1, 16), default=2, show_default=True,
                     help="Bytes per gradient (bf16: 2)."),
        click.option("--attention-flops/--no-attention-flops", default=False, show_default=True,
                     help="Count attention FLOPs (12 L h s per token) on top of 6 x parameters."),
    ]
    for option in reversed(options):
        command = option(command)
    return layout_options(command)


def peak_options(command):
    """The GPU's peak compute, for fabric files that name no GPU preset (``step`` and ``sweep``)."""
    from fabricsim.hardware import GPUS as GPU_PRESETS

    command = click.option("--peak-flops", type=FLOPS, default=None,
                           help="Per-GPU dense peak FLOP/s at --precision (e.g. '2250 TFLOPS'), instead of the "
                                "fabric's GPU preset.")(command)
    command = click.option("--gpu", "gpu_name", type=click.Choice(sorted(GPU_PRESETS), case_sensitive=False),
                           default=None, help="GPU preset whose peak FLOP/s to use (for fabric files).")(command)
    return command


def peak_flops_of(peak_flops, gpu_name, precision):
    """Peak FLOP/s from --peak-flops or --gpu (None: the fabric's own GPU preset)."""
    if peak_flops is not None and gpu_name is not None:
        raise click.UsageError("give --peak-flops or --gpu, not both")
    if gpu_name is not None:
        from fabricsim.hardware import gpu_preset

        return gpu_preset(gpu_name).peak_flops(precision)
    return peak_flops


def make_step_config(model, precision, mfu, layout, scaling, batch, global_batch, bucket, grad_bytes,
                     attention_flops, algorithm="ring", peak_flops=None):
    from fabricsim.training import StepConfig, resolve_model

    return StepConfig(resolve_model(model), algorithm=algorithm, precision=precision, mfu=mfu, scaling=scaling,
                      batch=batch, global_batch=global_batch, bucket_bytes=parse_size(bucket),
                      bytes_per_grad=grad_bytes, attention_flops=attention_flops, peak_flops=peak_flops, **layout)


@click.command()
@click.option("--topology", "-t", default="gb200-nvl72-ib", show_default=True,
              help="Topology preset family (sized to each point) or a topology file (one size).")
@click.option("--sizes", type=IntList(), default=None,
              help="Comma-separated GPU counts [default: 8 to --max-gpus doubling, plus 72, 576, 4608].")
@click.option("--max-gpus", type=GPUS, default=8192, show_default=True, help="Largest default size.")
@click.option("--algorithms", "-a", default="ring,tree,hierarchical,nvls", show_default=True,
              help="All-reduce algorithms; each runs where the fabric has it ('auto' picks per size).")
@step_options
@click.option("--mode", type=click.Choice(["step", "message"]), default="step", show_default=True,
              help="step: one training step per point; message: all-reduces of --bytes.")
@click.option("--bytes", "message_bytes", type=SizeList(), default="1M,16M,256M,1G", show_default=True,
              help="Message mode: comma-separated all-reduce sizes.")
@click.option("--curve-gpus", type=BoundedInt(0, MAX_GPUS), default=None,
              help="Step mode: GPUs of the busbw-vs-message-size curve [default: 576 if swept]; 0 for none.")
@preset_options
@click.option("--out", "-o", "out_dir", default=DEFAULT_OUT, show_default=True, help="Directory for CSV, JSON, plots.")
@click.option("--jobs", "-j", type=BoundedInt(1, 256), default=None, help="Worker processes [default: all cores].")
@calibration_option
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG and SVG plots.")
@click.option("--file", "sweep_file", type=click.Path(dir_okay=False), default=None,
              help="Take the sweep's axes from a TOML file (topologies, sizes, models, layouts, algorithms, fault "
                   "scenarios; see README); other options describing the points are ignored.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Finish the sweep in this directory: run only the points its journal lacks.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786",
              help="Run the points on this Dask scheduler (pip install 'fabricsim[dask]') instead of local cores.")
@click.option("--estimate", type=click.Choice(["simulate", "analytic"]), default="simulate", show_default=True,
              help="Message mode: simulate, or the closed-form estimate (fast, for very large sweeps).")
@peak_options
@fault_options
def sweep(topology, sizes, max_gpus, algorithms, model, precision, mfu, layout, scaling, batch, global_batch, bucket,
          grad_bytes, attention_flops, mode, message_bytes, curve_gpus, fabric, out_dir, jobs,
          plots, peak_flops, gpu_name, sweep_file, resume_dir, scheduler, estimate, fail, degrade, fail_at,
          degrade_at, calibration=None) -> None:
    """Simulate a training step (or all-reduces) at every cluster size and algorithm.

    With no arguments: Llama 3 8B, data parallel, on GB200 NVL72 racks joined by 400G InfiniBand, from 8
    to 8,192 GPUs, ring, tree, hierarchical and NVLS all-reduce; writes step.csv, step.json, busbw.csv,
    busbw.json, meta.json and the plots into ./fabricsim-out (message mode: message.csv and message.json
    in the collective commands' columns).

    Every finished point is journaled at once: an interrupted sweep keeps it, exits non-zero with a
    one-line summary, and --resume DIR finishes it with the same files as an uninterrupted run.
    """
    from fabricsim.sweep import SweepSpec, default_sizes
    from fabricsim.topologies.io import PRESETS

    if resume_dir or sweep_file:
        if resume_dir:
            from fabricsim.sweep_store import SweepStore

            specs, out_dir = SweepStore(resume_dir).load_plan(), resume_dir
        else:
            from fabricsim.sweep_file import load_sweep_file

            specs = load_sweep_file(sweep_file)
        _run(specs, out_dir, jobs=jobs, scheduler=scheduler, plots=plots, resume=bool(resume_dir))
        return
    if sizes is not None:
        size_list = sizes
    else:
        cap = PRESETS[topology].max_gpus if topology in PRESETS else None
        size_list = tuple(s for s in default_sizes(max_gpus) if cap is None or s <= cap)
        if not size_list:
            raise ConfigError(f"no default size fits {topology}; give --sizes")
        if topology not in PRESETS:
            from fabricsim.topologies.io import resolve

            size_list = (resolve(topology).num_gpus,)
    algos = tuple(a for a in algorithms.replace(" ", "").split(",") if a)
    config = make_step_config(model, precision, mfu, layout, scaling, batch, global_batch, bucket, grad_bytes,
                              attention_flops, peak_flops=peak_flops_of(peak_flops, gpu_name, precision)) \
        if mode == "step" else None
    if curve_gpus is None:
        curve_gpus = 576 if 576 in size_list else None
    curve_gpus = curve_gpus or None
    msg_sizes = tuple(message_bytes)
    spec = SweepSpec(topology=topology, sizes=size_list, algorithms=algos, mode=mode, step=config,
                     message_sizes=msg_sizes, curve_gpus=curve_gpus if mode == "step" else None,
                     topology_options=fabric, faults=fault_texts(fail, degrade, fail_at, degrade_at),
                     estimate=estimate, calibration=calibration)
    from fabricsim.sweep import plan_sweep

    planned = plan_sweep(spec)  # every size checked before the first one runs
    what = (f"{config.model.name}, {config.scaling} scaling, TP {config.tp} CP {config.cp} PP {config.pp}"
            if mode == "step"
            else f"all-reduce of {', '.join(format_size(s) for s in msg_sizes)}")
    click.echo(f"sweep: {topology}, {len(planned)} sizes {planned[0]}..{planned[-1]} GPUs, {', '.join(algos)}; "
               f"{what}", err=True)
    _run([spec], out_dir, jobs=jobs, scheduler=scheduler, plots=plots)


def _run(specs, out_dir, *, jobs, scheduler, plots, resume=False) -> None:
    """Run the sweep with a progress bar, then print its table, notes and the files written."""
    from fabricsim.sweep import run_and_write

    mode = specs[0].mode
    total = sum(len(set(s.sizes)) + (s.mode == "step" and s.curve_gpus is not None) for s in specs)
    with click.progressbar(length=total, label="simulating", file=sys.stderr,
                           item_show_func=lambda g: f"{g} GPUs done" if g else "") as bar:
        def progress(point):
            bar.update(1, point["gpus"])
        writer = run_and_write(specs, out_dir, jobs=jobs, scheduler=scheduler, progress=progress, resume=resume)
    for line in format_table(writer.rows, mode):
        click.echo(line)
    skipped: dict[str, list[int]] = {}
    for g, algs in writer.skipped.items():
        for a in algs:
            skipped.setdefault(a, []).append(g)
    for a, gs in skipped.items():
        click.echo(f"note: {a} not available at {_ranges(gs)} GPUs (needs several NVLink domains or NVLink "
                   "switches)" if a in ("hierarchical", "nvls") else f"note: {a} skipped at {_ranges(gs)} GPUs",
                   err=True)
    if not writer.rows:
        raise ConfigError("no point could run: none of the algorithms is available on this fabric")
    written = list(writer.paths.values())
    if plots:
        from fabricsim.plots import read_rows, write_plots

        curve = read_rows(writer.paths["curve"]) if "curve" in writer.paths and writer.curve else None
        written += write_plots(read_rows(writer.paths["rows"]), out_dir, curve_rows=curve)
    click.echo(f"wrote {', '.join(written)}", err=True)


def _ranges(values) -> str:
    values = sorted(values)
    return f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}"


def format_table(rows, mode: str) -> list[str]:
    """The summary table printed at the end of a sweep (a scenario column when a sweep file compares
    fabrics or fault sets)."""
    lines = _format_table(rows, mode)
    names = [" ".join(str(x) for x in (r.get("topology"), r.get("faults")) if x) for r in rows]
    if len(set(names)) <= 1:
        return lines
    width = max(len(n) for n in names) + 2
    return [f"{'scenario':<{width}}{lines[0]}", "-" * (width + len(lines[1]))] + \
        [f"{n:<{width}}{line}" for n, line in zip(names, lines[2:])]


def _format_table(rows, mode: str) -> list[str]:
    from fabricsim.units import format_time

    if mode == "step":
        head = (f"{'GPUs':>6} {'TP':>3} {'algorithm':<13}{'step':>10}{'compute':>10}{'comm':>10}{'exposed':>10}"
                f"{'exp %':>7}{'busbw GB/s':>11}{'MFU %':>7}{'Mtok/s':>9}{'scal %':>7}")
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(f"{r['gpus']:>6} {r['tp']:>3} {r['algorithm']:<13}{format_time(r['step_time_s']):>10}"
                         f"{format_time(r['compute_time_s']):>10}{format_time(r['comm_time_s']):>10}"
                         f"{format_time(r['exposed_comm_s']):>10}{100 * r['exposed_share']:>7.1f}"
                         f"{r['busbw_GBps']:>11.1f}{100 * r['mfu']:>7.1f}{r['tokens_per_s'] / 1e6:>9.2f}"
                         f"{100 * r['scaling_eff']:>7.1f}")
        return lines
    head = f"{'GPUs':>6} {'algorithm':<13}{'size':>10}{'time':>11}{'algbw GB/s':>12}{'busbw GB/s':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['gpus']:>6} {r['algorithm']:<13}{format_size(r['size_bytes']):>10}"
                     f"{format_time(r['time_us'] * 1e-6):>11}"
                     f"{r['algbw_GBps']:>12.1f}{r['busbw_GBps']:>12.1f}")
    return lines
