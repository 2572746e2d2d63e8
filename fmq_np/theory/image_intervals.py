"""Float64 interval arithmetic for the U-Net's image layers (layout (C, N, H, W), N = boxes or trajectories).

An interval tensor is a pair (lo, hi) of equal-shape arrays; every function returns an enclosure that contains
the exact (real-arithmetic) image of every point of its input intervals, padded for float64 rounding.

* :func:`conv2d` / :func:`conv_interval`: the convolution of :class:`fmq_np.nn.layers.Conv2d` (cross-correlation,
  zero padding, stride 1 or 2, nearest ×``up`` input upsampling) on points and on intervals (center ± radius form:
  W·c ± |W|·r).
* :func:`group_variance_bounds`: certified [var_lo, var_hi] of each (sample, group) variance over a box — the
  quantity that keeps GroupNorm's 1/σ finite.
* :func:`cos_interval` / :func:`sin_interval`: exact images of cos / sin over argument intervals (time embedding).
"""
import numpy as np

from .network import SAFETY

#: relative + absolute padding added to every computed radius to cover float64 rounding of the sums (< 1e-13
#: relative for the ≤ 10^4-term sums here).
ROUND = 1e-12


def pad_radius(center, radius):
    """radius·(1 + 1e-9) + 1e-12·(1 + |center|): a radius that also covers float64 rounding of center and radius."""
    return radius * SAFETY + ROUND * (1.0 + np.abs(center))


def upsample(x, up):
    """Nearest ×``up`` upsampling of (C, N, H, W) in H and W (``up`` = 1 returns x)."""
    if up == 1:
        return x
    return np.repeat(np.repeat(x, up, axis=2), up, axis=3)


def conv2d(x, weight, stride=1, padding=None, up=1):
    """Cross-correlation of x (C_in, N, H, W) with weight (C_out, C_in, k, k), zero ``padding`` (default k//2),
    after nearest ×``up`` upsampling, with ``stride``: (C_out, N, Ho, Wo), Ho = (H·up + 2p − k)//stride + 1. No bias.
    """
    k = weight.shape[2]
    p = k // 2 if padding is None else padding
    x = upsample(x, up)
    _, n, h, w = x.shape
    ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((weight.shape[0], n, ho, wo))
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.tensordot(weight[:, :, i, j], patch, axes=(1, 0))
    return out


def conv_interval(weight, lo, hi, stride=1, up=1):
    """Enclosure [lo', hi'] of conv2d(x, weight) over x ∈ [lo, hi] (no bias).

    Center ± radius: W·c ± |W|·r, widened by the float64 rounding bound γ_{K+3}·|W|·(|c| + r) of K-term dot
    products (K = fan-in; the +3 covers the center/radius split, the radius sum and a later bias add). Relative to
    the operands, so an all-zero interval stays exactly zero (errors of unquantized layers do not grow from pads).
    """
    c, r = (lo + hi) / 2, (hi - lo) / 2
    aw = np.abs(weight)
    yc = conv2d(c, weight, stride, up=up)
    yr = conv2d(r, aw, stride, up=up)
    k = weight.shape[1] * weight.shape[2] * weight.shape[3] + 3
    yr = yr + (k * 2.0 ** -53 * 1.01) * (conv2d(np.abs(c), aw, stride, up=up) + yr) + np.abs(yc) * 2.0 ** -52
    return yc - yr, yc + yr


