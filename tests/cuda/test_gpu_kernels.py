"""Every numba.cuda kernel gives the same answer as its CPU twin (bit for bit), on small grids."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmq_np.quant import cpu, packing, quantize

DTYPES = [np.float32, np.float64]


def _rows(G, n, dtype, seed, ties=False):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((G, n))
    if ties:
        w = np.round(w * 2) / 2                       # many exact ties, exact .5 steps, signed zeros
        w[0, ::3] = -0.0
    return np.ascontiguousarray(w.astype(dtype))


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [2, 8, 64])
def test_assign(gpu, dtype, k):
    w = _rows(3, 40, dtype, k, ties=True)
    codebook = np.sort(_rows(3, k, dtype, k + 1), axis=1)
    codebook[:, 1] = codebook[:, 0]                   # a repeated level
    codebook[0] = np.linspace(-2, 2, k)               # thresholds exactly on the tied values
    _same(gpu.assign(w, codebook), cpu.assign(w, codebook))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dequantize(gpu, dtype):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (4, 30)).astype(np.uint8)
    codebook = np.sort(rng.standard_normal((4, 16)).astype(dtype), axis=1)
    _same(gpu.dequantize(codes, codebook), cpu.dequantize(codes, codebook))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [2, 8, 256])
def test_uniform(gpu, dtype, k):
    w = _rows(4, 33, dtype, k, ties=True)
    w[1] = 0.25                                       # a constant row
    w[2, :] = -0.0
    w[3, :5] = [0.0, 1.0, 0.5, 0.25, 0.75]            # exact half-way quotients (round half to even)
    w[3, 5:] = 0.5
    for a, b in zip(gpu.uniform(w, k), cpu.uniform(w, k)):
        _same(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("G,n,k", [(3, 37, 8), (2, 5, 16), (1, 1, 4), (1, 300, 2)])
def test_ot_equal_mass(gpu, dtype, G, n, k):
    # (1, 300, 2): chunks of 150 values, split by the pairwise summation (the simulator needs ~1 s per call here)
    for ties in (False, True):
        w = _rows(G, n, dtype, n + k, ties=ties)
        for a, b in zip(gpu.ot_equal_mass(w, k), cpu.ot_equal_mass(w, k)):
            _same(a, b)


@pytest.mark.parametrize("G,n", [(1, 1), (2, 2), (3, 37), (2, 64), (1, 100)])
def test_device_sort_is_the_stable_order(gpu, G, n):
    from numba import cuda
    for ties in (False, True):
        w = _rows(G, n, np.float32, n, ties=ties)
        order = gpu._stable_order(cuda.to_device(w)).copy_to_host()
        assert order.shape[1] >= n and order.shape[1] & (order.shape[1] - 1) == 0      # padded to a power of 2
        np.testing.assert_array_equal(order[:, :n], np.argsort(w, axis=1, kind="stable"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(300, 2), (1100, 2), (1100, 3), (37, 8)])
def test_chunk_means_are_numpys(gpu, dtype, n, k):
    # long chunks (550 values) go through the pairwise-summation stack; the sort is host-side here (it is slow
    # in the simulator), the reference is numpy.mean itself
    from numba import cuda
    s = np.sort(_rows(2, n, dtype, n * k), axis=1)
    d_means = cuda.device_array((2, k), dtype)
    gpu._CHUNK_MEANS[np.dtype(dtype)][gpu._launch(2 * k)](cuda.to_device(s), k, d_means)
    means = d_means.copy_to_host()
    ref = np.array([[c.mean() for c in np.array_split(row, k)] for row in s], dtype)
    _same(means, ref)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack(gpu, bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 9, 61):
        codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = gpu.pack_codes(codes, bits)
        _same(packed, packing.pack_codes(codes, bits))
        _same(gpu.unpack_codes(packed, bits, n), codes)


def test_pack_unpack_checks_like_the_cpu(gpu):
    from fmq_np.errors import InputError
    with pytest.raises(InputError):
        gpu.pack_codes(np.array([4], np.uint8), 2)
    with pytest.raises(InputError):
        gpu.unpack_codes(np.zeros(2, np.uint8), 3, 9)


def test_gpu_module_offers_every_cpu_kernel(gpu):
    public = [name for name in dir(cpu) if not name.startswith("_") and callable(getattr(cpu, name))
              and getattr(cpu, name).__module__ == cpu.__name__]
    assert set(public) <= set(gpu.__all__)
    assert all(callable(getattr(gpu, name)) for name in gpu.__all__)


@pytest.mark.parametrize("method", ["ot", "uniform", "ot-opt"])      # pwl and log2 run the CPU kernels
def test_quantize_on_cuda_equals_cpu(method):
    w = _rows(6, 20, np.float32, 7)
    a = quantize(w, bits=3, method=method, device="cuda")
    b = quantize(w, bits=3, method=method, device="cpu")
    _same(a.codes, b.codes)
    _same(a.codebook, b.codebook)
    _same(a.dequantize(), b.dequantize())


@st.composite
def grouped(draw):
    """A small (G, n) array drawn from a few values (ties, signed zeros, exact halves) or continuous ones, and k."""
    G, n = draw(st.integers(1, 3)), draw(st.integers(1, 24))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        w = rng.choice(np.array([-1.5, -0.5, -0.0, 0.0, 0.25, 0.5, 2.0]), size=(G, n))
    else:
        w = rng.standard_normal((G, n)) * 10.0 ** draw(st.integers(-3, 3))
    return np.ascontiguousarray(w.astype(dtype)), 2 ** draw(st.integers(1, 8))


@settings(max_examples=25, deadline=None)
@given(grouped())
def test_random_inputs_same_as_cpu(gpu, case):
    w, k = case
    for a, b in zip(gpu.ot_equal_mass(w, k), cpu.ot_equal_mass(w, k)):
        _same(a, b)
    codes, codebook = cpu.uniform(w, k)
    for a, b in zip(gpu.uniform(w, k), (codes, codebook)):
        _same(a, b)
    _same(gpu.assign(w, codebook), cpu.assign(w, codebook))
    _same(gpu.dequantize(codes, codebook), cpu.dequantize(codes, codebook))
