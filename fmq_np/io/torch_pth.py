"""Read PyTorch checkpoints (``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin``) without torch and without running any code
from the file.

**The format** (``torch.save`` since torch 1.6): a zip archive whose members share one top folder ``<name>/``:
``data.pkl`` (the pickled object, protocol 2), ``data/<key>`` (the raw bytes of each storage), ``byteorder``
(``little`` or ``big``; absent means little), ``version`` and a few bookkeeping records. In the pickle a tensor is
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])``
(``_rebuild_tensor_v3`` adds a dtype after the hooks, for uint16/32/64 and newer dtypes), a parameter is
``torch._utils._rebuild_parameter(tensor, requires_grad, backward_hooks)``, and a storage is the persistent id
``("storage", storage_type, key, location, numel)`` with ``storage_type`` a legacy typed class
(``torch.FloatStorage`` ...; ``numel`` in elements) or ``torch.storage.UntypedStorage`` (``numel`` in bytes, the
dtype then comes from ``_rebuild_tensor_v3``). Offsets and strides count elements; views of one storage share it.

**What you get** (:func:`read_pth`): ``dict[str, ndarray]`` of every tensor, in pickle order, named by its path in
the nesting of dicts / lists (``{"model": {"conv.weight": t}}`` → ``"model.conv.weight"``); ``key="model"`` picks
the sub-dict first (a dotted path also works: ``key="state_dict"``, ``key="model.ema"``). Non-tensor leaves (ints,
strings, optimizer hyper-parameters, an ``argparse.Namespace``) are dropped. Every tensor is a fresh C-contiguous
native-order copy: views and non-contiguous strides are resolved (``as_strided`` on the storage after a bounds check,
then copied), big-endian storages are byte-swapped, bfloat16 becomes float32 exactly, bool is kept, float64/32/16
and (u)int8-64 keep their dtype. :func:`ema_to_names` maps flow_matching's EMA layout (``shadow_params.<i>``) back to
parameter names.

**Safety.** The pickle is read by a restricted unpickler (the pure-Python ``pickle._Unpickler``: its memo is a dict,
so a forged memo index cannot make it allocate). ``find_class`` never imports anything. It resolves only:
the tensor / parameter rebuilders and the storage classes and dtypes above (to inert stand-ins defined here that
record their arguments; nothing of torch is ever called), ``collections.OrderedDict``, ``builtins.set`` /
``frozenset`` and ``_codecs.encode`` (how protocol 2 stores ``bytes``). Any other global becomes an inert placeholder
class that records what the pickle gives it and is dropped from the result (a placeholder filled like a dict or a
list, e.g. ``collections.defaultdict``, keeps the tensors among its items); globals that can only mean code
execution (``os.system``, ``subprocess``, ``builtins.eval`` ...) raise FormatError at once. A pickled full
``nn.Module`` (instead of its ``state_dict()``), a TorchScript archive and a legacy (pre-zip) torch file each raise a
one-line FormatError saying how to re-save the checkpoint.

**Bounds.** Every storage is checked against its zip member (``numel × itemsize`` must equal the member's size)
before anything is allocated; storages are read lazily, once, only for the tensors selected; every shape / stride /
offset is checked against its storage (a view reaching outside is a FormatError naming the tensor); the pickle, the
number of visited containers and the total bytes of the tensors produced are capped, so a small corrupt or hostile
file cannot make the reader hang or allocate without bound. Anything malformed raises FormatError naming the file.
"""
import collections
import io
import os
import pickle
import re
import struct
import zipfile
import zlib

import numpy as np

from ..errors import FmqError, FormatError, InputError
from ._h5 import MAX_ELEMENTS

#: file types read_arrays sends here
TORCH_EXTENSIONS = (".pth", ".pt", ".ckpt", ".bin")

