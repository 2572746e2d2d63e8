"""The networks: MLPVelocity (2-D / vector data), UNetVelocity (images), Classifier (features for metrics).

Velocity models: ``m(x, t)`` (inference) and ``m.forward(x, t)`` (training, caches) map x (n, ...) and t (n,) in
[0, 1] to a velocity of x's shape; ``m.backward(dv)`` overwrites ``m.gradients()`` with d(sum(dv*v))/dparam and
returns d(sum(dv*v))/dx. ``m.config()`` is the JSON-serialisable dict of constructor arguments. Inputs are cast to
the model's dtype (float32 unless ``m.astype(np.float64)``); the returned arrays are fresh (not internal buffers).
"""
import numpy as np

from .._validate import check_array, check_choice, check_int
from ..errors import InputError
from .layers import SELU, Conv2d, Flatten, GlobalAvgPool, GroupNorm, Linear, Module, ResBlock, TimeEmbedding



def _check_xt(x, t, tail, dtype):
    x = check_array("x", x, (None, *tail), dtype)
    t = check_array("t", t, (x.shape[0],), dtype)
    if x.shape[0] == 0:
        raise InputError("x must hold at least one sample, got n=0")
    return x, t


class MLPVelocity(Module):
    """v(x, t) for x (n, dim): ``depth`` hidden Linear layers of width ``hidden`` on [x, t], each followed by the
    activation ``act`` (``"silu"``, fused into the layer, or ``"selu"``), then Linear to dim.

    Parameter names: ``layers.{i}.weight`` (out, in) and ``layers.{i}.bias``, i = 0..depth.

    torchcfm's ``MLP(dim, out_dim=None, w=64, time_varying=True)`` (``torchcfm/models/models.py``: three hidden
    Linear + SELU layers on ``torch.cat([x, t[:, None]], -1)``, names ``net.0/2/4/6``) is
    :meth:`from_torchcfm`: ``MLPVelocity(dim, hidden=w, depth=3, act="selu")`` with ``net.{2i}`` → ``layers.{i}``.
    """

    ACTIVATIONS = ("silu", "selu")

    def __init__(self, dim=2, hidden=256, depth=4, seed=0, act="silu"):
        super().__init__()
        self._config = dict(dim=check_int("dim", dim, 1), hidden=check_int("hidden", hidden, 1),
                            depth=check_int("depth", depth, 1), seed=check_int("seed", seed, 0))
        if check_choice("act", act, self.ACTIVATIONS) != "silu":     # the default stays out: older files and
            self._config["act"] = act                                  # checkpoints keep their config
        rng = np.random.default_rng(seed)
        sizes = [dim + 1] + [hidden] * depth
        fused = "silu" if act == "silu" else None
        self.layers = [self.add_child(f"layers.{i}", Linear(sizes[i], sizes[i + 1], act=fused, rng=rng))
                       for i in range(depth)]
        self.layers.append(self.add_child(f"layers.{depth}", Linear(hidden, dim, rng=rng)))
        self.acts = [SELU() for _ in range(depth)] if act == "selu" else []
        self.dim = dim

    @classmethod
    def from_torchcfm(cls, dim, out_dim=None, w=64, time_varying=False, *, state_dict=None, seed=0):
        """The MLP of torchcfm's ``MLP(dim, out_dim, w, time_varying)`` (see the class doc), holding ``state_dict``
        (its ``net.{0,2,4,6}.weight/bias`` arrays) when given. torchcfm's velocity models need ``time_varying=True``
        and ``out_dim`` None or ``dim``: anything else is an InputError."""
        if not time_varying:
            raise InputError("torchcfm MLP with time_varying=False takes no time input; a velocity model v(x, t) "
                             "needs time_varying=True")
        if out_dim not in (None, dim):
            raise InputError(f"torchcfm MLP with out_dim={out_dim} != dim={dim} is not a velocity field of x")
        model = cls(dim=dim, hidden=w, depth=3, seed=seed, act="selu")
        if state_dict is not None:
            names = {f"net.{2 * i}.{p}": f"layers.{i}.{p}" for i in range(4) for p in ("weight", "bias")}
            unknown = sorted(set(state_dict) - set(names))
            if unknown:
                raise InputError(f"torchcfm MLP state dict: unexpected key {unknown[0]!r} (expected "
                                 f"net.0/2/4/6.weight and .bias)")
            model.load_parameters({names[k]: v for k, v in state_dict.items()})
        return model

    def config(self):
        """Constructor arguments: ``MLPVelocity(**m.config())`` rebuilds the architecture."""
        return dict(self._config)

    def _run(self, x, t, train):
        x, t = _check_xt(x, t, (self.dim,), self.dtype)
        h = self._buffer("in", (x.shape[0], self.dim + 1), train)
        h[:, :self.dim] = x
        h[:, self.dim] = t
        for i, layer in enumerate(self.layers):
            h = layer.forward(h, train=train)
            if i < len(self.acts):
                h = self.acts[i].forward(h, train=train)
        return h.copy() if train else h

    def __call__(self, x, t):
        """Velocity (n, dim) at x (n, dim), t (n,); no caching."""
        return self._run(x, t, False)

    def forward(self, x, t):
        """Training forward: as ``__call__`` but caches what :meth:`backward` needs."""
        return self._run(x, t, True)

    def backward(self, dv):
        """Overwrite the gradients with d(sum(dv*v))/dparam for the last :meth:`forward`; returns dx (n, dim)."""
        x = self.layers[0].cached_input()
        if x is None:
            raise InputError("backward called before forward")
        d = check_array("dv", dv, (x.shape[0], self.dim), self.dtype)
        for i in reversed(range(len(self.layers))):
            if i < len(self.acts):
                d = self.acts[i].backward(d)
            d = self.layers[i].backward(d)
        return d[:, :self.dim].copy()


