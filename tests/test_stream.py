"""fq.quant.quantize_file: streaming quantization equals the in-memory quantize_model, resumes, refuses bad input."""
import errno
import json
import os
import struct
import sys

import h5py
import numpy as np
import pytest

import fmq_np as fq
import fmq_np.io.quantized as qio
from fmq_np.errors import FmqError, FormatError, InputError
from fmq_np.io import write_safetensors
from fmq_np.quant import stream
from fmq_np.quant.tensor import QuantizedTensor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import make_pth as mp  # noqa: E402

BITS = 3


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc.w": rng.standard_normal((16, 24)).astype(np.float16),
            "enc.b": rng.standard_normal(16).astype(np.float16),
            "dec.w": rng.standard_normal((8, 40)).astype(np.float32),
            "dec.b": rng.standard_normal(8).astype(np.float32),
            "steps": np.array([3, 4], np.int64),
            "head.w": rng.standard_normal((4, 3, 16)).astype(np.float32)}


def _bf16_bits(a):
    """float32 values bfloat16 holds exactly → their bfloat16 bits (top half)."""
    return (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _write_raw_safetensors(path, entries):
    """``entries``: name → (safetensors dtype, shape, raw bytes): lets the test write BF16, which our writer does
    not."""
    header, offset = {}, 0
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(raw for _, _, raw in entries.values()))


def _sharded(folder, arrays, groups, stem="model"):
    """Write ``arrays`` as shards holding the names in ``groups`` and their index; returns the index path."""
    wmap = {}
    for j, names in enumerate(groups):
        shard = f"{stem}-{j + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(os.path.join(folder, shard), {n: arrays[n] for n in names})
        wmap.update({n: shard for n in names})
    index = os.path.join(folder, f"{stem}.safetensors.index.json")
    with open(index, "w") as fh:
        json.dump({"metadata": {"total_size": sum(a.nbytes for a in arrays.values())}, "weight_map": wmap}, fh)
    return index


def _source(tmp_path, fmt):
    arrays = _arrays()
    if fmt == "safetensors":
        path = tmp_path / "m.safetensors"
        write_safetensors(path, arrays)
    elif fmt == "bf16":
        path = tmp_path / "bf.safetensors"
        f32 = {n: mp.bf16_exact(a.astype(np.float32)) for n, a in arrays.items() if a.dtype.kind == "f"}
        _write_raw_safetensors(path, {n: ("BF16", a.shape, _bf16_bits(a).tobytes()) for n, a in f32.items()})
    elif fmt == "sharded":
        path = _sharded(tmp_path, arrays, [["enc.w", "enc.b"], ["dec.w", "dec.b", "steps"], ["head.w"]])
    elif fmt == "npz":
        path = tmp_path / "m.npz"
        np.savez(path, **arrays)
    elif fmt == "h5":
        path = tmp_path / "m.h5"
        with h5py.File(path, "w") as f:
            for n, a in arrays.items():
                if a.dtype.kind == "f":
                    f.create_dataset(n.replace(".", "/"), data=a)
    else:
        path = tmp_path / "m.pth"
        mp.write_pth(path, {"model": {n: mp.tensor(a) for n, a in arrays.items()}})
    return str(path)


def _same_model(a, b):
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        x, y = a.tensors[name], b.tensors[name]
        assert type(x) is type(y), name
        if isinstance(x, QuantizedTensor):
            assert np.array_equal(x.codes, y.codes) and x.codebook.dtype == y.codebook.dtype, name
            assert x.codebook.view(np.uint8).tobytes() == y.codebook.view(np.uint8).tobytes(), name
            assert (x.shape, x.dtype, x.bits, x.granularity) == (y.shape, y.dtype, y.bits, y.granularity), name
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


