"""Layers with hand-written forward and backward passes (numpy-ml style).

``forward(..., train=True)`` caches what ``backward`` needs and writes into buffers the layer owns (reused from one
step to the next while the batch shape stays the same); ``train=False`` caches nothing and returns fresh arrays.
``backward(dy)`` overwrites the layer's gradients (same names as its parameters) and returns dL/dx.

Layouts: :class:`Linear` takes (N, F). The image layers (:class:`Conv2d`, :class:`GroupNorm`, :class:`ResBlock`,
:class:`GlobalAvgPool`) take the channel-major layout (C, N, H, W), in which a convolution over a block of samples
is one GEMM whose result is already in that layout; models convert from and to the public (N, C, H, W) layout once.

Parameters are float32 by default; :meth:`Module.astype` converts a whole module (float64 for gradient checks).
Arrays given to layers must be C-contiguous and of the module's dtype (the models take care of that).
"""
import copy
import math
import threading

import numpy as np

from ..errors import InputError
from . import kernels

_NO_MOD = {}


def _no_mod(dtype):
    """An empty (0, 0) array meaning "no scale-shift" for the group norm kernels."""
    key = np.dtype(dtype)
    if key not in _NO_MOD:
        _NO_MOD[key] = np.empty((0, 0), dtype=key)
    return _NO_MOD[key]


