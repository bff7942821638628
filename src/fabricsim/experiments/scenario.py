"""Shared-cluster scenario files (TOML): the fabric, its faults, and the jobs.

::

    topology = "gb200-nvl72-ib"      # preset or topology file
    gpus = 1152                      # presets: size of the fabric
    oversubscription = 2.0           # fabric options: network, oversubscription, planes
    placement = "scattered"          # default for jobs: packed, scattered
    faults = ["spine0"]              # optional, fault syntax of --fail/--degrade (timed ones too)

    [[job]]
    name = "a"
    gpus = 576
    model = "llama3-8b"              # preset or model TOML file
    algorithm = "ring"               # data-parallel all-reduce
    tp = 1                           # and precision, mfu, scaling, batch, global_batch, bucket, grad_bytes
    # the parallel layout of `fabricsim step`: cp, pp, dp, ep, virtual_stages, micro_batch, zero (0-2),
    # recompute, sequence_parallel, order, tp_comm_overlap
    # placement = "packed" | "scattered", or ranks = "0-575" (or a list)

Unknown keys are refused by name.
"""

from __future__ import annotations

import os

from fabricsim.errors import ConfigError
from fabricsim.experiments.cluster import ClusterResult, Job, run_cluster
from fabricsim.tomlfile import read_toml

__all__ = ["load_scenario", "run_scenario"]

_TOP = {"topology", "gpus", "network", "oversubscription", "planes", "placement", "faults", "job"}
_LAYOUT = ("tp", "cp", "pp", "dp", "ep", "virtual_stages", "micro_batch", "zero", "recompute", "sequence_parallel",
           "order", "tp_comm_overlap")
_JOB = {"name", "gpus", "model", "algorithm", "precision", "mfu", "scaling", "batch", "global_batch", "bucket",
        "grad_bytes", "placement", "ranks", *_LAYOUT}


def load_scenario(path: str) -> tuple:
    """(topology, jobs) of a scenario file, the faults applied to the topology."""
    doc = read_toml(path, "scenario file")
    return scenario_from_dict(doc, source=os.fspath(path))


def scenario_from_dict(doc: dict, *, source: str = "<scenario>") -> tuple:
    from fabricsim.topologies.faults import apply_faults, faults_from_spec
    from fabricsim.topologies.io import PRESETS, resolve

    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_TOP))}")
    name = doc.get("topology", "gb200-nvl72-ib")
    options = {k: doc[k] for k in ("network", "oversubscription", "planes") if k in doc}
    topo = resolve(name, gpus=doc.get("gpus") if name in PRESETS else None, **options)
    entries = doc.get("job", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: no [[job]] tables")
    default = doc.get("placement", "packed")
    jobs = []
    for i, entry in enumerate(entries):
        bad = sorted(set(entry) - _JOB)
        if bad:
            raise ConfigError(f"{source}: job {i}: unknown key {bad[0]!r}; known: {', '.join(sorted(_JOB))}")
        placement = entry["ranks"] if "ranks" in entry else entry.get("placement", default)
        jobs.append(Job(str(entry.get("name", f"job{i}")), _config(entry), entry.get("gpus"), placement))
    faults = faults_from_spec(doc.get("faults", []))
    ranks = None
    if faults:
        from fabricsim.experiments.placement import place

        ranks = sorted(r for rs in place(topo, [(j.gpus, j.placement) for j in jobs]) for r in rs)
        topo = apply_faults(topo, faults, ranks=ranks)
    return topo, jobs


def _config(entry: dict):
    from fabricsim.training import StepConfig, resolve_model
    from fabricsim.units import parse_size

    kw = {k: entry[k] for k in ("algorithm", "precision", "mfu", "scaling", "batch", "global_batch", *_LAYOUT)
          if k in entry}
    if "bucket" in entry:
        kw["bucket_bytes"] = parse_size(entry["bucket"])
    if "grad_bytes" in entry:
        kw["bytes_per_grad"] = entry["grad_bytes"]
    return StepConfig(resolve_model(str(entry.get("model", "llama3-8b"))), **kw)


def run_scenario(path: str) -> ClusterResult:
    """Load a scenario file and run it (the library form of ``fabricsim cluster FILE``)."""
    topo, jobs = load_scenario(path)
    return run_cluster(topo, jobs)
