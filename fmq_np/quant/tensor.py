"""QuantizedTensor: integer codes + per-group codebooks for one named array.

Layout (the contract between schemes, kernels, packing and storage):

* the array ``w`` of ``shape`` is viewed C-order as ``(n_groups, group_len)``: one row per group, as
  :mod:`fmq_np.quant.layout` defines for each granularity.
* ``codes``: uint8, shape ``(n_groups, group_len)``, every value ``< n_levels``.
* ``codebook``: shape ``(n_groups, n_levels)`` in the tensor's float dtype; ``w_hat[g, i] = codebook[g, codes[g, i]]``.
  Rows are sorted ascending; a group that uses fewer levels repeats its last level (``levels_used`` counts distinct).
* ``n_levels = 2**bits``.
* ``meta`` (set by :func:`fmq_np.quant.quantize`): ``{"affine": True}`` for ``"uniform"`` (row g is exactly
  ``c * scale_g + min_g`` computed in the dtype; ``bits_per_weight`` counts 2 numbers per group, the codebook row
  stays the exact table); ``{"skipped": reason}`` when ``paper_compat`` met the published skip rule (the tensor is
  then stored losslessly: its n < 2**bits values are the levels).
"""
from dataclasses import dataclass, field

import numpy as np

from fmq_np.quant.layout import GRANULARITIES, group_shape  # noqa: F401  (public here too)

#: the quantizers (:mod:`fmq_np.quant.schemes`), by the name files and the command line use
METHODS = ("ot", "uniform", "pwl", "log2", "ot-opt")


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

    @property
    def n_levels(self):
        return 2 ** self.bits

    @property
    def affine(self):
        """True when every codebook row is ``c * scale + offset`` (uniform): stored as 2 numbers per group."""
        return bool(self.meta.get("affine", False))

    @property
    def overhead_bits(self):
        """Bits of codebooks (or scale + offset per group for affine codebooks) in the tensor's dtype."""
        per_group = 2 if self.affine else self.codebook.shape[1]
        return self.n_groups * per_group * np.dtype(self.dtype).itemsize * 8

    @property
    def bits_per_weight(self):
        """Storage cost per weight: the packed codes (``bits``) plus the codebook/scale overhead."""
        return (self.bits * self.size + self.overhead_bits) / self.size

    @property
    def nbytes(self):
        """Bytes of the packed codes plus codebooks/scales (what the quantized tensor costs to store)."""
        return -(-self.bits * self.size // 8) + self.overhead_bits // 8

    @property
    def levels_used(self):
        """Largest number of distinct values any group reconstructs (≤ ``2**bits``)."""
        best = 0
        for g in range(self.n_groups):
            used = np.unique(self.codes[g])
            best = max(best, np.unique(self.codebook[g, used]).size)
        return int(best)

    def dequantize(self):
        """The reconstructed array ``w_hat``: ``shape`` and ``dtype`` of the original tensor."""
        from fmq_np.quant import cpu
        cb = self.codebook
        if cb.dtype == np.float16:
            return cpu.dequantize(self.codes, cb.astype(np.float32)).astype(np.float16).reshape(self.shape)
        return cpu.dequantize(self.codes, np.ascontiguousarray(cb)).reshape(self.shape)
