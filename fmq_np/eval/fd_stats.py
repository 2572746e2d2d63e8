"""Fréchet distances with their statistics: the floor of real data, and paired bootstrap intervals.

An FD between ``n`` samples and a fixed set of real reference images is biased upwards at finite ``n`` and varies
with the draw, so a single number cannot say whether two models differ. This module gives every FD its context:

* :func:`fd_floor` — the FD that real images reach at the same ``n``: the mean (and spread) over disjoint draws
  of ``n`` training images against the same reference (test) images;
* :func:`paired_bootstrap` — intervals for FDs of sample sets that are *paired*: row ``i`` of every set in one
  group was generated from the same noise ``x0[i]`` (the float model and each quantized one), so a bootstrap
  replicate resamples the same rows of every set (and the reference images once per replicate, shared by all
  sets). Differences such as FD(method) − FD(ot) come from the same replicates, which cancels most of the noise
  the sets share. Several groups (noise seeds) are averaged: the reported FD of a name is the mean over the groups,
  and each replicate averages independent per-group resamples.

Intervals are *basic* (reverse-percentile) bootstrap intervals, ``(2θ − q_hi, 2θ − q_lo)``: resampling with
replacement repeats rows, which inflates a replicate's FD; the basic interval corrects that shift to first order,
where the percentile interval would not. All arithmetic is float64.
"""
import numpy as np

from .._validate import check_int
from ..errors import InputError
from .metrics import _sym_sqrt

#: how the intervals are computed (recorded next to every interval in results files)
METHOD = "basic (reverse-percentile) bootstrap over sample rows (paired across sets) and reference images"


def fd_floor(train_features, ref_features, n, max_draws=4, seed=0):
    """FD of ``n`` real training images against the reference: ``{mean, std, values, n_samples, draws}``.

    ``train_features`` (N, d), ``ref_features`` (m, d). Uses ``min(max_draws, N // n)`` disjoint random draws
    (at least 1; needs N ≥ n)."""
    train = _features("train_features", train_features)
    ref = _features("ref_features", ref_features, train.shape[1])
    n = check_int("n", n, 2)
    if len(train) < n:
        raise InputError(f"fd_floor: {len(train)} training images cannot give a draw of n={n}")
    draws = max(1, min(int(max_draws), len(train) // n))
    order = np.random.default_rng(seed).permutation(len(train))
    ref_stats = _moments(ref)
    values = [_fd(_moments(train[order[k * n:(k + 1) * n]]), ref_stats) for k in range(draws)]
    return dict(mean=float(np.mean(values)), std=float(np.std(values, ddof=1)) if draws > 1 else 0.0,
                values=[float(v) for v in values], n_samples=n, draws=draws)


class PairedFD:
    """The result of :func:`paired_bootstrap`: FDs of named sample sets, intervals and paired differences."""

    def __init__(self, names, point, boot, n_samples, groups, level, n_boot):
        self.names, self._point, self._boot = names, point, boot
        self.n_samples, self.groups, self.level, self.n_boot = n_samples, groups, level, n_boot

    def fd(self, name):
        """``{fd, ci, n_samples, groups, per_group, method}``: the mean FD over the groups and its interval."""
        self._check(name)
        return dict(fd=float(self._point[name].mean()), ci=self._interval(self._point[name].mean(), self._boot[name]),
                    n_samples=self.n_samples, groups=self.groups, per_group=[float(v) for v in self._point[name]],
                    method=f"{METHOD}, B={self.n_boot}, {self.level:.0%}")

    def diff(self, name, baseline):
        """``{diff, ci, significant}`` of FD(name) − FD(baseline); significant when the interval excludes 0."""
        self._check(name)
        self._check(baseline)
        d = float(self._point[name].mean() - self._point[baseline].mean())
        lo, hi = self._interval(d, self._boot[name] - self._boot[baseline])
        return dict(diff=d, ci=[lo, hi], significant=bool(lo > 0 or hi < 0))

    def _interval(self, point, replicates):
        alpha = (1.0 - self.level) / 2
        q_lo, q_hi = np.quantile(replicates, [alpha, 1.0 - alpha])
        return [float(2 * point - q_hi), float(2 * point - q_lo)]

    def _check(self, name):
        if name not in self._point:
            raise InputError(f"no sample set named {name!r}; have {', '.join(self.names)}")


def paired_bootstrap(groups, ref_features, n_boot=300, level=0.95, seed=0):
    """Paired bootstrap of FDs. ``groups``: a list (one entry per noise seed) of ``{name: features (n, d)}`` with
    the same names in every group and the same ``n`` within a group; ``ref_features`` (m, d): the real reference
    images. Returns a :class:`PairedFD`."""
    if not groups or any(not isinstance(g, dict) or not g for g in groups):
        raise InputError("groups must be a non-empty list of non-empty {name: features} dicts")
    names = list(groups[0])
    if any(list(g) != names for g in groups):
        raise InputError("every group must hold the same sample sets in the same order")
    ref = _features("ref_features", ref_features)
    sets = [{k: _features(f"features of {k!r}", v, ref.shape[1]) for k, v in g.items()} for g in groups]
    sizes = {len(v) for g in sets for v in g.values()}
    if len(sizes) != 1:
        raise InputError(f"every sample set must hold the same number of rows (paired samples), got {sorted(sizes)}")
    n_boot = check_int("n_boot", n_boot, 10)
    if not 0.5 <= level < 1:
        raise InputError(f"level must be in [0.5, 1), got {level!r}")
    n, m = sizes.pop(), len(ref)
    ref_stats = _moments(ref)
    point = {k: np.array([_fd(_moments(g[k]), ref_stats) for g in sets]) for k in names}
    rng = np.random.default_rng(seed)
    boot = {k: np.zeros(n_boot) for k in names}
    for r in range(n_boot):
        ref_r = _moments(ref, np.bincount(rng.integers(0, m, m), minlength=m))
        for g in sets:
            weights = np.bincount(rng.integers(0, n, n), minlength=n)
            for k in names:
                boot[k][r] += _fd(_moments(g[k], weights), ref_r) / len(sets)
    return PairedFD(names, point, boot, n, len(sets), level, n_boot)


def _moments(f, weights=None):
    """(mean, covariance with ddof 1, its square root) of features f (n, d), rows repeated ``weights`` times."""
    if weights is None:
        mu = f.mean(axis=0)
        c = f - mu
        cov = c.T @ c / (len(f) - 1)
    else:
        w = weights.astype(np.float64)
        total = w.sum()
        mu = w @ f / total
        c = f - mu
        cov = (c * w[:, None]).T @ c / (total - 1)
    return mu, cov, _sym_sqrt(cov)


def _fd(a, b):
    """The Fréchet distance of two (mean, cov, sqrt cov) triples (the FID formula, clipped at 0)."""
    mu_a, cov_a, root_a = a
    mu_b, cov_b, _ = b
    diff = mu_a - mu_b
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross, 0.0))


def _features(name, f, d=None):
    f = np.asarray(f)
    if f.dtype.kind not in "fiu" or f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"{name} must be a real (n, d) array with n >= 2, got {f.dtype} {f.shape}")
    if d is not None and f.shape[1] != d:
        raise InputError(f"{name} has {f.shape[1]} features, expected {d}")
    f = f.astype(np.float64)
    if not np.isfinite(f).all():
        raise InputError(f"{name} contains NaN or Inf")
    return f
