"""Figures of sweep results: step time, exposed communication, scaling efficiency, busbw.

This module imports nothing from the rest of fabricsim above ``errors`` and reads the sweep's CSV columns
itself (see ``fabricsim.sweep.STEP_COLUMNS`` and ``MESSAGE_COLUMNS``). matplotlib is imported inside each
function, with the Agg backend, and every plot function takes ``ax=None`` (a new figure when None) and
returns the axes.
"""

from __future__ import annotations

import csv
import math
import os

from fabricsim.atomic_file import save_figure
from fabricsim.errors import ConfigError

__all__ = ["PLOT_FILES", "read_rows", "plot_step_time", "plot_exposed_share", "plot_scaling_efficiency",
           "plot_busbw_vs_size", "plot_busbw_vs_gpus", "plot_step_breakdown", "breakdown_columns", "write_plots"]

#: Every file ``write_plots`` may write: a sweep's fresh start removes them from its folder, so it never
#: mixes one run's figures with another's (``fabricsim plot`` leaves the figures of other CSVs alone).
PLOT_FILES = tuple(f"{stem}.{ext}" for stem in ("step_time", "exposed_share", "scaling_efficiency", "step_breakdown",
                                                 "busbw_vs_gpus", "busbw_vs_size") for ext in ("png", "svg"))

_STYLE = {"ring": ("tab:blue", "o"), "tree": ("tab:orange", "s"), "hierarchical": ("tab:green", "^"),
          "nvls": ("tab:red", "D")}
_INTS = {"gpus", "tp", "dp", "buckets", "bucket_bytes", "grad_bytes", "size_bytes", "count", "root", "wrong", "cp",
         "pp", "ep", "virtual_stages",
         "micro_batch", "micro_batches", "zero"}
_TEXT = {"topology", "model", "precision", "scaling", "algorithm", "protocol", "recompute", "order", "layout",
         "source", "schedule", "faults", "collective", "type", "redop"}


# columns each kind of row must fill in every row (what the figures read)
_NEEDED = {"step": ("gpus", "algorithm", "step_time_s", "compute_time_s", "exposed_share"),
           "message": ("gpus", "algorithm", "size_bytes", "busbw_GBps")}


def read_rows(path) -> list[dict]:
    """Rows of a sweep CSV with numbers converted.

    Raises
    ------
    ConfigError
        The file is missing, binary, not a sweep's CSV, or a row is cut short (fewer fields than the
        header, as when a run was interrupted mid-row), misses a value a figure needs, or holds a number
        no sweep writes (not finite, negative, fewer than one GPU).
    """
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ConfigError(f"results file {os.fspath(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read results file {os.fspath(path)!r}: {exc}") from None
    if not rows or "gpus" not in rows[0] or "algorithm" not in rows[0]:
        raise ConfigError(f"{os.fspath(path)!r} holds no sweep rows (expected columns gpus, algorithm, ...)")
    if "bytes" in rows[0] and "size_bytes" not in rows[0]:  # message CSVs written before the shared schema
        rows = [{("size_bytes" if k == "bytes" else k): v for k, v in r.items()} for r in rows]
    kind = _kind(rows)
    out = []
    for i, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            fields = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise ConfigError(f"{os.fspath(path)!r} line {i}: the row has {fields} fields where the header has "
                              f"{len(rows[0]) - (None in rows[0])} (a file cut short, or not a sweep's CSV)")
        conv = {}
        for key, value in row.items():
            if key in _TEXT or value in (None, ""):
                conv[key] = value
                continue
            try:
                conv[key] = int(value) if key in _INTS else float(value)
            except (ValueError, OverflowError):
                raise ConfigError(f"{os.fspath(path)!r} line {i}: {key} = {value!r} is not a number") from None
            # every float a sweep writes is a time, share, rate, size or count: none is negative
            low = {"gpus": 1, "root": -1}.get(key, 0)
            if not math.isfinite(conv[key]) or conv[key] < low:
                raise ConfigError(f"{os.fspath(path)!r} line {i}: {key} = {value!r} is out of range")
        empty = [k for k in _NEEDED[kind] if conv.get(k) in (None, "")]
        if empty:
            raise ConfigError(f"{os.fspath(path)!r} line {i}: no value for {empty[0]}")
        out.append(conv)
    return out


def _kind(rows) -> str:
    if "step_time_s" in rows[0]:
        return "step"
    if "busbw_GBps" in rows[0] and "size_bytes" in rows[0]:
        return "message"
    raise ConfigError("rows are neither step rows (step_time_s) nor message rows (size_bytes, busbw_GBps)")


