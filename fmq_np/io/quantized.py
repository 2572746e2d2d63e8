"""Quantized models in HDF5 (format ``fmq_np.quantized``, version 2): packed codes, so file size = real compression.

Layout::

    /                 attrs: format, format_version, fmq_np_version, n_tensors, meta (JSON of QuantizedModel.meta)
    /tensors/000000   a tensor of SMALL_BYTES stored bytes or more, under its position in the model's order (index
                      names: tensor names may hold dots or "/")
      quantized → group, attrs: name, kind="quantized", shape (JSON), dtype, bits, method, granularity,
                  group_size, codes_shape (JSON [n_groups, group_len]), codebook_kind, meta (JSON)
                  codes     uint8 (ceil(n_groups * group_len * bits / 8),): fmq_np.quant.packing's bit stream
                  codebook  (n_groups, 2**bits) in dtype                      when codebook_kind = "table"
                  scale, offset  (n_groups,) in dtype: level c = c * scale + offset (scale 0: offset)
                                                                            when codebook_kind = "affine"
      kept in float (or any numeric array) → dataset, flat (size,), attrs: name, kind="array", shape (JSON)
    /packed/000000    the tensors below SMALL_BYTES, many to a pack, in the model's order (version 2; 374 B of HDF5
                      structure per tensor of its own, measured, against a few bytes of index here)
      data        uint8: the parts of its tensors end to end, little-endian, tiling it exactly (no gap, no overlap)
      index       uint8: UTF-8 JSON list, one record per tensor: {"position": i, "attrs": {the attributes its own
                  group or dataset would carry, and for an array "dtype": its NumPy dtype string, e.g. "<f4"},
                  "parts": {part: [byte offset, byte count]}} (parts: codes, codebook / scale + offset; values)

Every position 0..n_tensors-1 is stored exactly once, in ``tensors`` or in a pack. Version 1 files (no packs) still
load. Every dataset is gzip-compressed with fletcher32 checksums; strings are fixed-length attributes and the file
uses the HDF5 1.10 object format, whose metadata carries checksums too, so a flipped byte is detected rather than
read as other content. An affine codebook (uniform) is stored as scale + offset only when that rebuilds it bit for
bit.

A file written tensor by tensor (:func:`fmq_np.quant.quantize_file`) carries a root attribute ``complete``, false
until its last tensor is written; loading refuses it while false.

Loading checks everything (format, version, every attribute's type and range, shapes against byte counts, codebook
shape/dtype/finiteness/order, each pack's index against its data, sizes before allocation) and raises FormatError
naming the file and tensor; the loaded model dequantizes bit for bit to the saved one.
"""
import json

import h5py
import numpy as np

from .._validate import is_int
from ..errors import FmqError, FormatError, InputError
from ..quant.packing import pack_codes, packed_nbytes, unpack_codes
from ._h5 import MAX_ELEMENTS, atomic_h5, check_format, open_h5, read_attr, read_dataset

FORMAT = "fmq_np.quantized"
VERSION = 2
#: format versions this code reads (1: every tensor an HDF5 object of its own)
READS = (1, 2)
#: a tensor whose stored bytes (packed codes + codebook, or its values) are fewer than this goes into a pack
SMALL_BYTES = 1 << 14
#: a pack is written once the tensors waiting for it hold this many bytes (what a streaming writer keeps in memory)
PACK_BYTES = 1 << 22
#: HDF5 object-format bounds: 1.10 headers carry checksums and stay readable by HDF5 >= 1.10
_LIBVER = ("v110", "v114")
_FLOAT_DTYPES = ("float16", "float32", "float64")
_ARRAY_KINDS = "biuf"
#: little-endian dtypes an array in a pack may have (others get an HDF5 dataset of their own)
_PACKED_DTYPES = tuple(np.dtype(c).newbyteorder("<").str for c in "?bBhHiIqQefd")
_MAX_NDIM = 32
_MAX_RATIO = 1100


