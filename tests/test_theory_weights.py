"""Weight level: measured errors and predicted-vs-measured within stated tolerances on Gaussian / Laplace data."""
import numpy as np
import pytest
from scipy import stats

from fmq_np.errors import FmqError
from fmq_np.theory import weights as W

N = 100_000
SOURCES = {"gauss": (lambda rng: rng.standard_normal(N), stats.norm(scale=np.sqrt(3.0))),
           "laplace": (lambda rng: rng.laplace(size=N), stats.laplace(scale=3.0))}


def equal_mass(x, k):
    """The paper's OT map on one group (reference): chunks of the sorted values replaced by their means."""
    order = np.argsort(x, kind="stable")
    out = np.empty_like(x)
    for idx in np.array_split(order, min(k, len(x))):
        out[idx] = x[idx].mean()
    return out


def uniform(x, k):
    lo, hi = x.min(), x.max()
    d = (hi - lo) / (k - 1)
    return np.round((x - lo) / d) * d + lo


def lloyd_mse(x, compander, k, iters=30):
    """MSE of a converged 1-D Lloyd–Max quantizer started from the high-resolution optimal point density."""
    s = np.sort(x)
    c = compander.ppf((np.arange(k) + 0.5) / k)
    cs = np.concatenate([[0.0], np.cumsum(s)])
    for _ in range(iters):
        e = np.concatenate([[0], np.searchsorted(s, (c[1:] + c[:-1]) / 2), [len(s)]])
        cnt = np.diff(e)
        c = np.where(cnt > 0, (cs[e[1:]] - cs[e[:-1]]) / np.maximum(cnt, 1), c)
    return float(np.mean((s - c[np.searchsorted((c[1:] + c[:-1]) / 2, s)]) ** 2))


def test_measured_errors_and_w2():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 50)).astype(np.float32)
    w_hat = np.stack([equal_mass(r, 4) for r in w])
    e = W.weight_errors(w, w_hat, "channel")
    d = (w_hat.astype(np.float64) - w.astype(np.float64))
    assert e["frobenius"] == pytest.approx(np.linalg.norm(d))
    assert e["mse"] == pytest.approx(np.mean(d ** 2))
    assert e["max_abs"] == pytest.approx(np.abs(d).max())
    assert e["w2"] == pytest.approx(e["rms"], rel=1e-12)          # monotone per channel: ‖W − Q(W)‖_F = √n·W2
    shuffled = w_hat[:, rng.permutation(50)]                         # not monotone: W2 < RMS
    e2 = W.weight_errors(w, shuffled, "channel")
    assert e2["w2"] < e2["rms"]
    assert W.weight_errors(w, w_hat, "group", group_size=10)["mse"] == pytest.approx(e["mse"])


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("bits", [6, 8])
def test_panter_dite_vs_optimal_quantizer(source, bits):
    draw, compander = SOURCES[source]
    x = draw(np.random.default_rng(1))
    ratio = W.predicted_mse(x, bits, "ot-opt") / lloyd_mse(x, compander, 2 ** bits)
    assert 0.8 < ratio < 1.3, ratio


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("bits", [4, 6, 8])
def test_uniform_and_equal_mass_predictions(source, bits):
    x = SOURCES[source][0](np.random.default_rng(2))
    k = 2 ** bits
    for method, quantizer, tol in (("uniform", uniform, 0.1), ("ot", equal_mass, 0.15)):
        measured = np.mean((quantizer(x, k) - x) ** 2)
        assert W.predicted_mse(x, bits, method) == pytest.approx(measured, rel=tol), method


def test_equal_mass_prediction_at_low_bits_and_small_groups():
    """The quantile-function form has no high-resolution assumption: close at 2 bits and on small channels."""
    rng = np.random.default_rng(3)
    w = rng.laplace(size=(16, 300))
    measured = np.mean((np.stack([equal_mass(r, 4) for r in w]) - w) ** 2)
    assert W.predicted_mse(w, 2, "ot", "channel") == pytest.approx(measured, rel=0.03)


def test_pwl_prediction_matches_fmq_quant():
    quant = pytest.importorskip("fmq_np.quant")
    x = np.random.default_rng(4).standard_normal(20_000).astype(np.float32)
    for bits in (3, 6):
        w_hat = quant.quantize(x, bits=bits, method="pwl", granularity="tensor").dequantize()
        assert W.predicted_mse(x, bits, "pwl") == pytest.approx(W.weight_errors(x, w_hat)["mse"], rel=0.1)


def test_ot_beats_uniform_only_at_low_bits_on_gaussian():
    """Predictions reproduce the paper's measured picture: OT/uniform MSE < 1 at 2 bits, > 1 from 4 bits on."""
    x = np.random.default_rng(5).standard_normal(5000)
    ratio = {b: W.mse_constant(x, "ot", b) / W.mse_constant(x, "uniform", b) for b in (2, 4)}
    assert ratio[2] < 1.0 < ratio[4]


def test_constant_and_tiny_groups():
    assert W.predicted_mse(np.ones(10), 3, "uniform") == 0.0
    assert W.predicted_mse(np.ones(10), 3, "ot-opt") == 0.0
    assert W.predicted_mse(np.arange(4.0), 3, "ot") == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("call", [lambda: W.predicted_mse(np.ones(4), 3, "log2"),
                                  lambda: W.predicted_mse(np.ones(4), 0, "ot"),
                                  lambda: W.predicted_mse(np.array([1.0, np.nan]), 3, "ot"),
                                  lambda: W.weight_errors(np.ones(4), np.ones(5)),
                                  lambda: W.weight_errors(np.ones((2, 6)), np.ones((2, 6)), "group", group_size=4),
                                  lambda: W.weight_errors(np.ones(3), np.ones(3), "rows")])
def test_bad_input(call):
    with pytest.raises(FmqError):
        call()
