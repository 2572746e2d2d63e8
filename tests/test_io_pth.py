"""PyTorch zip checkpoints read without torch (fmq_np.io.torch_pth): real torch.save files (committed fixtures made
by tests/fixtures/make_pth_torch.py), files written by our torch-layout generator (tests/fixtures/make_pth.py, checked
byte for byte against torch), views and strides against a plain-index reference, hostile pickles, and a seeded fuzz
of mutated files that may only load or raise FormatError, each load under a time budget."""
import collections
import io
import os
import pickle
import shutil
import signal
import struct
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fmq_np as fq
from fmq_np.errors import FormatError, InputError

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
sys.path.insert(0, FIX)
import make_pth as mp  # noqa: E402


def fixture(name):
    return os.path.join(FIX, name)


def npz(name, part=None):
    with np.load(fixture(name)) as z:
        d = {k: z[k] for k in z.files}
    if part is None:
        return d
    return {k[len(part) + 1:]: v for k, v in d.items() if k.startswith(part + "/")}


def assert_same(got, expected):
    assert list(got) == list(expected)
    for k, e in expected.items():
        assert got[k].dtype == e.dtype and got[k].shape == e.shape, k
        np.testing.assert_array_equal(got[k], e, err_msg=k)
        assert got[k].flags.c_contiguous and got[k].flags.writeable, k


def write(tmp_path, obj, name="ckpt.pth", **kwargs):
    path = tmp_path / name
    mp.write_pth(str(path), obj, **kwargs)
    return path


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def load_within(path, seconds=30.0, **kwargs):
    """read_arrays under a wall-clock budget (SIGALRM): a hang fails the test instead of stalling it."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fq.io.read_arrays(path, **kwargs)
    except _Timeout:
        pytest.fail(f"read_arrays({path}) ran past {seconds} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------ real torch files
def test_torch_state_dict_every_dtype_view_and_stride():
    got = fq.io.read_arrays(fixture("torch_state_dict.pth"))
    assert_same(got, npz("torch_state_dict.npz"))
    assert got["bf16"].dtype == np.float32 and got["u16"].dtype == np.uint16 and got["bool"].dtype == np.bool_
    assert got["transposed"].shape == (5, 3) and got["shared.view"].shape == (2, 3)
    np.testing.assert_array_equal(got["shared.view"].ravel(), got["shared.base"][5:11])
    np.testing.assert_array_equal(got["shared.step"], got["shared.base"][1::4])


def test_torch_flow_matching_checkpoint_nested_key_and_ema():
    path = fixture("torch_flow_matching.pth")
    everything = fq.io.read_arrays(path)
    assert_same(everything, npz("torch_flow_matching.npz", "all"))       # args (Namespace), epoch: dropped
    assert any(k.startswith("optimizer.state.") for k in everything)
    model = fq.io.read_arrays(path, key="model")
    assert_same(model, npz("torch_flow_matching.npz", "model"))
    ema = fq.io.ema_to_names(model)
    assert_same(ema, npz("torch_flow_matching.npz", "ema"))
    names = list(npz("torch_flow_matching.npz", "ema"))
    assert_same(fq.io.ema_to_names(everything, names=names), ema)          # the whole file: prefix "model."
    live = {k[len("model."):]: v for k, v in model.items() if k.startswith("model.")}
    assert any(not np.array_equal(live[n], ema[n]) for n in names)        # EMA weights are not the live ones


def test_torch_full_module_and_legacy_files_get_a_hint():
    with pytest.raises(FormatError, match=r"torch\.nn\.Module.*state_dict\(\)"):
        fq.io.read_arrays(fixture("torch_full_module.pth"))
    with pytest.raises(FormatError, match=r"legacy.*_use_new_zipfile_serialization=True"):
        fq.io.read_arrays(fixture("torch_legacy.pth"))


def _torch_state_dict_in_make_pth_terms():
    """torch_state_dict.pth's object (see make_pth_torch.state_dict_fixture) rebuilt from its npz values."""
    e = npz("torch_state_dict.npz")
    sd = collections.OrderedDict()
    for k in ("f32", "f64", "f16"):
        sd[k] = mp.tensor(e[k])
    sd["bf16"] = mp.tensor(e["bf16"], "bfloat16")
    for k in ("i64", "i32", "i16", "i8", "u8", "u16", "bool"):
        sd[k] = mp.tensor(e[k])
    sd["param"] = mp.tensor(e["param"], parameter=True)
    sd["param"].requires_grad = True
    base = mp.Storage(e["shared.base"], "float32")
    sd["shared.base"] = mp.Tensor(base, 0, (20,), (1,))
    sd["shared.view"] = mp.Tensor(base, 5, (2, 3), (3, 1))
    sd["shared.step"] = mp.Tensor(base, 1, (5,), (4,))
    sd["transposed"] = mp.Tensor(mp.Storage(e["transposed"].T, "float32"), 0, (5, 3), (1, 5))
    sd["scalar"] = mp.tensor(e["scalar"])
    sd["empty"] = mp.tensor(e["empty"])
    sd._metadata = collections.OrderedDict()            # state dict of a plain OrderedDict: no module metadata
    return sd