def save_quantized(path, qm):
    """Write a QuantizedModel (``.tensors``: name → QuantizedTensor | ndarray, ``.meta``: JSON-able) atomically."""
    meta_json = _dumps(qm.meta, "QuantizedModel.meta")
    with atomic_h5(path, libver=_LIBVER) as f:
        write_root(f, len(qm.tensors), meta_json)
        writer = Writer(f)
        for i, (name, t) in enumerate(qm.tensors.items()):
            writer.add(i, name, t)
        writer.flush()


def write_root(f, n_tensors, meta_json):
    """The root attributes and the empty ``tensors`` group of a new quantized file ``f`` (an open ``h5py.File``)."""
    from .. import __version__
    _set_str(f, "format", FORMAT)
    f.attrs["format_version"] = VERSION
    _set_str(f, "fmq_np_version", __version__)
    f.attrs["n_tensors"] = n_tensors
    _set_str(f, "meta", meta_json)
    return f.create_group("tensors")


class Writer:
    """Stores the tensors of a quantized file ``f`` (an ``h5py.File`` open for writing, its root written by
    :func:`write_root`), given in position order: a small one waits for the next pack, the others get their own
    group or dataset at once. ``done``: every tensor at a position below it is in the file (a pack is written whole
    or not at all, so a tensor still waiting is not done); :meth:`flush` writes what waits (call it last)."""

    def __init__(self, f, done=0):
        self.f, self.done, self._last = f, done, done - 1
        self._waiting, self._nbytes, self._stored = [], 0, {}

    @classmethod
    def resume(cls, f, done, path):
        """A Writer continuing the partial file ``f`` whose tensors below position ``done`` are whole: whatever an
        interrupted run left after them (entries, packs holding a later position, unreadable packs) is removed."""
        group = f["tensors"]
        for key in list(group):
            if not key.isdigit() or int(key) >= done:
                del group[key]
        writer = cls(f, done)
        packs = f.get("packed")
        for key in list(packs or ()):
            try:
                records = _read_pack(packs[key], path)
            except FormatError:
                records = None
            if records is None or any(r.position >= done for r in records):
                del packs[key]
                continue
            writer._stored.update((r.position, (r.attrs.get("name"), r.attrs.get("shape"))) for r in records)
        return writer

    def stored(self, i):
        """``(name, shape JSON)`` of the tensor at position ``i`` already in the file, ``(None, None)`` if none."""
        if i in self._stored:
            return self._stored[i]
        obj = self.f["tensors"].get(f"{i:06d}")
        if obj is None:
            return None, None
        return tuple(read_attr(obj, attr, str, self.f.filename) for attr in ("name", "shape"))

    def add(self, i, name, t):
        """Store tensor number ``i`` (a QuantizedTensor, or a numeric ndarray kept as it is)."""
        attrs, parts = _entry(name, t)
        nbytes = sum(p.nbytes for p in parts.values())
        self._last = i
        if nbytes < SMALL_BYTES and (attrs["kind"] == "quantized" or
                                     parts["values"].dtype.newbyteorder("<").str in _PACKED_DTYPES):
            self._waiting.append((i, attrs, parts))
            self._nbytes += nbytes
            if self._nbytes >= PACK_BYTES:
                self.flush()
            return
        _write_own(self.f["tensors"], f"{i:06d}", attrs, parts)
        if not self._waiting:
            self.done = i + 1

    def flush(self):
        """Write the tensors waiting as one pack; then every tensor given so far is done."""
        if self._waiting:
            _write_pack(self.f.require_group("packed"), self._waiting)
            self._waiting, self._nbytes = [], 0
        self.done = self._last + 1


