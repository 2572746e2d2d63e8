"""Plain-NumPy references for every Numba kernel of fmq_np, and the published quantizers written out plainly.

Slow on purpose (Python loops, no Numba): the tests and benchmarks compare fmq_np against these. Sections:
quantizer kernels and published algorithms (fmq_np.quant), bit packing (fmq_np.quant.packing, little-endian bit
stream), network kernels (fmq_np.nn.kernels; image arrays in the kernels' channel-major layout (C, N, H, W)).
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


# ------------------------------------------------------------------------------------------------ kernel rules
# The quantizers as the kernels compute them (machine-independent rules, the published arithmetic otherwise).
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


# ------------------------------------------------------------------------------------------------ the published code
# What Quantized-FM/LowBit-HighFid's PC-*-Quant.py compute, operation by operation, written out plainly (the ground
# truth they are checked against is tests/fixtures/published_expected.npz, made by the published code in torch).
# Where these differ from the kernel rules above: ot ranks with np.argsort's default (unstable) kind; uniform runs in
# the tensor's dtype (float16 too); log2 takes np.log in the tensor's dtype, gives negatives K // 2 levels always,
# and maps zeros to the first smallest-magnitude reconstruction in flat order.
def published_ot_channel(flat, k):
    kk = min(k, flat.size)
    idx = np.argsort(flat)
    sorted_vals = flat[idx]
    out_sorted = np.empty_like(sorted_vals)
    start = 0
    for chunk in np.array_split(sorted_vals, kk):
        out_sorted[start:start + len(chunk)] = np.array(chunk.mean(), dtype=flat.dtype)
        start += len(chunk)
    return out_sorted[np.argsort(idx)]


def published_log2_channel(flat, k):
    kk = min(k, flat.size)
    result = np.zeros_like(flat)
    pos, neg = flat > 0, flat < 0
    if pos.any():
        v = flat[pos]
        if v.min() == v.max():
            result[pos] = v.min()
        else:
            lv = 2.0 ** np.linspace(np.log(v.min()) / np.log(2.0), np.log(v.max()) / np.log(2.0),
                                    kk // 2 if neg.any() else kk)
            result[pos] = lv[np.argmin(np.abs(v.astype(np.float64)[:, None] - lv[None, :]), axis=1)]
    if neg.any():
        v = flat[neg]
        if v.min() == v.max():
            result[neg] = v.min()
        else:
            m = -v
            lv = -(2.0 ** np.linspace(np.log(m.min()) / np.log(2.0), np.log(m.max()) / np.log(2.0), kk // 2))
            result[neg] = lv[np.argmin(np.abs(v.astype(np.float64)[:, None] - lv[None, :]), axis=1)]
    if (flat == 0).any():
        nz = result[result != 0]
        result[flat == 0] = nz[np.argmin(np.abs(nz))] if len(nz) else 0
    return result


def published_tensor(w, bits, method):
    """The published quantizer on one tensor (skip rule for ot/pwl/log2: numel < 2**bits → unchanged)."""
    k = 2 ** bits
    if method != "uniform" and w.size < k:
        return w.copy()
    rule = {"ot": published_ot_channel, "uniform": uniform_channel, "pwl": pwl_channel,
            "log2": published_log2_channel}[method]
    ch = channels(w)
    return np.stack([rule(ch[c], k) for c in range(ch.shape[0])]).reshape(w.shape)


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


# ------------------------------------------------------------------------------------------------ bit packing
def pack_codes(codes, bits):
    """uint8 codes (n,) → uint8 (ceil(n*bits/8),): bit k of code i is stream bit i*bits + k, LSB first."""
    codes = np.asarray(codes, np.uint8).reshape(-1)
    stream = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(stream.reshape(-1), bitorder="little")


def unpack_codes(packed, bits, n):
    """Inverse of :func:`pack_codes`: the first n*bits stream bits of ``packed`` → uint8 (n,)."""
    stream = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: n * bits].reshape(n, bits)
    return (stream.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ network kernels
def upsample_nearest(x, up):
    """(C, N, H, W) -> (C, N, H*up, W*up) by repeating pixels."""
    return np.repeat(np.repeat(x, up, axis=2), up, axis=3)


def im2col(x, k, stride, pad, up, ho, wo):
    """cols[(c*k + i)*k + j, (n*ho + oy)*wo + ox] = pad(upsample(x))[c, n, oy*stride + i, ox*stride + j]."""
    c_in, n = x.shape[:2]
    xp = np.pad(upsample_nearest(x, up), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.zeros((c_in, k, k, n, ho, wo), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            cols[:, i, j, :, :patch.shape[2], :patch.shape[3]] = patch
    return cols.reshape(c_in * k * k, n * ho * wo)


def col2im(cols, shape, k, stride, pad, up, ho, wo):
    """Adjoint of :func:`im2col`: dx of shape ``shape`` (C, N, H, W) such that <im2col(x), cols> = <x, dx>."""
    c_in, n, h, w = shape
    c6 = cols.reshape(c_in, k, k, n, ho, wo)
    dxp = np.zeros((c_in, n, h * up + 2 * pad + stride * k, w * up + 2 * pad + stride * k), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += c6[:, i, j]
    dxu = dxp[:, :, pad:pad + h * up, pad:pad + w * up]
    return dxu.reshape(c_in, n, h, up, w, up).sum(axis=(3, 5))


def conv2d(x, weight, bias, stride, pad, up):
    """Direct convolution (cross-correlation) of (C, N, H, W) by weight (O, C, k, k) -> (O, N, Ho, Wo)."""
    k = weight.shape[2]
    xp = np.pad(upsample_nearest(x, up), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (xp.shape[2] - k) // stride + 1
    wo = (xp.shape[3] - k) // stride + 1
    out = np.zeros((weight.shape[0], x.shape[1], ho, wo))
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("oc,cnhw->onhw", weight[:, :, i, j], patch)
    return out + bias[:, None, None, None]


def silu(z):
    return z / (1.0 + np.exp(-z))


def silu_grad(z):
    s = 1.0 / (1.0 + np.exp(-z))
    return s * (1.0 + z * (1.0 - s))


def group_norm_fwd(x, groups, gamma, beta, scale=None, shift=None, act=False, eps=1e-5):
    """x (C, N, S) -> y (C, N, S), mean (N, G), rstd (N, G); same formula as the kernel, in float64."""
    c, n, s = x.shape
    xg = x.astype(np.float64).transpose(1, 0, 2).reshape(n, groups, -1)
    mean = xg.mean(axis=2)
    rstd = 1.0 / np.sqrt(xg.var(axis=2) + eps)
    xhat = ((xg - mean[:, :, None]) * rstd[:, :, None]).reshape(n, c, s).transpose(1, 0, 2)
    a = gamma[:, None, None] * xhat + beta[:, None, None]
    m = a if scale is None else a * (1.0 + scale[:, :, None]) + shift[:, :, None]
    y = silu(m) if act else m
    return y, mean, rstd


def group_norm_bwd(dy, x, groups, gamma, beta, scale=None, shift=None, act=False, eps=1e-5):
    """Returns dx (C, N, S), dgamma (C,), dbeta (C,), dscale (C, N) or None, dshift (C, N) or None (float64)."""
    c, n, s = x.shape
    xg = x.astype(np.float64).transpose(1, 0, 2).reshape(n, groups, -1)
    mean = xg.mean(axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(xg.var(axis=2, keepdims=True) + eps)
    xhat_g = (xg - mean) * rstd
    xhat = xhat_g.reshape(n, c, s).transpose(1, 0, 2)
    a = gamma[:, None, None] * xhat + beta[:, None, None]
    sc = np.ones((c, n)) if scale is None else 1.0 + scale
    sh = np.zeros((c, n)) if shift is None else shift
    m = a * sc[:, :, None] + sh[:, :, None]
    dm = dy * silu_grad(m) if act else dy.astype(np.float64)
    dscale = (dm * a).sum(axis=2) if scale is not None else None
    dshift = dm.sum(axis=2) if scale is not None else None
    da = dm * sc[:, :, None]
    dgamma = (da * xhat).sum(axis=(1, 2))
    dbeta = da.sum(axis=(1, 2))
    dxhat = (da * gamma[:, None, None]).transpose(1, 0, 2).reshape(n, groups, -1)
    dxg = rstd * (dxhat - dxhat.mean(axis=2, keepdims=True) - xhat_g * (dxhat * xhat_g).mean(axis=2, keepdims=True))
    dx = dxg.reshape(n, c, s).transpose(1, 0, 2)
    return dx, dgamma, dbeta, dscale, dshift


def adamw(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One torch.optim.AdamW step (step counted from 1); returns new (p, m, v)."""
    p = p * (1.0 - lr * weight_decay)
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    mhat = m / (1.0 - beta1 ** step)
    vhat = v / (1.0 - beta2 ** step)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v


