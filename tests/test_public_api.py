"""The public API is fully annotated (``py.typed`` is shipped): every function and every public method of a
class that ``fabricsim`` or one of its packages exports in ``__all__`` annotates each parameter and its
return (``__init__`` excepted for the return)."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["fabricsim", "fabricsim.collectives", "fabricsim.experiments", "fabricsim.simulator",
            "fabricsim.topologies", "fabricsim.training", "fabricsim.validation"]


def _unannotated(func, name: str) -> list[str]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature
        return []
    out = [f"{name}({p})" for p, v in sig.parameters.items()
           if p not in ("self", "cls") and v.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty and not name.endswith("__init__"):
        out.append(f"{name} -> ?")
    return out


def _callables(obj, name: str):
    if inspect.isfunction(obj):
        yield obj, name
    elif inspect.isclass(obj) and obj.__module__.startswith("fabricsim"):
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if inspect.isfunction(member) and not (attr == "__init__" and hasattr(obj, "__dataclass_fields__")):
                yield member, f"{name}.{attr}"


@pytest.mark.parametrize("package", PACKAGES)
def test_public_api_is_fully_annotated(package):
    module = importlib.import_module(package)
    missing = [m for export in module.__all__
               for func, name in _callables(getattr(module, export), f"{package}.{export}")
               for m in _unannotated(func, name)]
    assert missing == []


def test_the_check_sees_a_missing_annotation():
    def half(x, y: int):
        return x

    assert _unannotated(half, "half") == ["half(x)", "half -> ?"]