FORMATS = ["safetensors", "bf16", "sharded", "npz", "h5", "pth"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_h5_output_equals_quantize_model(tmp_path, fmt):
    src = _source(tmp_path, fmt)
    ref = fq.quant.quantize_model(fq.io.read_arrays(src), bits=BITS, method="ot")
    report = fq.quant.quantize_file(src, tmp_path / "q.h5", bits=BITS, method="ot", progress=False)
    got = fq.io.load(tmp_path / "q.h5")
    _same_model(got, ref)
    assert got.meta == ref.meta                       # source_digest over the whole input included
    assert not os.path.exists(tmp_path / "q.h5.partial")
    files = report["files_in"]
    assert report["bytes_in"] == sum(os.path.getsize(p) for p in files) and len(files) == (4 if fmt == "sharded" else 1)
    assert report["bytes_out"] == os.path.getsize(tmp_path / "q.h5")
    assert report["tensors"] == len(ref.tensors) and report["resumed"] == 0
    assert report["quantized"] == sum(isinstance(t, QuantizedTensor) for t in ref.tensors.values())
    assert [r["name"] for r in report["rows"]] == list(ref.tensors)


def _bf16_round(x):
    """Naive float32 → bfloat16 round to nearest even, per value (reference for the .safetensors output)."""
    out = []
    for v in np.asarray(x, np.float32).ravel():
        lo = float(np.uint32(int(np.float32(v).view(np.uint32)) & 0xFFFF0000).view(np.float32))
        hi = float(np.uint32((int(np.float32(v).view(np.uint32)) & 0xFFFF0000) + 0x10000).view(np.float32))
        d_lo, d_hi = abs(float(v) - lo), abs(hi - float(v))
        pick = lo if d_lo < d_hi or (d_lo == d_hi and not (int(np.float32(lo).view(np.uint32)) >> 16) & 1) else hi
        out.append(pick)
    return np.array(out, np.float32).reshape(np.shape(x))


@pytest.mark.parametrize("fmt", ["safetensors", "bf16", "sharded", "npz"])
def test_safetensors_output_is_the_dequantized_model(tmp_path, fmt):
    src = _source(tmp_path, fmt)
    ref = fq.quant.quantize_model(fq.io.read_arrays(src), bits=BITS).dequantize()
    report = fq.quant.quantize_file(src, tmp_path / "d.safetensors", bits=BITS, progress=False)
    if fmt == "sharded":
        index = str(tmp_path / "d.safetensors.index.json")
        assert report["files_out"][0] == index
        wmap = json.load(open(index))["weight_map"]
        src_map = json.load(open(src))["weight_map"]
        assert {n: s.split("-")[1] for n, s in wmap.items()} == {n: s.split("-")[1] for n, s in src_map.items()}
        got = fq.io.read_arrays(index)
    else:
        got = fq.io.read_arrays(tmp_path / "d.safetensors")
    assert list(got) == list(ref)
    raw_dtypes = {}
    for shard in [p for p in report["files_out"] if p.endswith(".safetensors")]:
        n = struct.unpack("<Q", open(shard, "rb").read(8))[0]
        header = json.loads(open(shard, "rb").read(8 + n)[8:])
        raw_dtypes.update({k: v["dtype"] for k, v in header.items() if k != "__metadata__"})
    for name, a in ref.items():
        if fmt == "bf16":
            assert raw_dtypes[name] == "BF16"
            np.testing.assert_array_equal(got[name], _bf16_round(a))
        else:
            assert got[name].dtype == a.dtype
            np.testing.assert_array_equal(got[name], a)


class _Crash(Exception):
    pass


def _crash_after(monkeypatch, k):
    real, calls = stream._write, []

    def write(*args):
        if len(calls) == k:
            raise _Crash("simulated crash")
        calls.append(args[2])
        return real(*args)
    monkeypatch.setattr(stream, "_write", write)


@pytest.mark.parametrize("out", ["q.h5", "d.safetensors"])
def test_resume_after_a_crash_gives_the_uninterrupted_result(tmp_path, monkeypatch, out):
    src = _source(tmp_path, "sharded")
    whole = tmp_path / ("whole" + os.path.splitext(out)[1])
    fq.quant.quantize_file(src, whole, bits=BITS, progress=False)
    dst = tmp_path / out
    monkeypatch.setattr(qio, "PACK_BYTES", 1)               # every small tensor is done as soon as it is written
    with monkeypatch.context() as m:
        _crash_after(m, 3)                       # two tensors of shard 1, one of shard 2 written
        with pytest.raises(_Crash):
            fq.quant.quantize_file(src, dst, bits=BITS, progress=False)
    assert not os.path.exists(dst)
    if out.endswith(".h5"):
        with pytest.raises(FormatError, match="incomplete.*resume"):
            fq.io.load(str(dst) + ".partial")
        with pytest.raises(InputError, match="other settings"):
            fq.quant.quantize_file(src, dst, bits=BITS + 1, resume=True, progress=False)
    else:
        assert not os.path.exists(tmp_path / "d.safetensors.index.json")
    seen = []
    report = fq.quant.quantize_file(src, dst, bits=BITS, resume=True, progress=lambda i, n, name, b: seen.append(i))
    assert report["resumed"] == 3 and seen == list(range(1, 7))
    assert [r["name"] for r in report["rows"]] == ["dec.b", "steps", "head.w"]      # only those were quantized
    if out.endswith(".h5"):
        a, b = fq.io.load(dst), fq.io.load(whole)
        _same_model(a, b)
        assert a.meta == b.meta
    else:
        a = fq.io.read_arrays(tmp_path / "d.safetensors.index.json")
        b = fq.io.read_arrays(tmp_path / "whole.safetensors.index.json")
        assert list(a) == list(b) and all(np.array_equal(a[n], b[n]) for n in a)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


def _content(path):
    """Every group and dataset of an HDF5 file: ``{path: (attrs, data bytes or None)}`` (the ``complete`` flag of a
    streamed file left out)."""
    out = {}
    with h5py.File(path) as f:
        def visit(name, obj):
            data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None
            out[name] = ({k: np.asarray(v).tobytes() for k, v in obj.attrs.items()}, data)
        visit("/", f)
        f.visititems(visit)
    out["/"][0].pop("complete", None)
    return out


def test_h5_output_is_the_file_save_quantized_writes(tmp_path, monkeypatch):
    """Same tensors, same file content: own entries for the large tensors, the same packs for the small ones."""
    monkeypatch.setattr(qio, "PACK_BYTES", 500)             # several packs
    arrays = dict(_arrays(), big=np.random.default_rng(9).standard_normal((192, 256)).astype(np.float32))
    np.savez(tmp_path / "m.npz", **arrays)
    fq.quant.quantize_file(tmp_path / "m.npz", tmp_path / "q.h5", bits=BITS, progress=False)
    qm = fq.quant.quantize_model(fq.io.read_arrays(tmp_path / "m.npz"), bits=BITS)
    fq.io.save(tmp_path / "ref.h5", qm)
    got = _content(tmp_path / "q.h5")
    assert got == _content(tmp_path / "ref.h5")
    assert "tensors/000006" in got and "packed/000001/index" in got


def test_resume_with_packed_tensors_redoes_only_what_no_pack_holds(tmp_path, monkeypatch):
    """Small tensors wait in memory for their pack: a crash loses those (they are quantized again), never a pack
    written before it, and the resumed file is the uninterrupted one."""
    src = _source(tmp_path, "npz")
    monkeypatch.setattr(qio, "PACK_BYTES", 420)             # enc.w (400 B stored) + enc.b (32 B) fill the first pack
    fq.quant.quantize_file(src, tmp_path / "whole.h5", bits=BITS, progress=False)
    with monkeypatch.context() as m:
        _crash_after(m, 3)                                  # dec.w written (waiting), crash at dec.b
        with pytest.raises(_Crash):
            fq.quant.quantize_file(src, tmp_path / "q.h5", bits=BITS, progress=False)
    with h5py.File(str(tmp_path / "q.h5") + ".partial") as f:
        assert f.attrs["n_done"] == 2 and not f.attrs["complete"]
    with pytest.raises(FormatError, match="incomplete"):
        fq.io.load(str(tmp_path / "q.h5") + ".partial")
    report = fq.quant.quantize_file(src, tmp_path / "q.h5", bits=BITS, resume=True, progress=False)
    assert report["resumed"] == 2 and [r["name"] for r in report["rows"]] == ["dec.w", "dec.b", "steps", "head.w"]
    assert _content(tmp_path / "q.h5") == _content(tmp_path / "whole.h5")


def test_without_resume_a_partial_output_is_started_over(tmp_path, monkeypatch):
    src = _source(tmp_path, "npz")
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(_Crash):
            fq.quant.quantize_file(src, tmp_path / "q.h5", bits=BITS, progress=False)
    report = fq.quant.quantize_file(src, tmp_path / "q.h5", bits=BITS, progress=False)
    assert report["resumed"] == 0
    _same_model(fq.io.load(tmp_path / "q.h5"), fq.quant.quantize_model(fq.io.read_arrays(src), bits=BITS))


def _one_line(exc):
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_index_naming_a_missing_shard(tmp_path):
    src = _source(tmp_path, "sharded")
    os.remove(tmp_path / "model-00002-of-00003.safetensors")
    with pytest.raises(FormatError, match="model-00002-of-00003.safetensors.*missing") as exc:
        fq.quant.quantize_file(src, tmp_path / "q.h5", progress=False)
    assert "dec.w" in _one_line(exc)


def test_shards_that_disagree_on_a_tensor(tmp_path):
    arrays = _arrays()
    src = _sharded(tmp_path, arrays, [["enc.w", "enc.b"], ["dec.w", "dec.b", "steps", "head.w"]])
    # the same tensor in two shards: shard 1 also holds dec.b
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors",
                      {n: arrays[n] for n in ["enc.w", "enc.b", "dec.b"]})
    with pytest.raises(FormatError, match="dec.b.*index puts it in model-00002") as exc:
        fq.quant.quantize_file(src, tmp_path / "q.h5", progress=False)
    _one_line(exc)
    # the index names a tensor the shard does not hold
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"enc.w": arrays["enc.w"]})
    with pytest.raises(FormatError, match="model-00001-of-00002.safetensors: tensor 'enc.b'.*not in this shard"):
        fq.quant.quantize_file(src, tmp_path / "q.h5", progress=False)
    # a shard whose header gives another dtype / shape than the index's total_size allows
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors",
                      {"enc.w": arrays["enc.w"].astype(np.float32), "enc.b": arrays["enc.b"]})
    with pytest.raises(FormatError, match="total_size"):
        fq.quant.quantize_file(src, tmp_path / "q.h5", progress=False)
    assert not os.path.exists(tmp_path / "q.h5")


