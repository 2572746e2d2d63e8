"""allocate_bits: budget respected, optimal on small cases, never worse than the uniform width on its objective."""
import itertools

import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import FmqError
from fmq_np.theory import allocate_bits
from fmq_np.theory.allocate import mlp_sensitivity


def uniform_q(w, bits):
    w = np.asarray(w, np.float64)
    lo, hi = w.min(), w.max()
    if hi == lo:
        return w
    d = (hi - lo) / (2 ** bits - 1)
    return np.round((w - lo) / d) * d + lo


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((40, 30)), "b": 5 * rng.laplace(size=(20, 10)), "c": rng.standard_normal(50)}


def objective(errors, sens, bits):
    return sum(sens[k] * errors[k][b] for k, b in bits.items())


@pytest.mark.parametrize("budget", [2.0, 3.0, 3.5, 5.25])
def test_budget_respected_and_beats_uniform_width(budget):
    params = arrays()
    alloc = allocate_bits(params, budget, quantizer=uniform_q, choices=range(2, 7))
    sizes = {k: v.size for k, v in params.items()}
    assert alloc.avg_bits <= budget + 1e-12
    assert alloc.avg_bits == pytest.approx(sum(sizes[k] * b for k, b in alloc.bits.items()) / sum(sizes.values()))
    flat = {k: int(budget) for k in params}
    assert alloc.objective <= objective(alloc.errors, alloc.sensitivity, flat) + 1e-12


def test_allocation_is_optimal_on_a_small_case():
    params = arrays(1)
    sizes = {k: v.size for k, v in params.items()}
    alloc = allocate_bits(params, 3.0, quantizer=uniform_q, choices=range(2, 6))
    best = min(objective(alloc.errors, alloc.sensitivity, dict(zip(params, c)))
               for c in itertools.product(range(2, 6), repeat=3)
               if sum(sizes[k] * b for k, b in zip(params, c)) <= 3.0 * sum(sizes.values()))
    assert alloc.objective <= best * (1 + 1e-12)
    again = allocate_bits(params, 3.0, quantizer=None, choices=range(2, 6), errors=alloc.errors)
    assert again.bits == alloc.bits


def test_mlp_sensitivities_follow_the_network():
    m = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=0)
    sens = mlp_sensitivity({k: v.astype(np.float64) for k, v in m.parameters().items()}, [-2, -2], [2, 2])
    assert set(sens) == set(m.parameters())
    assert sens["layers.2.bias"] == 1.0 and all(v > 0 for v in sens.values())
    alloc = allocate_bits(m, 4.0, quantizer=uniform_q)
    assert alloc.avg_bits <= 4.0 and set(alloc.bits) == set(m.parameters())


def test_with_fmq_quant():
    pytest.importorskip("fmq_np.quant")
    params = {k: v.astype(np.float32) for k, v in arrays(2).items()}
    alloc = allocate_bits(params, 3.0, method="ot", choices=(2, 3, 4))
    assert alloc.avg_bits <= 3.0


@pytest.mark.parametrize("call", [lambda: allocate_bits({}, 3.0, quantizer=uniform_q),
                                  lambda: allocate_bits(arrays(), 1.5, quantizer=uniform_q),
                                  lambda: allocate_bits(arrays(), 3.0, quantizer=uniform_q, choices=(2, 9)),
                                  lambda: allocate_bits({"a": np.array([1.0, np.inf])}, 3.0, quantizer=uniform_q),
                                  lambda: allocate_bits(arrays(), 3.0, quantizer=uniform_q, sensitivity={"a": 1.0})])
def test_bad_input(call):
    with pytest.raises(FmqError):
        call()