class UNetVelocity(Module):
    """v(x, t) for images x (n, channels, size, size): a small U-Net with time-conditioned residual blocks.

    Levels ``mults`` (channel multipliers of ``width``; resolution halves between levels by stride-2 convs and
    doubles on the way up by nearest-upsample + conv), ``blocks`` residual blocks per level on each path, one middle
    block, skip connections concatenated per level, GroupNorm with ``groups`` groups, time MLP of width
    ``time_dim`` (default 4*width) on a sinusoidal embedding. ``size`` must be divisible by 2**(len(mults)-1).
    """

    def __init__(self, channels=1, *, size=28, width=32, mults=(1, 2, 2), blocks=1, groups=8, time_dim=None, seed=0):
        super().__init__()
        channels = check_int("channels", channels, 1)
        size = check_int("size", size, 1)
        width = check_int("width", width, 1)
        blocks = check_int("blocks", blocks, 1)
        groups = check_int("groups", groups, 1)
        mults = tuple(check_int("mults entry", m, 1) for m in mults)
        if not 1 <= len(mults) <= 4:
            raise InputError(f"mults must have 1 to 4 levels, got {mults}")
        if size % 2 ** (len(mults) - 1):
            raise InputError(f"size {size} must be divisible by 2**(levels-1) = {2 ** (len(mults) - 1)}")
        time_dim = 4 * width if time_dim is None else check_int("time_dim", time_dim, 1)
        chans = [width * m for m in mults]
        for c in (width, *chans):
            if c % groups:
                raise InputError(f"groups ({groups}) must divide every channel count, not {c} (width={width})")
        self._config = dict(channels=channels, size=size, width=width, mults=list(mults), blocks=blocks,
                            groups=groups, time_dim=time_dim, seed=check_int("seed", seed, 0))
        rng = np.random.default_rng(seed)
        self.channels, self.size, self.chans = channels, size, chans
        self.time_embed = self.add_child("time_embed", TimeEmbedding(width))   # no parameters
        self.time = [self.add_child("time.0", Linear(width, time_dim, act="silu", rng=rng)),
                     self.add_child("time.1", Linear(time_dim, time_dim, act="silu", rng=rng))]
        self.conv_in = self.add_child("conv_in", Conv2d(channels, width, 3, rng=rng))
        self.down, self.downsample, c = [], [], width
        for i, ci in enumerate(chans):
            level = []
            for b in range(blocks):
                level.append(self.add_child(f"down.{i}.{b}", ResBlock(c, ci, time_dim, groups, rng=rng)))
                c = ci
            self.down.append(level)
            if i < len(chans) - 1:
                self.downsample.append(self.add_child(f"downsample.{i}", Conv2d(c, c, 3, stride=2, rng=rng)))
        self.mid = self.add_child("mid", ResBlock(c, c, time_dim, groups, rng=rng))
        self.up, self.upsample = [None] * len(chans), [None] * len(chans)
        for i in reversed(range(len(chans))):
            level = []
            for b in range(blocks):
                c_in = c + chans[i] if b == 0 else chans[i]
                level.append(self.add_child(f"up.{i}.{b}", ResBlock(c_in, chans[i], time_dim, groups, rng=rng)))
                c = chans[i]
            self.up[i] = level
            if i > 0:
                self.upsample[i] = self.add_child(f"upsample.{i}", Conv2d(c, c, 3, up=2, rng=rng))
        self.norm_out = self.add_child("norm_out", GroupNorm(c, groups, act="silu"))
        self.conv_out = self.add_child("conv_out", Conv2d(c, channels, 3, rng=rng))
        self._skip_channels = None

    def config(self):
        """Constructor arguments: ``UNetVelocity(**m.config())`` rebuilds the architecture."""
        cfg = dict(self._config)
        cfg["mults"] = list(cfg["mults"])
        return cfg

    def _encode(self, x, t, train):
        """Time embedding, encoder and middle block: ``(h (C, n, h, w), temb (n, time_dim), skips per level)``."""
        x, t = _check_xt(x, t, (self.channels, self.size, self.size), self.dtype)
        temb = self.time_embed.forward(t, train=train)
        for lin in self.time:
            temb = lin.forward(temb, train=train)
        h = self.conv_in.forward(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), train=train)
        skips = []
        for i, level in enumerate(self.down):
            for block in level:
                h = block.forward(h, temb, train=train)
            skips.append(h)
            if i < len(self.down) - 1:
                h = self.downsample[i].forward(h, train=train)
        return self.mid.forward(h, temb, train=train), temb, skips

    def latent(self, x, t):
        """The encoder + middle-block features at x (n, channels, size, size) and t (n,), flattened per sample:
        (n, C·h·w) with C = width·mults[-1] and h = w = size / 2**(levels-1) (the paper's latent-stability probe);
        no caching."""
        h, _, _ = self._encode(x, t, False)
        return np.ascontiguousarray(h.transpose(1, 0, 2, 3)).reshape(h.shape[1], -1)

    def _run(self, x, t, train):
        h, temb, skips = self._encode(x, t, train)
        widths = []
        for i in reversed(range(len(self.up))):
            widths.append(h.shape[0])
            h = np.concatenate([h, skips[i]], axis=0)
            for block in self.up[i]:
                h = block.forward(h, temb, train=train)
            if i > 0:
                h = self.upsample[i].forward(h, train=train)
        if train:
            self._skip_channels = widths[::-1]
        h = self.conv_out.forward(self.norm_out.forward(h, train=train), train=train)
        return h.transpose(1, 0, 2, 3).copy()           # a new array: the layers' buffers are reused

    def __call__(self, x, t):
        """Velocity (n, channels, size, size) at x of that shape and t (n,); no caching."""
        return self._run(x, t, False)

    def forward(self, x, t):
        """Training forward: as ``__call__`` but caches what :meth:`backward` needs."""
        return self._run(x, t, True)

    def backward(self, dv):
        """Overwrite the gradients with d(sum(dv*v))/dparam for the last :meth:`forward`; returns dx like x."""
        if self._skip_channels is None:
            raise InputError("backward called before forward")
        n = self.conv_in.cached_input().shape[1]
        d = check_array("dv", dv, (n, self.channels, self.size, self.size), self.dtype)
        d = self.conv_out.backward(np.ascontiguousarray(d.transpose(1, 0, 2, 3)))
        d, _, _ = self.norm_out.backward(d)
        dtemb = np.zeros((n, self.time[-1].param("weight").shape[0]), dtype=self.dtype)
        dskips = [None] * len(self.up)
        for i in range(len(self.up)):
            if i > 0:
                d = self.upsample[i].backward(d)
            for block in reversed(self.up[i]):
                d, dt = block.backward(d)
                dtemb += dt
            c = self._skip_channels[i]
            d, dskips[i] = d[:c], d[c:]
        d, dt = self.mid.backward(d)
        dtemb += dt
        for i in reversed(range(len(self.down))):
            if i < len(self.down) - 1:
                d = self.downsample[i].backward(d)
            d = d + dskips[i]
            for block in reversed(self.down[i]):
                d, dt = block.backward(d)
                dtemb += dt
        dx = self.conv_in.backward(d)
        self.time[0].backward(self.time[1].backward(dtemb), need_dx=False)
        return dx.transpose(1, 0, 2, 3).copy()          # a new array: the layers' buffers are reused


