"""Quantized models in HDF5: bit-exact round trips, real compression, and FormatError on every malformed file."""
import json
import os

import h5py
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import FormatError, InputError
import fmq_np.io.quantized as qio
from fmq_np.io.quantized import load_quantized, save_quantized
from fmq_np.quant import QuantizedModel, QuantizedTensor, quantize_model


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc.0.weight": rng.standard_normal((24, 16)).astype(np.float32),
            "enc.0.bias": rng.standard_normal(24).astype(np.float32),
            "conv/1.kernel": rng.standard_normal((8, 2, 3, 4)),                 # float64, "/" in the name
            "half": rng.standard_normal((6, 8)).astype(np.float16),
            "steps": np.arange(5, dtype=np.int64)}


def assert_same_model(a, b):
    assert list(a.tensors) == list(b.tensors) and a.meta == b.meta
    da, db = a.dequantize(), b.dequantize()
    for name in da:
        assert da[name].dtype == db[name].dtype and da[name].shape == db[name].shape, name
        assert da[name].tobytes() == db[name].tobytes(), name                  # bit for bit
    for name, t in a.tensors.items():
        if isinstance(t, QuantizedTensor):
            u = b.tensors[name]
            assert (u.bits, u.method, u.granularity, u.group_size, u.meta, u.shape) == \
                (t.bits, t.method, t.granularity, t.group_size, t.meta, t.shape)
            np.testing.assert_array_equal(u.codes, t.codes)


@pytest.mark.parametrize("method", ["ot", "uniform", "pwl", "log2", "ot-opt"])
@pytest.mark.parametrize("granularity,group_size", [("channel", None), ("tensor", None), ("group", 4)])
def test_round_trip_bit_exact(tmp_path, method, granularity, group_size):
    for bits in (1, 3, 8):
        qm = quantize_model(_arrays(bits), bits=bits, method=method, granularity=granularity, group_size=group_size)
        qm.meta["model_config"] = {"hidden": 32, "names": ["a.b", "c"]}
        save_quantized(tmp_path / "q.h5", qm)
        assert_same_model(qm, load_quantized(tmp_path / "q.h5"))


def test_paper_compat_skipped_tensors_round_trip(tmp_path):
    arrays = {"tiny": np.array([[0.5, -1.0]], np.float32), "w": np.random.default_rng(1).standard_normal((4, 9))}
    qm = quantize_model(arrays, bits=3, method="ot", paper_compat=True)
    save_quantized(tmp_path / "q.h5", qm)
    assert_same_model(qm, load_quantized(tmp_path / "q.h5"))


