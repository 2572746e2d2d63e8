"""Quantization calibrated along the flow (fmq_np.quant.calibrate): statistics against direct computation, the
weighted DP against brute force, error feedback against the plain OBQ reference, mixed widths, bias correction,
reproducibility, file round trip and bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import fmq_np as fq
from fmq_np.errors import FormatError, InputError
from fmq_np.quant.calibrate import Calibration, allocate_widths, error_feedback, quantize_calibrated

from naive import brute_force_cost, codebook_cost, im2col, layer_input_rows, obq_error_feedback

FAST = dict(widths=(2, 3), sens_states=16)


def _silu(z):
    return z / (1.0 + np.exp(-z))


def _heun2_states(model, n, steps, seed):
    """The (x, t) at which heun2 evaluates the velocity, computed here step by step in float32."""
    x = np.random.default_rng(seed).standard_normal((n,) + fq.flow.sample_shape(model), dtype=np.float32)
    h = 1.0 / steps
    xs, ts = [], []
    for i in range(steps):
        t0, t1 = np.full(n, i * h, np.float32), np.full(n, (i + 1) * h, np.float32)
        k1 = model(x, t0)
        x_pred = x + (h * k1).astype(np.float32)
        k2 = model(x_pred, t1)
        xs += [x.copy(), x_pred]
        ts += [t0, t1]
        x = x + (h / 2 * (k1 + k2)).astype(np.float32)
    return np.concatenate(xs), np.concatenate(ts)


def _mlp_inputs(model, x, t):
    """Input matrix of every Linear of an MLPVelocity on (x, t), by a plain float64 forward pass."""
    p = {k: v.astype(np.float64) for k, v in model.parameters().items()}
    depth = model.config()["depth"]
    h = np.concatenate([x.astype(np.float64), t[:, None].astype(np.float64)], axis=1)
    out = {}
    for i in range(depth + 1):
        out[f"layers.{i}.weight"] = h
        z = h @ p[f"layers.{i}.weight"].T + p[f"layers.{i}.bias"]
        h = _silu(z) if i < depth else z
    return out


@pytest.fixture(scope="module")
def mlp():
    return fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=3)


@pytest.fixture(scope="module")
def mlp_cal(mlp):
    return fq.quant.calibrate(mlp, n=8, steps=2, seed=1, batch_size=5, **FAST)


@pytest.fixture(scope="module")
def unet():
    return fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2), groups=4, seed=0)


# ------------------------------------------------------------------------------------------ weighted codebooks
@given(hnp.arrays(np.float64, st.integers(1, 8), elements=st.floats(-5, 5, width=32)), st.integers(1, 2),
       st.lists(st.sampled_from([0.0, 0.25, 1.0, 4.0]), min_size=8, max_size=8))
@settings(max_examples=25, deadline=None)
def test_weighted_ot_opt_codebook_is_the_brute_force_optimum(x, bits, wlist):
    wt = np.array(wlist[:x.size])
    if wt.sum() == 0:
        wt[0] = 1.0
    qt = fq.quant.quantize(x, bits=bits, method="ot-opt", granularity="tensor", weights=wt)
    best = brute_force_cost(x, 2 ** bits, wt)
    got = codebook_cost(x, qt.codebook[0].astype(np.float64), wt)
    assert got <= best + 1e-9 * (1 + best)


def test_calibrated_ot_opt_uses_fisher_weighted_codebooks(mlp, mlp_cal):
    """Without error feedback the codes are nearest-level: each row's weighted cost must be the optimum for the
    Fisher importance (checked against the unweighted codebook, which must not do better under those weights)."""
    params = mlp.parameters()
    qm = quantize_calibrated(params, 2, "ot-opt", mlp_cal, error_feedback_on=False, weighted=True)
    plain = fq.quant.quantize_model(params, bits=2, method="ot-opt")
    name = "layers.1.weight"
    f = mlp_cal.fisher[name]
    imp = f + 1e-3 * f.mean(axis=1, keepdims=True)
    w = params[name].astype(np.float64)
    for r in range(w.shape[0]):
        cw = codebook_cost(w[r], qm.tensors[name].codebook[r].astype(np.float64), imp[r])
        cu = codebook_cost(w[r], plain.tensors[name].codebook[r].astype(np.float64), imp[r])
        assert cw <= cu * (1 + 1e-6) + 1e-12


# ------------------------------------------------------------------------------------------------ error feedback
def _layer_problem(seed, n_out=6, n_in=20, rows=60, bits=2):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((n_in, n_in)) * 0.6 + np.eye(n_in)
    x = rng.standard_normal((rows, n_in)) @ mix                     # correlated inputs
    w = rng.standard_normal((n_out, n_in))
    codebook = fq.quant.quantize(w, bits=bits, method="ot").codebook.astype(np.float64)
    return w, x, codebook


@pytest.mark.parametrize("block", [1, 7, 128])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_feedback_equals_obq_reference(seed, block):
    w, x, cb = _layer_problem(seed)
    h = x.T @ x
    codes, w_hat = error_feedback(w, cb, h, block=block)
    ref_codes, ref_hat = obq_error_feedback(w, cb, h)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(w_hat, ref_hat, rtol=0, atol=1e-12)


def test_error_feedback_with_dead_inputs_matches_reference():
    w, x, cb = _layer_problem(5)
    x[:, 3] = 0.0
    h = x.T @ x
    codes, _ = error_feedback(w, cb, h, block=4)
    np.testing.assert_array_equal(codes, obq_error_feedback(w, cb, h)[0])


@pytest.mark.parametrize("bits", [2, 3])
def test_error_feedback_lowers_output_error_against_rounding(bits):
    for seed in range(4):
        w, x, cb = _layer_problem(10 + seed, bits=bits)
        _, w_ef = error_feedback(w, cb, x.T @ x)
        w_rn = cb[np.arange(len(cb))[:, None], np.argmin(np.abs(cb[:, None, :] - w[:, :, None]), axis=2)]
        assert np.linalg.norm((w - w_ef) @ x.T) < np.linalg.norm((w - w_rn) @ x.T)


def test_calibrated_error_feedback_lowers_each_layers_output_error(mlp, mlp_cal):
    params = mlp.parameters()
    kw = dict(bits=2, method="uniform", calibration=mlp_cal, bias_correction=False)
    ef = fq.quant.quantize_model(params, error_feedback=True, **kw).dequantize()
    rn = fq.quant.quantize_model(params, error_feedback=False, **kw).dequantize()
    for name in ("layers.1.weight", "layers.2.weight"):
        h, w = mlp_cal.layers[name].h, params[name].astype(np.float64)

        def err(w_hat):
            d = w - w_hat.astype(np.float64)
            return np.trace(d @ h @ d.T)
        assert err(ef[name]) < err(rn[name])


# ------------------------------------------------------------------------------------ statistics vs direct values
def test_mlp_statistics_match_direct_computation(mlp, mlp_cal):
    x, t = _heun2_states(mlp, 8, 2, seed=1)
    inputs = _mlp_inputs(mlp, x, t)
    assert set(mlp_cal.layers) == set(inputs)
    assert mlp_cal.meta["n_states"] == len(x) == 32 and mlp_cal.meta["train_pairs"] == 0
    for name, X in inputs.items():
        stt = mlp_cal.layers[name]
        assert stt.rows == len(x)
        np.testing.assert_allclose(stt.h, X.T @ X / len(X), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stt.mean, X.mean(axis=0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stt.channel_moment, (X ** 2).mean(axis=0), rtol=1e-4, atol=1e-6)


def test_training_pairs_are_added_from_data(mlp):
    data = fq.datasets.load("moons", n=50, seed=0)
    cal = fq.quant.calibrate(mlp, data, n=8, steps=2, seed=1, **FAST)
    assert cal.meta["trajectory_states"] == 32 and cal.meta["train_pairs"] == 8 and cal.meta["n_states"] == 40
    assert cal.layers["layers.0.weight"].rows == 40


def test_fisher_of_the_output_layer_is_its_input_energy(mlp):
    """v = W h + b at the last layer, so diag(JᵀJ) is h_j² for W[o, j] and 1 for b[o]: the Monte-Carlo Fisher must
    match the mean input energy (512 independent draws: a few % of noise)."""
    cal = fq.quant.calibrate(mlp, n=64, steps=4, seed=0, batch_size=1, **FAST)
    x, t = _heun2_states(mlp, 64, 4, seed=0)
    h = _mlp_inputs(mlp, x, t)["layers.2.weight"]
    energy = (h ** 2).mean(axis=0)
    np.testing.assert_allclose(cal.fisher["layers.2.weight"].mean(axis=0), energy, rtol=0.25)
    np.testing.assert_allclose(cal.fisher["layers.2.bias"], 1.0, rtol=0.25)
    assert all((f >= 0).all() for f in cal.fisher.values())


def test_unet_statistics_match_direct_computation(unet):
    cal = fq.quant.calibrate(unet, n=3, steps=1, seed=2, batch_size=4, **FAST)
    x, t = _heun2_states(unet, 3, 1, seed=2)
    assert cal.meta["n_states"] == len(x) == 6
    # conv_in sees the states themselves: im2col written out plainly, rows (n, oy, ox), columns (c, i, j)
    X = layer_input_rows("conv", np.ascontiguousarray(x.transpose(1, 0, 2, 3)), k=3, pad=1)
    np.testing.assert_allclose(cal.layers["conv_in.weight"].h, X.T @ X / len(X), rtol=1e-5, atol=1e-7)
    assert cal.layers["conv_in.weight"].rows == 6 * 64
    np.testing.assert_allclose(cal.layers["conv_in.weight"].channel_moment, [np.mean(np.diag(X.T @ X)) / len(X)],
                               rtol=1e-5)
    # time.0 sees the sinusoidal embedding of t
    f = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    arg = 1000.0 * t.astype(np.float64)[:, None] * f
    E = np.concatenate([np.cos(arg), np.sin(arg)], axis=1)
    np.testing.assert_allclose(cal.layers["time.0.weight"].h, E.T @ E / len(E), rtol=1e-4, atol=1e-6)
    # every other convolution: its cached input after one forward of all states, unfolded by the plain im2col
    unet.forward(x, t)
    mods = dict(unet.modules())
    for name, stt in cal.layers.items():
        layer = mods[name[:-len("weight")]]
        xin = layer.cached_input().astype(np.float64)
        if xin.ndim == 4:
            ho, wo = layer.out_size(xin.shape[2], xin.shape[3])
            X = im2col(xin, layer.k, layer.stride, layer.padding, layer.up, ho, wo).T
        else:
            X = xin
        np.testing.assert_allclose(stt.h, X.T @ X / len(X), rtol=2e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(stt.mean, X.mean(axis=0), rtol=2e-4, atol=1e-6, err_msg=name)
    assert {"upsample.1.weight", "downsample.0.weight", "down.1.0.skip.weight"} <= set(cal.layers)
    qm = fq.quant.quantize_model(unet.parameters(), bits=2, method="ot", calibration=cal)
    assert all(np.isfinite(v).all() for v in qm.dequantize().values())


# ------------------------------------------------------------------------------ mixed widths and bias correction
def test_mixed_widths_meet_the_budget_and_count_honestly(mlp, mlp_cal):
    params = mlp.parameters()
    qm = fq.quant.quantize_model(params, bits=2.5, method="ot-opt", calibration=mlp_cal)
    qts = {k: v for k, v in qm.tensors.items() if isinstance(v, fq.quant.QuantizedTensor)}
    sizes = {k: params[k].size for k in qts}
    code_bits = sum(qts[k].bits * sizes[k] for k in qts)
    assert code_bits <= 2.5 * sum(sizes.values())
    assert {t.bits for t in qts.values()} <= {2, 3}
    codebooks = sum(params[k].shape[0] * 2 ** qts[k].bits * 32 for k in qts)
    assert qm.bits_per_weight == pytest.approx((code_bits + codebooks) / sum(sizes.values()), rel=1e-12)
    # the greedy stops only when no further widening fits the budget
    for k in qts:
        if qts[k].bits == 2:
            assert code_bits + sizes[k] > 2.5 * sum(sizes.values())


def test_allocation_gives_bits_to_the_sensitive_tensor():
    cal = Calibration({}, {}, {"a": np.array([10.0, 1.0]), "b": np.array([1.0, 0.9])},
                         dict(digest="x", widths=[2, 3]))
    assert allocate_widths(cal, {"a": (4, 4), "b": (4, 4)}, 2.5) == {"a": 3, "b": 2}
    assert allocate_widths(cal, {"a": (4, 4), "b": (4, 4)}, 3.0) == {"a": 3, "b": 3}


def test_bias_correction_restores_the_mean_output(mlp, mlp_cal):
    params = mlp.parameters()
    qm = fq.quant.quantize_model(params, bits=2, method="ot", calibration=mlp_cal, bias_correction=True)
    d = qm.dequantize()
    x, t = _heun2_states(mlp, 8, 2, seed=1)
    for i in range(3):
        X = _mlp_inputs(mlp, x, t)[f"layers.{i}.weight"]
        w, b = params[f"layers.{i}.weight"].astype(np.float64), params[f"layers.{i}.bias"].astype(np.float64)
        if not isinstance(qm.tensors[f"layers.{i}.weight"], fq.quant.QuantizedTensor):
            continue
        mean_float = (X @ w.T + b).mean(axis=0)
        mean_q = (X @ d[f"layers.{i}.weight"].astype(np.float64).T + d[f"layers.{i}.bias"]).mean(axis=0)
        np.testing.assert_allclose(mean_q, mean_float, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- reproducibility, round trip
def test_seeded_runs_are_bitwise_reproducible(mlp):
    data = fq.datasets.load("moons", n=50, seed=0)
    a = fq.quant.calibrate(mlp, data, n=6, steps=2, seed=4, **FAST)
    b = fq.quant.calibrate(mlp, data, n=6, steps=2, seed=4, **FAST)
    c = fq.quant.calibrate(mlp, data, n=6, steps=2, seed=5, **FAST)
    for name in a.layers:
        assert np.array_equal(a.layers[name].h, b.layers[name].h)
        assert not np.array_equal(a.layers[name].h, c.layers[name].h)
    for name in a.fisher:
        assert np.array_equal(a.fisher[name], b.fisher[name])
    for name in a.sensitivity:
        assert np.array_equal(a.sensitivity[name], b.sensitivity[name])
    qa = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot-opt", calibration=a).dequantize()
    qb = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot-opt", calibration=b).dequantize()
    assert all(np.array_equal(qa[k], qb[k]) for k in qa)


def test_calibration_restores_the_model(mlp):
    before = {k: v.copy() for k, v in mlp.parameters().items()}
    fq.quant.calibrate(mlp, n=4, steps=1, seed=0, **FAST)
    assert all(np.array_equal(before[k], v) for k, v in mlp.parameters().items())


def test_save_load_round_trip_and_damaged_file(mlp, mlp_cal, tmp_path):
    path = tmp_path / "cal.h5"
    mlp_cal.save(path)
    back = fq.quant.load_calibration(path)
    assert back.meta == mlp_cal.meta
    for name, stt in mlp_cal.layers.items():
        for key in ("h", "mean", "channel_moment"):
            assert np.array_equal(getattr(back.layers[name], key), getattr(stt, key))
        assert back.layers[name].rows == stt.rows
    assert all(np.array_equal(back.fisher[k], v) for k, v in mlp_cal.fisher.items())
    assert all(np.array_equal(back.sensitivity[k], v) for k, v in mlp_cal.sensitivity.items())
    q1 = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot", calibration=back).dequantize()
    q2 = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot", calibration=mlp_cal).dequantize()
    assert all(np.array_equal(q1[k], q2[k]) for k in q1)
    import h5py
    with h5py.File(path, "r+") as f:
        f["layers/0/h"][0, 0] = np.nan
    with pytest.raises(FormatError, match="NaN"):
        fq.quant.load_calibration(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(FormatError):
        fq.quant.load_calibration(tmp_path / "junk.h5")
    fq.io.save(tmp_path / "model.h5", mlp)
    with pytest.raises(FormatError, match="calibration"):
        fq.quant.load_calibration(tmp_path / "model.h5")


# ----------------------------------------------------------------------------------------------------- bad input
def _one_line(exc_info):
    assert "\n" not in str(exc_info.value)


def test_calibration_from_another_model_is_refused(mlp_cal):
    other = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=4)
    with pytest.raises(InputError, match="another model") as e:
        fq.quant.quantize_model(other.parameters(), bits=2, method="ot", calibration=mlp_cal)
    _one_line(e)


def test_non_finite_activations_are_refused():
    m = fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0)
    p = {k: v.copy() for k, v in m.parameters().items()}
    p["layers.0.weight"][:] = 3e38
    m.load_parameters(p)
    with pytest.raises(InputError, match="non-finite") as e:
        fq.quant.calibrate(m, n=4, steps=1, seed=0, **FAST)
    _one_line(e)


@pytest.mark.parametrize("budget", [1.5, 3.5])
def test_budget_outside_the_calibrated_widths_is_refused(mlp, mlp_cal, budget):
    with pytest.raises(InputError, match="outside the calibrated widths") as e:
        fq.quant.quantize_model(mlp.parameters(), bits=budget, method="ot-opt", calibration=mlp_cal)
    _one_line(e)


def test_unknown_layers_are_refused(mlp, mlp_cal):
    class Opaque:
        def __init__(self, m):
            self.m = m

        def __getattr__(self, name):
            if name == "weight_inputs":
                raise AttributeError(name)
            return getattr(self.m, name)

    with pytest.raises(InputError, match="does not know the layers") as e:
        fq.quant.calibrate(Opaque(mlp), n=2, steps=1, **FAST)
    _one_line(e)
    partial = Calibration({k: v for k, v in mlp_cal.layers.items() if k != "layers.1.weight"}, mlp_cal.fisher,
                             mlp_cal.sensitivity, mlp_cal.meta)
    with pytest.raises(InputError, match="knows no layer for tensor 'layers.1.weight'") as e:
        fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot", calibration=partial)
    _one_line(e)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be"), (dict(solver="nope"), "unknown solver"), (dict(train_pairs=3), "needs data"),
    (dict(widths=()), "at least one"), (dict(widths=(2, 9)), "widths"), (dict(sens_method="x"), "sens_method"),
    (dict(seed=-1), "seed")])
def test_bad_calibrate_arguments(mlp, kwargs, match):
    with pytest.raises(InputError, match=match):
        fq.quant.calibrate(mlp, **kwargs)


def test_bad_quantize_model_arguments(mlp, mlp_cal):
    p = mlp.parameters()
    with pytest.raises(InputError, match="need calibration"):
        fq.quant.quantize_model(p, bits=2, error_feedback=True)
    with pytest.raises(InputError, match="granularity"):
        fq.quant.quantize_model(p, bits=2, calibration=mlp_cal, granularity="tensor")
    with pytest.raises(InputError, match="Calibration"):
        fq.quant.quantize_model(p, bits=2, calibration={"not": "one"})
    with pytest.raises(InputError, match="bits"):
        fq.quant.quantize_model(p, bits=2.5)


def test_cli_quantize_calibrate(tmp_path, capsys):
    from fmq_np.cli import main
    m = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=0)
    fq.io.save(tmp_path / "m.h5", m)
    out = tmp_path / "q.h5"
    assert main(["quantize", str(tmp_path / "m.h5"), "--bits", "2.5", "--method", "ot-opt", "--calibrate",
                 "--calib-n", "4", "--out", str(out)]) in (0, None)
    text = capsys.readouterr().out
    assert "sensitivity layers.1.weight: 2 bits" in text
    q = fq.io.load(out)
    assert {t.bits for t in q.tensors.values() if isinstance(t, fq.quant.QuantizedTensor)} <= {2, 3, 4}
    np.savez(tmp_path / "w.npz", **m.parameters())
    assert main(["quantize", str(tmp_path / "w.npz"), "--calibrate", "--out", str(tmp_path / "q2.h5")]) == 1
    err = capsys.readouterr().err
    assert "w.npz" in err and len(err.strip().splitlines()) == 1
