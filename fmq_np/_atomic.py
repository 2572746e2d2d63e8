"""Atomic file writes: every file fmq_np writes appears whole or not at all (:func:`atomic_path` for any writer,
:func:`write_text` and :func:`write_json` for whole texts).

The temp file of a write to ``folder/name.ext`` is ``folder/.tmp-name.ext~HOST~PID~XXXX.ext``, so a write that was
killed (``kill -9``, power loss) leaves a file that says whose it was: the next write to the same target removes
such leftovers when their process is gone (same host, untouched for :data:`STALE_SECONDS`) or when they have not
been touched for :data:`ABANDONED_SECONDS` (any host).
"""
import contextlib
import errno
import json
import os
import socket
import tempfile
import time

#: a leftover temp file of a dead process on this host is removed once it is this old (seconds since last write)
STALE_SECONDS = 60.0
#: a leftover temp file of any writer is removed once it has not been written for this long
ABANDONED_SECONDS = 24 * 3600.0
_MAX_STEM = 100          # characters of the target's name kept in its temp name (NAME_MAX is 255)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp file name beside ``path`` to write; on success fsync it and ``os.replace`` it onto ``path``.

    On any exception the temp file is removed and ``path`` is left as it was. Errors of the file system name
    ``path`` (never the hidden temp file).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory, cannot be replaced by a file", path)
    prefix = _temp_prefix(path)
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{_host()}~{os.getpid()}~", suffix=os.path.splitext(path)[1],
                                   dir=folder)
    except OSError as exc:
        raise _naming(exc, path) from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())   # mkstemp makes 0600 files; give the usual permissions
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _naming(exc, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path, text):
    """Write the str ``text`` to ``path`` as UTF-8, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path, obj, *, indent=1, default=None, end=""):
    """Write ``obj`` as JSON (``json.dumps`` with ``indent`` and ``default``) followed by ``end`` to ``path``,
    atomically; nothing is written when ``obj`` cannot be serialized."""
    write_text(path, json.dumps(obj, indent=indent, default=default) + end)


def remove_stale_temps(path, now=None):
    """Remove the temp files that killed writes to ``path`` left behind (see the module doc); returns their names."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    prefix = _temp_prefix(path)
    now = time.time() if now is None else now
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        parts = name[len(prefix):].split("~")
        full = os.path.join(folder, name)
        try:
            age = now - os.stat(full).st_mtime
        except OSError:
            continue
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        mine = parts[0] == _host()
        if age > ABANDONED_SECONDS or (mine and age > STALE_SECONDS and not _alive(int(parts[1]))):
            with contextlib.suppress(OSError):
                os.remove(full)
                removed.append(full)
    return removed


def _temp_prefix(path):
    return f".tmp-{os.path.basename(os.fspath(path))[:_MAX_STEM]}~"


def _host():
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:64] or "host"


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # exists, owned by someone else
        return True
    return True


def _naming(exc, path):
    """The same OSError, about ``path`` instead of the temp file."""
    return type(exc)(exc.errno, exc.strerror or str(exc), path)


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