# torch dtype name → (NumPy dtype of the stored bytes, little-endian, or None when not supported, itemsize)
_DTYPES = {
    "float64": ("<f8", 8), "float32": ("<f4", 4), "float16": ("<f2", 2), "bfloat16": ("<u2", 2),
    "int64": ("<i8", 8), "int32": ("<i4", 4), "int16": ("<i2", 2), "int8": ("i1", 1), "uint8": ("u1", 1),
    "bool": ("u1", 1), "uint16": ("<u2", 2), "uint32": ("<u4", 4), "uint64": ("<u8", 8),
    # known to torch, not numeric weights fmq_np reads: refused with a message naming the tensor
    "complex32": (None, 4), "complex64": (None, 8), "complex128": (None, 16), "qint8": (None, 1),
    "qint32": (None, 4), "quint8": (None, 1), "quint4x2": (None, 1), "quint2x4": (None, 1),
    "float8_e5m2": (None, 1), "float8_e4m3fn": (None, 1), "float8_e5m2fnuz": (None, 1),
    "float8_e4m3fnuz": (None, 1), "float8_e8m0fnu": (None, 1), "float4_e2m1fn_x2": (None, 1),
    "bits8": (None, 1), "bits16": (None, 2), "bits1x8": (None, 1), "bits2x4": (None, 1), "bits4x2": (None, 1),
    "bcomplex32": (None, 4),
}
# legacy typed storage class → torch dtype name
_STORAGE_CLASSES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
# globals that can only mean "run code": refused outright (safety does not depend on this list: any global not
# allow-listed is an inert placeholder anyway; this only turns an attack into a clear error)
_DANGEROUS_MODULES = {"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "pickle",
                      "_pickle", "marshal", "ctypes", "code", "codeop", "pty", "webbrowser", "pdb", "multiprocessing",
                      "signal", "_thread", "threading", "asyncio", "operator", "_operator", "io", "_io", "commands",
                      "popen2", "_posixsubprocess", "timeit", "cProfile", "profile", "trace"}
_DANGEROUS_BUILTINS = {"eval", "exec", "execfile", "compile", "__import__", "open", "file", "getattr", "setattr",
                       "delattr", "globals", "locals", "vars", "input", "breakpoint", "reload"}
# torch's other tensor rebuilders: such tensors are refused by name (not silently dropped)
_UNSUPPORTED_REBUILDERS = {
    "_rebuild_qtensor": "quantized", "_rebuild_sparse_tensor": "sparse", "_rebuild_sparse_csr_tensor": "sparse CSR",
    "_rebuild_nested_tensor": "nested", "_rebuild_meta_tensor_no_storage": "meta (data-less)",
    "_rebuild_wrapper_subclass": "wrapper subclass", "_rebuild_device_tensor_from_numpy": "device",
    "_rebuild_device_tensor_from_cpu_tensor": "device", "_rebuild_xla_tensor": "XLA", "_rebuild_mps_tensor": "MPS",
    "_rebuild_tensor": "legacy"}
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")

#: the pickle of a state dict is ~100 bytes per tensor; anything above this is refused
MAX_PICKLE_BYTES = 1 << 28
#: the tensors produced may not exceed this multiple of the file's storage bytes (plus MIN_BUDGET): views of one
#: storage are copied, so a hostile pickle could otherwise ask for the same storage a million times
VIEW_BUDGET_FACTOR = 4
MIN_BUDGET = 1 << 26
_MAX_DEPTH = 200
_MAX_NDIM = 64
#: a deflated storage member may not expand more than this (torch stores members uncompressed)
_MAX_DEFLATE_RATIO = 64


def read_pth(path, key=None):
    """``dict[str, ndarray]`` of the tensors in the torch zip checkpoint ``path``; see the module doc.

    ``key``: pick this entry of the top-level dict first (``"model"`` for flow_matching's ``{"model", "optimizer",
    "args", ...}``, ``"state_dict"`` for Lightning); a dotted path descends further. Names are then relative to it.
    Raises FormatError for anything malformed or not a tensor checkpoint, InputError when ``key`` is not there.
    """
    return dict(iter_pth(path, key))


