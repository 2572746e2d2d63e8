"""fit's EMA warm-up: the average after k steps, rebuilt from the raw iterates of an EMA-free run."""
import numpy as np
import pytest

import fmq_np as fq


def _params(m):
    return {k: v.astype(np.float64) for k, v in m.parameters().items()}


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_after_two_steps(warmup):
    data = fq.datasets.load("moons", n=500, seed=0)
    kw = dict(batch_size=32, lr=1e-2, seed=4, progress=False)
    init = _params(fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0))
    raw = []
    for steps in (1, 2):           # constant lr: the raw iterates do not depend on the step budget
        m = fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0)
        fq.flow.fit(m, data, steps=steps, ema_decay=0.0, **kw)
        raw.append(_params(m))
    m = fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0)
    fq.flow.fit(m, data, steps=2, ema_decay=0.999, ema_warmup=warmup, **kw)
    d1, d2 = (2 / 11, 3 / 12) if warmup else (0.999, 0.999)
    for k, v in m.parameters().items():
        e1 = d1 * init[k] + (1 - d1) * raw[0][k]
        e2 = d2 * e1 + (1 - d2) * raw[1][k]
        np.testing.assert_allclose(v, e2, rtol=1e-5, atol=1e-6)
        assert not np.allclose(raw[1][k], init[k], atol=1e-4)    # the steps moved the weights: the check has teeth
