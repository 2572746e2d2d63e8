"""Backward passes of every layer and model against central finite differences in float64."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.nn import layers
import naive
from gradcheck import check_directional, check_jacobian, module_arrays

F64 = np.float64


def _layer_fn(layer, arrays, *extra_inputs, **kw):
    def forward():
        return layer.forward(arrays["x"], *[arrays[k] for k in extra_inputs], **kw)
    return forward


@pytest.mark.parametrize("act", [None, "silu"])
def test_linear_full_jacobian(act):
    rng = np.random.default_rng(0)
    lin = layers.Linear(3, 4, act=act, rng=rng).astype(F64)
    arrays = module_arrays(lin, x=rng.standard_normal((5, 3)))
    check_jacobian(_layer_fn(lin, arrays), lambda dy: {"x": lin.backward(dy), **lin.gradients()}, arrays, rng)


@pytest.mark.parametrize("k,stride,pad,up,act", [(3, 1, 1, 1, None), (3, 2, 1, 1, "silu"), (3, 1, 1, 2, None),
                                                 (3, 1, 1, 2, "silu"), (3, 1, 0, 2, None), (1, 1, 0, 1, None),
                                                 (2, 2, 0, 1, None)])
@pytest.mark.parametrize("chunked", [False, True])
def test_conv2d_forward_and_full_jacobian(k, stride, pad, up, act, chunked, monkeypatch):
    if chunked:   # one sample per unfolded block: exercises the accumulation over blocks
        monkeypatch.setattr(layers, "CHUNK_FLOATS", 1)
    rng = np.random.default_rng(k + stride + up)
    conv = layers.Conv2d(2, 3, k, stride=stride, padding=pad, up=up, act=act, rng=rng).astype(F64)
    x = rng.standard_normal((2, 2, 5, 4))
    ref = naive.conv2d(x, conv.parameters()["weight"], conv.parameters()["bias"], stride, pad, up)
    np.testing.assert_allclose(conv.forward(x), naive.silu(ref) if act else ref, rtol=1e-12, atol=1e-12)
    arrays = module_arrays(conv, x=x)
    check_jacobian(_layer_fn(conv, arrays), lambda dy: {"x": conv.backward(dy), **conv.gradients()}, arrays, rng)


@pytest.mark.parametrize("c_out", [4, 2])           # 2: forward by Winograd tiles, dx (2 channels in) by im2col
@pytest.mark.parametrize("chunked", [False, True])
def test_conv2d_winograd_forward_and_full_jacobian(c_out, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(layers, "CHUNK_FLOATS", 1)
    rng = np.random.default_rng(c_out)
    conv = layers.Conv2d(4, c_out, 3, act="silu", rng=rng).astype(F64)
    x = rng.standard_normal((4, 2, 8, 10))
    assert conv._winograd(8, 10, 4) and conv._winograd(8, 10, c_out) == (c_out >= 4)
    ref = naive.conv2d(x, conv.parameters()["weight"], conv.parameters()["bias"], 1, 1, 1)
    np.testing.assert_allclose(conv.forward(x), naive.silu(ref), rtol=1e-12, atol=1e-12)
    arrays = module_arrays(conv, x=x)
    check_jacobian(_layer_fn(conv, arrays), lambda dy: {"x": conv.backward(dy), **conv.gradients()}, arrays, rng)


@pytest.mark.parametrize("mod", [False, True])
@pytest.mark.parametrize("act", [None, "silu"])
def test_group_norm_full_jacobian(mod, act):
    rng = np.random.default_rng(3)
    gn = layers.GroupNorm(4, 2, act=act).astype(F64)
    gn.parameters()["weight"][:] = rng.standard_normal(4)
    gn.parameters()["bias"][:] = rng.standard_normal(4)
    arrays = module_arrays(gn, x=rng.standard_normal((4, 2, 3, 3)))
    if mod:
        arrays.update(scale=rng.standard_normal((4, 2)), shift=rng.standard_normal((4, 2)))

        def backward(dy):
            dx, dsc, dsh = gn.backward(dy)
            return {"x": dx, "scale": dsc, "shift": dsh, **gn.gradients()}
        forward = _layer_fn(gn, arrays, "scale", "shift")
    else:
        def backward(dy):
            dx, dsc, dsh = gn.backward(dy)
            assert dsc is None and dsh is None
            return {"x": dx, **gn.gradients()}
        forward = _layer_fn(gn, arrays)
    check_jacobian(forward, backward, arrays, rng)


def test_silu_time_embedding_and_pool_full_jacobian():
    rng = np.random.default_rng(4)
    silu = layers.SiLU().astype(F64)
    arrays = {"x": rng.standard_normal((3, 2, 2)) * 3}
    check_jacobian(_layer_fn(silu, arrays), lambda dy: {"x": silu.backward(dy)}, arrays, rng)
    emb = layers.TimeEmbedding(6, scale=3.0).astype(F64)
    arrays = {"t": rng.random(4)}
    check_jacobian(lambda: emb.forward(arrays["t"]), lambda dy: {"t": emb.backward(dy)}, arrays, rng)
    pool = layers.GlobalAvgPool().astype(F64)
    arrays = {"x": rng.standard_normal((3, 2, 2, 3))}
    check_jacobian(_layer_fn(pool, arrays), lambda dy: {"x": pool.backward(dy)}, arrays, rng)


@pytest.mark.parametrize("cin,cout", [(4, 8), (4, 4)])
def test_resblock_directional(cin, cout):
    rng = np.random.default_rng(5)
    block = layers.ResBlock(cin, cout, time_dim=6, groups=2, rng=rng).astype(F64)
    arrays = module_arrays(block, x=rng.standard_normal((cin, 2, 4, 4)), temb=rng.standard_normal((2, 6)))

    def backward(dy):
        dx, dt = block.backward(dy)
        return {"x": dx, "temb": dt, **block.gradients()}
    check_directional(_layer_fn(block, arrays, "temb"), backward, arrays, rng, directions=2)


def _check_velocity(model, x, rng):
    model.astype(F64)
    t = rng.random(x.shape[0])
    arrays = module_arrays(model, x=x)
    forward = lambda: model.forward(arrays["x"], t)  # noqa: E731
    backward = lambda dy: {"x": model.backward(dy), **model.gradients()}  # noqa: E731
    check_directional(forward, backward, arrays, rng, directions=4, joint=True, rtol=1e-7)
    check_directional(forward, backward, {"x": arrays["x"]}, rng, directions=2)
    # a few single tensors on their own: the first, a middle and the last parameter
    names = list(model.parameters())
    check_directional(forward, backward, {k: arrays[k] for k in (names[0], names[len(names) // 2], names[-1])},
                      rng)


@pytest.mark.parametrize("act", ["silu", "selu"])
def test_mlp_velocity_directional(act):
    rng = np.random.default_rng(6)
    _check_velocity(fq.nn.MLPVelocity(dim=3, hidden=8, depth=3, seed=1, act=act), rng.standard_normal((5, 3)), rng)


@pytest.mark.parametrize("kw", [dict(mults=(1, 2, 2), blocks=1), dict(mults=(1, 2), blocks=2)])
def test_unet_velocity_directional(kw):
    rng = np.random.default_rng(7)
    model = fq.nn.UNetVelocity(channels=2, size=8, width=4, groups=2, time_dim=8, seed=2, **kw)
    _check_velocity(model, rng.standard_normal((2, 2, 8, 8)), rng)


@pytest.mark.parametrize("hidden", [0, 5])
def test_classifier_directional_and_cross_entropy(hidden):
    rng = np.random.default_rng(8)
    c = fq.nn.Classifier(channels=1, size=8, n_classes=3, width=2, hidden=hidden, seed=3).astype(F64)
    assert c.features(rng.standard_normal((3, 1, 8, 8))).shape == (3, hidden or 8)
    arrays = module_arrays(c, x=rng.standard_normal((3, 1, 8, 8)))
    check_directional(lambda: c.forward(arrays["x"]), lambda dy: {"x": c.backward(dy), **c.gradients()},
                      arrays, rng)
    labels = np.array([0, 2, 1, 2])
    arrays = {"logits": rng.standard_normal((4, 3))}
    _, dlogits = fq.nn.cross_entropy(arrays["logits"], labels)
    # L = loss is a scalar: check it with dy = 1 through the Jacobian checker
    check_jacobian(lambda: np.array(fq.nn.cross_entropy(arrays["logits"], labels)[0]),
                   lambda dy: {"logits": dy * dlogits}, arrays, rng)
