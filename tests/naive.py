"""Plain-NumPy references: every quantizer kernel, and the published algorithms written out straightforwardly.

Slow on purpose (Python loops, no Numba): the tests and benchmarks compare fmq_np against these.
"""
import itertools

import numpy as np


# ------------------------------------------------------------------------------------------------ kernel references
def assign_ref(w2, codebook):
    """Nearest level with ties to the lower one: ``searchsorted(float64 midpoints, x, 'left')`` per row."""
    c = codebook.astype(np.float64)
    t = 0.5 * (c[:, :-1] + c[:, 1:])
    return np.stack([np.searchsorted(t[g], w2[g].astype(np.float64), side="left")
                     for g in range(w2.shape[0])]).astype(np.uint8)


def dequantize_ref(codes, codebook):
    return np.take_along_axis(codebook, codes.astype(np.intp), axis=1)


def channels(w):
    """The published grouping: per channel along axis 0 for ndim > 1, the whole tensor for 1-D."""
    return w.reshape(1, -1) if w.ndim <= 1 else w.reshape(w.shape[0], -1)


# ------------------------------------------------------------------------------------------------ published quantizers
def ot_channel(flat, k):
    """Equal-mass OT of one flat channel: stable argsort, array_split, chunk means in the channel's dtype."""
    out = np.empty_like(flat)
    idx = np.argsort(flat, kind="stable")
    for chunk in np.array_split(idx, min(k, flat.size)):
        out[chunk] = flat[chunk].mean()
    return out


def uniform_channel(flat, k):
    """Asymmetric min-max in the channel's dtype, round half to even; a constant channel is copied."""
    mn, mx = flat.min(), flat.max()
    if mx == mn:
        return flat.copy()
    scale = (mx - mn) / (k - 1)
    return np.rint((flat - mn) / scale) * scale + mn


def pwl_channel(flat, k):
    """Quantile-midpoint PWL: float64 breakpoints by interp over linspace(0, 1, n), midpoint levels."""
    s = np.sort(flat)
    b = np.interp(np.linspace(0, 1, k + 1), np.linspace(0, 1, flat.size), s)
    levels = (b[:-1] + b[1:]) / 2
    idx = np.clip(np.searchsorted(b, flat, side="right") - 1, 0, k - 1)
    return levels[idx].astype(flat.dtype)


def _log_levels(mags, k):
    lo, hi = mags.min(), mags.max()
    if lo == hi:
        return None
    return 2.0 ** np.linspace(np.log(lo) / np.log(2.0), np.log(hi) / np.log(2.0), k)


def log2_channel(flat, k):
    """Sign-split log2: float64 levels and distances, first nearest level, zeros to the smallest-magnitude
    non-zero reconstruction (ties +a/−a → +a), then cast to the channel's dtype."""
    kk = min(k, flat.size)
    x = flat.astype(np.float64)
    q = np.zeros_like(x)
    pos, neg = x > 0, x < 0
    for mask, sign in ((pos, 1.0), (neg, -1.0)):
        if not mask.any():
            continue
        kn = kk // 2 if pos.any() and neg.any() else kk
        mags = sign * x[mask]
        lv = _log_levels(mags, kn)
        if lv is None:
            q[mask] = x[mask]
            continue
        lv = sign * lv
        q[mask] = lv[np.argmin(np.abs(x[mask][:, None] - lv[None, :]), axis=1)]
    nz = q[x != 0]
    if nz.size:
        m = np.abs(nz).min()
        q[x == 0] = m if (nz == m).any() else -m
    return q.astype(flat.dtype)


PUBLISHED = {"ot": ot_channel, "uniform": uniform_channel, "pwl": pwl_channel, "log2": log2_channel}


def published_tensor(w, bits, method):
    """The published quantizer on one tensor (skip rule for ot/pwl/log2: numel < 2**bits → unchanged)."""
    k = 2 ** bits
    if method != "uniform" and w.size < k:
        return w.copy()
    ch = channels(w)
    return np.stack([PUBLISHED[method](ch[c], k) for c in range(ch.shape[0])]).reshape(w.shape)


def published_state_dict(sd, bits, method):
    """Every floating-point tensor of a state dict replaced by its published quantization."""
    return {name: published_tensor(w, bits, method) if w.dtype.kind == "f" else w for name, w in sd.items()}


# ------------------------------------------------------------------------------------------------ W2-optimal codebook
def run_cost(x, wt):
    """Weighted sum of squared deviations of x from its weighted mean (0 for zero mass)."""
    m = wt.sum()
    if m <= 0:
        return 0.0
    mu = (wt * x).sum() / m
    return float((wt * (x - mu) ** 2).sum())


def brute_force_cost(x, k, weights=None):
    """Minimum over every way to cut the sorted points into min(k, n) consecutive non-empty runs."""
    order = np.argsort(x, kind="stable")
    xs = np.asarray(x, np.float64)[order]
    wt = np.ones_like(xs) if weights is None else np.asarray(weights, np.float64)[order]
    n = xs.size
    kk = min(k, n)
    best = np.inf
    for cuts in itertools.combinations(range(1, n), kk - 1):
        edges = (0, *cuts, n)
        best = min(best, sum(run_cost(xs[a:b], wt[a:b]) for a, b in zip(edges[:-1], edges[1:])))
    return best


def dp_cost(x, k, weights=None):
    """Optimal 1-D k-means cost by the plain O(k·n²) dynamic programme (float64)."""
    order = np.argsort(x, kind="stable")
    xs = np.asarray(x, np.float64)[order]
    wt = np.ones_like(xs) if weights is None else np.asarray(weights, np.float64)[order]
    n = xs.size
    kk = min(k, n)
    D = np.array([run_cost(xs[:j], wt[:j]) for j in range(n + 1)])
    for m in range(1, kk):
        D = np.array([min((D[i] + run_cost(xs[i:j], wt[i:j]) for i in range(m, j)), default=np.inf)
                      for j in range(n + 1)])
    return float(D[n])


def codebook_cost(x, levels, weights=None):
    """Weighted squared error of nearest-level assignment of x to ``levels``."""
    x = np.asarray(x, np.float64)
    wt = np.ones_like(x) if weights is None else np.asarray(weights, np.float64)
    d = np.min((x[:, None] - np.asarray(levels, np.float64)[None, :]) ** 2, axis=1)
    return float((wt * d).sum())
