"""ADMUNet: forward and gradients against torch fixtures (the original flow_matching / torchcfm code, see
tests/fixtures/make_adm_fixtures.py), float64 finite differences, the config / state-dict contract, training."""
import json
import os
import sys

import numpy as np
import pytest

import fmq_np as fq
from fmq_np import InputError
from fmq_np.nn import adm
from gradcheck import check_directional, check_jacobian, module_arrays

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
from make_adm_fixtures import CASES, fixture_weights  # noqa: E402  (plain NumPy; torch only in its main())

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
F64 = np.float64


def _fixture(name):
    f = np.load(os.path.join(FIXTURES, f"adm_{name}.npz"), allow_pickle=False)
    kw = json.loads(str(f["kwargs"]))
    model = fq.nn.ADMUNet(**kw) if str(f["source"]) == "flow_matching" else fq.nn.ADMUNet.from_torchcfm(**kw)
    names = [str(n) for n in f["names"]]
    shapes = json.loads(str(f["shapes"]))
    weights = fixture_weights(names, shapes, int(f["seed"]))
    np.testing.assert_allclose([weights[k].astype(F64).sum() for k in names], f["sums"], rtol=1e-12, atol=1e-9,
                               err_msg="the fixture weight recipe no longer reproduces the stored weights")
    return model, names, shapes, weights, f


