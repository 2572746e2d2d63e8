"""U-Net bounds (fmq_np.theory.unet_bounds, image_intervals, the stage tube): every enclosure is checked against
sampled points of the float64 model — outputs inside the output interval, ‖v̂ − v‖ ≤ ε, ‖v(x) − v(y)‖ ≤ L‖x − y‖,
group variances inside their bounds, drift ≤ the tube bound — on small random U-Nets with randomised GroupNorm
parameters, quantized by fmq_np.quant."""
import json

import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import FmqError
from fmq_np.nn.layers import Conv2d
from fmq_np.theory import flow_bounds as fb
from fmq_np.theory import image_intervals as ii
from fmq_np.theory.lipschitz import float64_copy
from fmq_np.theory.tube import mlp_tube_bound, unet_tube_bound
from fmq_np.theory.unet_bounds import UNetCertifier, UNetPair

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def unet():
    """8×8 single-channel U-Net, width 8, 2 groups, with GroupNorm scales/shifts and weights drawn at random (a
    fresh model has GroupNorm weight 1, bias 0, which would hide the Δγ, Δβ terms)."""
    m = fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2), groups=2, time_dim=16, seed=3)
    rng = np.random.default_rng(3)
    params = {}
    for k, v in m.parameters().items():
        if ".norm" in k or k.startswith("norm_out"):
            v = (1.0 + 0.3 * rng.standard_normal(v.shape)) if k.endswith("weight") else 0.2 * rng.standard_normal(
                v.shape)
        params[k] = np.asarray(v, np.float32)
    m.load_parameters(params)
    return m


def dequantized(model, method, bits):
    qm = fq.quant.quantize_model(model.parameters(), bits=bits, method=method)
    return {k: np.asarray(v, np.float64) for k, v in qm.dequantize().items()}


def f64(model, params=None):
    m = float64_copy(model)
    if params is not None:
        m.load_parameters(params)
    return m


@pytest.mark.parametrize("k,stride,up", [(3, 1, 1), (3, 2, 1), (3, 1, 2), (1, 1, 1)])
def test_conv2d_matches_the_layer(k, stride, up):
    rng = np.random.default_rng(k + stride + up)
    layer = Conv2d(3, 5, k, stride=stride, up=up, rng=rng).astype(np.float64)
    x = rng.standard_normal((3, 2, 8, 8))
    w, b = layer.parameters()["weight"], layer.parameters()["bias"]
    ref = layer.forward(x, train=False)
    np.testing.assert_allclose(ii.conv2d(x, w, stride, up=up) + b[:, None, None, None], ref, atol=1e-12)
    lo, hi = ii.conv_interval(w, x - 0.1, x + 0.1, stride, up)
    for _ in range(20):
        y = ii.conv2d(x + rng.uniform(-0.1, 0.1, x.shape), w, stride, up=up)
        assert np.all((lo <= y) & (y <= hi))


def test_group_variance_bounds_contain_sampled_variances():
    rng = np.random.default_rng(0)
    for radius in (1e-3, 0.1, 1.0, 5.0):
        c = rng.standard_normal((4, 3, 4, 4))
        r = radius * rng.uniform(0, 1, c.shape)
        rho = np.sqrt((r ** 2).sum(axis=(0, 2, 3))) * 0.5      # a ball smaller than the box: both constrain
        v_lo, v_hi = ii.group_variance_bounds(c - r, c + r, 2)
        b_lo, b_hi = ii.group_variance_bounds(c - r, c + r, 2, c, rho)
        assert np.all(b_lo >= v_lo) and np.all(b_hi <= v_hi)
        for _ in range(200):
            x = c + r * rng.choice([-1.0, 1.0, 0.3], size=c.shape)              # corners and inner points
            var = x.reshape(2, 2, 3, 16).var(axis=(1, 3))
            assert np.all((v_lo <= var) & (var <= v_hi))
            d = x - c
            norm = np.sqrt((d ** 2).sum(axis=(0, 2, 3)))
            x = c + d * np.minimum(1.0, rho / np.maximum(norm, 1e-300))[None, :, None, None]
            var = x.reshape(2, 2, 3, 16).var(axis=(1, 3))
            assert np.all((b_lo <= var) & (var <= b_hi))
    point = rng.standard_normal((4, 3, 4, 4))
    lo, hi = ii.group_variance_bounds(point, point, 2)
    np.testing.assert_allclose(lo, point.reshape(2, 2, 3, 16).var(axis=(1, 3)), rtol=1e-9)
    np.testing.assert_allclose(hi, lo, rtol=1e-9, atol=1e-11)