def _groups(x, groups):
    """(C, N, H, W) -> (groups, C/groups, N, H·W) view."""
    c, n = x.shape[:2]
    return x.reshape(groups, c // groups, n, -1)


def centered_interval(lo, hi, groups):
    """Enclosure of x − mean_group(x) over x ∈ [lo, hi], as (center, radius) of shape (groups, C/groups, N, H·W).

    x_i − μ = (1 − 1/m)x_i − (1/m)Σ_{j≠i}x_j, so its radius is (1 − 2/m)·r_i + (1/m)·Σ_j r_j (m elements a group).
    """
    c, r = _groups((lo + hi) / 2, groups), _groups((hi - lo) / 2, groups)
    m = c.shape[1] * c.shape[3]
    cc = c - c.mean(axis=(1, 3), keepdims=True)
    rd = (1.0 - 2.0 / m) * r + r.sum(axis=(1, 3), keepdims=True) / m
    return cc, pad_radius(cc, rd)


def group_variance_bounds(lo, hi, groups, center=None, rho=None):
    """Certified [var_lo, var_hi] (each (groups, N)) of the (biased) variance of each group over x ∈ [lo, hi].

    Enclosures, the best one taken: (i) elementwise, var = (1/m)Σ(x_i − μ)² with x_i − μ in
    :func:`centered_interval`; (ii) in ℓ2, with c the box center and P the centering projection,
    ‖Pc‖ − ‖r‖₂ ≤ ‖Px‖ ≤ ‖Pc‖ + ‖r‖₂ (P has norm 1 and ‖x − c‖₂ ≤ ‖r‖₂ on the box), var = ‖Px‖²/m; (iii) the same
    with a given ``center`` (C, N, H, W) and ℓ2 radius ``rho`` (N,) when x is also known to lie in that ball.
    Tight when the box is small next to the spread of its center; 0 when the box is wide (GroupNorm then has only
    its eps to keep 1/σ finite).
    """
    cc, rd = centered_interval(lo, hi, groups)
    m = cc.shape[1] * cc.shape[3]
    near = np.maximum(np.abs(cc) - rd, 0.0)
    far = np.abs(cc) + rd
    pc = np.sqrt((cc ** 2).sum(axis=(1, 3)))
    rn = np.sqrt((_groups((hi - lo) / 2, groups) ** 2).sum(axis=(1, 3)))
    var_lo = np.maximum((near ** 2).sum(axis=(1, 3)), np.maximum(pc - rn, 0.0) ** 2)
    var_hi = np.minimum((far ** 2).sum(axis=(1, 3)), (pc + rn) ** 2)
    if center is not None:
        g = _groups(center, groups)
        pg = np.sqrt(((g - g.mean(axis=(1, 3), keepdims=True)) ** 2).sum(axis=(1, 3)))
        var_lo = np.maximum(var_lo, np.maximum(pg - rho, 0.0) ** 2)
        var_hi = np.minimum(var_hi, (pg + rho) ** 2)
    return var_lo / m * (1.0 - 1e-11), var_hi / m * (1.0 + 1e-11) + ROUND


def _trig_interval(lo, hi, phase):
    """Image of cos(a − phase) over a ∈ [lo, hi] (elementwise): endpoints plus interior maxima / minima."""
    a, b = lo - phase, hi - phase
    f_a, f_b = np.cos(a), np.cos(b)
    out_lo, out_hi = np.minimum(f_a, f_b), np.maximum(f_a, f_b)
    has_max = np.floor(b / (2 * np.pi)) >= np.ceil(a / (2 * np.pi))              # some 2πk in [a, b]
    has_min = np.floor((b - np.pi) / (2 * np.pi)) >= np.ceil((a - np.pi) / (2 * np.pi))
    out_hi = np.where(has_max, 1.0, out_hi)
    out_lo = np.where(has_min, -1.0, out_lo)
    return np.maximum(out_lo - ROUND, -1.0), np.minimum(out_hi + ROUND, 1.0)


def cos_interval(lo, hi):
    """[min, max] of cos over [lo, hi] (elementwise arrays, lo ≤ hi)."""
    return _trig_interval(lo, hi, 0.0)


def sin_interval(lo, hi):
    """[min, max] of sin over [lo, hi] (elementwise arrays, lo ≤ hi): sin a = cos(a − π/2)."""
    return _trig_interval(lo, hi, np.pi / 2)


__all__ = ["pad_radius", "upsample", "conv2d", "conv_interval", "centered_interval", "group_variance_bounds",
           "cos_interval", "sin_interval"]