def check_complete(f, path):
    """FormatError when ``f`` is the partial output of an interrupted :func:`fmq_np.quant.quantize_file` (its
    root attribute ``complete`` is false; files without the attribute were written whole)."""
    if "complete" in f.attrs and not bool(f.attrs["complete"]):
        raise FormatError(f"{path}: incomplete quantized model (an interrupted quantize_file); finish it with "
                          f"quantize_file(..., resume=True) or `fmq-np quantize ... --resume`")


def load_quantized(path):
    """Read a file written by :func:`save_quantized` → QuantizedModel; FormatError on anything malformed."""
    from ..quant.model import QuantizedModel
    with open_h5(path) as f:
        try:
            version = check_format(f, path, FORMAT, READS, "quantized model")
            check_complete(f, path)
            meta = _loads(read_attr(f, "meta", str, path), path, "meta")
            n = read_attr(f, "n_tensors", int, path)
            tensors = {}
            for entry in _entries(f, n, version, path):
                name, t = _read_entry(entry, path)
                if name in tensors:
                    raise FormatError(f"{path}: tensor {name!r} appears twice")
                tensors[name] = t
        except FmqError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, OverflowError) as exc:
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise FormatError(f"{path}: corrupt quantized model ({type(exc).__name__}: {detail})") from None
    return QuantizedModel(tensors, meta)


def read_meta(path):
    """The ``meta`` dict of a quantized file (``QuantizedModel.meta``) without reading its tensors."""
    with open_h5(path) as f:
        check_format(f, path, FORMAT, READS, "quantized model")
        return _loads(read_attr(f, "meta", str, path), path, "meta")


# ------------------------------------------------------------------------------------------------------- writing
def _entry(name, t):
    """``(attrs, parts)`` of one tensor: its attributes (str or int values) and its stored arrays by part name."""
    from ..quant.tensor import QuantizedTensor
    if not isinstance(name, str):
        raise InputError(f"tensor names must be str, got {name!r}")
    if isinstance(t, QuantizedTensor):
        return _quantized_entry(name, t)
    if isinstance(t, np.ndarray) and t.dtype.kind in _ARRAY_KINDS:
        return dict(name=name, kind="array", shape=json.dumps(list(t.shape))), {"values": t.reshape(-1)}
    raise InputError(f"tensor {name!r}: expected a QuantizedTensor or a numeric ndarray, got {type(t).__name__}")


def _quantized_entry(name, t):
    dtype = np.dtype(t.dtype)
    if dtype.name not in _FLOAT_DTYPES:
        raise InputError(f"tensor {name!r}: dtype {dtype} is not float16/32/64")
    shape = tuple(int(d) for d in t.shape)
    expected = _group_shape(shape, t.granularity, int(t.group_size))
    k = 2 ** int(t.bits)
    codes, codebook = np.asarray(t.codes), np.asarray(t.codebook)
    if expected is None or codes.shape != expected or codes.dtype != np.uint8:
        raise InputError(f"tensor {name!r}: codes {codes.dtype} {codes.shape} do not fit shape {shape} with "
                         f"granularity {t.granularity!r} (expected uint8 {expected})")
    if codebook.shape != (expected[0], k) or codebook.dtype != dtype:
        raise InputError(f"tensor {name!r}: codebook {codebook.dtype} {codebook.shape}, expected {dtype} "
                         f"{(expected[0], k)}")
    if not np.isfinite(codebook).all() or (codebook[:, 1:] < codebook[:, :-1]).any():
        raise InputError(f"tensor {name!r}: codebook rows must be finite and ascending")
    affine = _affine_params(codebook) if t.meta.get("affine") else None
    attrs = dict(name=name, kind="quantized", shape=json.dumps(list(shape)), dtype=dtype.name,
                 method=str(t.method), granularity=t.granularity, codes_shape=json.dumps(list(expected)),
                 meta=_dumps(t.meta, f"{name}.meta"), bits=int(t.bits), group_size=int(t.group_size),
                 codebook_kind="table" if affine is None else "affine")
    parts = {"codes": pack_codes(codes, int(t.bits))}
    parts.update({"codebook": codebook} if affine is None else {"scale": affine[0], "offset": affine[1]})
    return attrs, parts


