"""Grönwall / fixed-step factors: closed forms, limits, stability, and equality on linear fields."""
import math

import numpy as np
import pytest

from fmq_np.errors import FmqError
from fmq_np.flow.solvers import integrate
from fmq_np.theory import flow_bounds as fb


@pytest.mark.parametrize("L", [1e-12, 1e-6, 0.1, 1.0, 5.0, 50.0, 600.0])
def test_gronwall_factor_closed_form(L):
    assert fb.gronwall_factor(L) == pytest.approx(math.expm1(L) / L, rel=1e-12)
    assert fb.log_gronwall_factor(L) == pytest.approx(math.log(math.expm1(L) / L), rel=1e-12, abs=1e-15)


def test_limits_and_log_space():
    assert fb.gronwall_factor(0.0) == 1.0
    assert fb.gronwall_factor(1e-300) == 1.0
    assert fb.log_gronwall_factor(1e6) == pytest.approx(1e6 - math.log(1e6), rel=1e-15)
    assert fb.gronwall_factor(1e6) == math.inf
    assert fb.flow_bound(1e-300, 800.0) == pytest.approx(math.exp(math.log(1e-300) + 800 - math.log(800)))
    assert fb.flow_bound(0.0, 1e9) == 0.0
    for solver in fb.TABLEAUX:
        assert fb.discrete_factor(solver, 0.0, 17) == pytest.approx(1.0, rel=1e-14)
        assert fb.discrete_factor(solver, 1e-300, 17) == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("L,N", [(0.5, 1), (2.0, 10), (7.0, 100), (300.0, 50)])
def test_euler_factor_closed_form(L, N):
    expected = math.expm1(N * math.log1p(L / N)) / L
    assert fb.discrete_factor("euler", L, N) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("solver", list(fb.TABLEAUX))
def test_discrete_factor_tends_to_gronwall(solver):
    assert fb.discrete_factor(solver, 3.0, 4000) == pytest.approx(fb.gronwall_factor(3.0), rel=2e-3)
    assert fb.discrete_factor(solver, 3.0, 5) <= fb.gronwall_factor(3.0) * (1 + 1e-12)


@pytest.mark.parametrize("solver", list(fb.TABLEAUX))
@pytest.mark.parametrize("L,N", [(0.0, 7), (0.8, 5), (2.5, 20)])
def test_linear_field_bound_is_exact(solver, L, N):
    """v = L·x vs v̂ = L·x + c: the solvers' actual drift equals ‖c‖·factor (all inequalities are equalities)."""
    c = np.array([0.3, -0.4])                         # ‖c‖ = 0.5 = ε
    x0 = np.array([[1.0, 2.0], [-0.5, 0.25]])
    x1 = integrate(lambda x, t: L * x, x0, solver=solver, steps=N).x
    x1_hat = integrate(lambda x, t: L * x + c, x0, solver=solver, steps=N).x
    drift = np.linalg.norm(x1_hat - x1, axis=1)
    assert drift == pytest.approx(fb.flow_bound(0.5, L, solver, N), rel=1e-12)


@pytest.mark.parametrize("L", [0.0, 1.3])
def test_continuous_linear_field(L):
    c = np.array([[0.6, 0.8]])
    x1 = integrate(lambda x, t: L * x, np.zeros((1, 2)), solver="rk4", steps=400).x
    x1_hat = integrate(lambda x, t: L * x + c, np.zeros((1, 2)), solver="rk4", steps=400).x
    assert np.linalg.norm(x1_hat - x1) == pytest.approx(fb.flow_bound(1.0, L), rel=1e-9)


def test_scaling_form():
    d = fb.drift_scaling(np.array([2, 3]), 4.0, 1.5)
    np.testing.assert_allclose(d, 1.5 * 2.0 * np.array([0.25, 0.125]))


@pytest.mark.parametrize("call", [lambda: fb.gronwall_factor(-1.0), lambda: fb.gronwall_factor(float("nan")),
                                  lambda: fb.flow_bound(1.0, 1.0, "dopri5", 10),
                                  lambda: fb.flow_bound(1.0, 1.0, "euler"),
                                  lambda: fb.discrete_factor("euler", 1.0, 0),
                                  lambda: fb.flow_bound(float("inf"), 1.0)])
def test_bad_input(call):
    with pytest.raises(FmqError):
        call()
