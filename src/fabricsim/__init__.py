"""fabricsim: a flow-level simulator of multi-GPU cluster interconnects.

Units everywhere: seconds, bytes, bytes per second per direction (see ``fabricsim.units``).

The main entry points are importable from here; they load on first use, so ``import fabricsim`` stays
cheap and the package's layering (topologies below collectives below training) is untouched:

>>> import fabricsim
>>> runner = fabricsim.AllreduceRunner(fabricsim.build("dgx-h100"))
>>> bool(runner.run(2**30, "ring").busbw < 450e9)   # below NVLink 4 line rate
True
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fabricsim.errors import ConfigError, FabricsimError, InfeasibleError, TopologyError

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily through __getattr__
    from fabricsim.collectives.runner import CollectiveRunner
    from fabricsim.collectives.select import AllreduceRunner
    from fabricsim.topologies.io import build, load, resolve
    from fabricsim.training.models import resolve_model
    from fabricsim.training.step import StepConfig, simulate_step

__all__ = [
    "FabricsimError", "TopologyError", "ConfigError", "InfeasibleError", "__version__",
    "build", "load", "resolve", "AllreduceRunner", "CollectiveRunner", "StepConfig", "simulate_step", "resolve_model",
]
__version__ = "0.1.0"

_LAZY = {
    "build": "fabricsim.topologies.io",
    "load": "fabricsim.topologies.io",
    "resolve": "fabricsim.topologies.io",
    "AllreduceRunner": "fabricsim.collectives.select",
    "CollectiveRunner": "fabricsim.collectives.runner",
    "StepConfig": "fabricsim.training.step",
    "simulate_step": "fabricsim.training.step",
    "resolve_model": "fabricsim.training.models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fabricsim' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