def test_make_pth_matches_torch_byte_for_byte():
    """The generator writes what torch.save writes, so the generated fixtures and fuzz inputs are realistic."""
    ref = open(fixture("torch_state_dict.pth"), "rb").read()
    sid = zipfile.ZipFile(io.BytesIO(ref)).read("torch_state_dict/.data/serialization_id").decode()
    sd = _torch_state_dict_in_make_pth_terms()
    del sd._metadata                                    # torch.save of a plain OrderedDict has no _metadata
    assert mp.pth_bytes(sd, stem="torch_state_dict", serialization_id=sid) == ref


# ----------------------------------------------------------------------------------------- generated files
def test_generated_fixtures_are_current_and_read_exactly():
    for name, (obj, _, opts) in mp.generated_fixtures().items():
        assert mp.pth_bytes(obj, stem=name, **opts) == open(fixture(name + ".pth"), "rb").read(), name
    expected = npz("gen_state_dict.npz")
    assert_same(fq.io.read_arrays(fixture("gen_state_dict.pth")), expected)
    assert_same(fq.io.read_arrays(fixture("gen_big_endian.pth")), expected)     # byte-swapped storages
    path = fixture("gen_flow_matching.pth")
    assert_same(fq.io.read_arrays(path), npz("gen_flow_matching.npz", "all"))
    model = fq.io.read_arrays(path, key="model")
    assert_same(model, npz("gen_flow_matching.npz", "model"))
    assert_same(fq.io.ema_to_names(model), npz("gen_flow_matching.npz", "ema"))


def test_big_endian_file_really_is_big_endian():
    z = zipfile.ZipFile(fixture("gen_big_endian.pth"))
    assert z.read("gen_big_endian/byteorder") == b"big"
    little = zipfile.ZipFile(fixture("gen_state_dict.pth"))
    key = "data/0"                                          # layer.weight, float32
    a = np.frombuffer(z.read("gen_big_endian/" + key), ">f4")
    b = np.frombuffer(little.read("gen_state_dict/" + key), "<f4")
    np.testing.assert_array_equal(a, b)
    assert z.read("gen_big_endian/" + key) != little.read("gen_state_dict/" + key)


