"""Import named arrays written by other tools — no torch, no code from the file — and write safetensors files.

:func:`read_arrays` reads

* ``.npz``: every ``.npy`` member (``allow_pickle=False``; headers checked before any allocation; CRC checked);
* ``.safetensors``: own parser of the format (8-byte little-endian header length, JSON header of
  ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` plus optional ``"__metadata__"``, then the data);
  the optional ``safetensors`` package is not needed; a name given twice in the header is refused;
* ``.h5`` / ``.hdf5``: every float dataset by its path (``"encoder/conv1/kernel"``); an fmq_np quantized file gives
  its dequantized arrays;
* ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin``: PyTorch checkpoints in torch's zip format (``torch.save`` since 1.6),
  through a restricted unpickler that constructs nothing but tensors and plain containers
  (:mod:`fmq_np.io.torch_pth`): every tensor, nesting flattened into dotted names (``"model.conv.weight"``).

npz and safetensors give every numeric (bool / int / uint / float) array in the file's order; safetensors and torch
BF16 become float32 (exact), the other dtypes are kept. ``key`` picks one part of the file: the sub-dict of a torch
checkpoint (``key="model"``), or for the other formats the arrays named ``<key>.<rest>`` (``<key>/<rest>`` in HDF5),
renamed ``<rest>``. Anything malformed — wrong magic or header, truncated data, shapes that do not match byte counts,
overlapping or out-of-file offsets, absurd sizes, views outside their storage, pickles that name code — raises
FormatError naming the file (and the tensor), never a crash and never a huge allocation.
"""
import json
import os
import struct
import zipfile
import zlib

import numpy as np

from .._atomic import atomic_path
from ..errors import FormatError, InputError
from ._h5 import MAX_ELEMENTS, open_h5

#: safetensors dtype name → NumPy dtype (little-endian). BF16 is read as uint16 and widened to float32.
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items() if k != "BF16"}
#: the safetensors reference implementation refuses headers above 100 MB; so do we
_ST_MAX_HEADER = 100_000_000
_NUMERIC_KINDS = "biuf"


def read_arrays(path, key=None):
    """``dict[str, ndarray]`` of the named arrays in ``path``; runs no code from the file.

    ``path``: .npz, .safetensors (or a sharded checkpoint's ``*.safetensors.index.json``), .h5/.hdf5, or a torch zip
    checkpoint .pth/.pt/.ckpt/.bin (see the module doc).
    ``key``: optional part of the file to read. For a torch checkpoint, the entry of the top-level dict to read
    (``"model"`` for flow_matching's ``{"model", "optimizer", "args", ...}``, ``"state_dict"`` for Lightning; a
    dotted path descends further); without it every tensor comes back, nesting flattened into dotted names
    (``"model.input_blocks.0.0.weight"``, ``"optimizer.state.0.exp_avg"``) and non-tensor entries dropped. For the
    other formats, the arrays named ``key + "." + rest`` (or ``key + "/" + rest`` in HDF5), renamed ``rest``.
    flow_matching's EMA weights (``shadow_params.<i>``): :func:`fmq_np.io.ema_to_names` maps them to names.

    Raises FormatError for a missing or malformed file, InputError for an unknown file type or a ``key`` the file
    does not hold.
    """
    from .torch_pth import TORCH_EXTENSIONS, read_pth
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if path.lower().endswith(ST_INDEX_SUFFIX):
        out = _read_st_sharded(path)
        return out if key is None else _pick(out, key, path, ".")
    if ext not in (".npz", ".safetensors", ".h5", ".hdf5") + TORCH_EXTENSIONS:
        raise InputError(f"{path}: unknown file type {ext!r}; expected .npz, .safetensors, .h5, .hdf5 or a torch "
                         f"checkpoint ({', '.join(TORCH_EXTENSIONS)})")
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    if ext in TORCH_EXTENSIONS:
        return read_pth(path, key=key)
    if ext == ".npz":
        out = _read_npz(path)
    elif ext == ".safetensors":
        out = _read_safetensors(path)
    else:
        out = _read_h5(path)
    return out if key is None else _pick(out, key, path, "/" if ext in (".h5", ".hdf5") else ".")


