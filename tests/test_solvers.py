"""ODE solvers on analytic velocity fields with known solutions: accuracy and convergence order."""
import numpy as np
import pytest

from fmq_np import FmqError, InputError
from fmq_np.flow import integrate


def field(x, t):
    """dx/dt = x·cos(t) + sin(t)·[1, −1]: a time-dependent linear field."""
    return x * np.cos(t) + np.sin(t) * np.array([1.0, -1.0])


def exact(x0, t):
    # x(t) = e^{sin t}·(x0 + c∫_0^t e^{−sin s} sin s ds); the integral by dense Simpson quadrature
    s = np.linspace(0.0, t, 20001)
    integrand = np.exp(-np.sin(s)) * np.sin(s)
    h = s[1] - s[0]
    integral = h / 3 * (integrand[0] + integrand[-1] + 4 * integrand[1:-1:2].sum() + 2 * integrand[2:-1:2].sum())
    return np.exp(np.sin(t)) * (x0 + integral * np.array([1.0, -1.0]))


X0 = np.array([[0.3, -1.2], [2.0, 0.5]])
TARGET = exact(X0, 1.0)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun2", 2), ("rk4", 4)])
def test_fixed_step_convergence_order(solver, order):
    errors = [np.abs(integrate(field, X0, solver=solver, steps=n).x - TARGET).max() for n in (16, 32, 64)]
    observed = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(observed - order) < 0.25), observed


@pytest.mark.parametrize("solver,evals", [("euler", 1), ("midpoint", 2), ("heun2", 2), ("rk4", 4)])
def test_fixed_step_nfe(solver, evals):
    calls = []
    result = integrate(lambda x, t: calls.append(t) or field(x, t), X0, solver=solver, steps=10)
    assert result.nfe == len(calls) == 10 * evals
    assert min(calls) == 0.0 and max(calls) <= 1.0


@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_dopri5_meets_tolerance(tol):
    result = integrate(field, X0, solver="dopri5", atol=tol, rtol=tol)
    assert np.abs(result.x - TARGET).max() < 50 * tol
    assert result.n_steps > 0


def test_dopri5_tighter_tolerance_costs_more_and_is_more_accurate():
    loose = integrate(field, X0, solver="dopri5", atol=1e-3, rtol=1e-3)
    tight = integrate(field, X0, solver="dopri5", atol=1e-9, rtol=1e-9)
    assert tight.nfe > loose.nfe
    assert np.abs(tight.x - TARGET).max() < np.abs(loose.x - TARGET).max()


def test_dopri5_stiff_start_rejects_and_recovers():
    # fast decay towards sin(t): the step controller must reject large guesses yet finish accurately
    lam = 50.0
    f = lambda x, t: -lam * (x - np.sin(t))  # noqa: E731
    result = integrate(f, np.array([1.0]), solver="dopri5", atol=1e-8, rtol=1e-8)
    # exact: x = sin t − (cos t − λ sin t)/(1+λ²)·λ ... solved in closed form
    t = 1.0
    particular = lam * (lam * np.sin(t) - np.cos(t)) / (1 + lam ** 2)
    c = 1.0 - lam * (-1.0) / (1 + lam ** 2)
    assert abs(result.x[0] - (particular + c * np.exp(-lam * t))) < 1e-6


def test_float32_state_stays_float32():
    x0 = X0.astype(np.float32)
    for solver in ("euler", "heun2", "rk4", "dopri5"):
        out = integrate(lambda x, t: (x * np.cos(t)).astype(np.float32), x0, solver=solver, steps=8).x
        assert out.dtype == np.float32


def test_bad_solver_and_steps():
    with pytest.raises(InputError, match="unknown solver"):
        integrate(field, X0, solver="leapfrog", steps=10)
    with pytest.raises(InputError, match="steps"):
        integrate(field, X0, solver="euler", steps=0)


def test_a_failed_integration_is_an_fmq_error_but_not_an_input_error():
    wiggly = lambda x, t: 40.0 * np.cos(40.0 * t) * x  # noqa: E731  (needs many dopri5 steps on [0, 1])
    with pytest.raises(FmqError, match="max_steps=2") as info:
        integrate(wiggly, X0, solver="dopri5", max_steps=2)
    assert not isinstance(info.value, InputError)
    with pytest.raises(FmqError, match="non-finite") as info:
        integrate(lambda x, t: np.full_like(x, np.nan), X0, solver="dopri5")
    assert not isinstance(info.value, InputError)