def test_extensions_and_older_layout(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    for ext in (".pt", ".ckpt", ".bin"):
        path = write(tmp_path, {"w": mp.tensor(w)}, name="m" + ext)
        assert_same(fq.io.read_arrays(path), {"w": w})
    # torch 1.6-1.12 layout: archive/ folder, no byteorder / format_version / serialization_id records
    path = tmp_path / "old.pth"
    path.write_bytes(mp.pth_bytes({"w": mp.tensor(w)}, stem="archive", layout="1.x"))
    assert_same(fq.io.read_arrays(path), {"w": w})
    # a bare tensor
    assert_same(fq.io.read_arrays(write(tmp_path, mp.tensor(w), name="t.pth")), {"tensor": w})


def test_lightning_layout_key_and_dropped_leaves(tmp_path):
    w = np.ones((2, 2), np.float32)
    ckpt = {"epoch": 3, "global_step": 10, "pytorch-lightning_version": "2.1.0",
            "state_dict": collections.OrderedDict([("net.w", mp.tensor(w)), ("net.b", mp.tensor(w[0]))]),
            "hyper_parameters": {"lr": 0.1, "name": "x", "sizes": [1, 2]}, "callbacks": {}}
    path = write(tmp_path, ckpt)
    assert_same(fq.io.read_arrays(path), {"state_dict.net.w": w, "state_dict.net.b": w[0]})
    assert_same(fq.io.read_arrays(path, key="state_dict"), {"net.w": w, "net.b": w[0]})
    with pytest.raises(InputError, match=r"no entry 'model'.*'epoch'.*'state_dict'"):
        fq.io.read_arrays(path, key="model")
    with pytest.raises(InputError, match="not a dict"):
        fq.io.read_arrays(write(tmp_path, [mp.tensor(w)], name="l.pth"), key="model")
    lists = {"a": [mp.tensor(w), (mp.tensor(w[0]), 5)], 7: {"x": mp.tensor(w[1])}}
    assert_same(fq.io.read_arrays(write(tmp_path, lists, name="n.pth")), {"a.0": w, "a.1.0": w[0], "7.x": w[1]})
    assert_same(fq.io.read_arrays(tmp_path / "n.pth", key="a.1"), {"0": w[0]})


def test_dict_and_list_subclasses_and_tensor_subclasses_keep_their_tensors(tmp_path):
    w = np.arange(4, dtype=np.float32)
    ckpt = {"state_dict": {"w": mp.tensor(w)},
            "hyper_parameters": _Global("lightning.fabric.utilities.data", "AttributeDict", (),
                                        dict_items={"lr": 0.1, "net": "unet"}),
            "buffers": _Global("collections", "defaultdict", (mp.Global("builtins", "list"),),
                               dict_items={"ema": mp.tensor(w + 1)}),
            "history": _Global("mylib", "TensorList", (), items=[mp.tensor(w + 2), 3]),
            "sub": _Global("torch._tensor", "_rebuild_from_type_v2",
                           (mp.REBUILD_V2, mp.Global("mylib", "MyTensor"),
                            (mp.Storage(w + 3, "float32"), 0, (4,), (1,), False, collections.OrderedDict()), {})),
            "path": _Global("pathlib", "PosixPath", ("a", "b")),
            "np_scalar": _Global("numpy.core.multiarray", "scalar", (mp.Global("numpy", "dtype"), b"\x00" * 8))}
    got = fq.io.read_arrays(write(tmp_path, ckpt))
    assert_same(got, {"state_dict.w": w, "buffers.ema": w + 1, "history.0": w + 2, "sub": w + 3})


def test_duplicate_flattened_name_is_refused(tmp_path):
    w = np.ones(2, np.float32)
    with pytest.raises(FormatError, match=r"'a\.b' appears twice"):
        fq.io.read_arrays(write(tmp_path, {"a.b": mp.tensor(w), "a": {"b": mp.tensor(w)}}))


# ------------------------------------------------------------------------------- views: plain-index reference
DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool", "uint16",
          "uint32", "uint64"]


def _reference_view(values, offset, size, stride):
    """out[i0, i1, ...] = values[offset + sum(i_k * stride_k)], by explicit index arithmetic."""
    idx = np.full(size, offset, dtype=np.int64)
    for axis, (d, s) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[axis] = d
        idx = idx + (np.arange(d) * s).reshape(shape)
    return values[idx] if idx.size else np.zeros(size, values.dtype)


@st.composite
def views(draw):
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3))
    size = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    stride = tuple(draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim)))
    offset = draw(st.integers(0, 5))
    span = offset + sum((d - 1) * s for d, s in zip(size, stride)) + 1 if all(size) else offset + 1
    numel = span + draw(st.integers(0, 3))
    itemsize = {"float64": 8, "int64": 8, "uint64": 8, "float32": 4, "int32": 4, "uint32": 4}.get(dtype, 2)
    itemsize = 1 if dtype in ("int8", "uint8", "bool") else itemsize
    raw = draw(st.binary(min_size=numel * itemsize, max_size=numel * itemsize))
    return dtype, raw, offset, size, stride, draw(st.sampled_from(["little", "big"]))


