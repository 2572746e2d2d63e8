"""Float checkpoints: exact round trips, atomic writes, and a FormatError for every kind of damage."""
import json
import os

import h5py
import numpy as np
import pytest

import fmq_np as fq
from fmq_np import FormatError


@pytest.fixture
def saved(tmp_path, tiny_mlp_factory):
    m = tiny_mlp_factory(seed=4)
    path = str(tmp_path / "m.h5")
    fq.io.save(path, m, meta={"dataset": "moons"})
    return m, path


def test_round_trip_is_exact(saved):
    m, path = saved
    m2 = fq.io.load(path)
    assert type(m2) is type(m) and m2.config() == m.config()
    assert list(m2.parameters()) == list(m.parameters())
    for k, v in m.parameters().items():
        assert np.array_equal(v, m2.parameters()[k]) and v.dtype == m2.parameters()[k].dtype
    x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    t = np.linspace(0, 1, 7, dtype=np.float32)
    assert np.array_equal(m(x, t), m2(x, t))
    assert fq.io.load_model(path)[1] == {"dataset": "moons"}
    assert fq.io.file_format(path) == "fmq_np.model"


def test_unet_round_trip(tmp_path):
    m = fq.nn.UNetVelocity(channels=1, size=8, width=8, seed=1)
    path = str(tmp_path / "u.h5")
    fq.io.save(path, m)
    m2 = fq.io.load(path)
    for k, v in m.parameters().items():
        assert np.array_equal(v, m2.parameters()[k])


def test_saved_files_get_the_usual_permissions(saved):
    _, path = saved
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_failed_save_leaves_the_old_file(saved, monkeypatch):
    m, path = saved
    before = open(path, "rb").read()

    def broken_config():
        raise RuntimeError("boom")
    monkeypatch.setattr(m, "config", broken_config)
    with pytest.raises(RuntimeError):
        fq.io.save(path, m)
    assert open(path, "rb").read() == before
    assert [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp-")] == []


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize("damage,message", [
    (lambda f: f.attrs.__setitem__("format", "something.else"), "format"),
    (lambda f: f.attrs.__setitem__("format_version", 99), "version"),
    (lambda f: f.attrs.__delitem__("model_class"), "model_class"),
    (lambda f: f.attrs.__setitem__("model_class", "Transformer"), "unknown model class"),
    (lambda f: f.attrs.__setitem__("model_config", "{not json"), "JSON"),
    (lambda f: f.attrs.__setitem__("model_config", json.dumps({"dim": 2, "bogus": 1})), "cannot build"),
    (lambda f: f.attrs.__setitem__("model_config", json.dumps({"dim": 3, "hidden": 32, "depth": 2})), "shape"),
    (lambda f: f["params"].__delitem__(next(iter(f["params"]))), "missing"),
    (lambda f: f["params"].create_dataset("extra", data=np.zeros(3, np.float32)), "unexpected"),
    (lambda f: f.__delitem__("params"), "missing"),
])
def test_damaged_files_raise_format_error(saved, damage, message):
    _, path = saved
    _edit(path, damage)
    with pytest.raises(FormatError, match=message):
        fq.io.load(path)


def test_wrong_dtype_and_nan_weights(saved):
    _, path = saved
    name = next(iter(fq.io.load(path).parameters()))

    def to_float64(f):
        data = f["params"][name][()]
        del f["params"][name]
        f["params"].create_dataset(name, data=data.astype(np.float64))
    _edit(path, to_float64)
    with pytest.raises(FormatError, match="dtype"):
        fq.io.load(path)

    def poison(f):
        data = f["params"][name][()].astype(np.float32)
        data.flat[0] = np.nan
        del f["params"][name]
        f["params"].create_dataset(name, data=data)
    _edit(path, poison)
    with pytest.raises(FormatError, match="NaN"):
        fq.io.load(path)


def test_missing_truncated_and_garbage_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(FormatError, match="no such file"):
        fq.io.load(str(tmp_path / "absent.h5"))
    data = open(path, "rb").read()
    short = tmp_path / "short.h5"
    short.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        fq.io.load(str(short))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(FormatError, match="not a readable HDF5"):
        fq.io.load(str(junk))


def test_flipped_bytes_in_weights_are_caught_by_checksums(saved):
    _, path = saved
    with h5py.File(path, "r") as f:
        ds = f["params"][next(iter(f["params"]))]
        offset = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
    data = bytearray(open(path, "rb").read())
    data[offset + 3] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(FormatError, match="corrupt"):
        fq.io.load(path)
