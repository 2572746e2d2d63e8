"""``numba.cuda`` twins of the quantizer kernels: same names, signatures and answers as :mod:`fmq_np.quant.cpu`
(and :mod:`fmq_np.quant.packing`). Host NumPy arrays in and out; each wrapper moves the data to and from the GPU.

Importing this module imports ``numba.cuda`` (``import fmq_np`` never does). Under ``NUMBA_ENABLE_CUDASIM=1`` the
kernels run in Numba's CUDA simulator. Device work and host work:

* ``assign``: one thread per value, binary search over the float64-exact thresholds of ``cpu.thresholds``.
* ``dequantize``: one thread per value.
* ``uniform``: one thread per group finds min / max and the step ``d`` in the row's dtype; one thread per value
  computes its code ``rint((w - min) / d)`` (round half to even, done exactly on the integer part and the exact
  fraction). The levels ``c * d + min`` are computed on the host with NumPy, so no fused multiply-add can change
  a bit of them.
* ``ot_equal_mass``: each row is sorted on the device by a bitonic network over (value, position) pairs — ties
  broken by position, so the order is the stable ``numpy.argsort(kind="stable")`` order the CPU kernel follows;
  rows are padded to a power of two with entries that sort last; one launch per network stage, one thread per
  compared pair. One thread per (group, chunk) then computes the chunk mean with NumPy's pairwise summation (the
  recursion unrolled on a small per-thread stack) and one thread per value writes its code; only the (G, k')
  means travel to the host, to be ranked.
* ``pack_codes`` / ``unpack_codes``: one thread per block of 8 codes (= ``bits`` bytes).

The helpers both backends need (NumPy's pairwise sum, the ``array_split`` chunk arithmetic, the threshold
search) are written once in :mod:`fmq_np.quant._exact` and compiled here again as device functions.

The other kernels (``pwl``, ``sign_ranges``, ``log2_assign``, ``optimal_levels``, ``canonicalize``,
``thresholds``) have no GPU version: they are the CPU functions, re-exported so that this module offers every name
:mod:`fmq_np.quant.schemes` uses.
"""
import math

import numpy as np
from numba import cuda, float32, float64, int64

from .._numba import CUDA_SIMULATOR, CUDA_THREADS, cuda_device
from . import _exact
from .cpu import canonicalize, log2_assign, optimal_levels, pwl, sign_ranges, thresholds
from .packing import checked_codes, checked_packed, packed_nbytes

__all__ = ["assign", "dequantize", "uniform", "ot_equal_mass", "pack_codes", "unpack_codes",
           # host (CPU) kernels, re-exported so that this module offers every kernel name schemes.py uses
           "pwl", "sign_ranges", "log2_assign", "optimal_levels", "canonicalize", "thresholds"]

# the helpers written once for both backends (fmq_np.quant._exact), compiled here as device functions
_pairwise_sum = cuda_device(_exact.pairwise_sum)
_chunk_start = cuda_device(_exact.chunk_start)
_chunk_of_rank = cuda_device(_exact.chunk_of_rank)
_searchsorted_left = cuda_device(_exact.searchsorted_left)
_SUM_STACK = _exact.SUM_STACK


