"""Numba kernels of the network layers: im2col / col2im, the Winograd F(2×2, 3×3) tile transforms, fused group
norm (+ scale-shift + SiLU), fused bias + SiLU, AdamW update.

Image tensors here use the *channel-major* layout ``(C, N, H, W)`` (written CNHW): a convolution is then one GEMM
``W (Cout, Cin*k*k) @ cols (Cin*k*k, N*Ho*Wo)`` whose result is already CNHW. Every kernel writes into an output
array given by the caller (preallocated buffers), works for float32 and float64, and has a plain-NumPy reference in
``tests/naive.py``.

Precision: float64 arrays get exact libm arithmetic. float32 arrays stay in float32 (group-norm statistics and
reductions are accumulated in float64) and the logistic function uses a vectorisable Cephes-style ``expf``
(relative error < 1e-6), because Numba has no vector ``exp`` without Intel SVML.
"""
import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from .._numba import FASTMATH, jit



@intrinsic
def _int32_bits_as_float32(typingctx, n):
    """Reinterpret the bits of an int32 as a float32 (used to build 2**k in the exponent field)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)) (scalar; float32 inputs get the vectorisable float32 version in kernels)."""
    return 1.0 / (1.0 + math.exp(-x))


def silu_grad(x):
    """d/dx [x * sigmoid(x)] = s * (1 + x * (1 - s)), s = sigmoid(x) (scalar)."""
    s = sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def cast_like(value, like):
    """``value`` converted to the type of the scalar ``like`` (inside kernels: keeps float32 math in float32)."""
    return type(like)(value)


def _sigmoid_f32(x):
    f = np.float32
    a = min(max(-x, x), f(87.0))
    # e = exp(-a) by range reduction e = 2**k * exp(r), |r| <= ln2 (Cephes expf polynomial)
    k = np.int32(-a * f(1.44269504088896341) - f(0.5))
    fk = f(k)
    r = -a - fk * f(0.693359375) + fk * f(2.12194440e-4)
    p = f(1.9875691500e-4) * r + f(1.3981999507e-3)
    p = p * r + f(8.3334519073e-3)
    p = p * r + f(4.1665795894e-2)
    p = p * r + f(1.6666665459e-1)
    p = p * r + f(5.0000001201e-1)
    e = (p * r * r + r + f(1.0)) * _int32_bits_as_float32((k + np.int32(127)) << np.int32(23))
    s = f(1.0) / (f(1.0) + e)
    return s if x >= f(0.0) else e * s


@overload(sigmoid, jit_options=dict(fastmath=FASTMATH))
def _sigmoid_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return _sigmoid_f32
    return sigmoid


@overload(silu_grad, jit_options=dict(fastmath=FASTMATH))
def _silu_grad_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def impl(x):
            s = sigmoid(x)
            return s * (np.float32(1.0) + x * (np.float32(1.0) - s))
        return impl
    return silu_grad


@overload(cast_like)
def _cast_like_overload(value, like):
    scalar_type = as_dtype(like).type

    def impl(value, like):
        return scalar_type(value)
    return impl