def _write_own(group, key, attrs, parts):
    """A tensor as an HDF5 object of its own in ``group``: a dataset of its values, or a group of its parts."""
    if attrs["kind"] == "array":
        obj = _dataset(group, key, parts["values"])
    else:
        obj = _create_group(group, key)
        for part, data in parts.items():
            _dataset(obj, part, data)
    for attr, value in attrs.items():
        if isinstance(value, str):
            _set_str(obj, attr, value)
        else:
            obj.attrs[attr] = value


def _write_pack(packs, waiting):
    """The tensors ``waiting`` (``[(position, attrs, parts), ...]``) as the next pack of the ``packed`` group."""
    records, chunks, at = [], [], 0
    for i, attrs, parts in waiting:
        spans = {}
        for part, data in parts.items():
            raw = np.ascontiguousarray(data, data.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
            spans[part] = [at, int(raw.size)]
            at += raw.size
            chunks.append(raw)
        if attrs["kind"] == "array":
            attrs = dict(attrs, dtype=parts["values"].dtype.newbyteorder("<").str)
        records.append({"position": i, "attrs": attrs, "parts": spans})
    g = packs.create_group(f"{len(packs):06d}")
    _dataset(g, "data", np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))
    _dataset(g, "index", np.frombuffer(json.dumps(records, separators=(",", ":")).encode("utf-8"), np.uint8))


