"""Local worker processes that share this machine's CPUs: the one home of the environment that ``--workers N``
starts its processes with wherever it is offered (``fmq-np quantize``, ``fmq-np reproduce``): a share of the CPUs
as thread counts, and :mod:`fmq_np._allocator`'s malloc settings.

Numba and the BLAS libraries read their thread counts from the environment once, when a process first imports them,
and glibc reads its malloc settings when the process starts, so they have to be in ``os.environ`` when each worker
is spawned; setting them inside the worker would be too late.
"""
import contextlib
import os

from ._allocator import ENVIRONMENT as MALLOC_ENVIRONMENT

#: the variables Numba, OpenBLAS, OpenMP and MKL read their thread counts from
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def threads_per_worker(workers):
    """This machine's CPUs shared equally among ``workers`` processes (at least 1 thread each)."""
    return max(1, (os.cpu_count() or 1) // workers)


@contextlib.contextmanager
def worker_environment(workers):
    """While open, every process spawned from here uses :func:`threads_per_worker` Numba and BLAS threads and
    the allocator settings (those the user set in the environment stay); this process's environment is restored on
    exit. Open it around the creation of a process pool, and around its whole
    use where the pool starts its processes lazily (``concurrent.futures.ProcessPoolExecutor``)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES + tuple(MALLOC_ENVIRONMENT)}
    os.environ.update({k: str(threads_per_worker(workers)) for k in THREAD_VARIABLES})
    os.environ.update({k: v for k, v in MALLOC_ENVIRONMENT.items() if k not in os.environ})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
