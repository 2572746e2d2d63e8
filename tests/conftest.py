"""Shared test set-up. The CUDA-simulator tests need NUMBA_ENABLE_CUDASIM=1 before numba is imported, so they run
in their own pytest process (see README); the main run leaves tests/cuda out."""
import os

import pytest

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cuda"]


@pytest.fixture(scope="session")
def tiny_mlp_factory():
    """Build small MLP velocity models (kept tiny so training tests are quick)."""
    import fmq_np as fq

    def make(seed=0, hidden=32, depth=2):
        return fq.nn.MLPVelocity(dim=2, hidden=hidden, depth=depth, seed=seed)
    return make
