"""Lipschitz constants: certified upper bounds ≥ exact / empirical values; convolution operator norms."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import FmqError
from fmq_np.nn.layers import Conv2d
from fmq_np.theory import lipschitz as lip
from fmq_np.theory import network as net


def conv_matrix(layer, size):
    """Dense matrix of a bias-free Conv2d layer on size×size inputs (float64), built from basis vectors."""
    c_in = layer.parameters()["weight"].shape[1]
    n = c_in * size * size
    basis = np.eye(n).reshape(n, c_in, size, size).transpose(1, 0, 2, 3).copy()
    out = layer.forward(basis, train=False)                 # (c_out, n, ho, wo)
    return out.transpose(1, 0, 2, 3).reshape(n, -1).T


@pytest.mark.parametrize("k,stride,up,size", [(3, 1, 1, 6), (3, 2, 1, 6), (3, 1, 2, 4), (1, 1, 1, 5), (5, 1, 1, 5)])
def test_conv_operator_norm_is_an_upper_bound(k, stride, up, size):
    layer = Conv2d(3, 4, k, stride=stride, up=up, rng=np.random.default_rng(k + stride + up)).astype(np.float64)
    layer.parameters()["bias"][:] = 0.0
    exact = np.linalg.norm(conv_matrix(layer, size), 2)
    bound = lip.conv_operator_norm(layer.parameters()["weight"], size, stride=stride, up=up)
    assert exact <= bound
    assert bound <= 1.6 * exact, (bound, exact)              # tightness on these small cases (measured 1.0–1.4)


def test_spectral_norm():
    a = np.diag([3.0, -5.0, 1.0]) @ np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    assert lip.spectral_norm(a) == pytest.approx(5.0)
    with pytest.raises(FmqError):
        lip.spectral_norm(np.ones(3))


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_upper_bounds_exceed_jacobian_norms(seed):
    m = fq.nn.MLPVelocity(dim=2, hidden=24, depth=3, seed=seed)
    params = m.parameters()
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1.5, 1.5, (64, 2))
    m64 = lip.float64_copy(m)
    xs, ts = lip.trajectory_points(m64, x0, 8)
    lo, hi = xs.min(axis=0) - 0.1, xs.max(axis=0) + 0.1
    lower = lip.jacobian_norm_lower(m64, xs, ts).max()
    boxed = lip.mlp_lipschitz_upper(params, lo, hi, splits=3)
    global_ = lip.mlp_lipschitz_upper(params)
    assert lower <= boxed * (1 + 1e-6) and boxed <= global_ * (1 + 1e-12)
    assert lip.lipschitz_lower(m, x0, steps=8) == pytest.approx(lower, rel=1e-6)


def test_jacobian_norm_lower_matches_dense_jacobian():
    m64 = lip.float64_copy(fq.nn.MLPVelocity(dim=3, hidden=16, depth=2, seed=3))
    x = np.random.default_rng(0).standard_normal((5, 3))
    t = np.linspace(0, 1, 5)
    est = lip.jacobian_norm_lower(m64, x, t, iters=50)
    h = 1e-6
    for i in range(5):
        cols = [(m64(x[i:i + 1] + h * e, t[i:i + 1]) - m64(x[i:i + 1] - h * e, t[i:i + 1]))[0] / (2 * h)
                for e in np.eye(3)]
        assert est[i] == pytest.approx(np.linalg.norm(np.stack(cols, 1), 2), rel=1e-6)


def test_silu_interval_helpers_are_exact_enclosures():
    rng = np.random.default_rng(0)
    lo = rng.uniform(-6, 6, 400)
    hi = lo + rng.exponential(2.0, 400)
    grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, 2001)
    f_lo, f_hi = net.silu_interval(lo, hi)
    d_lo, d_hi = net.silu_deriv_range(lo, hi)
    assert np.all(f_lo <= net.silu(grid).min(1)) and np.all(f_hi >= net.silu(grid).max(1))
    assert np.all(d_lo <= net.silu_deriv(grid).min(1)) and np.all(d_hi >= net.silu_deriv(grid).max(1))
    np.testing.assert_allclose(f_lo, net.silu(grid).min(1), atol=1e-6)
    np.testing.assert_allclose(d_hi, net.silu_deriv(grid).max(1), atol=1e-6)
    assert np.all(net.silu_slope(lo, hi) >= np.abs(net.silu_deriv(grid)).max(1))


def test_parameter_only_bound_refuses_the_unet():
    m = fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2), seed=0)
    with pytest.raises(FmqError, match="GroupNorm"):
        lip.lipschitz_upper(m.parameters())


def test_jacobian_interval_encloses_sampled_jacobians():
    params = {k: v.astype(np.float64) for k, v in fq.nn.MLPVelocity(dim=2, hidden=16, depth=3, seed=4)
              .parameters().items()}
    layers, f = net.mlp_layers(params), net.mlp_function(params)
    lo, hi = np.array([[-0.3, 0.2, 0.4]]), np.array([[0.1, 0.5, 0.4]])   # x-box × {t = 0.4}
    c, r = net.jacobian_interval(layers, lo, hi)
    rng = np.random.default_rng(0)
    x = rng.uniform(lo[0, :2], hi[0, :2], (200, 2))
    t = np.full(200, 0.4)
    h = 1e-6
    jac = np.stack([(f(x + h * e, t) - f(x - h * e, t)) / (2 * h) for e in np.eye(2)], axis=2)
    assert np.all(jac >= c - r - 1e-7) and np.all(jac <= c + r + 1e-7)
    mid = (lo + hi) / 2
    _, r_small = net.jacobian_interval(layers, mid - 0.01, mid + 0.01)
    assert np.all(r_small < r)                                     # a smaller box gives a narrower enclosure
