"""The argument checks every module shares (one home for each rule), in the spirit of scikit-learn's
``check_scalar`` / ``check_array``.

Each check returns the value in its checked form or raises :class:`~fmq_np.errors.InputError` with one message
style, ``"NAME must be ..., got VALUE"`` (``NAME`` is the argument as the caller knows it, e.g. ``"steps"`` or
``"policy('w')"``).
"""
import numpy as np

from .errors import InputError


def is_int(value):
    """True for Python and NumPy integers; False for bool (a bool is an int to Python, never a count here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name, value, low, high=None):
    """``value`` as an int in ``low..high`` (``high=None``: no upper bound); bools are refused.

    The message says "a positive integer" for ``low=1``, "a non-negative integer" for ``low=0``, "an integer >=
    LOW" otherwise and "an integer in LOW..HIGH" when ``high`` is given.
    """
    if is_int(value) and value >= low and (high is None or value <= high):
        return int(value)
    if high is not None:
        want = f"an integer in {low}..{high}"
    else:
        want = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer >= {low}")
    raise InputError(f"{name} must be {want}, got {value!r}")


def check_bits(bits, name="bits"):
    """``bits`` as an int in 1..8 (the bit widths the quantizers support)."""
    return check_int(name, bits, 1, 8)


def check_choice(name, value, options):
    """``value`` when it is one of ``options`` (strings; a dict: its keys), listed in the message otherwise."""
    if isinstance(value, str) and value in options:
        return value
    raise InputError(f"{name} must be one of {', '.join(options)}, got {value!r}")


def check_array(name, a, shape, dtype):
    """``a`` (a NumPy array of a real numeric dtype, finite) returned C-contiguous in ``dtype``.

    ``shape``: the expected shape, a tuple whose ``None`` entries are free (e.g. ``(None, 2)`` for ``(n, 2)``).
    """
    if not isinstance(a, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name} must have a real numeric dtype, got {a.dtype}")
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{name} must have shape {want}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or Inf")
    return a
