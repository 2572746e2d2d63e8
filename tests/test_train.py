"""fit(): learning, reproducibility, checkpoint/resume, interruption, bad input."""
import os
import signal
import threading

import numpy as np
import pytest

import fmq_np as fq
from fmq_np import FmqError, FormatError, InputError


@pytest.fixture(scope="module")
def moons():
    return fq.datasets.load("moons", n=2000, seed=0)


def test_loss_decreases(moons, tiny_mlp_factory):
    m = tiny_mlp_factory()
    hist = fq.flow.fit(m, moons, steps=300, batch_size=128, lr=3e-3, seed=0, progress=False)
    assert len(hist.loss) == 300 and hist.step[-1] == 300
    assert np.mean(hist.loss[-50:]) < 0.8 * np.mean(hist.loss[:20])


def test_seeded_runs_are_bitwise_identical(moons, tiny_mlp_factory):
    runs = []
    for _ in range(2):
        m = tiny_mlp_factory(seed=3)
        hist = fq.flow.fit(m, moons, steps=40, batch_size=64, lr=1e-3, seed=7, times="skewed", progress=False)
        runs.append((hist.loss, {k: v.copy() for k, v in m.parameters().items()}))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        assert np.array_equal(runs[0][1][k], runs[1][1][k])


def test_resume_matches_an_uninterrupted_run(moons, tiny_mlp_factory, tmp_path):
    kw = dict(batch_size=64, lr=2e-3, seed=1, schedule="linear", warmup=5, progress=False)
    full = tiny_mlp_factory()
    ref = fq.flow.fit(full, moons, steps=60, **kw)
    ckpt = str(tmp_path / "run.h5")
    crashed = tiny_mlp_factory()
    with pytest.raises(RuntimeError, match="simulated crash"):
        _crash_after(crashed, moons, ckpt, kw, crash_step=55)   # the checkpoint of step 50 survives
    resumed = tiny_mlp_factory(seed=99)   # other init (and zeros): everything must come from the checkpoint
    for v in resumed.parameters().values():
        v[...] = 0
    hist = fq.flow.fit(resumed, moons, steps=60, checkpoint=ckpt, checkpoint_every=25, resume=True, **kw)
    assert hist.loss == ref.loss
    for k, v in full.parameters().items():
        assert np.array_equal(v, resumed.parameters()[k]), k


def test_resuming_a_finished_run_leaves_its_checkpoint_untouched(moons, tiny_mlp_factory, tmp_path):
    kw = dict(steps=20, batch_size=32, lr=1e-3, seed=0, progress=False)
    ckpt = tmp_path / "done.h5"
    trained = tiny_mlp_factory()
    fq.flow.fit(trained, moons, checkpoint=str(ckpt), **kw)
    before, stamp = ckpt.read_bytes(), ckpt.stat().st_mtime_ns
    again = tiny_mlp_factory(seed=5)
    hist = fq.flow.fit(again, moons, checkpoint=str(ckpt), resume=True, **kw)
    assert ckpt.read_bytes() == before and ckpt.stat().st_mtime_ns == stamp
    assert len(hist.loss) == 20
    for k, v in trained.parameters().items():
        assert np.array_equal(v, again.parameters()[k]), k


def _crash_after(model, data, ckpt, kw, crash_step):
    """Run fit but raise inside the optimiser at ``crash_step`` (the checkpoint at step 50 survives)."""
    real_step = fq.nn.AdamW.step
    calls = {"n": 0}

    def failing(self, grads, lr=None):
        calls["n"] += 1
        if calls["n"] == crash_step:
            raise RuntimeError("simulated crash")
        return real_step(self, grads, lr)
    fq.nn.AdamW.step = failing
    try:
        fq.flow.fit(model, data, steps=60, checkpoint=ckpt, checkpoint_every=25, **kw)
    finally:
        fq.nn.AdamW.step = real_step


def test_checkpoint_holds_ema_weights_and_loads(moons, tiny_mlp_factory, tmp_path):
    m = tiny_mlp_factory()
    path = str(tmp_path / "c.h5")
    fq.flow.fit(m, moons, steps=30, batch_size=32, lr=1e-3, seed=0, ema_decay=0.9, checkpoint=path,
                progress=False)
    loaded = fq.io.load(path)
    for k, v in m.parameters().items():      # after fit the model holds the EMA weights, as the file does
        assert np.array_equal(v, loaded.parameters()[k])


def test_ctrl_c_saves_a_checkpoint_after_the_current_step(moons, tiny_mlp_factory, tmp_path):
    m = tiny_mlp_factory()
    path = str(tmp_path / "int.h5")
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt, match="resume from"):
        fq.flow.fit(m, moons, steps=10_000_000, batch_size=32, lr=1e-3, seed=0, checkpoint=path,
                    checkpoint_every=10_000_000, progress=False)
    timer.cancel()
    state = fq.io.checkpoint.load_train_state(path, m)
    assert state["step"] >= 1 and len(state["history"]["loss"]) == state["step"]


def test_ot_coupling_trains(moons, tiny_mlp_factory):
    m = tiny_mlp_factory()
    hist = fq.flow.fit(m, moons, steps=50, batch_size=64, lr=3e-3, seed=0, coupling="ot", progress=False)
    assert np.isfinite(hist.loss).all()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_bad_inputs(moons, tiny_mlp_factory, tmp_path):
    m = tiny_mlp_factory()
    with pytest.raises(InputError, match="shape"):
        fq.flow.fit(m, np.zeros((10, 3), np.float32), steps=1)
    bad = moons.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fq.flow.fit(m, bad, steps=1)
    with pytest.raises(InputError, match="steps"):
        fq.flow.fit(m, moons, steps=0)
    with pytest.raises(InputError, match="time sampler"):
        fq.flow.fit(m, moons, steps=1, times="beta")
    with pytest.raises(InputError, match="coupling must be one of ot, got 'sinkhorn'"):
        fq.flow.fit(m, moons, steps=1, coupling="sinkhorn")
    with pytest.raises(FmqError, match="diverged"):
        fq.flow.fit(m, moons * 1e30, steps=5, lr=1e-3, progress=False)
    other = fq.nn.MLPVelocity(dim=2, hidden=16, depth=1, seed=0)
    path = str(tmp_path / "c.h5")
    fq.flow.fit(other, moons, steps=2, checkpoint=path, progress=False)
    with pytest.raises(FormatError, match="different model"):
        fq.flow.fit(m, moons, steps=4, checkpoint=path, resume=True, progress=False)


def test_sample_uses_seeded_noise_and_x0(moons, tiny_mlp_factory):
    m = tiny_mlp_factory()
    a = fq.flow.sample(m, n=64, solver="euler", steps=4, seed=2, batch_size=10, progress=False)
    b = fq.flow.sample(m, x0=fq.flow.noise(m, 64, seed=2), solver="euler", steps=4, batch_size=10, progress=False)
    c = fq.flow.sample(m, n=64, solver="euler", steps=4, seed=2, progress=False)   # one batch: BLAS may round
    assert a.shape == (64, 2) and a.dtype == np.float32
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError):
        fq.flow.sample(m, n=4, solver="nope")
    with pytest.raises(InputError):
        fq.flow.sample(m, x0=np.zeros((4, 5), np.float32))
