"""Numba CPU kernels of the quantizers (``fmq_np.quant.gpu`` holds ``numba.cuda`` twins with the same names).

Every public kernel takes and returns host NumPy arrays. ``w`` is always the grouped view of a tensor: a C-contiguous
float32 or float64 array of shape ``(G, n)`` (G groups of n values; see :mod:`fmq_np.quant.tensor`). ``k`` is the
number of levels (``2**bits``, 2…256). ``codes`` are uint8 ``(G, n)``; codebooks ``(G, k)``. Arithmetic is exact IEEE
(no fastmath). Values are assumed finite (callers check). Calls on fewer than 65536 values run on one thread.
:func:`thresholds` (host NumPy) is shared by both devices.

Public kernels (signature → result; semantics incl. tie rules):

``assign(w, codebook) -> codes``
    Nearest level of the row's codebook (rows ascending, dtype of ``w``). With the thresholds
    ``t[g, j] = 0.5 * (float64(c[g, j]) + float64(c[g, j + 1]))``, ``code = #{j : w > t[g, j]}`` (comparison exact,
    in float64): a value exactly half-way between two levels goes to the *lower* one. For a non-strict row
    (repeated levels) the code may point to any copy of the value. k ≤ 16: a branch-free 4-step binary search
    over 15 (+inf-padded) thresholds; k > 16: a plain binary search (same result).
``dequantize(codes, codebook) -> w_hat``
    ``w_hat[g, i] = codebook[g, codes[g, i]]``, dtype of ``codebook``. Outputs of ``_STREAM_BYTES`` or more are
    written with non-temporal stores.
``ot_equal_mass(w, k) -> (codes, codebook)``
    The paper's equal-mass OT map, per row: k' = min(k, n); stable sort (tied values, −0.0 and +0.0 included: the
    earlier flat position gets the lower rank); the sorted row is cut like ``numpy.array_split(sorted, k')`` (the
    first ``n mod k'`` chunks hold one extra value); chunk j's level is its mean computed exactly as
    ``numpy.mean`` does in the row's dtype (pairwise summation, blocks of 128, 8 accumulators, a sum of zeros is
    +0.0); every value of chunk j is coded to chunk j's level. The codebook row holds the k' means sorted ascending
    (stable), padded with the last (largest) one. Computed without any permutation: the row's values are sorted
    (bucket sort, :func:`_sort_values`), a value's chunk is the number of chunk boundaries below it, and only a run
    of values tied across a boundary is handed out by flat position.
``uniform(w, k) -> (codes, codebook)``
    Asymmetric min–max, all in the row's dtype: ``d = (max - min) / (k - 1)``;
    ``code = rint((w - min) / d)`` (round half to even) clipped to [0, k-1]; ``codebook[c] = c * d + min``.
    ``d == 0`` (a constant row) → all codes 0, every level ``min`` (the row is reproduced exactly).
``pwl(w, k) -> (codes, codebook64)``
    The published piecewise quantizer: s = sorted row; breakpoints ``b_i = numpy.interp(i/k, linspace(0, 1, n), s)``
    (float64, i = 0…k, numpy's interp/linspace arithmetic); ``codes = clip(searchsorted(b, w, 'right') - 1, 0, k-1)``;
    level ``i = (b_i + b_{i+1}) / 2`` in float64 (returned in float64; the caller casts and sorts).
``sign_ranges(w) -> stats``
    float64 ``(G, 4)``: min and max of the positive values, min and max of ``|w|`` over the negative values
    (NaN where that sign is absent).
``log2_assign(w, levels, n_neg, n_pos) -> codes``
    ``levels`` float64 ``(G, k)``: ``[neg_0 … neg_{n_neg-1}, pos_0 … pos_{n_pos-1}, padding]`` with both sign
    groups in magnitude-ascending order. A positive (negative) value gets the index of the *first* level of its
    sign at the smallest float64 distance ``|w - level|``. Zeros get the code of the level of smallest magnitude
    among those used by the row's non-zero values (a tie between +a and −a goes to +a); a row of zeros gets 0.
``optimal_levels(w, k, weights) -> levels64``
    float64 ``(G, k)``: the exact W2-optimal (weighted optimal 1-D k-means) k' = min(k, n) levels of each row,
    ascending, padded with the last. ``weights``: float64 ``(G, n)`` importance weights ≥ 0 with a positive sum per
    row, or an empty ``(0, 0)`` array for unit weights. DP over the sorted row (centred on its mean, prefix sums in
    float64), each layer by divide and conquer (leftmost argmin): O(k' · n log n) time, 4·k'·n bytes of argmins.
    A run of zero total weight gets its plain mean; a level is clamped into its run's range (so a run of equal
    values gets exactly that value and quantizing a quantized row is exact).
``canonicalize(codes, codebook) -> None``
    In place: a row not ascending is stably sorted and its codes remapped (same ``w_hat``).
"""
from contextlib import contextmanager

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from fmq_np._numba import get_threads, jit, set_threads

