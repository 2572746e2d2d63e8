"""Batch threads: a batch split over threads gives the whole batch's gradient and the same samples."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fmq_np as fq
from fmq_np import _threads
from fmq_np.errors import InputError


def _unet(seed=0):
    return fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2), groups=4, seed=seed)


needs_batch_threads = pytest.mark.skipif(_threads.batch_threads(2) == 1,
                                         reason="no per-thread BLAS limit or a workqueue Numba layer here")


@given(n=st.integers(0, 200), parts=st.integers(1, 9))
@settings(max_examples=60, deadline=None)
def test_split_covers_the_range_in_balanced_contiguous_parts(n, parts):
    slices = _threads.split(n, parts)
    assert len(slices) == parts
    assert [i for s in slices for i in range(n)[s]] == list(range(n))
    sizes = [len(range(n)[s]) for s in slices]
    assert max(sizes) - min(sizes) <= 1


def test_replica_shares_parameters_and_keeps_its_own_gradients_and_caches():
    model = _unet()
    twin = model.replica()
    for (name, p), (name2, q) in zip(model.parameters().items(), twin.parameters().items()):
        assert name == name2 and p is q
    for g, h in zip(model.gradients().values(), twin.gradients().values()):
        assert g is not h
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 1, 8, 8), dtype=np.float32), rng.random(4, dtype=np.float32)
    np.testing.assert_array_equal(twin(x, t), model(x, t))
    model.parameters()["conv_out.bias"][...] += 1.0          # an in-place update of the model reaches the twin
    np.testing.assert_array_equal(twin(x, t), model(x, t))
    twin.forward(x[:2], t[:2])                                # the twin's cache does not touch the model's
    assert model.conv_in.cached_input() is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_a_bad_thread_count_is_an_input_error_naming_it(bad):
    with pytest.raises(InputError, match="threads"):
        fq.flow.sample(_unet(), n=2, solver="euler", steps=1, threads=bad, progress=False)


@needs_batch_threads
def test_a_split_training_step_has_the_whole_batch_gradient():
    rng = np.random.default_rng(1)
    xt = rng.standard_normal((40, 1, 8, 8), dtype=np.float32)
    t = rng.random(40, dtype=np.float32)
    target = rng.standard_normal((40, 1, 8, 8), dtype=np.float32)
    results = []
    for threads in (1, 2):
        model = _unet().astype(np.float64)
        opt = fq.nn.AdamW(model.parameters(), lr=1e-3)
        with fq.flow.BatchStep(model, opt, batch_size=40, threads=threads) as step:
            assert len(step.replicas) == threads
            loss = step(xt.astype(np.float64), t.astype(np.float64), target.astype(np.float64), lr=1e-3)
        results.append((loss, {k: g.copy() for k, g in model.gradients().items()},
                        {k: p.copy() for k, p in model.parameters().items()}))
    (loss1, grads1, params1), (loss2, grads2, params2) = results
    assert loss2 == pytest.approx(loss1, rel=1e-12)
    for k in grads1:
        np.testing.assert_allclose(grads2[k], grads1[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(params2[k], params1[k], rtol=1e-9, atol=1e-12, err_msg=k)


@needs_batch_threads
def test_fit_on_two_threads_follows_the_one_thread_run():
    data = np.random.default_rng(2).standard_normal((64, 1, 8, 8)).astype(np.float32)
    params = []
    for threads in (1, 2):
        model = _unet()
        history = fq.flow.fit(model, data, steps=3, batch_size=32, lr=1e-3, ema_decay=0.0, progress=False,
                              threads=threads)
        params.append((history.loss, model.parameters()))
    np.testing.assert_allclose(params[1][0], params[0][0], rtol=1e-4)
    for k, p in params[0][1].items():
        np.testing.assert_allclose(params[1][1][k], p, rtol=1e-3, atol=1e-5, err_msg=k)


@needs_batch_threads
@pytest.mark.parametrize("solver,steps", [("heun2", 3), ("dopri5", 50)])
def test_samples_do_not_depend_on_the_thread_count(solver, steps):
    model = _unet(seed=3)
    x0 = fq.flow.noise(model, 10, seed=4)
    one = fq.flow.sample(model, x0=x0, solver=solver, steps=steps, batch_size=3, threads=1, progress=False)
    two = fq.flow.sample(model, x0=x0, solver=solver, steps=steps, batch_size=3, threads=2, progress=False)
    np.testing.assert_array_equal(two, one)


@needs_batch_threads
def test_team_threads_run_single_threaded_kernels_and_pass_errors_on():
    import numba

    def threads_seen(_):
        return numba.get_num_threads()

    def fails(i):
        if i == 1:
            raise InputError("part 1 is bad")
        return i

    with _threads.BatchThreads(2) as team:
        assert team.map(threads_seen, range(4)) == [1, 1, 1, 1]
        with pytest.raises(InputError, match="part 1 is bad"):
            team.map(fails, range(3))


@needs_batch_threads
def test_image_features_do_not_depend_on_the_thread_count():
    net = fq.nn.Classifier(channels=1, size=8, n_classes=3, width=4, seed=5)
    images = np.random.default_rng(6).uniform(-1, 1, (9, 1, 8, 8)).astype(np.float32)
    one = fq.eval.image_features(net, images, batch_size=2, threads=1)
    two = fq.eval.image_features(net, images, batch_size=2, threads=2)
    assert one.shape == (9, net.features(images[:1]).shape[1])
    np.testing.assert_array_equal(two, one)


def test_batch_step_names_mismatched_arrays():
    model = _unet()
    with fq.flow.BatchStep(model, fq.nn.AdamW(model.parameters()), batch_size=4) as step:
        x = np.zeros((4, 1, 8, 8), np.float32)
        with pytest.raises(InputError, match="BatchStep: x_t .* target"):
            step(x, np.zeros(4, np.float32), x[:3], lr=1e-3)


@needs_batch_threads
def test_a_model_that_is_no_fmq_np_module_runs_on_the_calling_thread():
    import threading
    seen = set()

    class Velocity:                   # a user's velocity: its inference may cache, so it is never run on two threads
        def config(self):
            return {"channels": 1, "size": 8}

        def __call__(self, x, t):
            seen.add(threading.current_thread().name)
            return -x

    assert _threads.batch_threads(2, Velocity()) == 1 and _threads.batch_threads(2, _unet()) == 2
    x0 = np.ones((6, 1, 8, 8), np.float32)
    out = fq.flow.sample(Velocity(), x0=x0, solver="euler", steps=1, batch_size=2, threads=2, progress=False)
    np.testing.assert_array_equal(out, np.zeros_like(x0))
    assert seen == {threading.current_thread().name}
