"""Quantized models in HDF5 (format ``fmq_np.quantized``, version 1): packed codes, so file size = real compression.

Layout::

    /                 attrs: format, format_version, fmq_np_version, n_tensors, meta (JSON of QuantizedModel.meta)
    /tensors/000000   one entry per tensor, in the model's order (index names: tensor names may hold dots or "/")
      quantized → group, attrs: name, kind="quantized", shape (JSON), dtype, bits, method, granularity,
                  group_size, codes_shape (JSON [n_groups, group_len]), codebook_kind, meta (JSON)
                  codes     uint8 (ceil(n_groups * group_len * bits / 8),): fmq_np.quant.packing's bit stream
                  codebook  (n_groups, 2**bits) in dtype                      when codebook_kind = "table"
                  scale, offset  (n_groups,) in dtype: level c = c * scale + offset (scale 0: offset)
                                                                            when codebook_kind = "affine"
      kept in float (or any numeric array) → dataset, flat (size,), attrs: name, kind="array", shape (JSON)

Every dataset is gzip-compressed with fletcher32 checksums; strings are fixed-length attributes and the file uses
the HDF5 1.10 object format, whose metadata carries checksums too, so a flipped byte is detected rather than read as
other content. An affine codebook (uniform) is stored as scale + offset only when that rebuilds it bit for bit.

A file written tensor by tensor (:func:`fmq_np.quant.quantize_file`) carries a root attribute ``complete``, false
until its last tensor is written; loading refuses it while false.

Loading checks everything (format, version, every attribute's type and range, shapes against byte counts, codebook
shape/dtype/finiteness/order, sizes before allocation) and raises FormatError naming the file and tensor; the
loaded model dequantizes bit for bit to the saved one.
"""
import json

import h5py
import numpy as np

from ..errors import FmqError, FormatError, InputError
from ..quant.packing import pack_codes, packed_nbytes, unpack_codes
from ._h5 import MAX_ELEMENTS, atomic_h5, check_format, open_h5, read_attr, read_dataset

FORMAT = "fmq_np.quantized"
VERSION = 1
#: HDF5 object-format bounds: 1.10 headers carry checksums and stay readable by HDF5 >= 1.10
_LIBVER = ("v110", "v114")
_FLOAT_DTYPES = ("float16", "float32", "float64")
_ARRAY_KINDS = "biuf"
_MAX_NDIM = 32
_MAX_RATIO = 1100


def save_quantized(path, qm):
    """Write a QuantizedModel (``.tensors``: name → QuantizedTensor | ndarray, ``.meta``: JSON-able) atomically."""
    meta_json = _dumps(qm.meta, "QuantizedModel.meta")
    with atomic_h5(path, libver=_LIBVER) as f:
        group = write_root(f, len(qm.tensors), meta_json)
        for i, (name, t) in enumerate(qm.tensors.items()):
            write_entry(group, i, name, t)


def write_root(f, n_tensors, meta_json):
    """The root attributes and the empty ``tensors`` group of a new quantized file ``f`` (an open ``h5py.File``)."""
    from .. import __version__
    _set_str(f, "format", FORMAT)
    f.attrs["format_version"] = VERSION
    _set_str(f, "fmq_np_version", __version__)
    f.attrs["n_tensors"] = n_tensors
    _set_str(f, "meta", meta_json)
    return f.create_group("tensors")


def write_entry(group, i, name, t):
    """Store tensor number ``i`` (a QuantizedTensor, or a numeric ndarray kept as it is) in the ``tensors`` group."""
    from ..quant.tensor import QuantizedTensor
    if not isinstance(name, str):
        raise InputError(f"tensor names must be str, got {name!r}")
    key = f"{i:06d}"
    if isinstance(t, QuantizedTensor):
        _write_quantized(_create_group(group, key), name, t)
    elif isinstance(t, np.ndarray) and t.dtype.kind in _ARRAY_KINDS:
        ds = _dataset(group, key, t.reshape(-1))
        _set_str(ds, "name", name)
        _set_str(ds, "kind", "array")
        _set_str(ds, "shape", json.dumps(list(t.shape)))
    else:
        raise InputError(f"tensor {name!r}: expected a QuantizedTensor or a numeric ndarray, "
                         f"got {type(t).__name__}")


def check_complete(f, path):
    """FormatError when ``f`` is the partial output of an interrupted :func:`fmq_np.quant.quantize_file` (its
    root attribute ``complete`` is false; files without the attribute were written whole)."""
    if "complete" in f.attrs and not bool(f.attrs["complete"]):
        raise FormatError(f"{path}: incomplete quantized model (an interrupted quantize_file); finish it with "
                          f"quantize_file(..., resume=True) or `fmq-np quantize ... --resume`")


def read_entry(obj, path):
    """``(name, QuantizedTensor | ndarray)`` of one stored entry, validated (FormatError naming file and tensor)."""
    return _read_entry(obj, path)


