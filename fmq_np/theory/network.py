"""Network level: a certified upper bound on ε = sup ‖v_θ(x, t) − v_θ̂(x, t)‖₂ over a box of inputs and t-interval.

MLP (:class:`fmq_np.nn.MLPVelocity`: z_i = W_i h_i + b_i, h_{i+1} = SiLU(z_i), output v = W_D h_D + b_D, h_0 = [x, t]).
The box (x ∈ [lo, hi] per coordinate, t ∈ [t0, t1]) is split into ``splits`` sub-boxes per axis and on each one:

1. interval bound propagation (IBP), intersected with the mean-value form around the sub-box center, gives
   [l_i, u_i] ∋ z_i and the ranges of h_i (:func:`mlp_ranges`);
2. the error e_i = ĥ_i − h_i is tracked as a signed interval per neuron (center ± radius arithmetic, so errors
   of opposite sign cancel through the linear maps) and as an ℓ2 bound δ_i:
   ẑ − z = Ŵ(ĥ − h) + (Ŵ − W)h + (b̂ − b) ∈ Ŵ[e] + ΔW[h] + Δb,
   ‖ẑ − z‖ ≤ min(‖mag [ẑ − z]‖, ‖Ŵ‖₂δ + ‖ΔW‖₂‖max|h|‖ + ‖Δb‖);
3. SiLU(ẑ) − SiLU(z) = SiLU'(ξ)(ẑ − z) with ξ in the hull of both pre-activation ranges, so the interval of
   SiLU' there (exact: SiLU' has its extrema at ±2.3994) times the interval of ẑ − z bounds the new error.

ε is the largest ℓ2 output bound over the sub-boxes (× (1 + 1e-9) to cover the bound's own float64 rounding).
It is certified for the exact (real-arithmetic) networks; float32 evaluation adds rounding of order 1e-7·‖v‖.

Where it is loose, and why: IBP over-approximates ranges by |W|-sums (the "wrapping effect"), which grows with
depth and width and with the sub-box size — more ``splits`` tighten it (cost ∝ splits^(dim+1)); the radius
part charges Σ|Ŵ|·radius, ignoring the cancellation between the errors of different neurons that varies inside a
sub-box; the per-neuron error intervals forget their correlations (a vector of errors each at its own worst
case); and the supremum is over the whole box while sampled points rarely hit the worst corner.

U-Net: :mod:`fmq_np.theory.unet_bounds` (it needs the model for the architecture, so :func:`error_bound`, which
takes parameter dicts only, raises :class:`~fmq_np.errors.InputError` for it).
"""
from dataclasses import dataclass

import numpy as np

from .._validate import check_int
from ..errors import InputError

SILU_MIN_ARG = -1.278464542761074          # argmin of SiLU
SILU_MIN = -0.27846454276107385 - 1e-15   # min SiLU (rounded down)
SILU_DERIV_ARG = 2.3993572804900642        # SiLU' has its max at +this, its min at -this
SILU_DERIV_MAX = 1.099839320128867 + 1e-12
SILU_DERIV_MIN = -0.09983932012886691 - 1e-12
SAFETY = 1.0 + 1e-9


def silu(z):
    """z·sigmoid(z) in float64, stable for large |z|."""
    return z * _sigmoid(z)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def silu_deriv(z):
    """d SiLU / dz = σ(z)(1 + z(1 − σ(z)))."""
    s = _sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def silu_interval(lo, hi):
    """Exact image [min, max] of SiLU over [lo, hi] (elementwise arrays; SiLU falls then rises)."""
    flo, fhi = silu(lo), silu(hi)
    low = np.where(hi <= SILU_MIN_ARG, fhi, np.where(lo >= SILU_MIN_ARG, flo, SILU_MIN))
    return np.minimum(low, np.minimum(flo, fhi)), np.maximum(flo, fhi)


def silu_deriv_range(lo, hi):
    """[min, max] of SiLU' over [lo, hi] (elementwise; SiLU' falls, rises on (−2.3994, 2.3994), falls again)."""
    dlo, dhi = silu_deriv(lo), silu_deriv(hi)
    low, high = np.minimum(dlo, dhi), np.maximum(dlo, dhi)
    low = np.where((lo <= -SILU_DERIV_ARG) & (hi >= -SILU_DERIV_ARG), SILU_DERIV_MIN, low)
    high = np.where((lo <= SILU_DERIV_ARG) & (hi >= SILU_DERIV_ARG), SILU_DERIV_MAX, high)
    pad = 1e-12 * np.maximum(1.0, np.abs(high))
    return low - pad, high + pad


