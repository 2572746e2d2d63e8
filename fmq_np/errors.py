"""Every error a user can cause is an :class:`FmqError`.

``FormatError``  a file (checkpoint, quantized model, imported weights) is missing, malformed or of the wrong kind.
``InputError``   an argument or an array is wrong: shape, dtype, NaN/Inf, unknown name, out of range.
``DeviceError``  a requested device (``"cuda"``) is not available.

Messages are one line and name the offending tensor, file or argument.
"""


class FmqError(Exception):
    """Base class of all errors fmq_np raises on purpose."""


class InputError(FmqError, ValueError):
    """Bad argument or array (shape, dtype, non-finite values, unknown name)."""


class FormatError(FmqError):
    """A file is missing, truncated, corrupt, or not what was expected."""


class DeviceError(FmqError):
    """The requested compute device is not available."""
