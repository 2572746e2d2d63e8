"""Weight level: measured and predicted quantization errors of one tensor.

Grouping follows :mod:`fmq_np.quant.tensor`: ``"tensor"`` is one group, ``"channel"`` one group per index of axis 0
(a 1-D tensor is one group), ``"group"`` runs of ``group_size`` values of each channel. All numbers are float64
and per weight: MSE in (weight units)², norms in weight units.

Measured (:func:`weight_errors`): ‖W − Ŵ‖_F, MSE, max |W − Ŵ|, and the empirical W2 between the values of each
group and their quantized images (sorted matching), aggregated as √(Σ n_g W2_g² / n). W2 ≤ RMS error always, with
equality exactly when the quantizer is monotone within every group (all five methods are) — ‖W − Q(W)‖_F = √n·W2.

Predicted before quantizing (:func:`predicted_mse`), per group of n values and K = 2^bits levels:

* ``uniform``: Δ²/12 with Δ = (max − min)/(K − 1) — the high-resolution error of a grid with a locally flat density;
* ``ot-opt``: Panter–Dite, (1/12)·2^(−2b)·(∫p^{1/3})³, with ∫p^{1/3} = ∫₀¹ Q'(u)^{2/3} du estimated from
  equal-mass blocks of m ≈ √n sorted values (a histogram with adaptive bins: Σ_blocks (m/n)^{1/3}·width^{2/3});
* ``ot`` (equal mass) and ``pwl``: the error of the scheme applied to the continuous, piecewise-linear quantile
  function Q of the sample (through the order statistics at the Hazen positions (i + ½)/n, flat beyond):
  K' = min(K, n) equal-mass cells [j/K', (j+1)/K'] in u; ``ot`` reconstructs each cell by its mean, ``pwl`` by
  the midpoint of its breakpoints (numpy.interp over linspace(0, 1, n), as the published code); the error is the
  mean of (Q(u) − level)² over u, by the midpoint rule on ≥ 64 points per cell.
* ``log2``: no prediction (its levels are log-spaced between the extreme magnitudes, not a high-resolution design).

Where the predictions are not tight: Δ²/12 and Panter–Dite are asymptotic in bits — at 2–3 bits cells are wide
and the density inside them is far from flat (Panter–Dite underestimates Gaussian 2-bit Lloyd–Max by ~13%,
Laplace worse); Panter–Dite also needs n ≫ K (with few values per level the optimal codebook fits the sample and
beats it). The equal-mass form differs from the measurement by the chunk rounding of ``array_split`` and by the
interpolation of Q between sample values (≈ 1% at 300 values per channel and 2 bits).
"""
import numpy as np

from .._validate import check_bits
from ..errors import InputError

PREDICTABLE = ("ot", "ot-opt", "uniform", "pwl")


def grouped(w, granularity="tensor", group_size=0, name="w"):
    """float64 copy of ``w`` viewed as (n_groups, group_len) following the fmq_np.quant layout
    (:func:`fmq_np.quant.layout.group_shape`)."""
    from ..quant.layout import group_shape
    w = np.asarray(w)
    if w.dtype.kind not in "fiu" or w.size == 0:
        raise InputError(f"{name} must be a non-empty real array, got dtype {w.dtype}, shape {w.shape}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all():
        raise InputError(f"{name} contains NaN or Inf")
    return w.reshape(group_shape(w.shape, granularity, group_size, name))


def weight_errors(w, w_hat, granularity="tensor", group_size=0, name="w"):
    """Measured errors of ``w_hat`` against ``w`` (same shape): dict of floats ``frobenius``, ``mse``, ``rms``,
    ``max_abs``, ``w2`` (see module doc) and ``n`` (number of weights)."""
    if np.shape(w) != np.shape(w_hat):
        raise InputError(f"{name}: quantized shape {np.shape(w_hat)} differs from {np.shape(w)}")
    a = grouped(w, granularity, group_size, name)
    b = grouped(w_hat, granularity, group_size, name + " (quantized)")
    d = b - a
    sq = float(np.sum(d * d))
    w2_sq = float(np.sum((np.sort(a, axis=1) - np.sort(b, axis=1)) ** 2))
    n = a.size
    return dict(n=n, frobenius=float(np.sqrt(sq)), mse=sq / n, rms=float(np.sqrt(sq / n)),
                max_abs=float(np.abs(d).max()), w2=float(np.sqrt(w2_sq / n)))


def panter_dite_integral(values):
    """Estimate of (∫p^{1/3} dx)³ for the density p the 1-D sample ``values`` was drawn from (0 if constant)."""
    s = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(s)
    if n < 2 or s[-1] == s[0]:
        return 0.0
    m = max(2, int(round(np.sqrt(n))))
    idx = np.arange(0, n, m)
    if idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    masses = np.diff(idx) / (n - 1)            # u-mass of each block under the interpolated quantile function
    widths = np.diff(s[idx])
    return float(np.sum(masses ** (1 / 3) * widths ** (2 / 3)) ** 3)


def _quantile_grid(row, k):
    """Q(u) of the row's piecewise-linear quantile function at ≥ 64 midpoints per cell: (k, m) cells × points."""
    s = np.sort(row)
    m = max(64, -(-4 * len(s) // k))
    u = (np.arange(k * m) + 0.5) / (k * m)
    return np.interp(u, (np.arange(len(s)) + 0.5) / len(s), s).reshape(k, m), s


def _predict_row(row, k, method):
    if method == "uniform":
        span = row.max() - row.min()
        return (span / (k - 1)) ** 2 / 12.0
    if method in ("ot", "ot-opt") and len(row) <= k:
        return 0.0                                    # every value is its own level
    if method == "ot-opt":
        return panter_dite_integral(row) / (12.0 * k * k)
    kk = min(k, len(row))
    q, s = _quantile_grid(row, kk)
    if method == "ot":
        levels = q.mean(axis=1, keepdims=True)
    else:
        b = np.interp(np.arange(kk + 1) / kk, np.linspace(0.0, 1.0, len(s)), s)
        levels = ((b[:-1] + b[1:]) / 2)[:, None]
    return float(np.mean((q - levels) ** 2))


def predicted_mse(w, bits, method, granularity="tensor", *, group_size=0, name="w"):
    """Predicted per-weight MSE of quantizing ``w`` with ``method`` at ``bits`` (see module doc), before quantizing."""
    bits = check_bits(bits)
    if method not in PREDICTABLE:
        raise InputError(f"no error prediction for method {method!r}; available: {', '.join(PREDICTABLE)}")
    g = grouped(w, granularity, group_size, name)
    k = 2 ** bits
    return float(np.mean([_predict_row(row, k, method) for row in g]))


def mse_constant(w, method, bits, granularity="tensor", group_size=0):
    """C with predicted MSE = C·2^(−2b) (the constant of the 2^(−2b) scaling form; depends weakly on b for
    ``uniform`` through (K/(K−1))², and through the tails for ``ot``/``pwl``)."""
    return predicted_mse(w, bits, method, granularity, group_size=group_size) * 4.0 ** bits
