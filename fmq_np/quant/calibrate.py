"""Quantization calibrated along the flow: statistics of a float velocity model on the states sampling visits, and
the quantizers that use them (importance-weighted codebooks, error feedback, mixed widths, bias correction).

    cal = fmq_np.quant.calibrate(model, data=None, n=64, solver="heun2", steps=8, seed=0)
    qm = fmq_np.quant.quantize_model(model.parameters(), bits=2, method="ot-opt", calibration=cal)

**What calibrate sees.** ``quant`` imports no model or layer of ``fmq_np.nn`` (:mod:`~fmq_np.quant.tune` borrows its
optimiser): it uses the model's public surface only, ``model(x, t)``, ``model.forward(x, t)`` /
``model.backward(dv)`` (training forward and its gradients), ``model.parameters()`` / ``model.gradients()`` (live
arrays) and the hook ``model.weight_inputs()`` (see
``fmq_np.nn.layers.Module.weight_inputs``: per Linear / Conv2d weight, its cached input rows X, im2col rows for a
convolution, so that ``z = X @ W.reshape(out, fan_in).T + b``). A model without the hook is refused.

**The calibration states (the mix).** ``n`` noise samples (``fmq_np.flow.noise(model, n, seed)``) are integrated by
the float model with ``solver`` / ``steps``; every state at which the solver evaluates the velocity is kept (heun2:
2·steps states per trajectory, at t = i/steps and t = (i+1)/steps). These are exactly the (x, t) the sampler feeds
the network, where a quantized network's velocity error turns into sample error. With ``data``, ``train_pairs``
points of the training path are added (CondOT x_t = (1−t)·x0 + t·x1, fresh noise x0, t ~ U[0, 1), data x1): by
default one for every four trajectory states (20 % of the mix), because a quantized model drifts off the float
trajectories and the training path covers the neighbourhood of the data at every t, while most of the weight stays
where sampling goes. Without data the mix is the trajectories alone.

**Per layer** (weight name → :class:`LayerStats`): ``h`` = XᵀX / rows (fan_in × fan_in, float64: the input Hessian
of ‖(W − Ŵ)X‖² up to the factor 2·rows), ``mean`` = mean input row (fan_in,), ``rows`` (count),
``channel_moment`` = mean x² per input channel (C_in,): diag(h) averaged over the channel's k·k taps for a
convolution (zero padding counts), diag(h) for a Linear — the importance-matrix statistic.

**Fisher** (parameter name → array like it, float64): the mean over calibration states of the squared gradient of
the FM loss ½‖v(x, t) − u‖² with targets drawn from the model's Gaussian predictive, u = v(x, t) + ε, ε ~ N(0, I):
E[g²] = diag(JᵀJ) per state, the Fisher information of the velocity (the Gauss–Newton diagonal). Chosen over the
empirical Fisher with the data targets u = x1 − x0 because it needs no data, because squared gradients of a batch
are unbiased for the sum of the per-state Fishers (the ε of different states are independent, cross terms vanish),
and because the data targets' irreducible variance (u is random given x_t) would dominate the statistic.

**Sensitivity** (weight name → (len(widths),) float64): measured, not bounded: the mean squared velocity error per
value, mean((v_q − v)²) over up to ``sens_states`` calibration states, with that one tensor quantized at each width
by ``sens_method`` (per channel) and all others in float. Mixed precision adds them up over tensors.

**Memory.** Calibration states: (n·evals + train_pairs) × sample size float32 (MNIST, n = 64, heun2 8 steps:
1,024 × 784 × 4 B = 3.2 MB). Per layer h is fan_in² float64 (a 3×3 convolution of 64 input channels: 576² × 8 B =
2.7 MB; the shipped U-Nets hold under 20 MB in all); Fisher is one float64 per parameter. Batches of ``batch_size``
states go through the network; a convolution's im2col rows come a block of samples at a time, as in its forward.

**What ``quantize_model(..., calibration=cal)`` turns on** (per channel, for every ≥ 2-D float tensor, 1-D ones
kept in float as without calibration): error feedback (:func:`error_feedback`, GPTQ/OBQ) through the layer's input
Hessian on the method's own codebook, and mixed widths among ``cal.widths`` when ``bits`` is fractional
(:func:`allocate_widths`). Off by default, on request: bias correction (``bias_correction=True``: the mean output
shift (W − Ŵ)·mean(x) of each quantized layer folded into its float bias; it ignores the change of a layer's inputs
by the quantized layers before it) and Fisher-weighted exact codebooks for ``ot-opt``
(:func:`quantize_calibrated` with ``weighted=True``: the weighted DP, not Lloyd). The default is what measured
best (benchmarks/README.md, "Quantization calibrated along the flow": shipped MNIST / Fashion-MNIST U-Nets, FD,
drift, velocity PSNR): error feedback alone beat error feedback + Fisher weights + bias correction at 2 and 3 bits
on both, and Fisher weights alone made the 2-bit FD worse (they concentrate a row's 4 levels on the few weights
with the largest Fisher values and leave the bulk coarse).

:class:`Calibration` saves to / loads from HDF5 (atomic write; a validated load raises FormatError) and records
:func:`~fmq_np.quant.model.weights_digest` of the model's parameters: ``quantize_model`` refuses a calibration taken
from other weights with a one-line InputError.
"""
import json
import math

