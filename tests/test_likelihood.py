"""log_likelihood / divergence: an analytic Gaussian flow, finite differences, Hutchinson vs exact, reproducibility."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np import InputError
from fmq_np.flow import divergence, log_likelihood

F64 = np.float64


class LinearGaussianFlow:
    """v(x, t) = A(t)(x − t·mu) + mu with A(t) = (L − I) M(t)⁻¹, M(t) = (1 − t)I + tL (L lower triangular,
    positive diagonal). Its flow is x_t = M(t) z + t·mu, so it carries N(0, I) at t = 0 to N(mu, L Lᵀ) at t = 1.

    Speaks the velocity-model protocol: config(), dtype, forward/__call__(x, t), backward(dv) → dvᵀ ∂v/∂x,
    gradients() (one dummy entry, to see that it is restored)."""
    dtype = np.dtype(F64)

    def __init__(self, L, mu):
        self.L, self.mu, self.d = np.asarray(L, F64), np.asarray(mu, F64), len(mu)
        self._grads = {"dummy": np.full(3, 0.5)}
        self._A = None

    def config(self):
        return {"dim": self.d}

    def gradients(self):
        return self._grads

    def forward(self, x, t):
        t = np.asarray(t, F64)
        eye = np.eye(self.d)
        M = (1 - t)[:, None, None] * eye + t[:, None, None] * self.L
        self._A = (self.L - eye) @ np.linalg.inv(M)
        self._grads["dummy"][:] = -1.0       # as real models do: forward/backward touch the gradients
        return np.einsum("nij,nj->ni", self._A, x - t[:, None] * self.mu) + self.mu

    __call__ = forward

    def backward(self, dv):
        self._grads["dummy"][:] = 7.0
        return np.einsum("nij,ni->nj", self._A, dv)

    def log_density(self, x):
        z = np.linalg.solve(self.L, (x - self.mu).T).T
        logdet = np.sum(np.log(np.diag(self.L)))
        return -0.5 * np.sum(z * z, axis=1) - logdet - 0.5 * self.d * np.log(2 * np.pi), z


def _linear_case():
    L = np.array([[1.6, 0.0, 0.0], [0.7, 0.5, 0.0], [-0.4, 0.3, 1.2]])
    flow = LinearGaussianFlow(L, mu=np.array([0.5, -1.0, 2.0]))
    x = np.random.default_rng(0).standard_normal((20, 3)) @ L.T + flow.mu
    return flow, x


@pytest.mark.parametrize("solver,steps,tol", [("rk4", 40, 1e-7), ("heun2", 200, 1e-4), ("midpoint", 200, 1e-4),
                                              ("euler", 400, 2e-2), ("dopri5", 10, 1e-5)])
def test_exact_matches_analytic_gaussian(solver, steps, tol):
    flow, x = _linear_case()
    ref, z = flow.log_density(x)
    res = log_likelihood(flow, x, solver=solver, steps=steps, atol=1e-9, rtol=1e-9)
    assert res.log_p.dtype == F64 and res.log_p.shape == (20,)
    np.testing.assert_allclose(res.log_p, ref, atol=tol, rtol=0)
    np.testing.assert_allclose(res.x0, z, atol=tol * 10, rtol=0)
    np.testing.assert_allclose(res.log_p0 + res.delta, res.log_p, rtol=1e-12)
    assert flow.gradients()["dummy"].tolist() == [0.5, 0.5, 0.5]


def test_bits_per_dim_definition():
    flow, x = _linear_case()
    res = log_likelihood(flow, x, solver="rk4", steps=20)
    np.testing.assert_allclose(res.bits_per_dim, -res.log_p / (3 * np.log(2)), rtol=1e-12)
    pix = log_likelihood(flow, x, solver="rk4", steps=20, levels=256)
    np.testing.assert_allclose(pix.bits_per_dim - res.bits_per_dim, np.log2(127.5), rtol=1e-12)
    assert res.mean_bits_per_dim == pytest.approx(np.mean(res.bits_per_dim))


def _fd_divergence(model, x, t, h=1e-5):
    """Σ_i ∂v_i/∂x_i by central differences (float64 model)."""
    n, d = len(x), x[0].size
    tt = np.full(n, t)
    div = np.zeros(n)
    for i in range(d):
        e = np.zeros(d)
        e[i] = h
        e = e.reshape(x.shape[1:])
        dv = (model(x + e, tt) - model(x - e, tt)).reshape(n, d)
        div += dv[:, i] / (2 * h)
    return div


def _fd_hutchinson(model, x, t, probes, h=1e-5):
    """mean_p ε_pᵀ J ε_p by central differences along each probe."""
    tt = np.full(len(x), t)
    est = [np.sum((probe * (model(x + h * probe, tt) - model(x - h * probe, tt))).reshape(len(x), -1), axis=1)
           / (2 * h) for probe in probes]
    return np.mean(est, axis=0)


def test_exact_divergence_matches_finite_differences_mlp():
    m = fq.nn.MLPVelocity(dim=3, hidden=16, depth=2, seed=1).astype(F64)
    x = np.random.default_rng(1).standard_normal((6, 3))
    for t in (0.0, 0.37, 1.0):
        div = divergence(m, x, t)
        assert div.dtype == F64 and div.shape == (6,)
        np.testing.assert_allclose(div, _fd_divergence(m, x, t), rtol=1e-6, atol=1e-8)
    # blocks of dims (max_rows smaller than n·D) give the same trace
    np.testing.assert_allclose(divergence(m, x, 0.37, max_rows=6), divergence(m, x, 0.37), rtol=1e-12)


def test_divergence_matches_finite_differences_unet():
    m = fq.nn.UNetVelocity(channels=1, size=4, width=8, mults=(1, 2), seed=2).astype(F64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 1, 4, 4))
    np.testing.assert_allclose(divergence(m, x, 0.6), _fd_divergence(m, x, 0.6), rtol=1e-5, atol=1e-6)
    probes = rng.choice([-1.0, 1.0], size=(3, 2, 1, 4, 4))
    np.testing.assert_allclose(divergence(m, x, 0.6, probes=probes), _fd_hutchinson(m, x, 0.6, probes),
                               rtol=1e-5, atol=1e-6)


def test_hutchinson_of_linear_field_is_quadratic_form():
    flow, x = _linear_case()
    flow.forward(x[:2], np.full(2, 0.4))
    A = flow._A
    probes = np.random.default_rng(5).standard_normal((4, 2, 3))
    expected = np.mean(np.einsum("pni,nij,pnj->pn", probes, A, probes), axis=0)
    np.testing.assert_allclose(divergence(flow, x[:2], 0.4, probes=probes), expected, rtol=1e-12)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_mean_matches_exact_on_mlp(probe):
    m = fq.nn.MLPVelocity(dim=3, hidden=16, depth=2, seed=3).astype(F64)
    points = np.random.default_rng(3).standard_normal((3, 3))
    reps = 300
    x = np.repeat(points, reps, axis=0)          # every copy gets its own probe: independent estimates
    exact = log_likelihood(m, points, solver="heun2", steps=8).log_p
    est = log_likelihood(m, x, method="hutchinson", probe=probe, solver="heun2", steps=8, seed=4).log_p
    est = est.reshape(3, reps)
    spread = est.std(axis=1, ddof=1)
    assert np.all(spread > 1e-3)                 # the estimator is noisy, so the check below has teeth
    np.testing.assert_array_less(np.abs(est.mean(axis=1) - exact), 4.5 * spread / np.sqrt(reps))
    # more probes per sample shrink the spread
    many = log_likelihood(m, x[:60], method="hutchinson", probe=probe, n_probes=16, solver="heun2", steps=8,
                          seed=4).log_p
    assert many.std(ddof=1) < 0.5 * est[0, :60].std(ddof=1)


def test_seeded_reproducibility_and_batching():
    m = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=0)
    x = fq.datasets.load("moons", n=30, seed=0)
    kw = dict(method="hutchinson", solver="midpoint", steps=6)
    a = log_likelihood(m, x, seed=3, **kw)
    b = log_likelihood(m, x, seed=3, **kw)
    np.testing.assert_array_equal(a.log_p, b.log_p)
    assert not np.allclose(a.log_p, log_likelihood(m, x, seed=4, **kw).log_p)
    # probes are drawn per sample: batching and a prefix of the data see the same probes
    np.testing.assert_allclose(log_likelihood(m, x, seed=3, batch_size=7, **kw).log_p, a.log_p, rtol=1e-5)
    np.testing.assert_allclose(log_likelihood(m, x[:5], seed=3, **kw).log_p, a.log_p[:5], rtol=1e-5)
    e1 = log_likelihood(m, x, solver="midpoint", steps=6)
    np.testing.assert_array_equal(e1.log_p, log_likelihood(m, x, solver="midpoint", steps=6).log_p)


def test_gradients_and_parameters_untouched():
    m = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=0)
    for g in m.gradients().values():
        g[...] = 0.25
    before = {k: v.copy() for k, v in m.parameters().items()}
    x = fq.datasets.load("moons", n=10, seed=0)
    log_likelihood(m, x, steps=3)
    log_likelihood(m, x, method="hutchinson", steps=3)
    divergence(m, x, 0.5)
    assert all(np.all(g == np.float32(0.25)) for g in m.gradients().values())
    assert all(np.array_equal(before[k], v) for k, v in m.parameters().items())


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="trace"), "unknown likelihood method"),
    (dict(solver="leapfrog"), "unknown solver"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(method="hutchinson", n_probes=0), "n_probes"),
    (dict(n_probes=4), "n_probes=4 applies to method='hutchinson'"),
    (dict(seed=-1), "seed"),
    (dict(probe="sphere"), "unknown probe"),
    (dict(batch_size=0), "batch_size"),
    (dict(levels=1), "levels"),
    (dict(max_rows=0), "max_rows"),
])
def test_bad_arguments(kwargs, match):
    m = fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0)
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(InputError, match=match):
        log_likelihood(m, x, **kwargs)


def test_bad_data():
    m = fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0)
    for bad in (np.zeros((4, 3), np.float32), np.zeros((0, 2), np.float32), np.array([[np.nan, 0.0]]),
                np.zeros((4, 2), np.int64)):
        with pytest.raises(InputError, match="x "):
            log_likelihood(m, bad)
    with pytest.raises(InputError, match="probes must have shape"):
        divergence(m, np.zeros((4, 2), np.float32), 0.5, probes=np.ones((1, 3, 2)))
    with pytest.raises(InputError, match="t must be"):
        divergence(m, np.zeros((4, 2), np.float32), np.zeros(3))