def test_shard_truncated_before_and_during_the_run(tmp_path):
    src = _source(tmp_path, "sharded")
    shard2 = tmp_path / "model-00002-of-00003.safetensors"
    size = os.path.getsize(shard2)

    def cut(done, total, name, nbytes):
        if done == 2:                            # shard 1 finished: shard 2 loses its tail
            with open(shard2, "r+b") as fh:
                fh.truncate(size - 10)
    with pytest.raises(FormatError, match="model-00002-of-00003.safetensors: tensor 'steps' is truncated") as exc:
        fq.quant.quantize_file(src, tmp_path / "q.h5", progress=cut)
    assert "incomplete" in _one_line(exc)
    assert not os.path.exists(tmp_path / "q.h5")
    with pytest.raises(FormatError, match="incomplete"):
        fq.io.load(str(tmp_path / "q.h5") + ".partial")
    # truncated before the run: refused before any work, naming the tensor
    with pytest.raises(FormatError, match="model-00002-of-00003.safetensors: tensor 'steps' is truncated"):
        fq.quant.quantize_file(src, tmp_path / "q2.h5", progress=False)
    assert not os.path.exists(tmp_path / "q2.h5.partial")


def test_full_disk_names_the_tensor_and_keeps_the_partial_incomplete(tmp_path, monkeypatch):
    src = _source(tmp_path, "safetensors")
    monkeypatch.setattr(qio, "PACK_BYTES", 1)               # every small tensor is done as soon as it is written
    real, calls = qio.Writer.add, []

    def add(writer, i, name, t):
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        calls.append(name)
        return real(writer, i, name, t)
    with monkeypatch.context() as m:
        m.setattr(qio.Writer, "add", add)
        with pytest.raises(FormatError, match=r"q.h5.partial: cannot write tensor 'dec.w' \(No space left") as exc:
            fq.quant.quantize_file(src, tmp_path / "q.h5", bits=BITS, progress=False)
    assert "resume" in _one_line(exc)
    with pytest.raises(FormatError, match="incomplete"):
        fq.io.load(str(tmp_path / "q.h5") + ".partial")
    report = fq.quant.quantize_file(src, tmp_path / "q.h5", bits=BITS, resume=True, progress=False)
    assert report["resumed"] == 2
    _same_model(fq.io.load(tmp_path / "q.h5"), fq.quant.quantize_model(fq.io.read_arrays(src), bits=BITS))