def test_file_size_reflects_packed_codes(tmp_path):
    w = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    for method, bits in (("uniform", 2), ("uniform", 3), ("ot", 3), ("ot", 4)):
        qm = quantize_model({"w": w}, bits=bits, method=method)
        save_quantized(tmp_path / "q.h5", qm)
        size = os.path.getsize(tmp_path / "q.h5")
        # the packed codes + codebooks (bits_per_weight) plus a few kB of HDF5 structure: far below float32
        assert size <= w.size * qm.tensors["w"].bits_per_weight / 8 + 8192, (method, bits, size)
        assert size < w.nbytes / 5
    with h5py.File(tmp_path / "q.h5") as f:
        assert f["tensors/000000/codes"].shape == ((256 * 256 * 4 + 7) // 8,)


def _stored(path, i):
    """``(attrs, {part: byte count})`` of the tensor at position ``i``, from its own group or from its pack."""
    with h5py.File(path) as f:
        g = f["tensors"].get(f"{i:06d}")
        if g is not None:
            return ({k: v.decode() if isinstance(v, bytes) else v for k, v in g.attrs.items()},
                    {k: g[k].size * g[k].dtype.itemsize for k in g})
        for pack in f["packed"].values():
            for rec in json.loads(pack["index"][()].tobytes()):
                if rec["position"] == i:
                    return rec["attrs"], {k: n for k, (_, n) in rec["parts"].items()}
    raise AssertionError(f"no tensor at position {i}")


@pytest.fixture(params=["own", "packed"])
def layout(request, monkeypatch):
    """Both ways a tensor is stored: an HDF5 group of its own (SMALL_BYTES 0) or a pack (the default)."""
    if request.param == "own":
        monkeypatch.setattr(qio, "SMALL_BYTES", 0)
    return request.param


def test_uniform_codebooks_stored_as_scale_and_offset(tmp_path, layout):
    w = np.random.default_rng(2).standard_normal((32, 40)).astype(np.float32)
    w[3] = -0.0                                              # a constant row: every level is exactly -0.0
    qm = quantize_model({"w": w}, bits=3, method="uniform")
    save_quantized(tmp_path / "q.h5", qm)
    attrs, parts = _stored(tmp_path / "q.h5", 0)
    assert attrs["codebook_kind"] == "affine" and sorted(parts) == ["codes", "offset", "scale"]
    assert parts["scale"] == 32 * 4
    back = load_quantized(tmp_path / "q.h5")
    assert_same_model(qm, back)
    assert np.signbit(back.tensors["w"].codebook[3]).all()


def test_not_affine_when_it_would_not_be_exact(tmp_path, layout):
    qm = quantize_model({"w": np.random.default_rng(3).standard_normal((8, 16))}, bits=2, method="uniform")
    t = qm.tensors["w"]
    t.codebook[0, 1] = np.nextafter(t.codebook[0, 1], 9.0)   # no longer c * scale + offset
    save_quantized(tmp_path / "q.h5", qm)
    assert _stored(tmp_path / "q.h5", 0)[0]["codebook_kind"] == "table"
    assert_same_model(qm, load_quantized(tmp_path / "q.h5"))


def test_dispatch_through_fmq_np_io(tmp_path):
    qm = quantize_model(_arrays(), bits=2, method="ot")
    fq.io.save(tmp_path / "q.h5", qm)
    assert fq.io.file_format(tmp_path / "q.h5") == "fmq_np.quantized"
    assert_same_model(qm, fq.io.load(tmp_path / "q.h5"))


def test_save_rejects_bad_models(tmp_path):
    good = quantize_model(_arrays(), bits=2, method="ot")
    with pytest.raises(InputError, match="JSON"):
        save_quantized(tmp_path / "q.h5", QuantizedModel(good.tensors, {"x": object()}))
    with pytest.raises(InputError, match="QuantizedTensor"):
        save_quantized(tmp_path / "q.h5", QuantizedModel({"x": [1.0, 2.0]}, {}))
    t = good.tensors["enc.0.weight"]
    bad = QuantizedTensor(codes=t.codes[:, :-1], codebook=t.codebook, shape=t.shape, dtype=t.dtype, bits=t.bits,
                          method=t.method, granularity=t.granularity)
    with pytest.raises(InputError, match="codes"):
        save_quantized(tmp_path / "q.h5", QuantizedModel({"w": bad}, {}))
    assert not os.path.exists(tmp_path / "q.h5")
    assert os.listdir(tmp_path) == []                        # no temp file left behind


def test_failed_save_keeps_the_old_file(tmp_path):
    qm = quantize_model(_arrays(), bits=2, method="ot")
    save_quantized(tmp_path / "q.h5", qm)
    before = (tmp_path / "q.h5").read_bytes()
    with pytest.raises(InputError):
        save_quantized(tmp_path / "q.h5", QuantizedModel({"a": np.zeros(2), "b": "text"}, {}))
    assert (tmp_path / "q.h5").read_bytes() == before


# ------------------------------------------------------------------------------------------------ malformed files
@pytest.fixture
def saved(tmp_path, monkeypatch):
    """A file whose every tensor has an HDF5 object of its own (the version 1 layout; large tensors in version 2)."""
    monkeypatch.setattr(qio, "SMALL_BYTES", 0)
    qm = quantize_model(_arrays(), bits=3, method="uniform")
    qm.tensors["ot"] = quantize_model({"w": _arrays()["enc.0.weight"]}, bits=3, method="ot").tensors["w"]
    path = tmp_path / "q.h5"
    save_quantized(path, qm)
    return path


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def _str(value):
    return np.bytes_(value.encode())


MUTATIONS = {
    "format": lambda f: f.attrs.__setitem__("format", _str("fmq_np.model")),
    "format missing": lambda f: f.attrs.__delitem__("format"),
    "version": lambda f: f.attrs.__setitem__("format_version", 3),
    "version type": lambda f: f.attrs.__setitem__("format_version", _str("1")),
    "meta not json": lambda f: f.attrs.__setitem__("meta", _str("{bits: 3")),
    "meta not object": lambda f: f.attrs.__setitem__("meta", _str("[1, 2]")),
    "n_tensors": lambda f: f.attrs.__setitem__("n_tensors", 7),
    "n_tensors negative": lambda f: f.attrs.__setitem__("n_tensors", -1),
    "tensors missing": lambda f: f.__delitem__("tensors"),
    "entry renamed": lambda f: f.move("tensors/000001", "tensors/x"),
    "duplicate name": lambda f: f["tensors/000001"].attrs.__setitem__("name", _str("enc.0.weight")),
    "kind": lambda f: f["tensors/000000"].attrs.__setitem__("kind", _str("sparse")),
    "bits 0": lambda f: f["tensors/000000"].attrs.__setitem__("bits", 0),
    "bits 9": lambda f: f["tensors/000000"].attrs.__setitem__("bits", 9),
    "bits changed": lambda f: f["tensors/000000"].attrs.__setitem__("bits", 4),
    "bits float": lambda f: f["tensors/000000"].attrs.__setitem__("bits", 3.0),
    "dtype": lambda f: f["tensors/000000"].attrs.__setitem__("dtype", _str("int8")),
    "dtype changed": lambda f: f["tensors/000000"].attrs.__setitem__("dtype", _str("float64")),
    "shape": lambda f: f["tensors/000000"].attrs.__setitem__("shape", _str("[24, 15]")),
    "shape negative": lambda f: f["tensors/000000"].attrs.__setitem__("shape", _str("[-24, -16]")),
    "shape absurd": lambda f: f["tensors/000000"].attrs.__setitem__("shape", _str("[4294967296, 65536]")),
    "shape not json": lambda f: f["tensors/000000"].attrs.__setitem__("shape", _str("24x16")),
    "codes_shape": lambda f: f["tensors/000000"].attrs.__setitem__("codes_shape", _str("[1, 384]")),
    "granularity": lambda f: f["tensors/000000"].attrs.__setitem__("granularity", _str("row")),
    "group_size": lambda f: f["tensors/000000"].attrs.__setitem__("group_size", 5),
    "method missing": lambda f: f["tensors/000000"].attrs.__delitem__("method"),
    "codebook_kind": lambda f: f["tensors/000000"].attrs.__setitem__("codebook_kind", _str("table")),
    "codes truncated": lambda f: _replace(f, "tensors/000000/codes", lambda a: a[:-1]),
    "codes dtype": lambda f: _replace(f, "tensors/000000/codes", lambda a: a.astype(np.int16)),
    "codes missing": lambda f: f.__delitem__("tensors/000000/codes"),
    "scale negative": lambda f: _replace(f, "tensors/000000/scale", lambda a: -a),
    "offset nan": lambda f: _replace(f, "tensors/000000/offset", lambda a: a * np.nan),
    "codebook unsorted": lambda f: _replace(f, "tensors/000005/codebook", lambda a: a[:, ::-1]),
    "codebook inf": lambda f: _replace(f, "tensors/000005/codebook", lambda a: a + np.inf),
    "codebook shape": lambda f: _replace(f, "tensors/000005/codebook", lambda a: a[:, :4]),
    "codebook dtype": lambda f: _replace(f, "tensors/000005/codebook", lambda a: a.astype(np.float64)),
    "unallocated huge codes": lambda f: _unallocated(f, "tensors/000005"),
    "array length": lambda f: _replace(f, "tensors/000001", lambda a: a[:-1], keep_attrs=True),
    "array strings": lambda f: _replace(f, "tensors/000004", lambda a: a.astype("S3"), keep_attrs=True),
}


def _replace(f, name, fn, keep_attrs=False):
    data, attrs = fn(f[name][()]), dict(f[name].attrs)
    del f[name]
    f.create_dataset(name, data=data)
    if keep_attrs:
        f[name].attrs.update(attrs)


def _unallocated(f, name):
    g = f[name]
    g.attrs["shape"] = _str("[1048576, 2048]")
    g.attrs["codes_shape"] = _str("[1048576, 2048]")
    g.attrs["granularity"] = _str("channel")
    del g["codes"]
    g.create_dataset("codes", shape=(1048576 * 2048 * 3 // 8,), dtype=np.uint8)   # declared, never written


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_malformed_files_raise_format_error(saved, what):
    _edit(saved, MUTATIONS[what])
    with pytest.raises(FormatError, match=str(saved)):
        load_quantized(saved)


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 100])
def test_not_hdf5(tmp_path, content):
    (tmp_path / "x.h5").write_bytes(content)
    with pytest.raises(FormatError):
        load_quantized(tmp_path / "x.h5")
    with pytest.raises(FormatError, match="no such file"):
        load_quantized(tmp_path / "missing.h5")


def test_float_checkpoint_is_not_a_quantized_model(tmp_path):
    m = fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0)
    fq.io.save(tmp_path / "m.h5", m)
    with pytest.raises(FormatError, match="not an fmq_np quantized model"):
        load_quantized(tmp_path / "m.h5")