import numpy as np

from fmq_np._validate import check_int
from fmq_np.errors import FormatError, InputError

FORMAT = "fmq_np.calibration"
FORMAT_VERSION = 1
#: widths (bits) whose sensitivities calibrate measures by default: the choices of mixed precision
DEFAULT_WIDTHS = (2, 3, 4)
#: GPTQ's damping: λ·mean(diag H) is added to the diagonal of H before it is inverted
DAMP = 0.01
#: columns per block of the error-feedback sweep (the deferred update of the later columns is one GEMM per block)
BLOCK = 128


class LayerStats:
    """Input statistics of one weight: ``h`` (fan_in, fan_in), ``mean`` (fan_in,), ``channel_moment`` (C_in,),
    ``rows`` (number of input rows averaged), all float64."""

    def __init__(self, h, mean, channel_moment, rows):
        self.h, self.mean, self.channel_moment, self.rows = h, mean, channel_moment, int(rows)

    @property
    def fan_in(self):
        return self.h.shape[0]


class Calibration:
    """What :func:`calibrate` measured. ``layers``: weight name → :class:`LayerStats`; ``fisher``: parameter name →
    float64 array; ``sensitivity``: weight name → float64 (len(widths),); ``meta``: JSON-serialisable settings with
    ``digest`` (the model's :func:`weights_digest`), ``widths``, ``sens_method``, ``n``, ``solver``, ``steps``,
    ``seed``, ``train_pairs``, ``n_states``, ``model_class``."""

    def __init__(self, layers, fisher, sensitivity, meta):
        self.layers, self.fisher = dict(layers), dict(fisher)
        self.sensitivity, self.meta = dict(sensitivity), dict(meta)

    @property
    def digest(self):
        return self.meta["digest"]

    @property
    def widths(self):
        return tuple(int(b) for b in self.meta["widths"])

    def check_source(self, named_arrays):
        """InputError unless ``named_arrays`` are the weights this calibration was measured on."""
        from fmq_np.quant.model import weights_digest
        if weights_digest(named_arrays) != self.digest:
            raise InputError("calibration was taken from another model (its weights digest differs from these "
                             "weights'); calibrate this model")

    def save(self, path):
        """Write to ``path`` (HDF5, atomic)."""
        from fmq_np.io._h5 import LIBVER, atomic_h5, set_str
        with atomic_h5(path, libver=LIBVER) as f:
            set_str(f, "format", FORMAT)
            f.attrs["format_version"] = FORMAT_VERSION
            set_str(f, "meta", json.dumps(self.meta))
            g = f.create_group("layers")
            for i, (name, st) in enumerate(self.layers.items()):
                s = g.create_group(str(i))
                set_str(s, "name", name)
                s.attrs["rows"] = st.rows
                for key in ("h", "mean", "channel_moment"):
                    s.create_dataset(key, data=getattr(st, key))
                if name in self.sensitivity:
                    s.create_dataset("sensitivity", data=self.sensitivity[name])
            g = f.create_group("fisher")
            for i, (name, a) in enumerate(self.fisher.items()):
                d = g.create_dataset(str(i), data=a)
                set_str(d, "name", name)

    @classmethod
    def load(cls, path):
        """Read a file :meth:`save` wrote; FormatError (naming the file) on anything missing, malformed or
        non-finite."""
        from fmq_np.io._h5 import check_format, open_h5, read_attr, read_dataset
        with open_h5(path) as f:
            check_format(f, path, FORMAT, FORMAT_VERSION, "calibration")
            try:
                meta = json.loads(read_attr(f, "meta", str, path))
            except ValueError:
                raise FormatError(f"{path}: calibration meta is not valid JSON") from None
            if not isinstance(meta, dict) or not isinstance(meta.get("digest"), str) or not _int_list(
                    meta.get("widths")):
                raise FormatError(f"{path}: calibration meta lacks a digest or its widths")
            n_widths = len(meta["widths"])
            layers, sens, fisher = {}, {}, {}
            for key, grp in _numbered(f, "layers", path):
                name = read_attr(grp, "name", str, path)
                rows = read_attr(grp, "rows", int, path)
                h = read_dataset(grp, "h", path, dtype=np.float64)
                if h.ndim != 2 or h.shape[0] != h.shape[1] or h.shape[0] == 0:
                    raise FormatError(f"{path}: layer {name!r}: h has shape {h.shape}, expected square")
                mean = read_dataset(grp, "mean", path, dtype=np.float64, shape=(h.shape[0],))
                moment = read_dataset(grp, "channel_moment", path, dtype=np.float64)
                if moment.ndim != 1 or moment.size == 0 or h.shape[0] % moment.size or rows < 1:
                    raise FormatError(f"{path}: layer {name!r}: channel_moment shape {moment.shape} or rows {rows} "
                                      f"do not fit fan_in {h.shape[0]}")
                if "sensitivity" in grp:
                    sens[name] = read_dataset(grp, "sensitivity", path, dtype=np.float64, shape=(n_widths,))
                    _finite(sens[name], path, f"layer {name!r} sensitivity")
                for what, a in (("h", h), ("mean", mean), ("channel_moment", moment)):
                    _finite(a, path, f"layer {name!r} {what}")
                if name in layers:
                    raise FormatError(f"{path}: layer {name!r} appears twice")
                layers[name] = LayerStats(h, mean, moment, rows)
            for key, d in _numbered(f, "fisher", path, datasets=True):
                name = read_attr(d, "name", str, path)
                a = read_dataset(f["fisher"], key, path, dtype=np.float64)
                _finite(a, path, f"fisher {name!r}")
                if (a < 0).any():
                    raise FormatError(f"{path}: fisher {name!r} has negative values")
                fisher[name] = a
        return cls(layers, fisher, sens, meta)


