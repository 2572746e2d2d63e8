"""The five quantizers and :func:`quantize`.

Each scheme maps the grouped view ``w2`` (``(G, n)``, float32/float64, see :mod:`fmq_np.quant.tensor`) and
``k = 2**bits`` to ``(codes, codebook, meta)`` through the device's kernels (:mod:`fmq_np.quant.cpu` or its
``numba.cuda`` twin :mod:`fmq_np.quant.gpu`, same names and answers).

``"ot"``       the paper's equal-mass OT map: rank-based chunks of a stable sort (tied values: earlier flat position →
               lower chunk), chunk means as ``numpy.mean`` computes them in the tensor's dtype.
``"uniform"``  asymmetric min–max, in the tensor's dtype, round half to even; a constant group is reproduced exactly.
               Codes are clipped to [0, k-1]: where (max − min)/(k − 1) is subnormal the published formula rounds
               past the last level, fmq_np keeps to the k-level grid (the one deviation from the published code).
``"pwl"``      the published quantile-midpoint quantizer (float64 breakpoints from ``numpy.interp``).
``"log2"``     the published sign-split logarithmic quantizer (float64 level positions and distances).
``"ot-opt"``   ours: the exact W2-optimal (minimum-MSE) k-level codebook of each group, optionally weighted by
               per-weight importance, by dynamic programming; nearest-level assignment (ties to the lower level).

``paper_compat=True`` runs the published code's own arithmetic where it differs from these machine-independent rules
(ot's tie order, uniform on float16, log2's float32 logs, one-signed rows and zeros; :mod:`fmq_np.quant.published`),
so the weights are bit-identical to the published code's on the same machine.

float16 tensors are computed in float32 and their codebooks cast back to float16 (``numpy.mean`` does the same).
A group whose levels overflow in the tensor's dtype (values near its largest finite number: chunk sums or max − min
beyond it) is quantized again on its values scaled by a power of two, 2**-e, and its levels scaled back and clipped
to the group's [min, max]: the same quantizer up to subnormal rounding, with finite levels. Big-endian arrays are
converted to native byte order.
"""
import warnings

import numpy as np

from fmq_np._numba import resolve_device
from fmq_np._validate import check_bits, is_int
from fmq_np.errors import InputError
from fmq_np.quant.layout import GRANULARITIES, group_view
from fmq_np.quant.tensor import METHODS, QuantizedTensor

#: methods the published code skips on tensors with fewer than 2**bits elements (``uniform`` never skips).
PAPER_SKIPS = ("ot", "pwl", "log2")


def _kernels(device):
    if resolve_device(device) == "cuda":
        from fmq_np.quant import gpu
        return gpu
    from fmq_np.quant import cpu
    return cpu


def ot(kern, w2, k):
    """Equal-mass OT (the paper's quantizer)."""
    codes, codebook = kern.ot_equal_mass(w2, k)
    return codes, codebook, {}


def uniform(kern, w2, k):
    """Asymmetric min–max; the codebook row is exactly ``c * scale + min`` (stored as scale + offset)."""
    codes, codebook = kern.uniform(w2, k)
    return codes, codebook, {"affine": True}


def pwl(kern, w2, k):
    """Published quantile-midpoint PWL: float64 levels cast to the tensor's dtype."""
    codes, levels = kern.pwl(w2, k)
    codebook = levels.astype(w2.dtype)
    kern.canonicalize(codes, codebook)
    return codes, codebook, {}