def test_meta_json_in_file(saved):
    with h5py.File(saved) as f:
        meta = json.loads(f.attrs["meta"])
        assert meta["bits"] == 3 and meta["method"] == "uniform"
        assert [f["tensors"][k].attrs["name"].decode() for k in sorted(f["tensors"])][:2] == \
            ["enc.0.weight", "enc.0.bias"]


# ------------------------------------------------------------------------------------- format versions and packs
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def test_version_1_files_still_load_bit_for_bit(tmp_path):
    """tests/fixtures/quantized_v1.h5 was written by the version 1 writer (one HDF5 object per tensor); the npz holds
    the in-memory model it was written from."""
    path = os.path.join(FIXTURES, "quantized_v1.h5")
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 1 and "packed" not in f
    expected = np.load(os.path.join(FIXTURES, "quantized_v1_expected.npz"))
    qm = load_quantized(path)
    assert list(qm.tensors) == json.loads(str(expected["__names__"]))
    assert qm.meta == json.loads(str(expected["__meta__"]))
    for i, (name, t) in enumerate(qm.tensors.items()):
        values = t.dequantize() if isinstance(t, QuantizedTensor) else t
        want = expected[f"{i}.values"]
        assert values.dtype == want.dtype and values.shape == want.shape and values.tobytes() == want.tobytes(), name
        if isinstance(t, QuantizedTensor):
            np.testing.assert_array_equal(t.codes, expected[f"{i}.codes"])
            assert t.codebook.tobytes() == expected[f"{i}.codebook"].tobytes()
    save_quantized(tmp_path / "v2.h5", qm)                 # re-saved in the current version, same model
    with h5py.File(tmp_path / "v2.h5") as f:
        assert f.attrs["format_version"] == qio.VERSION == 2 and len(f["packed"]) == 1 and len(f["tensors"]) == 0
    assert_same_model(qm, load_quantized(tmp_path / "v2.h5"))