def test_trig_intervals_are_exact():
    rng = np.random.default_rng(1)
    lo = rng.uniform(-20, 20, 500)
    hi = lo + rng.choice([0.0, 0.01, 1.0, 4.0, 10.0], size=500)
    grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, 4001)
    for fn, ref in ((ii.cos_interval, np.cos), (ii.sin_interval, np.sin)):
        a, b = fn(lo, hi)
        assert np.all(a <= ref(grid).min(1)) and np.all(b >= ref(grid).max(1))
        np.testing.assert_allclose(a, ref(grid).min(1), atol=1e-5)
        np.testing.assert_allclose(b, ref(grid).max(1), atol=1e-5)


def test_point_evaluation_is_the_model(unet):
    x = np.random.default_rng(2).standard_normal((3,) + SHAPE)
    t = np.array([0.0, 0.37, 1.0])
    b = UNetCertifier(unet, unet.parameters()).bounds(x, 0.0, t)
    v = f64(unet)(x, t)
    np.testing.assert_allclose(b.out_c, v, rtol=1e-10, atol=1e-10)
    assert np.all((b.out_lo <= v) & (v <= b.out_hi))
    assert np.all(b.eps < 1e-6) and np.all(b.var_lo > 0)


@pytest.mark.parametrize("method,bits", [("uniform", 4), ("ot", 2), ("log2", 3)])
def test_box_bounds_contain_sampled_points(unet, method, bits):
    params_hat = dequantized(unet, method, bits)
    v, v_hat = f64(unet), f64(unet, params_hat)
    cert = UNetCertifier(unet, params_hat)
    rng = np.random.default_rng(bits)
    center = rng.standard_normal((3,) + SHAPE)
    for radius, t_lo, t_hi in ((1e-3, 0.3, 0.3), (0.05, 0.2, 0.21), (0.5, 0.0, 1.0)):
        b = cert.bounds(center, radius, np.full(3, t_lo), np.full(3, t_hi))
        for _ in range(8):
            x = center + rng.uniform(-radius, radius, center.shape)
            y = center + rng.uniform(-radius, radius, center.shape)
            t = rng.uniform(t_lo, t_hi, 3)
            out = v(x, t)
            assert np.all((b.out_lo <= out) & (out <= b.out_hi))
            err = np.linalg.norm((v_hat(x, t) - out).reshape(3, -1), axis=1)
            assert np.all(err <= b.eps)
            step = np.linalg.norm((v(y, t) - out).reshape(3, -1), axis=1)
            assert np.all(step <= b.lipschitz * np.linalg.norm((y - x).reshape(3, -1), axis=1))


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("ot", 3)])
def test_stage_error_on_balls(unet, method, bits):
    params_hat = dequantized(unet, method, bits)
    v, v_hat = f64(unet), f64(unet, params_hat)
    pair = UNetPair(unet, params_hat)
    rng = np.random.default_rng(5)
    center = rng.standard_normal((4,) + SHAPE)
    t = rng.uniform(0, 1, 4)
    base = v(center, t)
    at_center = np.linalg.norm((v_hat(center, t) - base).reshape(4, -1), axis=1)
    np.testing.assert_allclose(pair.stage_error(center, np.zeros(4), t), at_center, rtol=1e-8)
    rho = np.array([1e-4, 1e-3, 1e-2, 0.1])
    bound = pair.stage_error(center, rho, t)
    for _ in range(10):
        d = rng.standard_normal(center.shape)
        d *= (rho / np.linalg.norm(d.reshape(4, -1), axis=1))[:, None, None, None]     # on the sphere
        worst = np.linalg.norm((v_hat(center + d, t) - base).reshape(4, -1), axis=1)
        assert np.all(worst <= bound)