def _int_list(v):
    return isinstance(v, list) and len(v) > 0 and all(isinstance(b, int) and 1 <= b <= 8 for b in v)


def _finite(a, path, what):
    if not np.isfinite(a).all():
        raise FormatError(f"{path}: {what} contains NaN or Inf")


def _numbered(f, group, path, datasets=False):
    """``(key, member)`` of ``f[group]`` in the numeric order 0, 1, ...; FormatError on other keys."""
    import h5py
    g = f.get(group)
    if not isinstance(g, h5py.Group):
        raise FormatError(f"{path}: group {group!r} missing")
    keys = list(g.keys())
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        raise FormatError(f"{path}: group {group!r} holds unexpected members")
    kind = h5py.Dataset if datasets else h5py.Group
    for i in range(len(keys)):
        m = g[str(i)]
        if not isinstance(m, kind):
            raise FormatError(f"{path}: {group}/{i} is not a {'dataset' if datasets else 'group'}")
        yield str(i), m


def load_calibration(path):
    """:meth:`Calibration.load`."""
    return Calibration.load(path)


# ---------------------------------------------------------------------------------------------------------------
# calibrate


def _check_model(model):
    for attr in ("forward", "backward", "parameters", "gradients", "config"):
        if not callable(getattr(model, attr, None)):
            raise InputError(f"calibrate needs a velocity model with {attr}(); got {type(model).__name__}")
    if not callable(getattr(model, "weight_inputs", None)):
        raise InputError(f"calibrate does not know the layers of {type(model).__name__}: it has no weight_inputs() "
                         "hook (fmq_np.nn models have one)")