def _axes(ax, size=(7.5, 4.6)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _scenario(rows):
    """Per row, what tells its sweep scenario apart from the others' (topology, faults), or "" if one."""
    keys = [tuple(str(r.get(k) or "") for k in ("topology", "faults")) for r in rows]
    varying = [i for i in range(2) if len({k[i] for k in keys}) > 1]
    return [" ".join(k[i] for i in varying if k[i]) for k in keys]


def _by_algorithm(rows):
    lines: dict[str, list] = {}
    for row, scenario in zip(rows, _scenario(rows)):
        lines.setdefault(f"{scenario}: {row['algorithm']}" if scenario else row["algorithm"], []).append(row)
    for key in lines:
        lines[key].sort(key=lambda r: (r["gpus"], r.get("size_bytes", 0)))
    known = list(_STYLE)
    return dict(sorted(lines.items(), key=lambda kv: (known.index(kv[0].split(":")[-1].strip())
                                                      if kv[0].split(":")[-1].strip() in known else len(known),
                                                      kv[0])))


def _style(algorithm: str):
    return _STYLE.get(algorithm.split(":")[-1].strip(), ("tab:gray", "x"))


def _topologies(rows) -> str:
    return " vs ".join(dict.fromkeys(str(r["topology"]) for r in rows))


def _gpu_axis(ax, rows) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    sizes = sorted({r["gpus"] for r in rows})
    ax.set_xscale("log", base=2)
    lo, hi = sizes[0], sizes[-1]
    ticks = [2**k for k in range(0, 20) if lo <= 2**k <= hi]
    if len(ticks) < 2:
        ticks = sizes
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:,}" for t in ticks])
    ax.set_xlim(lo / 1.25, hi * 1.25)
    ax.set_xlabel("GPUs (log2 scale; markers at every simulated size)")
    ax.grid(True, which="major", alpha=0.3)


def _subtitle(rows) -> str:
    r = rows[0]
    topology = r.get("topology") or "?"
    if "model" in r:
        tp = f", TP {r['tp']}" if (r.get("tp") or 1) > 1 else ""
        bucket = f", {_size(r['bucket_bytes'])} buckets" if r.get("bucket_bytes") not in (None, "") else ""
        return f"{r['model']} on {topology}, {r.get('precision', '?')}, {r.get('scaling', '?')} scaling{tp}{bucket}"
    return topology


def _size(nbytes: float) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= factor:
            value = nbytes / factor
            return f"{value:g} {unit}" if value == int(value) else f"{value:.3g} {unit}"
    return f"{int(nbytes)} B"


def _log_y(ax) -> None:
    """Log y axis labelled with plain numbers (0.7, 2, 10), minor ticks labelled only within one decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda y, _: f"{y:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    if hi / lo < 30:
        ax.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5, 7)))
        ax.yaxis.set_minor_formatter(plain)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _algorithm_lines(ax, rows, x: str, y) -> None:
    """One line per algorithm: column ``x`` against ``y(row)``, in the algorithm's colour and marker."""
    scenarios: list[str] = []
    for label, line in _by_algorithm(rows).items():
        scenario, _, algorithm = label.rpartition(": ")
        if scenario not in scenarios:
            scenarios.append(scenario)
        color, marker = _style(algorithm)
        style = ("-", "--", ":", "-.")[scenarios.index(scenario) % 4]  # one line style per fabric / scenario
        ax.plot([r[x] for r in line], [y(r) for r in line], marker=marker, color=color, label=label, ms=5,
                linestyle=style)


def plot_step_time(rows, ax=None):
    """Step time vs GPUs, one line per algorithm, the compute-only floor dashed (log-log)."""
    ax = _axes(ax)
    _algorithm_lines(ax, rows, "gpus", lambda r: r["step_time_s"])
    floor = {}
    for r in rows:
        floor[r["gpus"]] = r["compute_time_s"]
    xs = sorted(floor)
    ax.plot(xs, [floor[x] for x in xs], "k--", lw=1.4, zorder=5, label="compute only (no communication)")
    _gpu_axis(ax, rows)
    _log_y(ax)
    ax.set_ylabel("step time (s, log scale)")
    ax.set_title(f"Training step time vs cluster size\n{_subtitle(rows)}", fontsize=10)
    ax.legend(title="data-parallel all-reduce", fontsize=8, title_fontsize=8, loc="upper left")
    return ax