def load_quantized(path):
    """Read a file written by :func:`save_quantized` → QuantizedModel; FormatError on anything malformed."""
    from ..quant.model import QuantizedModel
    with open_h5(path) as f:
        try:
            check_format(f, path, FORMAT, VERSION, "quantized model")
            check_complete(f, path)
            meta = _loads(read_attr(f, "meta", str, path), path, "meta")
            n = read_attr(f, "n_tensors", int, path)
            group = f.get("tensors")
            if not isinstance(group, h5py.Group):
                raise FormatError(f"{path}: group 'tensors' missing")
            keys = [f"{i:06d}" for i in range(n)] if 0 <= n <= len(group) else None
            if keys is None or set(group.keys()) != set(keys):
                raise FormatError(f"{path}: 'tensors' holds {len(group)} entries, not the {n} announced")
            tensors = {}
            for key in keys:
                name, t = _read_entry(group[key], path)
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
        check_format(f, path, FORMAT, VERSION, "quantized model")
        return _loads(read_attr(f, "meta", str, path), path, "meta")


# ------------------------------------------------------------------------------------------------------- writing
def _write_quantized(g, name, t):
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
    for attr, value in (("name", name), ("kind", "quantized"), ("shape", json.dumps(list(shape))),
                        ("dtype", dtype.name), ("method", str(t.method)), ("granularity", t.granularity),
                        ("codes_shape", json.dumps(list(expected))), ("meta", _dumps(t.meta, f"{name}.meta"))):
        _set_str(g, attr, value)
    g.attrs["bits"] = int(t.bits)
    g.attrs["group_size"] = int(t.group_size)
    _dataset(g, "codes", pack_codes(codes, int(t.bits)))
    affine = _affine_params(codebook) if t.meta.get("affine") else None
    if affine is None:
        _set_str(g, "codebook_kind", "table")
        _dataset(g, "codebook", codebook)
    else:
        _set_str(g, "codebook_kind", "affine")
        _dataset(g, "scale", affine[0])
        _dataset(g, "offset", affine[1])


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
    from ..quant.tensor import group_shape
    if granularity != "group" and group_size != 0:
        return None
    try:
        return group_shape(shape, granularity, group_size)
    except InputError:
        return None


# ------------------------------------------------------------------------------------------------------- reading
def _read_entry(obj, path):
    name = read_attr(obj, "name", str, path)
    kind = read_attr(obj, "kind", str, path)
    label = f"{path}: tensor {name!r}"
    shape = _read_shape(obj, "shape", label, path)
    size = 1
    for d in shape:
        size *= d
    if kind == "array":
        if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in _ARRAY_KINDS or obj.shape != (size,):
            raise FormatError(f"{label}: expected a numeric dataset of {size} values, got {_describe(obj)}")
        data = _read(obj.parent, obj.name, path, None, None)
        return name, data.astype(data.dtype.newbyteorder("="), copy=False).reshape(shape)
    if kind != "quantized" or not isinstance(obj, h5py.Group):
        raise FormatError(f"{label}: unknown entry kind {kind!r} ({_describe(obj)})")
    return name, _read_quantized(obj, name, shape, label, path)


def _read_quantized(g, name, shape, label, path):
    from ..quant.tensor import QuantizedTensor
    dtype = read_attr(g, "dtype", str, path)
    bits = read_attr(g, "bits", int, path)
    method = read_attr(g, "method", str, path)
    granularity = read_attr(g, "granularity", str, path)
    group_size = read_attr(g, "group_size", int, path)
    meta = _loads(read_attr(g, "meta", str, path), path, f"{name}.meta")
    if dtype not in _FLOAT_DTYPES:
        raise FormatError(f"{label}: dtype {dtype!r} is not float16/32/64")
    if not 1 <= bits <= 8:
        raise FormatError(f"{label}: bits {bits} outside 1..8")
    if not method:
        raise FormatError(f"{label}: empty method")
    expected = _group_shape(shape, granularity, group_size)
    codes_shape = _read_shape(g, "codes_shape", label, path)
    if expected is None or codes_shape != expected:
        raise FormatError(f"{label}: codes shape {codes_shape} does not fit shape {shape}, granularity "
                          f"{granularity!r}, group_size {group_size}")
    n_groups, group_len = expected
    k = 2 ** bits
    packed = _read(g, "codes", path, dtype=np.uint8, shape=(packed_nbytes(n_groups * group_len, bits),))
    codes = unpack_codes(packed, bits, n_groups * group_len).reshape(expected)
    kind = read_attr(g, "codebook_kind", str, path)
    if kind == "table":
        codebook = _read(g, "codebook", path, dtype=dtype, shape=(n_groups, k))
    elif kind == "affine":
        scale = _read(g, "scale", path, dtype=dtype, shape=(n_groups,))
        offset = _read(g, "offset", path, dtype=dtype, shape=(n_groups,))
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