def trajectory_states(model, n, solver, steps, seed):
    """States (x, t) at which ``solver`` evaluates the float model on its way from the noise of ``seed`` to data:
    x float32 (n·evals, *sample shape), t float32 (n·evals,), in evaluation order."""
    from fmq_np.flow.sampling import noise
    from fmq_np.flow.solvers import integrate
    xs, ts = [], []

    def f(x, t):
        tv = np.full(len(x), t, dtype=np.float32)
        xs.append(np.array(x, dtype=np.float32))
        ts.append(tv)
        v = model(x, tv)
        if not np.isfinite(v).all():
            raise InputError(f"calibration: the model's velocity is not finite at t={t:.4g} (non-finite "
                             "activations); check the model's weights")
        return v

    integrate(f, noise(model, n, seed), solver=solver, steps=steps)
    return np.concatenate(xs), np.concatenate(ts)


def calibration_states(model, data, n, solver, steps, seed, train_pairs, rng):
    """The calibration mix (module docstring): :func:`trajectory_states` of ``n`` trajectories, then ``train_pairs``
    CondOT training-path points on ``data`` drawn from ``rng`` (None: a quarter of the trajectory states with data,
    none without). Returns ``(x, t, n_traj)``: x float32 (N, *sample shape), t float32 (N,), the first ``n_traj``
    rows from the trajectories."""
    from fmq_np.flow.paths import condot_sample
    from fmq_np.flow.shapes import check_data
    x, t = trajectory_states(model, n, solver, int(steps), seed)
    n_traj = len(x)
    if train_pairs is None:
        train_pairs = n_traj // 4 if data is not None else 0
    check_int("train_pairs", train_pairs, 0)
    if train_pairs and data is None:
        raise InputError("train_pairs > 0 needs data (the training path's x1)")
    if train_pairs:
        data = check_data(model, data)
        x1 = data[rng.integers(0, len(data), int(train_pairs))]
        tp = rng.random(int(train_pairs), dtype=np.float32)
        xp, _ = condot_sample(rng.standard_normal(x1.shape, dtype=np.float32), x1, tp)
        x, t = np.concatenate([x, xp.astype(np.float32)]), np.concatenate([t, tp])
    return x, t, n_traj


def calibrate(model, data=None, *, n=64, solver="heun2", steps=8, seed=0, train_pairs=None, widths=DEFAULT_WIDTHS,
              sens_method="ot-opt", sens_states=256, batch_size=128):
    """Measure a float velocity model along its own sampling trajectories → :class:`Calibration` (module docstring).

    ``n`` trajectories from ``flow.noise(model, n, seed)`` integrated by ``solver`` / ``steps``; ``data``
    (n_data, *sample shape) optionally adds ``train_pairs`` CondOT training-path points (default: a quarter of the
    number of trajectory states; 0 without data). ``widths``: the bit widths whose per-tensor sensitivities are
    measured (mixed precision chooses among them), with ``sens_method`` per channel on up to ``sens_states``
    states. Everything is seeded by ``seed``: two runs give bitwise equal statistics. The model's parameters are
    restored after the sensitivity runs (they are modified in place, one tensor at a time, meanwhile).
    """
    from fmq_np.flow.solvers import check_solver
    from fmq_np.quant.model import weights_digest
    from fmq_np._validate import check_bits
    from fmq_np.quant.tensor import METHODS
    _check_model(model)
    n, batch_size = check_int("n", n, 1), check_int("batch_size", batch_size, 1)
    sens_states = check_int("sens_states", sens_states, 1)
    check_solver(solver, steps)
    check_int("seed", seed, 0)
    if sens_method not in METHODS:
        raise InputError(f"sens_method must be one of {', '.join(METHODS)}; got {sens_method!r}")
    if isinstance(widths, (int, np.integer)) or not hasattr(widths, "__iter__"):
        raise InputError(f"widths must be a sequence of bit widths, got {widths!r}")
    widths = sorted({check_bits(b, "widths") for b in widths})
    if not widths:
        raise InputError("widths must name at least one bit width")
    params = model.parameters()
    digest = weights_digest(params)
    with np.errstate(over="ignore", invalid="ignore"):      # non-finite activations are detected and reported
        return _calibrate(model, data, n, solver, int(steps), int(seed), train_pairs, widths, sens_method,
                          sens_states, batch_size, params, digest)


