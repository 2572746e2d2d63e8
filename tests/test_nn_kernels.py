"""Numba kernels of fmq_np.nn.kernels against the plain-NumPy references in naive.py."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmq_np.nn import kernels
import naive

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


@st.composite
def conv_geometry(draw):
    k = draw(st.sampled_from([1, 2, 3]))
    stride = draw(st.sampled_from([1, 2]))
    up = draw(st.sampled_from([1, 2]))
    pad = draw(st.integers(0, k))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    ho = (h * up + 2 * pad - k) // stride + 1
    wo = (w * up + 2 * pad - k) // stride + 1
    if ho < 1 or wo < 1:
        h, w, pad = max(h, k), max(w, k), 0
        ho = (h * up - k) // stride + 1
        wo = (w * up - k) // stride + 1
    return draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w, k, stride, pad, up, ho, wo


@settings(max_examples=60, deadline=None)
@given(conv_geometry(), st.sampled_from(DTYPES), st.integers(0, 2**31))
def test_im2col_col2im_match_reference(geom, dtype, seed):
    c, n, h, w, k, stride, pad, up, ho, wo = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, n, h, w)).astype(dtype)
    cols = np.full((c * k * k, n * ho * wo), np.nan, dtype=dtype)
    kernels.im2col(x, k, stride, pad, up, ho, wo, cols)
    np.testing.assert_array_equal(cols, naive.im2col(x, k, stride, pad, up, ho, wo))
    if stride == 1 and up == 1 and 2 * pad == k - 1:
        cols_same = np.full_like(cols, np.nan)
        kernels.im2col_same(x.reshape(c, n, h * w), 0, n, h, w, k, pad, cols_same)
        np.testing.assert_array_equal(cols_same, cols)
    g = rng.standard_normal(cols.shape).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype=dtype)
    kernels.col2im(g, k, stride, pad, up, ho, wo, dx)
    np.testing.assert_allclose(dx, naive.col2im(g, x.shape, k, stride, pad, up, ho, wo), **TOL[dtype])
    # adjoint identity <im2col(x), g> = <x, col2im(g)> (independent of both references)
    np.testing.assert_allclose(np.sum(cols.astype(np.float64) * g), np.sum(x.astype(np.float64) * dx),
                               rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mod", [False, True])
@pytest.mark.parametrize("act", [False, True])
@pytest.mark.parametrize("groups,c", [(1, 3), (2, 4), (4, 4)])
def test_group_norm_matches_reference(dtype, mod, act, groups, c):
    rng = np.random.default_rng(groups * 10 + c + 2 * mod + act)
    n, s = 3, 7
    x = (rng.standard_normal((c, n, s)) * 2 + 0.5).astype(dtype)
    gamma = rng.standard_normal(c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    scale = rng.standard_normal((c, n)).astype(dtype) if mod else np.empty((0, 0), dtype)
    shift = rng.standard_normal((c, n)).astype(dtype) if mod else np.empty((0, 0), dtype)
    y = np.empty_like(x)
    mean, rstd = np.empty((n, groups)), np.empty((n, groups))
    kernels.group_norm_fwd(x, groups, gamma, beta, scale, shift, act, 1e-5, y, mean, rstd)
    ref_sc = scale if mod else None
    ref_sh = shift if mod else None
    y_ref, mean_ref, rstd_ref = naive.group_norm_fwd(x, groups, gamma, beta, ref_sc, ref_sh, act)
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-5)
    np.testing.assert_allclose(rstd, rstd_ref, rtol=1e-5)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = np.empty_like(x)
    dg, db = np.empty((n, c), dtype), np.empty((n, c), dtype)
    dsc = np.empty((c, n), dtype) if mod else scale
    dsh = np.empty((c, n), dtype) if mod else shift
    kernels.group_norm_bwd(dy, x, groups, gamma, beta, scale, shift, act, mean, rstd, dx, dg, db, dsc, dsh)
    dx_r, dg_r, db_r, dsc_r, dsh_r = naive.group_norm_bwd(dy, x, groups, gamma, beta, ref_sc, ref_sh, act)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, dx_r, **tol)
    np.testing.assert_allclose(dg.sum(axis=0), dg_r, **tol)
    np.testing.assert_allclose(db.sum(axis=0), db_r, **tol)
    if mod:
        np.testing.assert_allclose(dsc, dsc_r, **tol)
        np.testing.assert_allclose(dsh, dsh_r, **tol)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.booleans(), st.sampled_from(DTYPES), st.integers(0, 2**31))
def test_bias_act_and_silu_match_reference(rows, cols, act, dtype, seed):
    rng = np.random.default_rng(seed)
    z0 = (rng.standard_normal((rows, cols)) * 4).astype(dtype)
    bias_c = rng.standard_normal(cols).astype(dtype)
    bias_r = rng.standard_normal(rows).astype(dtype)
    z, y = z0.copy(), np.empty_like(z0)
    kernels.bias_act_fwd(z, bias_c, act, y)
    zr = z0.astype(np.float64) + bias_c
    np.testing.assert_allclose(z, zr, **TOL[dtype])
    np.testing.assert_allclose(y, naive.silu(zr) if act else zr, **TOL[dtype])
    z = np.empty_like(z0)
    y = np.empty_like(z0) if act else z
    kernels.bias_act_rows(z0, bias_r, act, z, y)
    zr = z0.astype(np.float64) + bias_r[:, None]
    np.testing.assert_allclose(z, zr, **TOL[dtype])
    np.testing.assert_allclose(y, naive.silu(zr) if act else zr, **TOL[dtype])
    wide = np.zeros((rows, 2 * cols), dtype)   # writing through strided views, as the chunked convolution does
    kernels.bias_act_rows(z0.copy(), bias_r, act, np.empty_like(z0) if act else wide[:, 1::2], wide[:, 1::2])
    np.testing.assert_allclose(wide[:, 1::2], naive.silu(zr) if act else zr, **TOL[dtype])
    assert not wide[:, ::2].any()
    y = np.empty_like(z0)
    kernels.silu_fwd(z0, y)
    np.testing.assert_allclose(y, naive.silu(z0.astype(np.float64)), **TOL[dtype])
    dy = rng.standard_normal(z0.shape).astype(dtype)
    dz = np.empty_like(z0)
    kernels.silu_bwd(dy, z0, dz)
    np.testing.assert_allclose(dz, dy * naive.silu_grad(z0.astype(np.float64)), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_update_matches_reference(dtype):
    rng = np.random.default_rng(1)
    p, g = rng.standard_normal(50).astype(dtype), rng.standard_normal(50).astype(dtype)
    m, v = (rng.standard_normal(50) * 0.1).astype(dtype), (rng.random(50) * 0.1).astype(dtype)
    step, lr, b1, b2, eps, wd = 3, 1e-2, 0.9, 0.95, 1e-8, 0.1
    ref = naive.adamw(p.astype(np.float64), g, m.astype(np.float64), v.astype(np.float64), step, lr, b1, b2, eps, wd)
    kernels.adamw_update(p, g, m, v, lr, b1, b2, eps, wd, 1 - b1 ** step, 1 - b2 ** step)
    for got, want in zip((p, m, v), ref):
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_float32_silu_is_accurate_over_the_whole_range_and_keeps_non_finite_values():
    x = np.concatenate([np.linspace(-120, 120, 20001), [0.0, -0.0, 1e-30, -1e-30, 88.5, -88.5]]).astype(np.float32)
    y, dz = np.empty_like(x), np.empty_like(x)
    kernels.silu_fwd(x[None], y[None])
    kernels.silu_bwd(np.ones_like(x)[None], x[None], dz[None])
    x64 = x.astype(np.float64)
    ref = naive.silu(x64)
    big = np.abs(ref) > 1e-30
    assert np.max(np.abs(y - ref)[big] / np.abs(ref[big])) < 2e-6
    assert np.max(np.abs(y - ref)[~big]) < 1e-30
    assert np.max(np.abs(dz - naive.silu_grad(x64))) < 2e-6
    special = np.array([[np.nan, np.inf, -np.inf]], np.float32)
    out = np.empty_like(special)
    kernels.silu_fwd(special, out)
    assert np.isnan(out[0, 0]) and out[0, 1] == np.inf and not np.isfinite(out[0, 2])   # NaN/Inf never vanish


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("h,w", [(1, 1), (2, 5), (4, 4), (7, 3)])
def test_im2col_same_matches_reference_on_sample_blocks(k, h, w):
    rng = np.random.default_rng(k * 100 + h * 10 + w)
    x = rng.standard_normal((2, 5, h, w)).astype(np.float32)
    block = x[:, 1:4]                       # a block of samples, as Conv2d unfolds them
    cols = np.full((2 * k * k, 3 * h * w), np.nan, np.float32)
    kernels.im2col_same(x.reshape(2, 5, h * w), 1, 4, h, w, k, k // 2, cols)
    np.testing.assert_array_equal(cols, naive.im2col(np.ascontiguousarray(block), k, 1, k // 2, 1, h, w))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.sampled_from(DTYPES),
       st.integers(0, 2**31))
def test_subpixel_scatter_and_gather_match_reference(c, n, h, w, dtype, seed):
    rng = np.random.default_rng(seed)
    zg = rng.standard_normal((4, c, n, (h + 1) * (w + 1))).astype(dtype)
    out = np.full((c, n * 4 * h * w), np.nan, dtype=dtype)
    kernels.subpixel_scatter(zg, h, w, out)
    np.testing.assert_array_equal(out, naive.subpixel_scatter(zg, h, w))
    dy = rng.standard_normal((c, n + 2, 4 * h * w)).astype(dtype)    # samples 1..n of a larger batch
    dzg = np.full(zg.shape, np.nan, dtype=dtype)
    kernels.subpixel_gather(dy, 1, n + 1, h, w, dzg)
    np.testing.assert_array_equal(dzg, naive.subpixel_gather(dy[:, 1:n + 1].reshape(c, n, 2 * h, 2 * w), h, w))
    # adjoint identity <scatter(zg), dy> = <zg, gather(dy)>, independent of the references
    lhs = np.sum(out.astype(np.float64) * dy[:, 1:n + 1].reshape(c, -1))
    np.testing.assert_allclose(lhs, np.sum(zg.astype(np.float64) * dzg), rtol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.sampled_from(DTYPES),
       st.integers(0, 2**31))
def test_winograd_transforms_match_reference_and_make_a_convolution(c, n, th, tw, dtype, seed):
    h, w = 2 * th, 2 * tw
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, n + 2, h, w)).astype(dtype)
    v = np.full((16, c, n * th * tw), np.nan, dtype=dtype)
    kernels.winograd_tiles(x, 1, n + 1, v)                       # samples 1..n of a larger batch
    np.testing.assert_allclose(v, naive.winograd_tiles(x[:, 1:n + 1]), **TOL[dtype])
    m = rng.standard_normal(v.shape).astype(dtype)
    out = np.full((c, n * h * w), np.nan, dtype=dtype)
    kernels.winograd_untile(m, h, w, out)
    np.testing.assert_allclose(out, naive.winograd_untile(m, h, w), **TOL[dtype])
    # the weight gradient's tiles: the adjoint of untile, <untile(m), dy> = <m, untile_adjoint(dy)>
    dy = rng.standard_normal((c, n + 2, h, w)).astype(dtype)
    dm = np.full(m.shape, np.nan, dtype=dtype)
    kernels.winograd_untile_adjoint(dy, 1, n + 1, dm)
    lhs = np.sum(out.astype(np.float64) * dy[:, 1:n + 1].reshape(c, -1))
    np.testing.assert_allclose(lhs, np.sum(m.astype(np.float64) * dm), rtol=1e-4 if dtype == np.float32 else 1e-10)
    # the two transforms around the transformed kernel (G g Gᵀ) are the 3×3 "same" convolution
    weight = rng.standard_normal((2, c, 3, 3))
    g = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
    u = np.einsum("ai,ocij,bj->aboc", g, weight, g).reshape(16, 2, c)
    conv = np.empty((2, n * h * w), dtype=dtype)
    kernels.winograd_untile(np.matmul(u.astype(dtype), v), h, w, conv)
    ref = naive.conv2d(x[:, 1:n + 1].astype(np.float64), weight, np.zeros(2), 1, 1, 1)
    np.testing.assert_allclose(conv.reshape(ref.shape), ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)
