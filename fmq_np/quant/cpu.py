"""Numba CPU kernels of the quantizers (``fmq_np.quant.gpu`` holds ``numba.cuda`` twins with the same names).

Every public kernel takes and returns host NumPy arrays. ``w`` is always the grouped view of a tensor: a C-contiguous
float32 or float64 array of shape ``(G, n)`` (G groups of n values; see :mod:`fmq_np.quant.tensor`). ``k`` is the
number of levels (``2**bits``, 2…256). ``codes`` are uint8 ``(G, n)``; codebooks ``(G, k)``. Arithmetic is exact IEEE
(no fastmath). Values are assumed finite (callers check). Each kernel's docstring states its semantics, tie rules
included. :func:`thresholds` (host NumPy) is shared by both devices.

Threads: every kernel is a serial function over a range of items (rows, or tiles of
:data:`~fmq_np._numba.QUANT_TILE` values) and a parallel driver over blocks of that range; :func:`_run` picks one
by :func:`~fmq_np._numba.parallel_threads` (a call on fewer than ``QUANT_PARALLEL_MIN`` values runs on the calling
thread, with no parallel launch). The helpers that are bit-exact with NumPy live in :mod:`fmq_np.quant._exact`,
the W2 DP in :mod:`fmq_np.quant._dp`.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from fmq_np._numba import (QUANT_BLOCKS_PER_THREAD, QUANT_STREAM_BYTES, QUANT_TILE, jit,
                           parallel_threads)
from fmq_np.quant import _dp
from fmq_np.quant._exact import (chunk_of_rank, chunk_start, interp_linspace01, linspace01, pairwise_sum,
                                 searchsorted_left, searchsorted_right, sort_scratch, sort_values, sorted_order,
                                 sum_scratch)


def _run(kernel, kernel_blocks, items, work, *args):
    """The one thread policy of the kernels: ``kernel(*args, 0, items)`` on the calling thread when the call
    (``work`` values) gets one thread or has one item, else ``kernel_blocks(*args, items, blocks)``: a parallel
    launch over ``blocks`` near-equal ranges of the items, each run by ``kernel``."""
    threads = parallel_threads(work)
    if threads == 1 or items <= 1:
        kernel(*args, 0, items)
    else:
        kernel_blocks(*args, items, min(items, QUANT_BLOCKS_PER_THREAD * threads))


@jit
def _tile(i, n, tile):
    """Row, first and end position of tile i when each row of n values is cut into tiles of ``tile`` values."""
    tiles = (n + tile - 1) // tile
    a = (i % tiles) * tile
    return i // tiles, a, min(a + tile, n)


def _n_tiles(shape, tile):
    """How many tiles a ``(G, n)`` array is cut into (see :func:`_tile`)."""
    return shape[0] * -(-shape[1] // tile)


# ---------------------------------------------------------------------------------------------------- assignment
def thresholds(codebook, dtype):
    """Decision thresholds ``(G, k-1)`` in ``dtype`` for :func:`assign`: the float64 midpoints rounded *down* to
    ``dtype``, so that ``x > t_dtype`` ⇔ ``x > t_float64`` for every ``x`` of ``dtype``."""
    c = codebook.astype(np.float64)
    t64 = 0.5 * (c[:, :-1] + c[:, 1:])
    t = t64.astype(dtype)
    up = t.astype(np.float64) > t64
    if up.any():
        t[up] = np.nextafter(t[up], dtype.type(-np.inf))
    return np.ascontiguousarray(t)


@jit
def _assign_tile(x, t, codes):
    """``codes[i] = #{j : x[i] > t[j]}`` for 15 non-decreasing thresholds ``t`` (+inf-padded): a branch-free 4-step
    binary search; each step selects the next threshold among broadcast constants by the comparison bits found so
    far (selects and compares vectorize 8-wide; 4 compares instead of 15 per value)."""
    t0, t1, t2, t3, t4, t5, t6, t7 = t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]
    t8, t9, t10, t11, t12, t13, t14 = t[8], t[9], t[10], t[11], t[12], t[13], t[14]
    for i in range(x.shape[0]):
        v = x[i]
        b3 = v > t7
        u = t11 if b3 else t3
        b2 = v > u
        hi = t13 if b2 else t9
        lo = t5 if b2 else t1
        u = hi if b3 else lo
        b1 = v > u
        hi = t14 if b1 else t12
        lo = t10 if b1 else t8
        hi = hi if b2 else lo                 # candidates for b3 = 1
        lo = t6 if b1 else t4
        u = t2 if b1 else t0
        lo = lo if b2 else u                  # candidates for b3 = 0
        u = hi if b3 else lo
        b0 = v > u
        codes[i] = (np.uint8(b3) << 3) | (np.uint8(b2) << 2) | (np.uint8(b1) << 1) | np.uint8(b0)


@jit
def _count_above(x, t, m, codes):
    """``codes[i] = #{j < m : x[i] > t[j]}`` for ascending ``t[:m]``. m ≤ 15: ``t`` must hold 15 values, +inf
    beyond m (:func:`_assign_tile`); m > 15: a binary search per value."""
    if m <= 15:
        _assign_tile(x, t, codes)
    else:
        for i in range(x.shape[0]):
            codes[i] = searchsorted_left(t, m, x[i])


@jit
def _assign_tiles(w, t, m, codes, tile, lo, hi):
    """Tiles ``lo … hi-1`` of :func:`assign` (see :func:`_tile`); ``t`` as :func:`_count_above` needs, per row."""
    for i in range(lo, hi):
        g, a, b = _tile(i, w.shape[1], tile)
        _count_above(w[g, a:b], t[g], m, codes[g, a:b])


@jit(parallel=True)
def _assign_blocks(w, t, m, codes, tile, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _assign_tiles(w, t, m, codes, tile, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def assign(w, codebook):
    """Codes ``(G, n)`` uint8 of the nearest level of the row's codebook (rows ascending, dtype of ``w``).

    With the thresholds ``t[g, j] = 0.5 * (float64(c[g, j]) + float64(c[g, j + 1]))``, ``code = #{j : w > t[g, j]}``
    (comparison exact, in float64): a value exactly half-way between two levels goes to the *lower* one. For a
    non-strict row (repeated levels) the code may point to any copy of the value. k ≤ 16: a branch-free 4-step
    binary search over 15 (+inf-padded) thresholds; k > 16: a plain binary search (same result).
    """
    t = thresholds(codebook, w.dtype)
    m = t.shape[1]
    if m < 15:
        t = np.concatenate([t, np.full((t.shape[0], 15 - m), np.inf, w.dtype)], axis=1)
    codes = np.empty(w.shape, np.uint8)
    _run(_assign_tiles, _assign_blocks, _n_tiles(w.shape, QUANT_TILE), w.size, w, t, m, codes, QUANT_TILE)
    return codes


# ---------------------------------------------------------------------------------------------------- dequantize
@intrinsic
def _store_stream(typingctx, arr, i, value):
    """``arr[i] = value`` (1-D array) as a non-temporal store: the line goes to memory without being read first
    (no read-for-ownership) and without evicting the cache, which is what a large output that is not read back
    soon wants (measured, 10 M float32: 1.2-1.8× faster into an already-touched array, 5-20 % into a fresh one,
    whose page faults dominate)."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        store = builder.store(context.cast(builder, args[2], sig.args[2], aryty.dtype), ptr)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(arr, i, value), codegen