def _calibrate(model, data, n, solver, steps, seed, train_pairs, widths, sens_method, sens_states, batch_size,
               params, digest):
    rng = np.random.default_rng([int(seed), 13])
    x, t, n_traj = calibration_states(model, data, n, solver, steps, seed, train_pairs, rng)
    train_pairs = len(x) - n_traj

    acc, fisher = {}, {k: np.zeros(v.shape, np.float64) for k, v in params.items()}
    grads = model.gradients()
    for a in range(0, len(x), batch_size):
        xb, tb = np.ascontiguousarray(x[a:a + batch_size]), t[a:a + batch_size]
        v = model.forward(xb, tb)
        if not np.isfinite(v).all():
            raise InputError("calibration: non-finite activations (the velocity is NaN or Inf on a calibration "
                             "state); check the model's weights")
        for name, blocks in model.weight_inputs():
            st = acc.get(name)
            for blk in blocks():
                b64 = np.asarray(blk, dtype=np.float64)
                if st is None:
                    st = acc[name] = [np.zeros((b64.shape[1], b64.shape[1])), np.zeros(b64.shape[1]), 0]
                if not np.isfinite(b64).all():
                    raise InputError(f"calibration: non-finite activations at the input of layer {name!r}")
                st[0] += b64.T @ b64
                st[1] += b64.sum(axis=0)
                st[2] += b64.shape[0]
        eps = rng.standard_normal(v.shape).astype(v.dtype)
        model.backward(-eps)
        for k, g in grads.items():
            fisher[k] += np.square(g, dtype=np.float64)
    if not acc:
        raise InputError(f"calibrate does not know the layers of {type(model).__name__}: weight_inputs() recorded "
                         "no Linear or Conv2d input")
    layers = {}
    for name, (hs, s, rows) in acc.items():
        if name not in params:
            raise InputError(f"calibration: layer {name!r} from weight_inputs() is not a parameter of the model")
        h = hs / rows
        w = params[name]
        c_in = w.shape[1] if w.ndim > 1 else h.shape[0]
        taps = h.shape[0] // c_in if c_in and h.shape[0] % c_in == 0 else 1
        moment = np.diag(h).reshape(-1, taps).mean(axis=1)
        layers[name] = LayerStats(h, s / rows, moment, rows)
    for k in fisher:
        fisher[k] /= len(x)
        if not np.isfinite(fisher[k]).all():
            raise InputError(f"calibration: non-finite gradients for {k!r} (non-finite activations)")

    sens = measure_sensitivity(model, params, x, t, names=list(layers), widths=widths, method=sens_method,
                               n_states=sens_states, batch_size=batch_size, rng=rng)
    meta = dict(digest=digest, widths=widths, sens_method=sens_method, n=n, solver=solver, steps=int(steps),
                seed=int(seed), train_pairs=int(train_pairs), n_states=int(len(x)), trajectory_states=int(n_traj),
                model_class=type(model).__name__)
    return Calibration(layers, fisher, sens, meta)


def _velocity(model, x, t, batch_size):
    return np.concatenate([np.asarray(model(np.ascontiguousarray(x[a:a + batch_size]), t[a:a + batch_size]),
                                      np.float64) for a in range(0, len(x), batch_size)])


