"""fmq_np.quant.cpu kernels against the plain-NumPy references of tests/naive.py."""
import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fmq_np._numba import QUANT_STREAM_BYTES, QUANT_TILE
from fmq_np.quant import _exact, cpu

from naive import assign_ref, dequantize_ref, log2_channel, ot_channel, pwl_channel, uniform_channel
from fmq_np.quant.schemes import log2_levels

SETTINGS = settings(max_examples=40, deadline=None)
DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def grouped(draw, max_groups=4, max_len=40, few_values=False):
    """A (G, n) float array; sometimes drawn from a handful of values so that ties are common."""
    dtype = draw(DTYPES)
    G = draw(st.integers(1, max_groups))
    n = draw(st.integers(1, max_len))
    if few_values or draw(st.booleans()):
        pool = draw(st.lists(st.floats(-4, 4, width=32), min_size=1, max_size=5))
        elems = st.sampled_from(pool)
    else:
        elems = st.floats(-1e3, 1e3, width=32)
    return draw(hnp.arrays(dtype, (G, n), elements=elems))


@given(grouped(), st.integers(1, 8), st.randoms(use_true_random=False))
@SETTINGS
def test_assign_and_dequantize_match_reference(w, bits, rnd):
    k = 2 ** bits
    pool = np.concatenate([w.ravel(), np.linspace(-5, 5, 7)]).astype(w.dtype)
    cb = np.sort(np.array([[rnd.choice(pool) for _ in range(k)] for _ in range(w.shape[0])], w.dtype), axis=1)
    codes = cpu.assign(w, cb)
    np.testing.assert_array_equal(codes, assign_ref(w, cb))
    np.testing.assert_array_equal(cpu.dequantize(codes, cb), dequantize_ref(codes, cb))
    # nearest: no level is strictly closer than the chosen one
    err = np.abs(w.astype(np.float64) - dequantize_ref(codes, cb).astype(np.float64))
    best = np.min(np.abs(w[:, :, None].astype(np.float64) - cb[:, None, :].astype(np.float64)), axis=2)
    np.testing.assert_allclose(err, best, rtol=1e-6, atol=0)


def test_assign_half_way_goes_to_lower_level():
    w = np.array([[0.5, 1.5, 0.49999997, 0.50000006]], np.float32)
    cb = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(cpu.assign(w, cb), [[0, 1, 0, 1]])


@given(grouped(), st.integers(1, 8))
@SETTINGS
def test_ot_equal_mass_matches_published(w, bits):
    k = 2 ** bits
    codes, cb = cpu.ot_equal_mass(w, k)
    ref = np.stack([ot_channel(row, k) for row in w])
    np.testing.assert_array_equal(dequantize_ref(codes, cb), ref)
    assert (np.diff(cb, axis=1) >= 0).all()


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@st.composite
def rows_for_ot(draw):
    """(G, n) rows that stress the value sort: ties (signed zeros among them), heavy tails (crowded buckets: the
    np.sort fallback), huge ranges, subnormal ranges, rows long enough for the two-level pairwise sums."""
    dtype = draw(DTYPES)
    G, n = draw(st.integers(1, 3)), draw(st.integers(1, 700))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "pool", "zeros", "cauchy", "huge", "tiny"]))
    if kind == "normal":
        w = rng.standard_normal((G, n))
    elif kind == "pool":
        w = rng.choice(np.array([-1.5, -0.5, -0.0, 0.0, 0.25, 0.5, 2.0]), (G, n))
    elif kind == "zeros":
        w = rng.choice(np.array([-0.0, 0.0]), (G, n))
    elif kind == "cauchy":
        w = rng.standard_cauchy((G, n)) ** 3
    elif kind == "huge":
        w = rng.choice(np.array([-1e30, 1e30, 1.0]), (G, n)) * rng.random((G, n))   # sums stay finite
    else:
        w = rng.integers(-3, 4, (G, n)) * np.float64(np.finfo(dtype).smallest_subnormal)
    return np.ascontiguousarray(w.astype(dtype))


