"""The argument rules every module shares (one home for each): what counts as an integer, and bit widths."""
import numpy as np

from .errors import InputError


def is_int(value):
    """True for Python and NumPy integers; False for bool (a bool is an int to Python, never a count here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_bits(bits, name="bits"):
    """``bits`` as an int in 1..8, or InputError naming the argument."""
    if not is_int(bits) or not 1 <= bits <= 8:
        raise InputError(f"{name} must be an integer in 1..8, got {bits!r}")
    return int(bits)
