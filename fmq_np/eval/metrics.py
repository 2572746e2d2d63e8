"""Sample-quality metrics computed in float64."""
import numpy as np

from .._validate import check_int
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


def _check_images(name, a, shape=None):
    """``a`` as float64 (n, C, H, W) with finite values (and the given shape); InputError naming ``name``."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim != 4 or a.size == 0:
        raise InputError(f"{name} must be a non-empty (n, C, H, W) array, got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise InputError(f"{name} must have the shape of the first argument {shape}, got {a.shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or Inf")
    return a


def psnr(a, b):
    """Peak signal-to-noise ratio in dB of images a, b (n, C, H, W) with values in [0, 1]: 20·log10(1/√MSE).

    The MSE is taken over every element of the batch (one number); identical inputs give ``inf``.
    """
    a = _check_images("a", a)
    b = _check_images("b", b, a.shape)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0.0 else float(-10.0 * np.log10(mse))


def _window_means(x, k):
    """Means of every k×k window (valid positions) of x (..., H, W) → (..., H−k+1, W−k+1), via integral images."""
    s = np.zeros(x.shape[:-2] + (x.shape[-2] + 1, x.shape[-1] + 1))
    s[..., 1:, 1:] = x.cumsum(-2).cumsum(-1)
    return (s[..., k:, k:] - s[..., :-k, k:] - s[..., k:, :-k] + s[..., :-k, :-k]) / (k * k)


def ssim(a, b, window=11):
    """Mean structural similarity of images a, b (n, C, H, W) with values in [0, 1].

    Local statistics over every ``window``×``window`` *mean* (box) window that fits inside the image (no
    padding), population (co)variances, C1 = 0.01², C2 = 0.03² (data range 1). Computed per image and channel,
    then averaged over all windows, channels and images. H and W must be ≥ ``window``.
    """
    a = _check_images("a", a)
    b = _check_images("b", b, a.shape)
    if min(a.shape[2:]) < window:
        raise InputError(f"a: images of {a.shape[2]}x{a.shape[3]} are smaller than the {window}x{window} window")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = _window_means(a, window), _window_means(b, window)
    var_a = _window_means(a * a, window) - mu_a ** 2
    var_b = _window_means(b * b, window) - mu_b ** 2
    cov = _window_means(a * b, window) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(np.mean(s))


def _check_features(name, f):
    f = np.asarray(f)
    if f.dtype.kind not in "fiu" or f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"{name} must be a real (n, d) array with n >= 2, got {f.dtype} {f.shape}")
    f = f.astype(np.float64)
    if not np.isfinite(f).all():
        raise InputError(f"{name} contains NaN or Inf")
    return f


def mmd(x, y, bandwidth=None):
    """Unbiased estimate of the squared maximum mean discrepancy between samples x (n, ...) and y (m, ...) with
    the Gaussian kernel exp(−‖a − b‖² / (2σ²)), float64; σ = ``bandwidth`` or, when None, the median distance
    between the points of the pooled sample (the median heuristic). Near 0 (it can be slightly negative) when both
    come from one distribution. Returns ``(mmd2, sigma)``."""
    a = _check_features("x", np.asarray(x).reshape(len(x), -1))
    b = _check_features("y", np.asarray(y).reshape(len(y), -1))
    if a.shape[1] != b.shape[1]:
        raise InputError(f"y must have {a.shape[1]} features like x, got {b.shape[1]}")
    pooled = np.concatenate([a, b])
    sq = np.sum(pooled ** 2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    if bandwidth is None:
        off = d2[np.triu_indices(len(pooled), 1)]
        sigma = float(np.median(np.sqrt(off)))
    elif isinstance(bandwidth, bool) or not np.isfinite(bandwidth) or bandwidth <= 0:
        raise InputError(f"bandwidth must be a positive number or None, got {bandwidth!r}")
    else:
        sigma = float(bandwidth)
    k = np.exp(-d2 / (2.0 * max(sigma, 1e-300) ** 2))
    n, m = len(a), len(b)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    mmd2 = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean())
    return float(mmd2), sigma


def frechet_distance(feat_a, feat_b):
    """Fréchet distance between Gaussians fitted to two feature sets (n, d) and (m, d), float64.

    ‖μa − μb‖² + tr(Σa + Σb − 2·(Σa^½ Σb Σa^½)^½) with sample covariances (ddof 1); the matrix square roots come
    from symmetric eigendecompositions with negative eigenvalues (round-off) clipped to 0, and the result is
    clipped at ≥ 0. This is the FID formula; it is a *squared* distance.
    """
    a = _check_features("feat_a", feat_a)
    b = _check_features("feat_b", feat_b)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feat_b must have {a.shape[1]} features like feat_a, got {b.shape[1]}")
    mu = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sym_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    return float(max(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross, 0.0))


def _sym_sqrt(m):
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def train_feature_net(images, labels=None, *, width=8, steps=200, batch_size=64, lr=3e-3, seed=0):
    """The feature network of :func:`image_frechet_distance`: an ``fmq_np.nn.Classifier`` for images (n, C, H, W).

    With ``labels`` (n,) integers it is trained for ``steps`` AdamW steps of softmax cross-entropy on random
    batches; without labels it keeps its fixed-seed random initial weights (a random-feature network: its distances
    compare images but are not those of a trained net). H = W must be divisible by 4. Features: 4·``width``.
    """
    from .. import nn
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise InputError(f"images must be (n, C, S, S), got shape {images.shape}")
    n_classes = 2
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise InputError(f"labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}")
        n_classes = max(int(labels.max()) + 1, 2)
    net = nn.Classifier(channels=images.shape[1], size=images.shape[2], n_classes=n_classes, width=width, seed=seed)
    if labels is None:
        return net
    rng = np.random.default_rng(seed)
    opt = nn.AdamW(net.parameters(), lr=lr)
    for _ in range(int(steps)):
        idx = rng.integers(0, len(images), batch_size)
        _, dlogits = nn.cross_entropy(net.forward(images[idx].astype(np.float32)), labels[idx])
        net.backward(dlogits)
        opt.step(net.gradients())
    return net


def image_features(net, images, batch_size=256, threads=None):
    """Features (n, d) float64 of images (n, C, H, W) under the feature network ``net``, in batches of
    ``batch_size`` run on ``threads`` threads (None: fmq_np's thread count; see :func:`fmq_np._threads.run_batches`;
    the batches, and so the features, are the same at any thread count)."""
    from .._threads import run_batches
    images = np.asarray(images, np.float32)
    batches = [slice(i, i + batch_size) for i in range(0, len(images), batch_size)]
    parts = run_batches(lambda rows: net.features(images[rows]).astype(np.float64), batches, threads, net)
    return np.concatenate(parts)


def image_frechet_distance(net, images_a, images_b):
    """Fréchet distance between the ``net`` features of two image sets (n, C, H, W) in [−1, 1] ("FID-like")."""
    return frechet_distance(image_features(net, images_a), image_features(net, images_b))


def latent_stability(features, n_components=20, collapse_below=1e-4):
    """The paper's latent-stability figures of features (n, d) (e.g. ``UNetVelocity.latent`` on test images):
    PCA to ``k = min(n_components, n - 1, d)`` components; returns ``{mean_variance, std_variance, collapsed,
    n_components}`` — mean and std of the k per-component variances (float64, ``ddof=1``) and how many of them are
    below ``collapse_below`` (collapsed components)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] < 1:
        raise InputError(f"latent_stability: features must be (n >= 2, d >= 1), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise InputError("latent_stability: features contain NaN or Inf")
    check_int("latent_stability: n_components", n_components, 1)
    k = int(min(n_components, f.shape[0] - 1, f.shape[1]))
    s = np.linalg.svd(f - f.mean(axis=0), compute_uv=False)[:k]
    var = s ** 2 / (f.shape[0] - 1)
    return dict(mean_variance=float(var.mean()), std_variance=float(var.std()),
                collapsed=int((var < collapse_below).sum()), n_components=k)

