"""The environment of fmq_np's own processes: worker thread shares (fmq_np._workers) and malloc settings
(fmq_np._allocator)."""
import multiprocessing
import os
import subprocess
import sys

import pytest

from fmq_np._allocator import ENVIRONMENT as MALLOC_ENVIRONMENT
from fmq_np._workers import THREAD_VARIABLES, threads_per_worker, worker_environment


def _thread_counts():
    import numba
    return numba.config.NUMBA_NUM_THREADS, {k: os.environ.get(k) for k in THREAD_VARIABLES + tuple(MALLOC_ENVIRONMENT)}


def test_spawned_workers_get_their_share_and_the_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    for k in MALLOC_ENVIRONMENT:
        monkeypatch.delenv(k, raising=False)
    share = max(1, (os.cpu_count() or 1) // 2)
    with worker_environment(2), multiprocessing.get_context("spawn").Pool(1) as pool:
        numba_threads, env = pool.apply(_thread_counts)
    assert numba_threads == share
    assert env == {**{k: str(share) for k in THREAD_VARIABLES}, **MALLOC_ENVIRONMENT}
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
    assert not any(k in os.environ for k in MALLOC_ENVIRONMENT)


def test_a_malloc_setting_the_user_made_is_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    with worker_environment(2), multiprocessing.get_context("spawn").Pool(1) as pool:
        _, env = pool.apply(_thread_counts)
    assert env["MALLOC_MMAP_THRESHOLD_"] == "131072"


def test_more_workers_than_cpus_still_get_one_thread():
    assert threads_per_worker(10 * (os.cpu_count() or 1)) == 1
    assert threads_per_worker(1) == (os.cpu_count() or 1)


_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from fmq_np._allocator import keep_freed_memory
    assert keep_freed_memory()
np.ones(10 << 20, np.float32)                     # 40 MB, allocated, touched and freed once before counting
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    np.ones(10 << 20, np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="malloc settings are glibc's")
def test_kept_memory_is_reused_instead_of_faulted_in_again():
    """A 40 MB array freed and allocated again: with the settings it comes back from the heap (no page faults);
    without them every allocation maps and faults in fresh pages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                                       check=True, env=env).stdout) for mode in ("default", "keep")}
    assert faults["keep"] < 100 < faults["default"]
