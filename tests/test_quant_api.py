"""fmq_np.quant.quantize / quantize_model: hand-worked cases, invariants, paper_compat, errors."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import fmq_np as fq
from fmq_np.errors import InputError
from fmq_np.quant import METHODS, QuantizedModel, QuantizedTensor, quantize, quantize_model
from fmq_np.quant.model import default_policy

from naive import published_state_dict, published_tensor

f32 = np.float32


def deq(w, **kw):
    return quantize(np.asarray(w, f32), **kw).dequantize()


# ------------------------------------------------------------------------------------------------ hand-worked cases
def test_ot_hand_worked():
    # sorted [1, 2, 2, 3, 10] cut 3 | 2 (array_split): means 5/3 and 13/2, scattered back by rank
    np.testing.assert_array_equal(deq([3, 1, 2, 2, 10], bits=1, method="ot"),
                                  f32([6.5, f32(5) / 3, f32(5) / 3, f32(5) / 3, 6.5]))


def test_ot_tie_rule_is_stable_rank():
    qt = quantize(np.ones(4, f32), bits=1, method="ot")
    np.testing.assert_array_equal(qt.codes, [[0, 0, 1, 1]])   # earlier flat positions get the lower chunk
    np.testing.assert_array_equal(qt.dequantize(), np.ones(4, f32))


def test_uniform_hand_worked_round_half_even():
    # min 0, max 3, 2 bits: scale 1; 1.5 -> 2 and 0.5 -> 0 (half to even), 2.5 -> 2
    np.testing.assert_array_equal(deq([0, 1.5, 3, 0.5, 2.5], bits=2, method="uniform"), f32([0, 2, 3, 0, 2]))
    np.testing.assert_array_equal(deq([[4, 4, 4], [0, 1, 3]], bits=1, method="uniform"), f32([[4, 4, 4], [0, 0, 3]]))


def test_pwl_hand_worked():
    # breakpoints interp([0, .5, 1], linspace(0, 1, 5), [0..4]) = [0, 2, 4]; levels 1, 3
    np.testing.assert_array_equal(deq([0, 1, 2, 3, 4], bits=1, method="pwl"), f32([1, 1, 3, 3, 3]))


def test_log2_hand_worked():
    np.testing.assert_array_equal(deq([1, 2, 4, 8], bits=2, method="log2"), f32([1, 2, 4, 8]))
    # both signs: 2 levels each; negatives all -1 (min == max); zero -> smallest magnitude, tie goes to +1
    np.testing.assert_array_equal(deq([-1, 1, 3, 0], bits=2, method="log2"), f32([-1, 1, 3, 1]))
    np.testing.assert_array_equal(deq([0, 0], bits=1, method="log2"), f32([0, 0]))


def test_ot_opt_hand_worked():
    np.testing.assert_allclose(deq([0, 0, 1, 10], bits=1, method="ot-opt"), f32([1 / 3, 1 / 3, 1 / 3, 10]))
    qt = quantize(f32([0, 0, 1, 10]), bits=1, method="ot-opt", weights=[1, 1, 100, 1])
    np.testing.assert_allclose(qt.dequantize(), f32([100 / 102] * 3 + [10]), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ invariants
@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    return draw(hnp.arrays(dtype, shape, elements=st.floats(-100, 100, width=16)))


@given(tensors(), st.integers(1, 8), st.sampled_from(METHODS), st.sampled_from(["tensor", "channel"]))
@settings(max_examples=60, deadline=None)
def test_invariants(w, bits, method, granularity):
    qt = quantize(w, bits=bits, method=method, granularity=granularity)
    w_hat = qt.dequantize()
    assert w_hat.shape == w.shape and w_hat.dtype == w.dtype
    assert qt.codes.dtype == np.uint8 and qt.codes.max() < 2 ** bits
    assert qt.codebook.shape == (qt.n_groups, 2 ** bits) and (np.diff(qt.codebook, axis=1) >= 0).all()
    assert 1 <= qt.levels_used <= 2 ** bits
    again = quantize(w_hat, bits=bits, method=method, granularity=granularity).dequantize()
    if method in ("ot-opt", "uniform"):                       # quantize ∘ dequantize is idempotent
        np.testing.assert_array_equal(again, w_hat)
    elif method == "ot":                                      # up to the rounding of the chunk means
        np.testing.assert_allclose(again, w_hat, rtol=0, atol=4 * np.finfo(w.dtype).eps * np.abs(w_hat).max())


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 30)),
                  elements=st.floats(-10, 10, width=32)), st.integers(1, 8))
@settings(max_examples=40, deadline=None)
def test_ot_opt_never_worse_than_the_others(w, bits):
    mse = {m: np.mean((deq(w, bits=bits, method=m).astype(np.float64) - w) ** 2) for m in METHODS}
    for m in METHODS:
        assert mse["ot-opt"] <= mse[m] * (1 + 1e-5) + 1e-12, (m, mse)


def test_group_granularity():
    w = np.arange(24, dtype=f32).reshape(2, 12)
    qt = quantize(w, bits=1, method="ot", granularity="group", group_size=4)
    assert qt.codes.shape == (6, 4) and qt.group_size == 4
    np.testing.assert_array_equal(qt.dequantize()[0, :4], [0.5, 0.5, 2.5, 2.5])
    with pytest.raises(InputError, match="group_size"):
        quantize(w, bits=1, granularity="group", group_size=5)


def test_bits_per_weight_counts_overhead():
    w = np.zeros((4, 64), f32) + np.arange(64, dtype=f32)
    assert quantize(w, bits=2, method="ot").bits_per_weight == 2 + 4 * 32 / 64
    assert quantize(w, bits=2, method="uniform").bits_per_weight == 2 + 2 * 32 / 64
    assert quantize(w, bits=2, method="ot").nbytes == 4 * 64 * 2 // 8 + 4 * 4 * 4


# ------------------------------------------------------------------------------------------------ paper_compat
def _state_dict(rng):
    return {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(f32),
            "conv.bias": rng.standard_normal(4).astype(f32),
            "tiny": rng.standard_normal((2, 2)).astype(f32),
            "lin.weight": (rng.standard_t(3, (5, 17))).astype(np.float64),
            "norm.scale": np.ones(6, f32),
            "ties": (np.round(rng.standard_normal((3, 40)) * 4) / 4).astype(f32),      # exact ties and zeros
            "one_signed": -np.abs(rng.standard_normal((2, 12))).astype(f32),           # negative-only rows
            "half": (rng.standard_normal((3, 20)) * 0.3).astype(np.float16),
            "step": np.arange(3)}


@pytest.mark.parametrize("method", ["ot", "uniform", "pwl", "log2"])
@pytest.mark.parametrize("bits", [2, 3, 8])
def test_paper_compat_equals_published_algorithm(method, bits):
    sd = _state_dict(np.random.default_rng(bits))
    qm = quantize_model(sd, bits=bits, method=method, paper_compat=True)
    ref = published_state_dict(sd, bits, method)
    out = qm.dequantize()
    assert list(out) == list(sd)
    for name in sd:
        np.testing.assert_array_equal(out[name], ref[name], err_msg=name)
        assert out[name].dtype == sd[name].dtype
    skipped = {r["name"]: r["skipped"] for r in qm.report}
    if method != "uniform" and bits >= 3:
        assert isinstance(qm.tensors["tiny"], np.ndarray) and "published skip rule" in skipped["tiny"]
    else:
        assert isinstance(qm.tensors["tiny"], QuantizedTensor)


@pytest.mark.parametrize("kind", ["continuous", "integers", "signed_zeros", "short_rows"])
def test_published_ot_codes_equal_a_full_argsort_ranking(kind):
    """paper_compat's ot codes re-rank only the rows with a tie across a chunk boundary; every row must still get
    the published code's argsort + array_split codes."""
    from fmq_np.quant import cpu, published
    rng = np.random.default_rng(11)
    rows = {"continuous": rng.standard_normal((40, 97)),
            "integers": rng.integers(-3, 4, (40, 97)).astype(float),
            "signed_zeros": np.where(rng.random((40, 97)) < 0.3, rng.choice([-0.0, 0.0], (40, 97)),
                                     rng.standard_normal((40, 97))),
            "short_rows": rng.integers(0, 2, (40, 5)).astype(float)}[kind].astype(f32)
    k = 8
    kernel_codes, _ = cpu.ot_equal_mass(rows, k)
    codes = published.ot_codes(rows, k, kernel_codes, rows)
    kk = min(k, rows.shape[1])
    for g in range(rows.shape[0]):
        ref = np.empty(rows.shape[1], np.uint8)
        for c, chunk in enumerate(np.array_split(np.argsort(rows[g]), kk)):
            ref[chunk] = c
        np.testing.assert_array_equal(codes[g], ref, err_msg=f"{kind} row {g}")


