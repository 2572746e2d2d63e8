"""Bit packing of quantization codes: ``bits`` bits per code, 1 <= bits <= 8.

Layout (the on-disk contract): the codes form one little-endian bit stream. Bit ``k`` of code ``i`` is stream bit
``i * bits + k``, which is bit ``(i * bits + k) % 8`` of byte ``(i * bits + k) // 8``. So 4-bit codes pack as
``byte[j] = c[2j] | c[2j+1] << 4``, 2-bit codes as ``c[4j] | c[4j+1] << 2 | ...``; unused high bits of the last
byte are zero. ``n`` codes take ``ceil(n * bits / 8)`` bytes (:func:`packed_nbytes`).

Eight codes always fill exactly ``bits`` whole bytes, so the kernels work on blocks of 8 codes, in parallel; the
last partial block goes through a serial bit-stream loop. bits 8 is a copy; 4 and 2 have their own loops.
"""
import numpy as np
from numba import prange

from .._numba import jit
from .._validate import check_bits, check_int
from ..errors import InputError


def packed_nbytes(n, bits):
    """Bytes needed for ``n`` codes of ``bits`` bits: ``ceil(n * bits / 8)``."""
    return (int(n) * int(bits) + 7) // 8


def pack_codes(codes, bits):
    """Pack uint8 codes ``(n,)`` (any shape is flattened, C order), each ``< 2**bits``, into uint8
    ``(packed_nbytes(n, bits),)``."""
    flat, bits = checked_codes(codes, bits)
    out = np.empty(packed_nbytes(flat.size, bits), np.uint8)
    _pack_kernel(flat, bits, out)
    return out


def unpack_codes(packed, bits, n):
    """Unpack ``n`` codes of ``bits`` bits from uint8 ``packed`` of exactly ``packed_nbytes(n, bits)`` bytes
    → uint8 ``(n,)``."""
    packed, bits, n = checked_packed(packed, bits, n)
    out = np.empty(n, np.uint8)
    _unpack_kernel(packed, bits, out)
    return out


def checked_codes(codes, bits):
    """Validated ``(flat C-contiguous uint8 codes, bits)`` for packing; InputError otherwise (shared with the GPU
    twin)."""
    bits = check_bits(bits)
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise InputError(f"codes must be uint8, got {codes.dtype}")
    flat = np.ascontiguousarray(codes).reshape(-1)
    if flat.size and int(flat.max()) >= 1 << bits:
        raise InputError(f"codes must be < 2**{bits} = {1 << bits}, got {int(flat.max())}")
    return flat, bits


def checked_packed(packed, bits, n):
    """Validated ``(contiguous packed bytes, bits, n)`` for unpacking: the byte count must be exactly
    ``packed_nbytes(n, bits)``; InputError otherwise (shared with the GPU twin)."""
    bits = check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise InputError(f"packed codes must be a 1-D uint8 array, got {packed.dtype} {packed.shape}")
    check_int("number of codes", n, 0)
    expected = packed_nbytes(n, bits)
    if packed.size != expected:
        raise InputError(f"{n} codes of {bits} bits take {expected} bytes, got {packed.size}")
    return np.ascontiguousarray(packed), bits, int(n)


@jit
def _pack_tail(codes, bits, start, out, out_start):
    """Bit-stream pack of ``codes[start:]`` (fewer than 8 codes) into ``out[out_start:]``."""
    acc = 0
    nacc = 0
    j = out_start
    for i in range(start, codes.size):
        acc |= np.int64(codes[i]) << nacc
        nacc += bits
        while nacc >= 8:
            out[j] = acc & 0xFF
            acc >>= 8
            nacc -= 8
            j += 1
    if nacc > 0:
        out[j] = acc & 0xFF


@jit
def _unpack_tail(packed, bits, in_start, out, start):
    """Bit-stream unpack of ``out[start:]`` (fewer than 8 codes) from ``packed[in_start:]``."""
    mask = (1 << bits) - 1
    acc = 0
    nacc = 0
    j = in_start
    for i in range(start, out.size):
        while nacc < bits:
            acc |= np.int64(packed[j]) << nacc
            nacc += 8
            j += 1
        out[i] = acc & mask
        acc >>= bits
        nacc -= bits


@jit(parallel=True)
def _pack_kernel(codes, bits, out):
    """Pack ``codes`` (n,) into ``out`` (packed_nbytes(n, bits),); whole blocks in parallel, then the tail."""
    n = codes.size
    if bits == 8:
        for i in prange(n):
            out[i] = codes[i]
        return
    if bits == 4:
        for k in prange(n // 2):
            out[k] = codes[2 * k] | (codes[2 * k + 1] << 4)
        _pack_tail(codes, bits, 2 * (n // 2), out, n // 2)
        return
    if bits == 2:
        for k in prange(n // 4):
            i = 4 * k
            out[k] = codes[i] | (codes[i + 1] << 2) | (codes[i + 2] << 4) | (codes[i + 3] << 6)
        _pack_tail(codes, bits, 4 * (n // 4), out, n // 4)
        return
    n_blocks = n // 8
    for b in prange(n_blocks):      # 8 codes of bits <= 7 → at most 56 bits: fits an int64
        acc = 0
        for k in range(8):
            acc |= np.int64(codes[8 * b + k]) << (k * bits)
        for k in range(bits):
            out[bits * b + k] = (acc >> (8 * k)) & 0xFF
    _pack_tail(codes, bits, 8 * n_blocks, out, bits * n_blocks)


@jit(parallel=True)
def _unpack_kernel(packed, bits, out):
    """Unpack ``out.size`` codes from ``packed`` (packed_nbytes(out.size, bits),); blocks in parallel, then the tail."""
    n = out.size
    if bits == 8:
        for i in prange(n):
            out[i] = packed[i]
        return
    if bits == 4:
        for k in prange(n // 2):
            byte = packed[k]
            out[2 * k] = byte & 0x0F
            out[2 * k + 1] = byte >> 4
        _unpack_tail(packed, bits, n // 2, out, 2 * (n // 2))
        return
    if bits == 2:
        for k in prange(n // 4):
            byte = packed[k]
            out[4 * k] = byte & 3
            out[4 * k + 1] = (byte >> 2) & 3
            out[4 * k + 2] = (byte >> 4) & 3
            out[4 * k + 3] = byte >> 6
        _unpack_tail(packed, bits, n // 4, out, 4 * (n // 4))
        return
    mask = (1 << bits) - 1
    n_blocks = n // 8
    for b in prange(n_blocks):
        acc = 0
        for k in range(bits):
            acc |= np.int64(packed[bits * b + k]) << (8 * k)
        for k in range(8):
            out[8 * b + k] = (acc >> (k * bits)) & mask
    _unpack_tail(packed, bits, bits * n_blocks, out, 8 * n_blocks)
