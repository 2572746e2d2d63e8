"""Bit packing: kernels vs the plain-NumPy references, round trips, sizes and argument checks."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import naive
from fmq_np.errors import InputError
from fmq_np.quant.packing import pack_codes, packed_nbytes, unpack_codes


@st.composite
def codes_and_bits(draw, max_n=300):
    bits = draw(st.integers(1, 8))
    n = draw(st.integers(0, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    codes = np.random.default_rng(seed).integers(0, 1 << bits, n).astype(np.uint8)
    return codes, bits


@settings(max_examples=200, deadline=None)
@given(codes_and_bits())
def test_pack_matches_reference_and_round_trips(case):
    codes, bits = case
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape == (packed_nbytes(codes.size, bits),)
    np.testing.assert_array_equal(packed, naive.pack_codes(codes, bits))
    np.testing.assert_array_equal(unpack_codes(packed, bits, codes.size), codes)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(0, 200), st.integers(0, 2**32 - 1))
def test_unpack_matches_reference_on_arbitrary_bytes(bits, n, seed):
    packed = np.random.default_rng(seed).integers(0, 256, packed_nbytes(n, bits)).astype(np.uint8)
    out = unpack_codes(packed, bits, n)
    np.testing.assert_array_equal(out, naive.unpack_codes(packed, bits, n))
    assert out.size == 0 or int(out.max()) < 1 << bits


def test_known_layouts():
    assert pack_codes(np.array([1, 2, 3, 0, 3], np.uint8), 2).tolist() == [0b00111001, 0b11]
    assert pack_codes(np.array([0xA, 0x5, 0xF], np.uint8), 4).tolist() == [0x5A, 0x0F]
    # 3 bits: 5 | 6 << 3 | 7 << 6 = 0b1_1110_101 → bytes 0xF5, 0x01
    assert pack_codes(np.array([5, 6, 7], np.uint8), 3).tolist() == [0xF5, 0x01]
    assert pack_codes(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], np.uint8), 1).tolist() == [0b1101, 1]


@pytest.mark.parametrize("bits", range(1, 9))
def test_large_array_round_trip_every_bits(bits):
    codes = np.random.default_rng(bits).integers(0, 1 << bits, 100_003).astype(np.uint8)
    packed = pack_codes(codes, bits)
    assert packed.size == (100_003 * bits + 7) // 8
    np.testing.assert_array_equal(unpack_codes(packed, bits, codes.size), codes)


def test_pack_flattens_c_order():
    codes = np.arange(12, dtype=np.uint8).reshape(3, 4) % 8
    np.testing.assert_array_equal(pack_codes(codes, 3), pack_codes(codes.reshape(-1), 3))
    np.testing.assert_array_equal(pack_codes(np.asfortranarray(codes), 3), pack_codes(codes.reshape(-1), 3))


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, True, "3"])
def test_bad_bits(bits):
    with pytest.raises(InputError):
        pack_codes(np.zeros(3, np.uint8), bits)
    with pytest.raises(InputError):
        unpack_codes(np.zeros(3, np.uint8), bits, 3)


def test_pack_rejects_out_of_range_and_wrong_dtype():
    with pytest.raises(InputError, match="< 2\\*\\*3"):
        pack_codes(np.array([0, 8], np.uint8), 3)
    with pytest.raises(InputError, match="uint8"):
        pack_codes(np.array([0, 1], np.int64), 3)


def test_unpack_validates_byte_count():
    packed = pack_codes(np.ones(10, np.uint8), 3)        # 30 bits → 4 bytes
    with pytest.raises(InputError, match="4 bytes"):
        unpack_codes(packed[:3], 3, 10)
    with pytest.raises(InputError, match="4 bytes"):
        unpack_codes(np.concatenate([packed, [0]]).astype(np.uint8), 3, 10)
    with pytest.raises(InputError):
        unpack_codes(packed.astype(np.int16), 3, 10)
    with pytest.raises(InputError):
        unpack_codes(packed, 3, -1)


def test_numba_cuda_is_imported_only_by_the_gpu_module():
    code = ("import sys, numpy as np, fmq_np, fmq_np.quant, fmq_np.io.quantized, fmq_np.io.importers\n"
            "fmq_np.quant.packing.pack_codes(np.zeros(3, np.uint8), 3)\n"
            "assert 'numba.cuda' not in sys.modules and 'fmq_np.quant.gpu' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