def measure_sensitivity(model, params, x, t, *, names, widths, method, n_states, batch_size, rng):
    """weight name → (len(widths),) mean squared velocity error per value on ``n_states`` of the states (x, t)
    (a seeded subset), with that tensor alone quantized per channel by ``method`` at each width."""
    from fmq_np.quant.schemes import quantize
    pick = np.sort(rng.permutation(len(x))[:n_states])
    xs, ts = x[pick], t[pick]
    ref = _velocity(model, xs, ts, batch_size)
    out = {}
    for name in names:
        live = params[name]
        if live.ndim < 2:
            continue
        keep = live.copy()
        row = np.empty(len(widths))
        try:
            for i, b in enumerate(widths):
                np.copyto(live, quantize(keep, bits=b, method=method, granularity="channel", name=name).dequantize())
                row[i] = float(np.mean((_velocity(model, xs, ts, batch_size) - ref) ** 2))
        finally:
            np.copyto(live, keep)
        if not np.isfinite(row).all():
            raise InputError(f"calibration: non-finite velocity with {name!r} quantized (non-finite activations)")
        out[name] = row
    return out


# ---------------------------------------------------------------------------------------------------------------
# quantizers that use a calibration


def nearest_codes(values, codebook):
    """Codes (G,) of the nearest level of each row's ascending ``codebook`` (G, k) to ``values`` (G,); ties go to the
    lower level."""
    return np.argmin(np.abs(codebook - values[:, None]), axis=1)


def damped_hessian(h, damp=DAMP):
    """``h`` + damp·mean(diag h)·I, with dead inputs (diag 0) given diagonal 1 (their columns cost nothing)."""
    h = np.array(h, dtype=np.float64, copy=True)
    d = np.diag(h).copy()
    dead = d <= 0
    h[dead, dead] = 1.0
    lam = damp * (float(d[~dead].mean()) if (~dead).any() else 1.0)
    h[np.diag_indices_from(h)] += lam
    return h


def error_feedback(w2, codebook, h, damp=DAMP, block=BLOCK):
    """GPTQ / OBQ error feedback with a fixed per-row codebook.

    ``w2`` (out, fan_in): the weight as the layer multiplies it; ``codebook`` (out, k) ascending per row; ``h``
    (fan_in, fan_in) the input Hessian XᵀX (any positive scale). The columns are quantized in order, each to the
    nearest level of its row; the error of column j, divided by U[j, j], is pushed onto the later columns through
    row j of U, the upper Cholesky factor of the damped H⁻¹ (so that ‖(W − Ŵ)X‖² is greedily minimised): within a
    block of ``block`` columns at once, onto the later blocks as one GEMM per block. Returns (codes uint8 (out,
    fan_in), w_hat float64).
    """
    w = np.array(w2, dtype=np.float64, copy=True)
    cb = np.asarray(codebook, dtype=np.float64)
    n_out, n = w.shape
    hd = damped_hessian(h, damp)
    try:
        hinv = np.linalg.inv(np.linalg.cholesky(hd))
        u = np.linalg.cholesky(hinv.T @ hinv).T
    except np.linalg.LinAlgError:
        raise InputError("error feedback: the damped input Hessian is not positive definite") from None
    codes = np.empty((n_out, n), np.uint8)
    rows = np.arange(n_out)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        err = np.empty((n_out, b1 - b0))
        for j in range(b0, b1):
            c = nearest_codes(w[:, j], cb)
            codes[:, j] = c
            e = (w[:, j] - cb[rows, c]) / u[j, j]
            w[:, j + 1:b1] -= np.outer(e, u[j, j + 1:b1])
            err[:, j - b0] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return codes, cb[rows[:, None], codes]


def _importance(cal, name, array):
    """Per-weight importance for weighted codebooks: the Fisher of the weight plus 1e-3 of its row mean (every
    weight keeps some mass, every row a positive total)."""
    f = cal.fisher.get(name)
    if f is None or f.shape != array.shape:
        raise InputError(f"calibration has no Fisher information for tensor {name!r}")
    f2 = f.reshape(f.shape[0], -1) if f.ndim > 1 else f.reshape(1, -1)
    mean = f2.mean(axis=1, keepdims=True)
    floor = np.where(mean > 0, mean, 1.0) * 1e-3
    return (f2 + floor).reshape(f.shape)


