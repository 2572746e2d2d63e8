"""Plain-NumPy references for the Numba kernels of fmq_np.nn.kernels (slow, obvious, float64 where it matters).

Image arrays use the kernels' channel-major layout (C, N, H, W).
"""
import numpy as np


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
