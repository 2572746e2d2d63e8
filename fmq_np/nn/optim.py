"""Optimizers over dicts of live parameter arrays: AdamW, an exponential moving average of weights, LR schedules.

State dicts are flat ``{name: ndarray or scalar}`` (no pickle needed): AdamW stores ``step``, its hyper-parameters,
``m.<param>`` and ``v.<param>``; EMA stores ``decay``, ``updates`` and ``params.<param>``.
"""
import math

import numpy as np

from ..errors import InputError
from . import kernels


def _check_same(kind, ref, other):
    if set(other.keys()) != set(ref.keys()):
        missing = [k for k in ref if k not in other]
        extra = [k for k in other if k not in ref]
        bad = missing[0] if missing else extra[0]
        raise InputError(f"{kind} keys differ from the parameters' (first mismatch: {bad!r})")
    for k, a in other.items():
        if not isinstance(a, np.ndarray) or a.shape != ref[k].shape:
            raise InputError(f"{kind} {k!r} must be an array of shape {ref[k].shape}, got {getattr(a, 'shape', a)}")


def _flat(a):
    return a.reshape(-1)


class AdamW:
    """AdamW (torch.optim.AdamW semantics) updating ``params`` (dict name -> live array) in place."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not params:
            raise InputError("AdamW needs at least one parameter")
        for k, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or not p.flags.c_contiguous:
                raise InputError(f"AdamW parameter {k!r} must be a C-contiguous float array (updated in place)")
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not np.isfinite(value) or value < 0:
                raise InputError(f"AdamW {name} must be finite and >= 0, got {value!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise InputError(f"AdamW betas must be two numbers in [0, 1), got {betas!r}")
        self.params = dict(params)
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(map(float, betas)), float(eps), float(
            weight_decay)
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.t = 0

    def step(self, grads, lr=None):
        """Apply one update with ``grads`` (same keys and shapes as the parameters); ``lr`` overrides self.lr once."""
        _check_same("gradient", self.params, grads)
        lr = self.lr if lr is None else float(lr)
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for k, p in self.params.items():
            g = np.ascontiguousarray(grads[k], dtype=p.dtype)
            kernels.adamw_update(_flat(p), _flat(g), _flat(self.m[k]), _flat(self.v[k]), lr, b1, b2, self.eps,
                                 self.weight_decay, bc1, bc2)

    def state_dict(self):
        """Flat dict: scalars step, lr, beta1, beta2, eps, weight_decay and arrays m.<name>, v.<name> (copies)."""
        state = dict(step=self.t, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                     weight_decay=self.weight_decay)
        state.update({f"m.{k}": a.copy() for k, a in self.m.items()})
        state.update({f"v.{k}": a.copy() for k, a in self.v.items()})
        return state

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` (strict: all keys present with the parameters' shapes)."""
        for key in ("step", "lr", "beta1", "beta2", "eps", "weight_decay"):
            if key not in state:
                raise InputError(f"optimizer state lacks {key!r}")
        _check_same("optimizer state m", self.params, {k: state.get(f"m.{k}") for k in self.params})
        _check_same("optimizer state v", self.params, {k: state.get(f"v.{k}") for k in self.params})
        self.t = int(state["step"])
        self.lr, self.eps, self.weight_decay = float(state["lr"]), float(state["eps"]), float(state["weight_decay"])
        self.betas = (float(state["beta1"]), float(state["beta2"]))
        for k, p in self.params.items():
            np.copyto(self.m[k], state[f"m.{k}"])
            np.copyto(self.v[k], state[f"v.{k}"])


class EMA:
    """Exponential moving average of parameters: ema = decay*ema + (1 - decay)*param; ``ema.params`` are copies."""

    def __init__(self, params, decay=0.999):
        if not 0.0 <= decay <= 1.0:
            raise InputError(f"EMA decay must lie in [0, 1], got {decay!r}")
        self.decay = float(decay)
        self.params = {k: np.array(p, copy=True) for k, p in params.items()}
        self.updates = 0

    def update(self, params):
        """Move the average towards ``params`` (same keys and shapes)."""
        _check_same("parameter", self.params, params)
        for k, e in self.params.items():
            e += (1.0 - self.decay) * (params[k] - e)
        self.updates += 1

    def state_dict(self):
        """Flat dict: decay, updates and params.<name> (copies)."""
        state = dict(decay=self.decay, updates=self.updates)
        state.update({f"params.{k}": a.copy() for k, a in self.params.items()})
        return state

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` (strict: all keys present with matching shapes)."""
        if "decay" not in state or "updates" not in state:
            raise InputError("EMA state lacks 'decay' or 'updates'")
        _check_same("EMA state", self.params, {k: state.get(f"params.{k}") for k in self.params})
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for k, e in self.params.items():
            np.copyto(e, state[f"params.{k}"])


SCHEDULES = ("constant", "linear", "cosine")


def lr_schedule(name, lr, steps, warmup=0, final_lr=0.0):
    """Callable ``step -> learning rate`` for steps 0..steps-1 (later steps keep the last value).

    Warm-up rises linearly from 0 (step 0) to ``lr`` (step ``warmup``); then "constant" keeps ``lr``, "linear"
    decays linearly and "cosine" along a half cosine to ``final_lr`` at step ``steps - 1``.
    """
    if name not in SCHEDULES:
        raise InputError(f"unknown lr schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if not (np.isfinite(lr) and lr >= 0 and np.isfinite(final_lr) and final_lr >= 0):
        raise InputError(f"lr and final_lr must be finite and >= 0, got {lr!r}, {final_lr!r}")
    if int(steps) < 1 or not 0 <= int(warmup) < int(steps):
        raise InputError(f"need steps >= 1 and 0 <= warmup < steps, got steps={steps!r}, warmup={warmup!r}")
    lr, final_lr, steps, warmup = float(lr), float(final_lr), int(steps), int(warmup)

    def schedule(step):
        if step < warmup:
            return lr * step / warmup
        if name == "constant" or steps - 1 <= warmup:
            return lr
        frac = min(1.0, (step - warmup) / (steps - 1 - warmup))
        if name == "linear":
            return lr + (final_lr - lr) * frac
        return final_lr + 0.5 * (lr - final_lr) * (1.0 + math.cos(math.pi * frac))

    return schedule