_BLOCK = 4096             # values per parallel tile
_PARALLEL_MIN = 1 << 16   # calls on fewer values run on one thread (a parallel launch costs more than it saves)


@contextmanager
def _threads_for(work):
    """Run the enclosed kernels on one thread when ``work`` (values touched) is small."""
    if work >= _PARALLEL_MIN or get_threads() == 1:
        yield
        return
    before = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)


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
    """k ≤ 16: ``t`` holds 15 non-decreasing thresholds (+inf-padded). A branch-free 4-step binary search for
    ``#{j : x > t[j]}``: each step selects the next threshold among broadcast constants by the comparison bits
    found so far (selects and compares vectorize 8-wide; 4 compares instead of 15 per value)."""
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


@jit(parallel=True)
def _assign_small(w, t, codes):
    G, n = w.shape
    tiles = (n + _BLOCK - 1) // _BLOCK
    for tile in prange(G * tiles):
        g = tile // tiles
        lo = (tile % tiles) * _BLOCK
        hi = min(lo + _BLOCK, n)
        _assign_tile(w[g, lo:hi], t[g], codes[g, lo:hi])


@jit(parallel=True)
def _assign_search(w, t, codes):
    G, n = w.shape
    km1 = t.shape[1]
    tiles = (n + _BLOCK - 1) // _BLOCK
    for tile in prange(G * tiles):
        g = tile // tiles
        lo = (tile % tiles) * _BLOCK
        for i in range(lo, min(lo + _BLOCK, n)):
            x = w[g, i]
            a, b = 0, km1            # answer = #{j : x > t[j]} in [a, b]
            while a < b:
                m = (a + b) >> 1
                if x > t[g, m]:
                    a = m + 1
                else:
                    b = m
            codes[g, i] = a


def assign(w, codebook):
    """Codes ``(G, n)`` uint8 of the nearest level (ties to the lower level); see the module docstring."""
    t = thresholds(codebook, w.dtype)
    codes = np.empty(w.shape, np.uint8)
    with _threads_for(w.size):
        if t.shape[1] <= 15:
            pad = np.full((t.shape[0], 15), np.inf, w.dtype)
            pad[:, :t.shape[1]] = t
            _assign_small(w, pad, codes)
        else:
            _assign_search(w, t, codes)
    return codes


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


#: outputs of at least this many bytes are written with non-temporal stores (they do not fit in the caches)
_STREAM_BYTES = 1 << 22


@jit
def _dequantize_tile(c, table, o, stream):
    if stream:
        for i in range(c.shape[0]):
            _store_stream(o, i, table[c[i]])
    else:
        for i in range(c.shape[0]):
            o[i] = table[c[i]]


@jit(parallel=True)
def _dequantize(codes, codebook, out, stream):
    G, n = codes.shape
    tiles = (n + _BLOCK - 1) // _BLOCK
    for tile in prange(G * tiles):
        g = tile // tiles
        lo = (tile % tiles) * _BLOCK
        hi = min(lo + _BLOCK, n)
        _dequantize_tile(codes[g, lo:hi], codebook[g], out[g, lo:hi], stream)


@jit
def _dequantize_serial(codes, codebook, out):
    """One thread, for calls under ``_PARALLEL_MIN`` values (no switching of the thread count)."""
    for g in range(codes.shape[0]):
        _dequantize_tile(codes[g], codebook[g], out[g], False)


def dequantize(codes, codebook):
    """``w_hat (G, n)`` in the codebook's dtype: ``codebook[g, codes[g, i]]``."""
    out = np.empty(codes.shape, codebook.dtype)
    if codes.size < _PARALLEL_MIN:
        _dequantize_serial(codes, codebook, out)
    else:
        _dequantize(codes, codebook, out, out.nbytes >= _STREAM_BYTES)
    return out


# ---------------------------------------------------------------------------------------------------- helpers
@jit
def _pairwise_leaf(a, lo, n):
    """numpy's pairwise-sum leaf (n ≤ 128): 8 accumulators in a's dtype, then the remainder in order."""
    if n < 8:
        r = -(a[lo] - a[lo])      # -0.0 in a's dtype, as numpy starts
        for i in range(n):
            r += a[lo + i]
        return r
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    m = n - n % 8
    i = 8
    while i < m:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@jit
