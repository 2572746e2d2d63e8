"""End-to-end smoke run of the scaled-down five-dataset sweep (``fmq-np reproduce --scale tiny``)."""
import json
import os

import pytest

import fmq_np as fq
from fmq_np import reproduce
from fmq_np.cli import main


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("repro"))
    first = reproduce.run(out, datasets=["mnist", "faces"], bits=(8, 2), methods=["uniform", "ot-opt"],
                             scale="tiny", progress=False)
    return out, first


def test_report_json_and_pngs_exist_with_real_numbers(sweep):
    out, results = sweep
    on_disk = json.load(open(os.path.join(out, "results.json")))
    assert list(on_disk["datasets"]) == ["mnist", "faces"] and on_disk["bits"] == [2, 8]
    report = open(os.path.join(out, "report.md")).read()
    for needle in ("## mnist", "## faces", "| ot-opt | 2 |", "| uniform | 8 |", "FD of the float model",
                   "What is scaled down"):
        assert needle in report
    for name in ("mnist", "faces"):
        for png in ("real.png", "samples_float.png", "samples_uniform_2bit.png", "samples_ot-opt_2bit.png"):
            assert open(os.path.join(out, name, png), "rb").read(4) == b"\x89PNG"
        runs = {(r["method"], r["bits"]): r for r in results["datasets"][name]["runs"]}
        assert len(runs) == 4
        for method in ("uniform", "ot-opt"):
            low, high = runs[method, 2], runs[method, 8]
            assert high["psnr"] > low["psnr"] + 20 and high["ssim"] > low["ssim"]
            assert high["weight_mse"] < low["weight_mse"] / 100 and high["drift"] < low["drift"]
            assert 0 <= low["ssim"] <= 1 and low["fd"] >= 0
        # the exact W2-optimal codebook never has a larger weight error than uniform at the same bits
        assert runs["ot-opt", 2]["weight_mse"] <= runs["uniform", 2]["weight_mse"]
    assert results["datasets"]["mnist"]["fd_data"] is not None and results["datasets"]["faces"]["fd_data"] is None
    assert "latent variance (collapsed)" in report and "Latent stability of the float model" in report
    assert "Theory check" in report
    for name in ("mnist", "faces"):                   # the uniform prediction Δ²/12 is of the right size
        for r in results["datasets"][name]["runs"]:
            assert r["predicted_mse"] is not None
            if r["method"] == "uniform":
                assert 0.2 < r["predicted_mse"] / r["weight_mse"] < 5
    for name in ("mnist", "faces"):
        entry = results["datasets"][name]
        for r in entry["runs"]:                       # 8-bit weights barely move the latent variances
            assert 0 <= r["latent"]["collapsed"] <= r["latent"]["n_components"]
        high = next(r for r in entry["runs"] if r["method"] == "ot-opt" and r["bits"] == 8)["latent"]
        assert high["mean_variance"] == pytest.approx(entry["latent_float"]["mean_variance"], rel=0.05)


def test_rerun_reuses_the_checkpoint(sweep):
    out, first = sweep
    ckpt = os.path.join(out, "mnist", "float.h5")
    before = os.stat(ckpt).st_mtime_ns
    again = reproduce.run(out, datasets=["mnist"], bits=(2,), methods=["ot-opt"], scale="tiny", progress=False)
    assert again["datasets"]["mnist"]["trained"] is False and first["datasets"]["mnist"]["trained"] is True
    assert os.stat(ckpt).st_mtime_ns == before
    assert again["datasets"]["mnist"]["runs"][0] == first["datasets"]["mnist"]["runs"][2]   # ot-opt 2-bit


def test_other_settings_on_an_existing_checkpoint_are_refused(sweep):
    out, _ = sweep
    with pytest.raises(fq.InputError, match="trained with other settings"):
        reproduce.run(out, datasets=["mnist"], bits=(2,), methods=["ot"], scale="tiny", seed=1, progress=False)


@pytest.mark.parametrize("argv,needle", [
    (["--bits", "2,9"], "bits must be"),
    (["--bits", "two"], "--bits must be comma-separated"),
    (["--datasets", "cifar10"], "unknown dataset"),
    (["--datasets", "moons"], "not part of the sweep"),
    (["--methods", "ot,kmeans"], "methods must be"),
])
def test_cli_bad_input_is_one_line_and_nonzero(argv, needle, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["reproduce", "--out", str(out), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and not out.exists()


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--datasets", "--bits", "--methods", "--scale", "--seed", "tiny", "quick", "full"):
        assert option in text


def test_ctrl_c_keeps_the_results_so_far(sweep, monkeypatch):
    out, _ = sweep
    real_measure, calls = reproduce._Evaluator.measure, []

    def measure_then_interrupt(self, method, bits):
        calls.append((method, bits))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_measure(self, method, bits)
    monkeypatch.setattr(reproduce._Evaluator, "measure", measure_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run(out, datasets=["mnist"], bits=(2, 8), methods=["uniform"], scale="tiny", progress=False)
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["interrupted"] is True and len(saved["datasets"]["mnist"]["runs"]) == 1
    assert "interrupted (Ctrl-C)" in open(os.path.join(out, "report.md")).read()
