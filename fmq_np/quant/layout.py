"""The grouping layout (tensor / channel / group → ``(n_groups, group_len)``): the only copy, used by the quantizers
(:mod:`fmq_np.quant.schemes`), the stored format (:mod:`fmq_np.io.quantized`) and the theory
(:mod:`fmq_np.theory.weights`).

An array ``w`` of ``shape`` is viewed C-order as ``(n_groups, group_len)``, one row per group:

* ``"tensor"``: 1 group;
* ``"channel"``: ``shape[0]`` groups (a 1-D tensor: 1 group);
* ``"group"``: each channel's flat values cut into runs of ``group_size`` (``group_len == group_size``; the channel
  length must be a multiple of ``group_size``).
"""
import numpy as np

from fmq_np._validate import is_int
from fmq_np.errors import InputError

GRANULARITIES = ("tensor", "channel", "group")


def group_shape(shape, granularity, group_size=0, name="w"):
    """``(n_groups, group_len)`` of an array of ``shape`` in the layout above; InputError naming the tensor when
    the array is empty, the granularity unknown or ``group_size`` not a positive divisor of the channel length."""
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0:
        raise InputError(f"tensor {name!r} is empty")
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}")
    rows = 1 if granularity == "tensor" or len(shape) <= 1 else int(shape[0])
    if granularity != "group":
        return rows, size // rows
    if not is_int(group_size) or group_size < 1 \
            or (size // rows) % group_size:
        raise InputError(f"tensor {name!r}: channel length {size // rows} is not a multiple of "
                         f"group_size={group_size}")
    return size // int(group_size), int(group_size)


def group_view(w, granularity, group_size, name="w"):
    """``w`` viewed C-order as ``(n_groups, group_len)`` for ``granularity`` (:func:`group_shape`)."""
    return w.reshape(group_shape(w.shape, granularity, group_size, name))