def _two_leaves(n):
    """True when numpy's pairwise sum of n values is one leaf or one split into two leaves (≤ 128 values each)."""
    half = n // 2
    return n <= 128 or n - (half - half % 8) <= 128


@jit
def _pairwise_2(a, lo, n):
    """numpy's pairwise sum of n values when :func:`_two_leaves` (n): a leaf, or one split into two leaves."""
    if n <= 128:
        return _pairwise_leaf(a, lo, n)
    half = n // 2
    half -= half % 8
    return _pairwise_leaf(a, lo, half) + _pairwise_leaf(a, lo + half, n - half)


@jit
def _pairwise_sum(a, lo, n):
    """``numpy.add.reduce(a[lo:lo+n])`` bit for bit: numpy's pairwise summation (blocks ≤ 128 split at a multiple
    of 8 below n/2, left + right), evaluated with an explicit stack (no recursion: cached recursive kernels break);
    numpy's reduction starts from its identity +0.0, so a sum of zeros is +0.0 whatever their signs."""
    zero = a[lo] - a[lo]
    if n <= 128:
        return _pairwise_leaf(a, lo, n) + zero
    half = n // 2
    half -= half % 8
    if _two_leaves(half) and _two_leaves(n - half):  # two levels of splits at most (n ≤ 512 or so): no stack
        return (_pairwise_2(a, lo, half) + _pairwise_2(a, lo + half, n - half)) + zero
    f_lo = np.empty(64, np.int64)
    f_n = np.empty(64, np.int64)
    f_phase = np.zeros(64, np.int64)
    vals = np.empty(64, a.dtype)
    top, nv = 0, 0
    f_lo[0], f_n[0] = lo, n
    while top >= 0:
        fl, fn = f_lo[top], f_n[top]
        if fn <= 128:
            vals[nv] = _pairwise_leaf(a, fl, fn)
            nv += 1
            top -= 1
            continue
        half = fn // 2
        half -= half % 8
        if f_phase[top] == 2:                      # both halves done: left + right
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            top -= 1
            continue
        f_phase[top] += 1
        top += 1
        f_phase[top] = 0
        if f_phase[top - 1] == 1:
            f_lo[top], f_n[top] = fl, half
        else:
            f_lo[top], f_n[top] = fl + half, fn - half
    return vals[0] + zero


@jit
def _radix_order(bits, nbytes, top, full):
    """Stable ascending order of a float row given its raw bits (``uint32``/``uint64`` view): LSD radix sort on
    order-preserving keys, 8 bits a pass, passes over a constant byte skipped; −0.0 sorts as +0.0."""
    n = bits.shape[0]
    keys = np.empty(n, np.uint64)
    hist = np.zeros((nbytes, 256), np.int64)
    for i in range(n):
        u = np.uint64(bits[i])
        if u == top:                                   # -0.0 -> +0.0
            u = np.uint64(0)
        key = (~u & full) if (u & top) else (u | top)
        keys[i] = key
        for b in range(nbytes):
            hist[b, np.int64((key >> np.uint64(8 * b)) & np.uint64(255))] += 1
    passes = np.empty(nbytes, np.int64)            # the bytes that are not constant over the row
    n_pass = 0
    for b in range(nbytes):
        if hist[b, np.int64((keys[0] >> np.uint64(8 * b)) & np.uint64(255))] != n:
            passes[n_pass] = b
            n_pass += 1
    order = np.arange(n)
    tmp_order = np.empty(n, np.int64)
    tmp_keys = np.empty(n, np.uint64)
    off = np.empty(256, np.int64)
    for q in range(n_pass):
        b = passes[q]
        shift = np.uint64(8 * b)
        last = q == n_pass - 1
        acc = 0
        for d in range(256):
            off[d] = acc
            acc += hist[b, d]
        for i in range(n):
            key = keys[i]
            d = np.int64((key >> shift) & np.uint64(255))
            p = off[d]
            off[d] = p + 1
            if not last:                           # the last pass only needs the order
                tmp_keys[p] = key
            tmp_order[p] = order[i]
        keys, tmp_keys = tmp_keys, keys
        order, tmp_order = tmp_order, order
    return order


