"""The W2-optimal codebook of a row (weighted optimal 1-D k-means), by dynamic programming; the public entry is
:func:`fmq_np.quant.cpu.optimal_levels`, which holds the spec and the thread policy.

The row is sorted and centred on its mean; ``S1``, ``S2`` (and ``W`` when weighted) are float64 prefix sums of
``a·x``, ``a·x²`` (and ``a``), so that the within-run cost of sorted points i … j-1 is O(1). Layer m of the DP holds
``D_m[j]`` = the least cost of cutting the first j points into m + 1 runs; each layer is filled by divide and
conquer over j (the optimal start of the last run is monotone in j), with the argmin of every (m, j) kept for the
backtrack: O(k' · n log n) time, 4·k'·n bytes of argmins.
"""
import numpy as np
from numba import prange

from fmq_np._numba import QUANT_DP_SPLIT, jit
from fmq_np.quant._exact import chunk_start, radix_order

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
    """The next breadth-first level: each task's left part (its argmin ``best[t]`` bounds the run starts from above)
    and right part (from below); returns the tasks ``(2 nt, 4)`` and how many are filled."""
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
def _dc_levels(Dp, Dc, arg, prev, S1, S2, W, unit, jlo, jhi, olo, ohi, split):
    """Fill Dc[jlo..jhi] (optimal start of the last run within [olo, ohi]) by divide and conquer, breadth first,
    until no task is left or ``split`` tasks or more are; returns those tasks ``(nt, 4)`` and nt."""
    tasks = np.empty((1, 4), np.int64)
    tasks[0, 0], tasks[0, 1], tasks[0, 2], tasks[0, 3] = jlo, jhi, olo, ohi
    nt = 1
    while 0 < nt < split:
        best = np.empty(nt, np.int64)
        for t in range(nt):
            best[t] = _dc_task(tasks[t], Dp, Dc, arg, prev, S1, S2, W, unit)
        tasks, nt = _children(tasks, best, nt)
    return tasks, nt


@jit
def _layer_serial(Dp, Dc, arg, prev, S1, S2, W, unit, jlo, jhi, olo, ohi):
    """One DP layer on the calling thread (:func:`_dc_levels` to the end)."""
    _dc_levels(Dp, Dc, arg, prev, S1, S2, W, unit, jlo, jhi, olo, ohi, 1 << 62)


@jit(parallel=True)
def _layer_parallel(Dp, Dc, arg, prev, S1, S2, W, unit, jlo, jhi, olo, ohi, split):
    """One DP layer: the top levels serially until there are ``split`` subtrees or more, then one parallel launch
    finishes them."""
    tasks, nt = _dc_levels(Dp, Dc, arg, prev, S1, S2, W, unit, jlo, jhi, olo, ohi, split)
    for t in prange(nt):
        _layer_serial(Dp, Dc, arg, prev, S1, S2, W, unit, tasks[t, 0], tasks[t, 1], tasks[t, 2], tasks[t, 3])


@jit
def _prepare(row, wrow, unit):
    """Sorted, centred float64 points and their prefix sums (S1, S2 and, when weighted, W)."""
    order = radix_order(row.view(np.uint64), 8, np.uint64(1) << np.uint64(63), ~np.uint64(0))
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
def _levels(s, centre, S1, S2, W, unit, arg, kk, k, out):
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


@jit(inline="always")
def dp_row(row, wrow, unit, k, out, split):
    """``out (k,)`` = the W2-optimal levels of the float64 row ``row (n,)`` with weights ``wrow (n,)`` (ignored when
    ``unit``). ``split`` picks the layer function: 0 → :func:`_layer_serial` (a row kernel of a parallel launch
    over rows); > 0 → :func:`_layer_parallel` with that many subtrees per launch (one row using every thread).
    Inlined into its callers, which pass ``split`` as a constant, so that the branch not taken is compiled away:
    compiled with both, one 1 M-value row on two threads took 1.9 s instead of 1.1 s."""
    s, centre, S1, S2, W = _prepare(row, wrow, unit)
    n = s.shape[0]
    kk = min(k, n)
    arg = np.zeros((kk, n + 1), np.int32)
    Dp = np.empty(n + 1)
    Dc = np.empty(n + 1)
    for j in range(n + 1):
        Dp[j] = _cost(0, j, S1, S2, W, unit)
    for m in range(1, kk):
        jlo = n if m == kk - 1 else m + 1      # the last layer needs only D[n]
        jhi = n - (kk - 1 - m)                 # the runs still to come need a point each
        if split > 0:
            _layer_parallel(Dp, Dc, arg[m], arg[m - 1], S1, S2, W, unit, jlo, jhi, m, jhi - 1, split)
        else:
            _layer_serial(Dp, Dc, arg[m], arg[m - 1], S1, S2, W, unit, jlo, jhi, m, jhi - 1)
        Dp, Dc = Dc, Dp
    _levels(s, centre, S1, S2, W, unit, arg, kk, k, out)


@jit
def dp_rows(w, weights, unit, k, out, g0, g1):
    """Rows ``g0 … g1-1`` of ``w (G, n)``: :func:`dp_row` with serial layers."""
    for g in range(g0, g1):
        dp_row(w[g], weights[g], unit, k, out[g], 0)


@jit
def dp_row_parallel(row, wrow, unit, k, out):
    """One row on every thread: :func:`dp_row` with parallel layers of ``QUANT_DP_SPLIT`` subtrees."""
    dp_row(row, wrow, unit, k, out, QUANT_DP_SPLIT)


@jit(parallel=True)
def dp_rows_blocks(w, weights, unit, k, out, items, blocks):
    """:func:`dp_rows` over ``blocks`` near-equal ranges of the ``items`` rows, in parallel."""
    q, r = items // blocks, items % blocks
    for b in prange(blocks):
        dp_rows(w, weights, unit, k, out, chunk_start(b, q, r), chunk_start(b + 1, q, r))