def silu_slope(lo, hi):
    """sup |SiLU'| over [lo, hi] (elementwise): endpoints and the interior extrema of SiLU' at ±2.3994."""
    s = np.maximum(np.abs(silu_deriv(lo)), np.abs(silu_deriv(hi)))
    s = np.where((lo <= SILU_DERIV_ARG) & (hi >= SILU_DERIV_ARG), SILU_DERIV_MAX, s)
    s = np.where((lo <= -SILU_DERIV_ARG) & (hi >= -SILU_DERIV_ARG), np.maximum(s, -SILU_DERIV_MIN), s)
    return s * SAFETY


def mlp_layers(params, name="model"):
    """[(W (out, in), b (out,)), ...] in float64 from an MLPVelocity parameter dict (``layers.{i}.weight/bias``)."""
    layers, i = [], 0
    while f"layers.{i}.weight" in params:
        w = np.asarray(params[f"layers.{i}.weight"], dtype=np.float64)
        b = np.asarray(params.get(f"layers.{i}.bias"), dtype=np.float64)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise InputError(f"{name}: layers.{i} must have weight (out, in) and bias (out,), got {w.shape}, {b.shape}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise InputError(f"{name}: layers.{i} contains NaN or Inf")
        layers.append((w, b))
        i += 1
    if not layers or len(layers) * 2 != len(params):
        raise InputError(f"{name}: not an MLPVelocity parameter set (expected layers.0 .. layers.D weight/bias)")
    for i in range(1, len(layers)):
        if layers[i][0].shape[1] != layers[i - 1][0].shape[0]:
            raise InputError(f"{name}: layers.{i}.weight has {layers[i][0].shape[1]} inputs, previous layer "
                             f"{layers[i - 1][0].shape[0]} outputs")
    return layers


def check_pair(params, params_hat):
    """InputError unless the two parameter dicts have the same names and shapes and finite values."""
    if set(params) != set(params_hat):
        extra = sorted(set(params) ^ set(params_hat))
        raise InputError(f"models differ in tensor names, e.g. {extra[0]!r}")
    for k in params:
        a, b = np.shape(params[k]), np.shape(params_hat[k])
        if a != b:
            raise InputError(f"tensor {k!r} has shape {a} in the model and {b} in the quantized model")
        if not np.isfinite(params_hat[k]).all():
            raise InputError(f"tensor {k!r} of the quantized model contains NaN or Inf")


def make_boxes(lo, hi, t_range=(0.0, 1.0), splits=1):
    """Split the box [lo, hi] (dim,) × [t0, t1] into ``splits`` parts per axis: (n_boxes, dim + 1) lo and hi."""
    lo, hi = np.atleast_1d(np.asarray(lo, np.float64)), np.atleast_1d(np.asarray(hi, np.float64))
    if lo.shape != hi.shape or lo.ndim != 1 or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise InputError(f"box lo/hi must be finite vectors of equal length, got {lo.shape} and {hi.shape}")
    if np.any(hi < lo) or not (0.0 <= t_range[0] <= t_range[1]):
        raise InputError(f"box needs lo <= hi and 0 <= t0 <= t1, got lo={lo}, hi={hi}, t={t_range}")
    check_int("splits", splits, 1)
    lo_all = np.append(lo, t_range[0])
    hi_all = np.append(hi, t_range[1])
    edges = [np.linspace(a, b, splits + 1) for a, b in zip(lo_all, hi_all)]
    idx = np.stack(np.meshgrid(*[np.arange(splits)] * len(edges), indexing="ij"), -1).reshape(-1, len(edges))
    box_lo = np.stack([e[idx[:, j]] for j, e in enumerate(edges)], 1)
    box_hi = np.stack([e[idx[:, j] + 1] for j, e in enumerate(edges)], 1)
    return box_lo, box_hi


def mlp_ranges(layers, box_lo, box_hi):
    """Enclosures of the full-precision MLP's activations on each box: per layer (h_lo, h_hi, z_lo, z_hi), each
    (n_boxes, width). Each pre-activation range is the intersection of plain interval propagation (IBP) and the
    mean-value form z(c) ± |J_z|·r around the box center c (J_z: interval Jacobian of z over the box), which is
    second-order tight for small boxes where IBP's |W|-products wrap."""
    center, radius = (box_lo + box_hi) / 2, (box_hi - box_lo) / 2
    n, d0 = box_lo.shape
    h_c = center                                              # activations at the box center
    jac_c = np.broadcast_to(np.eye(d0), (n, d0, d0))          # interval Jacobian of h w.r.t. the input, C ± R
    jac_r = np.zeros((n, d0, d0))
    out, h_lo, h_hi = [], box_lo, box_hi
    for i, (w, b) in enumerate(layers):
        c, r = (h_lo + h_hi) / 2, (h_hi - h_lo) / 2
        zc, zr = c @ w.T + b, r @ np.abs(w).T
        z_mid = h_c @ w.T + b
        jz_c = np.einsum("ij,bjk->bik", w, jac_c)
        jz_r = np.einsum("ij,bjk->bik", np.abs(w), jac_r)
        mv = np.einsum("bik,bk->bi", np.abs(jz_c) + jz_r, radius)
        pad = 1e-12 * (1.0 + np.abs(z_mid))
        z_lo = np.maximum(zc - zr * SAFETY, z_mid - mv * SAFETY - pad)
        z_hi = np.minimum(zc + zr * SAFETY, z_mid + mv * SAFETY + pad)
        out.append((h_lo, h_hi, z_lo, z_hi))
        if i < len(layers) - 1:
            h_lo, h_hi = silu_interval(z_lo, z_hi)
            g_lo, g_hi = silu_deriv_range(z_lo, z_hi)
            m_lo, m_hi = _interval_mul(g_lo[:, :, None], g_hi[:, :, None], jz_c - jz_r, jz_c + jz_r)
            jac_c, jac_r = (m_lo + m_hi) / 2, (m_hi - m_lo) / 2 * SAFETY
            h_c = silu(z_mid)
    return out


@dataclass
class ErrorBound:
    """Certified ε (sup ℓ2 velocity error over the box) and how it builds up.

    ``eps``: the bound; ``per_box`` (n_boxes,); ``layer_delta``: the ℓ2 error bound after each layer (max over
    boxes); ``box_lo``/``box_hi``: the input box (dim,) and ``t_range``.
    """
    eps: float
    per_box: np.ndarray
    layer_delta: list
    box_lo: np.ndarray
    box_hi: np.ndarray
    t_range: tuple


def _interval_matvec(w, lo, hi):
    """Interval of w @ e for e ∈ [lo, hi] (rows of a batch): center ± radius form, (n, out) lo and hi."""
    c, r = (lo + hi) / 2, (hi - lo) / 2
    yc, yr = c @ w.T, r @ np.abs(w).T * SAFETY
    return yc - yr, yc + yr


def _interval_mul(a_lo, a_hi, b_lo, b_hi):
    """Elementwise interval product [a]·[b]."""
    p = np.stack([a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi])
    return p.min(axis=0), p.max(axis=0)


def box_errors(layers, layers_hat, box_lo, box_hi):
    """Certified ℓ2 bound on ‖v̂ − v‖ on each box (rows of box_lo/box_hi, (n_boxes, dim + 1)); also the max over
    boxes of the bound after each layer. ``layers``: :func:`mlp_layers` of both networks."""
    ranges = mlp_ranges(layers, box_lo, box_hi)
    e_lo = np.zeros_like(box_lo)               # signed interval of ĥ − h, per box and neuron
    e_hi = np.zeros_like(box_lo)
    delta = np.zeros(len(box_lo))              # ‖ĥ − h‖₂ bound
    layer_delta = []
    for i, ((w, b), (w_hat, b_hat), (h_lo, h_hi, z_lo, z_hi)) in enumerate(zip(layers, layers_hat, ranges)):
        dw, db = w_hat - w, b_hat - b
        a_lo, a_hi = _interval_matvec(w_hat, e_lo, e_hi)            # Ŵ(ĥ − h)
        c_lo, c_hi = _interval_matvec(dw, h_lo, h_hi)               # (Ŵ − W)h
        d_lo, d_hi = a_lo + c_lo + db, a_hi + c_hi + db             # ẑ − z
        mag = np.maximum(np.abs(d_lo), np.abs(d_hi))
        h_norm = np.linalg.norm(np.maximum(np.abs(h_lo), np.abs(h_hi)), axis=1)
        delta_z = (np.linalg.norm(w_hat, 2) * delta + np.linalg.norm(dw, 2) * h_norm + np.linalg.norm(db)) * SAFETY
        delta = np.minimum(np.linalg.norm(mag, axis=1) * SAFETY, delta_z)
        if i < len(layers) - 1:                                     # SiLU(ẑ) − SiLU(z) = SiLU'(ξ)(ẑ − z)
            g_lo, g_hi = silu_deriv_range(np.minimum(z_lo, z_lo + d_lo), np.maximum(z_hi, z_hi + d_hi))
            e_lo, e_hi = _interval_mul(g_lo, g_hi, d_lo, d_hi)
            s = np.maximum(np.abs(g_lo), np.abs(g_hi))
            mag = np.maximum(np.abs(e_lo), np.abs(e_hi))
            delta = np.minimum(np.linalg.norm(mag, axis=1) * SAFETY, s.max(axis=1) * delta)
        layer_delta.append(float(delta.max()))
    return delta, layer_delta


def mlp_error_bound(params, params_hat, lo, hi, *, t_range=(0.0, 1.0), splits=4):
    """Certified ε for two MLPVelocity parameter dicts (float and dequantized) over the box (see module doc)."""
    check_pair(params, params_hat)
    layers, layers_hat = mlp_layers(params), mlp_layers(params_hat, "quantized model")
    box_lo, box_hi = make_boxes(lo, hi, t_range, splits)
    if box_lo.shape[1] != layers[0][0].shape[1]:
        raise InputError(f"box has {box_lo.shape[1] - 1} coordinates, the model takes {layers[0][0].shape[1] - 1}")
    delta, layer_delta = box_errors(layers, layers_hat, box_lo, box_hi)
    return ErrorBound(float(delta.max()), delta, layer_delta, np.asarray(lo, np.float64),
                      np.asarray(hi, np.float64), tuple(t_range))


def jacobian_interval(layers, box_lo, box_hi):
    """Interval enclosure C ± R (each (n_boxes, dim, dim)) of ∂v/∂x over each box, by interval matrix products."""
    ranges = mlp_ranges(layers, box_lo, box_hi)
    dim = layers[-1][0].shape[0]
    c = np.broadcast_to(layers[0][0][:, :dim], (len(box_lo),) + layers[0][0][:, :dim].shape)
    r = np.zeros_like(c)
    for (w, _), (_, _, z_lo, z_hi) in zip(layers[1:], ranges[:-1]):
        g_lo, g_hi = silu_deriv_range(z_lo, z_hi)                  # (n_boxes, width)
        m_lo, m_hi = _interval_mul(g_lo[:, :, None], g_hi[:, :, None], c - r, c + r)
        c, r = (m_lo + m_hi) / 2, (m_hi - m_lo) / 2
        c, r = np.einsum("ij,bjk->bik", w, c), np.einsum("ij,bjk->bik", np.abs(w), r) * SAFETY
    return c, r


def is_mlp(params):
    """True when the parameter names are those of an MLPVelocity."""
    return all(k.startswith("layers.") for k in params) and "layers.0.weight" in params


def error_bound(params, params_hat, lo, hi, *, t_range=(0.0, 1.0), splits=4):
    """Certified ε for an MLP's parameters vs their quantized version (U-Net: :mod:`fmq_np.theory.unet_bounds`)."""
    if not is_mlp(params):
        raise InputError("error_bound takes MLPVelocity parameters; for a U-Net (GroupNorm, needs the model) use "
                         "fmq_np.theory.unet_bounds.UNetPair(model, params_hat).error_bound")
    return mlp_error_bound(params, params_hat, lo, hi, t_range=t_range, splits=splits)


def mlp_function(params):
    """The MLPVelocity of ``params`` as a plain float64 NumPy function ``f(x (n, dim), t (n,)) -> v (n, dim)``.

    The same arithmetic as the model's layers, in float64 and without Numba: a fast reference for measurements."""
    layers = mlp_layers(params)

    def f(x, t):
        h = np.concatenate([np.asarray(x, np.float64), np.asarray(t, np.float64)[:, None]], axis=1)
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = silu(h)
        return h
    return f


def measured_error(model, model_hat, x, t):
    """Measured max and RMS of ‖v_θ(x, t) − v_θ̂(x, t)‖₂ over the given points (models evaluated as they are).

    x (n, ...) and t (n,); returns (max, rms, per-point norms (n,)).
    """
    d = (np.asarray(model_hat(x, t), np.float64) - np.asarray(model(x, t), np.float64)).reshape(len(x), -1)
    norms = np.linalg.norm(d, axis=1)
    return float(norms.max()), float(np.sqrt(np.mean(norms ** 2))), norms
