"""``fabricsim step``: one training step in detail: the layout, where the time goes, every bucket."""

from __future__ import annotations

import click

from fabricsim.cli.fabric_options import preset_options
from fabricsim.cli.faults import fault_options, with_faults
from fabricsim.cli.params import GPUS, BoundedInt, calibration_option
from fabricsim.cli.sweep import make_step_config, peak_flops_of, peak_options, step_options


@click.command()
@click.option("--topology", "-t", default="gb200-nvl72-ib", show_default=True, help="Topology preset or file.")
@click.option("--gpus", "-n", type=GPUS, default=576, show_default=True, help="GPUs (presets only).")
@click.option("--algorithm", "-a", default="ring", show_default=True,
              help="Data-parallel all-reduce: ring, tree, hierarchical, nvls or auto.")
@step_options
@calibration_option
@preset_options
@click.option("--buckets", "show", type=BoundedInt(0, 10**6), default=12, show_default=True,
              help="Bucket rows to print (first and last halves); 0 for all.")
@click.option("--memory-check/--no-memory-check", default=True, show_default=True,
              help="Refuse a layout whose per-GPU memory exceeds the GPU's HBM.")
@click.option("--trace", type=click.Path(dir_okay=False), default=None,
              help="Write the step's Perfetto/Chrome timeline (every stage, micro-batch and collective) to this "
                   "JSON file.")
@peak_options
@fault_options
def step(topology, gpus, algorithm, model, precision, mfu, layout, scaling, batch, global_batch, bucket, grad_bytes,
         attention_flops, fabric, show, memory_check, trace, peak_flops, gpu_name, fail, degrade,
         fail_at, degrade_at, calibration=None) -> None:
    """Simulate one training step and print its timeline, bucket by bucket."""
    from fabricsim.topologies.io import PRESETS, resolve
    from fabricsim.training import check_memory, simulate_step, write_step_trace
    from fabricsim.units import format_size, format_time

    config = make_step_config(model, precision, mfu, layout, scaling, batch, global_batch, bucket, grad_bytes,
                              attention_flops, algorithm=algorithm,
                              peak_flops=peak_flops_of(peak_flops, gpu_name, precision))
    topo = resolve(topology, gpus=gpus if topology in PRESETS else None, **fabric)
    topo = with_faults(topo, fail, degrade, fail_at, degrade_at)
    memory = check_memory(topo, config) if memory_check else None
    from fabricsim.collectives import AllreduceRunner
    runner = AllreduceRunner(topo, calibration=calibration) if calibration else None
    # a timed fault happens once, at its time in the step: the bucket chain is simulated as it runs
    res = simulate_step(topo, config, trace=trace, runner=runner,
                        engine="events" if topo.meta.get("timed_faults") else "fast")
    m = config.model
    click.echo(m.describe())
    click.echo(f"{topo.num_gpus} GPUs on {topo.name or topology}: {res.layout.describe()}, {config.precision} "
               f"peak {res.peak_flops / 1e12:.0f} TFLOPS/GPU, {res.tokens:,.0f} tokens per step"
               + (f", {res.micro_batches} micro-batches per replica" if res.pp > 1 or res.micro_batches > 1 else ""))
    if memory is not None:
        click.echo(f"memory: {memory.describe()}")
    if res.pipeline is None:
        _print_dp_step(res, config, show, format_size, format_time)
    else:
        click.echo("")
        click.echo(f"  {'time by kind (critical stage)':<32}{'seconds':>12}{'share':>8}")
        for kind, seconds in res.breakdown.items():
            click.echo(f"  {kind:<32}{format_time(seconds):>12}{100 * seconds / res.step_time:>7.1f}%")
        click.echo(f"  {'traffic per GPU per step':<32}" + ", ".join(f"{k} {format_size(int(v))}"
                                                                   for k, v in res.traffic.items()))
    click.echo("")
    click.echo(f"step time        {format_time(res.step_time)}")
    click.echo(f"compute          {format_time(res.compute_time)}")
    click.echo(f"exposed          {format_time(res.exposed_comm)} ({100 * res.exposed_share:.1f}% of the step)")
    click.echo(f"MFU              {100 * res.mfu:.1f}%")
    click.echo(f"throughput       {res.tokens_per_s:,.0f} tokens/s")
    if trace:
        write_step_trace(res, trace)
        click.echo(f"wrote {trace}")


def _print_dp_step(res, config, show, format_size, format_time) -> None:
    from fabricsim.collectives import busbw_factor

    m = config.model
    click.echo(f"gradients {format_size(res.grad_bytes)} per GPU in {res.buckets} buckets of "
               f"{format_size(config.bucket_bytes)}, all-reduced with {res.algorithm} over {res.dp} ranks "
               f"({res.tp} group{'s' if res.tp > 1 else ''} at once)")
    if res.tp_allreduce is not None:
        t = res.tp_allreduce
        click.echo(f"TP all-reduce {format_size(t.nbytes)} on {t.ranks} GPUs ({t.algorithm}): {format_time(t.time)}, "
                   f"x {4 * m.layers} per sequence x {res.tokens / m.seq_len / res.dp:g} sequences -> "
                   f"{format_time(res.tp_comm_time)} per step, exposed")
    click.echo("")
    rows = [("forward", 0.0, res.forward_time), ("backward", res.forward_time, res.forward_time + res.backward_time)]
    for name, a, b in rows:
        click.echo(f"  {name:<10}{format_time(a):>11} -> {format_time(b):>11}")
    if res.buckets:
        click.echo(f"\n  {'bucket':>6}{'size':>11}{'ready':>11}{'start':>11}{'end':>11}{'all-reduce':>12}{'busbw GB/s':>12}")
        idx = list(range(res.buckets))
        if show and res.buckets > show:
            idx = idx[:show // 2] + [None] + idx[-(show - show // 2):]
        for i in idx:
            if i is None:
                click.echo(f"  {'...':>6}")
                continue
            d = float(res.bucket_end[i] - res.bucket_start[i])
            size = int(res.bucket_sizes[i])
            click.echo(f"  {i:>6}{format_size(size):>11}{format_time(float(res.bucket_ready[i])):>11}"
                       f"{format_time(float(res.bucket_start[i])):>11}{format_time(float(res.bucket_end[i])):>11}"
                       f"{format_time(d):>12}{size / d * busbw_factor(res.dp) / 1e9 if d > 0 else 0.0:>12.1f}")
    click.echo(f"\ncommunication    {format_time(res.comm_time)} (TP {format_time(res.tp_comm_time)}, "
               f"DP {format_time(res.dp_comm_time)}); DP busbw {res.busbw / 1e9:.1f} GB/s")