@pytest.mark.parametrize("solver,steps", [("euler", 3), ("heun2", 2)])
def test_unet_tube_bound_holds(unet, solver, steps):
    params_hat = dequantized(unet, "uniform", 8)
    x0 = np.random.default_rng(7).standard_normal((3,) + SHAPE)
    tube = unet_tube_bound(unet, params_hat, x0, solver, steps)
    _, _, x1, x1_hat = fb.pathwise_drift(f64(unet), f64(unet, params_hat), x0, solver=solver, steps=steps)
    drift = np.linalg.norm((x1_hat - x1).reshape(3, -1), axis=1)
    assert np.all(drift <= tube.per_sample) and np.all(tube.history[1] > 0)
    assert np.all(np.diff(tube.history, axis=0) >= 0)


def test_global_box_bound(unet):
    params_hat = dequantized(unet, "uniform", 4)
    eps, L, per = UNetPair(unet, params_hat).error_bound(-2.0, 2.0, (0.0, 1.0), t_splits=2)
    assert per.eps.shape == (2,) and eps == per.eps.max()
    rng = np.random.default_rng(8)
    x = rng.uniform(-2, 2, (16,) + SHAPE)
    t = rng.uniform(0, 1, 16)
    assert np.linalg.norm((f64(unet, params_hat)(x, t) - f64(unet)(x, t)).reshape(16, -1), axis=1).max() <= eps
    assert np.isfinite(L) and L > 1.0


def test_mlp_tube_equals_the_discrete_factor_on_a_linear_network():
    """v = A x with A = 0.5·I and a constant error c: the stage recursion gives exactly ε·F(solver, L, N)."""
    w = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    params = {"layers.0.weight": w, "layers.0.bias": np.zeros(2)}
    params_hat = {"layers.0.weight": w, "layers.0.bias": np.array([0.03, -0.04])}
    for solver in fb.TABLEAUX:
        tube = mlp_tube_bound(params, params_hat, np.zeros((2, 2)), solver, 4)
        np.testing.assert_allclose(tube.per_sample, fb.flow_bound(0.05, 0.5, solver, 4), rtol=1e-7)


def test_run_bounds_on_a_unet(unet, tmp_path):
    from fmq_np.theory.cli_bounds import run_bounds
    model_path, q_path, json_path = tmp_path / "u.h5", tmp_path / "q.h5", tmp_path / "b.json"
    fq.io.save(model_path, unet)
    fq.io.save(q_path, fq.quant.quantize_model(unet.parameters(), bits=8, method="uniform"))
    text = run_bounds(model_path, q_path, json_out=json_path, n_samples=3, solver="heun2", steps=2, splits=2)
    assert "tube bound (3 draws)" in text and "conv_in.weight" in text
    flow = json.loads(json_path.read_text())["flow"]
    assert flow["eps_measured_box"] <= flow["eps_bound"] and flow["lipschitz_lower"] <= flow["lipschitz_upper"]
    assert flow["tube_drift_max"] <= float(flow["tube_bound_max"])
    assert flow["drift_max"] <= float(flow["flow_bound"])


def test_bad_input(unet):
    params_hat = dequantized(unet, "uniform", 4)
    with pytest.raises(FmqError, match="UNetVelocity"):
        UNetCertifier(fq.nn.MLPVelocity(dim=2, hidden=4, depth=1), params_hat)
    with pytest.raises(FmqError, match="names"):
        UNetCertifier(unet, {k: v for k, v in params_hat.items() if k != "conv_in.bias"})
    cert = UNetCertifier(unet, params_hat)
    with pytest.raises(FmqError, match="center"):
        cert.bounds(np.zeros((2, 1, 4, 4)))
    with pytest.raises(FmqError, match="radius"):
        cert.bounds(np.zeros((2,) + SHAPE), -1.0)
    with pytest.raises(FmqError, match="t_lo"):
        cert.bounds(np.zeros((2,) + SHAPE), 0.0, 0.5, 0.4)
    with pytest.raises(FmqError, match="t_splits"):
        UNetPair(unet, params_hat).error_bound(-1, 1, t_splits=0)
    with pytest.raises(FmqError, match="solver"):
        unet_tube_bound(unet, params_hat, np.zeros((2,) + SHAPE), "dopri5", 2)
