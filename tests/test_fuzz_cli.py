"""Fuzz every CLI command with generated options, fabric files and model files, valid and broken.

Every case must end with exit 0 (or 1 for ``validate --strict``) or 2 with one ``Error:`` line, never a
traceback, never exit 3 (a bug), and within a time bound. Where a case succeeds, its numbers are checked
against physics: no all-reduce faster than its lower bound over the per-GPU line rate (2(p-1)/p N / B for
ring, tree and hierarchical; N / B with in-network reduction), hence no ring/tree busbw above the line rate,
and only finite numbers in JSON.

Profiles (registered in tests/conftest.py): ``ci`` by default (deterministic, under two minutes on two
cores), ``long`` for a soak of 10,000 cases in all::

    FABRICSIM_FUZZ_PROFILE=long python -m pytest -q -p no:cacheprovider tests/test_fuzz_cli.py

(``FABRICSIM_FUZZ_FACTOR=N`` makes the long profile N times the CI cases instead.) Commands run
in-process through click's CliRunner (fast); each case is bounded in CPU time (a hang detector).
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.cli.main import cli
from fabricsim.validation import validate as validate_rows

PROFILE = os.environ.get("FABRICSIM_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"FABRICSIM_FUZZ_PROFILE must be 'ci' or 'long', got {PROFILE!r}")

# cases per test in the CI profile; the long profile scales them so that they add up to 10,000
CI_CASES = {"topology": 60, "fabric": 70, "allreduce": 45, "step": 30, "model": 25, "sweep": 14, "draw": 4,
            "plot": 6, "validate": 2, "plan": 8, "json": 16}
# FABRICSIM_FUZZ_FACTOR overrides the long profile's multiplier (a shorter or longer soak)
LONG_FACTOR = int(os.environ.get("FABRICSIM_FUZZ_FACTOR") or math.ceil(10_000 / sum(CI_CASES.values())))
CASE_SECONDS = 60  # of CPU per case (time_bound): real cases take < 2 s, the largest long-profile ones ~20 s


def fuzz(name: str):
    cases = CI_CASES[name] * (1 if PROFILE == "ci" else LONG_FACTOR)
    return settings(settings.get_profile(f"fuzz-{PROFILE}"), max_examples=cases)


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no error handler under test can swallow it."""


#: Wall time allowed per case, as a multiple of its CPU bound: a case that waits (a lock, a pipe) and
#: burns no CPU is caught by the wall clock; one that computes on a loaded machine by its CPU time.
WALL_FACTOR = 10


@contextmanager
def time_bound(seconds: int):
    """Fail a case after ``seconds`` of its own CPU time (SIGPROF) or ``WALL_FACTOR`` times that of wall time
    (SIGALRM). CPU time, not wall time, is what a hang spends: on this shared two-core machine a case that
    needs 30 s of CPU may take minutes of wall time while other jobs run."""
    def expire(signum, frame):
        if signum == signal.SIGPROF:
            raise CaseTimeout(f"case ran longer than {seconds} s of CPU time")
        raise CaseTimeout(f"case ran longer than {seconds * WALL_FACTOR} s of wall time")

    old = {sig: signal.signal(sig, expire) for sig in (signal.SIGALRM, signal.SIGPROF)}
    signal.setitimer(signal.ITIMER_PROF, seconds)
    signal.alarm(seconds * WALL_FACTOR)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.alarm(0)
        for sig, handler in old.items():
            signal.signal(sig, handler)


OUTCOMES: Counter = Counter()  # (command, exit code) -> cases, printed at the end with -s


@pytest.fixture(scope="module", autouse=True)
def outcome_summary():
    yield
    print("\nfuzz outcomes (command, exit code): cases")
    for (command, code), n in sorted(OUTCOMES.items()):
        print(f"  {command:<18} {code}: {n}")
    print(f"  total {sum(OUTCOMES.values())} cases; profile {PROFILE}")