if numba_config.DISABLE_JIT:             # the coverage run (NUMBA_DISABLE_JIT=1): an intrinsic has no Python form
    def _store_stream(arr, i, value):
        """``arr[i] = value``, the plain store the intrinsic above makes non-temporal."""
        arr[i] = value


@jit
def _dequantize_tile(c, table, o, stream):
    if stream:
        for i in range(c.shape[0]):
            _store_stream(o, i, table[c[i]])
    else:
        for i in range(c.shape[0]):
            o[i] = table[c[i]]


@jit
def _dequantize_tiles(codes, codebook, out, stream, tile, lo, hi):
    """Tiles ``lo … hi-1`` of :func:`dequantize` (see :func:`_tile`)."""
    for i in range(lo, hi):
        g, a, b = _tile(i, codes.shape[1], tile)
        _dequantize_tile(codes[g, a:b], codebook[g], out[g, a:b], stream)


@jit(parallel=True)
def _dequantize_blocks(codes, codebook, out, stream, tile, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _dequantize_tiles(codes, codebook, out, stream, tile, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def dequantize(codes, codebook):
    """``w_hat (G, n)`` in the codebook's dtype: ``w_hat[g, i] = codebook[g, codes[g, i]]``. Outputs of
    :data:`~fmq_np._numba.QUANT_STREAM_BYTES` or more are written with non-temporal stores."""
    out = np.empty(codes.shape, codebook.dtype)
    stream = out.nbytes >= QUANT_STREAM_BYTES
    _run(_dequantize_tiles, _dequantize_blocks, _n_tiles(codes.shape, QUANT_TILE), codes.size,
         codes, codebook, out, stream, QUANT_TILE)
    return out


# ---------------------------------------------------------------------------------------------------- canonicalize
@jit
def _canonicalize_rows(codes, codebook, lo, hi):
    """Rows ``lo … hi-1`` of :func:`canonicalize`."""
    k = codebook.shape[1]
    for g in range(lo, hi):
        ok = True
        for j in range(k - 1):
            if codebook[g, j + 1] < codebook[g, j]:
                ok = False
        if ok:
            continue
        order = sorted_order(codebook[g].copy())
        inv = np.empty(k, np.uint8)
        row = codebook[g].copy()
        for j in range(k):
            inv[order[j]] = j
            codebook[g, j] = row[order[j]]
        for i in range(codes.shape[1]):
            codes[g, i] = inv[codes[g, i]]


@jit(parallel=True)
def _canonicalize_blocks(codes, codebook, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _canonicalize_rows(codes, codebook, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def canonicalize(codes, codebook):
    """In place: every codebook row that is not ascending is sorted ascending (stable) and its codes remapped, so
    ``w_hat`` is unchanged. Returns None."""
    _run(_canonicalize_rows, _canonicalize_blocks, codes.shape[0], codes.size, codes, codebook)


# ---------------------------------------------------------------------------------------------------- equal-mass OT
@jit
def _ot_row(row, k, codes, codebook, s, bucket, count, bounds, means, inv, stack):
    """One row of :func:`ot_equal_mass`. The chunks need only the sorted *values* (a chunk's sum does not depend on
    which of two tied values comes first); the code of a value is the number of chunk boundaries below it:
    ``#{j : x > s[b_j - 1]}`` with b_j the first position of chunk j — exact where the values on the two sides of
    a boundary differ; a run of values tied across a boundary is then handed out by flat position (the stable
    rule). Scratch: ``s`` (n,), ``bucket``, ``count`` (see :func:`~fmq_np.quant._exact.sort_values`), ``bounds``
    (max(15, k),), ``means`` (k,), ``inv`` uint8 (k,), ``stack`` (:func:`~fmq_np.quant._exact.sum_scratch`)."""
    n = row.shape[0]
    kk = min(k, n)
    q = n // kk
    r = n % kk
    sort_values(row, s, bucket, count)
    st_lo, st_n, st_phase, vals = stack
    for j in range(kk):
        size = q + 1 if j < r else q
        means[j] = pairwise_sum(s, chunk_start(j, q, r), size, st_lo, st_n, st_phase, vals) / size
    ascending = True                    # the means ascend up to rounding; rank them stably when they do not
    for j in range(kk):
        inv[j] = j
        if j > 0 and means[j] < means[j - 1]:
            ascending = False
    if not ascending:
        rank = sorted_order(means[:kk].copy())
        for j in range(kk):
            inv[rank[j]] = j
    for j in range(kk):
        codebook[inv[j]] = means[j]
    for j in range(kk, k):
        codebook[j] = codebook[kk - 1]
    ties = False
    for j in range(bounds.shape[0]):
        bounds[j] = np.inf
    for j in range(1, kk):
        b = chunk_start(j, q, r)
        bounds[j - 1] = s[b - 1]
        ties |= s[b - 1] == s[b]
    _count_above(row, bounds, kk - 1, codes)
    if ties:
        done = -1                       # a sorted position of the last tied run handed out
        for j in range(1, kk):
            b = chunk_start(j, q, r)
            v = s[b]
            if s[b - 1] != v or (done >= 0 and s[done] == v):     # no tie here, or a run across several
                continue
            first = b - 1
            while first > 0 and s[first - 1] == v:
                first -= 1
            done = first
            t = first
            for i in range(n):
                if row[i] == v:
                    codes[i] = chunk_of_rank(t, q, r)
                    t += 1
    if not ascending:
        for i in range(n):
            codes[i] = inv[codes[i]]


@jit
def _ot_rows(w, k, codes, codebook, lo, hi):
    """Rows ``lo … hi-1`` of :func:`ot_equal_mass`, with one set of scratch arrays."""
    s, bucket, count = sort_scratch(w)
    bounds = np.empty(max(15, k), w.dtype)
    means = np.empty(k, w.dtype)
    inv = np.empty(k, np.uint8)
    stack = sum_scratch(w)
    for g in range(lo, hi):
        _ot_row(w[g], k, codes[g], codebook[g], s, bucket, count, bounds, means, inv, stack)


@jit(parallel=True)
def _ot_blocks(w, k, codes, codebook, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _ot_rows(w, k, codes, codebook, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def ot_equal_mass(w, k):
    """The paper's equal-mass OT map, per row → ``(codes, codebook)``.

    k' = min(k, n); stable sort (tied values, −0.0 and +0.0 included: the earlier flat position gets the lower
    rank); the sorted row is cut like ``numpy.array_split(sorted, k')`` (the first ``n mod k'`` chunks hold one
    extra value); chunk j's level is its mean computed exactly as ``numpy.mean`` does in the row's dtype (pairwise
    summation, blocks of 128, 8 accumulators, a sum of zeros is +0.0); every value of chunk j is coded to chunk j's
    level. The codebook row holds the k' means sorted ascending (stable), padded with the last (largest) one.
    Computed without any permutation: the row's values are sorted (bucket sort,
    :func:`~fmq_np.quant._exact.sort_values`), a value's chunk is the number of chunk boundaries below it, and only
    a run of values tied across a boundary is handed out by flat position.
    """
    codes = np.empty(w.shape, np.uint8)
    codebook = np.empty((w.shape[0], k), w.dtype)
    _run(_ot_rows, _ot_blocks, w.shape[0], w.size, w, k, codes, codebook)
    return codes, codebook


# ---------------------------------------------------------------------------------------------------- uniform
@jit
def _uniform_rows(w, k, codes, codebook, lo, hi):
    """Rows ``lo … hi-1`` of :func:`uniform`."""
    n = w.shape[1]
    steps = np.empty(k, w.dtype)        # 0 … k-1 in w's dtype, so that all arithmetic stays in that dtype
    for j in range(k):
        steps[j] = j
    for g in range(lo, hi):
        mn = w[g, 0]
        mx = w[g, 0]
        for i in range(1, n):
            x = w[g, i]
            mn = min(mn, x)
            mx = max(mx, x)
        d = (mx - mn) / steps[k - 1]
        if d == 0:
            for i in range(n):
                codes[g, i] = 0
            for j in range(k):
                codebook[g, j] = mn
            continue
        for j in range(k):
            codebook[g, j] = steps[j] * d + mn
        for i in range(n):
            c = np.rint((w[g, i] - mn) / d)
            codes[g, i] = np.uint8(min(max(c, steps[0]), steps[k - 1]))


@jit(parallel=True)
def _uniform_blocks(w, k, codes, codebook, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _uniform_rows(w, k, codes, codebook, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def uniform(w, k):
    """Asymmetric min–max quantizer per row → ``(codes, codebook)``, all in the row's dtype.

    ``d = (max - min) / (k - 1)``; ``code = rint((w - min) / d)`` (round half to even) clipped to [0, k-1];
    ``codebook[c] = c * d + min``. ``d == 0`` (a constant row) → all codes 0, every level ``min`` (the row is
    reproduced exactly).
    """
    codes = np.empty(w.shape, np.uint8)
    codebook = np.empty((w.shape[0], k), w.dtype)
    _run(_uniform_rows, _uniform_blocks, w.shape[0], w.size, w, k, codes, codebook)
    return codes, codebook


# ---------------------------------------------------------------------------------------------------- PWL
@jit
def _pwl_row(row, k, codes, levels, sorted_row, bucket, count):
    """One row of :func:`pwl`; scratch ``sorted_row``, ``bucket``, ``count`` as
    :func:`~fmq_np.quant._exact.sort_values` needs."""
    n = row.shape[0]
    step = 1.0 / (n - 1) if n > 1 else 0.0
    sort_values(row, sorted_row, bucket, count)
    b = np.empty(k + 1, np.float64)
    for i in range(k + 1):
        b[i] = interp_linspace01(linspace01(i, k + 1, 1.0 / k), sorted_row, n, step)
    for i in range(k):
        levels[i] = (b[i] + b[i + 1]) / 2
    for i in range(n):
        codes[i] = min(max(searchsorted_right(b, np.float64(row[i])) - 1, 0), k - 1)


@jit
def _pwl_rows(w, k, codes, levels, lo, hi):
    """Rows ``lo … hi-1`` of :func:`pwl`, with one set of scratch arrays."""
    s, bucket, count = sort_scratch(w)
    for g in range(lo, hi):
        _pwl_row(w[g], k, codes[g], levels[g], s, bucket, count)


@jit(parallel=True)
def _pwl_blocks(w, k, codes, levels, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _pwl_rows(w, k, codes, levels, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def pwl(w, k):
    """The published piecewise quantizer per row → ``(codes, levels64)``.

    s = sorted row; breakpoints ``b_i = numpy.interp(i/k, linspace(0, 1, n), s)`` (float64, i = 0…k, numpy's
    interp/linspace arithmetic); ``codes = clip(searchsorted(b, w, 'right') - 1, 0, k-1)``; level
    ``i = (b_i + b_{i+1}) / 2`` in float64 (returned in float64; the caller casts and sorts).
    """
    codes = np.empty(w.shape, np.uint8)
    levels = np.empty((w.shape[0], k), np.float64)
    _run(_pwl_rows, _pwl_blocks, w.shape[0], w.size, w, k, codes, levels)
    return codes, levels


# ---------------------------------------------------------------------------------------------------- log2
@jit
def _sign_ranges_rows(w, out, lo, hi):
    """Rows ``lo … hi-1`` of :func:`sign_ranges`."""
    for g in range(lo, hi):
        pmin, pmax, nmin, nmax = np.inf, -np.inf, np.inf, -np.inf
        for i in range(w.shape[1]):
            x = np.float64(w[g, i])
            if x > 0:
                pmin = min(pmin, x)
                pmax = max(pmax, x)
            elif x < 0:
                nmin = min(nmin, -x)
                nmax = max(nmax, -x)
        out[g, 0] = pmin if pmax > 0 else np.nan
        out[g, 1] = pmax if pmax > 0 else np.nan
        out[g, 2] = nmin if nmax > 0 else np.nan
        out[g, 3] = nmax if nmax > 0 else np.nan


@jit(parallel=True)
def _sign_ranges_blocks(w, out, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _sign_ranges_rows(w, out, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def sign_ranges(w):
    """float64 ``(G, 4)``: min and max of the positive values, min and max of ``|w|`` over the negative values
    (NaN where that sign is absent)."""
    out = np.empty((w.shape[0], 4), np.float64)
    _run(_sign_ranges_rows, _sign_ranges_blocks, w.shape[0], w.size, w, out)
    return out


@jit
def _log2_rows(w, levels, n_neg, n_pos, codes, lo, hi):
    """Rows ``lo … hi-1`` of :func:`log2_assign`."""
    for g in range(lo, hi):
        zero_code = 0
        zero_mag = np.inf
        for i in range(w.shape[1]):
            x = np.float64(w[g, i])
            if x == 0:
                continue
            a, z = (n_neg[g], n_neg[g] + n_pos[g]) if x > 0 else (0, n_neg[g])
            best = a
            bd = abs(x - levels[g, a])
            for j in range(a + 1, z):
                d = abs(x - levels[g, j])
                if d < bd:
                    bd = d
                    best = j
            codes[g, i] = best
            mag = abs(levels[g, best])
            if mag < zero_mag or (mag == zero_mag and levels[g, best] > 0):
                zero_mag = mag
                zero_code = best
        for i in range(w.shape[1]):
            if w[g, i] == 0:
                codes[g, i] = zero_code


@jit(parallel=True)
def _log2_blocks(w, levels, n_neg, n_pos, codes, items, blocks):
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        _log2_rows(w, levels, n_neg, n_pos, codes, chunk_start(b, q, r), chunk_start(b + 1, q, r))


def log2_assign(w, levels, n_neg, n_pos):
    """Codes ``(G, n)`` of the published log2 quantizer given its float64 level table ``levels (G, k)``.

    ``levels`` rows are ``[neg_0 … neg_{n_neg-1}, pos_0 … pos_{n_pos-1}, padding]`` with both sign groups in
    magnitude-ascending order. A positive (negative) value gets the index of the *first* level of its sign at the
    smallest float64 distance ``|w - level|``. Zeros get the code of the level of smallest magnitude among those
    used by the row's non-zero values (a tie between +a and −a goes to +a); a row of zeros gets 0.
    """
    codes = np.empty(w.shape, np.uint8)
    _run(_log2_rows, _log2_blocks, w.shape[0], w.size,
         w, levels, n_neg.astype(np.int64), n_pos.astype(np.int64), codes)
    return codes


# ---------------------------------------------------------------------------------------------------- W2-optimal DP
def optimal_levels(w, k, weights):
    """float64 ``(G, k)``: the exact W2-optimal (weighted optimal 1-D k-means) k' = min(k, n) levels of each row,
    ascending, padded with the last.

    ``weights``: float64 ``(G, n)`` importance weights ≥ 0 with a positive sum per row, or an empty ``(0, 0)`` array
    for unit weights. DP over the sorted row (centred on its mean, prefix sums in float64), each layer by divide and
    conquer (leftmost argmin): O(k' · n log n) time, 4·k'·n bytes of argmins (:mod:`fmq_np.quant._dp`). A run of
    zero total weight gets its plain mean; a level is clamped into its run's range (so a run of equal values gets
    exactly that value and quantizing a quantized row is exact). Fewer rows than threads: one row at a time, each
    DP layer in parallel; else rows in parallel.
    """
    G = w.shape[0]
    unit = weights.size == 0
    w = np.ascontiguousarray(w, dtype=np.float64)
    weights = np.empty((G, 0), np.float64) if unit else np.ascontiguousarray(weights, dtype=np.float64)
    out = np.empty((G, k), np.float64)
    threads = parallel_threads(w.size)
    if 1 < threads and G < threads:
        for g in range(G):
            _dp.dp_row_parallel(w[g], weights[g], unit, k, out[g])
    else:
        _run(_dp.dp_rows, _dp.dp_rows_blocks, G, w.size, w, weights, unit, k, out)
    return out
