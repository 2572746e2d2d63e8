"""The helpers of the CPU quantizer kernels that are bit-exact with NumPy: each gives, bit for bit, what the NumPy
call named in its docstring gives (sums in the array's dtype, float64 interpolation, stable orders), so that the
kernels reproduce the published NumPy code exactly.

*Twins* are written once as plain functions and compiled twice: with :func:`~fmq_np._numba.jit` here (the CPU
kernels call these) and with :func:`~fmq_np._numba.cuda_device` in :mod:`fmq_np.quant.gpu`. A twin calls no other
function (the names it calls would resolve to the CPU versions) and allocates nothing (the GPU has no heap: the
caller passes any scratch).
"""
import numpy as np

from fmq_np._numba import jit

#: depth of :func:`pairwise_sum`'s stack: enough for n up to 128 * 2**62 values (a capacity, not a tunable)
SUM_STACK = 64


# ---------------------------------------------------------------------------------------------------- numpy.add.reduce
@jit
def sum_scratch(a):
    """Scratch ``(st_lo, st_n, st_phase, vals)`` for :func:`pairwise_sum` over arrays of a's dtype."""
    return (np.empty(SUM_STACK, np.int64), np.empty(SUM_STACK, np.int64), np.empty(SUM_STACK, np.int64),
            np.empty(SUM_STACK, a.dtype))


@jit
def pairwise_sum(a, lo, n, st_lo, st_n, st_phase, vals):
    """Twin. ``numpy.add.reduce(a[lo:lo+n])`` (n ≥ 1) bit for bit, in a's dtype: numpy's pairwise summation (a block
    of more than 128 values is split at a multiple of 8 below its half, left + right; a block of 8…128 values is
    summed by 8 interleaved accumulators and then its remainder in order; below 8 values a plain loop from −0.0),
    evaluated on an explicit post-order stack (no recursion: cached recursive kernels break). numpy's reduction
    starts from its identity +0.0, so a sum of zeros is +0.0 whatever their signs. Scratch from
    :func:`sum_scratch` (``vals`` in a's dtype: numpy's partial sums have it)."""
    top = 0
    nv = 0
    st_lo[0], st_n[0], st_phase[0] = lo, n, 0
    while top >= 0:
        b = st_lo[top]
        m = st_n[top]
        if m < 8:
            r = -(a[b] - a[b])                 # -0.0 in a's dtype, as numpy's leaf starts
            for i in range(m):
                r += a[b + i]
        elif m <= 128:
            r0, r1, r2, r3 = a[b], a[b + 1], a[b + 2], a[b + 3]
            r4, r5, r6, r7 = a[b + 4], a[b + 5], a[b + 6], a[b + 7]
            i = 8
            while i < m - m % 8:
                r0 += a[b + i]
                r1 += a[b + i + 1]
                r2 += a[b + i + 2]
                r3 += a[b + i + 3]
                r4 += a[b + i + 4]
                r5 += a[b + i + 5]
                r6 += a[b + i + 6]
                r7 += a[b + i + 7]
                i += 8
            r = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            while i < m:
                r += a[b + i]
                i += 1
        else:
            phase = st_phase[top]
            if phase == 2:                     # both halves done: left + right
                vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
                nv -= 1
                top -= 1
                continue
            half = m // 2
            half -= half % 8
            st_phase[top] = phase + 1          # phase 0: push the left half; 1: the right half
            st_lo[top + 1] = b if phase == 0 else b + half
            st_n[top + 1] = half if phase == 0 else m - half
            st_phase[top + 1] = 0
            top += 1
            continue
        vals[nv] = r
        nv += 1
        top -= 1
    return vals[0] + (a[lo] - a[lo])


# --------------------------------------------------------------------------------------------------- numpy.array_split
@jit
def chunk_start(j, q, r):
    """Twin. First position of chunk j when n values are cut like ``numpy.array_split`` into chunks of q + 1 (the
    first r = n mod k) and q values. (No ``min``: Numba 0.68's CUDA target cannot compile the builtin on two
    integers, see tests/cuda/check_ptx.py.)"""
    return j * q + (j if j < r else r)


@jit
def chunk_of_rank(t, q, r):
    """Twin. Chunk of position ``t`` when n values are cut like ``numpy.array_split`` (r chunks of q + 1, then q)."""
    big = r * (q + 1)
    return t // (q + 1) if t < big else r + (t - big) // q


# -------------------------------------------------------------------------------------------------- numpy.searchsorted
@jit
def searchsorted_left(t, m, x):
    """Twin. ``numpy.searchsorted(t[:m], x, 'left')`` = ``#{j < m : x > t[j]}`` for ascending ``t[:m]``."""
    a, b = 0, m
    while a < b:
        c = (a + b) >> 1
        if x > t[c]:
            a = c + 1
        else:
            b = c
    return a


