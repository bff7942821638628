"""Step-time breakdown bars: stacked parts sum to the step, drawn from a sweep CSV by ``fabricsim plot``."""

import csv

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.errors import ConfigError
from fabricsim.plots import breakdown_columns, plot_step_breakdown

KINDS = ("tp", "cp", "ep", "pp", "dp")


def rows(algorithms=("ring",)):
    out = []
    for g in (72, 576, 8192):
        for a in algorithms:
            parts = {"compute_time_s": 1.0, "bubble_s": 0.1 * g / 576,
                     **{f"exposed_{k}_s": 0.01 * (i + 1) * g / 72 for i, k in enumerate(KINDS)}}
            out.append({"topology": "t", "model": "m", "precision": "bf16", "scaling": "strong", "gpus": g, "tp": 8,
                        "algorithm": a, "bucket_bytes": 2**20, "exposed_comm_s": 9.9, **parts,
                        "step_time_s": sum(parts.values()), "exposed_share": 0.5})
    return out


def test_columns_in_drawing_order():
    assert breakdown_columns(rows()) == ["compute_time_s", "bubble_s"] + [f"exposed_{k}_s" for k in
                                                                         ("tp", "cp", "ep", "pp", "dp")]
    assert breakdown_columns([{"gpus": 8, "compute_time_s": 1.0, "exposed_comm_s": 1.0}]) == []
    # the step's own names (StepResult.row()) win over the totals
    step = {"compute_time_s": 2.0, "compute_s": 1.0, "pp_bubble_s": 0.1, "pp_p2p_s": 0.1, "tp_s": 0.1, "dp_s": 0.2,
            "tp_comm_s": 0.5}
    assert breakdown_columns([step]) == ["compute_s", "pp_bubble_s", "tp_s", "pp_p2p_s", "dp_s"]


@pytest.mark.parametrize("algorithms", [("ring",), ("ring", "nvls")])
def test_stacks_sum_to_the_step(algorithms):
    data = rows(algorithms)
    ax = plot_step_breakdown(data)
    bars = ax.patches
    assert len(bars) == len(data) * 7
    tops = []
    for i in range(len(data)):
        stack = bars[i * 7:(i + 1) * 7]
        assert len({round(b.get_x(), 9) for b in stack}) == 1  # one bar, stacked
        assert [b.get_y() for b in stack[1:]] == pytest.approx([b.get_y() + b.get_height() for b in stack[:-1]])
        tops.append(stack[-1].get_y() + stack[-1].get_height())
    assert sorted(tops) == pytest.approx(sorted(r["step_time_s"] for r in data))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [l for l in labels if l != "step time"][:3] == ["compute", "PP bubble", "exposed TP"]
    assert "step time" in labels


def test_refuses_rows_without_breakdown():
    with pytest.raises(ConfigError, match="no step-time breakdown"):
        plot_step_breakdown([{"gpus": 8, "algorithm": "ring", "compute_time_s": 1.0, "step_time_s": 1.0}])


def test_cli_plot_breakdown_from_csv(tmp_path):
    path = tmp_path / "step.csv"
    data = rows()
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)
    res = CliRunner().invoke(cli, ["plot", str(path), "-o", str(tmp_path / "figs")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "figs" / "step_breakdown.png").stat().st_size > 1000
    res = CliRunner().invoke(cli, ["plot", str(path), "-o", str(tmp_path / "none"), "--no-breakdown"])
    assert res.exit_code == 0 and not (tmp_path / "none" / "step_breakdown.png").exists()