def _create_group(parent, key):
    """A group whose 11 attributes stay in its object header (HDF5 moves more than 8 to a separate fractal heap and
    B-tree by default: 1.5 KB more per tensor). Any HDF5 reader reads it the same way."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_attr_phase_change(16, 14)
    return h5py.Group(h5py.h5g.create(parent.id, key.encode(), gcpl=gcpl))


def _dataset(parent, name, data):
    """Chunked gzip + fletcher32 dataset (an empty array is stored plain: HDF5 cannot chunk it)."""
    data = np.ascontiguousarray(data)
    if data.size == 0:
        return parent.create_dataset(name, data=data)
    return parent.create_dataset(name, data=data, compression="gzip", compression_opts=4,
                                 shuffle=data.dtype.itemsize > 1, fletcher32=True)


def _set_str(obj, name, value):
    """A fixed-length UTF-8 string attribute (stored in the checksummed object header, unlike variable-length)."""
    obj.attrs.create(name, np.bytes_(value.encode("utf-8")))


def _dumps(obj, what):
    try:
        return json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serialisable ({exc})") from None


def _loads(text, path, what):
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{path}: attribute {what!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: attribute {what!r} must be a JSON object")
    return value


def _levels(scale, offset, k):
    """Affine codebook ``(G, k)``: ``c * scale + offset`` in the dtype of ``scale`` (a zero scale gives ``offset``)."""
    c = np.arange(k, dtype=scale.dtype)
    table = c[None, :] * scale[:, None] + offset[:, None]
    return np.where(scale[:, None] == 0, offset[:, None], table)


def _affine_params(codebook, spread=4):
    """``(scale, offset)`` ``(G,)`` that rebuild ``codebook`` ``(G, k)`` bit for bit through :func:`_levels`, or None.

    The scale a row was built with is not kept in the tensor, so per row the candidates within ``spread`` ulps of
    two estimates, ``(last - first) / (k - 1)`` and ``second - first``, are tried; the first exact one is kept.
    """
    G, k = codebook.shape
    if k < 2 or codebook.dtype == np.float16:
        return None
    dt = codebook.dtype.type
    offset = codebook[:, 0].copy()
    with np.errstate(all="ignore"):
        cands = []
        for est in ((codebook[:, -1] - offset) / dt(k - 1), codebook[:, 1] - offset):
            for _ in range(spread):
                est = np.nextafter(est, dt(-np.inf))
            for _ in range(2 * spread + 1):
                cands.append(est)
                est = np.nextafter(est, dt(np.inf))
        scale = np.full(G, np.nan, codebook.dtype)
        for cand in cands:
            todo = np.isnan(scale)
            if not todo.any():
                break
            exact = todo & _same_bits(_levels(cand, offset, k), codebook) & (cand >= 0)
            scale[exact] = cand[exact]
    return None if np.isnan(scale).any() else (scale, offset)


def _same_bits(a, b):
    """Per row: ``a`` and ``b`` are identical bit for bit."""
    view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return (a.view(view) == b.view(view)).all(axis=1)


def _group_shape(shape, granularity, group_size):
    """``(n_groups, group_len)`` of the QuantizedTensor layout, or None if the combination is impossible (a stored
    group_size must be 0 unless the granularity is "group")."""
    from ..quant.layout import group_shape
    if granularity != "group" and group_size != 0:
        return None
    try:
        return group_shape(shape, granularity, group_size)
    except InputError:
        return None


# ------------------------------------------------------------------------------------------------------- reading
def _entries(f, n, version, path):
    """The stored entries (:class:`_Own` or :class:`_Packed`) at positions 0..n-1, each exactly once."""
    group = f.get("tensors")
    if not isinstance(group, h5py.Group):
        raise FormatError(f"{path}: group 'tensors' missing")
    found = {}
    for key in group:
        if len(key) != 6 or not key.isdigit():
            raise FormatError(f"{path}: unexpected entry {key!r} in 'tensors'")
        found[int(key)] = _Own(group[key])
    packs = f.get("packed") if version >= 2 else None
    if packs is not None and not isinstance(packs, h5py.Group):
        raise FormatError(f"{path}: 'packed' is not a group")
    for key in packs or ():
        for record in _read_pack(packs[key], path):
            if record.position in found:
                raise FormatError(f"{path}: tensor {record.attrs.get('name')!r} in pack {key} is stored at "
                                  f"position {record.position}, which another entry holds too")
            found[record.position] = record
    if not 0 <= n <= len(found) or sorted(found) != list(range(n)):
        raise FormatError(f"{path}: the file stores {len(found)} tensors, not positions 0..{n - 1} of the {n} "
                          f"announced")
    return [found[i] for i in range(n)]


class _Own:
    """A tensor stored as an HDF5 object of its own: a group of parts, or the dataset of an array's values."""

    def __init__(self, obj):
        self.obj, self.attrs, self.name = obj, obj.attrs, obj.name

    def values(self, size, label, path):
        obj = self.obj
        if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in _ARRAY_KINDS or obj.shape != (size,):
            raise FormatError(f"{label}: expected a numeric dataset of {size} values, got {_describe(obj)}")
        data = _read(obj.parent, obj.name, path, None, None)
        return data.astype(data.dtype.newbyteorder("="), copy=False)

    def part(self, part, dtype, shape, label, path):
        if not isinstance(self.obj, h5py.Group):
            raise FormatError(f"{label}: a quantized entry must be a group, got {_describe(self.obj)}")
        return _read(self.obj, part, path, dtype=dtype, shape=shape)

    def check_used(self, label):
        """Nothing to check: a group's other members are not read."""


