"""ADMUNet: the guided-diffusion "ADM" U-Net of facebookresearch/flow_matching (``examples/image/models/unet.py``,
the paper's network) and torchcfm (``UNetModelWrapper``), with torch's state-dict names, in NumPy + Numba.

    adm = fq.nn.ADMUNet(**flow_matching_config)      # a MODEL_CONFIGS entry, e.g. the paper's "mnist" / "cifar10"
    adm.load_parameters(state_dict)                  # strict: torch's names, order, shapes, float32
    v = adm(x, t, y=None)                            # x (n, C, H, W), t (n,) in [0, 1] -> velocity like x

Config keys (flow_matching's ``UNetModel`` fields, same defaults): ``in_channels`` (required), ``model_channels``
128, ``out_channels`` 3, ``num_res_blocks`` 2, ``attention_resolutions`` (1, 2, 2, 2) (downsampling factors ``ds``
at which an attention block follows each residual block), ``dropout`` 0 (training forward only), ``channel_mult``
(1, 2, 4, 8), ``conv_resample`` True (3×3 convolutions around the nearest-upsample / stride-2 resampling; False:
nearest upsample / 2×2 average pooling), ``dims`` 2 (the only one supported), ``num_classes`` None,
``num_heads`` 1, ``num_head_channels`` -1 (≥ 1: heads = channels / num_head_channels, overriding num_heads),
``num_heads_upsample`` -1 (= num_heads; decoder heads when num_head_channels is -1), ``use_scale_shift_norm``
False (FiLM: GN(h)·(1 + scale) + shift instead of h + emb before the second norm), ``resblock_updown`` False
(resampling by residual blocks), ``use_new_attention_order`` False (False: qkv split per head first, "legacy";
True: split into q, k, v first), ``with_fourier_features`` False (12 extra input channels sin/cos(2π·2^k·x),
k = 6, 7; needs in_channels = 3 as in flow_matching), ``use_checkpoint`` (accepted, ignored), ``image_size`` -1
(unused by the network; fmq_np's trainer and sampler read the sample shape from it), ``ignore_time`` False and
``input_projection`` True (only these values), ``_target_`` (ignored). fmq_np's own keys: ``seed`` 0 (random
initialisation, torch's scheme: U(±1/√fan_in), N(0, 1) label table, zeroed output convolutions) and
``label_padding`` True (flow_matching: the label table has num_classes + 1 rows, the last, index num_classes,
is the "no label" padding row used when ``y`` is None, as flow_matching does for classifier-free guidance;
False: torchcfm's table of num_classes rows, and ``y`` is then required). Every GroupNorm has 32 groups
(GroupNorm32, eps 1e-5, statistics accumulated in float64), so every normalised channel count must be a multiple
of 32. Time embedding: [cos(t·f_i), sin(t·f_i)], f_i = 10000^(-i/half), on t as given (no ×1000), computed in the
model's dtype like torch.

torchcfm: ``ADMUNet.from_torchcfm(**kwargs)`` takes ``UNetModelWrapper``'s constructor arguments and maps them:
``dim`` (C, H, W) → in_channels = C, out_channels = C (2C with ``learn_sigma``), image_size = W;
``num_channels`` → model_channels; ``channel_mult`` None → torchcfm's per-size default ((1, 2, 2) for 28,
(1, 2, 2, 2) for 32, ...); ``attention_resolutions`` "16,8" (resolutions in pixels) → downsampling factors
image_size // r; ``class_cond`` → num_classes (else None) with label_padding False; ``num_heads``,
``num_head_channels``, ``num_heads_upsample``, ``use_scale_shift_norm``, ``dropout``, ``resblock_updown``,
``use_new_attention_order``, ``use_checkpoint`` pass through; conv_resample True; ``use_fp16`` must be False
(cast an fp16 state dict to float32 first). torchcfm calls ``model(t, x, y)``; here it is ``model(x, t, y)``.
torchcfm's ``MLP(dim, out_dim, w, time_varying)`` (three hidden Linear + SELU layers, ``net.0/2/4/6``) is
:meth:`fmq_np.nn.MLPVelocity.from_torchcfm`: ``MLPVelocity(dim, hidden=w, depth=3, act="selu")``, names
``net.{2i}`` → ``layers.{i}``, checked against torchcfm's own module in torch (``tests/fixtures/torchcfm_mlp.*``).

Layout: the layers work in the channel-major (C, N, H, W) layout of :mod:`fmq_np.nn.layers`; ``forward`` /
``backward`` follow the velocity-model contract of :mod:`fmq_np.nn.models` (``backward(dv)`` overwrites
``gradients()`` and returns dx).
"""
import math

import numpy as np

from .._validate import check_array, is_int
from ..errors import InputError
from . import kernels
from .layers import Conv2d, GroupNorm, Linear, Module, SiLU