class Module:
    """Parameters, gradients, child modules and reusable buffers.

    ``parameters()`` / ``gradients()`` return ordered dicts of dotted names (``"down.0.0.conv1.weight"``) to the
    live arrays: optimizers update parameters in place and ``backward`` overwrites gradients in place.
    What code outside a layer's class may use of it: :meth:`param` (one own parameter), :meth:`zero_grad` and
    :meth:`cached_input` (what the last training forward saw), besides the dicts above.
    """

    def __init__(self):
        self._params = {}
        self._grads = {}
        self._children = {}
        self._bufs = {}

    def add_param(self, name, value):
        """Register a parameter (stored float32, C-contiguous) and its zero gradient; returns the array."""
        arr = np.array(value, dtype=np.float32, order="C")
        self._params[name] = arr
        self._grads[name] = np.zeros_like(arr)
        return arr

    def param(self, name):
        """This module's own live parameter ``name`` (as given to :meth:`add_param`, e.g. ``"weight"``; children's
        are not searched); InputError naming it when there is none."""
        if name not in self._params:
            raise InputError(f"{type(self).__name__} has no parameter {name!r} "
                             f"(it has: {', '.join(self._params) or 'none'})")
        return self._params[name]

    def zero_grad(self):
        """Set the gradients of this module and all its descendants to 0, in place."""
        for _, mod in self.modules():
            for g in mod._grads.values():
                g[...] = 0

    def replica(self):
        """A module of the same architecture that shares this one's parameter arrays (an update of either is seen by
        both) and has its own gradients, caches and buffers: two threads can then each run ``forward``/``backward``
        on a part of one batch (:func:`fmq_np.flow.fit` sums the parts' gradients). Call it before training: caches
        are copied with the rest."""
        shared = {id(v): v for _, mod in self.modules() for v in mod._params.values()}
        twin = copy.deepcopy(self, shared)
        for _, mod in twin.modules():
            mod._bufs = {}
        return twin

    def cached_input(self):
        """The input array of this layer's last ``forward(train=True)``, in the layer's own layout (Linear (N, in),
        Conv2d (C_in, N, H, W)); None before one, and for modules that keep no input (all but the weight layers)."""
        return None

    def add_child(self, name, module):
        """Register a child module under ``name``; returns it."""
        self._children[name] = module
        return module

    def modules(self, prefix=""):
        """Yield ``(dotted prefix, module)`` for this module and all descendants, depth first in registration order."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.modules(f"{prefix}{name}.")

    def parameters(self):
        """Ordered dict ``{dotted name: live parameter array}``."""
        return {pre + k: v for pre, mod in self.modules() for k, v in mod._params.items()}

    def gradients(self):
        """Ordered dict ``{dotted name: live gradient array}`` with the keys and shapes of :meth:`parameters`."""
        return {pre + k: v for pre, mod in self.modules() for k, v in mod._grads.items()}

    def weight_inputs(self):
        """Yield ``(dotted weight name, blocks)`` for every :class:`Linear` / :class:`Conv2d` of this module whose last
        ``forward(train=True)`` cached its input (the hook calibration uses to see what each weight multiplies).

        ``blocks()`` iterates float arrays ``(rows, fan_in)`` in the module's dtype whose rows, stacked, form the
        matrix X with ``z = X @ weight.reshape(out, fan_in).T + bias``: a Linear's input (N, in_features) in one
        block; a convolution's im2col rows (one per sample and output pixel, fan_in = C_in·k·k in the weight's
        (c, i, j) order, zero padding and upsampling included), a block of samples at a time. A block may be a view
        of a scratch buffer: use it before asking for the next one. A layer called twice in one forward shows only
        its last input.
        """
        for pre, mod in self.modules():
            blocks = mod._input_blocks()
            if blocks is not None:
                yield pre + "weight", blocks

    def _input_blocks(self):
        """``weight_inputs``' block iterator factory for this layer, None when it has none (or no cached input)."""
        return None

    @property
    def dtype(self):
        """Floating dtype of the parameters (float32 unless :meth:`astype` changed it)."""
        for _, mod in self.modules():
            for v in mod._params.values():
                return v.dtype
        return getattr(self, "_dtype", np.dtype(np.float32))

    def astype(self, dtype):
        """Convert all parameters and gradients to ``dtype`` (float32 or float64) in place; returns ``self``.

        The parameter arrays are replaced: fetch ``parameters()`` again (and rebuild optimizers) afterwards.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise InputError(f"dtype must be float32 or float64, got {dtype}")
        for _, mod in self.modules():
            mod._dtype = dtype
            for k in mod._params:
                mod._params[k] = mod._params[k].astype(dtype)
                mod._grads[k] = mod._grads[k].astype(dtype)
            mod._bufs = {}
        return self

    def load_parameters(self, params):
        """Copy ``params`` (dict name -> array) into the live parameters.

        Strict: exactly the same names, shapes and dtypes, finite values; else :class:`InputError` naming the key.
        """
        own = self.parameters()
        if not hasattr(params, "keys"):
            raise InputError(f"parameters must be a dict of arrays, got {type(params).__name__}")
        for key in params:
            if key not in own:
                raise InputError(f"unexpected parameter {key!r} for {type(self).__name__}")
        for key, dst in own.items():
            if key not in params:
                raise InputError(f"missing parameter {key!r} for {type(self).__name__}")
            src = params[key]
            if not isinstance(src, np.ndarray):
                raise InputError(f"parameter {key!r} must be a numpy array, got {type(src).__name__}")
            if src.shape != dst.shape:
                raise InputError(f"parameter {key!r} has shape {src.shape}, expected {dst.shape}")
            if src.dtype != dst.dtype:
                raise InputError(f"parameter {key!r} has dtype {src.dtype}, expected {dst.dtype}")
            if not np.all(np.isfinite(src)):
                raise InputError(f"parameter {key!r} contains NaN or Inf")
        for key, dst in own.items():
            np.copyto(dst, params[key])

    def _buffer(self, name, shape, train, dtype=None):
        """An uninitialised array (module's dtype by default): reused across training steps, fresh when not training."""
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if not train:
            return np.empty(shape, dtype=dtype)
        buf = self._bufs.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            self._bufs[name] = buf
        return buf


def _uniform(rng, bound, shape):
    return rng.uniform(-bound, bound, size=shape)


class Linear(Module):
    """y = act(x @ weight.T + bias); x (N, in_features) -> y (N, out_features); act None or "silu" (fused).

    weight (out_features, in_features), bias (out_features,), both U(-1/sqrt(in), 1/sqrt(in)) at init.
    """

    def __init__(self, in_features, out_features, act=None, rng=None):
        super().__init__()
        if act not in (None, "silu"):
            raise InputError(f"act must be None or 'silu', got {act!r}")
        rng = np.random.default_rng(0) if rng is None else rng
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight", _uniform(rng, bound, (out_features, in_features)))
        self.add_param("bias", _uniform(rng, bound, (out_features,)))
        self.act = act
        self._cache = None

    def forward(self, x, train=True):
        w, b = self._params["weight"], self._params["bias"]
        z = self._buffer("z", (x.shape[0], w.shape[0]), train)
        np.dot(x, w.T, out=z)
        y = self._buffer("y", z.shape, train) if self.act else z
        kernels.bias_act_fwd(z, b, self.act is not None, y)
        if train:
            self._cache = (x, z)
        return y

    def cached_input(self):
        return None if self._cache is None else self._cache[0]

    def _input_blocks(self):
        x = self.cached_input()
        return None if x is None else lambda: iter((x,))

    def backward(self, dy, need_dx=True):
        x, z = self._cache
        w = self._params["weight"]
        if self.act:
            dz = self._buffer("dz", z.shape, True)
            kernels.silu_bwd(dy, z, dz)
        else:
            dz = dy
        np.dot(dz.T, x, out=self._grads["weight"])
        np.sum(dz, axis=0, out=self._grads["bias"])
        if not need_dx:
            return None
        dx = self._buffer("dx", x.shape, True)
        np.dot(dz, w, out=dx)
        return dx


class SiLU(Module):
    """y = x * sigmoid(x), any shape (C-contiguous)."""

    def __init__(self):
        super().__init__()
        self._x = None

    def forward(self, x, train=True):
        y = self._buffer("y", x.shape, train)
        kernels.silu_fwd(kernels.as2d(x), kernels.as2d(y))
        if train:
            self._x = x
        return y

    def backward(self, dy):
        dx = self._buffer("dx", dy.shape, True)
        kernels.silu_bwd(kernels.as2d(dy), kernels.as2d(self._x), kernels.as2d(dx))
        return dx


class SELU(Module):
    """y = scale * (x if x > 0 else alpha * (exp(x) - 1)), torch.nn.SELU's constants; any shape, in NumPy (used by
    the torchcfm MLP layout of :class:`~fmq_np.nn.MLPVelocity`, whose layers are small)."""

    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946

    def __init__(self):
        super().__init__()
        self._x = None

    def forward(self, x, train=True):
        neg = np.expm1(np.minimum(x, 0))
        y = np.where(x > 0, x, neg * x.dtype.type(self.ALPHA)) * x.dtype.type(self.SCALE)
        if train:
            self._x = x
        return y.astype(x.dtype, copy=False)

    def backward(self, dy):
        x = self._x
        slope = np.where(x > 0, 1, np.exp(np.minimum(x, 0)) * x.dtype.type(self.ALPHA)) * x.dtype.type(self.SCALE)
        return (dy * slope).astype(x.dtype, copy=False)


#: per thread (two threads running models at once, e.g. a Dask worker's, must not share them): tag -> buffer
_SCRATCH = threading.local()

#: Convolutions unfold (im2col) this many input values at a time (a block of samples), so that the unfolded
#: matrix stays in cache; backward unfolds again instead of keeping the (9x larger than the input) matrix.
#: 2 MB (a core's L2 on current Xeons): on one thread the width-16 U-Net trains 12 % and samples 31 % faster than
#: with 8 MB blocks, width 32 and two threads unchanged within noise (benchmarks/README.md).
CHUNK_FLOATS = 1 << 19


def _scratch(tag, shape, dtype):
    """A transient buffer (contents undefined) for data that lives only inside one layer call, shared by the
    layers of this thread: a view of one flat array per (tag, dtype), grown to the largest size asked for, so that
    the many block shapes of a network (each layer's chunks, their remainders) reuse the same memory."""
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    key = (tag, np.dtype(dtype))
    size = math.prod(shape)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


#: Nearest-upsampling by 2 followed by a 3×3 convolution (padding 1) equals four 2×2 convolutions of the input,
#: one per output phase (py, px): tap t of phase py's 2×2 window sums the 3×3 taps i with _PHASE_TAPS[py, t, i] = 1.
#: Computed that way the layer needs 16 instead of 36 multiply-adds per input pixel and channel pair.
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]])
#: (9, 16) map from a 3×3 kernel (taps i, j) to the four phases' 2×2 kernels (columns ordered py, px, t, u).
_PHASE_MAP = np.einsum("pti,quj->ijpqtu", _PHASE_TAPS, _PHASE_TAPS).reshape(9, 16)


