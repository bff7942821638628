"""Sweep files: the axes of a sweep in TOML, so one sweep compares fabrics, models, layouts or faults.

Every key takes one value or a list; a list makes an axis, and the sweep runs the cartesian product of
its axes (one scenario each), every scenario at every size that its topology holds::

    mode = "message"                       # or "step"
    topology = ["dgx-h100-ib", "gb200-nvl72-ib"]
    sizes = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
    algorithms = ["ring", "tree"]
    bytes = ["1GiB"]                        # message mode: all-reduce sizes
    faults = [[], ["spine0"]]               # fault scenarios: lists of fault texts ([] = healthy)
    estimate = "simulate"                   # or "analytic" (message mode, closed form: fast)

    # step mode: model = ["llama3-8b", "llama3-70b"], tp = [1, 4], precision, mfu, batch, global_batch,
    # bucket, scaling, curve_gpus; fabric options: network, oversubscription, planes

``sizes`` and ``algorithms`` (and ``bytes``) are lists of one axis each, not products of scenarios.
Unknown keys are refused by name.
"""

from __future__ import annotations

import itertools
import os

from fabricsim.errors import ConfigError
from fabricsim.tomlfile import read_toml

__all__ = ["load_sweep_file", "specs_from_dict"]

_STEP = ("model", "precision", "mfu", "tp", "scaling", "batch", "global_batch", "bucket", "grad_bytes")
_TOPO = ("network", "oversubscription", "planes")
_AXES = ("topology", "faults") + _STEP + _TOPO
_KNOWN = set(_AXES) | {"mode", "sizes", "algorithms", "bytes", "estimate", "curve_gpus"}


def load_sweep_file(path: str) -> list:
    """The scenarios (SweepSpec list) of a TOML sweep file."""
    doc = read_toml(path, "sweep file")
    return specs_from_dict(doc, source=os.fspath(path))


def specs_from_dict(doc: dict, *, source: str = "<sweep>") -> list:
    from fabricsim.sweep import DEFAULT_ALGORITHMS, DEFAULT_TOPOLOGY, SweepSpec, default_sizes
    from fabricsim.topologies.io import PRESETS
    from fabricsim.units import parse_size

    unknown = sorted(set(doc) - _KNOWN)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KNOWN))}")
    mode = doc.get("mode", "step")
    sizes = tuple(_list(doc.get("sizes", default_sizes())))
    algorithms = tuple(_list(doc.get("algorithms", list(DEFAULT_ALGORITHMS))))
    message = tuple(parse_size(b) for b in _list(doc.get("bytes", ["1GiB"])))
    faults = doc.get("faults", [])
    fault_axis = faults if faults and all(isinstance(f, list) for f in faults) else [faults]
    axes = {k: _list(doc[k]) for k in _AXES if k in doc and k != "faults"}
    axes.setdefault("topology", [DEFAULT_TOPOLOGY])
    specs = []
    names = list(axes)
    for combo in itertools.product(*(axes[k] for k in names), fault_axis):
        values = dict(zip(names, combo[:-1]))
        topology = values["topology"]
        cap = PRESETS[topology].max_gpus if topology in PRESETS else None
        fit = tuple(s for s in sizes if cap is None or s <= cap)
        if not fit:
            raise ConfigError(f"{source}: no size fits {topology} (at most {cap} GPUs)")
        step = _step_config(values) if mode == "step" else None
        options = {k: values[k] for k in _TOPO if k in values}
        curve = doc.get("curve_gpus")
        specs.append(SweepSpec(topology=topology, sizes=fit, algorithms=algorithms, mode=mode, step=step,
                               message_sizes=message, curve_gpus=curve if mode == "step" and curve in fit else None,
                               topology_options=options, faults=tuple(str(f) for f in combo[-1]),
                               estimate=doc.get("estimate", "simulate")))
    return specs


def _list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _step_config(values: dict):
    from fabricsim.training import StepConfig, resolve_model
    from fabricsim.units import parse_size

    kw = {k: values[k] for k in ("precision", "mfu", "tp", "scaling", "batch", "global_batch") if k in values}
    if "bucket" in values:
        kw["bucket_bytes"] = parse_size(values["bucket"])
    if "grad_bytes" in values:
        kw["bytes_per_grad"] = values["grad_bytes"]
    return StepConfig(resolve_model(values.get("model", "llama3-8b")), **kw)
