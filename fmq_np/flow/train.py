"""fit(): flow-matching training of a velocity model on the CondOT path with AdamW, EMA and checkpoints."""
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .._progress import Progress
from .._threads import BatchThreads, batch_threads, split
from .._validate import check_choice, check_int
from ..errors import FmqError, FormatError, InputError
from .coupling import COUPLINGS, ot_pairing
from .paths import condot_sample, time_sampler
from .shapes import check_data


@dataclass
class History:
    """Per-step training record: ``step`` (1-based), ``loss`` (batch MSE), ``lr``; ``seconds`` of wall time."""
    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: float = 0.0

    def as_arrays(self):
        """``{"step": int64, "loss": float64, "lr": float64}`` arrays (for files and plots)."""
        return {"step": np.asarray(self.step, np.int64), "loss": np.asarray(self.loss, np.float64),
                "lr": np.asarray(self.lr, np.float64)}


def fit(model, data, steps, batch_size=256, lr=1e-3, seed=0, *, betas=(0.9, 0.95), weight_decay=0.0,
        ema_decay=0.999, ema_warmup=True, schedule="constant", warmup=0, final_lr=1e-8, times="uniform",
        coupling=None, checkpoint=None, checkpoint_every=1000, resume=False, progress=None, meta=None, threads=None):
    """Train ``model`` in place by flow matching on ``data`` and return its :class:`History`.

    Each step draws ``batch_size`` data points x1 (with replacement), noise x0 ~ N(0, I), times t from the
    ``times`` sampler (``"uniform"`` or the paper's ``"skewed"``), optionally pairs x0 to x1 by minibatch OT
    (``coupling="ot"``), and takes an AdamW step on the mean squared error between ``model.forward(x_t, t)`` and
    x1 − x0. The learning rate follows ``schedule`` (``"constant"``, ``"linear"`` decay to ``final_lr``,
    ``"cosine"``) after ``warmup`` steps. With ``ema_decay`` > 0 an exponential moving average of the weights is
    kept and the model ends training holding the EMA weights. ``ema_warmup=True`` (the default) ramps the EMA's
    decay up as ``min(ema_decay, (1 + k) / (10 + k))`` at step k, so the average forgets the initial weights (which
    otherwise keep a share ema_decay**steps: 5 % after 3000 steps at 0.999); ``ema_warmup=False`` keeps
    ``ema_decay`` from the first step (the behaviour before this option existed).

    ``threads``: with more than 1 (None: fmq_np's thread count, see :func:`fmq_np._threads.batch_threads`) each
    batch is split into that many parts (:class:`BatchStep`) that run at once on threads with one-thread kernels;
    the gradient is the whole batch's up to float rounding.

    ``checkpoint``: an HDF5 path written every ``checkpoint_every`` steps, at the end, and when Ctrl-C stops the
    run after the step in progress (atomic writes; it holds the EMA weights as the model plus everything needed to
    resume). ``resume=True`` continues from that file when it exists. Runs with the same seed and thread count are
    bitwise reproducible on one machine, resumed or not. A non-finite loss (the run diverged) raises
    :class:`~fmq_np.FmqError` itself, not InputError: no single argument is wrong.
    """
    from .. import nn  # the trainer needs the optimizers; nn never needs flow
    data = check_data(model, data)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        check_int(name, value, 1)
    if not (np.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    if coupling is not None:
        check_choice("coupling", coupling, COUPLINGS)
    if not 0.0 <= ema_decay < 1.0:
        raise InputError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
    draw_times = time_sampler(times)
    lr_at = nn.lr_schedule(schedule, lr=lr, steps=steps, warmup=warmup, final_lr=final_lr)

    rng = np.random.default_rng(seed)
    opt = nn.AdamW(model.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    ema = nn.EMA(model.parameters(), decay=ema_decay) if ema_decay > 0 else None
    history = History()
    start_step = 0
    resuming = checkpoint is not None and resume and os.path.exists(checkpoint)
    run_meta = dict(meta or {}, steps=int(steps), batch_size=int(batch_size), lr=float(lr), seed=int(seed),
                    betas=list(map(float, betas)), weight_decay=float(weight_decay), ema_decay=float(ema_decay),
                    ema_warmup=bool(ema_warmup),
                    schedule=schedule, warmup=int(warmup), times=times, coupling=coupling)
    if resuming:                      # the same run, or an error naming what differs
        _check_same_run(checkpoint, run_meta, model)
        start_step = _restore(checkpoint, model, opt, ema, rng, history)

    def save(step):
        if checkpoint is not None:
            _save(checkpoint, model, opt, ema, rng, history, step, run_meta)

    t_start = time.perf_counter() - history.seconds
    with _DeferredInterrupt() as interrupt, Progress(steps, "train", enabled=progress) as bar, \
            BatchStep(model, opt, batch_size, threads) as take_step:
        bar.update(start_step)
        for step in range(start_step + 1, steps + 1):
            rate = lr_at(step - 1)
            loss = take_step(*_draw_batch(data, batch_size, rng, draw_times, coupling), lr=rate)
            if not np.isfinite(loss):
                raise FmqError(f"training diverged at step {step}: loss is {loss} (lower lr={lr:g}? data scaled?)")
            if ema is not None:
                ema.decay = min(ema_decay, (1.0 + step) / (10.0 + step)) if ema_warmup else ema_decay
                ema.update(model.parameters())
            history.step.append(step)
            history.loss.append(loss)
            history.lr.append(rate)
            bar.update(1, loss=loss)
            if interrupt.requested or (step % checkpoint_every == 0 and step < steps):
                history.seconds = time.perf_counter() - t_start
                save(step)
            if interrupt.requested:
                raise KeyboardInterrupt(f"training interrupted{interrupt.by} after step {step}"
                                        + (f"; resume from {checkpoint}" if checkpoint else ""))
    history.seconds = time.perf_counter() - t_start
    if start_step < steps:            # a finished checkpoint resumed as it is stays byte for byte as it was
        save(steps)
    if ema is not None:
        model.load_parameters(ema.params)
    return history


class _DeferredInterrupt:
    """Within the block, Ctrl-C (SIGINT) or SIGTERM only sets ``requested``, so a training step is never left half
    done and the checkpoint is written at the step reached; a second signal stops at once."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self.by = ""                # " by SIGTERM" when that was the signal
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:          # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True
        self.by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


#: samples: fit() splits a batch over threads only into parts at least this large (smaller GEMMs lose more to
#: their fixed costs than a second thread wins)
MIN_SHARD = 16


class BatchStep:
    """One AdamW step of flow-matching training on a given batch, the batch split over threads as fit() does it
    (its ``threads``): parts of at least :data:`MIN_SHARD` samples run at once on replicas of ``model`` that share
    its weights, and their gradients are summed into ``model``'s. A context manager: it owns its threads.

        with BatchStep(model, opt, batch_size=64) as step:
            loss = step(x_t, t, target, lr=1e-3)     # x_t, target (batch_size, ...) float32, t (batch_size,)
    """

    def __init__(self, model, opt, batch_size, threads=None):
        parts = max(1, min(batch_threads(threads, model), batch_size // MIN_SHARD))
        self.model, self.opt = model, opt
        self.replicas = [model] + [model.replica() for _ in range(parts - 1)]
        self._team = BatchThreads(parts) if parts > 1 else None

    def __call__(self, xt, t, target, lr):
        """Take the step at learning rate ``lr``; returns the batch loss (mean squared error, float). A non-finite
        loss takes no step."""
        if np.shape(target) != np.shape(xt) or np.shape(t) != np.shape(xt)[:1]:
            raise InputError(f"BatchStep: x_t {np.shape(xt)}, t {np.shape(t)} and target {np.shape(target)} must be "
                             "(n, ...), (n,) and (n, ...) of the same n and sample shape")
        scale = np.float32(2.0 / target.size)

        def part(i, rows):
            diff = self.replicas[i].forward(xt[rows], t[rows]) - target[rows]
            squares = float(np.sum(np.square(diff, dtype=np.float64)))
            if np.isfinite(squares):
                self.replicas[i].backward(diff * scale)
            return squares

        if self._team is None:
            squares = [part(0, slice(None))]
        else:
            squares = self._team.map(lambda p: part(*p), enumerate(split(len(target), len(self.replicas))))
        loss = sum(squares) / target.size
        if not np.isfinite(loss):
            return loss
        grads = self.model.gradients()
        for replica in self.replicas[1:]:
            for key, g in replica.gradients().items():
                grads[key] += g
        self.opt.step(grads, lr=lr)
        return loss

    def close(self):
        if self._team is not None:
            self._team.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _draw_batch(data, batch_size, rng, draw_times, coupling):
    """A training batch: (x_t, t, target velocity) from ``batch_size`` data points drawn with replacement."""
    x1 = data[rng.integers(0, len(data), batch_size)]
    x0 = rng.standard_normal(x1.shape, dtype=np.float32)
    t = draw_times(rng, batch_size)
    if coupling == "ot":
        x0 = ot_pairing(x0, x1)
    xt, target = condot_sample(x0, x1, t)
    return xt, t, target


def _save(path, model, opt, ema, rng, history, step, meta):
    """Checkpoint: the EMA weights as the model, the raw weights + optimizer + EMA + RNG to resume."""
    from ..io.checkpoint import save_model
    raw = {k: v.copy() for k, v in model.parameters().items()}
    state = {"step": int(step), "rng": rng.bit_generator.state, "seconds": history.seconds,
             "history": history.as_arrays(), "raw": raw, "optim": opt.state_dict(),
             "ema": ema.state_dict() if ema is not None else None}
    if ema is not None:
        model.load_parameters(ema.params)
    try:
        save_model(path, model, meta=dict(meta, trained_steps=int(step)), train_state=state)
    finally:
        model.load_parameters(raw)


def _check_same_run(path, run_meta, model):
    """InputError naming every setting (``run_meta`` key: steps, lr, dataset, ...) in which the run that wrote the
    checkpoint ``path`` differs from this one: resuming it would silently train (and record) something else."""
    import json
    from ..io._h5 import open_h5
    from ..io._h5 import read_attr
    from ..io.checkpoint import _architecture, read_json_attr
    with open_h5(path) as f:
        saved = read_json_attr(f, "meta", path)
        same_model = (read_attr(f, "model_class", str, path) == type(model).__name__ and
                      _architecture(read_json_attr(f, "model_config", path)) == _architecture(model.config()))
    if not isinstance(saved, dict) or not same_model:     # another model: _restore says so
        return
    now = json.loads(json.dumps(run_meta))
    diffs = [f"{k}={saved[k]!r} (this run: {v!r})" for k, v in now.items() if k in saved and saved[k] != v]
    if diffs:
        raise InputError(f"{path}: cannot resume, the checkpoint was written by a run with " + ", ".join(diffs)
                         + "; resume with the same settings, or use another checkpoint to start a new run")


def _restore(path, model, opt, ema, rng, history):
    """Load a checkpoint written by :func:`_save` into the live objects; returns the step it was taken at."""
    from ..io.checkpoint import load_train_state
    state = load_train_state(path, model)
    model.load_parameters(state["raw"])
    opt.load_state_dict(state["optim"])
    if ema is not None:
        if state["ema"] is None:
            raise FormatError(f"{path}: checkpoint has no EMA state but ema_decay > 0")
        ema.load_state_dict(state["ema"])
    rng.bit_generator.state = state["rng"]
    h = state["history"]
    history.step[:] = h["step"].tolist()
    history.loss[:] = h["loss"].tolist()
    history.lr[:] = h["lr"].tolist()
    history.seconds = float(state["seconds"])
    return int(state["step"])