def _layer(cal, name, array):
    st = cal.layers.get(name)
    if st is None:
        raise InputError(f"calibration knows no layer for tensor {name!r} (not the input of a Linear/Conv2d)")
    fan_in = array.size // array.shape[0]
    if st.fan_in != fan_in:
        raise InputError(f"calibration: layer {name!r} has fan_in {st.fan_in}, tensor has {fan_in}")
    return st


def allocate_widths(cal, shapes, budget, max_width=None):
    """Bit width per tensor (name → bits among ``cal.widths``) minimising Σ sensitivity (measured, additive model)
    with the average code width over these tensors' values ≤ ``budget`` (the nominal width, as ``bits=2`` is:
    codebooks come on top and ``QuantizedModel.bits_per_weight`` counts them).

    Greedy on the monotone envelope of the measured sensitivities: start every tensor at the smallest width and
    repeatedly widen by one step the tensor with the largest sensitivity drop per extra code bit while the budget
    allows. ``max_width``: optional name → the widest width a tensor may get (quantize_model stops a tensor where
    its codebooks would make it take as many bytes as its float values).
    """
    widths = cal.widths
    max_width = max_width or {}
    if not widths[0] <= budget <= widths[-1]:
        raise InputError(f"bits budget {budget:g} is outside the calibrated widths {widths[0]}..{widths[-1]}")
    names = list(shapes)
    for name in names:
        if name not in cal.sensitivity:
            raise InputError(f"calibration has no sensitivity for tensor {name!r}")
    size = {nm: int(np.prod(shapes[nm])) for nm in names}
    total = budget * sum(size.values())
    sens = {nm: np.minimum.accumulate(cal.sensitivity[nm]) for nm in names}
    level = {nm: 0 for nm in names}
    used = widths[0] * sum(size.values())
    while True:
        best, best_gain = None, -1.0
        for nm in names:
            i = level[nm]
            if i + 1 < len(widths) and widths[i + 1] <= max_width.get(nm, widths[-1]):
                extra = (widths[i + 1] - widths[i]) * size[nm]
                if used + extra <= total:
                    gain = (sens[nm][i] - sens[nm][i + 1]) / extra
                    if gain > best_gain:
                        best, best_gain = nm, gain
        if best is None:
            break
        used += (widths[level[best] + 1] - widths[level[best]]) * size[best]
        level[best] += 1
    return {nm: widths[level[nm]] for nm in names}