#: G of the Winograd F(2×2, 3×3) kernel transform (4×3): a 3×3 kernel g becomes the 4×4 G g Gᵀ.
_WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: the smallest image side and input channel count computed by Winograd tiles (Conv2d._winograd). Forward of one
#: layer at batch 256, one thread, against the im2col path: 1.7-2.2× from 4 input channels up (4->16, 16->16,
#: 32->32 and 96->32 at 28×28, 32->32 and 64->64 at 14×14), 1.0-1.1× with 1-4 output channels, but 0.6× from one
#: input channel (16 GEMMs with an inner dimension of 1); odd sides (7×7) would need padded tiles
WINOGRAD_MIN_SIDE = 8
WINOGRAD_MIN_IN_CHANNELS = 4


def _winograd_weight(w):
    """(16, Cout, Cin): G g Gᵀ of each 3×3 kernel g of ``w`` (Cout, Cin, 3, 3), the 16 entries in (i, j) order,
    computed in float64 and rounded once to ``w``'s dtype."""
    u = np.einsum("ai,ocij,bj->aboc", _WINOGRAD_G, w, _WINOGRAD_G)
    return np.ascontiguousarray(u.reshape(16, *w.shape[:2]), dtype=w.dtype)


class Conv2d(Module):
    """2-D convolution on (C, N, H, W): k×k kernel, ``stride`` 1 or 2, zero ``padding`` (default k//2).

    ``up`` = 2 nearest-upsamples the input first (fused into the unfolding: "upsample + conv"), so the output is
    (out_channels, N, Ho, Wo) with Ho = (H*up + 2*padding - k)//stride + 1. ``act`` None or "silu" (fused).
    weight (out_channels, in_channels, k, k), bias (out_channels,), U(-1/sqrt(in*k*k), +) at init.
    """

    def __init__(self, in_channels, out_channels, k=3, *, stride=1, padding=None, up=1, act=None, rng=None):
        super().__init__()
        if stride not in (1, 2) or up not in (1, 2) or k < 1:
            raise InputError(f"Conv2d needs stride and up in (1, 2) and k >= 1, got stride={stride}, up={up}, k={k}")
        if act not in (None, "silu"):
            raise InputError(f"act must be None or 'silu', got {act!r}")
        rng = np.random.default_rng(0) if rng is None else rng
        bound = 1.0 / math.sqrt(in_channels * k * k)
        self.add_param("weight", _uniform(rng, bound, (out_channels, in_channels, k, k)))
        self.add_param("bias", _uniform(rng, bound, (out_channels,)))
        self.k, self.stride, self.up, self.act = k, stride, up, act
        self.padding = k // 2 if padding is None else padding
        self._cache = None

    def out_size(self, h, w):
        """Spatial output size (Ho, Wo) for an input of size (h, w)."""
        p, k, s, u = self.padding, self.k, self.stride, self.up
        return (h * u + 2 * p - k) // s + 1, (w * u + 2 * p - k) // s + 1

    def _pointwise(self):
        return self.k == 1 and self.stride == 1 and self.up == 1 and self.padding == 0

    def _same(self):
        """True for stride 1, no upsampling and output size = input size (odd k, padding k//2)."""
        return self.stride == 1 and self.up == 1 and 2 * self.padding == self.k - 1

    def _unfold(self, x, n0, n1, ho, wo, cols):
        """im2col of samples n0..n1-1 of x (C, N, H, W) into cols; the flat-shift kernel for "same" convolutions."""
        c_in, n, h, w = x.shape
        if self._same():
            kernels.im2col_same(x.reshape(c_in, n, h * w), n0, n1, h, w, self.k, self.padding, cols)
        else:
            kernels.im2col(x[:, n0:n1], self.k, self.stride, self.padding, self.up, ho, wo, cols)

    def _winograd(self, h, w, c_in):
        """True when a 3×3 "same" convolution of ``c_in`` channels of an h×w image (this layer's forward, or its
        adjoint for dx) is computed as Winograd F(2×2, 3×3): 16 GEMMs of the transformed kernels and 4×4 input tiles
        (16 multiply-adds per 2×2 outputs and channel pair instead of 36), where the im2col path unfolds 9 copies of
        the input. Needs even sides of at least WINOGRAD_MIN_SIDE and WINOGRAD_MIN_IN_CHANNELS channels."""
        return (self.k == 3 and self._same() and h % 2 == 0 and w % 2 == 0
                and min(h, w) >= WINOGRAD_MIN_SIDE and c_in >= WINOGRAD_MIN_IN_CHANNELS)

    def _winograd_conv(self, x, w, out):
        """out (Cout, N*H*W) = the 3×3 "same" convolution of x (Cin, N, H, W) by w (Cout, Cin, 3, 3), no bias."""
        c_in, n, h, wd = x.shape
        c_out = w.shape[0]
        u = _winograd_weight(w)
        tiles = h * wd // 4
        for n0, n1 in self._chunks(n, 16 * (c_in + c_out) * tiles):
            t = (n1 - n0) * tiles
            v = _scratch("winograd_in", (16, c_in, t), x.dtype)
            kernels.winograd_tiles(x, n0, n1, v)
            m = _scratch("winograd_out", (16, c_out, t), x.dtype)
            np.matmul(u, v, out=m)
            kernels.winograd_untile(m, h, wd, out[:, n0 * h * wd:n1 * h * wd])

    def _winograd_weight_grad(self, x, dz, gw):
        """gw (Cout, Cin, 3, 3) = the weight gradient of the Winograd forward of x (Cin, N, H, W) given dz (Cout, N,
        H, W), the gradient of its output: dU[k] = Σ_t dM[k, :, t] V[k, :, t]ᵀ over the input tiles V and the
        output-transform adjoint dM of dz's tiles, then Gᵀ dU G (16 GEMMs with 16 instead of 36 multiply-adds per
        2×2 outputs and channel pair)."""
        c_in, n, h, wd = x.shape
        c_out = dz.shape[0]
        tiles = h * wd // 4
        du = np.zeros((16, c_out, c_in), dtype=x.dtype)
        du_part = _scratch("winograd_du", du.shape, x.dtype)
        for n0, n1 in self._chunks(n, 16 * (c_in + c_out) * tiles):
            t = (n1 - n0) * tiles
            v = _scratch("winograd_in", (16, c_in, t), x.dtype)
            kernels.winograd_tiles(x, n0, n1, v)
            dm = _scratch("winograd_out", (16, c_out, t), x.dtype)
            kernels.winograd_untile_adjoint(dz, n0, n1, dm)
            np.matmul(dm, v.transpose(0, 2, 1), out=du_part)
            du += du_part
        gw[...] = np.einsum("ai,aboc,bj->ocij", _WINOGRAD_G, du.reshape(4, 4, c_out, c_in), _WINOGRAD_G)

    def _subpixel(self):
        """True for the upsample-by-2 3×3 convolution computed as four 2×2 phase convolutions (see _PHASE_TAPS)."""
        return self.up == 2 and self.k == 3 and self.stride == 1 and self.padding == 1

    def _phase_weight(self):
        """(4*Cout, Cin*4): the 2×2 kernels of the four output phases, rows ordered (phase, output channel)."""
        w = self._params["weight"]
        c_out, c_in = w.shape[:2]
        phases = (w.reshape(-1, 9) @ _PHASE_MAP.astype(w.dtype)).reshape(c_out, c_in, 4, 4)
        return np.ascontiguousarray(phases.transpose(2, 0, 1, 3)).reshape(4 * c_out, 4 * c_in)

    @staticmethod
    def _chunks(n, floats_per_sample):
        """Sample ranges (n0, n1) processed at a time: the unfolded block stays ~CHUNK_FLOATS (cache-resident)."""
        per = max(1, CHUNK_FLOATS // floats_per_sample)
        return [(n0, min(n, n0 + per)) for n0 in range(0, n, per)]

    def forward(self, x, train=True):
        w, b = self._params["weight"], self._params["bias"]
        c_out, c_in = w.shape[:2]
        if x.ndim != 4 or x.shape[0] != c_in:
            raise InputError(f"Conv2d input must be (C={c_in}, N, H, W), got shape {x.shape}")
        x = np.ascontiguousarray(x)
        _, n, h, wd = x.shape
        ho, wo = self.out_size(h, wd)
        w2 = w.reshape(c_out, -1)
        z = self._buffer("z", (c_out, n * ho * wo), train)
        y = self._buffer("y", z.shape, train) if self.act else z
        if self._pointwise():
            np.dot(w2, x.reshape(c_in, -1), out=z)
            kernels.bias_act_rows(z, b, self.act is not None, z, y)
        elif self._subpixel():
            self._forward_subpixel(x, z, y)
        elif self._winograd(h, wd, c_in):
            self._winograd_conv(x, w, z)
            kernels.bias_act_rows(z, b, self.act is not None, z, y)
        else:
            for n0, n1 in self._chunks(n, w2.shape[1] * ho * wo):
                a, e = n0 * ho * wo, n1 * ho * wo
                cols = _scratch("cols", (w2.shape[1], e - a), x.dtype)
                self._unfold(x, n0, n1, ho, wo, cols)
                out = _scratch("out", (c_out, e - a), x.dtype)
                np.dot(w2, cols, out=out)
                kernels.bias_act_rows(out, b, self.act is not None, z[:, a:e], y[:, a:e])
        if train:
            self._cache = (x, z)
        return y.reshape(c_out, n, ho, wo)

    def cached_input(self):
        return None if self._cache is None else self._cache[0]

    def _input_blocks(self):
        x = self.cached_input()
        if x is None:
            return None

        def blocks():
            c_in, n, h, wd = x.shape
            if self._pointwise():
                yield x.reshape(c_in, -1).T
                return
            ho, wo = self.out_size(h, wd)
            fan_in = c_in * self.k * self.k
            for n0, n1 in self._chunks(n, fan_in * ho * wo):
                cols = _scratch("calib_cols", (fan_in, (n1 - n0) * ho * wo), x.dtype)
                self._unfold(x, n0, n1, ho, wo, cols)       # the sub-pixel layer too: plain upsampling im2col
                yield cols.T
        return blocks

    def _forward_subpixel(self, x, z, y):
        """Forward of the upsample-by-2 3×3 convolution by phases: x (Cin, N, h, w) -> z, y (Cout, N*2h*2w)."""
        c_in, n, h, w = x.shape
        b = self._params["bias"]
        c_out, grid = b.shape[0], (h + 1) * (w + 1)
        w_phase = self._phase_weight()
        for n0, n1 in self._chunks(n, 4 * c_in * grid):
            a, e = n0 * 4 * h * w, n1 * 4 * h * w
            cols = _scratch("cols", (4 * c_in, (n1 - n0) * grid), x.dtype)
            kernels.im2col(x[:, n0:n1], 2, 1, 1, 1, h + 1, w + 1, cols)
            zg = _scratch("zg", (4 * c_out, (n1 - n0) * grid), x.dtype)
            np.dot(w_phase, cols, out=zg)
            out = _scratch("out", (c_out, e - a), x.dtype)
            kernels.subpixel_scatter(zg.reshape(4, c_out, n1 - n0, grid), h, w, out)
            kernels.bias_act_rows(out, b, self.act is not None, z[:, a:e], y[:, a:e])

    def _backward_subpixel(self, x, dz, gw, dx):
        """Backward of :meth:`_forward_subpixel`: dz (Cout, N*2h*2w) -> weight gradient gw, and dx when given."""
        c_in, n, h, w = x.shape
        c_out, grid = gw.shape[0], (h + 1) * (w + 1)
        w_phase = self._phase_weight()
        g_phase = np.zeros_like(w_phase)
        g_part = _scratch("gw", w_phase.shape, w_phase.dtype)
        dz_img = np.ascontiguousarray(dz).reshape(c_out, n, 4 * h * w)
        for n0, n1 in self._chunks(n, 4 * c_in * grid):
            cols = _scratch("cols", (4 * c_in, (n1 - n0) * grid), x.dtype)
            kernels.im2col(x[:, n0:n1], 2, 1, 1, 1, h + 1, w + 1, cols)
            dzg = _scratch("zg", (4 * c_out, (n1 - n0) * grid), x.dtype)
            kernels.subpixel_gather(dz_img, n0, n1, h, w, dzg.reshape(4, c_out, n1 - n0, grid))
            np.dot(dzg, cols.T, out=g_part)
            g_phase += g_part
            if dx is not None:
                np.dot(w_phase.T, dzg, out=cols)
                kernels.col2im(cols, 2, 1, 1, 1, h + 1, w + 1, dx[:, n0:n1])
        g_phase = g_phase.reshape(4, c_out, c_in, 4).transpose(1, 2, 0, 3).reshape(-1, 16)
        np.dot(g_phase, _PHASE_MAP.T.astype(gw.dtype), out=gw.reshape(-1, 9))

    def backward(self, dy, need_dx=True):
        x, z = self._cache
        w = self._params["weight"]
        c_out = w.shape[0]
        w2 = w.reshape(c_out, -1)
        dy2 = dy.reshape(c_out, -1)
        if self.act:
            dz = self._buffer("dz", z.shape, True)
            kernels.silu_bwd(dy2, z, dz)
        else:
            dz = dy2
        np.sum(dz, axis=1, out=self._grads["bias"])
        gw = self._grads["weight"].reshape(c_out, -1)
        dx = self._buffer("dx", x.shape, True) if need_dx else None
        if self._pointwise():
            np.dot(dz, x.reshape(x.shape[0], -1).T, out=gw)
            if need_dx:
                np.dot(w2.T, dz, out=dx.reshape(x.shape[0], -1))
            return dx
        if self._subpixel():
            self._backward_subpixel(x, dz, gw, dx)
            return dx
        ho, wo = dy.shape[2], dy.shape[3]
        gw_part = _scratch("gw", gw.shape, gw.dtype)
        same = self._same()
        weight_by_tiles = self._winograd(ho, wo, x.shape[0])     # the forward ran on Winograd tiles
        dx_by_tiles = need_dx and self._winograd(ho, wo, c_out)
        if same:
            dz_img = np.ascontiguousarray(dz).reshape(c_out, x.shape[1], ho * wo)
        if weight_by_tiles:
            self._winograd_weight_grad(x, dz_img.reshape(c_out, x.shape[1], ho, wo), self._grads["weight"])
        if same and need_dx:
            # dx of a "same" convolution is the "same" convolution of dz with the flipped, transposed kernel:
            # unfolding dz and one GEMM (or Winograd tiles) replace the scattered col2im sum.
            w_adj = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            if dx_by_tiles:
                self._winograd_conv(dz_img.reshape(c_out, x.shape[1], ho, wo), w_adj, dx.reshape(x.shape[0], -1))
            w_adj = w_adj.reshape(x.shape[0], -1)
        if weight_by_tiles and (dx_by_tiles or not need_dx):
            return dx
        for idx, (n0, n1) in enumerate(self._chunks(x.shape[1], w2.shape[1] * ho * wo)):
            a, e = n0 * ho * wo, n1 * ho * wo
            if not weight_by_tiles:
                cols = _scratch("cols", (w2.shape[1], e - a), x.dtype)
                self._unfold(x, n0, n1, ho, wo, cols)
                np.dot(dz[:, a:e], cols.T, out=gw if idx == 0 else gw_part)
                if idx:
                    gw += gw_part
            if not need_dx or dx_by_tiles:
                continue
            if same:
                dz_cols = _scratch("cols", (w_adj.shape[1], e - a), x.dtype)
                kernels.im2col_same(dz_img, n0, n1, ho, wo, self.k, self.padding, dz_cols)
                out = _scratch("out", (x.shape[0], e - a), x.dtype)
                np.dot(w_adj, dz_cols, out=out)
                dx[:, n0:n1] = out.reshape(dx[:, n0:n1].shape)
            else:
                np.dot(w2.T, dz[:, a:e], out=cols)
                kernels.col2im(cols, self.k, self.stride, self.padding, self.up, ho, wo, dx[:, n0:n1])
        return dx


class GroupNorm(Module):
    """Group normalisation of (C, N, H, W) over (C/groups channels × H × W) per sample, affine per channel.

    Optional fused extras: per-(channel, sample) scale-shift ``y = a*(1 + scale) + shift`` with scale, shift (C, N)
    passed to :meth:`forward` (time conditioning), then ``act="silu"``. weight = 1, bias = 0 at init; eps 1e-5.
    """

    def __init__(self, channels, groups, act=None, eps=1e-5):
        super().__init__()
        if groups < 1 or channels % groups:
            raise InputError(f"GroupNorm: channels ({channels}) must be divisible by groups ({groups})")
        if act not in (None, "silu"):
            raise InputError(f"act must be None or 'silu', got {act!r}")
        self.add_param("weight", np.ones(channels))
        self.add_param("bias", np.zeros(channels))
        self.groups, self.act, self.eps = groups, act, eps
        self._cache = None

    def forward(self, x, scale=None, shift=None, train=True):
        c, n = x.shape[:2]
        if c != self._params["weight"].shape[0]:
            raise InputError(f"GroupNorm input must have {self._params['weight'].shape[0]} channels, got {x.shape}")
        if scale is None:
            scale = shift = _no_mod(x.dtype)
        x3 = x.reshape(c, n, -1)
        y = self._buffer("y", x.shape, train)
        mean = self._buffer("mean", (n, self.groups), train, np.float64)
        rstd = self._buffer("rstd", (n, self.groups), train, np.float64)
        kernels.group_norm_fwd(x3, self.groups, self._params["weight"], self._params["bias"], scale, shift,
                               self.act is not None, self.eps, y.reshape(x3.shape), mean, rstd)
        if train:
            self._cache = (x3, x.shape, scale, shift, mean, rstd)
        return y

    def backward(self, dy):
        """Returns ``(dx, dscale, dshift)``: dx like the input, dscale and dshift (C, N) when :meth:`forward` was
        given a scale-shift, else None."""
        x3, shape, scale, shift, mean, rstd = self._cache
        c, n = x3.shape[:2]
        dx = self._buffer("dx", shape, True)
        dg = self._buffer("dg", (n, c), True)
        db = self._buffer("db", (n, c), True)
        mod = scale.shape[0] > 0
        dscale = self._buffer("dscale", (c, n), True) if mod else scale
        dshift = self._buffer("dshift", (c, n), True) if mod else shift
        kernels.group_norm_bwd(dy.reshape(x3.shape), x3, self.groups, self._params["weight"], self._params["bias"],
                               scale, shift, self.act is not None, mean, rstd, dx.reshape(x3.shape), dg, db,
                               dscale, dshift)
        np.sum(dg, axis=0, out=self._grads["weight"])
        np.sum(db, axis=0, out=self._grads["bias"])
        return (dx, dscale, dshift) if mod else (dx, None, None)


class TimeEmbedding(Module):
    """Sinusoidal embedding of times t (N,) in [0, 1] -> (N, dim): [cos(s t f_i), sin(s t f_i)], i < dim/2.

    f_i = max_period**(-i/(dim/2)), s = ``scale`` (1000: t behaves like a diffusion step index). No parameters.
    """

    def __init__(self, dim, scale=1000.0, max_period=10000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise InputError(f"TimeEmbedding dim must be even and >= 2, got {dim}")
        self.dim, self.scale = dim, scale
        self._freqs = np.exp(-math.log(max_period) * np.arange(dim // 2) / (dim // 2))
        self._cache = None

    def forward(self, t, train=True):
        dtype = self.dtype
        arg = (self.scale * t.astype(np.float64))[:, None] * self._freqs
        out = np.concatenate([np.cos(arg), np.sin(arg)], axis=1).astype(dtype)
        if train:
            self._cache = arg
        return out

    def backward(self, dy):
        """Returns dL/dt (N,)."""
        arg = self._cache
        half = self.dim // 2
        dt = (dy[:, half:] * np.cos(arg) - dy[:, :half] * np.sin(arg)) @ (self.scale * self._freqs)
        return dt.astype(dy.dtype)


class GlobalAvgPool(Module):
    """Mean over H, W: (C, N, H, W) -> (N, C) (features in the public row layout)."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x, train=True):
        if train:
            self._shape = x.shape
        return np.ascontiguousarray(x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2).T)

    def backward(self, dy):
        c, n, h, w = self._shape
        dx = self._buffer("dx", self._shape, True)
        dx[...] = (dy.T / (h * w))[:, :, None, None]
        return dx


class Flatten(Module):
    """(C, N, H, W) -> (N, C·H·W) in (c, h, w) order per sample (features in the public row layout)."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x, train=True):
        if train:
            self._shape = x.shape
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1))

    def backward(self, dy):
        c, n, h, w = self._shape
        return np.ascontiguousarray(dy.reshape(n, c, h, w).transpose(1, 0, 2, 3))


class ResBlock(Module):
    """Residual block with time conditioning on (C, N, H, W):

    h = conv1(SiLU(GN1(x))); (scale, shift) = emb(temb_act); h = conv2(SiLU(GN2(h)·(1+scale) + shift));
    out = h + skip(x), skip = 1×1 conv when in_channels != out_channels else identity.
    ``temb_act`` (N, time_dim) is the already-activated time embedding (the model applies SiLU once for all blocks).
    """

    def __init__(self, in_channels, out_channels, time_dim, groups, rng=None):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        self.out_channels = out_channels
        self.norm1 = self.add_child("norm1", GroupNorm(in_channels, groups, act="silu"))
        self.conv1 = self.add_child("conv1", Conv2d(in_channels, out_channels, 3, rng=rng))
        self.emb = self.add_child("emb", Linear(time_dim, 2 * out_channels, rng=rng))
        self.norm2 = self.add_child("norm2", GroupNorm(out_channels, groups, act="silu"))
        self.conv2 = self.add_child("conv2", Conv2d(out_channels, out_channels, 3, rng=rng))
        self.skip = (self.add_child("skip", Conv2d(in_channels, out_channels, 1, rng=rng))
                     if in_channels != out_channels else None)

    def forward(self, x, temb_act, train=True):
        co = self.out_channels
        h = self.conv1.forward(self.norm1.forward(x, train=train), train=train)
        e = self.emb.forward(temb_act, train=train)
        scale = np.ascontiguousarray(e[:, :co].T)
        shift = np.ascontiguousarray(e[:, co:].T)
        h = self.conv2.forward(self.norm2.forward(h, scale, shift, train=train), train=train)
        h += self.skip.forward(x, train=train) if self.skip is not None else x
        return h

    def backward(self, dout):
        """Returns (dx, dtemb_act)."""
        da2 = self.conv2.backward(dout)
        dh1, dscale, dshift = self.norm2.backward(da2)
        de = self._buffer("de", (dscale.shape[1], 2 * self.out_channels), True)
        de[:, :self.out_channels] = dscale.T
        de[:, self.out_channels:] = dshift.T
        dtemb = self.emb.backward(de)
        dx, _, _ = self.norm1.backward(self.conv1.backward(dh1))
        dx += self.skip.backward(dout) if self.skip is not None else dout
        return dx, dtemb
