"""ODE solvers integrating dx/dt = v(x, t) from t0 to t1 (flow matching: noise at 0 → data at 1).

Fixed-step: ``euler`` (order 1), ``midpoint`` and ``heun2`` (order 2), ``rk4`` (order 4), each with ``steps``
equal steps. Adaptive: ``dopri5`` (Dormand–Prince 5(4), FSAL, error control with ``atol``/``rtol``).

``velocity(x, t)`` takes the state ``x`` (any shape) and a scalar time ``t`` (float) and returns dx/dt shaped
like ``x``. The state keeps the dtype of ``x0``; error norms of dopri5 are computed in float64.
"""
from typing import NamedTuple

import numpy as np

from .._validate import check_int
from ..errors import FmqError, InputError

FIXED_STEP = ("euler", "midpoint", "heun2", "rk4")
SOLVERS = FIXED_STEP + ("dopri5",)


class OdeResult(NamedTuple):
    """Final state ``x`` (shaped like x0), evaluations of the velocity ``nfe``, accepted and rejected steps."""
    x: np.ndarray
    nfe: int
    n_steps: int
    n_rejected: int


def check_solver(solver, steps):
    """InputError unless ``solver`` is known and ``steps`` is a positive integer."""
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    check_int("steps", steps, 1)


def integrate(velocity, x0, *, solver="heun2", steps=50, t0=0.0, t1=1.0, atol=1e-5, rtol=1e-5, max_steps=100_000):
    """Integrate from ``x0`` at ``t0`` to ``t1``. ``steps``: number of steps (fixed-step solvers) or the number
    of steps the first dopri5 step guess is based on. Returns an :class:`OdeResult`.

    Bad arguments raise InputError; a failed computation (dopri5 needing more than ``max_steps`` steps, or a
    velocity field returning NaN / Inf) raises :class:`~fmq_np.FmqError` itself: neither an argument nor a file is
    at fault there."""
    check_solver(solver, steps)
    x = np.array(x0, copy=True)
    if solver == "dopri5":
        return _dopri5(velocity, x, float(t0), float(t1), atol, rtol, max_steps)
    step = _FIXED[solver]
    h = (float(t1) - float(t0)) / steps
    nfe = 0
    for i in range(steps):
        x, used = step(velocity, x, float(t0) + i * h, h)
        nfe += used
    return OdeResult(x, nfe, int(steps), 0)


def _euler(f, x, t, h):
    return x + _scaled(h, f(x, t), x), 1


def _midpoint(f, x, t, h):
    k1 = f(x, t)
    k2 = f(x + _scaled(h / 2, k1, x), t + h / 2)
    return x + _scaled(h, k2, x), 2


def _heun2(f, x, t, h):
    k1 = f(x, t)
    k2 = f(x + _scaled(h, k1, x), t + h)
    return x + _scaled(h / 2, k1 + k2, x), 2


def _rk4(f, x, t, h):
    k1 = f(x, t)
    k2 = f(x + _scaled(h / 2, k1, x), t + h / 2)
    k3 = f(x + _scaled(h / 2, k2, x), t + h / 2)
    k4 = f(x + _scaled(h, k3, x), t + h)
    return x + _scaled(h / 6, k1 + 2 * k2 + 2 * k3 + k4, x), 4


_FIXED = {"euler": _euler, "midpoint": _midpoint, "heun2": _heun2, "rk4": _rk4}


def _scaled(h, k, like):
    """h·k in the state's dtype (so float32 states stay float32)."""
    return (h * k).astype(like.dtype, copy=False)


# Dormand–Prince 5(4) tableau
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((),
      (1 / 5,),
      (3 / 40, 9 / 40),
      (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B5 = _A[6] + (0.0,)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


def _error_norm(e, x, x_new, atol, rtol):
    scale = atol + rtol * np.maximum(np.abs(x), np.abs(x_new)).astype(np.float64)
    return float(np.sqrt(np.mean((e.astype(np.float64) / scale) ** 2)))


def _initial_step(f, x, t, k1, direction, atol, rtol):
    """Hairer–Nørsett–Wanner's starting step guess (one extra evaluation)."""
    scale = atol + rtol * np.abs(x).astype(np.float64)
    d0 = np.sqrt(np.mean((x / scale) ** 2))
    d1 = np.sqrt(np.mean((k1 / scale) ** 2))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    k2 = f(x + _scaled(direction * h0, k1, x), t + direction * h0)
    d2 = np.sqrt(np.mean(((k2 - k1) / scale) ** 2)) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1)


def _dopri5(f, x, t0, t1, atol, rtol, max_steps, safety=0.9, min_factor=0.2, max_factor=10.0):
    if atol <= 0 or rtol < 0:
        raise InputError(f"dopri5 needs atol > 0 and rtol >= 0, got atol={atol}, rtol={rtol}")
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    t = t0
    k1 = f(x, t)
    nfe = 1
    h = _initial_step(f, x, t, k1, direction, atol, rtol)
    nfe += 1
    n_steps = n_rejected = 0
    while direction * (t1 - t) > 1e-12 * max(1.0, span):
        if n_steps + n_rejected >= max_steps:
            raise FmqError(f"dopri5 did not reach t={t1} within max_steps={max_steps} (at t={t:.6g}, h={h:.3g})")
        h = min(h, abs(t1 - t))
        ks = [k1]
        for stage in range(1, 7):
            incr = sum(a * k for a, k in zip(_A[stage], ks) if a != 0.0)
            ks.append(f(x + _scaled(direction * h, incr, x), t + direction * h * _C[stage]))
        nfe += 6
        x_new = x + _scaled(direction * h, sum(b * k for b, k in zip(_B5, ks) if b != 0.0), x)
        err = _error_norm(direction * h * sum(e * k for e, k in zip(_E, ks) if e != 0.0), x, x_new, atol, rtol)
        if not np.isfinite(err):
            raise FmqError(f"dopri5: the velocity field produced non-finite values at t={t:.6g}")
        if err <= 1.0:
            t += direction * h
            x = x_new
            k1 = ks[6]          # FSAL: last stage is the first of the next step
            n_steps += 1
            factor = max_factor if err == 0.0 else min(max_factor, safety * err ** -0.2)
        else:
            n_rejected += 1
            factor = max(min_factor, safety * err ** -0.2)
        h *= factor
    return OdeResult(x, nfe, n_steps, n_rejected)
