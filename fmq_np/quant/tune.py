"""Codebook tuning along the flow: the codes a quantizer chose stay, the levels move so that the quantized network's
velocity matches the float one on the states sampling visits.

    qm = fmq_np.quant.quantize_model(model.parameters(), bits=2, method="ot-opt", calibration=cal)
    tuned = fmq_np.quant.tune_codebooks(model, qm, data, n=64, solver="heun2", steps=8, seed=0)

**What moves.** Every :class:`~fmq_np.quant.tensor.QuantizedTensor`'s codebook (per row: its ``2**bits`` levels; a
uniform tensor's scale and offset, so that it stays affine and is still stored as 2 numbers per row), and, unless
``floats=False``, the tensors kept in float (biases, norm scales and shifts). Widths and so the storage cost
(``bits_per_weight``) never change. With ``codes="fixed"`` (the default) the codes do not change either: it is
knowledge distillation with ``n_levels`` free numbers per output channel (a 2-bit U-Net of 0.5 M weights has about
4 k of them).

**Free codes** (``codes="free"``): quantization-aware distillation. Every quantized tensor also keeps latent float
weights, started at ``qm``'s dequantized values, so that the first step's codes are ``qm``'s. Each step codes every
latent weight to its row's nearest level (:meth:`TrainableLevels.assign`), runs the network on those levels, and
passes the weights' gradient straight through the rounding to the latents (the straight-through estimator; AdamW at
``lr_latent`` in units of the row's RMS weight, decayed with the levels' rate) and, summed per code, to the levels.
A weight changes code when its latent crosses the midpoint between two levels. Measured on the shipped
Fashion-MNIST U-Net at 2 bits (``benchmarks/bench_tune_variants.py``, one noise draw × 1000 samples): the
reproduction's ``ot-opt+ef`` tuned with fixed codes (2000 steps) is 1.49× the float FD; 1000 more steps with free
codes make it 1.24× at ``lr_latent`` 1e-2 and 1.35× at 3e-3, while 3e-2 made the held-out error worse (not kept).
Over 3 noise seeds (``fmq-np reproduce``, the ``ot-opt+ef+qat`` row): FD +48 % over the float model's → +17 %. At
3 bits the levels are closer together and the rate must be lower: from 1.067× the float FD after fixed-code
tuning, free codes gave 1.036× at 1e-3 and 1.21× at 3e-3, and 1e-2 made the held-out error worse. So by default
(``lr_latent=None``) each tensor's rate follows its width, :data:`LATENT_RATES` (3 seeds, 3 bits: +6.2 % → +3.3 %).

**The objective.** The mean squared velocity error ``mean((v_q(x, t) − v(x, t))²)`` over calibration states: the
float model's own sampling trajectories (``solver`` / ``steps`` from the noise of ``seed``) and, with ``data``,
training-path points, the mix :func:`~fmq_np.quant.calibrate.calibration_states` draws (its docstring says why).
These are the (x, t) at which a sampler queries the network, and the error there is what becomes sample error.
The targets v are computed once by the float model; the quantized network runs ``model.forward`` / ``backward``
on a copy of the model, and a level's gradient is the sum of the gradients of the weights coded to it.

**Optimiser.** AdamW (``fmq_np.nn.optim``) on the change of the levels, in units of their row's RMS weight (one
learning rate fits rows of any scale), ``lr`` decayed linearly to 0 over ``iters`` steps of ``batch_size`` states
drawn with the seed. A held-out eighth of the states measures the velocity error before and after
(``meta["tuned"]``): tuning that does not lower it returns the quantized model unchanged, so tuning never makes the
calibration objective worse. Rows are sorted ascending again at the end (codes remapped), as the tensor layout requires.

**Cost.** ``iters`` training steps of the network at ``batch_size`` plus one forward pass over the states (MNIST
U-Net width 16, 300 steps of 32: about 50 s on 2 cores). Memory: the states and their targets,
2 × N × sample size float32, plus one copy of the model.
"""
import copy

import numpy as np

from fmq_np._validate import check_choice, check_int
from fmq_np.errors import InputError
from fmq_np.quant.tensor import QuantizedTensor

#: fraction of the calibration states held out to decide whether tuning helped
HOLDOUT = 8
#: optimiser steps when the caller does not say (also `fmq-np quantize --tune`; reproduce scales set their own)
DEFAULT_ITERS = 300
#: the latent weights' rate per code width when ``lr_latent`` is None (measured at 2 and 3 bits, module docstring;
#: wider codes, whose levels are closer still, take the 3-bit rate)
LATENT_RATES = {1: 1e-2, 2: 1e-2, 3: 1e-3}
#: value-level distances computed at once by :meth:`TrainableLevels.assign` (8 MB of float64 at 2**20)
ASSIGN_BLOCK = 1 << 20
#: what ``codes=`` accepts: the quantizer's codes kept, or free to change (module docstring)
CODES = ("fixed", "free")