@jit
def _sorted_order(vals):
    """Stable ascending order of a short 1-D array (insertion sort)."""
    m = vals.shape[0]
    order = np.arange(m)
    for i in range(1, m):
        j = i
        while j > 0 and vals[order[j - 1]] > vals[order[j]]:
            order[j - 1], order[j] = order[j], order[j - 1]
            j -= 1
    return order


@jit(parallel=True)
def _canonicalize(codes, codebook):
    G, n = codes.shape
    k = codebook.shape[1]
    for g in prange(G):
        ok = True
        for j in range(k - 1):
            if codebook[g, j + 1] < codebook[g, j]:
                ok = False
        if ok:
            continue
        order = _sorted_order(codebook[g].copy())
        inv = np.empty(k, np.uint8)
        row = codebook[g].copy()
        for j in range(k):
            inv[order[j]] = j
            codebook[g, j] = row[order[j]]
        for i in range(n):
            codes[g, i] = inv[codes[g, i]]


def canonicalize(codes, codebook):
    """Sort every codebook row ascending (stable) and remap its codes, in place; ``w_hat`` is unchanged."""
    with _threads_for(codes.size):
        _canonicalize(codes, codebook)


# ---------------------------------------------------------------------------------------------------- equal-mass OT
@jit
def _sort_values(row, s, bucket, count):
    """``s[:n]`` = the values of ``row`` in ascending order (tied values, −0.0 and +0.0 included, in any order):
    a counting sort into nb = min(n, 65535) buckets by a monotone linear map of the value
    (``(x/2 - min/2) * nb / (max/2 - min/2)`` in float64, truncated and clamped: x < y never puts x in a later
    bucket than y, so the buckets are ordered), then :func:`_finish_sort` within the buckets (a Gaussian row has
    ~0.5 inversions per value, nearly all between neighbours; heavy tails or rows over 65535 values crowd the
    buckets, and :func:`_finish_sort` then falls back to ``np.sort``). Scratch: ``bucket`` uint16 ``(≥ n,)``,
    ``count`` int32 ``(≥ nb + 1,)``."""
    n = row.shape[0]
    mn = row[0]
    mx = row[0]
    for i in range(1, n):
        v = row[i]
        mn = v if v < mn else mn
        mx = v if v > mx else mx
    if not mx > mn:                                     # one distinct value
        for i in range(n):
            s[i] = row[i]
        return
    nb = min(n, 65535)
    lo = np.float64(mn) * 0.5
    scale = nb / (np.float64(mx) * 0.5 - lo)
    if not scale < np.inf:                              # a range of a few subnormals
        s[:n] = np.sort(row)
        return
    top = np.float64(nb - 1)
    for i in range(n):                                  # vectorizes (kept apart from the histogram)
        f = (np.float64(row[i]) * 0.5 - lo) * scale
        f = f if f < top else top                       # NaN -> top: a bucket index in range whatever the input
        bucket[i] = np.uint16(f if f > 0.0 else 0.0)
    for b in range(nb + 1):
        count[b] = 0
    for i in range(n):
        count[np.int64(bucket[i]) + 1] += 1
    for b in range(1, nb + 1):
        count[b] += count[b - 1]
    for i in range(n):                                  # count[b] becomes the end of bucket b
        b = np.int64(bucket[i])
        p = count[b]
        s[p] = row[i]
        count[b] = p + 1
    _finish_sort(s, n)


@jit
def _insert(s, j, v):
    """Put v into the sorted ``s[:j]`` (shifting the larger values up one place); returns the number of shifts."""
    j0 = j
    while j > 0 and s[j - 1] > v:
        s[j] = s[j - 1]
        j -= 1
    s[j] = v
    return j0 - j


@jit
def _finish_sort(s, n):
    """Sort ``s[:n]``, which has few, short-range inversions, in one pass: the values stream through two branch-free
    bubble stages (each keeps the running maximum and emits the minimum: a min and a max per value, no
    mispredictions) into an insertion sort, whose rarely taken branch is what is left of the inversions. After
    ``8 n`` shifts (many long-range inversions) it gives up and calls ``np.sort``: O(n log n) at worst."""
    if n < 3:
        for i in range(1, n):
            _insert(s, i, s[i])
        return
    shifts = 0
    m1 = s[0]
    x = s[1]
    m2 = x if x < m1 else m1
    m1 = m1 if x < m1 else x
    for i in range(2, n):
        x = s[i]
        y = x if x < m1 else m1
        m1 = m1 if x < m1 else x
        z = y if y < m2 else m2
        m2 = m2 if y < m2 else y
        if i > 2 and s[i - 3] > z:
            shifts += _insert(s, i - 2, z)
            if shifts > 8 * n:
                s[i - 1] = m2                   # the two values still held by the bubble stages
                s[i] = m1
                s[:n].sort()
                return
        else:
            s[i - 2] = z
    _insert(s, n - 2, m2 if m2 < m1 else m1)
    _insert(s, n - 1, m1 if m2 < m1 else m2)


