"""Fitting the shipped calibration's parameters to a cluster's own nccl-tests logs.

The parameters are the model's, never new knobs (protocol.py): the usable share of line rate of each
link kind the fabric has (``link_efficiency``), of NVLS traffic (``nvls_efficiency``), and the per-step
latency of each protocol, algorithm and link class (``protocols.<p>.step_latency``). Launch latencies
stay NCCL's constants: for a fixed group they add to the step latencies and cannot be told apart from them;
the NVLS fan-in cost is likewise inseparable from NVLS efficiency on one group size.

The fit is least squares on log time against the simulator itself, r_i = log t_i - log T_sim(s_i; theta),
over theta = log(parameter), by Levenberg-Marquardt with a forward-difference Jacobian (the simulator has no
derivatives; steps of 2 %). Only parameters the data can see are fitted: a parameter whose 1 % change
moves no size's time by 0.02 % (a link kind no run crosses, a protocol no size uses) keeps its shipped
value and is reported as not identified. The uncertainty is the fit's covariance, s^2 (J^T J)^-1 with
s^2 = RSS / (m - k), mapped to each parameter by the delta method (sigma_p = p sigma_theta): it assumes the
model's shape is right and the scatter is noise, so it is a lower bound on the real uncertainty.

Each size keeps the algorithm NCCL's tuner (``CollectiveRunner.choose``) picks with the starting
calibration, or ``algorithm`` if given (a log taken with ``NCCL_ALGO``); the protocol is chosen afresh at
every evaluation, as the model always does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fabricsim.collectives.kinds import kind as lookup
from fabricsim.collectives.protocol import CALIBRATED, PROTOCOLS, Calibration
from fabricsim.collectives.runner import CollectiveRunner
from fabricsim.errors import ConfigError

__all__ = ["Parameter", "parameters", "Point", "FitResult", "measured_points", "fit", "simulate"]

STEP = 0.02  # log-space finite-difference step (2 %)
SEEN = 0.02  # d log T / d log p below which no size sees a parameter


@dataclass(frozen=True)
class Parameter:
    """One calibration value, addressed by its TOML key: ``link_efficiency.nvlink4``,
    ``nvls_efficiency.nvlink4`` or ``protocols.ll.step_latency.ring.nvlink``."""

    key: str

    @property
    def share(self) -> bool:
        return not self.key.startswith("protocols.")

    def get(self, cal: Calibration) -> float:
        parts = self.key.split(".")
        if self.share:
            return getattr(cal, parts[0]).get(parts[1], 1.0)
        return cal.protocol(parts[1]).step_latency[(parts[3], parts[4])]

    def set(self, cal: Calibration, value: float) -> Calibration:
        parts = self.key.split(".")
        if self.share:
            table = dict(getattr(cal, parts[0]))
            table[parts[1]] = float(value)
            return cal.replace(**{parts[0]: table})
        protocols = dict(cal.protocols or PROTOCOLS)
        proto = protocols[parts[1]]
        step = dict(proto.step_latency)
        step[(parts[3], parts[4])] = float(value)
        protocols[parts[1]] = replace(proto, step_latency=step)
        return cal.replace(protocols=protocols)


def parameters(topology) -> list[Parameter]:
    """The calibration values a run on ``topology`` can depend on: its link kinds' shares, NVLS's share on
    its NVLink kinds, and every protocol's step latency on the link classes it has."""
    kinds = sorted({d.get("kind") for *_, d in topology.graph.edges(data=True)} - {None})
    out = [Parameter(f"link_efficiency.{k}") for k in kinds if k in CALIBRATED.link_efficiency]
    out += [Parameter(f"nvls_efficiency.{k}") for k in kinds if k in CALIBRATED.nvls_efficiency]
    classes = {"nvlink"} | ({"net"} if any(not k.startswith("nvlink") for k in kinds) else set())
    for name, proto in PROTOCOLS.items():
        out += [Parameter(f"protocols.{name}.step_latency.{a}.{c}") for a, c in sorted(proto.step_latency)
                if c in classes]
    return out


@dataclass(frozen=True)
class Point:
    """One size of the log against the model: measured and simulated time (s), and how it ran."""

    size: int
    measured: float
    simulated: float
    algorithm: str
    protocol: str
    fitted: bool  # was this size in the fit

    @property
    def error(self) -> float:
        """Relative error of the simulation, (simulated - measured) / measured."""
        return self.simulated / self.measured - 1.0


@dataclass(frozen=True)
class FitResult:
    """The fitted calibration, each parameter's start, value and standard error, and every size's point."""

    calibration: Calibration
    values: list  # (key, start, fitted, stderr or None if not identified)
    points: list
    rms_log: float  # root-mean-square of the log residuals over the fitted sizes