def test_many_tiny_tensors_cost_little_more_than_their_bytes(tmp_path):
    """2,000 tensors of 8 float32 values: a few bytes of index each, not an HDF5 object each (~374 B)."""
    rng = np.random.default_rng(5)
    arrays = {f"block.{i}.bias": rng.standard_normal(8).astype(np.float32) for i in range(2000)}
    arrays["w"] = rng.standard_normal((16, 8)).astype(np.float32)
    qm = quantize_model(arrays, bits=4, method="ot")
    save_quantized(tmp_path / "q.h5", qm)
    payload = sum(a.nbytes for a in arrays.values())
    assert os.path.getsize(tmp_path / "q.h5") < payload + 40 * len(arrays) + 8192
    assert_same_model(qm, load_quantized(tmp_path / "q.h5"))


def test_small_tensors_fill_packs_of_bounded_size_in_order(tmp_path, monkeypatch):
    """With PACK_BYTES small, the tensors below SMALL_BYTES spread over several packs, the large ones stay on their
    own, and the model still loads in its order."""
    monkeypatch.setattr(qio, "PACK_BYTES", 600)
    rng = np.random.default_rng(6)
    arrays = {}
    for i in range(12):
        arrays[f"b{i}"] = rng.standard_normal(40).astype(np.float32)          # 160 B each
        if i % 4 == 0:
            arrays[f"w{i}"] = rng.standard_normal((128, 128)).astype(np.float32)   # ~8 KB of 4-bit codes: own
    qm = quantize_model(arrays, bits=4, method="ot")
    save_quantized(tmp_path / "q.h5", qm)
    with h5py.File(tmp_path / "q.h5") as f:
        own = sorted(f["tensors"])
        sizes = [p["data"].size for p in f["packed"].values()]
    assert len(own) == 3 and len(sizes) == 3 and all(s <= 600 + 160 for s in sizes)
    assert_same_model(qm, load_quantized(tmp_path / "q.h5"))


@pytest.fixture
def packed(tmp_path):
    qm = quantize_model(_arrays(), bits=3, method="uniform")
    qm.tensors["ot"] = quantize_model({"w": _arrays()["enc.0.weight"]}, bits=3, method="ot").tensors["w"]
    path = tmp_path / "p.h5"
    save_quantized(path, qm)
    with h5py.File(path) as f:
        assert len(f["tensors"]) == 0 and list(f["packed"]) == ["000000"]
    return path


