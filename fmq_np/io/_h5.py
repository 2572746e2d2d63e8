"""Shared HDF5 plumbing: atomic writes and validated reads. Every failure a file can cause is a FormatError.

This module is the one place that maps h5py / libhdf5 errors to :class:`~fmq_np.errors.FormatError`: whatever an
h5py call raises inside ``with open_h5(path) as f:`` (OSError, RuntimeError, KeyError, ValueError, TypeError, ...)
leaves the block as a FormatError naming the file.

New files use the HDF5 1.10 object format (:data:`LIBVER`): its superblock, object headers, B-trees and heaps carry
checksums, so a damaged byte is detected instead of being parsed as other content; strings are stored as
fixed-length attributes (:func:`set_str`), inside the checksummed object header, not in the unchecksummed global
heap that variable-length strings use. Files in the older 'earliest' format still load.
"""
import contextlib
import mmap
import os

import h5py
import numpy as np

from .._atomic import atomic_path
from ..errors import FmqError, FormatError

#: datasets larger than this many elements are refused on load (guards against absurd sizes in corrupt files)
MAX_ELEMENTS = 1 << 31
#: HDF5 object-format bounds of every file fmq_np writes: 1.10 headers carry checksums, readable by HDF5 >= 1.10
LIBVER = ("v110", "v114")
#: what h5py and libhdf5 raise on damaged or unexpected file content
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, OverflowError, SystemError)
_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@contextlib.contextmanager
def atomic_h5(path, **file_options):
    """Yield an ``h5py.File`` (``file_options`` passed on, e.g. ``libver``) writing a temp file beside ``path``;
    on success it is fsynced and moved onto ``path``; on any exception ``path`` is left as it was."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", **file_options) as f:
        yield f


@contextlib.contextmanager
def open_h5(path):
    """Open ``path`` read-only and yield the ``h5py.File``. A missing, unreadable or non-HDF5 file raises
    FormatError naming it, and so does any h5py error (:data:`H5_ERRORS`) raised in the ``with`` block; FmqErrors
    pass through unchanged."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, not an HDF5 file")
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    check_global_heaps(path)
    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({_first_line(exc)})") from None
    try:
        yield f
    except FmqError:
        raise
    except H5_ERRORS as exc:
        raise FormatError(f"{path}: corrupt HDF5 file ({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        with contextlib.suppress(*H5_ERRORS):
            f.close()


def check_global_heaps(path):
    """FormatError when a global heap collection of ``path`` is damaged in a way libhdf5 does not check.

    Global heaps hold variable-length data (the strings of older fmq_np checkpoints and of many other tools' files)
    and carry no checksum in any HDF5 format. libhdf5 (measured: 2.0.0) walks a collection's objects by their
    stored sizes and loops forever when a free-space object has size 0 (e.g. a zeroed block), so every collection
    (signature ``GCOL``, version 1) is walked here first the same way: each object must advance and fit inside its
    collection. A file without global heaps costs one scan for the signature (memory-mapped).
    """
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < 64:
                return                              # too short for HDF5: h5py refuses it
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
                _check_collections(raw, path)
    except (OSError, ValueError):                   # unreadable or not mappable: h5py reports it
        return


def _check_collections(raw, path):
    lengths = _size_of_lengths(raw)
    if lengths is None:
        return                                      # no superblock: h5py refuses it
    header, obj_header, size = _align8(8 + lengths), 8 + lengths, len(raw)
    at = raw.find(b"GCOL")
    while at >= 0:
        if raw[at + 4:at + 8] == b"\x01\x00\x00\x00" and at + header <= size:
            length = int.from_bytes(raw[at + 8:at + 8 + lengths], "little")
            if header <= length <= size - at:
                _walk_collection(raw, at, at + header, at + length, lengths, obj_header, path)
        at = raw.find(b"GCOL", at + 4)


def _walk_collection(raw, start, p, end, lengths, obj_header, path):
    """libhdf5's walk over the objects of the collection at ``start`` (H5HG__cache_heap_deserialize)."""
    while p < end:
        if p + obj_header > end:
            return                                  # a tail too small for an object header is free space
        index = int.from_bytes(raw[p:p + 2], "little")
        obj_size = int.from_bytes(raw[p + 8:p + 8 + lengths], "little")
        need = obj_header + _align8(obj_size) if index else obj_size
        if need == 0 or p + need > end:
            raise FormatError(f"{path}: damaged global heap (object {index} at byte {p} of the collection at byte "
                              f"{start} has size {obj_size})")
        p += need


def _size_of_lengths(raw):
    """The superblock's 'size of lengths' (at byte 0, 512, 1024, ... of the file), None without a superblock."""
    base = 0
    while base + 16 <= len(raw):
        if raw[base:base + 8] == _SIGNATURE:
            version = raw[base + 8]
            lengths = raw[base + 14] if version in (0, 1) else raw[base + 10]
            return lengths if lengths in (2, 4, 8, 16, 32) else None
        base = 512 if base == 0 else 2 * base
    return None


def _align8(n):
    return (n + 7) // 8 * 8


def set_str(obj, name, value):
    """Store ``value`` (str) as a fixed-length UTF-8 string attribute of an h5py object (kept in its checksummed
    object header; :func:`read_attr` gives it back as str)."""
    data = value.encode("utf-8")
    obj.attrs.create(name, np.array(data, dtype=f"S{max(1, len(data))}"))


def read_attr(obj, name, kind, path):
    """Attribute ``name`` of an h5py object, checked to be of Python type ``kind`` (str, int, float)."""
    try:
        value = obj.attrs[name]
    except KeyError:
        raise FormatError(f"{path}: attribute {name!r} missing on {obj.name}") from None
    except Exception as exc:  # h5py raises several types on damaged attribute storage
        raise FormatError(f"{path}: attribute {name!r} on {obj.name} unreadable ({_first_line(exc)})") from None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise FormatError(f"{path}: attribute {name!r} on {obj.name} should be {kind.__name__}, "
                          f"got {type(value).__name__}")
    return value


def check_format(f, path, expected, version, what):
    """FormatError unless the root attrs say ``format == expected`` (a file of kind ``what``) and a ``format_version``
    this code reads: ``version``, an int or a tuple of them. Returns the file's version."""
    found = read_attr(f, "format", str, path)
    if found != expected:
        raise FormatError(f"{path}: not an fmq_np {what} (format {found!r}, expected {expected!r})")
    versions = version if isinstance(version, tuple) else (version,)
    v = read_attr(f, "format_version", int, path)
    if v not in versions:
        raise FormatError(f"{path}: {expected} format_version {v} is not supported (this fmq_np reads "
                          f"{', '.join(map(str, versions))})")
    return v


def read_dataset(f, name, path, dtype=None, shape=None):
    """Read dataset ``name`` fully, checking existence, size limit, dtype and shape; FormatError on any problem."""
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise FormatError(f"{path}: dataset {name!r} missing")
    if obj.size > MAX_ELEMENTS:
        raise FormatError(f"{path}: dataset {name!r} has an absurd size {obj.shape}")
    if dtype is not None and obj.dtype != np.dtype(dtype):
        raise FormatError(f"{path}: dataset {name!r} has dtype {obj.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and tuple(obj.shape) != tuple(shape):
        raise FormatError(f"{path}: dataset {name!r} has shape {obj.shape}, expected {tuple(shape)}")
    try:
        return obj[()]
    except Exception as exc:  # checksum (fletcher32) failures, truncated chunks, filter errors
        raise FormatError(f"{path}: dataset {name!r} is corrupt ({_first_line(exc)})") from None


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
