"""``fabricsim plan``: the table, CSV/JSON out, one-line refusals."""

import json

from click.testing import CliRunner

from fabricsim.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, ["plan", "--no-progress", *args])


def test_plan_prints_a_ranked_table_and_writes_files(tmp_path):
    res = run("--model", "llama3-8b", "--topology", "dgx-h100-ib", "--gpus", "16", "--global-batch", "32",
              "--simulate", "0", "--rows", "3", "--show-oom", "-o", str(tmp_path))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("llama3-8b") and "layouts" in lines[1] and "fit in 85.5 GB" in lines[1]
    assert lines[2].split()[:2] == ["#", "layout"]
    assert lines[3].lstrip().startswith("1 ")
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["rows"][0]["fits"] and doc["topology"]
    assert (tmp_path / "plan.csv").read_text().count("\n") == len(doc["rows"]) + 1


def test_plan_restricted_search():
    res = run("--model", "llama3-8b", "--topology", "dgx-h100-ib", "--gpus", "32", "--global-batch", "32",
              "--simulate", "0", "--tp", "8", "--pp", "2", "--zero", "1", "--recompute", "full", "--rows", "0")
    assert res.exit_code == 0, res.output
    rows = [l for l in res.output.splitlines()[3:] if l.strip()]
    assert rows and all("TP 8" in r and "PP 2" in r and "ZeRO-1" in r and "full recompute" in r for r in rows)
    assert len(rows) > 1  # the dimensions not given (micro-batch, virtual stages) are searched


def test_plan_refusals():
    for args, message in [
        (("--model", "gpt9", "--global-batch", "8"), "unknown model"),
        (("--model", "llama3-8b", "--topology", "dgx-h100-ib", "--gpus", "16", "--global-batch", "1",
          "--cp", "1", "--tp", "1", "--pp", "1"), "no layout"),
        (("--model", "llama3-405b", "--topology", "dgx-h100-ib", "--gpus", "8", "--global-batch", "8"), "fits in"),
    ]:
        res = run(*args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.strip().count("\n") == 0 and message in res.output, res.output


def test_plan_bad_option_value_is_a_usage_error():
    res = run("--model", "llama3-8b", "--global-batch", "8", "--tp", "x")
    assert res.exit_code == 2 and "'x' is not a valid integer" in res.output