def _values(dtype, raw, byteorder):
    """The stored elements as the reader must give them (independent of the reader's code)."""
    end = "<" if byteorder == "little" else ">"
    if dtype == "bfloat16":
        return (np.frombuffer(raw, end + "u2").astype(np.uint32) << 16).view(np.float32)
    if dtype == "bool":
        return np.frombuffer(raw, np.uint8) != 0
    return np.frombuffer(raw, np.dtype(mp._NP[dtype]).newbyteorder(end)).astype(mp._NP[dtype].lstrip("<"))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(views())
def test_any_view_of_any_dtype_matches_index_reference(tmp_path, case):
    dtype, raw, offset, size, stride, byteorder = case
    little = _values(dtype, raw, "little") if byteorder == "little" else None
    stored = np.frombuffer(raw, np.uint8)
    if dtype == "bfloat16":
        storage = mp.Storage(np.frombuffer(raw, "<u2"), "bfloat16")
    elif dtype == "bool":
        storage = mp.Storage(stored, "uint8")
        storage.dtype = "bool"                          # raw bytes kept as they are (0..255), torch reads != 0
    else:
        storage = mp.Storage(np.frombuffer(raw, mp._NP[dtype]), dtype)
    path = write(tmp_path, {"t": mp.Tensor(storage, offset, size, stride)}, byteorder=byteorder)
    # the file holds ``raw`` re-encoded in ``byteorder``: its elements are the little-endian reading of raw
    expected_values = little if little is not None else _values(dtype, raw, "little")
    expected = _reference_view(expected_values, offset, size, stride)
    got = fq.io.read_arrays(path)["t"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_view_outside_its_storage_names_the_tensor(tmp_path):
    s = mp.Storage(np.arange(6, dtype=np.float32), "float32")
    for offset, size, stride in [(0, (7,), (1,)), (4, (2, 2), (1, 1)), (0, (2, 3), (3, 2)), (6, (1,), (1,))]:
        path = write(tmp_path, {"enc.w": mp.Tensor(s, offset, size, stride)})
        with pytest.raises(FormatError, match=r"tensor 'enc\.w'.*reach"):
            fq.io.read_arrays(path)
    for offset, size, stride in [(-1, (2,), (1,)), (0, (2,), (-1,)), (0, (-2,), (1,)), (0, (2,), (1, 1))]:
        path = write(tmp_path, {"enc.w": mp.Tensor(s, offset, size, stride)})
        with pytest.raises(FormatError, match=r"tensor 'enc\.w'"):
            fq.io.read_arrays(path)


def test_unsupported_dtype_names_the_tensor(tmp_path):
    s = mp.Storage(np.zeros(4, np.uint8), "uint8")
    t = mp.Tensor(s, 0, (4,), (1,))
    path = tmp_path / "q.pth"
    path.write_bytes(_rezip(mp.pth_bytes({"q": t}), lambda name, data: data.replace(
        b"torch\nByteStorage\n", b"torch\nQInt8Storage\n")))
    with pytest.raises(FormatError, match=r"tensor 'q'.*qint8 is not supported"):
        fq.io.read_arrays(path)
    for rebuilder, kind in [("_rebuild_qtensor", "quantized"), ("_rebuild_sparse_tensor", "sparse")]:
        obj = {"w": mp.tensor(np.ones(2, np.float32)), "odd": _Global("torch._utils", rebuilder, (1, 2))}
        path = write(tmp_path, obj, name="odd.pth")
        with pytest.raises(FormatError, match=rf"tensor 'odd' is a {kind} tensor"):
            fq.io.read_arrays(path)
        assert list(fq.io.read_arrays(path, key="w")) == ["w"]               # selecting around it works


def test_pickle_protocols_3_to_5(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    for protocol in (3, 4, 5):
        obj = collections.OrderedDict([("a.w", mp.tensor(w)), ("a.t", mp.Tensor(mp.Storage(w, "float32"), 0,
                                                                                 (2, 3), (1, 2)))])
        path = write(tmp_path, obj, protocol=protocol)
        assert_same(fq.io.read_arrays(path), {"a.w": w, "a.t": w.T.copy()})


# --------------------------------------------------------------------------------------- hostile pickles
class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Global:
    """Pickles as ``module.name(*args)`` (REDUCE), then BUILD(state), APPENDS(items), SETITEMS(dict_items)."""

    def __init__(self, module, name, args, state=None, items=None, dict_items=None):
        self.g, self.args = mp.Global(module, name), args
        self.rest = (state, None if items is None else iter(items),
                     None if dict_items is None else iter(dict_items.items()))

    def __reduce__(self):
        return (self.g, self.args) + self.rest


def test_os_system_in_reduce_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    w = np.ones(3, np.float32)
    path = write(tmp_path, {"w": mp.tensor(w), "evil": _System(marker)})
    assert b"system" in zipfile.ZipFile(path).read("ckpt/data.pkl")
    with pytest.raises(FormatError, match=r"system.*refusing"):
        fq.io.read_arrays(path)
    assert not marker.exists()
    for module, name in [("subprocess", "Popen"), ("builtins", "eval"), ("builtins", "getattr"),
                         ("__builtin__", "exec"), ("shutil", "rmtree"), ("os.path", "join"), ("importlib",
                                                                                               "import_module")]:
        path = write(tmp_path, {"w": mp.tensor(w), "evil": _Global(module, name, (f"touch {marker}",))})
        with pytest.raises(FormatError, match="refusing"):
            fq.io.read_arrays(path)
        assert not marker.exists()


def test_unknown_globals_are_inert_and_never_imported(tmp_path, monkeypatch):
    """A module that would leave a marker if imported: the reader must not import it, nor call its function."""
    marker = tmp_path / "imported"
    (tmp_path / "fq_trap_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                                f"def boom(*a):\n    open({str(marker)!r} + '.called', 'w')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    w = np.arange(3, dtype=np.float32)
    obj = {"w": mp.tensor(w), "trap": _Global("fq_trap_module", "boom", (1, 2)),
           "args": _Global("argparse", "Namespace", ()), "cls": mp.Global("fq_trap_module", "boom")}
    got = fq.io.read_arrays(write(tmp_path, obj))
    assert_same(got, {"w": w})
    assert not marker.exists() and not (tmp_path / "imported.called").exists()
    assert "fq_trap_module" not in sys.modules


def test_hand_built_opcodes_never_escape(tmp_path):
    """Opcode-level tricks: INST / OBJ / NEWOBJ on placeholders, BUILD on stand-ins, memo bombs, odd ids."""
    def file_with(pkl):
        path = tmp_path / "h.pth"
        path.write_bytes(mp.pth_bytes({}, stem="h", pickle_data=pkl))
        return path

    P = b"\x80\x02"
    cases = {
        "inst": b"(S'x'\nifq_trap_module\nboom\n.",                          # INST: placeholder instance
        "newobj": P + b"cfq_trap_module\nThing\n)\x81}b.",                   # NEWOBJ + BUILD on a placeholder
        "memo_bomb": P + b"}r\xff\xff\xff\xff.",                             # LONG_BINPUT 2^32-1: dict memo
        "build_on_rebuilder": P + b"ctorch._utils\n_rebuild_tensor_v2\n}b.",  # BUILD on our stand-in
        "pid_not_tuple": P + b"X\x01\x00\x00\x00xQ.",                        # persistent id that is a str
        "pid_other_kind": P + b"(X\x06\x00\x00\x00moduleK\x00K\x00K\x00K\x00tQ.",
        "unknown_storage": P + b"(X\x07\x00\x00\x00storagecnope\nX\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.",
        "missing_record": P + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x009X\x03\x00"
                              b"\x00\x00cpuK\x01tQ.",
        "truncated": P + b"}q\x00(X\x01\x00\x00\x00a",
        "unhashable": P + b"}(]]u.",                                        # a list as dict key
        "proto5": b"\x80\x05\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.",
    }
    outcomes = {}
    for name, pkl in cases.items():
        try:
            outcomes[name] = load_within(file_with(pkl))
        except FormatError:
            outcomes[name] = FormatError
    assert outcomes["memo_bomb"] == {} and outcomes["proto5"] == {}
    for name in ("build_on_rebuilder", "pid_not_tuple", "pid_other_kind", "unknown_storage", "missing_record",
                 "truncated", "unhashable", "inst", "newobj"):
        assert outcomes[name] is FormatError, name          # inst/newobj: a placeholder is not a state dict
    assert "fq_trap_module" not in sys.modules


def test_container_bombs_are_bounded(tmp_path):
    t = mp.tensor(np.ones(2, np.float32))
    node = [t]
    for _ in range(60):                                     # 2^60 paths through 60 shared lists
        node = [node, node]
    with pytest.raises(FormatError, match="repeat too often|add up"):
        load_within(write(tmp_path, {"x": node}))
    cyc = [t]
    cyc.append(cyc)                                         # a cycle: walked once
    assert list(load_within(write(tmp_path, {"c": cyc}, name="c.pth"))) == ["c.0"]
    deep = t
    for _ in range(300):
        deep = [deep]
    with pytest.raises(FormatError, match="nesting deeper"):
        load_within(write(tmp_path, deep, name="d.pth"))
    views = {f"v{i}": mp.Tensor(t.storage, 0, (1 << 20,), (0,)) for i in range(40)}   # 40 x 4 MiB from 8 bytes
    with pytest.raises(FormatError, match="add up"):
        load_within(write(tmp_path, views, name="v.pth"))


def test_storage_sizes_checked_before_allocation(tmp_path):
    raw = mp.pth_bytes({"w": mp.tensor(np.ones(4, np.float32))}, stem="s")
    # numel in the pickle says 2^40 elements: refused from the zip member's size, nothing allocated
    pkl = zipfile.ZipFile(io.BytesIO(raw)).read("s/data.pkl")
    big = pkl.replace(b"cpuq\x06K\x04t", b"cpuq\x06\x8a\x06\x00\x00\x00\x00\x00\x01t")
    assert big != pkl
    path = tmp_path / "s.pth"
    path.write_bytes(_rezip(raw, lambda n, d: big if n.endswith("data.pkl") else d))
    with pytest.raises(FormatError, match=r"storage '0' declares \d+ x 4 bytes but its record holds 16"):
        fq.io.read_arrays(path)
    # a record shorter than the storage
    path.write_bytes(_rezip(raw, lambda n, d: d[:8] if n.endswith("data/0") else d))
    with pytest.raises(FormatError, match="declares 4 x 4 bytes but its record holds 8"):
        fq.io.read_arrays(path)


def test_deflate_bomb_is_refused(tmp_path):
    raw = mp.pth_bytes({"w": mp.tensor(np.zeros(1 << 18, np.float32))}, stem="b")
    src = zipfile.ZipFile(io.BytesIO(raw))
    path = tmp_path / "b.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n in src.namelist():
            z.writestr(n, src.read(n))
    with pytest.raises(FormatError, match="zip bomb"):
        fq.io.read_arrays(path)


# -------------------------------------------------------------------------------------- wrong kinds of file
def test_wrong_kinds_of_file(tmp_path):
    cases = {"legacy.pth": mp.legacy_bytes() + b"\x00" * 64, "plain.pth": pickle.dumps({"a": 1}, protocol=2),
             "empty.pth": b"", "text.pt": b"hello world", "tar.pth": b"\x00" * 257 + b"ustar" + b"\x00" * 300}
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    with pytest.raises(FormatError, match=r"legacy \(pre-1\.6.*_use_new_zipfile_serialization=True"):
        fq.io.read_arrays(tmp_path / "legacy.pth")
    with pytest.raises(FormatError, match="plain pickle"):
        fq.io.read_arrays(tmp_path / "plain.pth")
    with pytest.raises(FormatError, match="tar-format"):
        fq.io.read_arrays(tmp_path / "tar.pth")
    for name in ("empty.pth", "text.pt"):
        with pytest.raises(FormatError, match="not a torch zip checkpoint"):
            fq.io.read_arrays(tmp_path / name)
    with pytest.raises(FormatError, match="no such file"):
        fq.io.read_arrays(tmp_path / "missing.pth")
    np.savez(tmp_path / "a.npz", w=np.ones(2))
    shutil.copy(tmp_path / "a.npz", tmp_path / "a.pth")
    with pytest.raises(FormatError, match="npz"):
        fq.io.read_arrays(tmp_path / "a.pth")
    ts = tmp_path / "ts.pt"
    ts.write_bytes(mp.zip_bytes([("ts/data.pkl", pickle.dumps({}, protocol=2)), ("ts/constants.pkl", b""),
                                 ("ts/code/__torch__.py", b"")]))
    with pytest.raises(FormatError, match="TorchScript"):
        fq.io.read_arrays(ts)
    bad_order = tmp_path / "bo.pth"
    bad_order.write_bytes(_rezip(mp.pth_bytes({}, stem="bo"), lambda n, d: b"middle" if n.endswith("byteorder")
                                 else d))
    with pytest.raises(FormatError, match="byteorder"):
        fq.io.read_arrays(bad_order)


def test_full_module_generated(tmp_path):
    class Linear:                                        # pickled like torch.nn.Linear: NEWOBJ + BUILD(__dict__)
        pass
    Linear.__module__, Linear.__qualname__ = "mymodels.unet", "UNetModel"
    sys.modules.setdefault("mymodels", type(sys)("mymodels"))
    sys.modules["mymodels.unet"] = mod = type(sys)("mymodels.unet")
    mod.UNetModel = Linear
    m = Linear()
    m.__dict__.update({"training": True, "_parameters": {"w": mp.tensor(np.ones(2, np.float32))}, "_modules": {}})
    with pytest.raises(FormatError, match=r"torch\.nn\.Module \(mymodels\.unet\.UNetModel\).*state_dict\(\)"):
        fq.io.read_arrays(write(tmp_path, m))
    with pytest.raises(FormatError, match=r"torch\.nn\.Module"):
        fq.io.read_arrays(write(tmp_path, {"model": m, "epoch": 1}, name="nested.pth"))
    with pytest.raises(FormatError, match=r"torch\.nn\.Module"):
        fq.io.read_arrays(tmp_path / "nested.pth", key="model")


# ------------------------------------------------------------------------------------------------- EMA names
def test_ema_to_names_checks_counts_shapes_and_indices():
    a, b = np.zeros((2, 3), np.float32), np.ones(4, np.float32)
    arrays = {"num_updates": np.array(1), "model.x.w": a, "model.x.b": b, "shadow_params.0": a + 1,
              "shadow_params.1": b + 1}
    got = fq.io.ema_to_names(arrays)
    assert list(got) == ["x.w", "x.b"] and np.array_equal(got["x.w"], a + 1) and np.array_equal(got["x.b"], b + 1)
    assert list(fq.io.ema_to_names(arrays, names=["p", "q"])) == ["p", "q"]
    with pytest.raises(InputError, match="2 shadow params but the 3 names given"):
        fq.io.ema_to_names(arrays, names=["p", "q", "r"])
    with pytest.raises(InputError, match=r"shadow_params\.0 has shape \(2, 3\) but parameter 'x\.b'"):
        fq.io.ema_to_names(arrays, names={"x.b": b, "x.w": a})
    with pytest.raises(InputError, match=r"shadow_params\.1 is missing"):
        fq.io.ema_to_names({"shadow_params.0": a, "shadow_params.2": b}, names=["p", "q"])
    with pytest.raises(InputError, match="no 'shadow_params"):
        fq.io.ema_to_names({"model.w": a})
    with pytest.raises(InputError, match="several prefixes"):
        fq.io.ema_to_names({"a.shadow_params.0": a, "b.shadow_params.0": a})


# ---------------------------------------------------------------------------------------------- fuzzing
def _rezip(raw, edit):
    """Rebuild a torch-layout zip with ``edit(name, data)`` applied to each member (CRCs recomputed)."""
    z = zipfile.ZipFile(io.BytesIO(raw))
    return mp.zip_bytes([(n, edit(n, z.read(n))) for n in z.namelist()])


def _mutate(raw, rng):
    raw = bytearray(raw)
    kind = rng.integers(4)
    if kind == 0:                                           # truncate
        return bytes(raw[:rng.integers(len(raw))])
    if kind == 1:                                           # bit flips
        for _ in range(rng.integers(1, 4)):
            raw[rng.integers(len(raw))] ^= 1 << int(rng.integers(8))
    elif kind == 2:                                         # a zeroed block
        at, n = rng.integers(len(raw)), rng.integers(1, 64)
        raw[at:at + n] = bytes(len(raw[at:at + n]))
    else:                                                   # random overwrite
        at, n = rng.integers(len(raw)), rng.integers(1, 16)
        raw[at:at + n] = rng.integers(0, 256, len(raw[at:at + n]), dtype=np.uint8).tobytes()
    return bytes(raw)


def _check_loads_or_format_error(path):
    try:
        out = load_within(path)
    except FormatError as exc:
        assert "\n" not in str(exc)
        return "error"
    assert isinstance(out, dict) and all(isinstance(v, np.ndarray) for v in out.values())
    return "loaded"


def test_fuzz_mutated_files_only_load_or_raise_format_error(tmp_path):
    """File-level mutations (mostly caught by the zip structure and CRCs) and member-level mutations of data.pkl
    and the storages re-zipped with valid CRCs (so the unpickler and the view checks see them)."""
    rng = np.random.default_rng(20240611)
    sources = [open(fixture(n), "rb").read() for n in ("torch_state_dict.pth", "torch_flow_matching.pth",
                                                       "gen_state_dict.pth")]
    path = tmp_path / "m.pth"
    seen = collections.Counter()
    for i in range(300):
        raw = sources[i % len(sources)]
        if i % 3 == 0:
            mutated = _mutate(raw, rng)
        else:
            target = "data.pkl" if i % 3 == 1 else "/data/"
            mutated = _rezip(raw, lambda n, d: _mutate(d, rng) if (target in n and d) else d)
        path.write_bytes(mutated)
        seen[_check_loads_or_format_error(path)] += 1
    assert seen["error"] > 60 and seen["loaded"] > 10              # both outcomes exercised


# ----------------------------------------------------------------------------------- safetensors / key=
def _st_file(path, header_text, data):
    raw = header_text.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_safetensors_duplicate_key_is_refused(tmp_path):
    entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    one = _st_file(tmp_path / "one.safetensors", '{"w":' + entry + '}', b"\x00" * 4)
    assert list(fq.io.read_arrays(one)) == ["w"]
    dup = _st_file(tmp_path / "dup.safetensors", '{"w":' + entry + ',"w":' + entry + '}', b"\x00" * 4)
    with pytest.raises(FormatError, match="'w' twice"):
        fq.io.read_arrays(dup)
    inner = _st_file(tmp_path / "inner.safetensors",
                     '{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', b"\x00" * 4)
    with pytest.raises(FormatError, match="'dtype' twice"):
        fq.io.read_arrays(inner)


def test_key_on_other_formats_picks_a_prefix(tmp_path):
    arrays = {"model.a": np.ones(2, np.float32), "model.b.c": np.zeros(3, np.float32), "opt.m": np.ones(1)}
    fq.io.write_safetensors(tmp_path / "m.safetensors", arrays)
    np.savez(tmp_path / "m.npz", **arrays)
    for name in ("m.safetensors", "m.npz"):
        assert_same(fq.io.read_arrays(tmp_path / name, key="model"), {"a": arrays["model.a"],
                                                                      "b.c": arrays["model.b.c"]})
        with pytest.raises(InputError, match="no arrays under 'nope'"):
            fq.io.read_arrays(tmp_path / name, key="nope")
