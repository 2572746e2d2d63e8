"""Fuzz: mutated files (bytes flipped, truncated, zeroed 512-byte blocks, random 8-byte overwrites, attributes
removed or changed) either load with the right content or raise FormatError — never another exception, never a
crash, never a hang (the mutation runs load each file in a worker process with a time budget: tests/fuzzing.py)."""
import json
import os
import struct

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fuzzing
import fmq_np as fq
from fmq_np.errors import FormatError
from fmq_np.io._h5 import check_global_heaps, open_h5
from fmq_np.io.importers import read_arrays, write_safetensors
import fmq_np.io.quantized as qio
from fmq_np.io.quantized import load_quantized, save_quantized
from fmq_np.quant import QuantizedTensor, quantize_model

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    qm = quantize_model(fuzzing.sample_arrays(), bits=3, method="ot")
    qm.tensors["u"] = quantize_model({"u": fuzzing.sample_arrays()["a.weight"]}, bits=2, method="uniform").tensors["u"]
    save_quantized(d / "q.h5", qm)                          # every tensor small: one pack
    with pytest.MonkeyPatch.context() as m:
        m.setattr(qio, "SMALL_BYTES", 0)
        save_quantized(d / "q_own.h5", qm)                  # every tensor an HDF5 object of its own
    write_safetensors(d / "m.safetensors", fuzzing.sample_arrays())
    np.savez_compressed(d / "m.npz", **fuzzing.sample_arrays())
    return d, qm


def _flip(raw, flips):
    raw = bytearray(raw)
    for pos, bit in flips:
        raw[pos % len(raw)] ^= 1 << bit
    return bytes(raw)


flips = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 7)), min_size=1, max_size=3)


def _same_model(a, b):
    da, db = a.dequantize(), b.dequantize()
    return (list(da) == list(db) and a.meta == b.meta
            and all(da[k].dtype == db[k].dtype and da[k].tobytes() == db[k].tobytes() for k in da))


def _consistent(qm):
    """A loaded model is well-formed: every tensor dequantizes to its declared shape and dtype."""
    for name, w in qm.dequantize().items():
        t = qm.tensors[name]
        if isinstance(t, QuantizedTensor):
            assert w.shape == t.shape and w.dtype == t.dtype and np.isfinite(w).all()
            assert int(t.codes.max()) < 2 ** t.bits and (np.diff(t.codebook, axis=1) >= 0).all()


# ------------------------------------------------------------------------------------------- quantized HDF5
@FUZZ
@given(flips, st.sampled_from(["q.h5", "q_own.h5"]))
def test_quantized_h5_flipped_bytes(files, tmp_path, flips, layout):
    d, qm = files
    (tmp_path / "x.h5").write_bytes(_flip((d / layout).read_bytes(), flips))
    try:
        back = load_quantized(tmp_path / "x.h5")
    except FormatError:
        return
    assert _same_model(qm, back)


@FUZZ
@given(st.floats(0, 1, exclude_max=True))
def test_quantized_h5_truncated(files, tmp_path, frac):
    d, qm = files
    raw = (d / "q.h5").read_bytes()
    (tmp_path / "x.h5").write_bytes(raw[:int(frac * len(raw))])
    with pytest.raises(FormatError):
        load_quantized(tmp_path / "x.h5")


def _attribute_sites(path):
    sites = []
    with h5py.File(path) as f:
        sites += [("/", k) for k in f.attrs]
        f.visititems(lambda name, obj: sites.extend((name, k) for k in obj.attrs))
    return sorted(sites)


replacement = st.one_of(
    st.integers(-(1 << 40), 1 << 40), st.floats(allow_nan=True), st.text(max_size=20).map(lambda s: s.encode()),
    st.sampled_from([b"[]", b"[3]", b"[6, 10]", b"[60]", b"[1, 60]", b"{}", b"null", b"float64", b"float16",
                     b"int8", b"table", b"affine", b"tensor", b"group", b"array", b"quantized", b"fmq_np.quantized"]),
    st.lists(st.integers(-5, 5), max_size=3).map(lambda v: np.array(v, np.int64)))


