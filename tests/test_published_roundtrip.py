"""``fmq-np quantize --paper-compat`` hands back the published quantizers' weights, bit for bit.

Ground truth: ``tests/fixtures/published_expected.npz``, the output of the published code
(Quantized-FM/LowBit-HighFid, ``PC-*-Quant.py``) run in torch on ``published_input.pth``
(``tests/fixtures/make_published_fixtures.py``; the same script checks in torch that torch loads our .safetensors
output). The published code's tie order and logs come from NumPy's machine-specific sort and ``log``: the fixture
was made on an x86-64 machine with the NumPy it records; another CPU could order ties or round a log differently.
"""
import os

import numpy as np
import pytest

import fmq_np as fq
from fmq_np.cli import main

from naive import published_state_dict

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
INPUT = os.path.join(FIX, "published_input.pth")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIX, "published_expected.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def state_dict():
    return fq.io.read_arrays(INPUT, key="model")


def _published(expected, method, bits, sd):
    """The published output cast to each tensor's dtype: what torch's load_state_dict gives the model (the
    published PWL returns float64 for 1-D tensors)."""
    return {name: expected[f"{method}/{bits}/{name}"].astype(a.dtype) for name, a in sd.items()}


@pytest.mark.parametrize("method", ["ot", "uniform", "pwl", "log2"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_safetensors_out_equals_the_published_code(method, bits, expected, state_dict, tmp_path, capsys):
    out = str(tmp_path / "q.safetensors")
    assert main(["quantize", INPUT, "--key", "model", "--method", method, "--bits", str(bits), "--paper-compat",
                 "--out", out]) == 0
    capsys.readouterr()
    back = fq.io.read_arrays(out)
    want = _published(expected, method, bits, state_dict)
    assert list(back) == list(state_dict)
    for name, a in state_dict.items():
        assert back[name].dtype == a.dtype, name
        np.testing.assert_array_equal(back[name], want[name], err_msg=f"{method} {bits} bits: {name}")


@pytest.mark.parametrize("method", ["ot", "log2"])
def test_packed_h5_out_dequantizes_to_the_published_code(method, expected, state_dict, tmp_path, capsys):
    out = str(tmp_path / "q.h5")
    assert main(["quantize", INPUT, "--key", "model", "--method", method, "--bits", "3", "--paper-compat",
                 "--out", out]) == 0
    capsys.readouterr()
    got = fq.io.load(out).dequantize()
    for name, want in _published(expected, method, 3, state_dict).items():
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(got[name], want, err_msg=name)


@pytest.mark.parametrize("method", ["ot", "uniform", "pwl", "log2"])
def test_the_plain_reference_agrees_with_the_published_code(method, expected, state_dict):
    """tests/naive.py's written-out published quantizers (used by the hypothesis and API tests) are right."""
    for bits in (2, 3, 4):
        ref = published_state_dict(state_dict, bits, method)
        for name, want in _published(expected, method, bits, state_dict).items():
            np.testing.assert_array_equal(ref[name], want, err_msg=f"{method} {bits}: {name}")


def test_the_kernel_rules_differ_from_the_published_code_where_documented(expected, state_dict):
    """Without paper_compat, ties, float16 uniform and log2 follow fmq_np's machine-independent rules: the fixture
    holds tensors where those differ, so this suite would notice a paper_compat path that fell back to them."""
    differs = set()
    for method in ("ot", "uniform", "log2"):
        for name in ("ties.weight", "half.weight", "input_blocks.0.0.weight"):
            a = state_dict[name]
            q = fq.quant.quantize(a, bits=3, method=method).dequantize()
            if not np.array_equal(q, expected[f"{method}/3/{name}"].astype(a.dtype)):
                differs.add((method, name))
    assert {("ot", "ties.weight"), ("uniform", "half.weight"), ("log2", "input_blocks.0.0.weight")} <= differs


def test_key_is_refused_for_files_that_are_not_torch_checkpoints(tmp_path, capsys):
    src = str(tmp_path / "w.npz")
    np.savez(src, w=np.ones((4, 4), np.float32))
    assert main(["quantize", src, "--key", "model", "--out", str(tmp_path / "q.h5")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "key='model'" in err and "torch checkpoint" in err
