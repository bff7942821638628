"""Reading a user's TOML file (a sweep file, a scenario) with one clear error for every way it can fail."""

from __future__ import annotations

import os

from fabricsim.errors import ConfigError

__all__ = ["read_toml"]


def read_toml(path, what: str) -> dict:
    """The document in the TOML file ``path``; ConfigError naming ``what`` (e.g. "sweep file") and the path
    when it is missing, unreadable or not valid TOML."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {os.fspath(path)!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {os.fspath(path)!r}: {exc}") from None