def iter_pth(path, key=None):
    """:func:`read_pth` one tensor at a time: ``(name, array)`` in the same order, each storage read when its first
    tensor is made and released after its last (peak memory: the pickle plus the storages in use, not the file)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    _refuse_non_zip(path)
    try:
        with zipfile.ZipFile(path) as z:
            archive = _Archive(z, path)
            root = archive.unpickle()
            node, name = _select(root, key, path)
            flat = _Flattener(archive, path)
            flat.streaming = True
            yield from flat.iterate(node, name)
    except FmqError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
            NotImplementedError, RuntimeError, struct.error, OverflowError, RecursionError) as exc:
        raise FormatError(f"{path}: not a readable torch zip checkpoint ({_first_line(exc)})") from None


def ema_to_names(arrays, names=None):
    """flow_matching's EMA weights under the model's parameter names.

    flow_matching (``examples/image/models/ema.py``) wraps the model in an ``EMA`` module whose state dict holds
    ``model.<name>`` (the live weights), ``num_updates`` and ``shadow_params.<i>``: the averaged weights as a list in
    the order of ``model.parameters()`` (those with ``requires_grad``). This maps them back.

    ``arrays``: a dict from :func:`read_arrays` holding ``<prefix>shadow_params.<i>`` for i = 0..n-1 (one prefix,
    e.g. ``""`` after ``key="model"``, or ``"model."`` for the whole checkpoint).
    ``names``: the parameter names in torch's ``model.parameters()`` order, as a list of str or a dict name → array
    (e.g. ``fq.nn.ADMUNet(**cfg).parameters()``, whose shapes are then checked too). Default: the names under
    ``<prefix>model.`` in ``arrays``, in file order (the state-dict order, which is the parameter order when the
    model has no buffers, as for the ADM U-Net; pass ``names`` for models with buffers).
    Returns ``dict[name, ndarray]`` in ``names`` order. Raises InputError when the counts or shapes do not match
    (naming the first mismatch) or when there are no shadow params.
    """
    pattern = re.compile(r"^(.*?)shadow_params\.(\d+)$")
    groups = {}
    for k in arrays:
        m = pattern.match(k)
        if m and (m.group(1) == "" or m.group(1).endswith(".")):
            groups.setdefault(m.group(1), {})[int(m.group(2))] = k
    if not groups:
        raise InputError("ema_to_names: no 'shadow_params.<i>' arrays (not a flow_matching EMA state dict?)")
    if len(groups) > 1:
        raise InputError(f"ema_to_names: shadow_params under several prefixes {sorted(groups)}; pick one with "
                         f"read_arrays(..., key=...)")
    (prefix, shadow), = groups.items()
    if sorted(shadow) != list(range(len(shadow))):
        missing = min(set(range(len(shadow))) - set(shadow))
        raise InputError(f"ema_to_names: {prefix}shadow_params.{missing} is missing")
    expected = None
    if names is None:
        names = [k[len(prefix) + 6:] for k in arrays if k.startswith(prefix + "model.")]
        expected = {n: arrays[prefix + "model." + n] for n in names}
        source = f"the {len(names)} arrays under {prefix + 'model.'!r}"
    else:
        if isinstance(names, dict):
            expected = names
        names = list(names)
        if not all(isinstance(n, str) for n in names):
            raise InputError("ema_to_names: names must be str")
        source = f"the {len(names)} names given"
    if len(names) != len(shadow):
        raise InputError(f"ema_to_names: {len(shadow)} shadow params but {source}; pass the model's parameter "
                         f"names (in model.parameters() order) as names=")
    out = {}
    for i, n in enumerate(names):
        a = arrays[shadow[i]]
        if expected is not None and np.shape(expected[n]) != a.shape:
            raise InputError(f"ema_to_names: {prefix}shadow_params.{i} has shape {a.shape} but parameter {n!r} "
                             f"has {np.shape(expected[n])} (names not in model.parameters() order?)")
        out[n] = a
    return out


# ------------------------------------------------------------------------------------------- pickle stand-ins
class _Inert:
    """Objects of the reader's own making may not be rebuilt by a BUILD opcode."""
    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD applied to a tensor, storage or dtype")

    def __reduce__(self):
        raise TypeError("not picklable")