class _Packed:
    """One tensor of a pack: its index record's attributes (read by read_attr like HDF5 attributes) and parts,
    slices of the pack's data."""

    def __init__(self, name, position, attrs, parts, data):
        self.name, self.position, self.attrs, self.parts, self.data = name, position, attrs, parts, data
        self._used = set()

    def values(self, size, label, path):
        dtype = read_attr(self, "dtype", str, path)
        if dtype not in _PACKED_DTYPES:
            raise FormatError(f"{label}: packed array dtype {dtype[:20]!r} is not one of {', '.join(_PACKED_DTYPES)}")
        return self.part("values", dtype, (size,), label, path)

    def part(self, part, dtype, shape, label, path):
        if part not in self.parts:
            raise FormatError(f"{label}: part {part!r} missing from its pack")
        self._used.add(part)
        start, nbytes = self.parts[part]
        dtype = np.dtype(dtype).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        if nbytes != count * dtype.itemsize:
            raise FormatError(f"{label}: part {part!r} holds {nbytes} bytes, shape {tuple(shape)} of {dtype} needs "
                              f"{count * dtype.itemsize}")
        data = np.frombuffer(self.data, dtype, count=count, offset=start).reshape(shape)
        return data.astype(dtype.newbyteorder("="))

    def check_used(self, label):
        unused = sorted(set(self.parts) - self._used)
        if unused:
            raise FormatError(f"{label}: its pack holds parts {unused} that its kind does not have")


def _read_pack(g, path):
    """The :class:`_Packed` records of pack ``g``, checked: a valid index whose parts tile the data exactly."""
    if not isinstance(g, h5py.Group):
        raise FormatError(f"{path}: pack {g.name} is not a group")
    data = _read(g, "data", path, dtype=np.uint8, shape=None)
    raw = _read(g, "index", path, dtype=np.uint8, shape=None)
    if data.ndim != 1 or raw.ndim != 1:
        raise FormatError(f"{path}: pack {g.name}: data and index must be 1-D byte arrays")
    try:
        index = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{path}: pack {g.name}: index is not valid JSON ({exc})") from None
    if not isinstance(index, list):
        raise FormatError(f"{path}: pack {g.name}: index must be a JSON list")
    records, spans = [], []
    for k, rec in enumerate(index):
        where = f"{g.name}[{k}]"
        if (not isinstance(rec, dict) or sorted(rec) != ["attrs", "parts", "position"]
                or not is_int(rec["position"]) or rec["position"] < 0
                or not isinstance(rec["attrs"], dict) or not isinstance(rec["parts"], dict)):
            raise FormatError(f"{path}: pack {g.name}: record {k} is not "
                              f"{{\"position\": int >= 0, \"attrs\": {{...}}, \"parts\": {{...}}}}")
        label = f"{path}: tensor {rec['attrs'].get('name')!r} (pack {g.name}, record {k})"
        for part, span in rec["parts"].items():
            if (not isinstance(span, list) or len(span) != 2 or not all(is_int(v) and v >= 0 for v in span)
                    or span[0] + span[1] > data.size):
                raise FormatError(f"{label}: part {part!r} span {str(span)[:40]} is not [offset, count] inside the "
                                  f"pack's {data.size} bytes")
            spans.append((span[0], span[1], label, part))
        records.append(_Packed(where, rec["position"], rec["attrs"], rec["parts"], data))
    at = 0
    for start, nbytes, label, part in sorted(spans, key=lambda s: s[:2]):
        if start != at:
            raise FormatError(f"{label}: part {part!r} starts at byte {start} of its pack, not at {at} where the "
                              f"previous part ends (overlap or gap)")
        at = start + nbytes
    if at != data.size:
        raise FormatError(f"{path}: pack {g.name}: its parts cover {at} of its {data.size} bytes")
    return records


def _read_entry(entry, path):
    name = read_attr(entry, "name", str, path)
    kind = read_attr(entry, "kind", str, path)
    label = f"{path}: tensor {name!r}"
    shape = _read_shape(entry, "shape", label, path)
    size = 1
    for d in shape:
        size *= d
    if kind == "array":
        t = entry.values(size, label, path).reshape(shape)
    elif kind == "quantized":
        t = _read_quantized(entry, name, shape, label, path)
    else:
        raise FormatError(f"{label}: unknown entry kind {kind[:40]!r}")
    entry.check_used(label)
    return name, t


