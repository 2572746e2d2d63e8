"""Log-likelihood of data under a flow-matching model: the probability-flow ODE run backwards with its divergence.

Convention: x0 = noise at t = 0 with density p0 = N(0, I), x1 = data at t = 1. Along dx/dt = v(x, t) the density
obeys d log p_t(x_t)/dt = −div v(x_t, t), so

    log p1(x1) = log p0(x0) − ∫_0^1 div v(x_t, t) dt,

where x_t solves the ODE from x1 at t = 1 back to x0 at t = 0. :func:`log_likelihood` integrates the joint state
(x, ∫ div) from t = 1 to t = 0 with the solvers of :mod:`fmq_np.flow.solvers` (the same step rules as sampling,
with a negative step), in float64.

The divergence comes from the models' hand-written backward pass, ``model.forward(x, t)`` then
``model.backward(dv)`` → dvᵀ J (J = ∂v/∂x of each sample):

* ``"exact"``: the trace of J from D one-hot cotangents (D = values per sample), batched as D copies of the batch
  in one forward/backward pass (in blocks of at most ``max_rows`` rows). Cost ∝ D: meant for 2-D / tabular data.
* ``"hutchinson"``: E[εᵀ J ε] with Rademacher (default) or Gaussian probes ε, ``n_probes`` per sample, drawn
  once per trajectory from ``seed`` (as flow_matching's ``compute_likelihood`` does) and kept fixed along it, so
  the joint field is smooth and any solver (dopri5 too) applies. Unbiased for log p; one backward pass per probe.

Both run ``model.forward`` (which replaces the model's training cache: call between training steps, not inside
one) and ``model.backward``, which overwrites the parameter gradients: those are saved first and restored after,
so an optimizer holding ``model.gradients()`` sees no change.

Bits per dimension: ``−log p(x) / (D ln 2)`` of the continuous density in the data's own units (for images in
[-1, 1], that is the density on [-1, 1]^D). The usual 8-bit-image figure needs the change of variables to pixel
units: ``levels=256`` adds ``log2((levels − 1) / 2)`` per dimension (the datasets map pixel k to
2k/(levels − 1) − 1, so a pixel bin is 2/(levels − 1) wide). That is the density at the pixel value times the bin
volume, an approximation of the discrete likelihood; no dequantization noise is integrated (so it is not the
variational bound that uniform or learned dequantization gives). Without ``levels`` no offset is added.
"""
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from .._progress import Progress
from .._validate import check_int, is_int
from ..errors import InputError
from .shapes import check_data
from .solvers import check_solver, integrate

METHODS = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
_LOG_2PI = float(np.log(2.0 * np.pi))


class Likelihood(NamedTuple):
    """Result of :func:`log_likelihood`, per sample (float64, shape (n,)).

    ``log_p``: log p1(x) in nats; ``bits_per_dim``: −log_p / (D ln 2) (+ log2((levels−1)/2) when ``levels`` was
    given); ``log_p0``: log N(x0; 0, I) at the noise end; ``delta``: −∫_0^1 div v dt (so log_p = log_p0 + delta);
    ``x0``: the noise the data maps to (float64, shaped like x); ``nfe``: evaluations of the joint field per
    trajectory (the most over batches).
    """
    log_p: np.ndarray
    bits_per_dim: np.ndarray
    log_p0: np.ndarray
    delta: np.ndarray
    x0: np.ndarray
    nfe: int

    @property
    def mean_bits_per_dim(self):
        """Average bits/dim over the samples (float)."""
        return float(np.mean(self.bits_per_dim))



def _model_dtype(model):
    return np.dtype(getattr(model, "dtype", np.float32))


@contextmanager
def _gradients_kept(model):
    """Save the model's parameter gradients and restore them on exit (backward overwrites them)."""
    grads = model.gradients() if hasattr(model, "gradients") else {}
    saved = {k: g.copy() for k, g in grads.items()}
    try:
        yield
    finally:
        for k, g in grads.items():
            np.copyto(g, saved[k])


