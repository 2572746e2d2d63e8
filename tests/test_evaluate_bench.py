"""fmq_np.eval.compare (``fmq-np evaluate``) and fmq_np.bench (``fmq-np bench``)."""
import json
import os

import numpy as np
import pytest

import fmq_np as fq
from fmq_np.bench import synthetic_state_dict, table, time_methods, time_stream
from fmq_np.cli import main
from fmq_np.errors import InputError
from fmq_np.eval import compare, velocity_fidelity


def _quantized_copy(model, bits, method="ot"):
    q = fq.nn.MLPVelocity(**model.config())
    q.load_parameters(fq.quant.quantize_model(model.parameters(), bits=bits, method=method).dequantize())
    return q


def test_velocity_fidelity_closed_forms():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 2))
    out = velocity_fidelity(v, 1.1 * v)
    assert out["rel_error"] == pytest.approx(0.1)
    assert out["rmse"] == pytest.approx(0.1 * np.sqrt(np.mean(v ** 2)))
    assert "psnr" not in out                                  # PSNR/SSIM only for image batches
    img = rng.standard_normal((3, 1, 12, 12))
    same = velocity_fidelity(img, img)
    assert same["rmse"] == 0 and same["ssim"] == pytest.approx(1.0)
    noisy = velocity_fidelity(img, img + 0.05 * rng.standard_normal(img.shape))
    noisier = velocity_fidelity(img, img + 0.2 * rng.standard_normal(img.shape))
    assert noisy["psnr"] > noisier["psnr"] and noisy["ssim"] > noisier["ssim"]
    with pytest.raises(InputError, match="shape"):
        velocity_fidelity(v, v[:3])


def test_compare_a_model_with_itself_and_with_its_quantized_versions():
    model = fq.nn.MLPVelocity(dim=2, hidden=32, depth=2, seed=1)
    data = fq.datasets.load("moons", n=400, seed=0)
    same = compare(model, model, data, n=100, steps=4)
    assert same["drift"] == 0 and same["rmse"] == 0 and same["sw2_float"] == same["sw2_quantized"]
    low = compare(model, _quantized_copy(model, 2), data, n=100, steps=4)
    high = compare(model, _quantized_copy(model, 4), data, n=100, steps=4)      # 16 levels on 32-value rows
    assert 0 < high["drift"] < low["drift"] and 0 < high["rel_error"] < low["rel_error"]
    assert same["mmd_float"] == same["mmd_quantized"] and low["mmd_bandwidth"] == same["mmd_bandwidth"]
    with pytest.raises(InputError, match="needs at least"):
        compare(model, model, data, n=300)


def test_likelihood_of_a_model_against_itself_differs_by_nothing():
    model = fq.nn.MLPVelocity(dim=2, hidden=32, depth=2, seed=1)
    data = fq.datasets.load("moons", n=400, seed=0)
    same = compare(model, model, data, n=100, steps=4, likelihood=20)["bits_per_dim"]
    assert same["quantized_minus_float"] == 0 and same["float"] == same["quantized"] and same["n"] == 20
    other = compare(model, _quantized_copy(model, 2), data, n=100, steps=4, likelihood=20)["bits_per_dim"]
    assert other["float"] == same["float"] and other["quantized_minus_float"] != 0
    with pytest.raises(InputError, match="likelihood"):
        compare(model, model, data, n=100, likelihood=-1)


def test_evaluate_command(tmp_path, capsys):
    m, q, js = (str(tmp_path / f) for f in ("m.h5", "q.h5", "e.json"))
    assert main(["train", "--dataset", "moons", "--steps", "20", "--hidden", "16", "--depth", "1",
                 "--batch-size", "32", "--out", m]) == 0
    assert main(["quantize", m, "--bits", "2", "--out", q]) == 0
    capsys.readouterr()
    assert main(["evaluate", m, q, "-n", "64", "--steps", "3", "--json", js]) == 0
    out = capsys.readouterr().out
    assert "RMS drift" in out and "sliced-W2" in out and "MMD^2" in out
    res = json.load(open(js))
    assert res["dataset"] == "moons" and res["n"] == 64 and res["drift"] > 0
    bpd = res["bits_per_dim"]                     # default --likelihood 32, exact divergence on 2-D data
    assert bpd["n"] == 32 and bpd["method"] == "exact" and "bits/dim on 32 data points (exact)" in out
    assert bpd["ci"][0] <= bpd["quantized_minus_float"] <= bpd["ci"][1]
    other = str(tmp_path / "other.h5")
    assert main(["train", "--dataset", "moons", "--steps", "2", "--hidden", "8", "--depth", "1", "--out", other]) == 0
    capsys.readouterr()
    assert main(["evaluate", other, q]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not a quantized version" in err and "\n" not in err
    assert main(["bench", q]) == 1                                # a quantized file is not a weight file to bench
    assert "already quantized" in capsys.readouterr().err


def test_synthetic_state_dict():
    a, b = synthetic_state_dict(50_000, seed=3), synthetic_state_dict(50_000, seed=3)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    n = sum(v.size for v in a.values())
    assert 50_000 - 1024 < n <= 50_000 and all(v.dtype == np.float32 for v in a.values())
    big = synthetic_state_dict(10**7)
    assert sum(v.ndim == 4 for v in big.values()) == 24 and sum(v.ndim == 1 for v in big.values()) == 24
    with pytest.raises(InputError):
        synthetic_state_dict(10)


def test_time_methods_and_bench_command(capsys):
    sd = synthetic_state_dict(20_000)
    rows = time_methods(sd, bits=2, methods=("ot", "uniform"), repeat=1)
    assert [r["method"] for r in rows] == ["ot", "uniform", "copy"]
    assert all(r["median_s"] > 0 and r["mvalues_per_s"] > 0 for r in rows)
    assert "uniform" in table(rows, 20_000, 2)
    with pytest.raises(InputError):
        time_methods({"i": np.arange(5)})
    assert main(["bench", "--params", "5000", "--repeat", "1", "--methods", "ot,pwl"]) == 0
    out = capsys.readouterr().out
    assert "pwl" in out and "copy" in out
    assert main(["bench", "--methods", "ot,nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_time_stream_reads_and_quantizes_every_tensor(tmp_path, capsys):
    sd = synthetic_state_dict(40_000, seed=1)
    src = str(tmp_path / "w.npz")
    np.savez(src, **sd)
    result = time_stream(src, bits=3, methods=("ot", "uniform"))
    assert result["tensors"] == len(sd) and result["bytes_in"] == sum(v.nbytes for v in sd.values())
    assert [r["method"] for r in result["rows"]] == ["ot", "uniform"]
    # fp32 at 3 bits: codes + codebooks are far smaller than the input, and the file is the one quantize writes
    q = str(tmp_path / "q.h5")
    fq.quant.quantize_file(src, q, bits=3, method="ot", progress=False)
    assert result["rows"][0]["bytes_out"] == os.path.getsize(q) < result["bytes_in"] / 3
    assert main(["bench", src, "--stream", "--methods", "ot", "--bits", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{len(sd)} tensors" in out and "read" in out and "ot" in out
    assert main(["bench", "--stream", "--params", "5000", "--methods", "uniform"]) == 0
    assert "uniform" in capsys.readouterr().out