def _rel(a, ref):
    return float(np.abs(a.astype(F64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_torch(name):
    model, names, shapes, weights, f = _fixture(name)
    params = model.parameters()
    assert list(params) == names                            # torch's state-dict names, in torch's order
    assert [list(p.shape) for p in params.values()] == shapes
    model.load_parameters(weights)
    y = f["y"] if "y" in f else None
    v = model(f["x"], f["t"], y)
    assert v.dtype == np.float32 and v.shape == f["v"].shape
    assert _rel(v, f["v"]) <= 1e-4
    model.train_dropout = False                             # torch ran in eval mode
    np.testing.assert_array_equal(model.forward(f["x"], f["t"], y), v)
    dx = model.backward(f["dv"])
    assert _rel(dx, f["dx"]) <= 1e-4
    grads = model.gradients()
    norms = np.array([np.linalg.norm(grads[k].astype(F64)) for k in names])
    ref = f["grad_norms"]
    # biases right before a one-channel-per-group norm have zero gradient in exact arithmetic: absolute floor
    bad = np.abs(norms - ref) > 1e-4 * ref + 1e-5 * ref.max()
    assert not bad.any(), f"gradient of {names[int(np.argmax(bad))]}: {norms[bad][0]} vs torch {ref[bad][0]}"


# ---------------------------------------------------------------------------------------------- finite differences

def _random_weights(model, seed):
    shapes = {k: list(v.shape) for k, v in model.parameters().items()}
    model.load_parameters(fixture_weights(list(shapes), list(shapes.values()), seed))
    return model.astype(F64)


GRAD_CASES = {
    "scale_shift_pool_new_order": (dict(channel_mult=[1, 1], attention_resolutions=[2], use_scale_shift_norm=True,
                                        conv_resample=False, use_new_attention_order=True), None),
    "additive_conv_resample_legacy_labels": (dict(channel_mult=[1, 2], attention_resolutions=[1],
                                                  conv_resample=True, num_head_channels=16, num_classes=3), [0, 2]),
    "updown_fourier_heads_padding": (dict(in_channels=3, out_channels=3, channel_mult=[1, 1], resblock_updown=True,
                                          use_scale_shift_norm=True, num_heads=2, num_heads_upsample=4,
                                          with_fourier_features=True, attention_resolutions=[2], num_classes=2),
                                     None),
    "updown_additive_dropout": (dict(channel_mult=[1, 1], resblock_updown=True, attention_resolutions=[1],
                                     dropout=0.5, num_heads=4), None),
}


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_model_gradients_by_finite_differences(case):
    over, labels = GRAD_CASES[case]
    cfg = dict(dict(in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1), **over)
    model = _random_weights(fq.nn.ADMUNet(**cfg), seed=11)
    rng = np.random.default_rng(3)
    c = cfg["in_channels"]
    x = rng.uniform(-0.5, 0.5, (2, c, 4, 4)) if cfg.get("with_fourier_features") else rng.standard_normal((2, c, 4, 4))
    t = rng.random(2)
    y = None if labels is None else np.array(labels)
    arrays = module_arrays(model, x=x)
    padded = cfg.get("num_classes") is not None and y is None
    if padded:     # y=None uses the padding row, which (as in torch) gets no gradient: checked below instead
        del arrays["label_emb.weight"]

    def forward():
        model._drop_rng = np.random.default_rng(5)         # the same dropout masks in every evaluation
        return model.forward(arrays["x"], t, y)

    def backward(dy):
        return {"x": model.backward(dy), **model.gradients()}
    # sin(2^7 2pi x) has a huge third derivative: a smaller step keeps the central difference's error small
    eps = 1e-8 if cfg.get("with_fourier_features") else 1e-6
    check_directional(forward, backward, arrays, rng, eps=eps, directions=3, joint=True)
    check_directional(forward, backward, {"x": arrays["x"]}, rng, eps=eps, directions=2)
    names = [k for k, v in model.parameters().items() if k in arrays and v.ndim > 1]   # (some biases: 0 gradient)
    check_directional(forward, backward, {k: arrays[k] for k in (names[0], names[len(names) // 2], names[-1])}, rng,
                      eps=eps)
    if padded:
        assert not model.gradients()["label_emb.weight"].any()


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_block_jacobian(new_order):
    rng = np.random.default_rng(4)
    block = adm.ADMAttention(32, heads=2, new_order=new_order, rng=rng).astype(F64)
    for p in block.parameters().values():
        p[...] = rng.standard_normal(p.shape) * (0.3 if p.ndim > 1 else 1.0)
    arrays = module_arrays(block, x=rng.standard_normal((32, 2, 2, 3)))

    def forward():
        return block.forward(arrays["x"])

    def backward(dy):
        return {"x": block.backward(dy), **block.gradients()}
    check_jacobian(forward, lambda dy: {"x": block.backward(dy)}, {"x": arrays["x"]}, rng)
    check_directional(forward, backward, arrays, rng, directions=2)


def test_attention_matches_a_plain_numpy_reference():
    rng = np.random.default_rng(6)
    c, n, heads = 32, 2, 4
    d = c // heads
    x = rng.standard_normal((c, n, 3, 2))
    for new_order in (False, True):
        block = adm.ADMAttention(c, heads=heads, new_order=new_order, rng=rng).astype(F64)
        for p in block.parameters().values():
            p[...] = rng.standard_normal(p.shape) * 0.3
        prm = block.parameters()
        xn = block.norm.forward(x, train=False).reshape(c, n, -1)
        out = x.reshape(c, n, -1).copy()
        for s in range(n):
            qkv = prm["qkv.weight"][:, :, 0] @ xn[:, s] + prm["qkv.bias"][:, None]       # (3C, T)
            heads_out = []
            for h in range(heads):
                if new_order:
                    q, k, v = (qkv[j * c + h * d: j * c + (h + 1) * d] for j in range(3))
                else:
                    q, k, v = (qkv[h * 3 * d + j * d: h * 3 * d + (j + 1) * d] for j in range(3))
                logits = q.T @ k / np.sqrt(d)
                w = np.exp(logits - logits.max(axis=1, keepdims=True))
                w /= w.sum(axis=1, keepdims=True)
                heads_out.append(v @ w.T)
            out[:, s] += prm["proj_out.weight"][:, :, 0] @ np.concatenate(heads_out) + prm["proj_out.bias"][:, None]
        np.testing.assert_allclose(block.forward(x, train=False), out.reshape(x.shape), rtol=1e-12, atol=1e-12)


def test_resampling_layers_and_label_embedding():
    rng = np.random.default_rng(7)
    for layer, shape in ((adm.AvgPool2x(), (2, 3, 5, 4)), (adm.Upsample2x(), (2, 3, 2, 3))):
        arrays = {"x": rng.standard_normal(shape)}
        check_jacobian(lambda: layer.forward(arrays["x"]), lambda dy: {"x": layer.backward(dy)}, arrays, rng)
    x = rng.standard_normal((1, 1, 5, 4))
    np.testing.assert_allclose(adm.AvgPool2x().forward(x)[0, 0], x[0, 0, :4].reshape(2, 2, 2, 2).mean(axis=(1, 3)))
    emb = adm.Embedding(4, 3, padding_idx=3, rng=rng).astype(F64)
    assert not emb.parameters()["weight"][3].any()          # torch zeroes the padding row at init
    y = np.array([1, 3, 1, 0])
    dout = rng.standard_normal((4, 3))
    emb.forward(y)
    emb.backward(dout)
    expect = np.zeros((4, 3))
    for i, label in enumerate(y):
        if label != 3:
            expect[label] += dout[i]
    np.testing.assert_array_equal(emb.gradients()["weight"], expect)


# ---------------------------------------------------------------------------------------------------- contract

def _tiny(**over):
    return fq.nn.ADMUNet(**dict(dict(in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1,
                                     channel_mult=[1, 1], attention_resolutions=[2]), **over))


def test_config_errors_are_one_line_input_errors():
    for kw, match in [(dict(foo=1), "unknown config key 'foo'"), (dict(dims=3), "dims"),
                      (dict(model_channels=24), "divisible by 32"), (dict(num_head_channels=24), "num_head_channels"),
                      (dict(num_heads=3), "num_heads"), (dict(dropout=1.0), "dropout"),
                      (dict(conv_resample="yes"), "conv_resample"), (dict(with_fourier_features=True), "in_channels=3"),
                      (dict(ignore_time=True), "ignore_time"), (dict(channel_mult=[]), "channel_mult")]:
        with pytest.raises(InputError, match=match) as exc:
            _tiny(**kw)
        assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="in_channels"):
        fq.nn.ADMUNet(model_channels=32)
    m = _tiny(use_checkpoint=True, _target_="lib.models.gd_unet.UNetModel")      # accepted, ignored
    assert "_target_" not in m.config() and m.config()["use_checkpoint"] is True


def test_load_parameters_is_strict_and_names_the_first_mismatch():
    m = _tiny()
    good = {k: v.copy() for k, v in m.parameters().items()}
    bad = dict(good)
    del bad["input_blocks.1.0.in_layers.2.weight"]
    with pytest.raises(InputError, match="missing parameter 'input_blocks.1.0.in_layers.2.weight'"):
        m.load_parameters(bad)
    with pytest.raises(InputError, match="unexpected parameter 'label_emb.weight'"):
        m.load_parameters(dict(good, **{"label_emb.weight": np.zeros((3, 128), np.float32)}))
    bad = dict(good, **{"middle_block.1.qkv.weight": np.zeros((96, 32, 1, 1), np.float32)})
    with pytest.raises(InputError, match=r"'middle_block.1.qkv.weight' has shape \(96, 32, 1, 1\), expected "
                                         r"\(96, 32, 1\)"):
        m.load_parameters(bad)
    with pytest.raises(InputError, match="'time_embed.0.weight' has dtype float64"):
        m.load_parameters({k: v.astype(F64) for k, v in good.items()})
    m.load_parameters(good)


def test_labels_padding_index_and_torchcfm_table():
    rng = np.random.default_rng(8)
    m = _random_weights(_tiny(num_classes=3), seed=2).astype(np.float32)
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    t = np.array([0.2, 0.8], np.float32)
    np.testing.assert_array_equal(m(x, t), m(x, t, np.array([3, 3])))      # None = the padding ("no label") row
    assert not np.allclose(m(x, t, np.array([0, 1])), m(x, t))
    for y, match in [(np.array([0, 4]), r"\[0, 3\]"), (np.array([0.5, 1.0]), "integer"), (np.array([1]), "shape")]:
        with pytest.raises(InputError, match=match):
            m(x, t, y)
    with pytest.raises(InputError, match="unconditional"):
        _tiny()(x, t, np.array([0, 1]))
    cfm = fq.nn.ADMUNet.from_torchcfm(dim=(1, 8, 8), num_channels=32, num_res_blocks=1, channel_mult=(1, 1),
                                      class_cond=True, num_classes=3, attention_resolutions="4")
    assert cfm.parameters()["label_emb.weight"].shape == (3, 128)
    with pytest.raises(InputError, match="required"):
        cfm(x, t)
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        cfm(x, t, np.array([0, 3]))
    with pytest.raises(InputError, match="divisible by 2"):
        m(rng.standard_normal((2, 1, 5, 4)).astype(np.float32), t)


def test_from_torchcfm_maps_the_wrapper_arguments():
    cfg = fq.nn.ADMUNet.from_torchcfm(dim=(3, 32, 32), num_channels=32, num_res_blocks=1).config()
    assert (cfg["in_channels"], cfg["out_channels"], cfg["model_channels"], cfg["image_size"]) == (3, 3, 32, 32)
    assert cfg["channel_mult"] == [1, 2, 2, 2] and cfg["attention_resolutions"] == [2]
    assert cfg["conv_resample"] is True and cfg["num_classes"] is None and cfg["label_padding"] is False
    cfg = fq.nn.ADMUNet.from_torchcfm(dim=(1, 28, 28), num_channels=32, num_res_blocks=1, learn_sigma=True,
                                      class_cond=True, attention_resolutions="14,7").config()
    assert cfg["out_channels"] == 2 and cfg["num_classes"] == 1000 and cfg["attention_resolutions"] == [2, 4]
    assert cfg["channel_mult"] == [1, 2, 2]
    cfg = fq.nn.ADMUNet.from_torchcfm(dim=(1, 28, 28), num_channels=32, num_res_blocks=1,
                                      attention_resolutions="32,14").config()
    assert cfg["attention_resolutions"] == [2]             # torchcfm's 28 // 32 = 0 matches no level
    with pytest.raises(InputError, match="attention_resolutions"):
        fq.nn.ADMUNet.from_torchcfm(dim=(1, 28, 28), num_channels=32, num_res_blocks=1, attention_resolutions="a")
    with pytest.raises(InputError, match="use_fp16"):
        fq.nn.ADMUNet.from_torchcfm(dim=(1, 28, 28), num_channels=32, num_res_blocks=1, use_fp16=True)
    with pytest.raises(InputError, match="image size 20"):
        fq.nn.ADMUNet.from_torchcfm(dim=(1, 20, 20), num_channels=32, num_res_blocks=1)


def test_config_round_trips_through_json_and_checkpoint_files(tmp_path):
    m = _random_weights(_tiny(num_classes=2, use_scale_shift_norm=True, image_size=4), seed=3).astype(np.float32)
    cfg = json.loads(json.dumps(m.config()))
    m2 = fq.nn.ADMUNet(**cfg)
    assert {k: v.shape for k, v in m2.parameters().items()} == {k: v.shape for k, v in m.parameters().items()}
    path = str(tmp_path / "adm.h5")
    fq.io.save(path, m)
    m3 = fq.io.load(path)
    assert type(m3) is fq.nn.ADMUNet and m3.config() == m.config()
    x = np.random.default_rng(9).standard_normal((2, 1, 4, 4)).astype(np.float32)
    t = np.array([0.3, 0.6], np.float32)
    np.testing.assert_array_equal(m3(x, t, np.array([0, 2])), m(x, t, np.array([0, 2])))


def test_dropout_only_in_training_forward():
    m = _random_weights(_tiny(dropout=0.5), seed=4).astype(np.float32)
    x = np.random.default_rng(10).standard_normal((2, 1, 4, 4)).astype(np.float32)
    t = np.array([0.3, 0.6], np.float32)
    v = m(x, t)
    np.testing.assert_array_equal(m(x, t), v)
    assert not np.allclose(m.forward(x, t), v)
    m.train_dropout = False
    np.testing.assert_array_equal(m.forward(x, t), v)


def test_fit_trains_and_sample_runs_an_adm_unet():
    m = _tiny(image_size=4, dropout=0.1)
    data = np.random.default_rng(11).uniform(-1, 1, (16, 1, 4, 4)).astype(np.float32)
    before = {k: v.copy() for k, v in m.parameters().items()}
    hist = fq.flow.fit(m, data, steps=3, batch_size=4, lr=1e-3, seed=0, ema_decay=0.0)
    assert len(hist.loss) == 3 and np.all(np.isfinite(hist.loss))
    changed = [k for k, v in m.parameters().items() if not np.array_equal(v, before[k])]
    assert "out.2.weight" in changed and len(changed) > 10
    x1 = fq.flow.sample(m, n=3, solver="euler", steps=2, seed=0)
    assert x1.shape == (3, 1, 4, 4) and np.isfinite(x1).all()
    with pytest.raises(InputError, match="image_size"):
        fq.flow.sample(_tiny(), n=2, solver="euler", steps=1)


def test_weight_inputs_hook_covers_the_attention_projections():
    m = _random_weights(_tiny(), seed=5).astype(np.float32)
    x = np.random.default_rng(12).standard_normal((2, 1, 4, 4)).astype(np.float32)
    m.forward(x, np.array([0.3, 0.6], np.float32))
    hooks = dict(m.weight_inputs())
    assert set(hooks) == {k for k, v in m.parameters().items() if k.endswith(".weight") and v.ndim > 1}
    qkv = m.middle_block[1].qkv
    (rows,) = list(hooks["middle_block.1.qkv.weight"]())
    w, b = qkv.parameters()["weight"], qkv.parameters()["bias"]
    np.testing.assert_allclose(rows @ w[:, :, 0].T + b, qkv._buffer("z", (w.shape[0], rows.shape[0]), True).T,
                               rtol=1e-5, atol=1e-5)


def test_torchcfm_mlp_from_its_pth_matches_torch(tmp_path):
    """torchcfm's MLP (SELU, net.0/2/4/6) read from a torch.save'd state dict gives torch's velocities."""
    sd = fq.io.read_arrays(os.path.join(FIXTURES, "torchcfm_mlp.pth"))
    ref = np.load(os.path.join(FIXTURES, "torchcfm_mlp.npz"))
    model = fq.nn.MLPVelocity.from_torchcfm(dim=2, w=32, time_varying=True, state_dict=sd)
    np.testing.assert_allclose(model(ref["x"], ref["t"]), ref["v"], rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "mlp.h5")                       # the activation is part of the saved architecture
    fq.io.save_model(path, model)
    again, _ = fq.io.load_model(path)
    assert fq.nn.MLPVelocity(dim=2).config() == dict(dim=2, hidden=256, depth=4, seed=0)    # as files before `act`
    assert again.config()["act"] == "selu" and np.array_equal(again(ref["x"], ref["t"]), model(ref["x"], ref["t"]))
    with pytest.raises(InputError, match="time_varying=True"):
        fq.nn.MLPVelocity.from_torchcfm(dim=2, w=32)
    with pytest.raises(InputError, match="out_dim=3"):
        fq.nn.MLPVelocity.from_torchcfm(dim=2, out_dim=3, w=32, time_varying=True)
    with pytest.raises(InputError, match="'net.8.weight'"):
        fq.nn.MLPVelocity.from_torchcfm(dim=2, w=32, time_varying=True,
                                        state_dict={**sd, "net.8.weight": sd["net.0.weight"]})
    with pytest.raises(InputError, match="act"):
        fq.nn.MLPVelocity(act="relu")


def test_forward_and_backward_return_new_arrays():
    """With one image channel a transpose is contiguous: the output and dx must still be the caller's own arrays,
    not the layers' reused buffers (a reverse pass through a solver keeps several). Random weights throughout: the
    zero-initialised output convolution would make every output and dx zero, equal whether overwritten or not."""
    model = _tiny()
    rng = np.random.default_rng(3)
    for a in model.parameters().values():
        a[...] = 0.2 * rng.standard_normal(a.shape)
    x1, x2 = (rng.standard_normal((2, 1, 8, 8)).astype(np.float32) for _ in range(2))
    t = np.array([0.2, 0.7], np.float32)
    y1 = model.forward(x1, t)
    dx1 = model.backward(np.ones_like(y1))
    kept = y1.copy(), dx1.copy()
    y2 = model.forward(x2, t)
    dx2 = model.backward(rng.standard_normal(y2.shape).astype(np.float32))
    assert np.abs(y1).max() > 0 and np.abs(dx1).max() > 0
    np.testing.assert_array_equal(y1, kept[0])
    np.testing.assert_array_equal(dx1, kept[1])
    assert not np.shares_memory(y1, y2) and not np.shares_memory(dx1, dx2)