class _Dtype(_Inert):
    """``torch.<name>`` (a dtype global)."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _StorageType(_Inert):
    """``torch.FloatStorage`` & co (``dtype`` set) or ``torch.storage.UntypedStorage`` (dtype None: bytes)."""
    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _Storage(_Inert):
    """One ``data/<key>`` record: ``numel`` elements of torch dtype ``dtype`` (``"uint8"`` for untyped)."""
    __slots__ = ("key", "dtype", "numel", "untyped", "member")

    def __init__(self, key, dtype, numel, untyped, member):
        self.key, self.dtype, self.numel, self.untyped, self.member = key, dtype, numel, untyped, member


class _TensorRef(_Inert):
    """A tensor as the pickle describes it; validated and materialized later, when its name is known.
    ``unsupported``: the name of a torch rebuilder for tensors fmq_np does not read (quantized, sparse, ...)."""
    __slots__ = ("args", "v3", "unsupported")

    def __init__(self, args, v3, unsupported=None):
        self.args, self.v3, self.unsupported = args, v3, unsupported


class _Rebuilder(_Inert):
    """Stand-in for an allow-listed torch function: records its arguments, runs nothing of the file's."""
    __slots__ = ("kind",)

    def __init__(self, kind):
        self.kind = kind

    def __call__(self, *args):
        if self.kind in ("v2", "v3"):
            return _TensorRef(args, self.kind == "v3")
        if self.kind.startswith("_rebuild"):   # a tensor of a kind not read here: refused when selected
            return _TensorRef((), False, unsupported=self.kind)
        if self.kind == "parameter":            # (data, requires_grad, hooks[, state])
            return args[0] if args and isinstance(args[0], _TensorRef) else None
        if self.kind == "from_type":            # a Tensor subclass: (rebuild func, subclass, args, state)
            if len(args) == 4 and isinstance(args[0], _Rebuilder) and args[0].kind in ("v2", "v3") \
                    and isinstance(args[2], tuple):
                return args[0](*args[2])
            return None
        if self.kind == "encode":               # _codecs.encode(str, "latin1"): protocol 2's form of bytes
            if len(args) in (1, 2) and isinstance(args[0], str) and (len(args) == 1 or args[1] in (
                    "latin1", "latin-1", "utf-8", "utf8", "ascii")):
                return args[0].encode(args[1] if len(args) == 2 else "utf-8")
            raise pickle.UnpicklingError("_codecs.encode with unexpected arguments")
        raise pickle.UnpicklingError(f"unknown rebuilder {self.kind}")


class _Opaque:
    """Base of the inert placeholders for globals the reader does not resolve: each instance records the arguments,
    state, items and list items the pickle gives it. Never imported, never called into. Dropped from the result,
    except that the tensors among its items are kept when it was filled like a dict or a list (a dict or list
    subclass: ``collections.defaultdict``, Lightning's ``AttributeDict``)."""
    fq_module = fq_name = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(fq_args=args, fq_state=None, fq_items=None, fq_list=None)
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["fq_state"] = state

    def __setitem__(self, key, value):         # SETITEM(S) on a dict subclass
        if self.fq_items is None:
            self.__dict__["fq_items"] = {}
        self.fq_items[key] = value

    def append(self, value):                   # APPEND(S) on a list subclass
        if self.fq_list is None:
            self.__dict__["fq_list"] = []
        self.fq_list.append(value)

    def extend(self, values):
        for v in values:
            self.append(v)

    def __reduce__(self):
        raise TypeError("not picklable")

    @classmethod
    def make(cls, module, name):
        return type("Opaque", (cls,), {"fq_module": module, "fq_name": name, "__slots__": ()})

    def label(self):
        return f"{self.fq_module}.{self.fq_name}"

    def is_module(self):
        """Does this look like a pickled ``torch.nn.Module`` (its ``__dict__`` holds ``_parameters`` /
        ``_modules``)?"""
        state = self.fq_state
        if isinstance(state, tuple) and state:
            state = state[0]
        return (self.fq_module.startswith(("torch.nn.modules", "torch.nn.parallel"))
                or (isinstance(state, dict) and "_parameters" in state and "_modules" in state))


