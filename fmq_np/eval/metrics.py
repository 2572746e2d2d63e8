"""Sample-quality metrics computed in float64."""
import numpy as np

from ..errors import InputError


def w2_1d(a, b):
    """Exact 2-Wasserstein distance between two 1-D empirical distributions (any sizes), via quantile functions.

    a: (n,), b: (m,). With n == m this is sqrt(mean((sort(a) − sort(b))²)).
    """
    a = np.sort(np.asarray(a, np.float64).ravel())
    b = np.sort(np.asarray(b, np.float64).ravel())
    if len(a) == len(b):
        return float(np.sqrt(np.mean((a - b) ** 2)))
    # integrate (F_a^-1(u) − F_b^-1(u))² over the union of both step functions' breakpoints
    u = np.union1d(np.arange(1, len(a) + 1) / len(a), np.arange(1, len(b) + 1) / len(b))
    widths = np.diff(np.concatenate([[0.0], u]))
    mid = u - widths / 2
    qa = a[np.minimum((mid * len(a)).astype(np.int64), len(a) - 1)]
    qb = b[np.minimum((mid * len(b)).astype(np.int64), len(b) - 1)]
    return float(np.sqrt(np.sum(widths * (qa - qb) ** 2)))


def sliced_w2(x, y, n_projections=256, seed=0):
    """Sliced 2-Wasserstein distance: root-mean over random unit directions of the 1-D W2 of the projections.

    x: (n, ...), y: (m, ...) with the same trailing shape (flattened to d features). Same seed → same directions.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise InputError(f"sliced_w2: samples have {x.shape[1]} and {y.shape[1]} features")
    if len(x) == 0 or len(y) == 0:
        raise InputError("sliced_w2: empty sample")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("sliced_w2: samples contain NaN or Inf")
    dirs = np.random.default_rng(seed).standard_normal((x.shape[1], n_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    px, py = x @ dirs, y @ dirs
    return float(np.sqrt(np.mean([w2_1d(px[:, j], py[:, j]) ** 2 for j in range(n_projections)])))