def measured_points(runs, kind: str | None = None) -> tuple[str, int, dict]:
    """(collective, ranks, {size: fastest time}) from parsed runs, which must agree on both."""
    if not runs:
        raise ConfigError("no runs to fit")
    kinds = {r.collective for r in runs}
    ranks = {r.nranks for r in runs}
    if len(kinds) > 1 or len(ranks) > 1:
        raise ConfigError(f"the logs mix collectives or rank counts ({sorted(kinds)}, {sorted(ranks)}); "
                          "calibrate one collective on one group at a time")
    name = kind or kinds.pop()
    times: dict = {}
    for run in runs:
        for row in run.rows:
            if row.size > 0:
                times.setdefault(row.size, []).append(row.time)
    return lookup(name).name, ranks.pop(), {s: float(np.median(t)) for s, t in sorted(times.items())}


def simulate(topology, kind: str, sizes, cal: Calibration, algorithms: dict) -> list:
    """(time, algorithm, protocol) of ``kind`` at each size under ``cal`` (algorithm "auto" chosen here)."""
    runner = CollectiveRunner(topology, calibration=cal)
    out = []
    for s in sizes:
        alg = algorithms.get(s, "auto")
        alg = runner.choose(kind, s) if alg == "auto" else alg
        res = runner.run(kind, s, alg)
        out.append((res.time, alg, getattr(res, "protocol", "") or ""))
    return out


def fit(topology, kind: str, measured: dict, *, fit_sizes=None, algorithm: str = "auto",
        start: Calibration = CALIBRATED, iterations: int = 12) -> FitResult:
    """Fit ``start``'s parameters to ``measured`` ({size: seconds}) on the sizes ``fit_sizes`` (all if None).

    See the module docstring for the method. Raises ConfigError when fewer sizes than identified
    parameters remain.
    """
    fit_sizes = sorted(measured if fit_sizes is None else fit_sizes)
    if not fit_sizes:
        raise ConfigError("no sizes to fit on")
    missing = [s for s in fit_sizes if s not in measured]
    if missing:
        raise ConfigError(f"size {missing[0]} is not in the measurements")
    y = np.log([measured[s] for s in fit_sizes])
    chooser = CollectiveRunner(topology, calibration=start)
    algorithms = {s: chooser.choose(kind, s) if algorithm == "auto" else algorithm for s in fit_sizes}
    params = parameters(topology)
    theta0 = np.log([p.get(start) for p in params])

    def calibration(theta):
        cal = start
        for p, t in zip(params, theta):
            cal = p.set(cal, math.exp(t))
        return cal

    def model(theta):
        return np.log([t for t, _, _ in simulate(topology, kind, fit_sizes, calibration(theta), algorithms)])

    def jacobian(theta, base):
        cols = []
        for i in range(len(theta)):
            t = theta.copy()
            t[i] += STEP if not (params[i].share and theta[i] + STEP > 0) else -STEP
            cols.append((model(t) - base) / (t[i] - theta[i]))
        return np.array(cols).T

    theta = theta0.copy()
    base = model(theta)
    jac = jacobian(theta, base)
    seen = [i for i in range(len(params)) if np.max(np.abs(jac[:, i])) > SEEN]
    if len(seen) >= len(fit_sizes):
        raise ConfigError(f"{len(fit_sizes)} sizes cannot fit {len(seen)} parameters; give more sizes")
    lam = 1e-3
    for _ in range(iterations):
        r = y - base
        J = jac[:, seen]
        A, g = J.T @ J, J.T @ r
        improved = False
        for _ in range(8):
            delta = np.linalg.lstsq(A + lam * np.diag(np.diag(A) + 1e-12), g, rcond=None)[0]
            trial = theta.copy()
            trial[seen] += delta
            for i in seen:  # a share never exceeds line rate
                if params[i].share:
                    trial[i] = min(trial[i], 0.0)
            new = model(trial)
            if np.sum((y - new) ** 2) < np.sum(r ** 2):
                theta, base, lam, improved = trial, new, lam / 3, True
                break
            lam *= 10
        if not improved or np.max(np.abs(delta)) < 1e-4:
            break
        jac = jacobian(theta, base)
    r = y - base
    J = jac[:, seen]
    dof = len(fit_sizes) - len(seen)
    s2 = float(r @ r) / dof if dof > 0 else float("nan")
    cov = s2 * np.linalg.pinv(J.T @ J) if seen else np.zeros((0, 0))
    fitted = calibration(theta)
    values = []
    for i, p in enumerate(params):
        value = math.exp(theta[i])
        if i in seen:
            j = seen.index(i)
            values.append((p.key, math.exp(theta0[i]), value, value * math.sqrt(max(cov[j, j], 0.0))))
        else:
            values.append((p.key, math.exp(theta0[i]), value, None))
    sizes = sorted(measured)
    sims = simulate(topology, kind, sizes, fitted, {s: algorithm for s in sizes})
    points = [Point(s, measured[s], t, a, pr, s in set(fit_sizes)) for s, (t, a, pr) in zip(sizes, sims)]
    return FitResult(fitted, values, points, float(np.sqrt(np.mean(r ** 2))))