@FUZZ
@given(st.data())
def test_quantized_h5_attributes_removed_or_changed(files, tmp_path, data):
    d, qm = files
    sites = _attribute_sites(d / "q_own.h5")
    obj, key = data.draw(st.sampled_from(sites))
    value = data.draw(st.none() | replacement)
    (tmp_path / "x.h5").write_bytes((d / "q_own.h5").read_bytes())
    with h5py.File(tmp_path / "x.h5", "r+") as f:
        if value is None:
            del f[obj].attrs[key]
        else:
            f[obj].attrs[key] = np.bytes_(value) if isinstance(value, bytes) else value
    try:
        back = load_quantized(tmp_path / "x.h5")
    except FormatError:
        return
    _consistent(back)


json_value = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() |
                          st.text(max_size=5), lambda c: st.lists(c, max_size=3) | st.dictionaries(
                              st.text(max_size=5), c, max_size=3), max_leaves=6)


@FUZZ
@given(st.data())
def test_quantized_h5_pack_index_fields_changed(files, tmp_path, data):
    """A record's position, attributes or part spans replaced by any JSON value (or removed): FormatError naming the
    file, or a well-formed model."""
    d, qm = files
    (tmp_path / "x.h5").write_bytes((d / "q.h5").read_bytes())
    with h5py.File(tmp_path / "x.h5", "r+") as f:
        records = json.loads(f["packed/000000/index"][()].tobytes())
        rec = records[data.draw(st.integers(0, len(records) - 1))]
        where = data.draw(st.sampled_from(["position", "attrs", "parts"]))
        new = data.draw(json_value | st.sampled_from([0, 1, 5, 99, [0, 8], [8, 0], "[6, 10]", "<f8", "float64"]))
        if where == "position":
            rec["position"] = new
        else:
            key = data.draw(st.sampled_from(sorted(rec[where])))
            if data.draw(st.booleans()):
                del rec[where][key]
            else:
                rec[where][key] = new
        del f["packed/000000/index"]
        f["packed/000000"].create_dataset("index", data=np.frombuffer(json.dumps(records).encode(), np.uint8))
    try:
        back = load_quantized(tmp_path / "x.h5")
    except FormatError as exc:
        assert str(tmp_path / "x.h5") in str(exc) and "\n" not in str(exc)
        return
    _consistent(back)


# ---------------------------------------------------------------------------------------------- safetensors
def _reference_parse(raw):
    """Independent plain reading of a safetensors byte string that fmq_np accepted: {name: (dtype, shape, bytes)}."""
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (e["dtype"], tuple(e["shape"]), raw[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]])
            for k, e in header.items()}


_ST = {"F32": "<f4", "F64": "<f8", "I32": "<i4"}


@FUZZ
@given(flips)
def test_safetensors_flipped_bytes(files, tmp_path, flips):
    d, _ = files
    original = (d / "m.safetensors").read_bytes()
    raw = _flip(original, flips)
    (tmp_path / "x.safetensors").write_bytes(raw)
    n = struct.unpack("<Q", original[:8])[0]
    try:
        out = read_arrays(tmp_path / "x.safetensors")
    except FormatError:
        assert any(pos % len(raw) < 8 + n for pos, _ in flips), "a flip in the data region must still load"
        return
    ref = _reference_parse(raw)
    assert list(out) == list(ref)
    for k, (dtype, shape, blob) in ref.items():
        assert out[k].shape == shape and out[k].dtype == np.dtype(_ST[dtype])
        assert out[k].astype(_ST[dtype]).tobytes() == blob


