"""The published quantizers' own NumPy arithmetic where it is not machine-independent (``paper_compat=True``).

fmq_np's kernels (:mod:`fmq_np.quant.cpu`, :mod:`fmq_np.quant.gpu`) follow rules that give the same codes on every
machine. The published code (Quantized-FM/LowBit-HighFid, ``quantizerFunctions/PC-*-Quant.py``) differs from them in
three places, and there its result depends on the NumPy build and the CPU it runs on (NumPy picks SIMD sort and
``log`` implementations by CPU). With ``paper_compat=True`` :func:`fmq_np.quant.quantize` calls the same NumPy
functions on the same values in the same order, so the dequantized weights are bit-identical to the published
code's on the machine that runs them (checked against the published code run in torch:
``tests/fixtures/make_published_fixtures.py``):

* **ot, tied values.** The published code ranks each channel with ``numpy.argsort`` (default kind, not stable), so
  which of several equal values lands in the lower of two chunks is up to NumPy's sort; the kernels put the earlier
  flat position in the lower chunk. Chunk means do not depend on it (the sorted values are the same): only the codes
  of rows with a tie across a chunk boundary are recomputed here, by :func:`ot_codes`.
* **uniform, float16.** The published code computes in the tensor's dtype (torch half arithmetic: each operation
  rounded to float16); the kernels compute float16 tensors in float32. :func:`uniform_float16` does the float16
  arithmetic.
* **log2.** The published code takes ``numpy.log`` of the channel's smallest and largest magnitude *in the tensor's
  dtype* (float32: float32 ``log``, then divided by the float64 ``log(2)``), gives the negative values ``K // 2``
  levels even when the channel has no positive value, and maps zeros to the first value of smallest magnitude among
  the channel's other reconstructions, in flat order; the kernels use float64 logs, give a one-signed channel all
  ``K`` levels and map zeros to +a before −a. :func:`log2` is the published arithmetic.

PWL needs nothing here: the kernels already give the published values bit for bit. Every function takes the grouped
view ``rows`` (G, n) in the tensor's own dtype and returns ``(codes (G, n) uint8, codebook (G, k) rows.dtype)``,
except :func:`ot_codes` (codes only).
"""
import numpy as np

from fmq_np._numba import jit

#: values × levels per block of the dense nearest-level search in :func:`log2` (float64 scratch: 32 MB)
_LOG2_BLOCK = 1 << 22


def ot_codes(rows, k, codes, values):
    """Equal-mass OT codes of each row as the published code gives them: ranked by ``numpy.argsort`` (default
    kind) and cut into ``min(k, n)`` chunks as ``numpy.array_split`` cuts them (the first ``n % k`` chunks one value
    longer).

    ``codes`` (G, n) are the kernel's codes of the same rows (:func:`fmq_np.quant.schemes.ot`), ``values`` the rows
    in the kernel's working dtype (exact copies of ``rows``). Where no value is shared by two chunks, every ranking
    of the row gives the same chunks, so the kernel's codes are already the published ones; only the rows where a
    tie straddles a chunk boundary (found by :func:`_straddling_ties`) are ranked by ``argsort`` again, in place:
    returns ``codes``."""
    G, n = rows.shape
    kk = min(k, n)
    size, extra = divmod(n, kk)
    chunk_of_rank = np.repeat(np.arange(kk, dtype=np.uint8), [size + 1] * extra + [size] * (kk - extra))
    for g in np.flatnonzero(_straddling_ties(values, codes, kk)):
        codes[g, np.argsort(rows[g])] = chunk_of_rank
    return codes