def test_bad_arguments(tmp_path):
    src = _source(tmp_path, "npz")
    with pytest.raises(InputError, match="output must be"):
        fq.quant.quantize_file(src, tmp_path / "q.npz", progress=False)
    with pytest.raises(InputError, match="overwrite the input"):
        fq.quant.quantize_file(src, src, progress=False)
    with pytest.raises(InputError, match="unknown file type"):
        fq.quant.quantize_file(tmp_path / "x.json", tmp_path / "q.h5", progress=False)
    with pytest.raises(FormatError, match="no such file"):
        fq.quant.quantize_file(tmp_path / "none.safetensors", tmp_path / "q.h5", progress=False)
    fq.quant.quantize_file(src, tmp_path / "q.h5", progress=False)
    with pytest.raises(InputError, match="already quantized"):
        fq.quant.quantize_file(tmp_path / "q.h5", tmp_path / "q2.h5", progress=False)
    with pytest.raises(FmqError):
        fq.quant.quantize_file(src, tmp_path / "q.h5", bits=9, progress=False)


def test_read_arrays_reads_a_sharded_index_in_shard_order(tmp_path):
    arrays = _arrays()
    index = _sharded(tmp_path, arrays, [["head.w", "enc.w"], ["enc.b", "dec.w", "dec.b", "steps"]])
    got = fq.io.read_arrays(index)
    assert list(got) == ["head.w", "enc.w", "enc.b", "dec.w", "dec.b", "steps"]
    assert all(got[n].dtype == a.dtype and np.array_equal(got[n], a) for n, a in arrays.items())
    assert list(fq.io.read_arrays(index, key="dec")) == ["w", "b"]