@jit
def _chunk_of_rank(t, q, r):
    """Chunk of sorted position ``t`` when n values are cut like ``numpy.array_split`` (r chunks of q + 1, then q)."""
    big = r * (q + 1)
    return t // (q + 1) if t < big else r + (t - big) // q


@jit
def _ot_row(row, k, codes, codebook, s, bucket, count, bounds, means, inv):
    """One row of :func:`ot_equal_mass`. The chunks need only the sorted *values* (a chunk's sum does not depend on
    which of two tied values comes first); the code of a value is the number of chunk boundaries below it:
    ``#{j : x > s[b_j - 1]}`` with b_j the first position of chunk j — exact where the values on the two sides of
    a boundary differ; a run of values tied across a boundary is then handed out by flat position (the stable
    rule). Scratch: ``s`` (n,), ``bucket``, ``count`` (see :func:`_sort_values`), ``bounds`` (max(15, k),),
    ``means`` (k,), ``inv`` uint8 (k,)."""
    n = row.shape[0]
    kk = min(k, n)
    q = n // kk
    r = n % kk
    _sort_values(row, s, bucket, count)
    lo = 0
    for j in range(kk):
        size = q + 1 if j < r else q
        means[j] = _pairwise_sum(s, lo, size) / size
        lo += size
    ascending = True                    # the means ascend up to rounding; rank them stably when they do not
    for j in range(kk):
        inv[j] = j
        if j > 0 and means[j] < means[j - 1]:
            ascending = False
    if not ascending:
        rank = _sorted_order(means[:kk].copy())
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
        b = j * q + min(j, r)
        bounds[j - 1] = s[b - 1]
        ties |= s[b - 1] == s[b]
    if kk <= 16:
        _assign_tile(row, bounds, codes)
    else:
        for i in range(n):
            x = row[i]
            a, c = 0, kk - 1
            while a < c:
                m = (a + c) >> 1
                if x > bounds[m]:
                    a = m + 1
                else:
                    c = m
            codes[i] = a
    if ties:
        done = -1                       # a sorted position of the last tied run handed out
        for j in range(1, kk):
            b = j * q + min(j, r)
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
                    codes[i] = _chunk_of_rank(t, q, r)
                    t += 1
    if not ascending:
        for i in range(n):
            codes[i] = inv[codes[i]]


@jit
def _sort_scratch(w):
    """Scratch ``(s, bucket, count)`` for :func:`_sort_values` on the rows of w (G, n)."""
    n = w.shape[1]
    return np.empty(n, w.dtype), np.empty(n, np.uint16), np.empty(min(n, 65535) + 1, np.int32)


def _row_blocks(w):
    """How many blocks of rows the parallel row kernels split w (G, n) into; 0: run on one thread."""
    threads = get_threads()
    if w.size < _PARALLEL_MIN or threads == 1 or w.shape[0] == 1:
        return 0
    return min(w.shape[0], 4 * threads)


@jit
def _ot_rows(w, k, codes, codebook, g0, g1):
    """Rows ``g0 … g1-1`` of :func:`ot_equal_mass`, with one set of scratch arrays."""
    s, bucket, count = _sort_scratch(w)
    bounds = np.empty(max(15, k), w.dtype)
    means = np.empty(k, w.dtype)
    inv = np.empty(k, np.uint8)
    for g in range(g0, g1):
        _ot_row(w[g], k, codes[g], codebook[g], s, bucket, count, bounds, means, inv)