@FUZZ
@given(st.floats(0, 1, exclude_max=True))
def test_safetensors_truncated(files, tmp_path, frac):
    d, _ = files
    raw = (d / "m.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(raw[:int(frac * len(raw))])
    with pytest.raises(FormatError):
        read_arrays(tmp_path / "x.safetensors")


@FUZZ
@given(st.data())
def test_safetensors_header_fields_changed(files, tmp_path, data):
    d, _ = files
    raw = (d / "m.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    name = data.draw(st.sampled_from(sorted(header)))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
    new = data.draw(json_value | st.sampled_from(["F32", "F64", "F16", "BF16", "I8", [60], [6, 10], [0, 240]]))
    if field is None:
        header[name] = new
    else:
        header[name][field] = new
    text = json.dumps(header).encode()
    mutated = struct.pack("<Q", len(text)) + text + raw[8 + n:]
    (tmp_path / "x.safetensors").write_bytes(mutated)
    try:
        out = read_arrays(tmp_path / "x.safetensors")
    except FormatError:
        return
    assert list(out) == list(_reference_parse(mutated))


# ------------------------------------------------------------------------------------------------------- npz
@FUZZ
@given(flips)
def test_npz_flipped_bytes(files, tmp_path, flips):
    d, _ = files
    (tmp_path / "x.npz").write_bytes(_flip((d / "m.npz").read_bytes(), flips))
    try:
        out = read_arrays(tmp_path / "x.npz")
    except FormatError:
        return
    ref = fuzzing.sample_arrays()
    assert list(out) == list(ref)
    for k in ref:
        assert out[k].dtype == ref[k].dtype and out[k].tobytes() == ref[k].tobytes()


@FUZZ
@given(st.floats(0, 1, exclude_max=True))
def test_npz_truncated(files, tmp_path, frac):
    d, _ = files
    raw = (d / "m.npz").read_bytes()
    (tmp_path / "x.npz").write_bytes(raw[:int(frac * len(raw))])
    with pytest.raises(FormatError):
        read_arrays(tmp_path / "x.npz")


# ------------------------------------------------- all mutation kinds, every format, a time budget per load
#: mutations per format in the default run (the four kinds in turn); benchmarks/fuzz_files.py runs 1,000
MUTATIONS = 100
#: a load still running after this many seconds counts as a hang (it detects hangs; it measures no speed)
BUDGET_S = 30.0


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return fuzzing.make_files(tmp_path_factory.mktemp("pristine"))


def _report(bad):
    return "; ".join(f"{what} -> {outcome} {detail}" for _, what, outcome, detail in bad[:5])


@pytest.mark.parametrize("fmt", ["float_h5", "quantized_h5", "quantized_v1_h5", "npz"])
def test_mutated_checksummed_files_load_identically_or_raise_format_error(pristine, tmp_path, fmt):
    """Checksummed formats (HDF5 1.10 metadata + fletcher32 data; zip CRC-32): a mutation is caught or harmless."""
    results = fuzzing.run_mutations(fmt, pristine[fmt], range(MUTATIONS), tmp_path, BUDGET_S)
    bad = [r for r in results if r[2] not in ("identical", "format_error")]
    assert not bad, f"{len(bad)} of {len(results)} mutated {fmt} files: {_report(bad)}"
    truncated = [r for r in results if " truncate:" in r[1]]
    assert len(truncated) == MUTATIONS // 4 and all(r[2] == "format_error" for r in truncated)


def test_mutated_safetensors_load_faithfully_or_raise_format_error(pristine, tmp_path):
    """safetensors has no checksum: a loaded file must equal a plain parse of its mutated bytes, and a same-length
    mutation confined to the data region must load."""
    raw = open(pristine["safetensors"], "rb").read()
    data_start = 8 + struct.unpack("<Q", raw[:8])[0]
    results = fuzzing.run_mutations("safetensors", pristine["safetensors"], range(MUTATIONS), tmp_path, BUDGET_S)
    bad = [r for r in results if r[2] not in ("identical", "faithful", "format_error")]
    assert not bad, f"{len(bad)} of {len(results)} mutated safetensors files: {_report(bad)}"
    in_data = [r for r in results if (fuzzing.touched_range(raw, r[0]) or (0, 0))[0] >= data_start]
    assert in_data and all(r[2] in ("identical", "faithful") for r in in_data), _report(in_data)
    assert all(r[2] == "format_error" for r in results if " truncate:" in r[1])


# ---------------------------------------------------------------- float checkpoints: format, old files, errors
def test_float_checkpoints_use_the_checksummed_object_format(tmp_path, tiny_mlp_factory):
    """Superblock version >= 2 (checksummed; the 'earliest' format writes 0) and no variable-length string
    attribute (those live in the unchecksummed global heap)."""
    fq.io.save(tmp_path / "m.h5", tiny_mlp_factory())
    assert (tmp_path / "m.h5").read_bytes()[8] >= 2
    with h5py.File(tmp_path / "m.h5") as f:
        kinds = [(k, f.attrs.get_id(k).dtype) for k in f.attrs]
    assert kinds and all(h5py.check_string_dtype(dt) is None or h5py.check_string_dtype(dt).length is not None
                         for _, dt in kinds), kinds


def test_old_earliest_format_checkpoints_still_load(tmp_path, tiny_mlp_factory):
    model = tiny_mlp_factory(seed=3)
    fuzzing.legacy_float_checkpoint(tmp_path / "old.h5", model, meta={"trained_steps": 7})
    assert (tmp_path / "old.h5").read_bytes()[8] == 0
    back, meta = fq.io.load_model(tmp_path / "old.h5")
    assert meta == {"trained_steps": 7} and back.config() == model.config()
    for k, v in model.parameters().items():
        assert back.parameters()[k].tobytes() == v.tobytes()


def test_old_format_damage_that_hung_or_raised_raw_h5py_errors_is_a_format_error(pristine, tmp_path):
    """Mutations of an 'earliest'-format checkpoint that made h5py raise a raw RuntimeError (seeds 91, 166, 199:
    symbol table / link iteration failures) or made libhdf5 loop forever (seed 42: a zeroed block in the global
    heap that holds the string attributes) before issue 12."""
    results = fuzzing.run_mutations("legacy_float_h5", pristine["legacy_float_h5"], [42, 91, 166, 199], tmp_path,
                                    BUDGET_S)
    bad = [r for r in results if r[2] != "format_error" or os.fspath(tmp_path) not in r[3]]
    assert not bad, _report(bad)


def test_a_damaged_global_heap_is_refused_before_libhdf5_reads_it(tmp_path, tiny_mlp_factory):
    """Every object of every global heap collection must advance the walk and fit in its collection."""
    fuzzing.legacy_float_checkpoint(tmp_path / "old.h5", tiny_mlp_factory())
    raw = bytearray((tmp_path / "old.h5").read_bytes())
    at = raw.find(b"GCOL")
    assert at > 0 and raw.count(b"GCOL") == 1
    first = at + 16                               # header: signature, version, 3 reserved, 8-byte size
    size = int.from_bytes(raw[first + 8:first + 16], "little")
    assert 0 < size < 4096                        # the first string attribute's length: the layout is understood
    check_global_heaps(tmp_path / "old.h5")       # the intact file passes
    for damage in ("zero_free_space", "object_overruns"):
        bad = bytearray(raw)
        if damage == "zero_free_space":           # object 0 (free space) of size 0: libhdf5 never advances
            bad[first:first + 16] = bytes(16)
        else:
            bad[first + 8:first + 16] = (1 << 20).to_bytes(8, "little")
        (tmp_path / "bad.h5").write_bytes(bytes(bad))
        with pytest.raises(FormatError, match="damaged global heap"):   # the guard itself: libhdf5 is not reached
            check_global_heaps(tmp_path / "bad.h5")


def test_h5py_errors_inside_open_h5_become_format_errors_naming_the_file(tmp_path, tiny_mlp_factory):
    path = tmp_path / "m.h5"
    fq.io.save(path, tiny_mlp_factory())
    for bad_read in (lambda f: f["no/such/dataset"], lambda f: f.attrs["missing"],
                     lambda f: f["params"][next(iter(f["params"]))][5:2:0]):
        with pytest.raises(FormatError, match=str(path)):
            with open_h5(path) as f:
                bad_read(f)
    with pytest.raises(FormatError, match="directory"):
        fq.io.load(tmp_path)
