"""Lipschitz constant L of x ↦ v_θ(x, t) (ℓ2 norms, sup over t ∈ [0, 1]): a certified upper bound and an empirical
lower estimate, so that lower ≤ L_true ≤ upper.

Upper (MLPVelocity): L ≤ ‖W_D S_{D−1}‖₂ ··· ‖W_1 S_0‖₂ · ‖W_0[:, :dim]‖₂ where S_i = diag(sup |SiLU'| over the
neuron's pre-activation range) — 1.0998 everywhere without a box (the product-of-spectral-norms bound), or the
interval-bound slopes per sub-box when a box is given (a valid bound for every x in that box, the max over
sub-boxes for the whole box). Spectral norms are computed exactly by SVD in float64 (power iteration converges from
*below*, so it can only serve the lower estimate).

Convolutions: :func:`conv_operator_norm` bounds the operator norm of a zero-padded k×k convolution on an S×S input
by that of the circular convolution on the smallest periodic grid that embeds it without wrap-around, which is
max over the grid's DFT frequencies ω of σ_max(K̂(ω)) (Sedghi et al. 2019); stride 2 (a sub-sampling, norm ≤ 1)
and nearest ×2 up-sampling (norm 2) are composed in.

Lower: the largest ‖J(x, t)v‖/‖v‖ found by power iteration on JᵀJ at points along sampled trajectories, with J v
by central differences of the float64 model and Jᵀu by the model's hand-written backward pass.

U-Net: :class:`fmq_np.theory.unet_bounds.UNetCertifier` composes these convolution norms with GroupNorm's
1/σ (σ bounded below on a box) along the residual and skip graph.

Why the upper bound is loose: the product of per-layer norms assumes the top singular directions of consecutive
layers line up and that every neuron sits at its steepest slope at once; on trained MLPs the gap to the sampled
lower estimate is typically 3–30× and grows with depth.
"""
import numpy as np

from ..errors import InputError
from .network import SILU_DERIV_MAX, is_mlp, make_boxes, mlp_layers, mlp_ranges, silu_slope


def spectral_norm(a):
    """Largest singular value of a 2-D array (float64 SVD; leading axes of a >2-D array are batched)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2 or a.size == 0:
        raise InputError(f"spectral_norm needs a non-empty array with ndim >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError("spectral_norm: array contains NaN or Inf")
    return np.linalg.svd(a, compute_uv=False)[..., 0]


def mlp_lipschitz_boxes(layers, box_lo, box_hi):
    """(n_boxes,) certified x-Lipschitz bounds of the MLP ``layers`` (:func:`~.network.mlp_layers`), one per box
    (rows of box_lo/box_hi, (n_boxes, dim + 1)): ‖W_0[:, :dim]‖₂ · Π ‖W_i S_{i−1}‖₂ with the boxes' SiLU' bounds."""
    dim = layers[0][0].shape[1] - 1
    ranges = mlp_ranges(layers, box_lo, box_hi)
    per_box = np.full(len(box_lo), float(spectral_norm(layers[0][0][:, :dim])))
    for (w, _), (_, _, z_lo, z_hi) in zip(layers[1:], ranges[:-1]):
        s = silu_slope(z_lo, z_hi)                           # (n_boxes, fan_in of w)
        per_box *= spectral_norm(w[None, :, :] * s[:, None, :])
    return per_box * (1.0 + 1e-9)


def mlp_lipschitz_upper(params, lo=None, hi=None, t_range=(0.0, 1.0), splits=1):
    """Certified upper bound on the x-Lipschitz constant of an MLPVelocity (parameter dict), globally or on a box."""
    layers = mlp_layers(params)
    dim = layers[0][0].shape[1] - 1
    first = spectral_norm(layers[0][0][:, :dim])
    if lo is None:
        return float(first * np.prod([spectral_norm(w) * SILU_DERIV_MAX for w, _ in layers[1:]]))
    box_lo, box_hi = make_boxes(lo, hi, t_range, splits)
    return float(mlp_lipschitz_boxes(layers, box_lo, box_hi).max())


def _conv_grid(size, k, padding):
    """Smallest periodic grid length embedding a zero-padded conv of an input of length ``size`` exactly."""
    out = size + 2 * padding - k + 1
    return max(size + padding, out)


def conv_operator_norm(weight, size, stride=1, padding=None, up=1):
    """Certified upper bound on the ℓ2 operator norm of a conv layer (weight (c_out, c_in, k, k)) on size×size input.

    Matches :class:`fmq_np.nn.layers.Conv2d` (cross-correlation, zero ``padding`` default k//2, ``stride`` 1 or 2,
    ``up`` = 2 nearest-upsamples the input first). The bias does not enter a Lipschitz constant.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise InputError(f"conv weight must be (c_out, c_in, k, k), got shape {w.shape}")
    k = w.shape[2]
    padding = k // 2 if padding is None else int(padding)
    if stride not in (1, 2) or up not in (1, 2) or padding < 0 or padding >= k:
        raise InputError(f"conv_operator_norm needs stride, up in (1, 2) and 0 <= padding < k, got "
                         f"stride={stride}, up={up}, padding={padding}, k={k}")
    n = _conv_grid(int(size) * up, k, padding)
    spec = np.fft.fft2(w, s=(n, n))                          # (c_out, c_in, n, n)
    spec = np.moveaxis(spec, (0, 1), (2, 3))                 # (n, n, c_out, c_in)
    bound = float(np.linalg.svd(spec, compute_uv=False)[..., 0].max())
    return bound * (2.0 if up == 2 else 1.0) * (1.0 + 1e-9)


