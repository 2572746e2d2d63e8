"""CUDA kernel tests: run in their own process, under the simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is
imported) or on a real GPU. Without either, every test here is skipped cleanly."""
import pytest

from fmq_np._numba import cuda_available


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU and NUMBA_ENABLE_CUDASIM is not 1")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu():
    """The fmq_np.quant.gpu module (imported only here, so collection never needs numba.cuda)."""
    from fmq_np.quant import gpu
    return gpu