def test_paper_compat_quantize_marks_skipped_tensor_and_keeps_it_exact():
    w = f32([3, 1, 2])
    qt = quantize(w, bits=2, method="pwl", paper_compat=True)
    assert qt.meta["skipped"] and np.array_equal(qt.dequantize(), w)
    np.testing.assert_array_equal(quantize(w, bits=2, method="uniform", paper_compat=True).dequantize(),
                                  published_tensor(w, 2, "uniform"))


# ------------------------------------------------------------------------------------------------ quantize_model
def test_quantize_model_default_policy_and_report():
    sd = _state_dict(np.random.default_rng(0))
    qm = quantize_model(sd, bits=3, method="ot-opt")
    assert isinstance(qm, QuantizedModel) and isinstance(qm.tensors["conv.bias"], np.ndarray)
    assert isinstance(qm.tensors["conv.weight"], QuantizedTensor)
    json.dumps(qm.meta)
    rows = {r["name"]: r for r in qm.report}
    assert set(rows) == set(sd)
    r = rows["conv.weight"]
    assert r["bits"] == 3 and r["levels_used"] <= 8 and r["bytes_after"] < r["bytes_before"]
    assert 0 <= r["w2"] <= np.sqrt(r["mse"]) * (1 + 1e-9)
    assert rows["conv.bias"]["skipped"].startswith("1-D") and rows["conv.bias"]["mse"] == 0
    assert rows["step"]["skipped"] == "not a float array"