def _pick(arrays, key, path, sep):
    """The arrays under ``key + sep``, renamed without that prefix (an array named exactly ``key`` keeps it)."""
    if not isinstance(key, str) or not key:
        raise InputError(f"key must be a non-empty str, got {key!r}")
    prefix = key.rstrip(sep) + sep
    out = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
    if key in arrays:
        out = {key: arrays[key], **out}
    if not out:
        raise InputError(f"{path}: no arrays under {key!r} (names start e.g. {', '.join(list(arrays)[:3]) or 'none'})")
    return out


# ------------------------------------------------------------------------------------------------------ safetensors
def write_safetensors(path, arrays, metadata=None):
    """Write ``arrays`` (``dict[str, ndarray]``, numeric dtypes) to a .safetensors file, atomically.

    ``metadata``: optional ``dict[str, str]`` stored as ``"__metadata__"``. Tensors are laid out in the given order;
    the header is space-padded to a multiple of 8 bytes, as the reference implementation does.
    """
    header, offset, blobs = {}, 0, []
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(metadata).items()):
            raise InputError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    for name, a in arrays.items():
        a = np.asarray(a)
        if not isinstance(name, str) or name == "__metadata__":
            raise InputError(f"invalid safetensors tensor name {name!r}")
        if a.dtype.newbyteorder("<") not in _ST_NAMES:
            raise InputError(f"tensor {name!r}: dtype {a.dtype} cannot be stored in safetensors")
        data = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _ST_NAMES[a.dtype.newbyteorder("<")], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for data in blobs:
            fh.write(data)


def _read_safetensors(path):
    data_start, entries, _ = read_st_header(path)
    out = {}
    with open(path, "rb") as fh:
        for name, (dtype, shape, begin, end) in entries.items():
            fh.seek(data_start + begin)
            data = fh.read(end - begin)
            if len(data) != end - begin:
                raise FormatError(f"{path}: tensor {name!r} is truncated")
            out[name] = st_to_numpy(np.frombuffer(data, dtype=_ST_DTYPES[dtype]).reshape(shape), dtype)
    return out