def run(args: list, allowed=(0, 2), seconds: int = CASE_SECONDS):
    """Run one command in-process; check the error contract; return the click Result.

    ``seconds`` bounds the case so that a hang fails it; it is a hang detector, not a speed target.
    """
    args = [str(a) for a in args]
    try:
        with time_bound(seconds):
            result = CliRunner().invoke(cli, args, prog_name="fabricsim")
    except CaseTimeout as exc:  # an ordinary failure for hypothesis to report and shrink
        raise AssertionError(f"fabricsim {' '.join(args)}: {exc}") from None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"fabricsim {' '.join(args)} raised {result.exception!r}") from result.exception
    assert "Traceback" not in result.output, f"fabricsim {' '.join(args)}:\n{result.output}"
    assert result.exit_code in allowed, f"fabricsim {' '.join(args)} -> exit {result.exit_code}:\n{result.output}"
    OUTCOMES[(" ".join(args[:2]) if args[0] == "topology" else args[0], result.exit_code)] += 1
    if os.environ.get("FABRICSIM_FUZZ_LOG"):  # one line per case, to follow a long soak as it runs
        with open(os.environ["FABRICSIM_FUZZ_LOG"], "a") as fh:
            fh.write(f"{args[0]} {args[1] if args[0] == 'topology' else ''} {result.exit_code}\n")
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) >= 1 and lines[-1].startswith("Error: "), f"fabricsim {' '.join(args)}:\n{result.stderr}"
        assert sum(line.startswith("Error: ") for line in lines) == 1
        if os.environ.get("FABRICSIM_FUZZ_ERRORS"):  # where the refusals come from, to tune the generators
            with open(os.environ["FABRICSIM_FUZZ_ERRORS"], "a") as fh:
                fh.write(f"{args[0]} {args[1]}\t{lines[-1][:110]}\n")
    return result


# --- generated values -------------------------------------------------------------------------------------
SMALL_PRESETS = [("dgx-h100", [None, 1, 2, 3, 4, 8]), ("dgx-b200", [None, 2, 8]), ("gb200-nvl72", [4, 8, 18]),
                 ("dgx-h100-ib", [1, 8, 12, 16, 24]), ("dgx-b200-ib", [16]), ("gb200-nvl72-ib", [1, 8, 16, 32])]


RATES = st.one_of(
    st.builds(lambda x, u: f'"{x:.6g} {u}"', st.floats(0.5, 2000), st.sampled_from(
        ["GB/s", "Gb/s", "Gbit/s", "Gbps", "TB/s", "MB/s", "GiB/s", "B/s"])),
    st.sampled_from(['"400 Gb/s"', '"50 GB/s"', '"450 GB/s"', '5e10', '"25 GB/s"']),
    st.sampled_from(['"400 gb/s"', '"1e-300 B/s"', '1e308', '0', '-5', 'true', '"fast"', 'nan', 'inf', '[1]',
                     '"1e400 GB/s"', '1e-3', '"2 PB/s"']),
)
LATENCIES = st.sampled_from(['"0.5 us"', '"1 us"', '"0.3us"', '0', '"1 ms"', '-1', '"5 parsecs"', '1e308', '2',
                             'true'])
LANES = st.sampled_from(["1", "1", "2", "18", "0", "-3", "1.5", '"x"', "true", "10000000000000000000000"])
KINDS = st.sampled_from(["nvlink4", "nvlink5", "ib-ndr", "eth", "pcie", "link", ""])