@given(rows_for_ot(), st.integers(1, 8))
@SETTINGS
def test_ot_equal_mass_is_published_bit_for_bit(w, bits):
    k = 2 ** bits
    codes, cb = cpu.ot_equal_mass(w, k)
    _same_bits(dequantize_ref(codes, cb), np.stack([ot_channel(row, k) for row in w]))
    assert (np.diff(cb, axis=1) >= 0).all() and codes.max() < k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ot_equal_mass_parallel_rows_and_stable_ties(dtype):
    rng = np.random.default_rng(3)
    w = (np.round(rng.standard_normal((40, 3000)) * 4) / 4).astype(dtype)     # runs tied across boundaries
    w[::7] = rng.standard_normal((6, 3000))
    w[3, ::5] = -0.0
    for k in (2, 8, 16, 64):
        codes, cb = cpu.ot_equal_mass(w, k)
        _same_bits(dequantize_ref(codes, cb), np.stack([ot_channel(row, k) for row in w]))
        order = np.argsort(w[0], kind="stable")                 # codes ascend along the stable order
        assert (np.diff(codes[0][order].astype(int)) >= 0).all()


def test_ot_equal_mass_chunk_of_zeros_has_mean_plus_zero():
    w = np.array([[-0.0, -0.0, 0.0, -0.0, 1.0, 2.0]], np.float32)
    codes, cb = cpu.ot_equal_mass(w, 4)                        # chunks [-0, -0] [+0, -0] [1] [2]
    _same_bits(cb, np.array([[0.0, 0.0, 1.0, 2.0]], np.float32))     # numpy: mean([-0.0, -0.0]) == +0.0
    _same_bits(dequantize_ref(codes, cb)[0], ot_channel(w[0], 4))


def test_ot_equal_mass_stays_in_bounds_on_non_finite_rows():
    # callers reject NaN/Inf first (InputError); the kernel must still never index out of its scratch arrays
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 500)).astype(np.float32)
    w[0, ::3], w[1, ::7], w[2, 5], w[3, :] = np.nan, np.inf, -np.inf, np.nan
    w[4, ::2], w[5, 1::2] = np.inf, -np.inf
    for k in (8, 256):
        codes, _ = cpu.ot_equal_mass(w, k)
        assert codes.max() < k


@given(rows_for_ot())
@example(np.array([[0.0, 5e-324]]))           # the halved range rounds to 0 (found by hypothesis in CI)
@SETTINGS
def test_sort_values_sorts(w):
    row = w[0]
    n = row.size
    s = np.empty(n, row.dtype)
    _exact.sort_values(row, s, np.empty(n, np.uint16), np.empty(min(n, 65535) + 1, np.int32))
    np.testing.assert_array_equal(s, np.sort(row))              # -0.0 == 0.0: tied values in any order


def test_finish_sort_sorts_any_order():
    rng = np.random.default_rng(4)
    for n in range(0, 40):
        for _ in range(20):
            a = rng.integers(-4, 4, n).astype(np.float64)
            s = a.copy()
            _exact.finish_sort(s, n)
            np.testing.assert_array_equal(s, np.sort(a))


def test_pairwise_sum_is_numpys_sum():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in (*range(1, 700), 1000, 4099):
            a = (rng.standard_normal(n + 3) * 7 + 1).astype(dtype)
            _same_bits(dtype(_exact.pairwise_sum(a, 3, n, *_exact.sum_scratch(a))), np.add.reduce(a[3:]))
        z = np.full(300, -0.0, dtype)
        for n in (1, 7, 8, 9, 128, 129, 300):                   # numpy's sum of zeros is +0.0
            _same_bits(dtype(_exact.pairwise_sum(z, 0, n, *_exact.sum_scratch(z))), np.add.reduce(z[:n]))


@given(grouped(), st.integers(1, 8))
@SETTINGS
def test_uniform_matches_published(w, bits):
    k = 2 ** bits
    # a subnormal step (max - min) / (k - 1) is rounded so coarsely that the published formula leaves the k-level
    # grid (codes past k - 1); the kernel clips, so such rows are out of the comparison
    span = w.max(axis=1).astype(np.float64) - w.min(axis=1)
    assume(((span == 0) | (span / (k - 1) >= np.finfo(w.dtype).tiny)).all())
    codes, cb = cpu.uniform(w, k)
    ref = np.stack([uniform_channel(row, k) for row in w])
    np.testing.assert_array_equal(dequantize_ref(codes, cb), ref)
    assert (np.diff(cb, axis=1) >= 0).all() and codes.max() < k


