"""fmq_np.quant.cpu kernels against the plain-NumPy references of tests/naive.py."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fmq_np.quant import cpu

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


def test_pairwise_sum_is_numpys_sum():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in (*range(1, 140), 257, 1000, 4099):
            a = (rng.standard_normal(n) * 7 + 1).astype(dtype)
            assert cpu._pairwise_sum(a, 0, n) == np.add.reduce(a)


@given(grouped(), st.integers(1, 8))
@SETTINGS
def test_uniform_matches_published(w, bits):
    k = 2 ** bits
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
def test_large_rows_use_parallel_tiles(dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 3 * cpu._BLOCK + 5)).astype(dtype)
    cb = np.sort(rng.standard_normal((2, 64)), axis=1).astype(dtype)       # binary-search path
    np.testing.assert_array_equal(cpu.assign(w, cb), assign_ref(w, cb))
    cb16 = cb[:, ::4].copy()                                                # threshold-counting path
    np.testing.assert_array_equal(cpu.assign(w, cb16), assign_ref(w, cb16))