class Classifier(Module):
    """Small CNN on (n, channels, size, size): conv3x3+SiLU (width), two stride-2 conv3x3+SiLU (2w, 4w), then

    - ``hidden=0``: global average pool -> features (n, 4*width);
    - ``hidden>0``: flatten the (4w, size/4, size/4) maps, Linear+SiLU -> features (n, hidden) (keeps where in the
      image a pattern is: the FD feature nets use this form);

    and Linear -> logits (n, n_classes). ``size`` must be divisible by 4.
    """

    def __init__(self, channels=1, *, size=28, n_classes=10, width=16, hidden=0, seed=0):
        super().__init__()
        channels = check_int("channels", channels, 1)
        size = check_int("size", size, 1)
        n_classes = check_int("n_classes", n_classes, 2)
        width = check_int("width", width, 1)
        hidden = check_int("hidden", hidden, 0)
        if size % 4:
            raise InputError(f"size {size} must be divisible by 4 (two stride-2 convolutions)")
        self._config = dict(channels=channels, size=size, n_classes=n_classes, width=width,
                            seed=check_int("seed", seed, 0))
        if hidden:
            self._config["hidden"] = hidden
        rng = np.random.default_rng(seed)
        self.channels, self.size = channels, size
        self.convs = [self.add_child("conv.0", Conv2d(channels, width, 3, act="silu", rng=rng)),
                      self.add_child("conv.1", Conv2d(width, 2 * width, 3, stride=2, act="silu", rng=rng)),
                      self.add_child("conv.2", Conv2d(2 * width, 4 * width, 3, stride=2, act="silu", rng=rng))]
        if hidden:
            self.pool = self.add_child("flatten", Flatten())   # no parameters
            self.hidden = self.add_child("hidden", Linear(4 * width * (size // 4) ** 2, hidden, act="silu",
                                                          rng=rng))
        else:
            self.pool = self.add_child("pool", GlobalAvgPool())   # no parameters
            self.hidden = None
        self.fc = self.add_child("fc", Linear(hidden or 4 * width, n_classes, rng=rng))

    def config(self):
        """Constructor arguments: ``Classifier(**m.config())`` rebuilds the architecture."""
        return dict(self._config)

    def _features(self, x, train):
        x = check_array("x", x, (None, self.channels, self.size, self.size), self.dtype)
        if x.shape[0] == 0:
            raise InputError("x must hold at least one sample, got n=0")
        h = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
        for conv in self.convs:
            h = conv.forward(h, train=train)
        h = self.pool.forward(h, train=train)
        return h if self.hidden is None else self.hidden.forward(h, train=train)

    def features(self, x):
        """Penultimate features (n, hidden or 4*width) of images x (n, channels, size, size); no caching."""
        return self._features(x, False)

    def __call__(self, x):
        """Logits (n, n_classes); no caching."""
        return self.fc.forward(self._features(x, False), train=False)

    def forward(self, x):
        """Training forward: logits (n, n_classes), caching what :meth:`backward` needs."""
        return self.fc.forward(self._features(x, True), train=True).copy()

    def backward(self, dlogits):
        """Overwrite the gradients with d(sum(dlogits*logits))/dparam; returns dx (n, channels, size, size)."""
        x = self.fc.cached_input()
        if x is None:
            raise InputError("backward called before forward")
        d = check_array("dlogits", dlogits, (x.shape[0], self.fc.param("weight").shape[0]), self.dtype)
        d = self.fc.backward(d)
        if self.hidden is not None:
            d = self.hidden.backward(d)
        d = self.pool.backward(d)
        for conv in reversed(self.convs):
            d = conv.backward(d)
        return d.transpose(1, 0, 2, 3).copy()           # a new array: the layers' buffers are reused


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of logits (n, k) against integer labels (n,) in [0, k).

    Returns (loss: float, dlogits (n, k) = d loss / d logits) in the dtype of ``logits``.
    """
    if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.dtype.kind != "f":
        raise InputError(f"logits must be a float array of shape (n, k), got {getattr(logits, 'shape', logits)}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers of shape ({logits.shape[0]},), got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise InputError(f"labels must lie in [0, {logits.shape[1]}), got range [{labels.min()}, {labels.max()}]")
    if not np.all(np.isfinite(logits)):
        raise InputError("logits contain NaN or Inf")
    n = logits.shape[0]
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), labels].mean()
    d = np.exp(logp)
    d[np.arange(n), labels] -= 1.0
    return float(loss), (d / n).astype(logits.dtype)


MODELS = {"MLPVelocity": MLPVelocity, "UNetVelocity": UNetVelocity, "Classifier": Classifier}
