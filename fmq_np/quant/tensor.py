"""QuantizedTensor: integer codes + per-group codebooks for one named array.

Layout (the contract between schemes, kernels, packing and storage):

* the array ``w`` of ``shape`` is viewed C-order as ``(n_groups, group_len)``: one row per group.
  granularity ``"tensor"``: 1 group; ``"channel"``: ``shape[0]`` groups (1-D tensors: 1 group);
  ``"group"``: each channel's flat values cut into runs of ``group_size`` (``group_len == group_size``; the channel
  length must be a multiple of ``group_size``).
* ``codes``: uint8, shape ``(n_groups, group_len)``, every value ``< n_levels``.
* ``codebook``: shape ``(n_groups, n_levels)`` in the tensor's float dtype; ``w_hat[g, i] = codebook[g, codes[g, i]]``.
  Rows are sorted ascending; a group that uses fewer levels repeats its last level (``levels_used`` counts distinct).
* ``n_levels = 2**bits``.
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class QuantizedTensor:
    """One quantized array. ``dequantize()`` gives an array of ``shape`` and ``dtype``."""
    codes: np.ndarray          # uint8 (n_groups, group_len)
    codebook: np.ndarray       # float (n_groups, 2**bits), rows ascending
    shape: tuple
    dtype: np.dtype
    bits: int
    method: str
    granularity: str
    group_size: int = 0        # only for granularity "group"
    meta: dict = field(default_factory=dict)   # scheme extras (e.g. uniform scale/offset), JSON-serialisable

    @property
    def n_groups(self):
        return self.codes.shape[0]

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))
