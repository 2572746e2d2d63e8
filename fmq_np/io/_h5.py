"""Shared HDF5 plumbing: atomic writes and validated reads. Every failure a file can cause is a FormatError."""
import contextlib
import os

import h5py
import numpy as np

from .._atomic import atomic_path
from ..errors import FormatError

#: datasets larger than this many elements are refused on load (guards against absurd sizes in corrupt files)
MAX_ELEMENTS = 1 << 31


@contextlib.contextmanager
def atomic_h5(path, **file_options):
    """Yield an ``h5py.File`` (``file_options`` passed on, e.g. ``libver``) writing a temp file beside ``path``;
    on success it is fsynced and moved onto ``path``; on any exception ``path`` is left as it was."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", **file_options) as f:
        yield f


@contextlib.contextmanager
def open_h5(path):
    """Open ``path`` read-only; a missing, unreadable or non-HDF5 file raises FormatError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({_first_line(exc)})") from None
    try:
        yield f
    finally:
        f.close()


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
        raise FormatError(f"{path}: attribute {name!r} on {obj.name} should be {kind.__name__}, got {type(value).__name__}")
    return value


def check_format(f, path, expected, version, what):
    """FormatError unless the root attrs say ``format == expected`` (a file of kind ``what``) and a ``format_version``
    this code reads."""
    found = read_attr(f, "format", str, path)
    if found != expected:
        raise FormatError(f"{path}: not an fmq_np {what} (format {found!r}, expected {expected!r})")
    v = read_attr(f, "format_version", int, path)
    if v != version:
        raise FormatError(f"{path}: {expected} format_version {v} is not supported (this fmq_np reads {version})")


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
