"""Writing an output file whole: readers see the old file or the new one, never half of one.

Every file fabricsim writes (sweep tables, plots, traces, plans, topologies, calibrations, reports) goes
through :func:`replacing`: the content is written to a temporary file in the target's directory, flushed
to disk, given the permissions an ordinary ``open`` would have given it, and renamed over the target.
A rename within one directory is atomic on POSIX, so a kill, a full disk or an exception at any point
leaves the previous file (or no file) and removes the temporary one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["replacing", "write_whole", "save_figure", "new_temporary", "publish"]


def new_temporary(path) -> str:
    """Create an empty temporary file beside ``path`` (same directory, so the final rename is atomic).

    It is created with mode 0o666, which the process umask trims, as ``open`` would create ``path``
    itself; no umask is read or set (that would race with other threads)."""
    target = Path(os.path.abspath(path))  # not resolved: the rename replaces ``path`` itself, in its directory
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def publish(tmp: str, path) -> None:
    """Rename the finished temporary file ``tmp`` (from :func:`new_temporary`) over ``path``; a file that
    already exists keeps its permissions, a new one has those ``new_temporary`` gave it."""
    try:
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    except OSError:  # no such file (or a link loop, which the rename replaces): keep new_temporary's mode
        pass
    os.replace(tmp, path)


@contextlib.contextmanager
def replacing(path, mode: str = "w", **open_kwargs):
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is "w" (text, UTF-8 unless ``encoding`` is given) or "wb". On any exception the temporary
    file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    tmp = new_temporary(path)
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_whole(path, content: str | bytes, **open_kwargs) -> None:
    """Write ``content`` (text or bytes) to ``path`` through :func:`replacing`."""
    with replacing(path, "wb" if isinstance(content, bytes) else "w", **open_kwargs) as fh:
        fh.write(content)


def save_figure(fig, path, **savefig_kwargs) -> None:
    """Save a matplotlib figure to ``path`` through :func:`replacing`, in the format its suffix names.

    Raises
    ------
    ValueError
        ``path`` has no suffix (matplotlib would add one and write another file than ``path``).
    """
    fmt = Path(path).suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"cannot tell the figure format of {str(path)!r}: give it a suffix such as .png or .svg")
    with replacing(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kwargs)