def _launch(n):
    """Launch configuration ``(blocks, threads per block)`` covering ``n`` threads (at least one block)."""
    return max(1, (n + CUDA_THREADS - 1) // CUDA_THREADS), CUDA_THREADS


def _strided_launch(n):
    """Launch configuration for a grid-stride kernel over ``n`` items: one thread per item on a GPU, one block in
    the simulator (which starts a Python thread per CUDA thread, per launch)."""
    return (1, CUDA_THREADS) if CUDA_SIMULATOR else _launch(n)


# ---------------------------------------------------------------------------------------------------- assignment
@cuda.jit
def _assign_kernel(w, t, codes):
    G, n = w.shape
    km1 = t.shape[1]
    i = cuda.grid(1)
    if i >= G * n:
        return
    g = i // n
    codes[g, i % n] = _searchsorted_left(t[g], km1, w[g, i % n])      # #{j : x > t[g, j]}


def assign(w, codebook):
    """Codes ``(G, n)`` uint8 of the nearest level (ties to the lower level), as ``cpu.assign``."""
    t = thresholds(codebook, w.dtype)
    codes = np.zeros(w.shape, np.uint8)
    if t.shape[1] == 0 or w.size == 0:
        return codes
    d_codes = cuda.to_device(codes)
    _assign_kernel[_launch(w.size)](cuda.to_device(w), cuda.to_device(t), d_codes)
    return d_codes.copy_to_host()


@cuda.jit
def _dequantize_kernel(codes, codebook, out):
    G, n = codes.shape
    i = cuda.grid(1)
    if i < G * n:
        g = i // n
        out[g, i % n] = codebook[g, codes[g, i % n]]


def dequantize(codes, codebook):
    """``w_hat (G, n)`` in the codebook's dtype: ``codebook[g, codes[g, i]]``, as ``cpu.dequantize``."""
    out = np.empty(codes.shape, codebook.dtype)
    if codes.size == 0:
        return out
    d_out = cuda.to_device(out)
    _dequantize_kernel[_launch(codes.size)](cuda.to_device(codes), cuda.to_device(codebook), d_out)
    return d_out.copy_to_host()


# ---------------------------------------------------------------------------------------------------- uniform
@cuda.jit
def _minmax_step_kernel(w, last, mn_out, d_out):
    """Per group: min, max (first occurrence kept on ties, as the CPU kernel) and ``d = (max - min) / last``."""
    g = cuda.grid(1)
    if g >= w.shape[0]:
        return
    mn = w[g, 0]
    mx = w[g, 0]
    for i in range(1, w.shape[1]):
        x = w[g, i]
        if x < mn:
            mn = x
        if x > mx:
            mx = x
    mn_out[g] = mn
    d_out[g] = (mx - mn) / last[0]


@cuda.jit
def _uniform_codes_kernel(w, mn, d, kmax, codes):
    """``code = clip(rint((w - min) / d), 0, k - 1)``; ``d == 0`` → 0. The quotient is >= 0: rint is decided on its
    integer part and its exact fractional part."""
    G, n = w.shape
    i = cuda.grid(1)
    if i >= G * n:
        return
    g = i // n
    if d[g] == 0:
        codes[g, i % n] = 0
        return
    x = (w[g, i % n] - mn[g]) / d[g]
    c = int64(x)                 # floor: x >= 0
    frac = x - c                 # exact
    if frac > 0.5 or (frac == 0.5 and c % 2 == 1):
        c += 1
    codes[g, i % n] = c if c < kmax else kmax


def uniform(w, k):
    """Asymmetric min–max quantizer per row → ``(codes, codebook)``, as ``cpu.uniform``."""
    G = w.shape[0]
    last = np.array([k - 1], w.dtype)
    d_w = cuda.to_device(w)
    d_mn, d_d = cuda.device_array(G, w.dtype), cuda.device_array(G, w.dtype)
    _minmax_step_kernel[_launch(G)](d_w, cuda.to_device(last), d_mn, d_d)
    d_codes = cuda.device_array(w.shape, np.uint8)
    _uniform_codes_kernel[_launch(w.size)](d_w, d_mn, d_d, k - 1, d_codes)
    mn, d = d_mn.copy_to_host(), d_d.copy_to_host()
    codebook = np.arange(k, dtype=w.dtype)[None, :] * d[:, None] + mn[:, None]
    codebook[d == 0] = mn[d == 0, None]
    return d_codes.copy_to_host(), codebook


# ---------------------------------------------------------------------------------------------------- equal-mass OT
def _make_chunk_means(nb_dtype):
    """Kernel ``(s, k_eff, means)``: ``means[g, j]`` = NumPy's mean of chunk j of the sorted row ``s[g]`` cut like
    ``numpy.array_split(s[g], k_eff)``; one thread per (group, chunk). ``nb_dtype``: the rows' Numba float type
    (the per-thread stack of partial sums must have it: NumPy sums in the array's dtype)."""

    @cuda.jit
    def chunk_means(s, k_eff, means):
        G, n = s.shape
        tid = cuda.grid(1)
        if tid >= G * k_eff:
            return
        g = tid // k_eff
        j = tid % k_eff
        q = n // k_eff
        r = n % k_eff
        size = q + 1 if j < r else q
        st_lo = cuda.local.array(_SUM_STACK, int64)
        st_n = cuda.local.array(_SUM_STACK, int64)
        st_phase = cuda.local.array(_SUM_STACK, int64)
        vals = cuda.local.array(_SUM_STACK, nb_dtype)
        means[g, j] = _pairwise_sum(s[g], _chunk_start(j, q, r), size, st_lo, st_n, st_phase, vals) / size

    return chunk_means


_CHUNK_MEANS = {np.dtype(np.float32): _make_chunk_means(float32), np.dtype(np.float64): _make_chunk_means(float64)}


@cuda.jit(device=True)
def _after(ka, ia, kb, ib, n):
    """True when (value ka, position ia) comes after (kb, ib) in the stable ascending order; padding (position
    ≥ n) comes after every value."""
    if ia >= n or ib >= n:
        return ia > ib
    return ka > kb or (ka == kb and ia > ib)


@cuda.jit
def _sort_init_kernel(w, keys, idx):
    """``keys[g, i] = w[g, i]``, ``idx[g, i] = i`` for i < n; padding positions ``n … P-1`` (any key)."""
    G, n = w.shape
    P = keys.shape[1]
    t = cuda.grid(1)
    if t >= G * P:
        return
    g = t // P
    i = t % P
    idx[g, i] = i
    keys[g, i] = w[g, i] if i < n else w[g, 0]


@cuda.jit
def _bitonic_stage_kernel(keys, idx, n, k, j):
    """One stage (block size k, distance j) of the bitonic network on every row; one thread per compared pair."""
    G, P = keys.shape
    half = P // 2
    for t in range(cuda.grid(1), G * half, cuda.gridsize(1)):
        g = t // half
        p = t % half
        i = 2 * j * (p // j) + p % j
        m = i + j
        ka, ia, kb, ib = keys[g, i], idx[g, i], keys[g, m], idx[g, m]
        if _after(ka, ia, kb, ib, n) == ((i & k) == 0):      # out of order for this block's direction: swap
            keys[g, i], keys[g, m] = kb, ka
            idx[g, i], idx[g, m] = ib, ia


def _stable_order(d_w):
    """Device array ``(G, P)`` int32 whose first n columns are each row's stable ascending order (P = n rounded
    up to a power of two); the bitonic network runs on the device."""
    G, n = d_w.shape
    P = 1 << max(0, (n - 1).bit_length())
    keys = cuda.device_array((G, P), d_w.dtype)
    idx = cuda.device_array((G, P), np.int32)
    _sort_init_kernel[_launch(G * P)](d_w, keys, idx)
    k = 2
    while k <= P:
        j = k // 2
        while j >= 1:
            _bitonic_stage_kernel[_strided_launch(G * P // 2)](keys, idx, n, k, j)
            j //= 2
        k *= 2
    return idx


@cuda.jit
def _gather_kernel(w, order, s):
    """``s[g, t] = w[g, order[g, t]]`` for t < n (order may be wider than n)."""
    G, n = s.shape
    i = cuda.grid(1)
    if i < G * n:
        g = i // n
        s[g, i % n] = w[g, order[g, i % n]]


@cuda.jit
def _scatter_codes_kernel(order, inv, codes):
    """``codes[g, order[g, t]] = inv[g, chunk of rank t]``, one thread per value (order may be wider than n)."""
    G, n = codes.shape
    k_eff = inv.shape[1]
    i = cuda.grid(1)
    if i >= G * n:
        return
    g = i // n
    t = i % n
    codes[g, order[g, t]] = inv[g, _chunk_of_rank(t, n // k_eff, n % k_eff)]


def ot_equal_mass(w, k):
    """The paper's equal-mass OT quantizer per row → ``(codes, codebook)``, as ``cpu.ot_equal_mass``."""
    G, n = w.shape
    k_eff = min(k, n)
    d_w = cuda.to_device(w)
    d_order = _stable_order(d_w)
    d_s = cuda.device_array((G, n), w.dtype)
    _gather_kernel[_launch(G * n)](d_w, d_order, d_s)
    d_means = cuda.device_array((G, k_eff), w.dtype)
    _CHUNK_MEANS[w.dtype][_launch(G * k_eff)](d_s, k_eff, d_means)
    means = d_means.copy_to_host()
    rank = np.argsort(means, axis=1, kind="stable")
    inv = np.empty((G, k_eff), np.uint8)
    np.put_along_axis(inv, rank, np.arange(k_eff, dtype=np.uint8)[None, :], axis=1)
    codebook = np.empty((G, k), w.dtype)
    codebook[:, :k_eff] = np.take_along_axis(means, rank, axis=1)
    codebook[:, k_eff:] = codebook[:, k_eff - 1:k_eff]
    d_codes = cuda.device_array((G, n), np.uint8)
    _scatter_codes_kernel[_launch(G * n)](d_order, cuda.to_device(inv), d_codes)
    return d_codes.copy_to_host(), codebook


# ---------------------------------------------------------------------------------------------------- packing
@cuda.jit
def _pack_kernel(codes, bits, out):
    """Thread b packs codes [8b, 8b + 8) into bytes [bits*b, bits*b + bits) (the last block may be partial)."""
    n = codes.shape[0]
    b = cuda.grid(1)
    lo = 8 * b
    if lo >= n:
        return
    hi = lo + 8 if lo + 8 < n else n
    if bits == 8:
        for i in range(lo, hi):
            out[i] = codes[i]
        return
    acc = int64(0)
    for i in range(lo, hi):
        acc |= int64(codes[i]) << ((i - lo) * bits)
    nbytes = ((hi - lo) * bits + 7) // 8
    for j in range(nbytes):
        out[bits * b + j] = (acc >> (8 * j)) & 0xFF


@cuda.jit
def _unpack_kernel(packed, bits, out):
    """Thread b unpacks codes [8b, 8b + 8) from bytes [bits*b, ...)."""
    n = out.shape[0]
    b = cuda.grid(1)
    lo = 8 * b
    if lo >= n:
        return
    hi = lo + 8 if lo + 8 < n else n
    if bits == 8:
        for i in range(lo, hi):
            out[i] = packed[i]
        return
    nbytes = ((hi - lo) * bits + 7) // 8
    acc = int64(0)
    for j in range(nbytes):
        acc |= int64(packed[bits * b + j]) << (8 * j)
    mask = (1 << bits) - 1
    for i in range(lo, hi):
        out[i] = (acc >> ((i - lo) * bits)) & mask


def pack_codes(codes, bits):
    """GPU twin of :func:`fmq_np.quant.packing.pack_codes` (same checks, same bytes)."""
    flat, bits = checked_codes(codes, bits)
    out = np.zeros(packed_nbytes(flat.size, bits), np.uint8)
    if flat.size == 0:
        return out
    d_out = cuda.to_device(out)
    _pack_kernel[_launch(math.ceil(flat.size / 8))](cuda.to_device(flat), bits, d_out)
    return d_out.copy_to_host()


def unpack_codes(packed, bits, n):
    """GPU twin of :func:`fmq_np.quant.packing.unpack_codes` (same checks, same codes)."""
    packed, bits, n = checked_packed(packed, bits, n)
    if n == 0:
        return np.empty(0, np.uint8)
    d_out = cuda.device_array(n, np.uint8)
    _unpack_kernel[_launch(math.ceil(n / 8))](cuda.to_device(packed), bits, d_out)
    return d_out.copy_to_host()