@st.composite
def fabric_text(draw) -> bytes:
    """A TOML fabric: mostly well formed (GPUs on switches or joined directly), with broken fields mixed in,
    and sometimes cut short, garbled or binary."""
    n_gpu = draw(st.integers(1, 6))
    n_sw = draw(st.integers(0, 3))
    n_nic = draw(st.integers(0, 2))
    broken = draw(st.integers(0, 4)) == 0  # one case in five may carry bad values
    pick = (lambda good, bad: draw(st.one_of(good, bad))) if broken else (lambda good, bad: draw(good))
    nodes = []
    ranks = draw(st.sampled_from(["order", "none", "duplicate", "bad"])) if broken else draw(
        st.sampled_from(["order", "none"]))
    for i in range(n_gpu):
        rank = {"order": f", rank = {n_gpu - 1 - i}", "none": "", "duplicate": ", rank = 0",
                "bad": ', rank = "zero"'}[ranks]
        nodes.append(f'{{id = "g{i}", kind = "gpu"{rank}}}')
    for j in range(n_sw):
        nodes.append(f'{{id = "s{j}", kind = "{pick(st.sampled_from(["switch", "nvswitch"]), st.just("router"))}", '
                     f'tier = {j}}}')
    for k in range(n_nic):
        nodes.append(f'{{id = "n{k}", kind = "nic"}}')
    ends = [f"g{i}" for i in range(n_gpu)] + [f"s{j}" for j in range(n_sw)] + [f"n{k}" for k in range(n_nic)]
    links = []
    if n_sw == 0:  # GPUs do not forward: without switches, at most one NIC joins them, else every pair
        n_nic = min(n_nic, 1)
        nodes = nodes[:n_gpu + n_nic]
        ends = ends[:n_gpu] + [f"n{k}" for k in range(n_nic)]
    for i in range(n_gpu):  # every GPU on some switch or NIC
        others = [e for e in ends if not e.startswith("g")]
        if others:
            links.append((f"g{i}", draw(st.sampled_from(others))))
        else:
            links += [(f"g{i}", f"g{j}") for j in range(i + 1, n_gpu)]
    for k in range(n_nic if n_sw else 0):  # every NIC on the first switch
        links.append((f"n{k}", "s0"))
    for _ in range(draw(st.integers(0, 4))):
        links.append((draw(st.sampled_from(ends)), draw(st.sampled_from(ends))))
    if broken and draw(st.booleans()):
        links.append(("s0" if n_sw else "g0", "s0" if n_sw else "g0"))  # a self-loop
    if broken and draw(st.booleans()):
        links.append(("g0", "nowhere"))
    kind = draw(KINDS)
    body = []
    for a, b in links:
        if a == b and not broken:
            continue
        fields = [f'a = "{a}"', f'b = "{b}"', f"bandwidth = {pick(RATES.filter(_good_rate), RATES)}",
                  f'kind = "{draw(st.one_of(st.just(kind), KINDS))}"']
        if draw(st.booleans()):
            fields.append(f"latency = {pick(LATENCIES.filter(_good_latency), LATENCIES)}")
        if draw(st.booleans()):
            fields.append(f"lanes = {pick(st.sampled_from(['1', '2', '18']), LANES)}")
        if broken and draw(st.integers(0, 5)) == 0:
            fields.append(draw(st.sampled_from(["duplex = false", 'duplex = "yes"', "colour = 3", 'a = "g0"'])))
        body.append("{" + ", ".join(fields) + "}")
    text = (f'name = "{draw(st.sampled_from(["fuzz", "a b", ""]))}"\n'
            + "nodes = [\n  " + ",\n  ".join(nodes) + ",\n]\n" + "links = [\n  " + ",\n  ".join(body) + "\n]\n")
    if broken and draw(st.integers(0, 3)) == 0:
        text += draw(st.sampled_from(["extra = 1\n", "[meta]\nbisection_bandwidth = -1\n", "[meta]\nx = 1\n"]))
    data = text.encode()
    damage = draw(st.integers(0, 14))
    if damage == 0:  # cut short
        data = data[: draw(st.integers(1, max(1, len(data) - 1)))]
    elif damage == 1:  # binary garbage
        data = draw(st.binary(min_size=1, max_size=300))
    elif damage == 2:  # a few bytes flipped
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos + 1:]
    return data


def _good_rate(text: str) -> bool:
    return text.startswith('"') and not any(b in text for b in ("gb/s", "1e-300", "1e400", "PB/s", "fast")) \
        or text == "5e10"


def _good_latency(text: str) -> bool:
    return text in ('"0.5 us"', '"1 us"', '"0.3us"', "0", '"1 ms"')


@st.composite
def model_text(draw) -> bytes:
    """A TOML model: small and well formed, or with wrong types, missing or unknown keys, huge values."""
    heads = draw(st.sampled_from([1, 2, 4, 8]))
    fields = {"name": '"fuzz"', "layers": str(draw(st.integers(1, 8))), "hidden": str(heads * draw(st.integers(1, 64))),
              "ffn": str(draw(st.integers(1, 512))), "heads": str(heads), "vocab": str(draw(st.integers(1, 5000))),
              "seq_len": str(draw(st.sampled_from([128, 512, 2048])))}
    if draw(st.booleans()):
        fields["kv_heads"] = str(draw(st.sampled_from([1, heads, heads * 2])))
    if draw(st.booleans()):
        fields["mlp"] = draw(st.sampled_from(['"swiglu"', '"gelu"', '"relu"', "3"]))
    if draw(st.integers(0, 2)) == 0:
        key = draw(st.sampled_from(sorted(fields) + ["colour", "tied_embeddings", "published_params"]))
        fields[key] = draw(st.sampled_from(["1e9", "1000000000", "0", "-3", '"many"', "true", "[1]", "1.5",
                                            "1e400", "nan", "99999999999999999999"]))
    if draw(st.integers(0, 5)) == 0:
        del fields[draw(st.sampled_from(sorted(fields)))]
    text = "".join(f"{k} = {v}\n" for k, v in fields.items())
    if draw(st.booleans()) and draw(st.booleans()):
        text = "[model]\n" + text
    data = text.encode()
    damage = draw(st.integers(0, 7))
    if damage == 0:
        data = data[: draw(st.integers(1, max(1, len(data) - 1)))]
    elif damage == 1:
        data = draw(st.binary(min_size=1, max_size=200))
    return data