class _Unpickler(pickle._Unpickler):
    """The restricted unpickler; see the module doc."""

    def __init__(self, data, archive):
        super().__init__(io.BytesIO(data), encoding="utf-8", errors="strict")
        self._archive = archive
        self._opaque = {}

    def find_class(self, module, name):
        if module == "__builtin__":
            module = "builtins"
        top = module.split(".")[0]
        if top in _DANGEROUS_MODULES or (module == "builtins" and name in _DANGEROUS_BUILTINS):
            raise FormatError(f"{self._archive.path}: the pickle refers to {module}.{name}: a checkpoint holds no "
                              f"code; refusing the file (malicious, or not a checkpoint)")
        if module == "torch._utils":
            kind = {"_rebuild_tensor_v2": "v2", "_rebuild_tensor_v3": "v3", "_rebuild_parameter": "parameter",
                    "_rebuild_parameter_with_state": "parameter"}.get(name)
            if kind:
                return _Rebuilder(kind)
            if name in _UNSUPPORTED_REBUILDERS:
                return _Rebuilder(name)
        elif module == "torch":
            if name in _STORAGE_CLASSES:
                return _StorageType(name, _STORAGE_CLASSES[name])
            if name == "UntypedStorage":
                return _StorageType(name, None)
            if name in _DTYPES:
                return _Dtype(name)
        elif module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(name, None)
        elif (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        elif module == "builtins" and name in ("set", "frozenset"):
            return {"set": set, "frozenset": frozenset}[name]
        elif (module, name) == ("_codecs", "encode"):
            return _Rebuilder("encode")
        elif (module, name) == ("torch._tensor", "_rebuild_from_type_v2"):
            return _Rebuilder("from_type")
        if (module, name) not in self._opaque:
            if len(self._opaque) > 10_000:
                raise pickle.UnpicklingError("too many distinct globals")
            self._opaque[module, name] = _Opaque.make(module, name)
        return self._opaque[module, name]

    def persistent_load(self, pid):
        return self._archive.storage(pid)


# ---------------------------------------------------------------------------------------------------- archive
class _Archive:
    """The zip members of one checkpoint, checked; storages read lazily and released after their last use."""

    def __init__(self, z, path):
        self.z, self.path = z, path
        infos = z.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise FormatError(f"{path}: zip member {dup!r} appears twice")
        from .importers import _zip_entries_declared
        declared = _zip_entries_declared(path)
        if declared is not None and declared != len(infos):
            raise FormatError(f"{path}: zip directory lists {len(infos)} members, its end record {declared}")
        self.infos = {i.filename: i for i in infos}
        pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            if any(n.endswith(".npy") for n in names):
                raise FormatError(f"{path}: an .npz archive, not a torch checkpoint (rename it to .npz)")
            raise FormatError(f"{path}: {'no' if not pkls else 'more than one'} <name>/data.pkl in the zip: "
                              f"not a torch checkpoint")
        self.prefix = pkls[0][:-len("data.pkl")]
        if self.prefix + "constants.pkl" in self.infos or any(n.startswith(self.prefix + "code/") for n in names):
            raise FormatError(f"{path}: a TorchScript archive (torch.jit.save), not a checkpoint; in torch, save "
                              f"model.state_dict() with torch.save instead")
        self.big_endian = False
        rec = self.infos.get(self.prefix + "byteorder")
        if rec is not None:
            order = self._small_record(rec)
            if order not in (b"little", b"big"):
                raise FormatError(f"{path}: byteorder record is {order[:16]!r}, expected 'little' or 'big'")
            self.big_endian = order == b"big"
        rec = self.infos.get(self.prefix + "version")
        if rec is not None and not self._small_record(rec).strip().isdigit():
            raise FormatError(f"{path}: version record is not a number")
        self.data_bytes = sum(i.file_size for n, i in self.infos.items() if n.startswith(self.prefix + "data/"))
        self.storages = {}        # key -> _Storage
        self.cache = {}           # key -> bytes
        self.uses = collections.Counter()

    def _small_record(self, info):
        if info.file_size > 64:
            raise FormatError(f"{self.path}: record {info.filename!r} is {info.file_size} bytes, expected a few")
        return self.z.read(info)

    def unpickle(self):
        info = self.infos[self.prefix + "data.pkl"]
        if info.file_size > MAX_PICKLE_BYTES:
            raise FormatError(f"{self.path}: data.pkl is {info.file_size} bytes, above the {MAX_PICKLE_BYTES} "
                              f"this reader accepts")
        self._check_ratio(info)
        data = self.z.read(info)
        try:
            return _Unpickler(data, self).load()
        except FmqError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                struct.error, OverflowError, RecursionError) as exc:
            raise FormatError(f"{self.path}: data.pkl is not a readable checkpoint pickle "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None

    def _check_ratio(self, info):
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size \
                + 4096:
            raise FormatError(f"{self.path}: member {info.filename!r} claims {info.file_size} bytes from "
                              f"{info.compress_size} compressed (a zip bomb?)")

    def storage(self, pid):
        """The persistent id ``("storage", storage_type, key, location, numel)`` → a checked _Storage."""
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise FormatError(f"{self.path}: unexpected persistent id in the pickle (not a torch storage)")
        tag, stype, key, location, numel = pid
        if tag not in ("storage", b"storage"):
            raise FormatError(f"{self.path}: persistent id of kind {tag!r}; only storages are expected")
        if isinstance(stype, _StorageType):
            dtype, untyped = stype.dtype or "uint8", stype.dtype is None
        else:
            raise FormatError(f"{self.path}: storage {key!r} has an unknown storage type "
                              f"{getattr(stype, 'label', lambda: type(stype).__name__)()}")
        if not isinstance(key, str) or not _is_count(numel):
            raise FormatError(f"{self.path}: storage id {key!r} / numel {numel!r} are malformed")
        if key in self.storages:
            s = self.storages[key]
            if (s.dtype, s.numel, s.untyped) != (dtype, numel, untyped):
                raise FormatError(f"{self.path}: storage {key!r} is declared twice with different types or sizes")
            return s
        member = self.infos.get(f"{self.prefix}data/{key}")
        if member is None:
            raise FormatError(f"{self.path}: storage {key!r} has no data/{key} record in the zip")
        itemsize = _DTYPES[dtype][1]
        if numel * itemsize != member.file_size:
            raise FormatError(f"{self.path}: storage {key!r} declares {numel} x {itemsize} bytes but its record "
                              f"holds {member.file_size}")
        self._check_ratio(member)
        s = self.storages[key] = _Storage(key, dtype, numel, untyped, member)
        return s

    def storage_bytes(self, s):
        if s.key not in self.cache:
            data = self.z.read(s.member)            # zipfile checks the CRC-32 on the way
            if len(data) != s.member.file_size:
                raise FormatError(f"{self.path}: storage {s.key!r} is truncated")
            self.cache[s.key] = data
        return self.cache[s.key]

    def release(self, s):
        self.uses[s.key] -= 1
        if self.uses[s.key] <= 0:
            self.cache.pop(s.key, None)


# ------------------------------------------------------------------------------------------------- flattening
class _Flattener:
    """Walk the unpickled object: dicts and lists give dotted names, tensors become arrays, the rest is dropped."""

    def __init__(self, archive, path):
        self.archive, self.path = archive, path
        self.out = {}
        self.streaming = False                 # True: iterate() keeps no tensor after yielding it
        self.budget = VIEW_BUDGET_FACTOR * archive.data_bytes + MIN_BUDGET
        self.visits = 0
        # a container or tensor costs the pickle at least one byte, unless memo references repeat it
        self.max_visits = archive.infos[archive.prefix + "data.pkl"].file_size + 10_000
        self.modules = []

    def run(self, node, name):
        for _ in self.iterate(node, name):
            pass
        return self.out

    def iterate(self, node, name):
        """Yield ``(name, array)`` of each tensor under ``node`` as it is made (also kept in ``self.out`` unless
        the consumer drops it: the names are kept for the duplicate check)."""
        if isinstance(node, _Opaque):
            raise self._not_state_dict(node)
        # names are relative to the selected node; a lone tensor is named by its key (or "tensor")
        name = (name or "tensor") if isinstance(node, _TensorRef) else ""
        refs = []
        self._walk(node, name, 0, set(), refs)
        for _, ref in refs:
            storage = ref.args[0] if ref.args else None
            if isinstance(storage, _Storage):
                self.archive.uses[storage.key] += 1
        seen = set()
        for full, ref in refs:
            if full in seen:
                raise FormatError(f"{self.path}: name {full!r} appears twice in the checkpoint")
            seen.add(full)
            self.out[full] = self._materialize(ref, full)
            yield full, self.out[full]
            if self.streaming:
                del self.out[full]
        if not seen and self.modules:
            raise self._not_state_dict(self.modules[0])

    def _not_state_dict(self, obj):
        if obj.is_module():
            return FormatError(f"{self.path}: holds a pickled torch.nn.Module ({obj.label()}), not a state dict; "
                               f"in torch, save model.state_dict() instead: torch.save(model.state_dict(), path)")
        return FormatError(f"{self.path}: holds a pickled {obj.label()} object, not a state dict of tensors")

    def _walk(self, node, name, depth, on_path, refs):
        self.visits += 1
        if self.visits > self.max_visits:
            raise FormatError(f"{self.path}: the pickle's containers repeat too often (more than "
                              f"{self.max_visits} visits): refusing it")
        if depth > _MAX_DEPTH:
            raise FormatError(f"{self.path}: nesting deeper than {_MAX_DEPTH} at {name!r}")
        if isinstance(node, _TensorRef):
            refs.append((name, node))
            return
        if isinstance(node, _Opaque):
            if node.is_module():
                self.modules.append(node)
                return
            node = node.fq_items if node.fq_items is not None else node.fq_list   # a dict / list subclass
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, (list, tuple)):
            items = enumerate(node)
        else:
            return                               # numbers, strings, None, bare storages, dtypes: not tensors
        if id(node) in on_path:                  # a reference cycle: nothing new below
            return
        on_path.add(id(node))
        for k, v in items:
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                continue
            self._walk(v, f"{name}.{k}" if name else str(k), depth + 1, on_path, refs)
        on_path.discard(id(node))

    def _materialize(self, ref, name):
        label = f"{self.path}: tensor {name!r}"
        if ref.unsupported:
            raise FormatError(f"{label} is a {_UNSUPPORTED_REBUILDERS[ref.unsupported]} tensor (torch._utils."
                              f"{ref.unsupported}); only dense tensors are read: convert it in torch first "
                              f"(.dequantize(), .to_dense(), .cpu())")
        args = ref.args
        n_fixed = 7 if ref.v3 else 6
        if len(args) not in (n_fixed, n_fixed + 1):
            raise FormatError(f"{label}: rebuild call with {len(args)} arguments")
        storage, offset, size, stride = args[:4]
        if not isinstance(storage, _Storage):
            raise FormatError(f"{label}: its storage is not a storage record")
        dtype = storage.dtype
        if ref.v3:
            if not isinstance(args[6], _Dtype):
                raise FormatError(f"{label}: _rebuild_tensor_v3 without a dtype")
            dtype = args[6].name
            if not storage.untyped:
                raise FormatError(f"{label}: _rebuild_tensor_v3 on a typed storage")
        elif storage.untyped:
            raise FormatError(f"{label}: _rebuild_tensor_v2 on an untyped storage (no dtype)")
        stored, itemsize = _DTYPES[dtype]
        if stored is None:
            raise FormatError(f"{label}: dtype torch.{dtype} is not supported (float, int, uint and bool only)")
        if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and len(size) == len(stride)
                and len(size) <= _MAX_NDIM and all(_is_count(d) for d in size) and all(_is_count(s) for s in stride)
                and _is_count(offset)):
            raise FormatError(f"{label}: invalid size {_short(size)} / stride {_short(stride)} / offset "
                              f"{_short(offset)}")
        nbytes = storage.numel * (_DTYPES[storage.dtype][1])
        if nbytes % itemsize:
            raise FormatError(f"{label}: storage of {nbytes} bytes is not a whole number of {dtype} elements")
        numel = nbytes // itemsize
        count = 1
        for d in size:
            count *= d
        if count > MAX_ELEMENTS:
            raise FormatError(f"{label} has an absurd size {tuple(size)}")
        if count:
            last = offset + sum((d - 1) * s for d, s in zip(size, stride))
            if last >= numel:
                raise FormatError(f"{label}: size {tuple(size)}, stride {tuple(stride)}, offset {offset} reach "
                                  f"element {last} of a storage of {numel}")
        self.budget -= count * itemsize
        if self.budget < 0:
            raise FormatError(f"{label}: the tensors add up to more than {VIEW_BUDGET_FACTOR}x the file's data "
                              f"(views repeated too often): refusing it")
        src = np.dtype(stored)
        if self.archive.big_endian:
            src = src.newbyteorder(">")
        if count == 0:
            a = np.empty(tuple(size), src)
        else:
            base = np.frombuffer(self.archive.storage_bytes(storage), dtype=src, count=numel)
            view = np.lib.stride_tricks.as_strided(base[offset:], shape=tuple(size),
                                                   strides=tuple(s * itemsize for s in stride), writeable=False)
            a = np.array(view, order="C")
        self.archive.release(storage)
        if dtype == "bfloat16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        if dtype == "bool":
            return a != 0
        return a.astype(a.dtype.newbyteorder("="), copy=False)


