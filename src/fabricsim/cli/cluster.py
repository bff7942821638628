"""``fabricsim cluster JOBS.toml``: several jobs on one fabric, each step alone and together."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
def cluster(scenario, as_json) -> None:
    """Run the jobs of SCENARIO (a TOML file: fabric, faults, [[job]] tables) on one shared fabric.

    Reports each job's step time alone and together (the slowdown from sharing) and the links that
    several jobs load, most loaded first. See the README for the file's keys.
    """
    from fabricsim.experiments import format_cluster, run_scenario

    result = run_scenario(scenario)
    if as_json:
        click.echo(json.dumps({
            "topology": result.topology, "gpus": result.gpus,
            "jobs": [{"name": j.name, "gpus": len(j.ranks), "ranks": j.ranks, "step_alone_s": j.step_alone,
                      "step_together_s": j.step_together, "slowdown": j.slowdown, "dp_comm_alone_s": j.dp_alone,
                      "dp_comm_together_s": j.dp_together} for j in result.jobs],
            "shared_links": [{"link": n, "offered_load": load, "by_job": by} for n, load, by in result.shared_links]},
            indent=1))
        return
    for line in format_cluster(result):
        click.echo(line)