def _times(model, t, n):
    t = np.asarray(t, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(n, float(t))
    if t.shape != (n,) or not np.isfinite(t).all():
        raise InputError(f"t must be a finite scalar or shape ({n},), got shape {t.shape}")
    return t.astype(_model_dtype(model))


def _velocity_and_trace(model, x, t, max_rows):
    """v (n, *shape) and the exact tr(∂v/∂x) (n,) float64 from one-hot cotangents, dims in blocks."""
    n, shape = len(x), x.shape[1:]
    d = int(np.prod(shape))
    block = max(1, min(d, max_rows // n))
    dtype = _model_dtype(model)
    trace = np.zeros(n, np.float64)
    v = None
    for start in range(0, d, block):
        dims = np.arange(start, min(d, start + block))
        k = len(dims)
        out = model.forward(np.tile(x, (k,) + (1,) * len(shape)), np.tile(t, k))
        if v is None:
            v = np.array(out[:n], copy=True)
        cot = np.zeros((k, n, d), dtype)
        cot[np.arange(k), :, dims] = 1
        dx = np.asarray(model.backward(cot.reshape((k * n,) + shape))).reshape(k, n, d)
        trace += dx[np.arange(k), :, dims].astype(np.float64).sum(axis=0)
    return v, trace


def _velocity_and_hutchinson(model, x, t, probes):
    """v (n, *shape) and the mean over probes (P, n, *shape) of εᵀ J ε (n,) float64, one pass for all probes."""
    p, n = probes.shape[:2]
    out = model.forward(np.tile(x, (p,) + (1,) * (x.ndim - 1)), np.tile(t, p))
    v = np.array(out[:n], copy=True)
    dx = np.asarray(model.backward(probes.reshape((p * n,) + x.shape[1:])))
    est = np.einsum("pnd,pnd->pn", dx.reshape(p, n, -1).astype(np.float64),
                    probes.reshape(p, n, -1).astype(np.float64))
    return v, est.mean(axis=0)


def divergence(model, x, t, probes=None, max_rows=16384):
    """div_x v(x, t) per sample, float64 (n,): exact (``probes=None``) or the Hutchinson mean over ``probes``.

    x: (n, *sample_shape); t: scalar or (n,); probes: (P, n, *sample_shape) fixed vectors ε, giving
    mean_p ε_pᵀ J ε_p. Parameter gradients are left as they were; the model's forward cache is replaced.
    """
    check_data(model, x, "x")
    x = np.ascontiguousarray(x, dtype=_model_dtype(model))
    t = _times(model, t, len(x))
    max_rows = check_int("max_rows", max_rows, 1)
    with _gradients_kept(model):
        if probes is None:
            return _velocity_and_trace(model, x, t, max_rows)[1]
        probes = np.asarray(probes)
        if probes.ndim != x.ndim + 1 or probes.shape[1:] != x.shape or len(probes) == 0:
            raise InputError(f"probes must have shape (P, {', '.join(map(str, x.shape))}), got {probes.shape}")
        return _velocity_and_hutchinson(model, x, t, probes.astype(_model_dtype(model), copy=False))[1]


def draw_probes(rng, n_probes, n, shape, *, kind="rademacher", dtype=np.float32):
    """Hutchinson probes (n_probes, n, *shape): ±1 (``"rademacher"``) or N(0, 1) (``"gaussian"``).

    Drawn sample-major, so sample i gets the same probes whatever n (and however the samples are batched).
    """
    size = (n, n_probes) + tuple(shape)
    if kind == "rademacher":
        eps = rng.integers(0, 2, size=size, dtype=np.int8).astype(dtype) * 2 - 1
    else:
        eps = rng.standard_normal(size).astype(dtype)
    return np.ascontiguousarray(np.swapaxes(eps, 0, 1))


def log_likelihood(model, x, *, method="exact", solver="heun2", steps=50, seed=0, n_probes=1, probe="rademacher",
                   batch_size=1024, levels=None, atol=1e-5, rtol=1e-5, max_rows=16384, progress=None):
    """log p(x) under ``model``'s flow and bits/dim: integrate the ODE from data (t = 1) to noise (t = 0).

    x: (n, *sample_shape) data (float; float32 models compute in float32, the ODE state is float64).
    method: ``"exact"`` (trace of the Jacobian: D backward cotangents per evaluation) or ``"hutchinson"``
    (``n_probes`` fixed ``probe`` vectors per sample from ``seed``). solver/steps: as in :func:`sample`
    (``euler``, ``midpoint``, ``heun2``, ``rk4``: ``steps`` equal steps; ``dopri5``: adaptive with atol/rtol).
    batch_size: samples integrated together (exact: ×D rows per pass, split to at most ``max_rows``).
    levels: pixel levels of image data in [-1, 1] (e.g. 256) to report bits/dim in pixel units (module docs);
    None adds nothing. Returns a :class:`Likelihood` (log_p, bits_per_dim, ... float64 (n,)).
    """
    if method not in METHODS:
        raise InputError(f"unknown likelihood method {method!r}; choose from {', '.join(METHODS)}")
    if probe not in PROBES:
        raise InputError(f"unknown probe {probe!r}; choose from {', '.join(PROBES)}")
    check_solver(solver, steps)
    n_probes = check_int("n_probes", n_probes, 1)
    if method == "exact" and n_probes != 1:
        raise InputError(f"n_probes={n_probes} applies to method='hutchinson' only")
    check_int("seed", seed, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    max_rows = check_int("max_rows", max_rows, 1)
    if levels is not None and (not is_int(levels)
                               or levels < 2):
        raise InputError(f"levels must be None or an integer >= 2, got {levels!r}")
    check_data(model, x, "x")
    x64 = np.asarray(x, dtype=np.float64)
    n, shape = len(x64), x64.shape[1:]
    d = int(np.prod(shape))
    dtype = _model_dtype(model)
    probes = (draw_probes(np.random.default_rng(seed), n_probes, n, shape, kind=probe, dtype=dtype)
              if method == "hutchinson" else None)

    log_p0 = np.empty(n)
    delta = np.empty(n)
    x0 = np.empty_like(x64)
    nfe = 0
    with _gradients_kept(model), Progress(n, f"likelihood[{method}]", enabled=progress) as bar:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            eps = None if probes is None else probes[:, start:stop]
            field = _joint_field(model, shape, dtype, eps, max_rows)
            state = np.zeros((stop - start, d + 1))
            state[:, :d] = x64[start:stop].reshape(stop - start, d)
            res = integrate(field, state, solver=solver, steps=steps, t0=1.0, t1=0.0, atol=atol, rtol=rtol)
            z = res.x[:, :d]
            x0[start:stop] = z.reshape((stop - start,) + shape)
            log_p0[start:stop] = -0.5 * np.einsum("nd,nd->n", z, z) - 0.5 * d * _LOG_2PI
            delta[start:stop] = res.x[:, d]      # ∫_1^0 div dt = −∫_0^1 div dt
            nfe = max(nfe, res.nfe)
            bar.update(stop - start)
    log_p = log_p0 + delta
    bpd = -log_p / (d * np.log(2.0))
    if levels is not None:
        bpd = bpd + np.log2((levels - 1) / 2.0)
    return Likelihood(log_p, bpd, log_p0, delta, x0, int(nfe))


def _joint_field(model, shape, dtype, probes, max_rows):
    """f(state, t) for the solvers: state (n, D + 1) float64 = [x flattened, running ∫ div]; returns [v, div]."""
    def f(state, t):
        n = len(state)
        x = np.ascontiguousarray(state[:, :-1].reshape((n,) + shape), dtype=dtype)
        times = np.full(n, t, dtype=dtype)
        if probes is None:
            v, div = _velocity_and_trace(model, x, times, max_rows)
        else:
            v, div = _velocity_and_hutchinson(model, x, times, probes)
        out = np.empty_like(state)
        out[:, :-1] = np.asarray(v, dtype=np.float64).reshape(n, -1)
        out[:, -1] = div
        return out
    return f