def subpixel_scatter(zg, h, w):
    """zg (4, C, n, (h+1)*(w+1)) phase grids -> (C, n*2h*2w): out[c, n, 2a+py, 2b+px] = zg[2py+px, c, n, a+py, b+px]."""
    _, c, n, _ = zg.shape
    grids = zg.reshape(4, c, n, h + 1, w + 1)
    out = np.zeros((c, n, 2 * h, 2 * w), dtype=zg.dtype)
    for py in range(2):
        for px in range(2):
            out[:, :, py::2, px::2] = grids[2 * py + px, :, :, py:py + h, px:px + w]
    return out.reshape(c, -1)


def subpixel_gather(dy, h, w):
    """Adjoint of subpixel_scatter: dy (C, n, 2h, 2w) -> (4, C, n, (h+1)*(w+1)), unread grid positions 0."""
    c, n = dy.shape[:2]
    grids = np.zeros((4, c, n, h + 1, w + 1), dtype=dy.dtype)
    for py in range(2):
        for px in range(2):
            grids[2 * py + px, :, :, py:py + h, px:px + w] = dy[:, :, py::2, px::2]
    return grids.reshape(4, c, n, -1)


WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)


def winograd_tiles(x):
    """x (C, n, H, W), H and W even -> (16, C, n*H/2*W/2): Bᵀ d B of the 4×4 patch d around each 2×2 output tile
    of the image zero-padded by 1, tiles in (sample, row, column) order, entries (i, j) flattened."""
    c, n, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((4, 4, c, n, h // 2, w // 2), dtype=x.dtype)
    for ty in range(h // 2):
        for tx in range(w // 2):
            d = xp[:, :, 2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4]
            out[:, :, :, :, ty, tx] = np.einsum("ia,cnab,jb->ijcn", WINOGRAD_BT, d, WINOGRAD_BT)
    return out.reshape(16, c, -1)


def winograd_untile(m, h, w):
    """m (16, C, n*H/2*W/2) -> (C, n*H*W): Aᵀ M A of each tile's 4×4 block, written to its 2×2 outputs."""
    _, c, t = m.shape
    n = t // (h * w // 4)
    tiles = m.reshape(4, 4, c, n, h // 2, w // 2)
    out = np.zeros((c, n, h, w), dtype=m.dtype)
    for ty in range(h // 2):
        for tx in range(w // 2):
            out[:, :, 2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2] = np.einsum(
                "ai,ijcn,bj->cnab", WINOGRAD_AT, tiles[:, :, :, :, ty, tx], WINOGRAD_AT)
    return out.reshape(c, -1)


# ------------------------------------------------------------------------------ calibration (fmq_np.quant.calibrate)
def obq_error_feedback(w, codebook, h, damp=0.01):
    """OBQ / OBS error feedback written out plainly: for each column j in order, round every row of column j to the
    nearest level of its codebook row (ties to the lower level), spread the error over the not yet quantized
    columns F by the explicit inverse of the damped Hessian restricted to F — W[:, F] -= err/Hinv[j, j] ⊗
    Hinv[j, F] — then remove j from Hinv (Hinv -= Hinv[:, j] Hinv[j, :] / Hinv[j, j]). Damping: dead inputs
    (diag 0) get 1 on the diagonal, then damp·mean(live diagonal) is added. Returns (codes, w_hat) float64."""
    w = np.array(w, dtype=np.float64)
    cb = np.asarray(codebook, dtype=np.float64)
    h = np.array(h, dtype=np.float64)
    d = np.diag(h).copy()
    for i in range(len(d)):
        if d[i] <= 0:
            h[i, i] = 1.0
    live = d[d > 0]
    lam = damp * (live.mean() if live.size else 1.0)
    for i in range(len(d)):
        h[i, i] += lam
    hinv = np.linalg.inv(h)
    n_out, n = w.shape
    codes = np.zeros((n_out, n), dtype=np.int64)
    w_hat = np.zeros((n_out, n))
    for j in range(n):
        for r in range(n_out):
            dist = [abs(c - w[r, j]) for c in cb[r]]
            codes[r, j] = int(np.argmin(dist))
            w_hat[r, j] = cb[r, codes[r, j]]
        err = (w[:, j] - w_hat[:, j]) / hinv[j, j]
        for f in range(j + 1, n):
            w[:, f] -= err * hinv[j, f]
        hinv = hinv - np.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]
    return codes, w_hat


def layer_input_rows(layer_kind, x, k=1, stride=1, pad=0, up=1):
    """The matrix X a layer's weight multiplies, rows = (sample, output pixel): a Linear's input (N, F) itself; a
    convolution's im2col of x (C, N, H, W), transposed (rows (n, oy, ox), columns (c, i, j))."""
    if layer_kind == "linear":
        return np.asarray(x, np.float64)
    h, w = x.shape[2], x.shape[3]
    ho, wo = (h * up + 2 * pad - k) // stride + 1, (w * up + 2 * pad - k) // stride + 1
    return im2col(np.asarray(x, np.float64), k, stride, pad, up, ho, wo).T