# -------------------------------------------------------------------------------------------------- helpers
def _refuse_non_zip(path):
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or zipfile.is_zipfile(path):
        return
    hint = "re-save it with torch.save(obj, path, _use_new_zipfile_serialization=True) (the default since torch 1.6)"
    if head[:2] == b"\x80\x02" and head[2:4] == b"\x8a\x0a" and head[4:14] == _LEGACY_MAGIC:
        raise FormatError(f"{path}: a legacy (pre-1.6, non-zip) torch file; {hint}")
    if len(head) > 262 and head[257:262] == b"ustar":
        raise FormatError(f"{path}: a legacy tar-format torch file; {hint}")
    if head[:1] == b"\x80":
        raise FormatError(f"{path}: a plain pickle, not torch's zip format (this reader runs no pickle outside it); "
                          f"{hint}")
    raise FormatError(f"{path}: not a torch zip checkpoint")


def _select(root, key, path):
    """``(node, name)``: the sub-object ``key`` picks (the root when None) and the name a lone tensor gets."""
    if key is None:
        return root, ""
    if not isinstance(key, str) or not key:
        raise InputError(f"key must be a non-empty str, got {key!r}")
    if not isinstance(root, dict):
        raise InputError(f"{path}: key={key!r} given but the checkpoint holds a {_kind(root)}, not a dict")
    if key in root:
        return root[key], key
    node = root
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            keys = [k for k in root if isinstance(k, str)]
            shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
            raise InputError(f"{path}: no entry {key!r} in the checkpoint; its top-level keys: {shown or 'none'}")
    return node, key


def _kind(obj):
    return obj.label() if isinstance(obj, _Opaque) else "tensor" if isinstance(obj, _TensorRef) else \
        type(obj).__name__


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 62


def _short(x):
    text = repr(x) if isinstance(x, (int, tuple, list)) else type(x).__name__
    return text if len(text) < 60 else text[:57] + "..."


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