@jit
def _straddling_ties(values, codes, kk):
    """(G,) bool: whether row g's chunks (``codes`` 0..kk-1, each a range of the sorted row) overlap, i.e. the
    largest value of some chunk j is >= the smallest of chunk j + 1 (equal: a tie across the boundary). One pass
    over each row (serial: rows in parallel measured no faster on the 10 M-weight benchmark)."""
    G, n = values.shape
    out = np.zeros(G, np.bool_)
    lo = np.empty(kk, values.dtype)
    hi = np.empty(kk, values.dtype)
    for g in range(G):
        lo[:] = np.inf
        hi[:] = -np.inf
        for i in range(n):
            c = codes[g, i]
            v = values[g, i]
            if v < lo[c]:
                lo[c] = v
            if v > hi[c]:
                hi[c] = v
        for j in range(kk - 1):
            if hi[j] >= lo[j + 1]:
                out[g] = True
                break
    return out


def uniform_float16(rows, k):
    """Asymmetric min–max in float16 arithmetic (every operation rounded to float16, round half to even); a
    constant row keeps its value. Codes are clipped to [0, k − 1] like the kernels'."""
    mn = rows.min(axis=1, keepdims=True)
    mx = rows.max(axis=1, keepdims=True)
    constant = mx == mn
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = (mx - mn) / (k - 1)
        q = np.rint((rows - mn) / scale)
    codes = np.where(constant, 0, np.clip(np.nan_to_num(q), 0, k - 1)).astype(np.uint8)
    with np.errstate(over="ignore", invalid="ignore"):
        codebook = np.arange(k, dtype=np.float16)[None, :] * scale + mn
    return codes, np.where(constant, mn, codebook).astype(np.float16)


def log2(rows, k):
    """The published sign-split logarithmic quantizer, row by row (see the module doc)."""
    G, n = rows.shape
    codes = np.empty((G, n), np.uint8)
    codebook = np.empty((G, k), rows.dtype)
    for g in range(G):
        codes[g], levels = _log2_row(rows[g], min(k, n))
        codebook[g, :len(levels)] = levels
        codebook[g, len(levels):] = levels[-1]
    return codes, codebook


def _log2_row(flat, kk):
    """``(codes (n,), levels (≤ kk,) in flat's dtype)`` of one row with ``kk = min(2**bits, n)`` levels at most."""
    pos, neg = flat > 0, flat < 0
    codes = np.zeros(flat.shape, np.uint8)
    result = np.zeros_like(flat)             # the published reconstruction, for the zero rule
    levels = []
    for mask, sign, count in ((neg, -1.0, kk // 2), (pos, 1.0, kk // 2 if neg.any() else kk)):
        if not mask.any():
            continue
        vals = flat[mask]
        lo, hi = (sign * vals).min(), (sign * vals).max()
        if lo == hi:
            centroids = np.array([vals.min()], np.float64)
        else:
            log_min, log_max = np.log(lo) / np.log(2.0), np.log(hi) / np.log(2.0)
            centroids = sign * 2.0 ** np.linspace(log_min, log_max, count)
        idx = _nearest_first(vals.astype(np.float64), centroids)
        codes[mask] = len(levels) + idx
        result[mask] = centroids[idx]
        levels.extend(centroids)
    levels = np.array(levels, np.float64).astype(flat.dtype)
    zero = flat == 0
    if zero.any():
        others = result[result != 0]
        target = others[np.argmin(np.abs(others))] if len(others) else flat.dtype.type(0)
        if len(others):
            codes[zero] = np.flatnonzero(levels == target)[0]
        else:
            levels = np.zeros(1, flat.dtype)
            codes[zero] = 0
    return codes, levels


def _nearest_first(values, centroids):
    """Index of the nearest centroid of each value, the first one on a tie (``argmin`` over ``|v − c|``, float64:
    the published ``cdist`` distance sqrt((v − c)²), which IEEE arithmetic makes equal to |v − c|)."""
    out = np.empty(len(values), np.int64)
    step = max(1, _LOG2_BLOCK // len(centroids))
    for i in range(0, len(values), step):
        out[i:i + step] = np.argmin(np.abs(values[i:i + step, None] - centroids[None, :]), axis=1)
    return out
