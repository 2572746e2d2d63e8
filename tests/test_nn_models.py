"""Contract of the networks: shapes, dtypes, names, strict loading, config round trip, seeds, bad input."""
import json

import numpy as np
import pytest

import fmq_np as fq
from fmq_np import InputError

SMALL = {
    "MLPVelocity": (dict(dim=2, hidden=16, depth=2, seed=0), (5, 2)),
    "UNetVelocity": (dict(channels=1, size=8, width=8, groups=4, seed=0), (3, 1, 8, 8)),
    "Classifier": (dict(channels=3, size=8, n_classes=4, width=4, seed=0), (3, 3, 8, 8)),
}


def _make(name, **over):
    kw, shape = SMALL[name]
    return fq.nn.MODELS[name](**{**kw, **over}), shape


def _run(model, x, train=False):
    t = np.linspace(0, 1, x.shape[0]).astype(np.float32)
    if isinstance(model, fq.nn.Classifier):
        return model.forward(x) if train else model(x)
    return model.forward(x, t) if train else model(x, t)


@pytest.mark.parametrize("name", list(SMALL))
def test_shapes_dtypes_and_inference_equals_training_forward(name):
    model, shape = _make(name)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = _run(model, x)
    assert y.dtype == np.float32
    assert y.shape == (shape if name != "Classifier" else (shape[0], 4))
    np.testing.assert_array_equal(_run(model, x, train=True), y)
    dx = model.backward(np.ones_like(y))
    assert dx.shape == shape and dx.dtype == np.float32
    for k, g in model.gradients().items():
        p = model.parameters()[k]
        assert g.shape == p.shape and g.dtype == np.float32
    params = model.parameters()
    assert all(p.dtype == np.float32 and p.flags.c_contiguous for p in params.values())
    assert all(k.replace("_", "").replace(".", "").isalnum() for k in params)


def test_unet_handles_the_three_image_sizes_and_rejects_bad_sizes():
    rng = np.random.default_rng(1)
    for channels, size in [(1, 8), (1, 28), (3, 32)]:
        m = fq.nn.UNetVelocity(channels=channels, size=size, width=8, groups=4)
        x = rng.standard_normal((2, channels, size, size)).astype(np.float32)
        assert m(x, np.array([0.1, 0.9], np.float32)).shape == x.shape
    with pytest.raises(InputError, match="size"):
        fq.nn.UNetVelocity(channels=1, size=30, width=8)          # 30 not divisible by 4
    with pytest.raises(InputError, match="groups"):
        fq.nn.UNetVelocity(channels=1, size=8, width=12, groups=8)
    with pytest.raises(InputError, match="size"):
        fq.nn.Classifier(size=10)