def quantize_calibrated(named_arrays, bits, method, calibration, *, error_feedback_on=True, bias_correction=False,
                        weighted=False, device="auto"):
    """``quantize_model`` with a calibration (per-channel granularity): see ``quantize_model``'s docstring.

    For every tensor the default policy would quantize (float, ≥ 2-D): its codebook from ``method`` (``ot-opt``
    weighted by the Fisher importance when ``weighted``), its codes by :func:`error_feedback` through the layer's
    input Hessian when ``error_feedback_on`` (else nearest level), its width from :func:`allocate_widths` when
    ``bits`` is fractional; the layer's bias (``<prefix>.bias``, kept in float) gets the mean output shift
    (W − Ŵ)·mean(x) added back when ``bias_correction``.
    """
    from fmq_np.quant.model import QuantizedModel, weights_digest
    from fmq_np._validate import check_bits
    from fmq_np.quant.schemes import as_float_array, quantize_checked
    from fmq_np.quant.tensor import QuantizedTensor
    if not isinstance(calibration, Calibration):
        raise InputError(f"calibration must be a Calibration (from fmq_np.quant.calibrate), got "
                         f"{type(calibration).__name__}")
    if not hasattr(named_arrays, "items"):
        raise InputError("named_arrays must be a mapping of name -> array")
    calibration.check_source(named_arrays)
    arrays = {k: np.asarray(v) for k, v in named_arrays.items()}
    mixed = _fractional(bits)
    if mixed:
        if not math.isfinite(bits):
            raise InputError(f"bits must be finite, got {bits!r}")
        smallest = calibration.widths[0]
    else:
        smallest = check_bits(int(bits) if isinstance(bits, (float, np.floating)) else bits)
    floats = [k for k, a in arrays.items() if a.dtype.kind == "f" and a.ndim > 1]
    # as quantize_model's default policy: a tiny tensor (at the smallest width it may get) is kept in float, and left
    # out of the bits budget
    targets = [k for k in floats if not _tiny(arrays[k], smallest, method)]
    if mixed:
        cap = {k: max([b for b in calibration.widths if not _tiny(arrays[k], b, method)]) for k in targets}
        widths = allocate_widths(calibration, {k: arrays[k].shape for k in targets}, float(bits), cap)
    else:
        widths = {k: smallest for k in targets}
    quantized, shifts = {}, {}
    for name in targets:                       # weights first: their biases' corrections are known before the biases
        array = as_float_array(arrays[name], name)
        b = widths[name]
        wts = _importance(calibration, name, array) if weighted and method == "ot-opt" else None
        qt = quantize_checked(array, bits=b, method=method, granularity="channel", group_size=0, paper_compat=False,
                              weights=wts, device=device, name=name)
        st = _layer(calibration, name, array) if error_feedback_on or bias_correction else None
        if error_feedback_on:
            codes, _ = error_feedback(array.reshape(array.shape[0], -1), qt.codebook.astype(np.float64), st.h)
            qt = QuantizedTensor(codes=codes, codebook=qt.codebook, shape=qt.shape, dtype=qt.dtype, bits=qt.bits,
                                 method=qt.method, granularity="channel", meta=dict(qt.meta, error_feedback=True))
        bias = name[:-len("weight")] + "bias" if name.endswith("weight") else None
        if bias_correction and bias in arrays and bias not in widths and np.shape(arrays[bias]) == (array.shape[0],):
            d = (array.reshape(array.shape[0], -1).astype(np.float64)
                 - qt.dequantize().reshape(array.shape[0], -1).astype(np.float64))
            shifts[bias] = d @ st.mean
        quantized[name] = qt
    tensors, originals, skipped = {}, {}, {}
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            tensors[name], originals[name], skipped[name] = array, array, "not a float array"
            continue
        array = as_float_array(array, name)
        originals[name] = array
        if name in quantized:
            tensors[name] = quantized[name]
        elif name in floats:
            tensors[name], skipped[name] = array, "kept in float: quantized it would take as many bytes or more"
        elif name in shifts:
            tensors[name] = (array.astype(np.float64) + shifts[name]).astype(array.dtype)
            skipped[name] = "1-D tensor kept in float (default policy), bias-corrected"
        else:
            tensors[name], skipped[name] = array, "1-D tensor kept in float (default policy)"
    meta = dict(bits=float(bits) if mixed else int(bits), method=method, granularity="channel", group_size=None,
                paper_compat=False, source_digest=weights_digest(named_arrays),
                calibrated=dict(error_feedback=bool(error_feedback_on), bias_correction=bool(bias_correction),
                                weighted=bool(weighted and method == "ot-opt"), mixed=mixed,
                                widths={k: int(v) for k, v in widths.items()}))
    qm = QuantizedModel(tensors, meta, originals, skipped)
    qm.sensitivity = {k: dict(zip(calibration.widths, map(float, v))) for k, v in calibration.sensitivity.items()}
    return qm


def _tiny(array, bits, method):
    """quantize_model's tiny-tensor rule, per channel at ``bits``: rows of no more values than levels, and packed
    codes + codebooks (2 numbers per row for uniform) taking at least the float bytes."""
    bits = int(bits)
    per_row = 2 if method == "uniform" else 2 ** bits
    nbytes = -(-bits * array.size // 8) + array.shape[0] * per_row * array.dtype.itemsize
    return array.size // array.shape[0] <= 2 ** bits and nbytes >= array.nbytes


def _fractional(bits):
    """True when ``bits`` is a non-integral float (a mixed-precision budget)."""
    return isinstance(bits, (float, np.floating)) and not float(bits).is_integer()


__all__ = ["Calibration", "LayerStats", "calibrate", "load_calibration", "error_feedback", "allocate_widths",
           "quantize_calibrated", "DEFAULT_WIDTHS"]