def tune_codebooks(model, qm, data=None, *, n=64, solver="heun2", steps=8, seed=0, train_pairs=None,
                   iters=DEFAULT_ITERS, batch_size=32, lr=2e-3, lr_float=1e-4, floats=True, codes="fixed",
                   lr_latent=None, progress=None):
    """Tune the codebooks of ``qm`` (quantized from ``model.parameters()``) along ``model``'s flow → a new
    :class:`~fmq_np.quant.model.QuantizedModel` with the same widths, and the same codes unless ``codes="free"``
    (module docstring).

    ``model``: the float velocity model (``forward`` / ``backward`` / ``parameters`` / ``gradients``, as
    :func:`~fmq_np.quant.calibrate.calibrate` needs); its weights are not changed. ``data``, ``n``, ``solver``,
    ``steps``, ``seed``, ``train_pairs``: the calibration states (defaults as in ``calibrate``). ``iters`` steps of
    ``batch_size`` states, AdamW with ``lr`` (levels, in units of their row's RMS weight) and ``lr_float`` (float
    tensors, absolute). ``codes``: ``"fixed"`` or ``"free"`` (then ``lr_latent``: the latent weights' rate, in
    units of their row's RMS weight; None: per tensor by its width, :func:`latent_rate`). ``progress``: a progress
    line on stderr (None: when stderr is a terminal, see ``fmq_np._progress``). Seeded: bitwise reproducible.
    """
    from fmq_np.flow.solvers import check_solver
    from fmq_np.quant.calibrate import _check_model, _velocity, calibration_states
    from fmq_np.quant.model import QuantizedModel, weights_digest
    _check_model(model)
    if not isinstance(qm, QuantizedModel):
        raise InputError(f"qm must be a QuantizedModel (fmq_np.quant.quantize_model), got {type(qm).__name__}")
    n, iters, batch_size = check_int("n", n, 1), check_int("iters", iters, 1), check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    check_solver(solver, steps)
    check_choice("codes", codes, CODES)
    rates_given = [("lr", lr), ("lr_float", lr_float)] + ([("lr_latent", lr_latent)] if lr_latent is not None else [])
    for name, value in rates_given:
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
            raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    params = model.parameters()
    if qm.meta.get("source_digest") != weights_digest(params):
        raise InputError("tune_codebooks: qm was not quantized from this model's weights (source digests differ)")
    if set(qm.tensors) != set(params):
        raise InputError("tune_codebooks: qm's tensors are not the model's parameters")
    rng = np.random.default_rng([int(seed), 29])
    with np.errstate(over="ignore", invalid="ignore"):
        x, t, _ = calibration_states(model, data, n, solver, steps, seed, train_pairs, rng)
        target = _velocity(model, x, t, 128).astype(np.float32)
    if not np.isfinite(target).all():
        raise InputError("tune_codebooks: the float model's velocity is not finite on a calibration state")
    n_states = int(len(x))
    order = rng.permutation(n_states)
    held = order[:max(1, len(x) // HOLDOUT)]
    train = order[len(held):] if len(x) > len(held) else held

    student = copy.deepcopy(model)
    live, grads = student.parameters(), student.gradients()
    levels = {k: TrainableLevels(qt) for k, qt in qm.tensors.items() if isinstance(qt, QuantizedTensor)}
    float_names = [k for k, v in qm.tensors.items() if k not in levels and floats
                   and np.asarray(v).dtype.kind == "f"]
    for k, v in qm.tensors.items():
        np.copyto(live[k], levels[k].weights() if k in levels else np.asarray(v))
    before = _loss(student, x[held], t[held], target[held])

    from fmq_np.nn.optim import AdamW
    free = codes == "free" and bool(levels)
    start, latent, rates, unit, base_rate = {}, {}, {}, {}, 0.0
    if free:
        start = {k: lv.row_weights() for k, lv in levels.items()}
        latent = {k: np.zeros(w.shape, np.float32) for k, w in start.items()}      # latent − start, units `unit`
        rates = {k: latent_rate(lv.qt.bits) if lr_latent is None else lr_latent for k, lv in levels.items()}
        base_rate = max(rates.values())
        # a tensor's rate relative to the optimiser's: AdamW's step does not depend on the gradient's scale, so the
        # latent's unit (row RMS × relative rate) sets each tensor's rate (1.0, bit for bit, at the base rate)
        unit = {k: lv.s * (rates[k] / base_rate if base_rate > 0 else 1.0) for k, lv in levels.items()}
    opt_levels = AdamW({k: lv.u for k, lv in levels.items()}, lr=lr) if levels else None
    opt_floats = AdamW({k: live[k] for k in float_names}, lr=lr_float) if float_names else None
    opt_latent = AdamW(latent, lr=base_rate) if free else None
    code_changes = 0
    from fmq_np._progress import Progress
    with Progress(iters, "tune", enabled=progress) as bar:
        for step in range(iters):
            pick = train[rng.integers(0, len(train), batch_size)]
            v = student.forward(np.ascontiguousarray(x[pick]), t[pick])
            r = v - target[pick]
            student.backward((2.0 / r.size) * r)
            decay = 1.0 - step / iters
            if opt_levels is not None:
                opt_levels.step({k: lv.gradient(grads[k]) for k, lv in levels.items()}, lr=lr * decay)
            if opt_floats is not None:
                opt_floats.step({k: grads[k] for k in float_names}, lr=lr_float * decay)
            if opt_latent is not None:
                opt_latent.step({k: lv.row_gradient(grads[k], unit[k]) for k, lv in levels.items()},
                                lr=base_rate * decay)
            for k, lv in levels.items():
                if free:
                    code_changes += lv.assign(start[k] + unit[k] * latent[k])
                np.copyto(live[k], lv.weights())
            bar.update(1, mse=float(np.mean(r * r)))
    after = _loss(student, x[held], t[held], target[held])
    if not np.isfinite(after):
        raise InputError("tune_codebooks: the tuned model's velocity is not finite (lr too large?)")
    info = dict(iters=int(iters), batch_size=int(batch_size), lr=float(lr), lr_float=float(lr_float),
                floats=bool(floats), n=int(n), solver=solver, steps=int(steps),
                seed=int(seed), states=n_states, codes=codes,
                heldout_mse_before=before, heldout_mse_after=after, kept=bool(after < before))
    if codes == "free":
        info.update(lr_latent=sorted({float(r) for r in rates.values()}), code_changes=int(code_changes))
    if "tuned" in qm.meta:
        info["previous"] = qm.meta["tuned"]          # qm was tuned already: keep that run's record
    if not after < before:
        return tuned_model(qm, dict(qm.tensors), info)
    tensors = {}
    for k, v in qm.tensors.items():
        if k in levels:
            tensors[k] = levels[k].tensor()
        elif k in float_names:
            tensors[k] = live[k].copy()
        else:
            tensors[k] = v
    return tuned_model(qm, tensors, info)


def tuned_model(qm, tensors, info):
    """``qm`` with its tensors replaced by ``tensors`` (same names) and ``info`` recorded as ``meta["tuned"]``;
    originals, skipped tensors and sensitivities carried over (for tuning loops other than :func:`tune_codebooks`)."""
    from fmq_np.quant.model import QuantizedModel
    out = QuantizedModel(tensors, dict(qm.meta, tuned=info), qm._originals, qm._skipped)
    if hasattr(qm, "sensitivity"):
        out.sensitivity = qm.sensitivity
    return out


def latent_rate(bits):
    """The free-code latent rate (units of the row's RMS weight) for a tensor of code width ``bits``."""
    return LATENT_RATES.get(bits, LATENT_RATES[max(LATENT_RATES)])


def _loss(model, x, t, target):
    """Mean squared velocity error of ``model`` on the states (x, t) against ``target``."""
    from fmq_np.quant.calibrate import _velocity
    return float(np.mean((_velocity(model, x, t, 128) - target) ** 2))


class TrainableLevels:
    """The trainable levels of one quantized tensor: ``u`` float32, the change of each level in units of its row's
    RMS weight ``s`` (G, 1), zero at the start (so that untouched levels are the quantizer's, bit for bit); per row
    one number per level, or two (the change of scale and offset) for an affine (uniform) tensor. The codes start as
    the tensor's and change only by :meth:`assign`."""

    def __init__(self, qt):
        self.qt = qt
        self.cb0 = qt.codebook.astype(np.float64)
        G, k = self.cb0.shape
        w = self.cb0[np.arange(G)[:, None], qt.codes]
        s = np.sqrt(np.mean(w * w, axis=1, keepdims=True))
        self.s = np.where(s > 0, s, 1.0)
        self.u = np.zeros((G, 2 if qt.affine else k), np.float32)
        self.flat = (np.arange(G)[:, None] * k + qt.codes).ravel()
        self.c = np.arange(k, dtype=np.float64)

    def codebook(self):
        """(G, k) float64 levels now."""
        u = self.u.astype(np.float64)
        delta = u[:, :1] * self.c + u[:, 1:] if self.qt.affine else u
        return self.cb0 + self.s * delta

    def codes(self):
        """(G, m) uint8 codes now."""
        G, k = self.cb0.shape
        return (self.flat.reshape(G, -1) - k * np.arange(G)[:, None]).astype(np.uint8)

    def weights(self):
        cb = self.codebook().astype(self.qt.dtype)
        return cb.ravel()[self.flat].reshape(self.qt.shape)

    def row_weights(self):
        """(G, m) float64 weights now, in the codes' row layout."""
        return self.codebook().ravel()[self.flat].reshape(self.cb0.shape[0], -1)

    def row_gradient(self, gw, unit):
        """d loss / d z for weights ``row_weights() + unit * z`` passed straight through (the straight-through
        estimator): the weights' gradient ``gw`` (shape of the tensor) in the row layout, times ``unit`` (G, 1);
        float32."""
        return (np.asarray(gw, np.float64).reshape(self.cb0.shape[0], -1) * unit).astype(np.float32)

    def assign(self, values):
        """Code every value of ``values`` (G, m) to the nearest level of its row now (the lowest index among equally
        near ones); returns how many codes changed. Works on blocks of rows of at most :data:`ASSIGN_BLOCK`
        value-level pairs (the levels need not be sorted while they train)."""
        G, k = self.cb0.shape
        values, cb = np.asarray(values, np.float64), self.codebook()
        nearest = np.empty(values.shape, np.intp)
        rows = max(1, ASSIGN_BLOCK // max(1, values.shape[1] * k))
        for a in range(0, G, rows):
            nearest[a:a + rows] = np.abs(values[a:a + rows, :, None] - cb[a:a + rows, None, :]).argmin(axis=2)
        flat = (nearest + k * np.arange(G)[:, None]).ravel()
        changed = int(np.count_nonzero(flat != self.flat))
        self.flat = flat
        return changed

    def gradient(self, gw):
        """d loss / d u from the weights' gradient ``gw`` (shape of the tensor)."""
        G, k = self.cb0.shape
        gcb = np.bincount(self.flat, weights=np.asarray(gw, np.float64).ravel(), minlength=G * k).reshape(G, k)
        if self.qt.affine:
            gcb = np.stack([gcb @ self.c, gcb.sum(axis=1)], axis=1)
        return (gcb * self.s).astype(np.float32)

    def tensor(self):
        """The tuned QuantizedTensor: rows sorted ascending, codes remapped; an affine row rebuilt exactly as
        ``c * scale + offset`` in the dtype (scale kept >= 0), so that it is still stored as two numbers."""
        qt = self.qt
        meta = dict(qt.meta, tuned=True)
        if qt.affine:
            k = qt.n_levels
            u = self.u.astype(np.float64)
            scale0 = (self.cb0[:, -1] - self.cb0[:, 0]) / (k - 1)
            scale = np.maximum(scale0 + self.s[:, 0] * u[:, 0], 0).astype(qt.dtype)
            offset = (self.cb0[:, 0] + self.s[:, 0] * u[:, 1]).astype(qt.dtype)
            cb = np.arange(k, dtype=qt.dtype)[None, :] * scale[:, None] + offset[:, None]
            return QuantizedTensor(codes=self.codes(), codebook=cb, shape=qt.shape, dtype=qt.dtype, bits=qt.bits,
                                   method=qt.method, granularity=qt.granularity, group_size=qt.group_size, meta=meta)
        cb = self.codebook().astype(qt.dtype)
        perm = np.argsort(cb, axis=1, kind="stable")
        rank = np.empty_like(perm)
        np.put_along_axis(rank, perm, np.arange(qt.n_levels)[None, :], axis=1)
        codes = np.take_along_axis(rank, self.codes().astype(np.intp), axis=1).astype(np.uint8)
        return QuantizedTensor(codes=codes, codebook=np.take_along_axis(cb, perm, axis=1), shape=qt.shape,
                               dtype=qt.dtype, bits=qt.bits, method=qt.method, granularity=qt.granularity,
                               group_size=qt.group_size, meta=meta)


__all__ = ["tune_codebooks", "tuned_model", "TrainableLevels", "latent_rate"]