def read_st_header(path):
    """The validated header of a .safetensors file: ``(data_start, {name: (dtype, shape, begin, end)},
    metadata)``; tensor ``name``'s bytes are ``[data_start + begin, data_start + end)`` of the file, in the
    header's order (``dtype`` a safetensors name such as ``"F16"``). FormatError on anything malformed."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise FormatError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        n = struct.unpack("<Q", head)[0]
        if n < 2 or n > _ST_MAX_HEADER or 8 + n > size:
            raise FormatError(f"{path}: not a safetensors file (header length {n} for a file of {size} bytes)")
        try:
            header = json.loads(fh.read(n).decode("utf-8"), object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise FormatError(f"{path}: safetensors header gives {exc.args[0]!r} twice") from None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise FormatError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    entries = _check_st_header(header, size - 8 - n, path)
    return 8 + n, entries, dict(header.get("__metadata__", {}))


def st_to_numpy(a, dtype, copy=True):
    """Stored safetensors values ``a`` (read with ``_ST_DTYPES[dtype]``) as returned by read_arrays: BF16 widened to
    float32 (exact), other dtypes in native byte order; ``copy=False`` returns ``a`` itself when it is already that
    (a read-only memory map stays one)."""
    return _bf16_to_f32(a) if dtype == "BF16" else a.astype(a.dtype.newbyteorder("="), copy=copy)


#: the file-name ending of a sharded checkpoint's index (Hugging Face layout)
ST_INDEX_SUFFIX = ".safetensors.index.json"


def read_st_index(path):
    """The shards of a sharded safetensors checkpoint, from its index ``path`` (``*.safetensors.index.json``:
    ``{"metadata": {...}, "weight_map": {tensor: shard file name}}``) → ``{shard path: [tensor, ...]}`` in the order
    the shards are first named. Each shard's header must hold exactly the tensors the index gives it, a tensor may
    live in one shard only, and ``metadata.total_size`` (when given) must equal the tensors' bytes. FormatError
    naming the file (and tensor or shard) otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_ST_MAX_HEADER + 1)
        index = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise FormatError(f"{path}: index gives {exc.args[0]!r} twice") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{path}: not a valid safetensors index ({_first_line(exc)})") from None
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
        raise FormatError(f"{path}: safetensors index needs a non-empty \"weight_map\" of tensor -> shard file")
    folder = os.path.dirname(os.path.abspath(path))
    shards = {}
    for name, shard in wmap.items():
        if os.path.basename(shard) != shard or not shard.endswith(".safetensors"):
            raise FormatError(f"{path}: tensor {name!r}: shard {shard!r} must be a .safetensors file name in the "
                              f"index's folder")
        shards.setdefault(os.path.join(folder, shard), []).append(name)
    total = 0
    for shard, names in shards.items():
        if not os.path.isfile(shard):
            raise FormatError(f"{path}: shard {os.path.basename(shard)} (tensor {names[0]!r}) is missing")
        _, entries, _ = read_st_header(shard)
        for name in entries:
            if wmap.get(name) != os.path.basename(shard):
                where = f"the index puts it in {wmap[name]}" if name in wmap else "the index does not list it"
                raise FormatError(f"{shard}: tensor {name!r} disagrees with {os.path.basename(path)} ({where})")
        for name in names:
            if name not in entries:
                raise FormatError(f"{shard}: tensor {name!r} of {os.path.basename(path)} is not in this shard")
        total += sum(end - begin for _, _, begin, end in entries.values())
        shards[shard] = list(entries)                  # the shard's own order
    declared = (index.get("metadata") or {}).get("total_size") if isinstance(index.get("metadata"), dict) else None
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != total:
        raise FormatError(f"{path}: metadata.total_size {declared} but the shards hold {total} tensor bytes")
    return shards


def _read_st_sharded(path):
    out = {}
    for shard in read_st_index(path):
        out.update(_read_safetensors(shard))
    return out


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs):
    """json object hook: a JSON object naming a key twice is refused (json.loads would keep the last one)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _check_st_header(header, data_len, path):
    """Validated ``{name: (dtype, shape, begin, end)}``; tensors must tile the data buffer exactly, in any order."""
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError(f"{path}: safetensors __metadata__ must map str to str")
    entries = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{path}: tensor {name!r}: header entry needs exactly dtype, shape, data_offsets")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
            raise FormatError(f"{path}: tensor {name!r}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or len(shape) > 32 or not all(_is_count(d) for d in shape):
            raise FormatError(f"{path}: tensor {name!r}: invalid shape {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            raise FormatError(f"{path}: tensor {name!r}: invalid data_offsets {offsets!r}")
        count = 1
        for d in shape:
            count *= d
        begin, end = offsets
        if count > MAX_ELEMENTS:
            raise FormatError(f"{path}: tensor {name!r} has an absurd size {shape}")
        if end < begin or end - begin != count * np.dtype(_ST_DTYPES[dtype]).itemsize:
            raise FormatError(f"{path}: tensor {name!r}: shape {shape} of {dtype} does not match its "
                              f"{end - begin} bytes")
        entries[name] = (dtype, tuple(shape), begin, end)
    cursor = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != cursor:
            raise FormatError(f"{path}: tensor {name!r}: data_offsets leave a gap or overlap at byte {cursor}")
        cursor = end
    if cursor > data_len:
        cut = min((e for e in entries.items() if e[1][3] > data_len), key=lambda kv: kv[1][2])[0]
        raise FormatError(f"{path}: tensor {cut!r} is truncated (tensors cover {cursor} data bytes, the file holds "
                          f"{data_len})")
    if cursor != data_len:
        raise FormatError(f"{path}: tensors cover {cursor} data bytes but the file holds {data_len} (truncated?)")
    return entries


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 62


def _bf16_to_f32(a):
    """bfloat16 bits (uint16) → float32, exactly (bfloat16 is the top half of a float32)."""
    return (a.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(a):
    """float32 → bfloat16 bits (uint16), rounded to nearest even (as torch does); exact on values that came from
    bfloat16. Finite values only (NaN/Inf are not rounded specially)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)