def plot_exposed_share(rows, ax=None):
    """Exposed communication as a share of the step (%), one line per algorithm."""
    ax = _axes(ax)
    _algorithm_lines(ax, rows, "gpus", lambda r: 100 * r["exposed_share"])
    _gpu_axis(ax, rows)
    ax.set_ylim(-3, 103)
    ax.set_ylabel("exposed communication (% of step time)")
    ax.set_title(f"Communication not hidden behind backward\n{_subtitle(rows)}", fontsize=10)
    ax.legend(title="data-parallel all-reduce", fontsize=8, title_fontsize=8, loc="upper left")
    return ax


def plot_scaling_efficiency(rows, ax=None):
    """Per-GPU throughput relative to the best algorithm at the smallest size (%)."""
    ax = _axes(ax)
    _algorithm_lines(ax, rows, "gpus", lambda r: 100 * r["scaling_eff"])
    _gpu_axis(ax, rows)
    ax.axhline(100, color="k", lw=0.8, ls=":")
    ax.set_ylim(-3, 108)
    ax.set_ylabel("scaling efficiency (%)\ntokens/s per GPU vs the smallest size")
    ax.set_title(f"Scaling efficiency\n{_subtitle(rows)}", fontsize=10)
    ax.legend(title="data-parallel all-reduce", fontsize=8, title_fontsize=8, loc="lower left")
    return ax


# step-time breakdown: compute, the pipeline bubble, then exposed communication by kind. Each part may come
# under the step's own names (``StepResult.row()``: compute_s, pp_bubble_s, tp_s ...) or the plan's
# (compute_time_s, bubble_s, exposed_<kind>_s); the first present wins.
_PARTS = (
    (("compute_s", "compute_time_s"), "compute", "#9e9e9e"),
    (("pp_bubble_s", "bubble_s"), "PP bubble", "#d9d9d9"),
    (("tp_s", "exposed_tp_s"), "exposed TP", "tab:purple"),
    (("cp_s", "exposed_cp_s"), "exposed CP", "tab:cyan"),
    (("ep_s", "exposed_ep_s"), "exposed EP", "tab:orange"),
    (("pp_p2p_s", "exposed_pp_s"), "exposed PP send/recv", "tab:brown"),
    (("dp_s", "exposed_dp_s"), "exposed DP", "tab:blue"),
)


def breakdown_columns(rows) -> list[str]:
    """The breakdown columns the rows carry, in drawing order (one per part), or [] when they carry no
    breakdown (a compute column and at least one exposed-communication column)."""
    have = set(rows[0]) if rows else set()
    cols = [next(c for c in names if c in have) for names, _, _ in _PARTS if any(c in have for c in names)]
    comm = [c for names, _, _ in _PARTS[2:] for c in names if c in have]
    return cols if comm and cols and cols[0] in _PARTS[0][0] else []


def _part(col: str):
    return next((label, color) for names, label, color in _PARTS if col in names)