# --- physics checks ---------------------------------------------------------------------------------------
def _line_rate(topo) -> float:
    """The most one-way bandwidth any GPU can inject (sum of its outgoing links, before efficiencies)."""
    return max(sum(d["bandwidth"] for _, _, d in topo.graph.out_edges(g, data=True)) for g in topo.gpus)


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"non-finite number {constant} in JSON output")
    return json.loads(text, parse_constant=refuse)


def _rows(text: str) -> list:
    """Rows of a JSON output: a list of rows, or an object with ``rows``."""
    data = _strict_json(text)
    return data["rows"] if isinstance(data, dict) else data


def check_allreduce_rows(rows, topo) -> None:
    """No time below the lower bound; no busbw above the per-GPU line rate (except with in-network
    reduction, whose all-reduce bound is N / B); all finite; no wrong element where data was checked."""
    p = topo.num_gpus
    rate = _line_rate(topo) if p > 1 else math.inf
    for r in rows:
        for key, value in r.items():
            if isinstance(value, float):
                assert math.isfinite(value), (key, r)
        assert r.get("wrong") in (None, 0), f"the data-carrying check found wrong elements: {r}"
        n, t = r.get("size_bytes", r.get("bytes")), r.get("time_us", (r.get("time_s") or 0) * 1e6) * 1e-6
        if p == 1:
            assert t == 0 and r["busbw_GBps"] == 0, r
            continue
        in_network = r["algorithm"].split(":")[-1] in ("nvls", "sharp") or "nvls" in r["algorithm"]
        if r.get("collective", "allreduce") != "allreduce":
            # nccl-tests' busbw of every collective compares with the per-GPU link bandwidth
            assert in_network or r["busbw_GBps"] * 1e9 <= rate * (1 + 1e-9), f"busbw above {rate / 1e9} GB/s: {r}"
            assert t > 0 or n == 0, r
            continue
        bound = n / rate if in_network else 2 * (p - 1) / p * n / rate
        assert t >= bound * (1 - 1e-9), f"time {t} s below the lower bound {bound} s: {r}"
        if not in_network:
            assert r["busbw_GBps"] * 1e9 <= rate * (1 + 1e-9), f"busbw above the line rate {rate / 1e9} GB/s: {r}"


# --- the tests --------------------------------------------------------------------------------------------
JUNK_VALUES = ["", "0", "-1", "nan", "inf", "-inf", "1e308", "1e-300", "abc", "1,2", " ", "1e400", "0x10", "\u00b5",
               "9" * 40]


class Case:
    """Draws one command line. A case is either clean (every option valid) or broken (each option wrong
    one time in three), so that both the refusals and the successful runs get their share of cases."""

    def __init__(self, data, broken_percent: int = 35):
        self.data = data
        self.broken = data.draw(st.integers(0, 99), label="broken") < broken_percent

    def one(self, good, bad=()):
        if self.broken and bad and self.data.draw(st.integers(0, 2)) == 0:
            return self.data.draw(st.sampled_from(list(bad)))
        return self.data.draw(st.sampled_from(list(good)))

    def opt(self, flag: str, good, bad=(), omit: int = 40) -> list:
        """``[]`` (omitted ``omit`` percent of the time) or ``[flag, value]``."""
        if self.data.draw(st.integers(0, 99)) < omit:
            return []
        return [flag, self.one(good, bad)]

    def fabric(self):
        """(name, gpus) of a small preset; in a broken case sometimes a wrong name or count."""
        if self.broken and self.data.draw(st.integers(0, 3)) == 0:
            return self.data.draw(st.one_of(
                st.tuples(st.sampled_from(["dgx-a100", "", "x.toml", "../"]), st.sampled_from([None, 8])),
                st.tuples(st.sampled_from(["nvl576", "dgx-h100", "gb200-nvl72-ib"]),
                          st.sampled_from([0, -4, 10**9, "many", "", "1e3"]))))
        name, counts = self.data.draw(st.sampled_from(SMALL_PRESETS))
        return name, self.data.draw(st.sampled_from(counts))