@given(grouped(), st.integers(1, 8))
@SETTINGS
def test_pwl_matches_published(w, bits):
    k = 2 ** bits
    codes, levels = cpu.pwl(w, k)
    cb = levels.astype(w.dtype)
    cpu.canonicalize(codes, cb)
    ref = np.stack([pwl_channel(row, k) for row in w])
    np.testing.assert_array_equal(dequantize_ref(codes, cb), ref)
    assert (np.diff(cb, axis=1) >= 0).all()


@given(grouped(), st.integers(1, 8))
@SETTINGS
def test_log2_matches_published(w, bits):
    k = 2 ** bits
    kk = min(k, w.shape[1])
    levels, n_neg, n_pos = log2_levels(cpu.sign_ranges(w), kk)
    codes = cpu.log2_assign(w, levels, n_neg, n_pos)
    ref = np.stack([log2_channel(row, k) for row in w])
    np.testing.assert_array_equal(levels[np.arange(w.shape[0])[:, None], codes].astype(w.dtype), ref)


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_log2_levels_of_mixed_rows_are_the_per_row_ones(bits):
    # log2_levels computes all rows together: rows whose linspace step is 0 (magnitudes one ulp apart), constant
    # magnitudes, one sign only, only zeros, and ordinary rows must not change each other's levels
    rng = np.random.default_rng(bits)
    x = 1e6                                       # log2(x) == log2(next float after x)
    w = rng.standard_normal((9, 12))
    w[1] = np.r_[[x, np.nextafter(x, 1.0), -x, -np.nextafter(x, 1.0)], np.zeros(8)]
    w[2] = np.r_[[x] * 6, [-2.0] * 6]
    w[3] = np.abs(w[3])
    w[4] = -np.abs(w[4])
    w[5] = 0.0
    w[6, :6] = 0.0
    k = 2 ** bits
    kk = min(k, w.shape[1])
    levels, n_neg, n_pos = log2_levels(cpu.sign_ranges(w), kk)
    codes = cpu.log2_assign(w, levels, n_neg, n_pos)
    ref = np.stack([log2_channel(row, k) for row in w])
    np.testing.assert_array_equal(levels[np.arange(w.shape[0])[:, None], codes], ref)
    used = n_neg + n_pos
    for g in range(w.shape[0]):                   # padding repeats the row's largest level
        if used[g]:
            assert (levels[g, used[g]:] == levels[g, :used[g]].max()).all()


def test_sign_ranges():
    w = np.array([[-3.0, -1.0, 0.0, 2.0, 5.0], [1.0, 1.0, 0.0, 0.0, 4.0]])
    out = cpu.sign_ranges(w)
    np.testing.assert_array_equal(out[0], [2.0, 5.0, 1.0, 3.0])
    np.testing.assert_array_equal(out[1, :2], [1.0, 4.0])
    assert np.isnan(out[1, 2:]).all()


def test_canonicalize_sorts_rows_and_keeps_values():
    cb = np.array([[3.0, 1.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    codes = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    before = dequantize_ref(codes, cb)
    cpu.canonicalize(codes, cb)
    np.testing.assert_array_equal(cb, [[1, 2, 2, 3], [0, 1, 2, 3]])
    np.testing.assert_array_equal(dequantize_ref(codes, cb), before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dequantize_streams_large_outputs(dtype):
    rng = np.random.default_rng(2)
    n = QUANT_STREAM_BYTES // np.dtype(dtype).itemsize // 2 + 3          # two rows: over the streaming threshold
    codes = rng.integers(0, 16, (2, n)).astype(np.uint8)
    cb = np.sort(rng.standard_normal((2, 16)), axis=1).astype(dtype)
    _same_bits(cpu.dequantize(codes, cb), dequantize_ref(codes, cb))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_rows_use_parallel_tiles(dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 3 * QUANT_TILE + 5)).astype(dtype)
    cb = np.sort(rng.standard_normal((2, 64)), axis=1).astype(dtype)       # binary-search path
    np.testing.assert_array_equal(cpu.assign(w, cb), assign_ref(w, cb))
    cb16 = cb[:, ::4].copy()                                                # threshold-counting path
    np.testing.assert_array_equal(cpu.assign(w, cb16), assign_ref(w, cb16))