@jit(parallel=True)
def _ot_equal_mass(w, k, codes, codebook, n_blocks):
    G = w.shape[0]
    for blk in prange(n_blocks):
        _ot_rows(w, k, codes, codebook, blk * G // n_blocks, (blk + 1) * G // n_blocks)


def ot_equal_mass(w, k):
    """The paper's equal-mass OT quantizer per row → ``(codes, codebook)``; see the module docstring."""
    G = w.shape[0]
    codes = np.empty(w.shape, np.uint8)
    codebook = np.empty((G, k), w.dtype)
    n_blocks = _row_blocks(w)
    if n_blocks:
        _ot_equal_mass(w, k, codes, codebook, n_blocks)
    else:
        _ot_rows(w, k, codes, codebook, 0, G)
    return codes, codebook


# ---------------------------------------------------------------------------------------------------- uniform
@jit(parallel=True)
def _uniform(w, k, codes, codebook):
    G, n = w.shape
    steps = np.empty(k, w.dtype)        # 0 … k-1 in w's dtype, so that all arithmetic stays in that dtype
    for j in range(k):
        steps[j] = j
    for g in prange(G):
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


def uniform(w, k):
    """Asymmetric min–max quantizer per row → ``(codes, codebook)``; see the module docstring."""
    codes = np.empty(w.shape, np.uint8)
    codebook = np.empty((w.shape[0], k), w.dtype)
    with _threads_for(w.size):
        _uniform(w, k, codes, codebook)
    return codes, codebook


# ---------------------------------------------------------------------------------------------------- PWL
@jit
def _grid(j, n, step):
    """``numpy.linspace(0, 1, n)[j]``."""
    return 1.0 if j == n - 1 else j * step + 0.0


@jit
def _pwl_row(row, k, codes, levels, sorted_row, bucket, count):
    """One row of :func:`pwl`; scratch ``sorted_row``, ``bucket``, ``count`` as :func:`_sort_values` needs."""
    n = row.shape[0]
    step = 1.0 / (n - 1) if n > 1 else 0.0
    qstep = 1.0 / k
    _sort_values(row, sorted_row, bucket, count)
    s = sorted_row
    b = np.empty(k + 1, np.float64)
    for i in range(k + 1):
        x = 1.0 if i == k else i * qstep + 0.0
        if n == 1:
            b[i] = np.float64(s[0])
            continue
        j = min(max(int(x * (n - 1)), 0), n - 1)      # j = last grid index with grid[j] <= x
        while j + 1 < n and _grid(j + 1, n, step) <= x:
            j += 1
        while _grid(j, n, step) > x:
            j -= 1
        xj = _grid(j, n, step)
        if j == n - 1 or xj == x:
            b[i] = np.float64(s[j])
        else:
            sj = np.float64(s[j])
            slope = (np.float64(s[j + 1]) - sj) / (_grid(j + 1, n, step) - xj)
            b[i] = slope * (x - xj) + sj
    for i in range(k):
        levels[i] = (b[i] + b[i + 1]) / 2
    for i in range(n):
        x = np.float64(row[i])
        a, c = 0, k + 1                                  # searchsorted(b, x, 'right')
        while a < c:
            m = (a + c) >> 1
            if b[m] <= x:
                a = m + 1
            else:
                c = m
        codes[i] = min(max(a - 1, 0), k - 1)


@jit
def _pwl_rows(w, k, codes, levels, g0, g1):
    """Rows ``g0 … g1-1`` of :func:`pwl`, with one set of scratch arrays."""
    s, bucket, count = _sort_scratch(w)
    for g in range(g0, g1):
        _pwl_row(w[g], k, codes[g], levels[g], s, bucket, count)


@jit(parallel=True)
def _pwl(w, k, codes, levels, n_blocks):
    G = w.shape[0]
    for blk in prange(n_blocks):
        _pwl_rows(w, k, codes, levels, blk * G // n_blocks, (blk + 1) * G // n_blocks)


def pwl(w, k):
    """The published PWL quantizer per row → ``(codes, levels64)``; see the module docstring."""
    G = w.shape[0]
    codes = np.empty(w.shape, np.uint8)
    levels = np.empty((G, k), np.float64)
    n_blocks = _row_blocks(w)
    if n_blocks:
        _pwl(w, k, codes, levels, n_blocks)
    else:
        _pwl_rows(w, k, codes, levels, 0, G)
    return codes, levels


# ---------------------------------------------------------------------------------------------------- log2
@jit(parallel=True)
def _sign_ranges(w, out):
    G, n = w.shape
    for g in prange(G):
        pmin, pmax, nmin, nmax = np.inf, -np.inf, np.inf, -np.inf
        for i in range(n):
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


def sign_ranges(w):
    """float64 ``(G, 4)``: positive min, max; negative |min|, |max| (NaN where absent)."""
    out = np.empty((w.shape[0], 4), np.float64)
    with _threads_for(w.size):
        _sign_ranges(w, out)
    return out


@jit(parallel=True)
def _log2_assign(w, levels, n_neg, n_pos, codes):
    G, n = w.shape
    for g in prange(G):
        zero_code = 0
        zero_mag = np.inf
        for i in range(n):
            x = np.float64(w[g, i])
            if x == 0:
                continue
            lo, hi = (n_neg[g], n_neg[g] + n_pos[g]) if x > 0 else (0, n_neg[g])
            best = lo
            bd = abs(x - levels[g, lo])
            for j in range(lo + 1, hi):
                d = abs(x - levels[g, j])
                if d < bd:
                    bd = d
                    best = j
            codes[g, i] = best
            mag = abs(levels[g, best])
            if mag < zero_mag or (mag == zero_mag and levels[g, best] > 0):
                zero_mag = mag
                zero_code = best
        for i in range(n):
            if w[g, i] == 0:
                codes[g, i] = zero_code


def log2_assign(w, levels, n_neg, n_pos):
    """Codes of the published log2 quantizer given its float64 level table; see the module docstring."""
    codes = np.empty(w.shape, np.uint8)
    with _threads_for(w.size):
        _log2_assign(w, levels, n_neg.astype(np.int64), n_pos.astype(np.int64), codes)
    return codes


# ---------------------------------------------------------------------------------------------------- W2-optimal DP
@jit
def _cost(i, j, S1, S2, W, unit):
    """Within-run sum of squared deviations of sorted points i … j-1 (prefix sums of centred data)."""
    m = np.float64(j - i) if unit else W[j] - W[i]
    if m <= 0:
        return 0.0
    d = S1[j] - S1[i]
    return (S2[j] - S2[i]) - d * d / m


@jit
def _dc_task(task, Dp, Dc, arg, prev, S1, S2, W, unit):
    """One divide-and-conquer step: Dc[mid] = min over i in [max(ol, prev[mid]), min(oh, mid-1)] of
    Dp[i] + cost(i, mid). ``prev`` is the previous layer's argmin row: with one run more, the last run starts no
    earlier (the Monge property Ckmeans.1d.dp also uses)."""
    jl, jh, ol, oh = task[0], task[1], task[2], task[3]
    mid = (jl + jh) >> 1
    best = np.inf
    hi = min(oh, mid - 1)
    lo = min(max(ol, np.int64(prev[mid])), hi)
    bi = lo
    for i in range(lo, hi + 1):
        v = Dp[i] + _cost(i, mid, S1, S2, W, unit)
        if v < best:
            best = v
            bi = i
    Dc[mid] = best
    arg[mid] = bi
    return bi


@jit
def _children(tasks, best, nt):
    nxt = np.empty((2 * nt, 4), np.int64)
    c = 0
    for t in range(nt):
        jl, jh, ol, oh = tasks[t, 0], tasks[t, 1], tasks[t, 2], tasks[t, 3]
        mid = (jl + jh) >> 1
        if jl <= mid - 1:
            nxt[c, 0], nxt[c, 1], nxt[c, 2], nxt[c, 3] = jl, mid - 1, ol, best[t]
            c += 1
        if mid + 1 <= jh:
            nxt[c, 0], nxt[c, 1], nxt[c, 2], nxt[c, 3] = mid + 1, jh, best[t], oh
            c += 1
    return nxt, c


@jit
def _layer_serial(Dp, Dc, arg, prev, S1, S2, W, unit, jlo, jhi, olo, ohi):
    """Fill Dc[jlo..jhi] (optimal start of the last run within [olo, ohi]) by divide and conquer, breadth first."""
    tasks = np.empty((1, 4), np.int64)
    tasks[0, 0], tasks[0, 1], tasks[0, 2], tasks[0, 3] = jlo, jhi, olo, ohi
    nt = 1
    while nt > 0:
        best = np.empty(nt, np.int64)
        for t in range(nt):
            best[t] = _dc_task(tasks[t], Dp, Dc, arg, prev, S1, S2, W, unit)
        tasks, nt = _children(tasks, best, nt)


@jit(parallel=True)
def _layer_parallel(Dp, Dc, arg, prev, S1, S2, W, unit, jlo, jhi, olo):
    """As :func:`_layer_serial`; the top levels run serially, then one parallel launch over ≥ 16 subtrees."""
    tasks = np.empty((1, 4), np.int64)
    tasks[0, 0], tasks[0, 1], tasks[0, 2], tasks[0, 3] = jlo, jhi, olo, jhi - 1
    nt = 1
    while 0 < nt < 16:
        best = np.empty(nt, np.int64)
        for t in range(nt):
            best[t] = _dc_task(tasks[t], Dp, Dc, arg, prev, S1, S2, W, unit)
        tasks, nt = _children(tasks, best, nt)
    for t in prange(nt):
        _layer_serial(Dp, Dc, arg, prev, S1, S2, W, unit, tasks[t, 0], tasks[t, 1], tasks[t, 2], tasks[t, 3])


@jit
def _dp_prepare(row, wrow, unit):
    """Sorted, centred float64 points and their prefix sums (S1, S2 and, when weighted, W)."""
    order = _radix_order(row.view(np.uint64), 8, np.uint64(1) << np.uint64(63), ~np.uint64(0))
    s = row[order]
    wt = s if unit else wrow[order]
    n = s.shape[0]
    centre = s.mean()
    S1 = np.zeros(n + 1)
    S2 = np.zeros(n + 1)
    W = np.zeros(1 if unit else n + 1)
    for i in range(n):
        x = s[i] - centre
        a = 1.0 if unit else wt[i]
        S1[i + 1] = S1[i] + a * x
        S2[i + 1] = S2[i] + a * x * x
        if not unit:
            W[i + 1] = W[i] + a
    return s, centre, S1, S2, W


@jit
def _dp_levels(s, centre, S1, S2, W, unit, arg, kk, k, out):
    """Backtrack the argmin table into the k' run means, ascending, padded to k."""
    n = s.shape[0]
    j = n
    for m in range(kk - 1, -1, -1):
        i = arg[m, j] if m > 0 else 0
        mass = np.float64(j - i) if unit else W[j] - W[i]
        if mass > 0:
            level = (S1[j] - S1[i]) / mass + centre
        else:
            level = s[i:j].mean()
        out[m] = min(max(level, s[i]), s[j - 1])     # within its run: a run of equal values gets that value
        j = i
    lv = np.sort(out[:kk])
    for m in range(k):
        out[m] = lv[min(m, kk - 1)]


@jit
def _dp_first_layer(D, S1, S2, W, unit, n):
    for j in range(n + 1):
        D[j] = _cost(0, j, S1, S2, W, unit)


@jit
def _dp_setup(row, wrow, unit, k):
    """Sorted data, prefix sums, the argmin table and the first DP layer shared by both DP drivers."""
    s, centre, S1, S2, W = _dp_prepare(row, wrow, unit)
    n = s.shape[0]
    kk = min(k, n)
    arg = np.zeros((kk, n + 1), np.int32)
    Dp = np.empty(n + 1)
    Dc = np.empty(n + 1)
    _dp_first_layer(Dp, S1, S2, W, unit, n)
    return s, centre, S1, S2, W, n, kk, arg, Dp, Dc


@jit
def _dp_serial(row, wrow, unit, k, out):
    s, centre, S1, S2, W, n, kk, arg, Dp, Dc = _dp_setup(row, wrow, unit, k)
    for m in range(1, kk):
        jlo = n if m == kk - 1 else m + 1
        _layer_serial(Dp, Dc, arg[m], arg[m - 1], S1, S2, W, unit, jlo, n - (kk - 1 - m), m, n - (kk - 1 - m) - 1)
        Dp, Dc = Dc, Dp
    _dp_levels(s, centre, S1, S2, W, unit, arg, kk, k, out)


@jit(parallel=True)
def _dp_rows(w, weights, unit, k, out):
    for g in prange(w.shape[0]):
        _dp_serial(w[g], weights[g], unit, k, out[g])


@jit
def _dp_one(row, wrow, unit, k, out):
    s, centre, S1, S2, W, n, kk, arg, Dp, Dc = _dp_setup(row, wrow, unit, k)
    for m in range(1, kk):
        jlo = n if m == kk - 1 else m + 1
        _layer_parallel(Dp, Dc, arg[m], arg[m - 1], S1, S2, W, unit, jlo, n - (kk - 1 - m), m)
        Dp, Dc = Dc, Dp
    _dp_levels(s, centre, S1, S2, W, unit, arg, kk, k, out)


def optimal_levels(w, k, weights):
    """float64 ``(G, k)`` W2-optimal levels per row (weighted optimal 1-D k-means); see the module docstring."""
    G = w.shape[0]
    unit = weights.size == 0
    w = np.ascontiguousarray(w, dtype=np.float64)
    weights = np.empty((G, 0), np.float64) if unit else np.ascontiguousarray(weights, dtype=np.float64)
    out = np.empty((G, k), np.float64)
    if G >= get_threads() or w.size < _PARALLEL_MIN:
        with _threads_for(w.size):
            _dp_rows(w, weights, unit, k, out)
    else:
        for g in range(G):
            _dp_one(w[g], weights[g], unit, k, out[g])
    return out