@jit(fastmath=FASTMATH)
def _valid_range(j, stride, pad, size_in, size_out):
    """Output positions o in [lo, hi) whose input position o*stride - pad + j lies in [0, size_in)."""
    lo = max(0, (pad - j + stride - 1) // stride)
    hi = min(size_out, (size_in - 1 + pad - j) // stride + 1)
    return lo, max(lo, hi)


@jit(parallel=True, fastmath=FASTMATH)
def im2col(x, k, stride, pad, up, ho, wo, cols):
    """Unfold ``x`` (C, N, H, W) into ``cols`` (C*k*k, N*ho*wo) for a k×k convolution.

    The convolution sees the input nearest-upsampled by ``up`` (1 or 2), zero-padded by ``pad`` and sampled with
    ``stride``: row ``(c*k + i)*k + j``, column ``(n*ho + oy)*wo + ox`` holds
    ``xu[c, n, oy*stride - pad + i, ox*stride - pad + j]`` (0 outside), with ``xu[.., y, x] = x[.., y//up, x//up]``.
    """
    c_in, n_b, h, w = x.shape
    hu = h * up
    wu = w * up
    for r in prange(c_in * k * k):
        c = r // (k * k)
        i = (r // k) % k
        j = r % k
        oy0, oy1 = _valid_range(i, stride, pad, hu, ho)
        ox0, ox1 = _valid_range(j, stride, pad, wu, wo)
        off = j - pad
        for n in range(n_b):
            base = n * ho * wo
            for oy in range(ho):
                row = base + oy * wo
                if oy < oy0 or oy >= oy1:
                    for ox in range(wo):
                        cols[r, row + ox] = 0.0
                    continue
                sy = (oy * stride - pad + i) // up
                for ox in range(ox0):
                    cols[r, row + ox] = 0.0
                for ox in range(ox1, wo):
                    cols[r, row + ox] = 0.0
                if up == 2:
                    for ox in range(ox0, ox1):
                        cols[r, row + ox] = x[c, n, sy, (ox * stride + off) >> 1]
                elif stride == 1:
                    for ox in range(ox0, ox1):
                        cols[r, row + ox] = x[c, n, sy, ox + off]
                else:
                    for ox in range(ox0, ox1):
                        cols[r, row + ox] = x[c, n, sy, ox * stride + off]


@jit(parallel=True, fastmath=FASTMATH)
def im2col_same(x, n0, n1, h, w, k, pad, cols):
    """:func:`im2col` of samples n0..n1-1 for stride 1, no upsampling and "same" output size (2*pad = k - 1).

    ``x`` is the whole C-contiguous batch viewed as (C, N, H*W) (a contiguous array lets Numba vectorise the
    copies); ``cols`` is (C*k*k, (n1-n0)*H*W). Each row of ``cols`` is, per sample, the flattened image shifted by
    (i - pad)*W + (j - pad) (one long slice copy) with the wrapped-around border columns and rows set to 0.
    """
    c_in, _, hw = x.shape
    n_b = n1 - n0
    for r in prange(c_in * k * k):
        c = r // (k * k)
        i = (r // k) % k
        j = r % k
        dj = j - pad
        shift = (i - pad) * w + dj
        q0 = min(hw, max(0, -shift))          # clamped: a kernel wider than the image shifts everything out
        q1 = max(q0, min(hw, hw - shift))
        edge = min(w, abs(dj))
        row = cols[r]
        for n in range(n_b):
            dst = row[n * hw:(n + 1) * hw]
            dst[:q0] = 0.0
            dst[q1:] = 0.0
            dst[q0:q1] = x[c, n0 + n, q0 + shift:q1 + shift]
            if dj < 0:
                for oy in range(h):
                    dst[oy * w:oy * w + edge] = 0.0
            elif dj > 0:
                for oy in range(h):
                    dst[(oy + 1) * w - edge:(oy + 1) * w] = 0.0


@jit(inline="always", fastmath=FASTMATH)
def _store_bt_row(v, k, c, q, d0, d1, d2, d3):
    """v[k:k+4, c, q] = the row (d0, d1, d2, d3) times B: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    v[k, c, q] = d0 - d2
    v[k + 1, c, q] = d1 + d2
    v[k + 2, c, q] = d2 - d1
    v[k + 3, c, q] = d1 - d3


@jit(inline="always", fastmath=FASTMATH)
def _store_a_row(dm, k, c, q, p0, p1):
    """dm[k:k+4, c, q] = the pair (p0, p1) times A: (p0, p0 + p1, p0 - p1, -p1)."""
    dm[k, c, q] = p0
    dm[k + 1, c, q] = p0 + p1
    dm[k + 2, c, q] = p0 - p1
    dm[k + 3, c, q] = -p1


@jit(parallel=True, fastmath=FASTMATH)
def winograd_tiles(x, n0, n1, v):
    """Input transform of the Winograd F(2×2, 3×3) convolution (3×3 kernel, padding 1, stride 1) of samples n0..n1-1.

    ``x`` (C, N, H, W) with H and W even; ``v`` (16, C, T), T = (n1-n0) * H/2 * W/2 tiles in (sample, tile row, tile
    column) order: ``v[4*i + j, c, t] = (Bᵀ d B)[i, j]`` for the 4×4 patch d of the zero-padded image whose centre
    2×2 block is tile t's output, Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
    """
    c_in, _, h, w = x.shape
    th = h // 2
    tw = w // 2
    for c in prange(c_in):
        pad = np.zeros((h + 2, w + 2), dtype=x.dtype)
        for n in range(n1 - n0):
            pad[1:h + 1, 1:w + 1] = x[c, n0 + n]
            for ty in range(th):
                r0 = pad[2 * ty]
                r1 = pad[2 * ty + 1]
                r2 = pad[2 * ty + 2]
                r3 = pad[2 * ty + 3]
                base = (n * th + ty) * tw
                for tx in range(tw):
                    j = 2 * tx
                    q = base + tx
                    a0, a1, a2, a3 = r0[j] - r2[j], r0[j + 1] - r2[j + 1], r0[j + 2] - r2[j + 2], r0[j + 3] - r2[j + 3]
                    b0, b1, b2, b3 = r1[j] + r2[j], r1[j + 1] + r2[j + 1], r1[j + 2] + r2[j + 2], r1[j + 3] + r2[j + 3]
                    e0, e1, e2, e3 = r2[j] - r1[j], r2[j + 1] - r1[j + 1], r2[j + 2] - r1[j + 2], r2[j + 3] - r1[j + 3]
                    f0, f1, f2, f3 = r1[j] - r3[j], r1[j + 1] - r3[j + 1], r1[j + 2] - r3[j + 2], r1[j + 3] - r3[j + 3]
                    _store_bt_row(v, 0, c, q, a0, a1, a2, a3)
                    _store_bt_row(v, 4, c, q, b0, b1, b2, b3)
                    _store_bt_row(v, 8, c, q, e0, e1, e2, e3)
                    _store_bt_row(v, 12, c, q, f0, f1, f2, f3)


@jit(parallel=True, fastmath=FASTMATH)
def winograd_untile(m, h, w, out):
    """Output transform of the Winograd F(2×2, 3×3) convolution: ``m`` (16, C, T), the products of the transformed
    kernels and tiles (:func:`winograd_tiles`), to ``out`` (C, n*H*W) with ``out``'s 2×2 block of tile t =
    Aᵀ M_t A, Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]."""
    _, c_out, t = m.shape
    th = h // 2
    tw = w // 2
    for c in prange(c_out):
        for tile_row in range(t // tw):
            n = tile_row // th
            ty = tile_row % th
            o0 = n * h * w + 2 * ty * w
            o1 = o0 + w
            base = tile_row * tw
            for tx in range(tw):
                q = base + tx
                s00 = m[0, c, q] + m[4, c, q] + m[8, c, q]
                s01 = m[1, c, q] + m[5, c, q] + m[9, c, q]
                s02 = m[2, c, q] + m[6, c, q] + m[10, c, q]
                s03 = m[3, c, q] + m[7, c, q] + m[11, c, q]
                s10 = m[4, c, q] - m[8, c, q] - m[12, c, q]
                s11 = m[5, c, q] - m[9, c, q] - m[13, c, q]
                s12 = m[6, c, q] - m[10, c, q] - m[14, c, q]
                s13 = m[7, c, q] - m[11, c, q] - m[15, c, q]
                out[c, o0 + 2 * tx] = s00 + s01 + s02
                out[c, o0 + 2 * tx + 1] = s01 - s02 - s03
                out[c, o1 + 2 * tx] = s10 + s11 + s12
                out[c, o1 + 2 * tx + 1] = s11 - s12 - s13


@jit(parallel=True, fastmath=FASTMATH)
def winograd_untile_adjoint(dy, n0, n1, dm):
    """Adjoint of :func:`winograd_untile` for samples n0..n1-1 of ``dy`` (C, N, H, W), H and W even: ``dm`` (16, C,
    T) with ``dm[4*i + j, c, t] = (A dY_t Aᵀ)[i, j]`` for tile t's 2×2 block dY_t (the weight gradient's tiles)."""
    c_out, _, h, w = dy.shape
    th = h // 2
    tw = w // 2
    for c in prange(c_out):
        for n in range(n1 - n0):
            img = dy[c, n0 + n]
            for ty in range(th):
                r0 = img[2 * ty]
                r1 = img[2 * ty + 1]
                base = (n * th + ty) * tw
                for tx in range(tw):
                    j = 2 * tx
                    q = base + tx
                    y00, y01, y10, y11 = r0[j], r0[j + 1], r1[j], r1[j + 1]
                    # rows i of A (1, 0), (1, 1), (1, -1), (0, -1) on the block's rows, then the same on its columns
                    p00, p01 = y00, y01
                    p10, p11 = y00 + y10, y01 + y11
                    p20, p21 = y00 - y10, y01 - y11
                    p30, p31 = -y10, -y11
                    _store_a_row(dm, 0, c, q, p00, p01)
                    _store_a_row(dm, 4, c, q, p10, p11)
                    _store_a_row(dm, 8, c, q, p20, p21)
                    _store_a_row(dm, 12, c, q, p30, p31)


@jit(parallel=True, fastmath=FASTMATH)
def subpixel_scatter(zg, h, w, out):
    """Interleave the four phase outputs of an upsample-by-2 convolution into the full-size image.

    ``zg`` (4, C, n, (h+1)*(w+1)): phase p = 2*py + px computed on the (h+1)×(w+1) grid of 2×2 windows of the
    h×w input; ``out`` (C, n*2h*2w) gets ``out[c, n, 2a+py, 2b+px] = zg[p, c, n, a+py, b+px]``.
    """
    _, c_out, n_b, _ = zg.shape
    w1 = w + 1
    w2 = 2 * w
    for c in prange(c_out):
        for n in range(n_b):
            base = n * 4 * h * w
            for p in range(4):
                py = p >> 1
                px = p & 1
                src = zg[p, c, n]
                for a in range(h):
                    s0 = (a + py) * w1 + px
                    d0 = base + (2 * a + py) * w2 + px
                    for b in range(w):
                        out[c, d0 + 2 * b] = src[s0 + b]


@jit(parallel=True, fastmath=FASTMATH)
def subpixel_gather(dy, n0, n1, h, w, dzg):
    """Adjoint of :func:`subpixel_scatter` for samples n0..n1-1 of ``dy`` (C, N, 2h*2w), C-contiguous.

    ``dzg`` (4, C, n1-n0, (h+1)*(w+1)) is overwritten: the grid positions no output reads are 0.
    """
    c_out = dy.shape[0]
    w1 = w + 1
    w2 = 2 * w
    for c in prange(c_out):
        for n in range(n1 - n0):
            src = dy[c, n0 + n]
            for p in range(4):
                py = p >> 1
                px = p & 1
                dst = dzg[p, c, n]
                dst[:] = 0.0
                for a in range(h):
                    d0 = (a + py) * w1 + px
                    s0 = (2 * a + py) * w2 + px
                    for b in range(w):
                        dst[d0 + b] = src[s0 + 2 * b]


@jit(parallel=True, fastmath=FASTMATH)
def col2im(cols, k, stride, pad, up, ho, wo, dx):
    """Adjoint of :func:`im2col`: sum ``cols`` (C*k*k, N*ho*wo) back into ``dx`` (C, N, H, W) (overwritten)."""
    c_in, n_b, h, w = dx.shape
    hu = h * up
    wu = w * up
    for c in prange(c_in):
        dx[c] = 0.0
        for i in range(k):
            oy0, oy1 = _valid_range(i, stride, pad, hu, ho)
            for j in range(k):
                ox0, ox1 = _valid_range(j, stride, pad, wu, wo)
                off = j - pad
                r = (c * k + i) * k + j
                for n in range(n_b):
                    base = n * ho * wo
                    for oy in range(oy0, oy1):
                        sy = (oy * stride - pad + i) // up
                        row = base + oy * wo
                        if up == 2:
                            for ox in range(ox0, ox1):
                                dx[c, n, sy, (ox * stride + off) >> 1] += cols[r, row + ox]
                        elif stride == 1:
                            for ox in range(ox0, ox1):
                                dx[c, n, sy, ox + off] += cols[r, row + ox]
                        else:
                            for ox in range(ox0, ox1):
                                dx[c, n, sy, ox * stride + off] += cols[r, row + ox]


@jit(parallel=True, fastmath=FASTMATH)
def group_norm_fwd(x, groups, gamma, beta, scale, shift, act, eps, y, mean, rstd):
    """Group norm over (channels of a group, spatial) per sample, then affine, scale-shift and optional SiLU.

    x, y: (C, N, S) with S = H*W; gamma, beta: (C,); scale, shift: (C, N) or shape (0, 0) for none;
    y = f((gamma[c]*xhat + beta[c]) * (1 + scale[c, n]) + shift[c, n]), f = SiLU if ``act`` else identity.
    Writes the per-(sample, group) statistics ``mean``, ``rstd`` = 1/sqrt(var + eps) (N, groups) (float64).
    """
    c_all, n_b, s_len = x.shape
    cg = c_all // groups
    mod = scale.shape[0] > 0
    count = cg * s_len
    for p in prange(n_b * groups):
        n = p // groups
        g = p % groups
        acc = 0.0
        for c in range(g * cg, (g + 1) * cg):
            for s in range(s_len):
                acc += x[c, n, s]
        mu = acc / count
        acc2 = 0.0
        for c in range(g * cg, (g + 1) * cg):
            for s in range(s_len):
                d = x[c, n, s] - mu
                acc2 += d * d
        r = 1.0 / math.sqrt(acc2 / count + eps)
        mean[n, g] = mu
        rstd[n, g] = r
        for c in range(g * cg, (g + 1) * cg):
            a_mul = gamma[c] * r
            a_add = beta[c] - mu * a_mul
            if mod:
                a_mul = a_mul * (1.0 + scale[c, n])
                a_add = a_add * (1.0 + scale[c, n]) + shift[c, n]
            am = cast_like(a_mul, x[c, n, 0])
            aa = cast_like(a_add, x[c, n, 0])
            if act:
                for s in range(s_len):
                    m = x[c, n, s] * am + aa
                    y[c, n, s] = m * sigmoid(m)
            else:
                for s in range(s_len):
                    y[c, n, s] = x[c, n, s] * am + aa


@jit(parallel=True, fastmath=FASTMATH)
def group_norm_bwd(dy, x, groups, gamma, beta, scale, shift, act, mean, rstd,
                   dx, dgamma_part, dbeta_part, dscale, dshift):
    """Backward of :func:`group_norm_fwd` (same arguments), everything overwritten.

    dx: (C, N, S); dgamma_part, dbeta_part: (N, C) per-sample partial sums (sum over axis 0 gives dgamma, dbeta);
    dscale, dshift: (C, N), or shape (0, 0) when there is no scale-shift.
    """
    c_all, n_b, s_len = x.shape
    cg = c_all // groups
    mod = scale.shape[0] > 0
    count = cg * s_len
    for p in prange(n_b * groups):
        n = p // groups
        g = p % groups
        like = x[g * cg, n, 0]
        mu = cast_like(mean[n, g], like)
        r = cast_like(rstd[n, g], like)
        sum_d = 0.0
        sum_dx = 0.0
        for c in range(g * cg, (g + 1) * cg):
            sc = cast_like(1.0, like)
            sh = cast_like(0.0, like)
            if mod:
                sc = sc + scale[c, n]
                sh = shift[c, n]
            gc = gamma[c]
            bc = beta[c]
            dg = 0.0
            db = 0.0
            dsc = 0.0
            dsh = 0.0
            for s in range(s_len):
                xh = (x[c, n, s] - mu) * r
                a = gc * xh + bc
                dm = dy[c, n, s]
                if act:
                    dm = dm * silu_grad(a * sc + sh)
                dsh += dm
                dsc += dm * a
                da = dm * sc
                dg += da * xh
                db += da
                dxh = da * gc
                sum_d += dxh
                sum_dx += dxh * xh
                dx[c, n, s] = dxh
            dgamma_part[n, c] = dg
            dbeta_part[n, c] = db
            if mod:
                dscale[c, n] = dsc
                dshift[c, n] = dsh
        m1 = cast_like(sum_d / count, like)
        m2 = cast_like(sum_dx / count, like)
        for c in range(g * cg, (g + 1) * cg):
            for s in range(s_len):
                xh = (x[c, n, s] - mu) * r
                dx[c, n, s] = r * (dx[c, n, s] - m1 - xh * m2)


@jit(parallel=True, fastmath=FASTMATH)
def bias_act_fwd(z, bias, act, y):
    """In place ``z += bias`` (bias broadcast along the last axis of the 2-D ``z``), then y = SiLU(z) if ``act`` else z.

    ``y`` may be ``z`` itself when ``act`` is False.
    """
    rows, cols = z.shape
    for i in prange(rows):
        if act:
            for j in range(cols):
                v = z[i, j] + bias[j]
                z[i, j] = v
                y[i, j] = v * sigmoid(v)
        else:
            for j in range(cols):
                v = z[i, j] + bias[j]
                z[i, j] = v
                y[i, j] = v


@jit(parallel=True, fastmath=FASTMATH)
def bias_act_rows(src, bias, act, z, y):
    """z = src + bias[:, None] (bias along axis 0, e.g. (Cout, N*H*W)); y = SiLU(z) if ``act`` else z.

    ``z`` may be ``src`` (in place) and ``y`` may be ``z`` when ``act`` is False; all 2-D of one shape.
    """
    rows, cols = src.shape
    for i in prange(rows):
        b = bias[i]
        if act:
            for j in range(cols):
                v = src[i, j] + b
                z[i, j] = v
                y[i, j] = v * sigmoid(v)
        else:
            for j in range(cols):
                z[i, j] = src[i, j] + b


@jit(parallel=True, fastmath=FASTMATH)
def silu_fwd(x, y):
    """y = SiLU(x) = x * sigmoid(x) elementwise on 2-D arrays."""
    rows, cols = x.shape
    for i in prange(rows):
        for j in range(cols):
            v = x[i, j]
            y[i, j] = v * sigmoid(v)


@jit(parallel=True, fastmath=FASTMATH)
def silu_bwd(dy, z, dz):
    """dz = dy * SiLU'(z) elementwise on 2-D arrays, SiLU'(z) = s(z) * (1 + z * (1 - s(z))), s = logistic."""
    rows, cols = z.shape
    for i in prange(rows):
        for j in range(cols):
            dz[i, j] = dy[i, j] * silu_grad(z[i, j])


def as2d(a):
    """View of a C-contiguous array as 2-D (first axis, rest) for the row-parallel kernels (1-D: one row)."""
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(a.shape[0], -1)



@jit(parallel=True, fastmath=FASTMATH)
def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    """One AdamW step in place on flat arrays p, g, m, v (decoupled weight decay, as torch.optim.AdamW).

    p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= lr*(m/bc1)/(sqrt(v/bc2) + eps),
    bc1 = 1 - b1**step, bc2 = 1 - b2**step.
    """
    decay = 1.0 - lr * weight_decay
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - lr * (mi / bc1) / (math.sqrt(vi / bc2) + eps)