def _read_quantized(entry, name, shape, label, path):
    from ..quant.tensor import QuantizedTensor
    dtype = read_attr(entry, "dtype", str, path)
    bits = read_attr(entry, "bits", int, path)
    method = read_attr(entry, "method", str, path)
    granularity = read_attr(entry, "granularity", str, path)
    group_size = read_attr(entry, "group_size", int, path)
    meta = _loads(read_attr(entry, "meta", str, path), path, f"{name}.meta")
    if dtype not in _FLOAT_DTYPES:
        raise FormatError(f"{label}: dtype {dtype!r} is not float16/32/64")
    if not 1 <= bits <= 8:
        raise FormatError(f"{label}: bits {bits} outside 1..8")
    if not method:
        raise FormatError(f"{label}: empty method")
    expected = _group_shape(shape, granularity, group_size)
    codes_shape = _read_shape(entry, "codes_shape", label, path)
    if expected is None or codes_shape != expected:
        raise FormatError(f"{label}: codes shape {codes_shape} does not fit shape {shape}, granularity "
                          f"{granularity!r}, group_size {group_size}")
    n_groups, group_len = expected
    k = 2 ** bits
    packed = entry.part("codes", np.uint8, (packed_nbytes(n_groups * group_len, bits),), label, path)
    codes = unpack_codes(packed, bits, n_groups * group_len).reshape(expected)
    kind = read_attr(entry, "codebook_kind", str, path)
    if kind == "table":
        codebook = entry.part("codebook", dtype, (n_groups, k), label, path)
    elif kind == "affine":
        scale = entry.part("scale", dtype, (n_groups,), label, path)
        offset = entry.part("offset", dtype, (n_groups,), label, path)
        if not (np.isfinite(scale).all() and np.isfinite(offset).all() and (scale >= 0).all()):
            raise FormatError(f"{label}: affine scale/offset must be finite with scale >= 0")
        with np.errstate(over="ignore"):
            codebook = _levels(scale, offset, k)
    else:
        raise FormatError(f"{label}: unknown codebook_kind {kind!r}")
    codebook = codebook.astype(codebook.dtype.newbyteorder("="), copy=False)
    if not np.isfinite(codebook).all():
        raise FormatError(f"{label}: codebook holds NaN or Inf")
    if (codebook[:, 1:] < codebook[:, :-1]).any():
        raise FormatError(f"{label}: codebook rows are not ascending")
    return QuantizedTensor(codes=codes, codebook=np.ascontiguousarray(codebook), shape=shape, dtype=np.dtype(dtype),
                           bits=bits, method=method, granularity=granularity, group_size=group_size, meta=meta)


def _read(g, name, path, dtype, shape):
    """:func:`read_dataset` after checking that the file really stores the data: a declared size beyond what the
    stored bytes can inflate to (deflate's ratio is < 1100) or unallocated storage is refused before allocating."""
    obj = g.get(name)
    if isinstance(obj, h5py.Dataset) and obj.id.get_storage_size() * _MAX_RATIO + 4096 < obj.size * obj.dtype.itemsize:
        raise FormatError(f"{path}: dataset {obj.name!r} declares {obj.shape} but stores only "
                          f"{obj.id.get_storage_size()} bytes")
    return read_dataset(g, name, path, dtype=dtype, shape=shape)


def _read_shape(obj, attr, label, path):
    text = read_attr(obj, attr, str, path)
    try:
        shape = json.loads(text)
    except ValueError:
        shape = None
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS for d in shape)):
        raise FormatError(f"{label}: attribute {attr!r} is not a valid shape: {text[:80]!r}")
    size = 1
    for d in shape:
        size *= d
    if size > MAX_ELEMENTS:
        raise FormatError(f"{label}: absurd size {shape}")
    return tuple(shape)


def _describe(obj):
    return f"dataset {obj.dtype} {obj.shape}" if isinstance(obj, h5py.Dataset) else type(obj).__name__
