"""Certified bounds vs measurement on a small trained MLP: ε bound ≥ sup-sample of ‖v − v̂‖ on the box, flow bound
≥ measured pathwise drift (same noise, same solver), L upper ≥ empirical lower — for every method × bit width."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import FmqError
from fmq_np.theory import flow_bounds as fb
from fmq_np.theory import lipschitz as lip
from fmq_np.theory import network as net
from fmq_np.theory.tube import euler_tube_bound, mlp_tube_bound

METHODS = ("ot", "ot-opt", "uniform", "pwl", "log2")
SPLITS = 8
TIGHTNESS = {}


@pytest.fixture(scope="module")
def trained():
    data = fq.datasets.load("moons", n=2000, seed=0)
    m = fq.nn.MLPVelocity(dim=2, hidden=32, depth=2, seed=0)
    fq.flow.fit(m, data, steps=300, batch_size=128, lr=3e-3, seed=0, progress=False)
    return m


@pytest.fixture(scope="module")
def quantized(trained):
    quant = pytest.importorskip("fmq_np.quant")
    out = {}

    def get(method, bits):
        if (method, bits) not in out:
            qm = quant.quantize_model(trained.parameters(), bits=bits, method=method)
            out[method, bits] = {k: np.asarray(v, np.float64) for k, v in qm.dequantize().items()}
        return out[method, bits]
    return get


def pair(model, params_hat):
    """float64 NumPy functions of the float and the quantized network (fast; equal to the model, see below)."""
    params = {k: v.astype(np.float64) for k, v in model.parameters().items()}
    return net.mlp_function(params), net.mlp_function(params_hat)


def test_mlp_function_is_the_model(trained):
    x = np.random.default_rng(0).standard_normal((50, 2))
    t = np.linspace(0, 1, 50)
    f = net.mlp_function({k: v.astype(np.float64) for k, v in trained.parameters().items()})
    np.testing.assert_allclose(f(x, t), lip.float64_copy(trained)(x, t), rtol=1e-12, atol=1e-12)


CASES = [(m, b) for m in METHODS for b in (2, 4, 8)
         if (m, b) not in {("ot", 8), ("ot-opt", 8)}]     # 256 levels > 33 values per channel: exact, error 0


@pytest.mark.parametrize("method,bits", CASES)
def test_bounds_hold_on_trained_mlp(trained, quantized, method, bits):
    params = {k: v.astype(np.float64) for k, v in trained.parameters().items()}
    params_hat = quantized(method, bits)
    m64, m64_hat = pair(trained, params_hat)
    x0 = np.random.default_rng(1).standard_normal((128, 2))
    solvers = (("euler", 10), ("heun2", 5))
    visited = [fb.visited_points(m, x0, solver=s, steps=n) for m in (m64, m64_hat) for s, n in solvers]
    pts = np.concatenate([v[0] for v in visited])
    lo, hi = pts.min(axis=0) - 0.3, pts.max(axis=0) + 0.3

    bound = net.mlp_error_bound(params, params_hat, lo, hi, splits=SPLITS)
    rng = np.random.default_rng(bits)
    xs = np.concatenate([rng.uniform(lo, hi, (4000, 2)), pts])
    ts = np.concatenate([rng.uniform(0, 1, 4000), np.concatenate([v[1] for v in visited])])
    eps_measured = net.measured_error(m64, m64_hat, xs, ts)[0]
    assert eps_measured <= bound.eps
    assert all(np.diff(bound.layer_delta[:1]) >= 0)

    L_up = lip.mlp_lipschitz_upper(params, lo, hi, splits=4)
    L_low = lip.jacobian_norm_lower(m64, pts[::7], np.concatenate([v[1] for v in visited])[::7], iters=10).max()
    assert L_low <= L_up

    for solver, steps in solvers:
        rms, mx, x1, x1_hat = fb.pathwise_drift(m64, m64_hat, x0, solver=solver, steps=steps)
        flow = fb.flow_bound(bound.eps, L_up, solver, steps)
        assert rms <= mx <= flow
        if solver == "euler":
            tube = euler_tube_bound(params, params_hat, x0, steps)
            per_sample = np.linalg.norm(x1_hat - x1, axis=1)
            assert np.all(per_sample <= tube.per_sample)
            capped = euler_tube_bound(params, params_hat, x0, steps, fallback=(bound.eps, L_up))
            assert np.all(per_sample <= capped.per_sample) and capped.max <= min(tube.max, flow) * (1 + 1e-9)
        if mx > 0:
            TIGHTNESS[method, bits, solver] = (bound.eps / eps_measured, flow / mx,
                                               tube.max / mx if solver == "euler" else None)


@pytest.mark.parametrize("method,bits", [("ot", 2), ("uniform", 4), ("log2", 8)])
def test_stage_tube_holds_for_every_solver(trained, quantized, method, bits):
    """The stage-recursion tube (any fixed-step solver) bounds each draw's drift, measured with fmq_np's solvers."""
    params = {k: v.astype(np.float64) for k, v in trained.parameters().items()}
    params_hat = quantized(method, bits)
    m64, m64_hat = pair(trained, params_hat)
    x0 = np.random.default_rng(2).standard_normal((64, 2))
    for solver, steps in (("euler", 8), ("midpoint", 4), ("heun2", 4), ("rk4", 3)):
        _, mx, x1, x1_hat = fb.pathwise_drift(m64, m64_hat, x0, solver=solver, steps=steps)
        tube = mlp_tube_bound(params, params_hat, x0, solver, steps)
        assert np.all(np.linalg.norm(x1_hat - x1, axis=1) <= tube.per_sample)
        TIGHTNESS[method, bits, solver + " stage tube"] = (None, None, tube.max / mx)


def test_report_tightness():
    """Not a check: prints bound/measured for ε and for the drift (run with -s to see them)."""
    for key, (eps_ratio, flow_ratio, tube_ratio) in sorted(TIGHTNESS.items()):
        tube = "" if tube_ratio is None else f", tube bound/measured {tube_ratio:.2f}"
        head = "" if eps_ratio is None else f"eps bound/measured {eps_ratio:.2f}, drift bound/measured {flow_ratio:.1f}"
        print(f"{key}: {head}{tube}")


def test_tube_bound_on_a_linear_network():
    """One linear layer v = A x + c (no hidden SiLU is exercised by a 0-width path): the Euler recursion is exact
    for a constant velocity error when I + hA is a scaled identity."""
    w = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    params = {"layers.0.weight": w, "layers.0.bias": np.zeros(2)}
    params_hat = {"layers.0.weight": w, "layers.0.bias": np.array([0.03, -0.04])}
    tube = euler_tube_bound(params, params_hat, np.zeros((3, 2)), 10)
    np.testing.assert_allclose(tube.per_sample, fb.flow_bound(0.05, 0.5, "euler", 10), rtol=1e-8)


def test_splits_tighten_and_zero_error(trained, quantized):
    params = {k: v.astype(np.float64) for k, v in trained.parameters().items()}
    params_hat = quantized("uniform", 4)
    coarse = net.mlp_error_bound(params, params_hat, [-3, -3], [3, 3], splits=1).eps
    fine = net.mlp_error_bound(params, params_hat, [-3, -3], [3, 3], splits=6).eps
    assert fine < coarse
    assert net.mlp_error_bound(params, params, [-3, -3], [3, 3]).eps == 0.0


def test_bad_input(trained):
    params = trained.parameters()
    other = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=0).parameters()
    with pytest.raises(FmqError, match="shape"):
        net.mlp_error_bound(params, other, [-1, -1], [1, 1])
    bad = dict(params)
    bad["layers.0.bias"] = np.full_like(params["layers.0.bias"], np.nan)
    with pytest.raises(FmqError, match="NaN"):
        net.mlp_error_bound(params, bad, [-1, -1], [1, 1])
    with pytest.raises(FmqError, match="names"):
        net.mlp_error_bound(params, {k: v for k, v in params.items() if k != "layers.2.bias"}, [-1, -1], [1, 1])
    with pytest.raises(FmqError):
        net.mlp_error_bound(params, params, [1, 1], [-1, -1])
    with pytest.raises(FmqError, match="coordinates"):
        net.mlp_error_bound(params, params, [-1, -1, -1], [1, 1, 1])
    unet = fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2), seed=0).parameters()
    with pytest.raises(FmqError, match="GroupNorm"):
        net.error_bound(unet, unet, [-1], [1])
    with pytest.raises(FmqError, match="x0"):
        euler_tube_bound(params, params, np.zeros((3, 5)), 10)


def test_run_bounds_end_to_end(trained, tmp_path):
    pytest.importorskip("fmq_np.io.quantized")
    from fmq_np.theory.cli_bounds import run_bounds
    import json
    model_path, q_path, json_path = tmp_path / "m.h5", tmp_path / "q.h5", tmp_path / "b.json"
    fq.io.save(model_path, trained)
    qm = fq.quant.quantize_model(trained.parameters(), bits=3, method="ot")
    fq.io.save(q_path, qm)
    text = run_bounds(model_path, q_path, json_out=json_path, n_samples=64, steps=10, splits=4)
    assert "layers.0.weight" in text and "drift" in text
    flow = json.loads(json_path.read_text())["flow"]
    assert flow["eps_measured_box"] <= flow["eps_bound"]
    assert flow["drift_max"] <= flow["flow_bound"]
    with pytest.raises(FmqError, match="not a quantized model"):
        run_bounds(model_path, model_path)