def float64_copy(model):
    """A float64 copy of a velocity model (same class, config and values), leaving ``model`` untouched."""
    clone = type(model)(**model.config()).astype(np.float64)
    clone.load_parameters({k: v.astype(np.float64) for k, v in model.parameters().items()})
    return clone


def jacobian_norm_lower(model, x, t, *, iters=20, fd_step=1e-5, seed=0):
    """‖∂v/∂x (x_i, t_i)‖₂ at each point, (n,) values, each ≤ the true norm up to the O(fd_step²) finite-difference
    error. ``model(x, t)`` in float64 (see :func:`float64_copy`, :func:`fmq_np.theory.network.mlp_function`).

    Up to 16 coordinates: the dense Jacobian by central differences and its exact norm. Beyond: ``iters`` steps of
    power iteration on JᵀJ, J v by central differences and Jᵀu by ``model.forward`` + ``model.backward``.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    n, d = len(x), int(np.prod(x.shape[1:]))
    if d <= 16:
        cols = []
        for e in np.eye(d):
            e = e.reshape(x.shape[1:])
            cols.append(((model(x + fd_step * e, t) - model(x - fd_step * e, t)) / (2 * fd_step)).reshape(n, -1))
        return np.linalg.svd(np.stack(cols, axis=2), compute_uv=False)[:, 0]
    v = np.random.default_rng(seed).standard_normal(x.shape)
    est = np.zeros(n)
    for _ in range(iters):
        v /= np.linalg.norm(v.reshape(n, -1), axis=1).reshape((n,) + (1,) * (x.ndim - 1))
        jv = (model(x + fd_step * v, t) - model(x - fd_step * v, t)) / (2 * fd_step)
        est = np.maximum(est, np.linalg.norm(jv.reshape(n, -1), axis=1))
        model.forward(x, t)
        v = model.backward(jv)
    return est


def trajectory_points(model, x0, steps=10):
    """States (steps·n, ...) and times (steps·n,) visited by ``steps`` Euler steps of ``model`` from x0 (float64)."""
    x = np.asarray(x0, dtype=np.float64)
    xs, ts = [], []
    for i in range(steps):
        t = np.full(len(x), i / steps)
        xs.append(x)
        ts.append(t)
        x = x + np.asarray(model(x, t), np.float64) / steps
    return np.concatenate(xs), np.concatenate(ts)


def lipschitz_lower(model, x0, steps=10, iters=20, seed=0):
    """Empirical lower estimate of L: max of :func:`jacobian_norm_lower` along Euler trajectories from x0.

    ``model``: a velocity model (evaluated through a float64 copy) or a float64 function ``f(x, t)``."""
    f = float64_copy(model) if hasattr(model, "config") else model
    xs, ts = trajectory_points(f, x0, steps)
    return float(jacobian_norm_lower(f, xs, ts, iters=iters, seed=seed).max())


def lipschitz_upper(params, lo=None, hi=None, t_range=(0.0, 1.0), splits=1):
    """Certified L for an MLPVelocity parameter dict (see :func:`mlp_lipschitz_upper`); InputError for others."""
    if not is_mlp(params):
        raise InputError("lipschitz_upper takes MLPVelocity parameters; for a U-Net (GroupNorm, needs the model) use "
                         "fmq_np.theory.unet_bounds.UNetPair(model, params_hat).error_bound")
    return mlp_lipschitz_upper(params, lo, hi, t_range, splits)


__all__ = ["spectral_norm", "mlp_lipschitz_boxes", "mlp_lipschitz_upper", "conv_operator_norm", "float64_copy",
           "jacobian_norm_lower", "trajectory_points", "lipschitz_lower", "lipschitz_upper"]
