"""Plain-NumPy references for fmq_np.quant.packing (little-endian bit stream, see its module docstring)."""
import numpy as np


def pack_codes(codes, bits):
    """uint8 codes (n,) → uint8 (ceil(n*bits/8),): bit k of code i is stream bit i*bits + k, LSB first."""
    codes = np.asarray(codes, np.uint8).reshape(-1)
    stream = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(stream.reshape(-1), bitorder="little")


def unpack_codes(packed, bits, n):
    """Inverse of :func:`pack_codes`: the first n*bits stream bits of ``packed`` → uint8 (n,)."""
    stream = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: n * bits].reshape(n, bits)
    return (stream.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)