@pytest.mark.parametrize("out", ["q.h5", "q.safetensors"])
def test_no_float_tensor_is_an_error_and_leaves_nothing(tmp_path, out):
    np.savez(tmp_path / "ints.npz", a=np.arange(6), b=np.ones(3, np.int32))
    with pytest.raises(FormatError, match="no float tensors to quantize .found only 2 non-float arrays"):
        fq.quant.quantize_file(tmp_path / "ints.npz", tmp_path / out, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["ints.npz"]


def test_cli_quantize_streams_a_sharded_checkpoint_and_resumes(tmp_path, monkeypatch, capsys):
    from fmq_np.cli import main
    src = _source(tmp_path, "sharded")
    out = str(tmp_path / "q.h5")
    monkeypatch.setattr(qio, "PACK_BYTES", 1)               # every small tensor is done as soon as it is written
    with monkeypatch.context() as m:
        m.setattr(stream._H5Out, "write", _raise_oserror_after(stream._H5Out.write, 4))
        assert main(["quantize", src, "--bits", str(BITS), "--out", out]) == 1
    assert "q.h5.partial: cannot write tensor 'steps' (Input/output error)" in capsys.readouterr().err
    assert main(["quantize", src, "--bits", str(BITS), "--out", out, "--resume"]) == 0
    text = capsys.readouterr().out
    assert "4 resumed from the partial output" in text and f"-> {out} {os.path.getsize(out)} bytes" in text
    ref = fq.quant.quantize_model(fq.io.read_arrays(src), bits=BITS)
    got = fq.io.load(out)
    _same_model(got, ref)
    assert got.meta == dict(ref.meta, source=os.path.basename(src))


def _raise_oserror_after(real, k):
    calls = []

    def write(*args):
        if len(calls) == k:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        calls.append(1)
        return real(*args)
    return write