GROUPS = 32
_DEFAULTS = dict(model_channels=128, out_channels=3, num_res_blocks=2, attention_resolutions=(1, 2, 2, 2),
                 dropout=0.0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2, num_classes=None,
                 use_checkpoint=False, num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
                 use_scale_shift_norm=False, resblock_updown=False, use_new_attention_order=False,
                 with_fourier_features=False, ignore_time=False, input_projection=True, image_size=-1,
                 label_padding=True, seed=0)
_BOOLS = ("conv_resample", "use_checkpoint", "use_scale_shift_norm", "resblock_updown", "use_new_attention_order",
          "with_fourier_features", "ignore_time", "input_projection", "label_padding")
_IGNORED = ("_target_",)
#: torchcfm's UNetModelWrapper channel multipliers by image size when channel_mult is None.
TORCHCFM_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
                         64: (1, 2, 3, 4), 32: (1, 2, 2, 2), 28: (1, 2, 2)}


def _int(name, value, low, allow=()):
    if not is_int(value) or (value < low and value not in allow):
        extra = f" or {', '.join(map(str, allow))}" if allow else ""
        raise InputError(f"ADMUNet: {name} must be an integer >= {low}{extra}, got {value!r}")
    return int(value)


def _parse_config(config):
    """Validated config dict (all keys, JSON-able) from the user's keyword arguments."""
    for key in config:
        if key not in _DEFAULTS and key not in _IGNORED and key != "in_channels":
            raise InputError(f"ADMUNet: unknown config key {key!r}")
    if "in_channels" not in config:
        raise InputError("ADMUNet: config key 'in_channels' is required")
    cfg = {"in_channels": config["in_channels"]}
    cfg.update({k: config.get(k, v) for k, v in _DEFAULTS.items()})
    for key in _BOOLS:
        if not isinstance(cfg[key], (bool, np.bool_)):
            raise InputError(f"ADMUNet: {key} must be true or false, got {cfg[key]!r}")
        cfg[key] = bool(cfg[key])
    for key in ("in_channels", "model_channels", "out_channels"):
        cfg[key] = _int(key, cfg[key], 1)
    cfg["num_res_blocks"] = _int("num_res_blocks", cfg["num_res_blocks"], 0)
    cfg["seed"] = _int("seed", cfg["seed"], 0)
    cfg["image_size"] = _int("image_size", cfg["image_size"], 1, allow=(-1,))
    for key in ("num_heads", "num_head_channels", "num_heads_upsample"):
        cfg[key] = _int(key, cfg[key], 1, allow=(-1,))
    if cfg["dims"] != 2:
        raise InputError(f"ADMUNet: only dims=2 is supported, got dims={cfg['dims']!r}")
    if cfg["num_classes"] is not None:
        cfg["num_classes"] = _int("num_classes", cfg["num_classes"], 1)
    dropout = cfg["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating, np.integer)) \
            or not 0.0 <= dropout < 1.0:
        raise InputError(f"ADMUNet: dropout must be a number in [0, 1), got {dropout!r}")
    cfg["dropout"] = float(dropout)
    for key in ("channel_mult", "attention_resolutions"):
        if isinstance(cfg[key], (str, bytes)) or not hasattr(cfg[key], "__iter__"):
            raise InputError(f"ADMUNet: {key} must be a list, got {cfg[key]!r}")
        cfg[key] = list(cfg[key])
    mults = []
    for m in cfg["channel_mult"]:
        if isinstance(m, bool) or not isinstance(m, (int, float, np.integer, np.floating)) \
                or int(m * cfg["model_channels"]) < 1:
            raise InputError(f"ADMUNet: channel_mult entries must be positive numbers, got {cfg['channel_mult']!r}")
        mults.append(int(m) if float(m).is_integer() else float(m))
    if not mults:
        raise InputError("ADMUNet: channel_mult must have at least one level")
    cfg["channel_mult"] = mults
    cfg["attention_resolutions"] = [_int("attention_resolutions entry", r, 1) for r in cfg["attention_resolutions"]]
    if cfg["ignore_time"]:
        raise InputError("ADMUNet: ignore_time=True is not supported")
    if not cfg["input_projection"]:
        raise InputError("ADMUNet: input_projection=False is not supported")
    if cfg["with_fourier_features"] and cfg["in_channels"] != 3:
        raise InputError(f"ADMUNet: with_fourier_features needs in_channels=3 (flow_matching adds 12 input "
                         f"channels), got in_channels={cfg['in_channels']}")
    if cfg["num_head_channels"] == -1 and cfg["num_heads"] == -1:
        raise InputError("ADMUNet: num_heads=-1 needs num_head_channels >= 1")
    return cfg


def _heads(channels, num_heads, num_head_channels, where):
    if num_head_channels != -1:
        if channels % num_head_channels:
            raise InputError(f"ADMUNet: {where}: {channels} channels are not divisible by num_head_channels "
                             f"{num_head_channels}")
        return channels // num_head_channels
    if channels % num_heads:
        raise InputError(f"ADMUNet: {where}: {channels} channels are not divisible by num_heads {num_heads}")
    return num_heads


def _check_groups(channels, where):
    if channels % GROUPS:
        raise InputError(f"ADMUNet: {where} normalises {channels} channels, which GroupNorm32 needs divisible by "
                         f"{GROUPS} (choose model_channels * channel_mult accordingly)")


def timestep_embedding(t, dim, dtype, max_period=10000.0):
    """[cos(t f), sin(t f)] (n, dim), f_i = max_period**(-i/half), computed in ``dtype`` like torch (odd dim:
    a zero column appended)."""
    dtype = np.dtype(dtype)
    half = dim // 2
    freqs = np.exp(dtype.type(-math.log(max_period)) * np.arange(half, dtype=dtype) / dtype.type(half))
    args = t.astype(dtype)[:, None] * freqs[None]
    parts = [np.cos(args), np.sin(args)]
    if dim % 2:
        parts.append(np.zeros((t.shape[0], 1), dtype))
    return np.concatenate(parts, axis=1)


class Conv1x1(Module):
    """torch's ``Conv1d(in, out, 1)`` on channel-major rows: x (in, M) -> weight[:, :, 0] @ x + bias (out, M).

    weight (out_channels, in_channels, 1), bias (out_channels,), U(-1/sqrt(in), +) at init (zeros with ``zero``).
    """

    def __init__(self, in_channels, out_channels, rng=None, zero=False):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        bound = 1.0 / math.sqrt(in_channels)
        w = rng.uniform(-bound, bound, (out_channels, in_channels, 1))
        b = rng.uniform(-bound, bound, out_channels)
        self.add_param("weight", w * (not zero))
        self.add_param("bias", b * (not zero))
        self._x = None

    def forward(self, x, train=True):
        w = self._params["weight"]
        z = self._buffer("z", (w.shape[0], x.shape[1]), train)
        np.dot(w[:, :, 0], x, out=z)
        kernels.bias_act_rows(z, self._params["bias"], False, z, z)
        if train:
            self._x = x
        return z

    def cached_input(self):
        """The input (in_channels, M) of the last ``forward(train=True)``, None before one."""
        return self._x

    def _input_blocks(self):
        """The calibration hook of :meth:`Module.weight_inputs`: the cached input as rows (M, in_channels)."""
        x = self.cached_input()
        return None if x is None else lambda: iter((x.T,))

    def backward(self, dz):
        x, w = self._x, self._params["weight"]
        np.sum(dz, axis=1, out=self._grads["bias"])
        np.dot(dz, x.T, out=self._grads["weight"][:, :, 0])
        dx = self._buffer("dx", x.shape, True)
        np.dot(w[:, :, 0].T, dz, out=dx)
        return dx


class Upsample2x(Module):
    """Nearest-neighbour upsampling by 2 of (C, N, H, W) -> (C, N, 2H, 2W) (no parameters)."""

    uses_emb = False

    def forward(self, x, train=True):
        c, n, h, w = x.shape
        y = np.empty((c, n, h, 2, w, 2), dtype=x.dtype)
        y[...] = x[:, :, :, None, :, None]
        return y.reshape(c, n, 2 * h, 2 * w)

    def backward(self, dy):
        c, n, h2, w2 = dy.shape
        return np.ascontiguousarray(dy.reshape(c, n, h2 // 2, 2, w2 // 2, 2).sum(axis=(3, 5)))


class AvgPool2x(Module):
    """2×2 average pooling with stride 2 of (C, N, H, W) -> (C, N, H//2, W//2) (odd edges dropped, as torch)."""

    uses_emb = False

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x, train=True):
        c, n, h, w = x.shape
        ho, wo = h // 2, w // 2
        if train:
            self._shape = x.shape
        blocks = x[:, :, :2 * ho, :2 * wo].reshape(c, n, ho, 2, wo, 2)
        return ((blocks[:, :, :, 0, :, 0] + blocks[:, :, :, 0, :, 1]) + (blocks[:, :, :, 1, :, 0]
                                                                       + blocks[:, :, :, 1, :, 1])) * x.dtype.type(0.25)

    def backward(self, dy):
        c, n, h, w = self._shape
        ho, wo = dy.shape[2], dy.shape[3]
        dx = np.zeros(self._shape, dtype=dy.dtype)
        dx[:, :, :2 * ho, :2 * wo].reshape(c, n, ho, 2, wo, 2)[...] = \
            (dy * dy.dtype.type(0.25))[:, :, :, None, :, None]
        return dx


class Resample(Module):
    """flow_matching's ``Upsample`` / ``Downsample``: nearest ×2 then 3×3 conv ("conv") / stride-2 3×3 conv ("op")
    when ``use_conv``, else nearest ×2 / 2×2 average pooling without parameters. (C, N, H, W) in and out."""

    uses_emb = False

    def __init__(self, channels, use_conv, up, rng=None):
        super().__init__()
        if use_conv:
            conv = Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1, up=2 if up else 1, rng=rng)
            self.op = self.add_child("conv" if up else "op", conv)
        else:
            self.op = Upsample2x() if up else AvgPool2x()

    def forward(self, x, train=True):
        return self.op.forward(x, train=train)

    def backward(self, dy):
        return self.op.backward(dy)


class ADMResBlock(Module):
    """guided-diffusion ``ResBlock`` on (C, N, H, W) with the time/label embedding ``emb_act`` = SiLU(emb) (N, E):

    h = in_layers.2(resample(SiLU(GN(x)))); e = emb_layers.1(emb_act);
    h = out_layers.3(dropout(SiLU(GN(h)·(1 + e_scale) + e_shift)))   with use_scale_shift_norm,
    h = out_layers.3(dropout(SiLU(GN(h + e))))                        without;
    out = skip_connection(resample(x)) + h, skip = 1×1 conv when channels change, else identity.
    ``up`` / ``down``: resample = nearest ×2 (fused into in_layers.2) / 2×2 average pooling; else identity.
    """

    uses_emb = True

    def __init__(self, channels, emb_channels, *, dropout=0.0, out_channels=None, use_scale_shift_norm=False,
                 up=False, down=False, rng=None):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        co = out_channels or channels
        self.out_channels, self.scale_shift, self.dropout = co, use_scale_shift_norm, dropout
        self.in_norm = self.add_child("in_layers.0", GroupNorm(channels, GROUPS, act="silu"))
        self.in_conv = self.add_child("in_layers.2", Conv2d(channels, co, 3, up=2 if up else 1, rng=rng))
        self.emb = self.add_child("emb_layers.1", Linear(emb_channels, 2 * co if use_scale_shift_norm else co,
                                                         rng=rng))
        self.out_norm = self.add_child("out_layers.0", GroupNorm(co, GROUPS, act="silu"))
        self.out_conv = self.add_child("out_layers.3", Conv2d(co, co, 3, rng=rng))
        for p in self.out_conv.parameters().values():
            p[...] = 0.0
        self.skip = (self.add_child("skip_connection", Conv2d(channels, co, 1, rng=rng))
                     if co != channels else None)
        self.x_upd = Upsample2x() if up else AvgPool2x() if down else None
        self.h_down = AvgPool2x() if down else None
        self._mask = None

    def forward(self, x, emb_act, train=True, rng=None):
        """``rng`` (a numpy Generator) draws the dropout mask when training with dropout > 0."""
        a = self.in_norm.forward(x, train=train)
        if self.h_down is not None:
            a = self.h_down.forward(a, train=train)
        h = self.in_conv.forward(a, train=train)
        e = self.emb.forward(emb_act, train=train)
        co = self.out_channels
        if self.scale_shift:
            scale = np.ascontiguousarray(e[:, :co].T)
            shift = np.ascontiguousarray(e[:, co:].T)
            g = self.out_norm.forward(h, scale, shift, train=train)
        else:
            g = self.out_norm.forward(h + e.T[:, :, None, None], train=train)
        if train:      # (an inference call between forward and backward leaves the training caches alone)
            self._mask = None
            if self.dropout > 0 and rng is not None:
                keep = rng.random(g.shape) >= self.dropout
                self._mask = keep.astype(g.dtype) * g.dtype.type(1.0 / (1.0 - self.dropout))
                g = g * self._mask
        out = self.out_conv.forward(g, train=train)
        xs = self.x_upd.forward(x, train=train) if self.x_upd is not None else x
        out += self.skip.forward(xs, train=train) if self.skip is not None else xs
        return out

    def backward(self, dout):
        """Returns (dx, d emb_act)."""
        dg = self.out_conv.backward(dout)
        if self._mask is not None:
            dg = dg * self._mask
        dh, dscale, dshift = self.out_norm.backward(dg)
        if self.scale_shift:
            de = np.concatenate([dscale.T, dshift.T], axis=1)
        else:
            de = np.ascontiguousarray(dh.reshape(dh.shape[0], dh.shape[1], -1).sum(axis=2).T)
        demb = self.emb.backward(de)
        da = self.in_conv.backward(dh)
        if self.h_down is not None:
            da = self.h_down.backward(da)
        dx, _, _ = self.in_norm.backward(da)
        dxs = self.skip.backward(dout) if self.skip is not None else dout
        dx += self.x_upd.backward(dxs) if self.x_upd is not None else dxs
        return dx, demb.copy()


class ADMAttention(Module):
    """guided-diffusion ``AttentionBlock`` on (C, N, H, W): out = x + proj_out(attention(qkv(GN(x)))).

    qkv (3C rows) splits per head first (legacy order: head h's q, k, v are rows h·3d + [0, d), [d, 2d), [2d, 3d))
    or into q, k, v first (``new_order``: rows [0, C), [C, 2C), [2C, 3C), head h at h·d), d = C / heads; each head
    attends over the H·W positions with softmax((q/d^¼)ᵀ(k/d^¼)); head outputs are stacked head-major.
    """

    uses_emb = False

    def __init__(self, channels, heads, new_order, rng=None):
        super().__init__()
        self.heads, self.new_order = heads, new_order
        self.norm = self.add_child("norm", GroupNorm(channels, GROUPS))
        self.qkv = self.add_child("qkv", Conv1x1(channels, 3 * channels, rng=rng))
        self.proj = self.add_child("proj_out", Conv1x1(channels, channels, rng=rng, zero=True))
        self._cache = None

    def _split(self, a, c, n, t):
        """(3C, n*T) -> views q, k, v of shape (heads, d, n, T)."""
        h = self.heads
        d = c // h
        if self.new_order:
            v5 = a.reshape(3, h, d, n, t)
            return v5[0], v5[1], v5[2]
        v5 = a.reshape(h, 3, d, n, t)
        return v5[:, 0], v5[:, 1], v5[:, 2]

    def forward(self, x, train=True):
        c, n = x.shape[:2]
        t = x.size // (c * n)
        h, d = self.heads, c // self.heads
        xn = self.norm.forward(x, train=train)
        qkv = self.qkv.forward(xn.reshape(c, n * t), train=train)
        scale = x.dtype.type(1.0 / math.sqrt(math.sqrt(d)))
        q, k, v = (np.ascontiguousarray(p.transpose(2, 0, 1, 3)) for p in self._split(qkv, c, n, t))
        q *= scale
        k *= scale
        w = np.matmul(q.transpose(0, 1, 3, 2), k)                  # (n, heads, T, T): w[t, s] = q_t . k_s
        w -= w.max(axis=-1, keepdims=True)
        np.exp(w, out=w)
        w /= w.sum(axis=-1, keepdims=True)
        a = np.matmul(v, w.transpose(0, 1, 3, 2))                  # (n, heads, d, T): a[:, t] = sum_s w[t, s] v_s
        a_rows = np.ascontiguousarray(a.transpose(1, 2, 0, 3)).reshape(c, n * t)
        out = self.proj.forward(a_rows, train=train).reshape(x.shape)
        out += x
        if train:
            self._cache = (x.shape, q, k, v, w, scale, h, d)
        return out

    def backward(self, dout):
        shape, q, k, v, w, scale, h, d = self._cache
        c, n = shape[:2]
        t = w.shape[-1]
        da = self.proj.backward(np.ascontiguousarray(dout).reshape(c, n * t))
        da = da.reshape(h, d, n, t).transpose(2, 0, 1, 3)            # (n, heads, d, T)
        dv = np.matmul(da, w)
        dw = np.matmul(da.transpose(0, 1, 3, 2), v)
        dl = w * (dw - (dw * w).sum(axis=-1, keepdims=True))
        dq = np.matmul(k, dl.transpose(0, 1, 3, 2))              # q and k were scaled: chain rule gives * scale
        dq *= scale
        dk = np.matmul(q, dl)
        dk *= scale
        dqkv = np.empty((3 * c, n * t), dtype=w.dtype)
        for dst, src in zip(self._split(dqkv, c, n, t), (dq, dk, dv)):
            dst[...] = src.transpose(1, 2, 0, 3)
        dxn = self.qkv.backward(dqkv)
        dx, _, _ = self.norm.backward(dxn.reshape(shape))
        dx += dout
        return dx


class Embedding(Module):
    """torch's ``nn.Embedding(rows, dim, padding_idx)``: labels y (N,) -> weight[y] (N, dim); the padding row gets
    no gradient. weight N(0, 1) at init, padding row 0."""

    def __init__(self, rows, dim, padding_idx=None, rng=None):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        w = rng.standard_normal((rows, dim))
        if padding_idx is not None:
            w[padding_idx] = 0.0
        self.add_param("weight", w)
        self.padding_idx = padding_idx
        self._y = None

    def forward(self, y, train=True):
        if train:
            self._y = y
        return self._params["weight"][y]

    def backward(self, dout):
        g = self._grads["weight"]
        g[...] = 0.0
        np.add.at(g, self._y, dout)
        if self.padding_idx is not None:
            g[self.padding_idx] = 0.0


class ADMUNet(Module):
    """flow_matching's / guided-diffusion's ``UNetModel`` (see the module docstring for the config keys).

    ``m(x, t, y=None)`` / ``m.forward(x, t, y=None)``: x (n, in_channels, H, W) with H, W divisible by
    2**(levels-1), t (n,), y (n,) integer labels or None -> (n, out_channels, H, W). ``m.backward(dv)`` overwrites
    ``m.gradients()`` with d(sum(dv*v))/dparam and returns dx. Dropout acts only in ``forward`` (training), with
    masks from a generator seeded by ``seed`` (its state is not checkpointed: a resumed run draws other masks);
    ``m.train_dropout = False`` turns it off there too.
    """

    def __init__(self, **config):
        super().__init__()
        cfg = self._config = _parse_config(config)
        rng = np.random.default_rng(cfg["seed"])
        self._drop_rng = np.random.default_rng([cfg["seed"], 1])
        self.train_dropout = True    # False: forward() without dropout (torch's model.eval() with gradients)
        mc, mults = cfg["model_channels"], cfg["channel_mult"]
        emb_dim = 4 * mc
        heads_down = cfg["num_heads"]
        heads_up = cfg["num_heads"] if cfg["num_heads_upsample"] == -1 else cfg["num_heads_upsample"]
        hc, ss, drop = cfg["num_head_channels"], cfg["use_scale_shift_norm"], cfg["dropout"]
        self.emb_dim, self.levels = emb_dim, len(mults)
        self.in_channels = cfg["in_channels"]
        self.time_embed = [self.add_child("time_embed.0", Linear(mc, emb_dim, act="silu", rng=rng)),
                           self.add_child("time_embed.2", Linear(emb_dim, emb_dim, rng=rng))]
        self.label_emb = None
        if cfg["num_classes"] is not None:
            k = cfg["num_classes"]
            pad = k if cfg["label_padding"] else None
            self.label_emb = self.add_child("label_emb", Embedding(k + (pad is not None), emb_dim, pad, rng=rng))
        self.emb_act = self.add_child("emb_act", SiLU())     # no parameters: SiLU(emb) shared by the blocks

        def res(name, c_in, c_out, up=False, down=False):
            _check_groups(c_in, name)
            _check_groups(c_out, name)
            return self.add_child(name, ADMResBlock(c_in, emb_dim, dropout=drop, out_channels=c_out,
                                                    use_scale_shift_norm=ss, up=up, down=down, rng=rng))

        def attn(name, c, heads):
            _check_groups(c, name)
            return self.add_child(name, ADMAttention(c, _heads(c, heads, hc, name), cfg["use_new_attention_order"],
                                                     rng=rng))

        ch = int(mults[0] * mc)
        c_in = self.in_channels + (12 if cfg["with_fourier_features"] else 0)
        self.input_blocks = [[self.add_child("input_blocks.0.0", Conv2d(c_in, ch, 3, rng=rng))]]
        chans, ds = [ch], 1
        for level, mult in enumerate(mults):
            for _ in range(cfg["num_res_blocks"]):
                i = len(self.input_blocks)
                seq = [res(f"input_blocks.{i}.0", ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in cfg["attention_resolutions"]:
                    seq.append(attn(f"input_blocks.{i}.1", ch, heads_down))
                self.input_blocks.append(seq)
                chans.append(ch)
            if level != len(mults) - 1:
                name = f"input_blocks.{len(self.input_blocks)}.0"
                if cfg["resblock_updown"]:
                    layer = res(name, ch, ch, down=True)
                else:
                    layer = self.add_child(name, Resample(ch, cfg["conv_resample"], up=False, rng=rng))
                self.input_blocks.append([layer])
                chans.append(ch)
                ds *= 2
        self.middle_block = [res("middle_block.0", ch, ch), attn("middle_block.1", ch, heads_down),
                             res("middle_block.2", ch, ch)]
        self.output_blocks = []
        for level, mult in list(enumerate(mults))[::-1]:
            for b in range(cfg["num_res_blocks"] + 1):
                i = len(self.output_blocks)
                seq = [res(f"output_blocks.{i}.0", ch + chans.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in cfg["attention_resolutions"]:
                    seq.append(attn(f"output_blocks.{i}.1", ch, heads_up))
                if level and b == cfg["num_res_blocks"]:
                    name = f"output_blocks.{i}.{len(seq)}"
                    if cfg["resblock_updown"]:
                        seq.append(res(name, ch, ch, up=True))
                    else:
                        seq.append(self.add_child(name, Resample(ch, cfg["conv_resample"], up=True, rng=rng)))
                    ds //= 2
                self.output_blocks.append(seq)
        _check_groups(ch, "out.0")
        self.out_norm = self.add_child("out.0", GroupNorm(ch, GROUPS, act="silu"))
        self.out_conv = self.add_child("out.2", Conv2d(ch, cfg["out_channels"], 3, rng=rng))
        for p in self.out_conv.parameters().values():
            p[...] = 0.0
        self._state = None

    @classmethod
    def from_torchcfm(cls, dim, num_channels, num_res_blocks, *, channel_mult=None, learn_sigma=False,
                      class_cond=False, num_classes=1000, use_checkpoint=False, attention_resolutions="16",
                      num_heads=1, num_head_channels=-1, num_heads_upsample=-1, use_scale_shift_norm=False,
                      dropout=0, resblock_updown=False, use_fp16=False, use_new_attention_order=False, seed=0):
        """The ADMUNet of torchcfm's ``UNetModelWrapper(...)`` with the same arguments (mapping: module docstring)."""
        if use_fp16:
            raise InputError("ADMUNet.from_torchcfm: use_fp16=True is not supported; cast the state dict to float32 "
                             "and pass use_fp16=False")
        if not hasattr(dim, "__len__") or len(dim) != 3:
            raise InputError(f"ADMUNet.from_torchcfm: dim must be (C, H, W), got {dim!r}")
        image_size = _int("dim[-1]", dim[-1], 1)
        if channel_mult is None:
            if image_size not in TORCHCFM_CHANNEL_MULT:
                raise InputError(f"ADMUNet.from_torchcfm: no default channel_mult for image size {image_size}; "
                                 f"known: {', '.join(map(str, TORCHCFM_CHANNEL_MULT))}")
            channel_mult = TORCHCFM_CHANNEL_MULT[image_size]
        try:
            res = [int(r) for r in str(attention_resolutions).split(",")]
        except ValueError:
            res = []
        if not res or min(res) < 1:
            raise InputError(f"ADMUNet.from_torchcfm: attention_resolutions must be positive pixel sizes like "
                             f"'16,8', got {attention_resolutions!r}")
        c = _int("dim[0]", dim[0], 1)
        ds = [image_size // r for r in res if r <= image_size]       # (torchcfm's 0 for r > image_size never matches)
        return cls(in_channels=c, model_channels=num_channels, out_channels=2 * c if learn_sigma else c,
                   num_res_blocks=num_res_blocks, attention_resolutions=ds,
                   dropout=dropout, channel_mult=list(channel_mult), conv_resample=True,
                   num_classes=num_classes if class_cond else None, use_checkpoint=use_checkpoint,
                   num_heads=num_heads, num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
                   use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
                   use_new_attention_order=use_new_attention_order, image_size=image_size, label_padding=False,
                   seed=seed)

    def config(self):
        """All config keys (JSON-able): ``ADMUNet(**m.config())`` rebuilds the architecture."""
        cfg = dict(self._config)
        cfg["channel_mult"] = list(cfg["channel_mult"])
        cfg["attention_resolutions"] = list(cfg["attention_resolutions"])
        return cfg

    def _check_inputs(self, x, t, y):
        x = check_array("x", x, (None, self.in_channels, None, None), self.dtype)
        n, _, hh, ww = x.shape
        if n == 0:
            raise InputError("x must hold at least one sample, got n=0")
        f = 2 ** (self.levels - 1)
        if hh % f or ww % f or hh == 0 or ww == 0:
            raise InputError(f"x has spatial size {hh}x{ww}; ADMUNet with {self.levels} levels needs sizes "
                             f"divisible by {f}")
        t = check_array("t", t, (n,), self.dtype)
        k = self._config["num_classes"]
        if y is None:
            if k is not None and not self._config["label_padding"]:
                raise InputError("y (class labels) is required: this class-conditional model has no 'no label' row "
                                 "(label_padding=False)")
            if k is not None:
                y = np.full(n, k, dtype=np.int64)
        else:
            if k is None:
                raise InputError("y given, but the model is unconditional (num_classes=None)")
            y = np.asarray(y)
            rows = self.label_emb.param("weight").shape[0]
            if y.shape != (n,) or y.dtype.kind not in "iu":
                raise InputError(f"y must be integer labels of shape ({n},), got {y.dtype} {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= rows):
                pad = f" ({k} = no label)" if rows > k else ""
                raise InputError(f"y must lie in [0, {rows - 1}]{pad}, got range [{y.min()}, {y.max()}]")
            y = y.astype(np.int64)
        return x, t, y

    def _fourier(self, x):
        """flow_matching's base-2 Fourier features of x (n, C, H, W): (n, 4C, H, W) [sin(w x), cos(w x)], the C
        channels each repeated for w = 2π·2^6, 2π·2^7; returns (features, the arguments w x)."""
        dt = x.dtype.type
        w = (dt(2.0) ** np.arange(6, 8, dtype=x.dtype)) * dt(2.0) * dt(np.pi)
        w = np.tile(w, x.shape[1])
        arg = np.repeat(x, 2, axis=1) * w[None, :, None, None]
        return np.concatenate([np.sin(arg), np.cos(arg)], axis=1), arg, w

    @staticmethod
    def _seq_forward(seq, h, emb_act, train, rng):
        for layer in seq:
            if getattr(layer, "uses_emb", False):
                h = layer.forward(h, emb_act, train=train, rng=rng)
            else:
                h = layer.forward(h, train=train)
        return h

    @staticmethod
    def _seq_backward(seq, d, demb):
        for layer in reversed(seq):
            if getattr(layer, "uses_emb", False):
                d, de = layer.backward(d)
                demb += de
            else:
                d = layer.backward(d)
        return d

    def _run(self, x, t, y, train):
        x, t, y = self._check_inputs(x, t, y)
        fourier = None
        if self._config["with_fourier_features"]:
            feats, arg, w = self._fourier(x)
            fourier = (arg, w)
            x = np.concatenate([x, feats], axis=1)
        rng = self._drop_rng if train and self.train_dropout else None
        emb = self.time_embed[1].forward(
            self.time_embed[0].forward(timestep_embedding(t, self._config["model_channels"], self.dtype),
                                       train=train), train=train)
        if y is not None:
            emb = emb + self.label_emb.forward(y, train=train)
        emb_act = self.emb_act.forward(np.ascontiguousarray(emb), train=train)
        h = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
        hs = []
        for seq in self.input_blocks:
            h = self._seq_forward(seq, h, emb_act, train, rng)
            hs.append(h)
        h = self._seq_forward(self.middle_block, h, emb_act, train, rng)
        widths = []
        for seq in self.output_blocks:
            widths.append(h.shape[0])
            h = self._seq_forward(seq, np.concatenate([h, hs.pop()], axis=0), emb_act, train, rng)
        h = self.out_conv.forward(self.out_norm.forward(h, train=train), train=train)
        if train:
            self._state = dict(n=x.shape[0], shape=h.shape, widths=widths, fourier=fourier, labels=y is not None)
        return h.transpose(1, 0, 2, 3).copy()           # a new array: the layers' buffers are reused

    def __call__(self, x, t, y=None):
        """Velocity (n, out_channels, H, W) at x (n, in_channels, H, W), t (n,), labels y (n,) or None; no caching."""
        return self._run(x, t, y, False)

    def forward(self, x, t, y=None):
        """Training forward: as ``__call__`` (plus dropout) but caches what :meth:`backward` needs."""
        return self._run(x, t, y, True)

    def backward(self, dv):
        """Overwrite the gradients with d(sum(dv*v))/dparam for the last :meth:`forward`; returns dx like x."""
        st = self._state
        if st is None:
            raise InputError("backward called before forward")
        c, n, hh, ww = st["shape"]
        d = check_array("dv", dv, (n, c, hh, ww), self.dtype)
        d, _, _ = self.out_norm.backward(self.out_conv.backward(np.ascontiguousarray(d.transpose(1, 0, 2, 3))))
        demb = np.zeros((n, self.emb_dim), dtype=self.dtype)
        dskips = []   # output block j took input block L-1-j's output: walking j backwards lists them 0, 1, ...
        for seq, width in zip(reversed(self.output_blocks), reversed(st["widths"])):
            d = self._seq_backward(seq, d, demb)
            d, ds = d[:width], d[width:]
            dskips.append(ds)
        d = self._seq_backward(self.middle_block, d, demb)
        for i in reversed(range(len(self.input_blocks))):
            d = d + dskips[i]
            d = self._seq_backward(self.input_blocks[i], d, demb)
        dx = d.transpose(1, 0, 2, 3).copy()             # a new array: the layers' buffers are reused
        demb = self.emb_act.backward(demb)
        if st["labels"]:
            self.label_emb.backward(demb)
        elif self.label_emb is not None:
            self.label_emb.zero_grad()
        self.time_embed[0].backward(self.time_embed[1].backward(demb), need_dx=False)
        if st["fourier"] is not None:
            arg, w = st["fourier"]
            cx = self.in_channels
            half = 2 * cx
            dfeat = dx[:, cx:]
            darg = (dfeat[:, :half] * np.cos(arg) - dfeat[:, half:] * np.sin(arg)) * w[None, :, None, None]
            dx = dx[:, :cx] + darg.reshape(n, cx, 2, hh, ww).sum(axis=2)
        return dx
