"""plots: every figure from hand-made rows, PNG and SVG, and clear refusals of bad files."""

import pytest

from fabricsim.errors import ConfigError
from fabricsim.plots import (plot_busbw_vs_size, plot_exposed_share, plot_scaling_efficiency, plot_step_time,
                             read_rows, write_plots)


def step_rows():
    rows = []
    for g in (8, 16, 64, 72, 128):
        for k, a in enumerate(("ring", "tree", "hierarchical")):
            if a == "hierarchical" and g < 128:
                continue
            step = 1.0 + k * 0.01 * g
            rows.append({"topology": "t", "model": "m", "precision": "bf16", "scaling": "weak", "gpus": g, "tp": 1,
                         "algorithm": a, "step_time_s": step, "compute_time_s": 1.0, "exposed_share": (step - 1) / step,
                         "scaling_eff": 1 / step, "bucket_bytes": 25 * 2**20})
    return rows


def message_rows():
    return [{"topology": "t", "gpus": 16, "algorithm": a, "size_bytes": b, "busbw_GBps": b / 2**24 + k}
            for k, a in enumerate(("ring", "nvls")) for b in (2**20, 2**24, 2**30)]


def test_plot_functions_draw_lines_and_titles():
    ax = plot_step_time(step_rows())
    assert len(ax.get_lines()) == 4  # three algorithms + compute floor
    assert "m on t" in ax.get_title() and "log" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()][:3] == ["ring", "tree", "hierarchical"]
    assert "%" in plot_exposed_share(step_rows()).get_ylabel()
    assert "%" in plot_scaling_efficiency(step_rows()).get_ylabel()
    ax = plot_busbw_vs_size(message_rows())
    assert "GB/s" in ax.get_ylabel() and [t.get_text() for t in ax.get_xticklabels()] == ["1 MiB", "16 MiB", "1 GiB"]


def test_plot_on_given_axes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert plot_step_time(step_rows(), ax=ax) is ax
    plt.close(fig)


def test_write_plots_png_and_svg(tmp_path):
    paths = write_plots(step_rows(), tmp_path, curve_rows=message_rows())
    names = sorted(p.split("/")[-1] for p in paths)
    assert names == sorted(f"{s}.{e}" for s in ("step_time", "exposed_share", "scaling_efficiency", "busbw_vs_size")
                           for e in ("png", "svg"))


def test_write_plots_leaves_the_figures_of_other_rows_alone(tmp_path):
    """``fabricsim plot busbw.csv`` next to a sweep's step figures must not delete them."""
    write_plots(step_rows(), tmp_path)
    write_plots(message_rows(), tmp_path)
    assert {"step_time.png", "busbw_vs_size.png"} <= {p.name for p in tmp_path.iterdir()}


def test_read_rows_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_rows(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="no sweep rows"):
        read_rows(bad)
    bad.write_text("gpus,algorithm,step_time_s\n8,ring,fast\n")
    with pytest.raises(ConfigError, match="not a number"):
        read_rows(bad)
    # a negative time or rate is no result a sweep writes: refused, not drawn
    for column, value in (("step_time_s", "-5"), ("busbw_GBps", "-0.5"), ("gpus", "0"), ("step_time_s", "inf")):
        row = {"gpus": "8", "algorithm": "ring", "step_time_s": "1.5", "compute_time_s": "1.0",
               "exposed_share": "0.1", "busbw_GBps": "3.0", column: value}
        bad.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
        with pytest.raises(ConfigError, match=f"line 2: {column} = '{value}' is out of range"):
            read_rows(bad)
    bad.write_text("gpus,algorithm,step_time_s,compute_time_s,exposed_share,root\n8,ring,1.5,1.0,0.0,-1\n")
    assert read_rows(bad)[0]["root"] == -1 and read_rows(bad)[0]["exposed_share"] == 0.0