def plot_step_breakdown(rows, ax=None):
    """Stacked bars of the step per cluster size: compute, PP bubble, exposed TP, CP, EP, PP and DP
    communication (one bar per size and algorithm); the simulated step time as a tick above each bar."""
    cols = breakdown_columns(rows)
    if not cols:
        raise ConfigError("rows carry no step-time breakdown (need compute_s and tp_s, dp_s, ... columns, as "
                          "StepResult.row() writes them, or compute_time_s and exposed_<kind>_s)")
    ax = _axes(ax, size=(8.5, 4.8))
    groups = _by_algorithm(rows)
    sizes = sorted({r["gpus"] for r in rows})
    width = 0.8 / len(groups)
    drawn = set()
    for g, (algorithm, line) in enumerate(groups.items()):
        for r in line:
            x = sizes.index(r["gpus"]) + (g - (len(groups) - 1) / 2) * width
            bottom = 0.0
            for col in cols:
                value = r.get(col) or 0.0
                label, color = _part(col)
                ax.bar(x, value, width * 0.92, bottom=bottom, color=color, edgecolor="white", linewidth=0.4,
                       label=None if col in drawn else label)
                drawn.add(col)
                bottom += value
            if "step_time_s" in r:
                ax.plot([x - width * 0.46, x + width * 0.46], [r["step_time_s"]] * 2, color="k", lw=1.2,
                        label=None if "step" in drawn else "step time")
                drawn.add("step")
            if len(groups) > 1:
                ax.text(x, bottom, algorithm, rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"{s:,}" for s in sizes])
    ax.set_xlabel("GPUs")
    ax.set_ylabel("seconds per step")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(f"Where the step goes\n{_subtitle(rows)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    return ax


def plot_busbw_vs_size(rows, ax=None, *, gpus: int | None = None):
    """All-reduce busbw (GB/s, nccl-tests convention) vs message size at one cluster size (default: largest)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax = _axes(ax)
    gpus = gpus or max(r["gpus"] for r in rows)
    rows = [r for r in rows if r["gpus"] == gpus]
    if not rows:
        raise ConfigError(f"no message rows at {gpus} GPUs")
    _algorithm_lines(ax, rows, "size_bytes", lambda r: r["busbw_GBps"])
    sizes = sorted({r["size_bytes"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([_size(s) for s in sizes], rotation=30 if len(sizes) > 8 else 0)
    ax.set_xlabel("message size per GPU (log2 scale)")
    ax.set_ylabel("busbw (GB/s per GPU, one direction)")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"All-reduce bus bandwidth vs message size\n{rows[0]['topology']}, {gpus:,} GPUs "
                 "(busbw = size/time x 2(n-1)/n)", fontsize=10)
    ax.legend(title="algorithm", fontsize=8, title_fontsize=8, loc="upper left")
    return ax


def plot_busbw_vs_gpus(rows, ax=None):
    """All-reduce busbw vs GPUs, one line per algorithm and message size."""
    ax = _axes(ax)
    sizes = sorted({r["size_bytes"] for r in rows})
    styles = ["-", "--", ":", "-."]
    scenarios: list[str] = []
    for algorithm, line in _by_algorithm(rows).items():
        color, marker = _style(algorithm)
        scenario = algorithm.rpartition(": ")[0]
        if scenario not in scenarios:
            scenarios.append(scenario)
        for k, size in enumerate(sizes):
            pts = [r for r in line if r["size_bytes"] == size]
            label = algorithm if len(sizes) == 1 else f"{algorithm}, {_size(size)}"
            ax.plot([r["gpus"] for r in pts], [r["busbw_GBps"] for r in pts], marker=marker, color=color,
                    ls=styles[(k + scenarios.index(scenario)) % len(styles)], label=label, ms=5)
    _gpu_axis(ax, rows)
    _log_y(ax)
    ax.set_ylabel("busbw (GB/s per GPU, one direction; log scale)")
    what = _size(sizes[0]) if len(sizes) == 1 else "several sizes"
    ax.set_title(f"All-reduce bus bandwidth vs cluster size\n{_topologies(rows)}, message {what}", fontsize=10)
    ax.legend(title="algorithm", fontsize=8, title_fontsize=8, loc="lower left")
    return ax


def _save(ax, out_dir: str, stem: str) -> list[str]:
    import matplotlib.pyplot as plt

    fig = ax.figure
    paths = []
    for ext in ("png", "svg"):
        path = os.path.join(out_dir, f"{stem}.{ext}")
        save_figure(fig, path, dpi=130)
        paths.append(path)
    plt.close(fig)
    return paths


def write_plots(rows, out_dir: str, *, curve_rows=None, breakdown: bool | None = None) -> list[str]:
    """Every plot the rows support, as PNG and SVG in ``out_dir``; returns the paths written.

    Step rows give step_time, exposed_share and scaling_efficiency, and step_breakdown when they carry
    breakdown columns (``breakdown=None``; True insists, False skips); message rows (or ``curve_rows``) give
    busbw_vs_size (and busbw_vs_gpus when there are several cluster sizes).
    """
    if rows:
        _kind(rows)  # refuse rows no figure can use before creating the folder
    os.makedirs(out_dir, exist_ok=True)
    paths: list[str] = []
    messages = curve_rows
    if rows:
        if _kind(rows) == "step":
            paths += _save(plot_step_time(rows), out_dir, "step_time")
            paths += _save(plot_exposed_share(rows), out_dir, "exposed_share")
            if all(r.get("scaling_eff") not in (None, "") for r in rows):
                paths += _save(plot_scaling_efficiency(rows), out_dir, "scaling_efficiency")
            if breakdown or (breakdown is None and breakdown_columns(rows)):
                paths += _save(plot_step_breakdown(rows), out_dir, "step_breakdown")
        else:
            messages = rows
            if len({r["gpus"] for r in rows}) > 1:
                paths += _save(plot_busbw_vs_gpus(rows), out_dir, "busbw_vs_gpus")
    if messages and len({r["size_bytes"] for r in messages}) > 1:
        paths += _save(plot_busbw_vs_size(messages), out_dir, "busbw_vs_size")
    return paths
