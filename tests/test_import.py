"""Import of named arrays from .npz, .safetensors and other tools' HDF5 files; the safetensors writer."""
import io
import json
import struct
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmq_np.errors import FormatError, InputError
from fmq_np.io.importers import read_arrays, write_safetensors
from fmq_np.io.quantized import save_quantized
from fmq_np.quant import quantize_model

ST_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
             np.uint32, np.uint64, np.bool_]


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"encoder.0.weight": rng.standard_normal((4, 3)).astype(np.float32),
            "encoder/0/bias": rng.standard_normal(4),
            "half": rng.standard_normal((2, 2, 2)).astype(np.float16),
            "scalar": np.array(1.5, np.float32),
            "empty": np.zeros((0, 3), np.float32),
            "steps": np.arange(3, dtype=np.int64)}


def assert_same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


@st.composite
def named_arrays(draw):
    n = draw(st.integers(0, 4))
    out = {}
    for i in range(n):
        dtype = np.dtype(draw(st.sampled_from(ST_DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        raw = draw(st.binary(min_size=dtype.itemsize * int(np.prod(shape)),
                             max_size=dtype.itemsize * int(np.prod(shape))))
        a = np.frombuffer(raw, dtype).reshape(shape) if dtype != np.bool_ else \
            (np.frombuffer(raw, np.uint8) % 2).astype(bool).reshape(shape)
        out[draw(st.text(min_size=0, max_size=6)) + f"#{i}"] = a
    return out


@settings(max_examples=60, deadline=None)
@given(named_arrays())
def test_safetensors_round_trip_any_dtype_shape_bytes(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    write_safetensors(path, arrays, metadata={"format": "pt"})
    back = read_arrays(path)
    assert list(back) == list(arrays)
    for k, a in arrays.items():
        assert back[k].dtype == a.dtype and back[k].shape == a.shape
        assert back[k].tobytes() == a.tobytes()                      # bit for bit, NaN payloads included


def test_safetensors_layout_matches_the_spec(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_safetensors(tmp_path / "m.safetensors", {"w": a, "b": np.ones(2, np.float64)})
    raw = (tmp_path / "m.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header == {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                      "b": {"dtype": "F64", "shape": [2], "data_offsets": [24, 40]}}
    assert raw[8 + n:8 + n + 24] == a.astype("<f4").tobytes()


def _st_file(path, header, data):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_safetensors_bf16_is_widened_exactly(tmp_path):
    x = np.array([1.0, -2.5, 3.140625, 2.0 ** 100, -np.inf], np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype("<u2")                # exact: these values fit bfloat16
    path = _st_file(tmp_path / "b.safetensors", {"x": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]},
                                                 "__metadata__": {"k": "v"}}, bf16.tobytes())
    out = read_arrays(path)
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"], x)


def test_safetensors_tensors_in_any_offset_order(tmp_path):
    a, b = np.arange(3, dtype=np.float32), np.arange(2, dtype=np.float64)
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]},
              "b": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}
    out = read_arrays(_st_file(tmp_path / "m.safetensors", header, b.tobytes() + a.tobytes()))
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)


ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
BAD_HEADERS = {
    "not an object": ([1, 2], 16),
    "unknown dtype": ({"w": dict(ENTRY, dtype="F128")}, 16),
    "shape/bytes mismatch": ({"w": dict(ENTRY, shape=[2, 3])}, 16),
    "negative dim": ({"w": dict(ENTRY, shape=[-2, -2])}, 16),
    "float dim": ({"w": dict(ENTRY, shape=[2.0, 2])}, 16),
    "absurd shape": ({"w": dict(ENTRY, shape=[1 << 40, 1 << 20], data_offsets=[0, 1 << 62])}, 16),
    "offsets beyond file": ({"w": dict(ENTRY, data_offsets=[16, 32])}, 16),
    "reversed offsets": ({"w": dict(ENTRY, data_offsets=[16, 0])}, 16),
    "gap": ({"w": dict(ENTRY, data_offsets=[4, 20])}, 20),
    "overlap": ({"w": ENTRY, "v": ENTRY}, 16),
    "trailing bytes": ({"w": ENTRY}, 20),
    "truncated data": ({"w": ENTRY}, 15),
    "extra key": ({"w": dict(ENTRY, extra=1)}, 16),
    "missing key": ({"w": {"dtype": "F32", "shape": [4]}}, 16),
    "bad metadata": ({"w": ENTRY, "__metadata__": {"a": 1}}, 16),
}


@pytest.mark.parametrize("what", sorted(BAD_HEADERS))
def test_safetensors_bad_headers(tmp_path, what):
    header, nbytes = BAD_HEADERS[what]
    path = _st_file(tmp_path / "m.safetensors", header, bytes(nbytes))
    with pytest.raises(FormatError, match="m.safetensors"):
        read_arrays(path)


@pytest.mark.parametrize("raw", [b"", b"\x01\x00", struct.pack("<Q", 1 << 40) + b"{}",
                                 struct.pack("<Q", 4) + b"{}", struct.pack("<Q", 2) + b"\xff\xfe",
                                 struct.pack("<Q", 5) + b"[[[[[", struct.pack("<Q", 6) + b'{"a":}'])
def test_safetensors_bad_magic(tmp_path, raw):
    (tmp_path / "m.safetensors").write_bytes(raw)
    with pytest.raises(FormatError):
        read_arrays(tmp_path / "m.safetensors")


def test_write_safetensors_rejects_bad_input(tmp_path):
    with pytest.raises(InputError):
        write_safetensors(tmp_path / "m.safetensors", {"w": np.array(["a"])})
    with pytest.raises(InputError):
        write_safetensors(tmp_path / "m.safetensors", {"__metadata__": np.zeros(1)})
    with pytest.raises(InputError):
        write_safetensors(tmp_path / "m.safetensors", {"w": np.zeros(1)}, metadata={"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_npz_round_trip(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "a.npz", **arrays)
    assert_same(read_arrays(tmp_path / "a.npz"), arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    assert_same(read_arrays(tmp_path / "c.npz"), arrays)


def test_npz_fortran_order_and_big_endian(tmp_path):
    f = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.savez(tmp_path / "a.npz", f=f, be=np.arange(3, dtype=">f8"))
    out = read_arrays(tmp_path / "a.npz")
    np.testing.assert_array_equal(out["f"], f)
    assert out["be"].dtype == np.float64 and out["be"].tolist() == [0.0, 1.0, 2.0]


def test_npz_refuses_pickled_objects_and_skips_nothing_numeric(tmp_path):
    np.savez(tmp_path / "o.npz", obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FormatError, match="pickle"):
        read_arrays(tmp_path / "o.npz")
    np.savez(tmp_path / "s.npz", text=np.array(["a", "b"]), w=np.ones(2))
    assert list(read_arrays(tmp_path / "s.npz")) == ["w"]             # non-numeric arrays are not weights


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy(shape, dtype="<f4", payload=None):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return buf.getvalue() + (bytes(count) if payload is None else payload)


@pytest.mark.parametrize("members", [
    {"w.npy": _npy((1 << 40, 1 << 20), payload=bytes(64))},           # absurd shape: refused before allocating
    {"w.npy": _npy((4, 4), payload=bytes(10))},                         # shorter than the header says
    {"w.npy": _npy((4,), payload=bytes(20))},                           # longer than the header says
    {"w.npy": b"\x93NUMPY\x09\x00garbage"},                             # unknown version
    {"w.npy": b"not npy"},
    {"w.txt": b"hello"},
])
def test_npz_malformed(tmp_path, members):
    with pytest.raises(FormatError, match="a.npz"):
        read_arrays(_zip(tmp_path / "a.npz", members))


def test_npz_not_a_zip_and_corrupt_crc(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(FormatError):
        read_arrays(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", w=np.arange(100, dtype=np.float64))
    raw = bytearray((tmp_path / "b.npz").read_bytes())
    raw[raw.index(b"NUMPY") + 200] ^= 0xFF                               # a data byte: CRC-32 must catch it
    (tmp_path / "b.npz").write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="CRC"):
        read_arrays(tmp_path / "b.npz")


def test_h5_of_other_tools_every_float_dataset_by_path(tmp_path):
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f.create_dataset("model_weights/dense/kernel:0", data=rng.standard_normal((3, 2)).astype(np.float32))
        f.create_dataset("model_weights/dense/bias:0", data=np.zeros(2, ">f8"))
        f.create_dataset("optimizer/iterations", data=np.int64(7))
        f.create_dataset("names", data=np.array([b"a", b"b"]))
        f["model_weights"].attrs["layer_names"] = [b"dense"]
        f.create_dataset("half", data=np.ones(3, np.float16), compression="gzip")
    out = read_arrays(tmp_path / "k.h5")
    assert sorted(out) == ["half", "model_weights/dense/bias:0", "model_weights/dense/kernel:0"]
    assert out["model_weights/dense/bias:0"].dtype == np.float64 and out["half"].dtype == np.float16


def test_h5_quantized_file_gives_dequantized_arrays(tmp_path):
    arrays = {"w": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}
    qm = quantize_model(arrays, bits=2, method="ot")
    save_quantized(tmp_path / "q.hdf5", qm)
    assert_same(read_arrays(tmp_path / "q.hdf5"), qm.dequantize())


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="unknown file type"):
        read_arrays(tmp_path / "model.pkl")
    for name in ("m.npz", "m.safetensors", "m.h5"):
        with pytest.raises(FormatError, match="no such file"):
            read_arrays(tmp_path / name)
    (tmp_path / "m.h5").write_bytes(b"garbage")
    with pytest.raises(FormatError):
        read_arrays(tmp_path / "m.h5")