@fuzz("topology")
@given(data=st.data())
def test_topology_commands(data):
    case = Case(data)
    sub = case.one(["list", "info", "export", "export"], ["bogus"])
    name, gpus = case.fabric()
    with tempfile.TemporaryDirectory() as tmp:
        args = ["topology", sub]
        if sub != "list":
            args += [name] + (["--gpus", gpus] if gpus is not None else [])
            if name in ("gb200-nvl72", "nvl576"):
                args += case.opt("--planes", ["per-chip", "aggregate"], ["diagonal"])
            if name.endswith("-ib"):
                args += case.opt("--planes", ["per-chip", "aggregate"], ["diagonal"], omit=70)
                args += case.opt("--network", ["rail", "fat-tree"], ["torus"])
                args += case.opt("--oversubscription", ["1", "2", "0.5", "4"], JUNK_VALUES)
            elif case.broken:
                args += case.opt("--network", ["rail"], omit=80)
        suffix = case.one([".toml", ".json", ".graphml", ".dot", ".gv"], [".txt", "", ".yaml", ".png"])
        out = Path(tmp) / f"fabric{suffix}"
        if sub == "export":
            fmt = {".toml": "toml", ".json": "json", ".graphml": "graphml", ".dot": "dot", ".gv": "dot"}.get(suffix)
            args += case.opt("--format", [fmt] if fmt else ["toml"], ["toml", "json", "graphml", "dot", "png"])
            args += ["-o", out]
        if case.broken:
            args += case.opt("--what", ["x"], omit=80)
        result = run(args)
        if result.exit_code == 0 and sub == "export" and out.suffix in (".toml", ".json", ".graphml"):
            again = run(["topology", "info", out])  # every export loads back
            assert again.exit_code == 0, again.output


@st.composite
def node_link_json(draw) -> bytes:
    """A node-link JSON fabric ('edges' or the older 'links' key) with attributes of any type."""
    values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**20), st.text(max_size=5),
                       st.booleans(), st.none(), st.sampled_from([5e10, 4.5e11, 1e9, 1.0]))
    broken = draw(st.booleans())
    pick = (lambda good, bad: draw(st.one_of(good, bad))) if broken else (lambda good, bad: draw(good))
    n = draw(st.integers(1, 4))
    nodes = [{"id": f"g{i}", "kind": "gpu"} for i in range(n)] + [{"id": "s", "kind": pick(st.sampled_from(
        ["switch", "nvswitch", "nic"]), st.just("hub"))}]
    edges = []
    for i in range(n):
        for a, b in ((f"g{i}", "s"), ("s", f"g{i}")):
            edge = {"source": a, "target": b, "bandwidth": pick(st.sampled_from([5e10, 4.5e11, 1e9]), values),
                    "kind": draw(st.sampled_from(["nvlink5", "eth", "ib-ndr"]))}
            if broken and draw(st.booleans()):
                edge[draw(st.sampled_from(["latency", "lanes", "kind"]))] = draw(values)
            edges.append(edge)
    key = draw(st.sampled_from(["edges", "links"]))
    graph = {"directed": True, "multigraph": draw(st.booleans()), "graph": {}, "nodes": nodes, key: edges}
    return json.dumps(graph).encode()


@fuzz("fabric")
@given(data=fabric_text(),
       command=st.sampled_from(["info", "export", "allreduce", "allreduce", "step"]),
       algorithm=st.sampled_from(["auto", "ring", "tree", "hierarchical", "nvls", "sharp"]),
       model=st.sampled_from(["simulate", "simulate", "analytic"]),
       size=st.sampled_from([("8", "8"), ("1M", "1M"), ("1K", "1G"), ("1G", "1G")]),
       suffix=st.sampled_from([".toml"] * 12 + [".json", ".graphml", ".yaml"]))
def test_fabric_files(data, command, algorithm, model, size, suffix):
    from fabricsim.topologies.io import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fabric{suffix}"
        path.write_bytes(data)
        if command == "info":
            run(["topology", "info", path])
        elif command == "export":
            result = run(["topology", "export", path, "-o", Path(tmp) / "out.json"])
            if result.exit_code == 0:
                assert run(["topology", "info", Path(tmp) / "out.json"]).exit_code == 0
        elif command == "step":
            run(["step", "--topology", path, "--peak-flops", "1e15", "--model", "llama3-8b", "--algorithm",
                 algorithm if algorithm != "sharp" else "ring", "--buckets", 4])
        else:
            result = run(["allreduce", "--topology", path, "--algorithm", algorithm, "--model", model,
                          "--min-bytes", size[0], "--max-bytes", size[1], "--step-factor", "32", "--format", "json"])
            if result.exit_code == 0:
                check_allreduce_rows(_rows(result.stdout), load(str(path)))


SIZES = ["8", "1K", "4K", "1M", "1MiB", "16M", "512MB", "1G", "1GiB", "8G"]
BAD_SIZES = ["1Gb", "0", "1.5", "2PiB", "-8", "1 parsec"] + JUNK_VALUES