def _index(fn):
    """A mutation of pack 0's index: ``fn(records)`` edits the parsed JSON in place (or returns a replacement)."""
    def edit(f):
        records = json.loads(f["packed/000000/index"][()].tobytes())
        records = fn(records) or records
        raw = records if isinstance(records, bytes) else json.dumps(records).encode()
        del f["packed/000000/index"]
        f["packed/000000"].create_dataset("index", data=np.frombuffer(raw, np.uint8))
    return edit


def _set(key, value, record=0, where="attrs"):
    return _index(lambda r: r[record][where].__setitem__(key, value))


def _span(part, value, record=0):
    return _index(lambda r: r[record]["parts"].__setitem__(part, value))


PACKED_MUTATIONS = {
    "index not json": _index(lambda r: b"[{\"position\": 0,"),
    "index not utf-8": _index(lambda r: b"\xff\xfe"),
    "index not a list": _index(lambda r: {"position": 0}),
    "record not an object": _index(lambda r: r.__setitem__(0, [0, {}, {}])),
    "record key missing": _index(lambda r: r[0].__delitem__("parts")),
    "position negative": _index(lambda r: r[0].__setitem__("position", -1)),
    "position float": _index(lambda r: r[0].__setitem__("position", 0.0)),
    "position duplicated": _index(lambda r: r[1].__setitem__("position", 0)),
    "position beyond n": _index(lambda r: r[1].__setitem__("position", 99)),
    "record dropped": _index(lambda r: r.pop()),
    "name duplicated": _set("name", "enc.0.weight", record=1),
    "name not a string": _set("name", 7),
    "kind unknown": _set("kind", "sparse"),
    "shape changed": _set("shape", "[24, 15]"),
    "shape absurd": _set("shape", "[4294967296, 65536]"),
    "bits changed": _set("bits", 4),
    "array dtype changed": _set("dtype", "<f8", record=1),
    "array dtype hostile": _set("dtype", "(1000000000,)f8", record=1),
    "quantized dtype changed": _set("dtype", "float64"),
    "span out of range": _span("codes", [0, 1 << 40]),
    "span negative": _span("codes", [-8, 8]),
    "span not a pair": _span("codes", [0]),
    "span bool": _span("codes", [False, True]),
    "spans overlap": _index(lambda r: r[0]["parts"]["codes"].__setitem__(0, r[0]["parts"]["codes"][0] + 1)),
    "part missing": _index(lambda r: r[0]["parts"].__delitem__("scale")),
    "part extra": _index(lambda r: r[0]["parts"].__setitem__("codebook", r[0]["parts"].pop("scale"))),
    "part renamed on an array": _index(lambda r: r[1]["parts"].__setitem__("codes", r[1]["parts"].pop("values"))),
    "data truncated": lambda f: _replace(f, "packed/000000/data", lambda a: a[:-3]),
    "data longer": lambda f: _replace(f, "packed/000000/data", lambda a: np.concatenate([a, a[:5]])),
    "data float": lambda f: _replace(f, "packed/000000/data", lambda a: a.astype(np.float32)),
    "data missing": lambda f: f.__delitem__("packed/000000/data"),
    "index missing": lambda f: f.__delitem__("packed/000000/index"),
    "pack a dataset": lambda f: (f.__delitem__("packed/000000"), f["packed"].create_dataset("000000", data=[1])),
    "packed a dataset": lambda f: (f.__delitem__("packed"), f.create_dataset("packed", data=[1])),
    "position also in tensors": lambda f: f["tensors"].create_dataset("000001", data=np.zeros(24, np.float32)),
    "unexpected tensors entry": lambda f: f["tensors"].create_group("extra"),
    "n_tensors smaller": lambda f: f.attrs.__setitem__("n_tensors", 3),
}


@pytest.mark.parametrize("what", sorted(PACKED_MUTATIONS))
def test_malformed_packs_raise_format_error_naming_the_file(packed, what):
    _edit(packed, PACKED_MUTATIONS[what])
    with pytest.raises(FormatError, match=str(packed)) as exc:
        load_quantized(packed)
    assert "\n" not in str(exc.value)


def test_a_bad_span_names_the_tensor(packed):
    _edit(packed, _span("codes", [0, 1 << 40], record=3))
    with pytest.raises(FormatError, match=r"tensor 'half'.*part 'codes'"):
        load_quantized(packed)


def test_packs_are_not_read_in_version_1_files(packed):
    _edit(packed, lambda f: f.attrs.__setitem__("format_version", 1))
    with pytest.raises(FormatError, match="stores 0 tensors"):
        load_quantized(packed)