def log2_levels(stats, k):
    """Float64 level table of the published log2 quantizer from ``sign_ranges`` statistics.

    Returns ``(levels (G, k), n_neg (G,), n_pos (G,))``: per row the negative levels then the positive ones, each in
    magnitude-ascending ``linspace`` order, padded with the row's largest level. A sign group with values of one
    magnitude only gets that value; otherwise ``2.0 ** numpy.linspace(log(min)/log(2), log(max)/log(2), k_sign)``.
    ``k`` is k' = min(2**bits, n); a sign gets ``k // 2`` levels when the row has both signs, else all ``k``.
    Rows are computed together, with the same NumPy arithmetic the published per-row code does.
    """
    G = stats.shape[0]
    levels = np.zeros((G, k), np.float64)
    has_pos, has_neg = ~np.isnan(stats[:, 0]), ~np.isnan(stats[:, 2])
    per_sign = np.where(has_pos & has_neg, k // 2, k)
    n_neg = np.where(has_neg, per_sign, 0).astype(np.int64)
    n_pos = np.where(has_pos, per_sign, 0).astype(np.int64)
    for present, lo_col, sign, offset in ((has_neg, 2, -1.0, np.zeros(G, np.int64)), (has_pos, 0, 1.0, n_neg)):
        for kk in np.unique(per_sign[present]):
            rows = np.flatnonzero(present & (per_sign == kk))
            cols = offset[rows][:, None] + np.arange(kk)
            levels[rows[:, None], cols] = sign * _log_spaced(stats[rows, lo_col], stats[rows, lo_col + 1], int(kk))
    size = n_neg + n_pos
    filled = np.arange(k)[None, :] < size[:, None]
    top = np.where(filled, levels, -np.inf).max(axis=1)
    levels = np.where(filled | (size[:, None] == 0), levels, top[:, None])
    return levels, n_neg, n_pos


def _log_spaced(lo, hi, num):
    """``(len(lo), num)``: per row ``2.0 ** numpy.linspace(log(lo)/log(2), log(hi)/log(2), num)``, or ``lo``
    repeated where ``lo == hi`` — bit for bit what the published code computes row by row (rows whose linspace
    step is 0 take NumPy's special path, so they are computed one by one)."""
    out = np.repeat(lo[:, None], num, axis=1)
    ln2 = np.log(2.0)
    spread = np.flatnonzero(lo != hi)
    start, stop = np.log(lo[spread]) / ln2, np.log(hi[spread]) / ln2
    div = num - 1
    flat = (stop - start) / div == 0 if div > 0 else np.ones(len(spread), bool)
    rows = spread[~flat]
    if len(rows):
        out[rows] = 2.0 ** np.linspace(start[~flat], stop[~flat], num, axis=1)
    for i in np.flatnonzero(flat):
        out[spread[i]] = 2.0 ** np.linspace(start[i], stop[i], num)
    return out


def log2(kern, w2, k):
    """Published sign-split logarithmic quantizer."""
    kk = min(k, w2.shape[1])
    levels, n_neg, n_pos = log2_levels(kern.sign_ranges(w2), kk)
    codes = kern.log2_assign(w2, levels, n_neg, n_pos)
    codebook = np.empty((w2.shape[0], k), w2.dtype)
    codebook[:, :kk] = levels
    codebook[:, kk:] = codebook[:, kk - 1:kk]
    kern.canonicalize(codes, codebook)
    return codes, codebook, {}


def ot_opt(kern, w2, k, weights2=None):
    """Exact W2-optimal k-level codebook per group (DP), nearest-level assignment."""
    wts = np.empty((0, 0), np.float64) if weights2 is None else weights2
    codebook = np.sort(kern.optimal_levels(w2, k, wts).astype(w2.dtype), axis=1)
    return kern.assign(w2, codebook), codebook, {}


_SCHEMES = {"ot": ot, "uniform": uniform, "pwl": pwl, "log2": log2}


def published_scheme(method, dtype):
    """The scheme ``paper_compat=True`` runs for ``method`` on a tensor of ``dtype``: the kernels' scheme, with the
    published code's own NumPy arithmetic where the two differ (:mod:`fmq_np.quant.published`). ``w2`` arrives in
    the working dtype (float32 for float16 tensors, an exact copy); the published arithmetic runs on ``dtype``."""
    from fmq_np.quant import published

    def run(kern, w2, k):
        rows = w2.astype(dtype, copy=False)
        if method == "ot":
            codes, codebook, meta = ot(kern, w2, k)
            return published.ot_codes(rows, k, codes, w2), codebook, meta
        if method == "uniform" and dtype == np.float16:
            codes, codebook = published.uniform_float16(rows, k)
            return codes, codebook.astype(w2.dtype), {"affine": True}
        if method == "log2":
            codes, codebook = published.log2(rows, k)
            codebook = codebook.astype(w2.dtype)
            kern.canonicalize(codes, codebook)
            return codes, codebook, {}
        return _SCHEMES[method](kern, w2, k)
    return run


def check_options(bits, method, granularity, group_size, paper_compat):
    """Validate the options shared by :func:`quantize` and ``quantize_model``; returns (bits, group_size)."""
    bits = check_bits(bits)
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}")
    if granularity == "group":
        if not is_int(group_size) or group_size < 1:
            raise InputError(f"granularity='group' needs a positive integer group_size, got {group_size!r}")
        group_size = int(group_size)
    elif group_size is not None:
        raise InputError(f"group_size is only used with granularity='group' (got granularity={granularity!r})")
    if paper_compat and (method == "ot-opt" or granularity != "channel"):
        raise InputError("paper_compat=True reproduces the published per-channel quantizers: it needs "
                         f"granularity='channel' and method in {', '.join(_SCHEMES)}")
    return bits, group_size or 0


def paper_skip_reason(size, bits, method):
    """Why the published code leaves a tensor of ``size`` elements unchanged, or None."""
    if method in PAPER_SKIPS and size < 2 ** bits:
        return "numel < 2**bits (published skip rule)"
    return None