def test_backward_overwrites_gradients_instead_of_accumulating():
    model, shape = _make("UNetVelocity")
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    y = _run(model, x, train=True)
    model.backward(np.ones_like(y))
    first = {k: g.copy() for k, g in model.gradients().items()}
    _run(model, x, train=True)
    model.backward(np.ones_like(y))
    for k, g in model.gradients().items():
        np.testing.assert_array_equal(g, first[k], err_msg=k)
    # linearity in dv: gradients of 2*dv are twice the gradients of dv
    _run(model, x, train=True)
    model.backward(2 * np.ones_like(y))
    for k, g in model.gradients().items():
        np.testing.assert_allclose(g, 2 * first[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name, over", [("MLPVelocity", {}), ("UNetVelocity", {}), ("Classifier", dict(channels=1))])
def test_results_are_new_arrays_that_a_later_pass_does_not_overwrite(name, over):
    """What forward and backward return belongs to the caller (a reverse pass through a solver keeps several dx):
    the layers reuse their buffers, and with one image channel a transpose is contiguous, so this is checked."""
    model, shape = _make(name, **over)
    shape = (shape[0], 1) + shape[2:] if over else shape
    rng = np.random.default_rng(7)
    x1, x2 = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    y1 = _run(model, x1, train=True)
    dx1 = model.backward(np.ones_like(y1))
    kept = y1.copy(), dx1.copy()
    y2 = _run(model, x2, train=True)
    dx2 = model.backward(rng.standard_normal(y2.shape).astype(np.float32))
    np.testing.assert_array_equal(y1, kept[0])
    np.testing.assert_array_equal(dx1, kept[1])
    assert not np.shares_memory(dx1, dx2) and not np.shares_memory(y1, y2)


def test_module_surface_param_zero_grad_and_cached_input():
    rng = np.random.default_rng(5)
    lin = fq.nn.Linear(3, 2, rng=rng)
    conv = fq.nn.Conv2d(2, 4, 3, rng=rng)
    assert lin.cached_input() is None and conv.cached_input() is None       # before any training forward
    assert lin.param("weight") is lin.parameters()["weight"]                  # the live array, not a copy
    with pytest.raises(InputError, match="'scale'"):
        lin.param("scale")
    x = rng.standard_normal((5, 3)).astype(np.float32)
    img = rng.standard_normal((2, 5, 6, 6)).astype(np.float32)                 # channel-major (C, N, H, W)
    lin.forward(x)
    conv.forward(img)
    lin.forward(rng.standard_normal((7, 3)).astype(np.float32), train=False)  # inference leaves the cache alone
    np.testing.assert_array_equal(lin.cached_input(), x)
    np.testing.assert_array_equal(conv.cached_input(), img)
    assert fq.nn.SiLU().cached_input() is None                               # keeps no input of its own
    model, shape = _make("UNetVelocity")
    y = _run(model, np.ones(shape, np.float32), train=True)
    model.backward(np.ones_like(y))
    assert any(np.any(g != 0) for g in model.gradients().values())
    model.zero_grad()                                                         # every descendant's gradients
    assert all(not np.any(g) for g in model.gradients().values())


@pytest.mark.parametrize("name", list(SMALL))
def test_config_round_trip_seed_determinism_and_load_parameters(name):
    a, shape = _make(name)
    cfg = json.loads(json.dumps(a.config()))
    b = type(a)(**cfg)
    pa, pb = a.parameters(), b.parameters()
    assert list(pa) == list(pb)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    c, _ = _make(name, seed=1)
    assert any(not np.array_equal(pa[k], v) for k, v in c.parameters().items())
    c.load_parameters(pa)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(_run(c, x), _run(a, x))
    live = c.parameters()
    assert all(live[k] is v for k, v in c.parameters().items())   # live, not copies


def test_load_parameters_is_strict():
    m, _ = _make("UNetVelocity")
    good = {k: v.copy() for k, v in m.parameters().items()}
    key = "down.0.0.conv1.weight"
    assert key in good
    for bad, pattern in [({k: v for k, v in good.items() if k != key}, "missing.*" + key),
                         ({**good, "extra.weight": np.zeros(3, np.float32)}, "extra.weight"),
                         ({**good, key: good[key][:1]}, key + ".*shape"),
                         ({**good, key: good[key].astype(np.float64)}, key + ".*dtype"),
                         ({**good, key: np.full_like(good[key], np.nan)}, key + ".*NaN")]:
        with pytest.raises(InputError, match=pattern):
            m.load_parameters(bad)
    np.testing.assert_array_equal(m.parameters()[key], good[key])   # failed loads change nothing


def test_bad_inputs_raise_input_error():
    mlp, _ = _make("MLPVelocity")
    x, t = np.zeros((4, 2), np.float32), np.zeros(4, np.float32)
    for bx, bt, pattern in [(np.zeros((4, 3), np.float32), t, "x"), (x, np.zeros(3, np.float32), "t"),
                            (np.full((4, 2), np.nan, np.float32), t, "x.*NaN"), (x, np.full(4, np.inf), "t.*NaN"),
                            (x.tolist(), t, "x"), (x.astype(complex), t, "x")]:
        with pytest.raises(InputError, match=pattern):
            mlp(bx, bt)
    unet, shape = _make("UNetVelocity")
    with pytest.raises(InputError, match="x"):
        unet(np.zeros((2, 1, 16, 16), np.float32), np.zeros(2, np.float32))
    _run(unet, np.zeros(shape, np.float32), train=True)
    with pytest.raises(InputError, match="dv"):
        unet.backward(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(InputError, match="backward"):
        fq.nn.MLPVelocity(dim=2, hidden=4, depth=1).backward(np.zeros((1, 2), np.float32))
    with pytest.raises(InputError, match="labels"):
        fq.nn.cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(InputError, match="depth"):
        fq.nn.MLPVelocity(depth=0)


def test_float64_mode_and_classifier_learns():
    rng = np.random.default_rng(4)
    c = fq.nn.Classifier(channels=1, size=8, n_classes=2, width=4, seed=0)
    x = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    labels = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 0, 4:].mean(axis=(1, 2))).astype(int)
    x[:, 0, :4] += np.where(labels == 1, 1.0, -1.0)[:, None, None]
    opt = fq.nn.AdamW(c.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss, d = fq.nn.cross_entropy(c.forward(x), labels)
        c.backward(d)
        opt.step(c.gradients())
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]
    assert (c(x).argmax(axis=1) == labels).mean() > 0.9
    c.astype(np.float64)
    assert all(p.dtype == np.float64 for p in c.parameters().values())
    assert c(x).dtype == np.float64 and c.features(x).shape == (32, 16)


def test_two_threads_running_models_at_once_get_the_serial_answers():
    """Layers share transient buffers only within a thread: a Dask worker's threads may run models concurrently."""
    import threading
    model = fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2), seed=0)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((64, 1, 8, 8)).astype(np.float32) for _ in range(2)]
    t = np.full(64, 0.3, np.float32)
    expected = [model(x, t) for x in xs]
    got = [None, None]

    def work(i):
        for _ in range(20):
            got[i] = model(xs[i], t)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