@fuzz("json")
@given(data=node_link_json(), command=st.sampled_from(["info", "allreduce"]))
def test_node_link_files(data, command):
    from fabricsim.topologies.io import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fabric.json"
        path.write_bytes(data)
        if command == "info":
            run(["topology", "info", path])
        else:
            result = run(["allreduce", "--topology", path, "--min-bytes", "1M", "--max-bytes", "1G", "--step-factor",
                          "1024", "--format", "json"])
            if result.exit_code == 0:
                check_allreduce_rows(_rows(result.stdout), load(str(path)))


@fuzz("allreduce")
@given(data=st.data())
def test_allreduce(data):
    from fabricsim.topologies.io import build

    case = Case(data)
    name, gpus = case.fabric()
    command = case.one(["allreduce"] * 4 + ["reducescatter", "allgather", "broadcast", "reduce", "alltoall",
                                            "sendrecv"])
    model = case.one(["simulate", "simulate", "analytic"], ["exact"])
    fmt = case.one(["json", "json", "json", "table", "csv"], ["xml"])
    args = [command, "--topology", name, "--model", model, "--format", fmt]
    args += ["--gpus", gpus] if gpus is not None else []
    algorithms = {"allreduce": ["auto", "ring", "tree", "hierarchical", "nvls", "sharp"],
                  "reducescatter": ["auto", "ring", "hierarchical", "nvls"], "allgather": ["auto", "ring", "nvls"],
                  "broadcast": ["auto", "ring", "tree"], "reduce": ["auto", "ring", "tree"],
                  "alltoall": ["auto", "pairwise"], "sendrecv": ["auto", "p2p"]}[command]
    args += case.opt("--algorithm", algorithms, ["bus", "NVLS", "tree"], omit=20)
    args += case.opt("--root", ["0", "1"], ["-1", "99", "x"], omit=70)
    args += case.opt("--dtype", ["float", "bf16", "int8", "double"], ["complex", ""], omit=70)
    args += case.opt("--protocol", ["auto", "ll", "ll128", "simple"], ["LL", "fast"])
    args += case.opt("--min-bytes", SIZES, BAD_SIZES, omit=20)
    args += case.opt("--max-bytes", SIZES, BAD_SIZES, omit=20)
    # few sizes per case in CI (each size of 'auto' simulates every algorithm); nccl-tests' -f 2 in the long run
    factors = ["8", "64", "1000"] + (["2", "1.5", "4"] if PROFILE == "long" else [])
    args += case.opt("--step-factor", factors, JUNK_VALUES + ["1", "1.0000001"], omit=0)
    if name in ("gb200-nvl72", "nvl576") or name.endswith("-ib"):
        args += case.opt("--planes", ["per-chip", "aggregate"], ["diagonal"], omit=70)
    if data.draw(st.integers(0, 4)) == 0:  # carry data and count wrong elements (small sizes only)
        args += ["--check", "--min-bytes", case.one(["8", "1K", "64K"]), "--max-bytes", case.one(["64K", "1M"])]
    with tempfile.TemporaryDirectory() as tmp:
        trace = data.draw(st.integers(0, 4)) == 0
        if trace:
            args += ["--trace", Path(tmp) / "trace.json"]
        result = run(args)
        if result.exit_code == 0 and fmt == "json":
            rows = _rows(result.stdout)
            planes = args[args.index("--planes") + 1] if "--planes" in args else None
            check_allreduce_rows(rows, build(name, gpus=gpus, planes=planes))
            if trace and model == "simulate":
                assert (Path(tmp) / "trace.json").exists()


def step_options(case: Case) -> list:
    """The training-step options shared by ``step`` and ``sweep``."""
    args = []
    args += case.opt("--precision", ["bf16", "fp8", "fp4"], ["fp16", "tf32", "fp64", "x"])
    args += case.opt("--mfu", ["0.45", "0.01", "1", "0.001"], JUNK_VALUES)
    args += case.opt("--tp", ["1", "2", "4", "8"], ["3", "0"] + JUNK_VALUES, omit=60)
    args += case.opt("--scaling", ["weak", "strong"], ["both"])
    args += case.opt("--batch", ["1", "2", "16"], JUNK_VALUES, omit=60)
    args += case.opt("--global-batch", ["64", "1152"], ["1"] + JUNK_VALUES, omit=60)
    args += case.opt("--bucket", ["25MiB", "1M", "1G", "64K"], ["1", "1Gb", "4K"] + JUNK_VALUES, omit=60)
    args += case.opt("--grad-bytes", ["2", "4"], ["1", "17"] + JUNK_VALUES, omit=70)
    args += case.one([[], [], ["--attention-flops"], ["--no-attention-flops"]])
    return args


