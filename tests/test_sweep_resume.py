"""Sweeps lose nothing: a journal line per finished point, interrupted runs resume to the same files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from fabricsim.cli.main import cli
from fabricsim.sweep import SweepIncomplete, SweepSpec, run_and_write
from fabricsim.sweep_store import JOURNAL, SweepStore

N = 16
SIZES = ",".join(str(8 * k) for k in range(1, N + 1))
ARGS = ["sweep", "-t", "dgx-h100-ib", "--sizes", SIZES, "--mode", "message", "--bytes", "1M,4M",
        "-a", "ring,tree", "--no-plots"]
RESULTS = ("message.csv", "message.json", "meta.json", JOURNAL)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every other run is compared with."""
    out = tmp_path_factory.mktemp("straight")
    res = invoke(*ARGS, "-o", out, "-j", "1")
    assert res.exit_code == 0, res.output
    files = {name: (out / name).read_bytes() for name in RESULTS}
    files["dir"] = out
    return files


def _journal_lines(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("sig, jobs", [(signal.SIGINT, "1"), (signal.SIGKILL, "2")])
def test_killed_sweep_resumes_to_identical_files(tmp_path, straight, sig, jobs):
    out = tmp_path / "out"
    # every journal line is followed by a pause in the sweep's own process, so that it is still midway when
    # the signal arrives however fast the points run and however late this poller is scheduled; SIGINT gets
    # Python's own handler back (a suite started as a background job inherits SIGINT ignored)
    code = ("import signal, sys, time; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from fabricsim.sweep_store import SweepStore; _append = SweepStore.append\n"
            "def append(self, record):\n    _append(self, record)\n    time.sleep(0.3)\n"
            "SweepStore.append = append\n"
            "from fabricsim.cli.main import cli; sys.exit(cli())")
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err_fh:  # a file, not a pipe: no wait on workers that outlive a killed parent
        proc = subprocess.Popen([sys.executable, "-c", code, *ARGS, "-o", str(out), "-j", jobs],
                                stdout=subprocess.DEVNULL, stderr=err_fh)
        deadline = time.monotonic() + 120
        while _journal_lines(out / JOURNAL) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    err = log.read_bytes()
    kept = _journal_lines(out / JOURNAL)
    assert 3 <= kept < N, "the sweep must be stopped midway for this test to mean anything"
    if sig == signal.SIGINT:
        assert proc.returncode == 2
        last = err.decode().strip().splitlines()[-1]
        assert last.startswith("Error: sweep interrupted:") and "--resume" in last and "Traceback" not in err.decode()
        # what finished is in the result files already
        assert (out / "message.csv").read_text().count("\n") == 1 + 4 * kept
    else:
        assert proc.returncode == -signal.SIGKILL
    res = invoke("sweep", "--resume", out, "-j", "1")
    assert res.exit_code == 0, res.output
    for name in RESULTS:
        assert (out / name).read_bytes() == straight[name], name
    rows = [json.loads(line)["key"] for line in (out / JOURNAL).read_text().splitlines()]
    assert len(rows) == len(set(rows)) == N  # none lost, none duplicated


def test_torn_journal_line_is_dropped(tmp_path, straight):
    out = tmp_path / "torn"
    shutil.copytree(straight["dir"], out)
    lines = (out / JOURNAL).read_bytes().splitlines(keepends=True)
    (out / JOURNAL).write_bytes(b"".join(lines[:10]) + lines[10][:25])  # killed mid-write
    res = invoke("sweep", "--resume", out, "-j", "1")
    assert res.exit_code == 0, res.output
    for name in RESULTS:
        assert (out / name).read_bytes() == straight[name], name


def test_failing_point_is_recorded_and_the_rest_finish(tmp_path, monkeypatch):
    import fabricsim.sweep as sweep

    real = sweep.run_point

    def flaky(spec, gpus, *a, **kw):
        if gpus == 16:
            raise RuntimeError("boom at 16")
        return real(spec, gpus, *a, **kw)
    monkeypatch.setattr(sweep, "run_point", flaky)
    spec = SweepSpec(topology="dgx-h100-ib", sizes=(8, 16, 24), mode="message", message_sizes=(2**20,),
                     algorithms=("ring",))
    with pytest.raises(SweepIncomplete, match=r"2 of 3 points done, 1 failed \(first: point 0/16: RuntimeError: "
                                              r"boom at 16\).*--resume"):
        run_and_write(spec, tmp_path, jobs=1)
    assert json.loads((tmp_path / "failed.json").read_text()) == {"0/16": "RuntimeError: boom at 16"}
    assert [r["gpus"] for r in json.loads((tmp_path / "message.json").read_text())] == [8, 24]
    monkeypatch.setattr(sweep, "run_point", real)
    done = run_and_write(None, tmp_path, jobs=1, resume=True)
    assert [r["gpus"] for r in done.rows] == [8, 16, 24] and not (tmp_path / "failed.json").exists()


def test_an_interrupt_while_the_workers_stop_still_writes_the_finished_rows(tmp_path, monkeypatch):
    """Ctrl-C after the first point, and a second SIGINT while the run's workers are being stopped (where a
    single Ctrl-C also lands, at the wrong moment): the summary and the finished rows, not a bare exit 130."""
    import fabricsim.sweep_exec as sweep_exec

    real = sweep_exec.execute

    def execute(specs, points, **kw):
        inner = real(specs, points, jobs=1)
        try:
            yield from inner
        finally:  # closing the run: its workers stop here
            os.kill(os.getpid(), signal.SIGINT)

    def progress(record):
        raise KeyboardInterrupt  # Ctrl-C as the first point is reported

    monkeypatch.setattr(sweep_exec, "execute", execute)
    spec = SweepSpec(topology="dgx-h100-ib", sizes=(8, 16, 24), mode="message", message_sizes=(2**20,),
                     algorithms=("ring",))
    with pytest.raises(SweepIncomplete, match=r"sweep interrupted: 1 of 3 points done, 2 not run.*--resume"):
        run_and_write(spec, tmp_path, jobs=1, progress=progress)
    assert [r["gpus"] for r in json.loads((tmp_path / "message.json").read_text())] == [8]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_second_sweep_on_one_directory_is_refused(tmp_path):
    with SweepStore(tmp_path):
        res = invoke(*ARGS, "-o", tmp_path, "-j", "1")
    assert res.exit_code == 2
    assert f"another sweep (pid {os.getpid()}) is writing" in res.output
    assert not (tmp_path / "message.csv").exists()


def test_resume_of_nothing_is_one_line(tmp_path):
    res = invoke("sweep", "--resume", tmp_path / "none")
    assert res.exit_code == 2 and "holds no sweep to resume" in res.output


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds pool workers through /proc")
def test_killed_worker_fails_its_points_and_resume_finishes(tmp_path, straight):
    out = tmp_path / "out"
    # every journal line is followed by a pause in the sweep's own process, so that it is still midway when
    # the signal arrives however fast the points run and however late this poller is scheduled; SIGINT gets
    # Python's own handler back (a suite started as a background job inherits SIGINT ignored)
    code = ("import signal, sys, time; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from fabricsim.sweep_store import SweepStore; _append = SweepStore.append\n"
            "def append(self, record):\n    _append(self, record)\n    time.sleep(0.3)\n"
            "SweepStore.append = append\n"
            "from fabricsim.cli.main import cli; sys.exit(cli())")
    # and every point pauses in its worker (a sitecustomize on the workers' path: they are fresh
    # interpreters), so that points are still in flight when the worker dies, however fast the machine
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import os, time\nimport fabricsim.sweep as _sweep\n_compute = _sweep.compute_point\n"
        "def compute_point(spec, point):\n"
        f"    open(os.path.join({str(slow)!r}, 'slowed-%d' % os.getpid()), 'w').close()\n"
        "    time.sleep(0.2)\n    return _compute(spec, point)\n"
        "_sweep.compute_point = compute_point\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")])))
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err_fh:
        proc = subprocess.Popen([sys.executable, "-c", code, *ARGS, "-o", str(out), "-j", "2"],
                                stdout=subprocess.DEVNULL, stderr=err_fh, env=env)
        deadline = time.monotonic() + 120
        workers = []
        while proc.poll() is None and time.monotonic() < deadline:
            workers = [w for c in _children(proc.pid) for w in _children(c)]  # forkserver -> workers
            if workers and _journal_lines(out / JOURNAL) >= 2:
                break
            time.sleep(0.01)
        assert workers, "no pool worker found"
        os.kill(workers[0], signal.SIGKILL)
        proc.wait(timeout=120)
    last = log.read_text().strip().splitlines()[-1]
    # the pause ran in the workers (a sitecustomize that fails to import is skipped without a word)
    assert list(slow.glob("slowed-*")), "the workers' points were not slowed"
    assert proc.returncode == 2 and "failed (first: point" in last and "worker process died" in last
    res = invoke("sweep", "--resume", out, "-j", "1")
    assert res.exit_code == 0, res.output
    for name in RESULTS:
        assert (out / name).read_bytes() == straight[name], name
