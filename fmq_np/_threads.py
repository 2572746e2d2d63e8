"""Threads that share a batch: the one home of running model work on several Python threads at once.

A U-Net's Numba kernels and small BLAS GEMMs gain little from a second thread inside one call (a training step of
the width-32 U-Net: 1.54 steps/s on one thread and on two), while two halves of the batch side by side on one
thread each go 1.7–1.85× faster (training and sampling, benchmarks/README.md). A :class:`BatchThreads` team
gives each of its threads single-threaded Numba kernels and BLAS, for the calling thread's share of the machine;
callers hand it independent parts of a batch.

The BLAS is limited per thread with OpenBLAS's ``openblas_set_num_threads_local`` (OpenBLAS 0.3.27 and later,
as bundled with NumPy 2) or MKL's ``mkl_set_num_threads_local``; where neither is found, or Numba's threading
layer is ``workqueue`` (which aborts on launches from two threads at once), :func:`batch_threads` says 1 and the
callers keep the whole batch on the calling thread.
"""
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ._numba import get_threads
from ._validate import check_int

#: per-thread BLAS thread-count setters, by library: (symbol, library file name part)
_LOCAL_SETTERS = (("openblas_set_num_threads_local", "openblas"), ("mkl_set_num_threads_local", "mkl_rt"))
_state = {}
_lock = threading.Lock()


def _loaded_libraries():
    """Paths of the shared libraries mapped into this process (Linux: /proc/self/maps; elsewhere none)."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({line.split()[-1] for line in f if "/" in line and ".so" in line})
    except OSError:
        return []


def _blas_local_setter():
    """The loaded BLAS's ``set_num_threads_local(int) -> int`` as a ctypes function, None when there is none."""
    import numpy  # noqa: F401  (loads the BLAS NumPy links to)
    for path in _loaded_libraries():
        name = os.path.basename(path).lower()
        for symbol, part in _LOCAL_SETTERS:
            if part in name:
                try:
                    setter = getattr(ctypes.CDLL(path), symbol)
                except (OSError, AttributeError):
                    continue
                setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
                return setter
    return None


def _threading_layer_is_safe():
    """True unless Numba's threading layer is ``workqueue`` (not safe for launches from several threads)."""
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:                # no parallel kernel has run yet: the layer is chosen at the first launch
        import numpy as np
        from .nn import kernels
        x = np.zeros((2, 2), np.float32)
        kernels.silu_fwd(x, x)
        layer = numba.threading_layer()
    return layer != "workqueue"


def _capable():
    """Whether batch threads can run here (checked once per process): a per-thread BLAS limit and a thread-safe
    Numba threading layer."""
    with _lock:
        if "capable" not in _state:
            setter = _blas_local_setter()
            _state["setter"] = setter
            _state["capable"] = setter is not None and _threading_layer_is_safe()
        return _state["capable"]


def batch_threads(threads=None, model=None):
    """How many threads may share a batch of ``model``: ``threads`` (None: Numba's current thread count, i.e.
    ``FMQ_NP_THREADS`` or all cores) where this process can give each thread single-threaded BLAS and Numba
    kernels, else 1; 1 as well for a ``model`` that is no fmq_np Module (its inference may cache, and it cannot be
    replicated for training)."""
    from .nn import Module
    threads = get_threads() if threads is None else check_int("threads", threads, 1)
    if threads <= 1 or (model is not None and not isinstance(model, Module)) or not _capable():
        return 1
    return threads


def _single_threaded():
    """Pool initializer: this thread's Numba kernels and BLAS calls run on this thread alone."""
    import numba
    numba.set_num_threads(1)
    _state["setter"](1)


class BatchThreads:
    """``n`` worker threads with single-threaded Numba kernels and BLAS (``n`` from :func:`batch_threads`, > 1).

    Use as a context manager; :meth:`map` runs ``fn`` on each item, spread over the threads, and returns the
    results in order (an exception in any call is raised here once all have finished). Leaving the block by an
    exception (Ctrl-C included) drops the items not yet started.
    """

    def __init__(self, n):
        self.n = int(n)
        self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="fmq_np-batch", initializer=_single_threaded)

    def map(self, fn, items):
        futures = [self._pool.submit(fn, item) for item in items]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def close(self, cancel=False):
        """Wait for the running calls; with ``cancel``, drop the queued ones."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(cancel=exc_type is not None)
        return False


def run_batches(fn, batches, threads=None, model=None):
    """Call ``fn(rows)`` for every slice in ``batches``: on a :class:`BatchThreads` team of
    ``min(len(batches), batch_threads(threads, model))`` threads, or in order on this thread when that is 1 (what
    ``fn`` computes for a batch must not depend on which thread runs it). Returns the results in order."""
    team_size = min(len(batches), batch_threads(threads, model))
    if team_size <= 1:
        return [fn(rows) for rows in batches]
    with BatchThreads(team_size) as team:
        return team.map(fn, batches)


def split(n, parts):
    """``parts`` contiguous slices covering range(n), sizes differing by at most 1 (the first ones larger)."""
    base, extra = divmod(int(n), int(parts))
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (i < extra)
        bounds.append(slice(start, stop))
        start = stop
    return bounds
