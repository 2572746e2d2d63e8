"""The conditional-OT probability path and the time samplers used for training.

Convention (facebookresearch/flow_matching): x0 is noise at t = 0, x1 is data at t = 1.
"""
import numpy as np

from ..errors import InputError


def condot_sample(x0, x1, t):
    """Point on the CondOT path and its target velocity.

    x0, x1: (n, ...) arrays of the same shape (noise, data); t: (n,) times in [0, 1].
    Returns ``(x_t, u_t)`` with ``x_t = (1 − t)·x0 + t·x1`` and ``u_t = x1 − x0``, both shaped like x0.
    """
    tb = t.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype, copy=False)
    return (1 - tb) * x0 + tb * x1, x1 - x0


def uniform_times(rng, n):
    """t ~ U[0, 1), shape (n,), float32."""
    return rng.random(n, dtype=np.float32)


def skewed_times(rng, n, scale=1.2, shift=1.2, t_min=1e-4):
    """The paper's skewed sampler: t = 1 / (1 + exp(scale·z − shift)), z ~ N(0, 1), clipped to ≥ t_min.

    Its median is sigmoid(shift / 1) ≈ 0.77 for the defaults: more training signal near the data end.
    Shape (n,), float32.
    """
    z = rng.standard_normal(n)
    t = 1.0 / (1.0 + np.exp(scale * z - shift))
    return np.maximum(t, t_min).astype(np.float32)


TIME_SAMPLERS = {"uniform": uniform_times, "skewed": skewed_times}


def time_sampler(name):
    """The sampler function called ``name`` (``"uniform"`` or ``"skewed"``)."""
    try:
        return TIME_SAMPLERS[name]
    except KeyError:
        raise InputError(f"unknown time sampler {name!r}; choose from {', '.join(TIME_SAMPLERS)}") from None
