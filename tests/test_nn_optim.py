"""AdamW, EMA and learning-rate schedules."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np import InputError
import naive


def _params(rng):
    return {"a.weight": rng.standard_normal((3, 4)).astype(np.float32), "a.bias": rng.standard_normal(3)
            .astype(np.float32)}


def test_adamw_matches_reference_over_steps_with_lr_override():
    rng = np.random.default_rng(0)
    params = _params(rng)
    ref = {k: (v.astype(np.float64), np.zeros(v.shape), np.zeros(v.shape)) for k, v in params.items()}
    opt = fq.nn.AdamW(params, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for step in range(1, 6):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        lr = 1e-2 if step != 3 else 5e-3
        opt.step(grads, lr=None if step != 3 else lr)
        for k in params:
            ref[k] = naive.adamw(*ref[k][:1], grads[k], *ref[k][1:], step, lr, 0.9, 0.95, 1e-8, 0.1)
            np.testing.assert_allclose(params[k], ref[k][0], rtol=1e-5, atol=1e-6)


def test_adamw_state_dict_resume_is_exact():
    rng = np.random.default_rng(1)
    p1 = _params(rng)
    p2 = {k: v.copy() for k, v in p1.items()}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p1.items()} for _ in range(6)]
    o1 = fq.nn.AdamW(p1, lr=1e-2)
    for g in grads:
        o1.step(g)
    o2 = fq.nn.AdamW(p2, lr=1e-2)
    for g in grads[:3]:
        o2.step(g)
    state = o2.state_dict()
    o3 = fq.nn.AdamW(p2, lr=5.0)
    o3.load_state_dict(state)
    for g in grads[3:]:
        o3.step(g)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    bad = dict(state)
    del bad["m.a.bias"]
    with pytest.raises(InputError, match="a.bias"):
        o3.load_state_dict(bad)
    with pytest.raises(InputError, match="a.bias"):
        o3.step({"a.weight": grads[0]["a.weight"]})


def test_ema_formula_and_state():
    rng = np.random.default_rng(2)
    params = _params(rng)
    ema = fq.nn.EMA(params, decay=0.9)
    start = {k: v.copy() for k, v in params.items()}
    assert all(ema.params[k] is not params[k] for k in params)
    for k in params:
        params[k] += 1.0
    ema.update(params)
    for k in params:
        np.testing.assert_allclose(ema.params[k], start[k] + 0.1, rtol=1e-6)
    other = fq.nn.EMA(params, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and other.updates == 1
    for k in params:
        np.testing.assert_array_equal(other.params[k], ema.params[k])


def test_lr_schedules():
    lin = fq.nn.lr_schedule("linear", lr=1e-3, steps=101, warmup=10, final_lr=1e-8)
    assert lin(0) == 0.0 and lin(5) == pytest.approx(5e-4) and lin(10) == pytest.approx(1e-3)
    assert lin(100) == pytest.approx(1e-8) and lin(1000) == pytest.approx(1e-8)
    assert lin(55) == pytest.approx((1e-3 + 1e-8) / 2)
    cos = fq.nn.lr_schedule("cosine", lr=1.0, steps=11, final_lr=0.0)
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0, abs=1e-12)
    const = fq.nn.lr_schedule("constant", lr=0.1, steps=5, warmup=2)
    assert [const(s) for s in range(5)] == pytest.approx([0.0, 0.05, 0.1, 0.1, 0.1])
    with pytest.raises(InputError, match="schedule"):
        fq.nn.lr_schedule("step", lr=1.0, steps=3)


def test_mlp_fits_a_simple_velocity_field():
    rng = np.random.default_rng(3)
    m = fq.nn.MLPVelocity(dim=2, hidden=32, depth=2, seed=0)
    opt = fq.nn.AdamW(m.parameters(), lr=3e-3)
    x = rng.standard_normal((256, 2)).astype(np.float32)
    t = rng.random(256).astype(np.float32)
    target = (np.stack([x[:, 1], -x[:, 0]], axis=1) * (1 + t[:, None])).astype(np.float32)
    losses = []
    for _ in range(300):
        v = m.forward(x, t)
        losses.append(float(np.mean((v - target) ** 2)))
        m.backward(2 * (v - target) / v.size)
        opt.step(m.gradients())
    assert losses[-1] < 0.05 * losses[0]