def test_quantize_model_policy():
    sd = _state_dict(np.random.default_rng(0))
    qm = quantize_model(sd, bits=3, policy=lambda name, a: None if name == "lin.weight" else 2)
    assert qm.tensors["conv.weight"].bits == 2 and qm.tensors["conv.bias"].bits == 2
    assert isinstance(qm.tensors["lin.weight"], np.ndarray)
    with pytest.raises(InputError, match="policy"):
        quantize_model(sd, policy=lambda name, a: 9)


def test_default_policy_is_a_policy_of_the_same_signature():
    sd = _state_dict(np.random.default_rng(1))
    for paper_compat in (False, True):
        implicit = quantize_model(sd, bits=3, paper_compat=paper_compat).dequantize()
        explicit = quantize_model(sd, bits=3, paper_compat=paper_compat,
                                  policy=default_policy(3, paper_compat)).dequantize()
        assert implicit.keys() == explicit.keys()
        for name in sd:
            np.testing.assert_array_equal(implicit[name], explicit[name], err_msg=name)


def test_reexports():
    assert fq.quant.quantize is quantize and set(METHODS) == {"ot", "uniform", "pwl", "log2", "ot-opt"}


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(bits=0), "bits"), (dict(bits=9), "bits"), (dict(bits=2.0), "bits"),
    (dict(method="kmeans"), "method"), (dict(granularity="row"), "granularity"),
    (dict(granularity="group"), "group_size"), (dict(group_size=4), "group_size"),
    (dict(method="ot-opt", paper_compat=True), "paper_compat"),
    (dict(method="ot", weights=np.ones((2, 3))), "weights"),
    (dict(method="ot-opt", weights=-np.ones((2, 3))), "weights"),
    (dict(method="ot-opt", weights=np.ones(3)), "weights"),
    (dict(device="tpu"), "device"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        quantize(np.ones((2, 3), f32), **kwargs)


def test_non_finite_and_bad_dtype_name_the_tensor():
    with pytest.raises(InputError, match="'layer.w'.*NaN"):
        quantize_model({"layer.w": f32([[1, np.nan]])})
    with pytest.raises(InputError, match="'x'.*Inf"):
        quantize(f32([1, np.inf]), name="x")
    with pytest.raises(InputError, match="dtype"):
        quantize(np.arange(4))