def as_float_array(w, name):
    """``w`` as a float ndarray with only finite values, or InputError naming the tensor."""
    w = np.asarray(w)
    if w.dtype.kind != "f" or w.dtype.itemsize not in (2, 4, 8):
        raise InputError(f"tensor {name!r}: expected a float16/32/64 array, got dtype {w.dtype}")
    if not w.dtype.isnative:                      # the kernels take native byte order only
        w = w.astype(w.dtype.newbyteorder("="))
    if w.size == 0:
        raise InputError(f"tensor {name!r} is empty")
    if not np.isfinite(w).all():
        raise InputError(f"tensor {name!r} contains NaN or Inf")
    return w


def quantize(w, *, bits=3, method="ot", granularity="channel", group_size=None, paper_compat=False, weights=None,
             device="auto", name="w"):
    """Quantize one float array → :class:`QuantizedTensor` (``.dequantize()`` has w's shape and dtype).

    ``weights``: optional per-weight importance (same shape, finite, ≥ 0; ``"ot-opt"`` only).
    ``paper_compat=True``: a tensor the published code skips (``numel < 2**bits`` for ot/pwl/log2) is stored
    losslessly and marked ``meta["skipped"]``. ``name`` only labels error messages.
    """
    bits, group_size = check_options(bits, method, granularity, group_size, paper_compat)
    return quantize_checked(as_float_array(w, name), bits=bits, method=method, granularity=granularity,
                            group_size=group_size, paper_compat=paper_compat, weights=weights, device=device, name=name)


def quantize_checked(w, *, bits, method, granularity, group_size, paper_compat, weights, device, name):
    """:func:`quantize` on an array :func:`as_float_array` has passed, with options :func:`check_options` has
    passed (``group_size`` 0 unless granularity is ``"group"``)."""
    kern = _kernels(device)
    k = 2 ** bits
    if method == "log2" and bits == 1 and not paper_compat:
        warnings.warn(LOG2_ONE_BIT, UserWarning, stacklevel=3)
    work = w.astype(np.float32) if w.dtype == np.float16 else w
    w2 = np.ascontiguousarray(group_view(work, granularity, group_size, name))
    skipped = paper_skip_reason(w.size, bits, method) if paper_compat else None
    if skipped:
        scheme, wts = (lambda kn, a, kk, _: ot(kn, a, kk)), None   # n < k values per group: one exact level each
    elif method == "ot-opt":
        scheme, wts = ot_opt, _weights(weights, w, granularity, group_size, name)
    else:
        if weights is not None:
            raise InputError(f"weights are only used by method='ot-opt' (got method={method!r})")
        run = published_scheme(method, w.dtype) if paper_compat else _SCHEMES[method]
        scheme, wts = (lambda kn, a, kk, _: run(kn, a, kk)), None
    with np.errstate(over="ignore", invalid="ignore"):     # overflowing rows are detected and redone below
        codes, codebook, meta = scheme(kern, w2, k, wts)
        bad = np.flatnonzero(~np.isfinite(codebook).all(axis=1))
    if len(bad):
        _rescaled_rows(scheme, kern, w2, k, wts, bad, codes, codebook)
    if skipped:
        meta = {"skipped": skipped}
    return QuantizedTensor(codes=codes, codebook=codebook.astype(w.dtype), shape=tuple(w.shape), dtype=w.dtype,
                           bits=bits, method=method, granularity=granularity, group_size=group_size, meta=meta)


#: the warning of method="log2" at 1 bit
LOG2_ONE_BIT = ("log2 at 1 bit keeps one level per sign, the smallest magnitude of that sign (the published rule), "
                "so the weights collapse towards 0; use bits >= 2 or another method")


def _rescaled_rows(scheme, kern, w2, k, wts, rows, codes, codebook):
    """Redo ``rows`` of ``w2`` whose levels overflowed, on the values times 2**-e (chunk sums of at most n values
    then stay finite), writing the codes and the levels scaled back and clipped to each row's [min, max] in place."""
    e = int(np.ceil(np.log2(max(2, w2.shape[1])))) + 1
    sub = np.ascontiguousarray(w2[rows]) * w2.dtype.type(2.0 ** -e)
    c, cb, _ = scheme(kern, sub, k, None if wts is None else np.ascontiguousarray(wts[rows]))
    cb = np.clip(cb.astype(w2.dtype), sub.min(axis=1, keepdims=True), sub.max(axis=1, keepdims=True))
    codes[rows] = c
    codebook[rows] = np.maximum.accumulate(cb, axis=1) * codebook.dtype.type(2.0 ** e)


def _weights(weights, w, granularity, group_size, name):
    if weights is None:
        return None
    a = np.asarray(weights, dtype=np.float64)
    if a.shape != w.shape:
        raise InputError(f"tensor {name!r}: weights shape {a.shape} != tensor shape {w.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise InputError(f"tensor {name!r}: weights must be finite and >= 0")
    a2 = np.ascontiguousarray(group_view(a, granularity, group_size, name))
    if (a2.sum(axis=1) <= 0).any():
        raise InputError(f"tensor {name!r}: every group needs a positive total weight")
    return a2