PEAKS = [[], [], ["--peak-flops", "2250 TFLOPS"], ["--gpu", "h100"]]
BAD_PEAKS = [["--peak-flops", "0"], ["--gpu", "a100"], ["--gpu", "b200", "--peak-flops", "1e15"],
             ["--peak-flops", "1e300"]]


@fuzz("step")
@given(data=st.data())
def test_step(data):
    case = Case(data)
    name, gpus = case.fabric()
    args = ["step", "--topology", name, "--gpus", gpus if gpus is not None else 8]
    args += case.opt("--model", ["llama3-8b", "llama3-8b", "llama3-70b", "gpt3-175b", "llama3-405b"], ["gpt-5"])
    args += case.one([["--no-memory-check"], ["--no-memory-check"], []])  # big models do not fit small fabrics
    args += case.opt("--algorithm", ["ring", "tree", "hierarchical", "nvls", "auto"], ["sharp", "x"])
    args += step_options(case) + case.one(PEAKS, BAD_PEAKS)
    args += case.opt("--buckets", ["0", "4", "12"], ["-1"], omit=0)
    with tempfile.TemporaryDirectory() as tmp:
        trace = data.draw(st.integers(0, 3)) == 0
        result = run(args + (["--trace", Path(tmp) / "step.json"] if trace else []))
        if result.exit_code == 0 and trace:
            _strict_json((Path(tmp) / "step.json").read_text())


@fuzz("model")
@given(data=model_text(), command=st.sampled_from(["step", "step", "sweep"]))
def test_model_files(data, command):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.toml"
        path.write_bytes(data)
        if command == "step":
            run(["step", "--topology", "dgx-h100", "--gpus", 4, "--model", path, "--buckets", 4])
        else:
            result = run(["sweep", "--topology", "dgx-h100", "--sizes", "2,4", "--model", path, "--algorithms", "ring",
                          "--jobs", 1, "--no-plots", "-o", Path(tmp) / "out"])
            if result.exit_code == 0:
                _strict_json((Path(tmp) / "out" / "step.json").read_text())


@fuzz("sweep")
@given(data=st.data())
def test_sweep(data):
    from fabricsim.topologies.io import build

    case = Case(data)
    name, _ = case.fabric()
    mode = case.one(["step", "message"], ["both"])
    args = ["sweep", "--topology", name, "--mode", mode, "--jobs", case.one(["1"], ["0", "x"])]
    args += case.one([["--sizes", "2"], ["--sizes", "1,8"], ["--sizes", "8,16"], ["--max-gpus", "8"],
                      ["--max-gpus", "16"]], [["--sizes", j] for j in JUNK_VALUES] + [["--sizes", "3,x"]])
    args += case.opt("--algorithms", ["ring", "ring,tree", "auto", "nvls,hierarchical"], ["", "ring,bogus"])
    args += case.opt("--bytes", ["1M", "1M,1G", "8,64K"], JUNK_VALUES)
    args += case.opt("--curve-gpus", ["0", "8"], ["3", "-1"], omit=70)
    args += [case.one(["--no-plots"] * 5 + ["--plots"])]
    if mode == "step":
        args += step_options(case) + case.one(PEAKS, BAD_PEAKS)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        result = run(args + ["-o", out])
        if result.exit_code != 0:
            return
        for path in out.glob("*.json"):
            loaded = _strict_json(path.read_text())
            if path.name == "message.json":
                rows = loaded["rows"] if isinstance(loaded, dict) else loaded
                for gpus in {r["gpus"] for r in rows}:
                    check_allreduce_rows([r for r in rows if r["gpus"] == gpus], build(name, gpus=gpus))


@fuzz("plan")
@given(data=st.data())
def test_plan(data):
    case = Case(data)
    name, gpus = case.fabric()
    args = ["plan", "--topology", name, "--gpus", gpus if gpus is not None else 8, "--no-progress"]
    args += ["--model", case.one(["llama3-8b", "llama3-70b"], ["gpt-5", ""])]
    args += ["--global-batch", case.one(["16", "64", "1152"], JUNK_VALUES)]
    args += ["--simulate", case.one(["0", "0", "1"], ["-1", "x"])]
    args += case.opt("--rows", ["0", "5"], ["-1"])
    for flag, good in (("--tp", ["1", "2", "4"]), ("--pp", ["1", "2"]), ("--zero", ["0", "1", "3"]),
                       ("--micro-batch", ["1", "2"])):
        args += case.opt(flag, good, JUNK_VALUES + ["2,4"], omit=70)
    args += case.opt("--recompute", ["none", "selective", "full"], ["some", ""], omit=70)
    args += case.opt("--budget", ["5", "0"], ["-1", "nan"], omit=70)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args + case.opt("--out", [Path(tmp) / "plan"], [Path(tmp)], omit=50))
        for path in (Path(tmp) / "plan").glob("*.json") if result.exit_code == 0 else ():
            _strict_json(path.read_text())


