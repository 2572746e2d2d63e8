"""The thread-count rule of local worker processes (fmq_np._workers)."""
import multiprocessing
import os

from fmq_np._workers import THREAD_VARIABLES, cpu_share, threads_per_worker


def _thread_counts():
    import numba
    return numba.config.NUMBA_NUM_THREADS, {k: os.environ.get(k) for k in THREAD_VARIABLES}


def test_spawned_workers_get_their_share_and_the_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    share = max(1, (os.cpu_count() or 1) // 2)
    with cpu_share(2), multiprocessing.get_context("spawn").Pool(1) as pool:
        numba_threads, env = pool.apply(_thread_counts)
    assert numba_threads == share
    assert env == {k: str(share) for k in THREAD_VARIABLES}
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_more_workers_than_cpus_still_get_one_thread():
    assert threads_per_worker(10 * (os.cpu_count() or 1)) == 1
    assert threads_per_worker(1) == (os.cpu_count() or 1)