# ---------------------------------------------------------------------------------------------------------- npz
def _read_npz(path):
    return dict(iter_npz(path))


def iter_npz(path):
    """``(name, array)`` of every numeric .npy member of ``path``, one member read at a time (validated as
    :func:`read_arrays` does; FormatError naming the file and array)."""
    seen = set()
    try:
        with zipfile.ZipFile(path) as z:
            declared = _zip_entries_declared(path)
            if declared is not None and declared != len(z.infolist()):
                raise FormatError(f"{path}: zip directory lists {len(z.infolist())} members, its end record "
                                  f"{declared}")
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise FormatError(f"{path}: member {info.filename!r} is not a .npy array")
                name = info.filename[:-4]
                if name in seen:
                    raise FormatError(f"{path}: array {name!r} appears twice")
                seen.add(name)
                with z.open(info) as member:
                    a = _read_npy_member(member, info.file_size, f"{path}: array {name!r}")
                    if member.read(1):           # also makes zipfile verify the member's CRC-32
                        raise FormatError(f"{path}: array {name!r} has trailing bytes")
                if a.dtype.kind in _NUMERIC_KINDS:
                    yield name, a
                del a
    except FormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError, NotImplementedError,
            RuntimeError) as exc:         # RuntimeError: a flipped "encrypted" flag
        raise FormatError(f"{path}: not a readable .npz file ({_first_line(exc)})") from None


def _zip_entries_declared(path):
    """Member count announced by the zip end record (None for zip64), to catch a damaged central directory that
    zipfile would read as fewer members."""
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - (1 << 16) - 22))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 12 > len(tail):
        return None
    count = struct.unpack("<H", tail[at + 10:at + 12])[0]
    return None if count == 0xFFFF else count


def _read_npy_member(member, file_size, label):
    """One .npy stream: header checked against the member's size before the data is read."""
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(member)
    else:
        raise FormatError(f"{label}: unsupported .npy version {version}")
    if dtype.hasobject:
        raise FormatError(f"{label}: object arrays are refused (they would need pickle)")
    count = 1
    for d in shape:
        count *= d
    if count > MAX_ELEMENTS or count * dtype.itemsize != file_size - member.tell():
        raise FormatError(f"{label}: shape {shape} of {dtype} does not match its {file_size - member.tell()} bytes")
    data = member.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise FormatError(f"{label}: truncated data")
    a = np.frombuffer(data, dtype=dtype)
    a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
    return a.astype(dtype.newbyteorder("="), order="C")        # a writeable, native-order copy


# ---------------------------------------------------------------------------------------------------------- HDF5
def _read_h5(path):
    if is_quantized_h5(path):
        from .quantized import load_quantized
        return load_quantized(path).dequantize()
    return dict(iter_h5(path))


def is_quantized_h5(path):
    """True when ``path`` is an fmq_np quantized file (``format == "fmq_np.quantized"``)."""
    with open_h5(path) as f:
        fmt = f.attrs.get("format")
        return isinstance(fmt, (bytes, str)) and _text(fmt) == "fmq_np.quantized"


def iter_h5(path):
    """``(path in the file, array)`` of every float dataset of an HDF5 file, one dataset read at a time."""
    with open_h5(path) as f:
        try:
            names = []
            f.visititems(lambda name, obj: names.append(name) if _is_float_dataset(obj) else None)
            for name in names:
                ds = f[name]
                if ds.size > MAX_ELEMENTS:
                    raise FormatError(f"{path}: dataset {name!r} has an absurd size {ds.shape}")
                a = ds[()]
                yield name, np.asarray(a, dtype=a.dtype.newbyteorder("="))
                del a
        except FormatError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise FormatError(f"{path}: unreadable HDF5 content ({_first_line(exc)})") from None


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _is_float_dataset(obj):
    import h5py
    return isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.dtype.itemsize in (2, 4, 8)


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