@fuzz("draw")
@given(data=st.data())
def test_draw(data):
    case = Case(data)
    name, gpus = case.fabric()
    suffix = case.one([".png", ".svg"], [".jpg", ""])
    with tempfile.TemporaryDirectory() as tmp:
        run(["topology", "draw", name, *(["--gpus", gpus] if gpus is not None else []), "-o",
             Path(tmp) / f"fabric{suffix}"])


_SWEEP_CSV: dict[str, str] = {}


def _sweep_csv(mode: str) -> str:
    """One real sweep's CSV per mode, made once and then damaged by the plot fuzz."""
    if mode not in _SWEEP_CSV:
        with tempfile.TemporaryDirectory() as tmp:
            result = CliRunner().invoke(cli, ["sweep", "--topology", "dgx-h100", "--sizes", "2,8", "--mode", mode,
                                              "--algorithms", "ring,tree", "--bytes", "1M,16M", "--jobs", "1",
                                              "--no-plots", "-o", tmp])
            assert result.exit_code == 0, result.output
            _SWEEP_CSV[mode] = (Path(tmp) / ("step.csv" if mode == "step" else "message.csv")).read_text()
    return _SWEEP_CSV[mode]


@fuzz("plot")
@given(mode=st.sampled_from(["step", "message"]), damage=st.sampled_from(["none", "cut", "field", "binary", "empty",
                                                                          "header"]),
       where=st.floats(0, 1), junk=st.sampled_from(JUNK_VALUES), binary=st.binary(max_size=200))
def test_plot(mode, damage, where, junk, binary):
    text = _sweep_csv(mode)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.csv"
        if damage == "cut":
            text = text[: int(where * len(text))]
        elif damage == "field":
            cells = text.split(",")
            cells[int(where * (len(cells) - 1))] = junk
            text = ",".join(cells)
        elif damage == "empty":
            text = ""
        elif damage == "header":
            text = "gpus,algorithm\n" + text.split("\n", 1)[1]
        if damage == "binary":
            path.write_bytes(binary)
        else:
            path.write_text(text)
        figures = Path(tmp) / "figures"
        result = run(["plot", path, "-o", figures])
        if result.exit_code == 2:
            assert not figures.exists(), "a refused plot left an output folder behind"


_VALIDATED: dict = {}


def _validate_once(**options):
    """``validation.validate``, simulated once per set of options in this module: these cases fuzz the
    command's options and output paths; the rows themselves are checked in test_validation.py."""
    on_result = options.pop("on_result", None)
    key = repr(sorted(options.items()))
    if key not in _VALIDATED:
        _VALIDATED[key] = validate_rows(**options)
    report = _VALIDATED[key]
    for res in report.results if on_result else ():
        on_result(res)
    return report


@fuzz("validate")
@given(strict=st.booleans(), no_plot=st.booleans(), out=st.sampled_from(["none", "dir", "file"]))
def test_validate(strict, no_plot, out):
    with tempfile.TemporaryDirectory() as tmp, mock.patch("fabricsim.cli.validate.run_validation", _validate_once):
        cwd = os.getcwd()
        os.chdir(tmp)  # nothing may be written here unless asked
        try:
            args = ["validate", "--quick"] + (["--strict"] if strict else []) + (["--no-plot"] if no_plot else [])
            if out == "dir":
                args += ["--out", Path(tmp) / "report"]
            elif out == "file":
                (Path(tmp) / "taken").write_text("x")
                args += ["--out", Path(tmp) / "taken"]
            # validate --quick simulates every fast reference row (about 10 s of CPU)
            result = run(args, allowed=(0, 1, 2) if strict else (0, 2), seconds=120)
            if out == "none":
                assert os.listdir(tmp) == [], "validate wrote files without --out"
            elif out == "dir" and result.exit_code in (0, 1):
                assert (Path(tmp) / "report" / "validation.md").exists()
        finally:
            os.chdir(cwd)


def test_the_profile_is_known():
    assert PROFILE in ("ci", "long")
    assert os.environ.get("FABRICSIM_FUZZ_FACTOR") or LONG_FACTOR * sum(CI_CASES.values()) >= 10_000