@jit
def searchsorted_right(t, x):
    """``numpy.searchsorted(t, x, 'right')`` = ``#{j : t[j] <= x}`` for ascending ``t``."""
    a, b = 0, t.shape[0]
    while a < b:
        c = (a + b) >> 1
        if t[c] <= x:
            a = c + 1
        else:
            b = c
    return a


# -------------------------------------------------------------------------------------------------------- numpy.interp
@jit
def linspace01(j, n, step):
    """``numpy.linspace(0, 1, n)[j]`` (float64) given ``step = 1 / (n - 1)``."""
    return 1.0 if j == n - 1 else j * step + 0.0


@jit
def interp_linspace01(x, s, n, step):
    """``numpy.interp(x, numpy.linspace(0, 1, n), s[:n])`` in float64 for x in [0, 1], numpy's arithmetic (the
    slope form on the interval holding x); ``step = 1 / (n - 1)`` (any value when n = 1)."""
    if n == 1:
        return np.float64(s[0])
    j = min(max(int(x * (n - 1)), 0), n - 1)      # j = last grid index with grid[j] <= x
    while j + 1 < n and linspace01(j + 1, n, step) <= x:
        j += 1
    while linspace01(j, n, step) > x:
        j -= 1
    xj = linspace01(j, n, step)
    if j == n - 1 or xj == x:
        return np.float64(s[j])
    sj = np.float64(s[j])
    slope = (np.float64(s[j + 1]) - sj) / (linspace01(j + 1, n, step) - xj)
    return slope * (x - xj) + sj


# ------------------------------------------------------------------------------------------------------------- sorting
@jit
def radix_order(bits, nbytes, top, full):
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
def sorted_order(vals):
    """Stable ascending order of a short 1-D array (insertion sort)."""
    m = vals.shape[0]
    order = np.arange(m)
    for i in range(1, m):
        j = i
        while j > 0 and vals[order[j - 1]] > vals[order[j]]:
            order[j - 1], order[j] = order[j], order[j - 1]
            j -= 1
    return order



@jit
def sort_scratch(w):
    """Scratch ``(s, bucket, count)`` for :func:`sort_values` on the rows of w (G, n)."""
    n = w.shape[1]
    return np.empty(n, w.dtype), np.empty(n, np.uint16), np.empty(min(n, 65535) + 1, np.int32)


@jit
def sort_values(row, s, bucket, count):
    """``s[:n]`` = the values of ``row`` in ascending order (tied values, −0.0 and +0.0 included, in any order):
    a counting sort into nb = min(n, 65535) buckets by a monotone linear map of the value
    (``(x/2 - min/2) * nb / (max/2 - min/2)`` in float64, truncated and clamped: x < y never puts x in a later
    bucket than y, so the buckets are ordered), then :func:`finish_sort` within the buckets (a Gaussian row has
    ~0.5 inversions per value, nearly all between neighbours; heavy tails or rows over 65535 values crowd the
    buckets, and :func:`finish_sort` then falls back to ``np.sort``). Scratch: ``bucket`` uint16 ``(≥ n,)``,
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
    span = np.float64(mx) * 0.5 - lo                    # 0 when halving rounds two float64 subnormals together
    scale = nb / span if span > 0.0 else np.inf
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
    finish_sort(s, n)


@jit
def insert(s, j, v):
    """Put v into the sorted ``s[:j]`` (shifting the larger values up one place); returns the number of shifts."""
    j0 = j
    while j > 0 and s[j - 1] > v:
        s[j] = s[j - 1]
        j -= 1
    s[j] = v
    return j0 - j


@jit
def finish_sort(s, n):
    """Sort ``s[:n]``, which has few, short-range inversions, in one pass: the values stream through two branch-free
    bubble stages (each keeps the running maximum and emits the minimum: a min and a max per value, no
    mispredictions) into an insertion sort, whose rarely taken branch is what is left of the inversions. After
    ``8 n`` shifts (many long-range inversions) it gives up and calls ``np.sort``: O(n log n) at worst."""
    if n < 3:
        for i in range(1, n):
            insert(s, i, s[i])
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
            shifts += insert(s, i - 2, z)
            if shifts > 8 * n:
                s[i - 1] = m2                   # the two values still held by the bubble stages
                s[i] = m1
                s[:n].sort()
                return
        else:
            s[i - 2] = z
    insert(s, n - 2, m2 if m2 < m1 else m1)
    insert(s, n - 1, m1 if m2 < m1 else m2)
