"""The five-dataset sweep (``fmq-np reproduce``) end to end at ``--scale tiny``, its bad-input paths, and the
verdict logic. The sweep runs on untrained stand-in models written to a temporary folder (fast, and independent of
the shipped ones); tests/test_shipped_models.py checks the shipped models and feature nets themselves."""
import json
import math
import os

import numpy as np
import pytest

import fmq_np as fq
from fmq_np import datasets, recipes, reproduce, reproduce_report
from fmq_np.cli import main
from fmq_np.errors import InputError
from fmq_np.reproduce_report import KEEP_TOLERANCE, verdicts


def write_models(folder, names):
    """Untrained models of the shipped recipes, with the metadata a finished training run records."""
    os.makedirs(folder, exist_ok=True)
    for name in names:
        dataset, settings = recipes.recipe(name)
        fq.io.save_model(os.path.join(folder, f"{name}.h5"), recipes.build(name),
                         meta={"dataset": dataset, "recipe": settings, "trained_steps": recipes.total_steps(settings),
                               "seconds": 1.0})
        if datasets.has_labels(dataset):
            c, size, _ = datasets.data_shape(dataset)
            net = fq.nn.Classifier(channels=c, size=size, n_classes=10, width=4, hidden=16, seed=0)
            fq.io.save_model(os.path.join(folder, f"features_{dataset}.h5"), net,
                             meta={"dataset": dataset, "test_accuracy": 0.1, "features": 16})
    return folder


def measured_numbers(results, name="mnist"):
    """Everything a run measured on dataset ``name``, without its wall times (to compare runs)."""
    entry = dict(results["datasets"][name])
    for key in ("seconds", "model_file"):
        entry.pop(key)
    for key in ("calibration", "paper_sampler"):
        if entry.get(key):
            entry[key] = {k: v for k, v in entry[key].items() if k != "seconds"}
    return json.loads(json.dumps(entry, default=float))


def differences(a, b, path="", rel=1e-6, absolute=()):
    """Where two JSON-like trees differ: ``(path, a value, b value)`` for every leaf that is not equal. Floats may
    differ by float32 rounding, which a process with another thread count, memory alignment or compiled
    specialisation can change in a sum: ``rel`` relative, or the absolute tolerance of the first ``(substring,
    tolerance)`` of ``absolute`` whose substring is in the leaf's path (for differences of close numbers)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(a) + [k for k in b if k not in a]
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{path}.{k}", rel, absolute)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in differences(u, v, f"{path}[{i}]", rel, absolute)]
    if isinstance(a, float) and isinstance(b, float) and math.isclose(
            a, b, rel_tol=rel, abs_tol=next((tol for key, tol in absolute if key in path), 0.0)):
        return []
    return [] if a == b else [(path, a, b)]


def _fds(tree):
    """Every value stored under a key ``fd`` in a JSON-like tree."""
    if isinstance(tree, dict):
        return [x for k, v in tree.items() for x in ([v] if k == "fd" and isinstance(v, float) else _fds(v))]
    return [x for v in tree for x in _fds(v)] if isinstance(tree, list) else []


def run_differences(a, b, rel=1e-6):
    """:func:`differences` of two runs' :func:`measured_numbers`: the paired differences (``fd_minus_*``, between
    FDs that nearly cancel) to ``rel`` of the largest FD, bits/dim figures to 1e-6 bits (measured between a serial
    run and worker processes: up to 2e-10 in FD differences of the tiny scale, whose FDs are about 1e-3; 1e-8
    bits/dim from a fresh clone)."""
    scale = max(map(abs, _fds(a)), default=0.0)
    return differences(a, b, rel=rel, absolute=((".likelihood.", 1e-6), ("fd_minus", rel * scale)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(str(tmp_path_factory.mktemp("models")), ["mnist", "faces"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, models):
    out = str(tmp_path_factory.mktemp("repro"))
    first = reproduce.run(out, datasets=["mnist", "faces"], bits=(8, 2), methods=["ot", "uniform"],
                          scale="tiny", progress=False, models_dir=models)
    return out, first


def test_report_json_and_pngs_exist_with_real_numbers(sweep):
    out, results = sweep
    on_disk = json.load(open(os.path.join(out, "results.json")))
    assert list(on_disk["datasets"]) == ["mnist", "faces"] and on_disk["bits"] == [2, 8]
    report = open(os.path.join(out, "report.md")).read()
    for needle in ("## mnist", "## faces", "| ot | 2 |", "| uniform | 8 |", "FD of the float model",
                   "The paper's claim", "What is scaled down", "No FD for this set", "Theory check"):
        assert needle in report
    for name in ("mnist", "faces"):
        for png in ("real.png", "samples_float.png", "samples_uniform_2bit.png", "samples_ot_2bit.png"):
            assert open(os.path.join(out, name, png), "rb").read(4) == b"\x89PNG"
        runs = {(r["method"], r["bits"]): r for r in results["datasets"][name]["runs"]}
        assert len(runs) == 4
        for method in ("uniform", "ot"):
            low, high = runs[method, 2], runs[method, 8]
            assert high["psnr"] > low["psnr"] + 20 and high["ssim"] > low["ssim"]
            assert high["weight_mse"] < low["weight_mse"] / 100 and high["drift"] < low["drift"]
        assert runs["ot", 2]["weight_mse"] <= runs["uniform", 2]["weight_mse"]


def test_every_fd_has_its_interval_sample_count_and_method(sweep):
    _, results = sweep
    entry = results["datasets"]["mnist"]
    cfg = reproduce.SCALES["tiny"]
    assert entry["fd_floor"]["n_samples"] == cfg["n_samples"] and entry["fd_floor"]["draws"] >= 2
    assert entry["fd_noise"] > entry["fd_floor"]["mean"]
    for r in entry["runs"]:
        fd = r["fd"]
        assert fd["ci"][0] <= fd["ci"][1] and fd["n_samples"] == cfg["n_samples"] and "bootstrap" in fd["method"]
        assert fd["groups"] == (cfg["seeds"] if r["bits"] in cfg["headline_bits"] else 1) == r["seeds"]
        assert r["fd_minus_float"]["significant"] == (not r["fd_minus_float"]["ci"][0] <= 0 <=
                                                      r["fd_minus_float"]["ci"][1])
        assert ("fd_minus_ot" in r) == (r["method"] != "ot")
    # 8-bit weights barely change the samples: their FD is the float model's within the noise of the estimate
    for r in entry["runs"]:
        if r["bits"] == 8:
            assert abs(r["fd_minus_float"]["diff"]) < 0.05 * entry["fd_float"]["fd"]
    assert "fd" not in results["datasets"]["faces"]["runs"][0] and results["datasets"]["faces"]["fd_floor"] is None


def test_bits_per_dim_are_paired_with_the_float_model(sweep):
    _, results = sweep
    for entry in results["datasets"].values():
        lik = entry["likelihood_float"]
        assert lik["n"] == reproduce.SCALES["tiny"]["n_likelihood"] and lik["minus_float"] == 0.0
        assert np.isfinite(lik["bits_per_dim"])
        runs = {(r["method"], r["bits"]): r["likelihood"] for r in entry["runs"]}
        for r in runs.values():
            assert r["ci_minus_float"][0] <= r["minus_float"] <= r["ci_minus_float"][1]
        # 8-bit weights move the likelihood far less than 2-bit ones
        assert abs(runs["ot", 8]["minus_float"]) < abs(runs["ot", 2]["minus_float"])


def test_same_seed_gives_the_same_numbers(sweep, models, tmp_path):
    _, first = sweep
    again = reproduce.run(str(tmp_path), datasets=["mnist"], bits=(2, 8), methods=["ot", "uniform"], scale="tiny",
                          progress=False, models_dir=models)
    a, b = first["datasets"]["mnist"], again["datasets"]["mnist"]
    assert a["runs"] == b["runs"] and a["fd_float"] == b["fd_float"] and a["fd_floor"] == b["fd_floor"]


def test_a_finished_dataset_is_reused_and_a_changed_model_is_not(sweep, models, tmp_path):
    import shutil
    out, first = sweep
    copy = str(tmp_path / "out")
    shutil.copytree(out, copy)
    again = reproduce.run(copy, datasets=["faces", "mnist"], bits=(8, 2), methods=["ot", "uniform"], scale="tiny",
                          progress=False, models_dir=models)
    assert again["datasets"]["mnist"] == first["datasets"]["mnist"] and list(again["datasets"]) == ["faces", "mnist"]
    other = write_models(str(tmp_path / "models"), ["mnist", "faces"])
    changed = recipes.build("faces")                       # same recipe, other weights
    changed.load_parameters({k: v * np.float32(1.01) for k, v in changed.parameters().items()})
    fq.io.save_model(os.path.join(other, "faces.h5"), changed,
                     meta={"dataset": "faces", "recipe": recipes.recipe("faces")[1],
                           "trained_steps": recipes.recipe("faces")[1]["steps"], "seconds": 2.0})
    third = reproduce.run(copy, datasets=["faces"], bits=(8, 2), methods=["ot", "uniform"], scale="tiny",
                          progress=False, models_dir=other)
    assert third["datasets"]["faces"]["model_sha256"] != first["datasets"]["faces"]["model_sha256"]


def _verdict_entry(ot, others, float_fd=10.0):
    """A dataset entry whose 2-bit rows have the given paired differences (diff, lo, hi)."""
    def diff(d):
        return dict(diff=d[0], ci=[d[1], d[2]], significant=d[1] > 0 or d[2] < 0)
    runs = [dict(method="ot", bits=2, fd={}, fd_minus_float=diff(ot))]
    runs += [dict(method=m, bits=2, fd={}, fd_minus_ot=diff(d), fd_minus_float=diff(d)) for m, d in others.items()]
    return dict(runs=runs, headline_bits=[2], fd_float=dict(fd=float_fd))


@pytest.mark.parametrize("ot,others,expected", [
    ((0.5, -0.5, 1.5), dict(uniform=(9, 5, 12), pwl=(4, 1, 6), log2=(20, 15, 25)), "supports"),
    ((0.5, -0.5, 1.5), dict(uniform=(9, 5, 12), pwl=(1, -1, 3), log2=(20, 15, 25)), "cannot tell"),
    ((0.5, -0.5, 1.5), dict(uniform=(-3, -5, -1), pwl=(4, 1, 6), log2=(20, 15, 25)), "contradicts"),
    ((6.0, 4.0, 8.0), dict(uniform=(9, 5, 12), pwl=(4, 1, 6), log2=(20, 15, 25)), "contradicts"),
    ((2.0, 0.5, 3.0), dict(uniform=(9, 5, 12), pwl=(4, 1, 6), log2=(20, 15, 25)), "cannot tell"),
])
def test_verdict_follows_the_intervals(ot, others, expected):
    assert KEEP_TOLERANCE == 0.25          # the cases above put 2.5 (= 0.25 x FD 10) between "keeps" and "loses"
    per_bits, overall = verdicts(_verdict_entry(ot, others))
    assert per_bits[2][0] == expected and overall == expected


def test_ctrl_c_keeps_the_results_so_far(sweep, models, monkeypatch, tmp_path):
    real_measure, calls = reproduce.Evaluator.measure, []

    def measure_then_interrupt(self, method, bits, seeds=1):
        calls.append((method, bits))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_measure(self, method, bits, seeds)
    monkeypatch.setattr(reproduce.Evaluator, "measure", measure_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run(str(tmp_path), datasets=["mnist"], bits=(2, 8), methods=["uniform"], scale="tiny",
                      progress=False, models_dir=models)
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["interrupted"] is True and len(saved["datasets"]["mnist"]["runs"]) == 1
    assert "fd" in saved["datasets"]["mnist"]["runs"][0]          # its statistics were still computed
    assert "interrupted (Ctrl-C)" in open(tmp_path / "report.md").read()


def test_ctrl_c_during_the_statistics_still_writes_a_report(models, monkeypatch, tmp_path):
    """A second Ctrl-C (or SIGTERM) while the bootstrap runs: the report says the set has no FD yet (it used to
    fail with a KeyError on the missing statistics and write nothing)."""
    def interrupted(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(reproduce_report, "dataset_statistics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run(str(tmp_path), datasets=["mnist"], bits=(2,), methods=["ot"], scale="tiny", progress=False,
                      models_dir=models)
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["interrupted"] is True and len(saved["datasets"]["mnist"]["runs"]) == 1
    assert "stopped before this set's FD statistics" in open(tmp_path / "report.md").read()


def test_a_finished_dataset_is_on_disk_before_the_next_one_starts(models, monkeypatch, tmp_path):
    real_init = reproduce.Evaluator.__init__

    def crash_on_faces(self, name, *args, **kw):
        if name == "faces":
            raise RuntimeError("machine lost")
        real_init(self, name, *args, **kw)
    monkeypatch.setattr(reproduce.Evaluator, "__init__", crash_on_faces)
    with pytest.raises(RuntimeError, match="machine lost"):
        reproduce.run(str(tmp_path), datasets=["mnist", "faces"], bits=(2,), methods=["ot"], scale="tiny",
                      progress=False, models_dir=models)
    mnist = json.load(open(tmp_path / "results.json"))["datasets"]["mnist"]
    assert "seconds" in mnist and "fd" in mnist["runs"][0]      # complete, statistics included: reusable


def test_sigterm_keeps_the_results_so_far(models, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "fmq_np.cli", "reproduce", "--out", str(out), "--models", models,
                             "--datasets", "mnist", "--bits", "2,3,4,8", "--methods", "ot,uniform,pwl,log2",
                             "--scale", "tiny"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:     # wait for the first measured row
        try:
            if json.load(open(out / "results.json"))["datasets"]["mnist"]["runs"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    saved = json.load(open(out / "results.json"))
    if proc.returncode == 0:                 # the run was quicker than the signal: nothing was interrupted
        assert len(saved["datasets"]["mnist"]["runs"]) == 16
        return
    assert proc.returncode == 130 and "interrupted: terminated (SIGTERM)" in err
    assert saved["interrupted"] is True and saved["datasets"]["mnist"]["runs"]
    assert "interrupted" in open(out / "report.md").read()


def test_paper_sampler_check_reports_its_fd_and_the_gap(models, monkeypatch, tmp_path):
    monkeypatch.setitem(reproduce.SCALES, "tiny", dict(reproduce.SCALES["tiny"], paper_check=16))
    monkeypatch.setitem(reproduce.PAPER_STEPS, "midpoint", 3)
    res = reproduce.run(str(tmp_path), datasets=["mnist", "faces"], bits=(2,), methods=["ot"], scale="tiny",
                        progress=False, models_dir=models)
    assert res["datasets"]["faces"]["paper_sampler"] is None          # no feature net, so no FD to check
    paper = res["datasets"]["mnist"]["paper_sampler"]
    assert paper["solver"] == "midpoint" and paper["steps"] == 3 and paper["n_samples"] == 16
    assert paper["fd"]["n_samples"] == paper["fd_default_same_noise"]["n_samples"] == 16
    assert paper["fd"]["ci"][0] <= paper["fd"]["ci"][1] and "diff" in paper["fd_minus_default"]
    report = open(tmp_path / "report.md").read()
    assert "The paper's sampler (midpoint, 3 steps, " in report and "on the first 16 noise vectors" in report


def test_paper_sampler_with_the_default_settings_gives_the_default_fd(models, monkeypatch, tmp_path):
    """With the paper's steps set to the default's, the check samples exactly the default's images: equal FDs."""
    monkeypatch.setitem(reproduce.SCALES, "tiny", dict(reproduce.SCALES["tiny"], paper_check=24))
    monkeypatch.setitem(reproduce.PAPER_STEPS, "midpoint", reproduce.SCALES["tiny"]["steps"])
    res = reproduce.run(str(tmp_path), datasets=["mnist"], bits=(2,), methods=["ot"], scale="tiny",
                        progress=False, models_dir=models)
    entry = res["datasets"]["mnist"]
    paper = entry["paper_sampler"]
    assert paper["fd"]["fd"] == paper["fd_default_same_noise"]["fd"] == entry["fd_float"]["fd"]
    assert paper["fd_minus_default"]["diff"] == 0 and not paper["fd_minus_default"]["significant"]


# ------------------------------------------------------------------------------------------------ bad input
def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_missing_model_names_the_file_and_the_fix(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--datasets", "mnist", "--scale", "tiny",
                 "--models", str(tmp_path)]) == 1
    err = _one_line_error(capsys)
    assert str(tmp_path / "mnist.h5") in err and "train_models.py mnist" in err and not (tmp_path / "r").exists()


def test_corrupt_model_is_a_format_error_naming_the_file(tmp_path):
    (tmp_path / "mnist.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 600)
    with pytest.raises(fq.FormatError, match="mnist.h5.*train_models.py mnist"):
        reproduce.run(str(tmp_path / "r"), datasets=["mnist"], scale="tiny", progress=False, models_dir=str(tmp_path))


def test_model_trained_with_other_settings_is_refused(tmp_path):
    dataset, settings = recipes.recipe("mnist")
    fq.io.save_model(str(tmp_path / "mnist.h5"), recipes.build("mnist"),
                     meta={"dataset": dataset, "recipe": dict(settings, lr=0.5),
                           "trained_steps": recipes.total_steps(settings)})
    with pytest.raises(fq.FormatError, match="trained with other settings"):
        reproduce.run(str(tmp_path / "r"), datasets=["mnist"], scale="tiny", progress=False, models_dir=str(tmp_path))


def test_rows_in_local_worker_processes_equal_the_serial_run(models, monkeypatch, tmp_path):
    """Also the paper-sampler check, which runs beside the worker processes (in a thread) instead of before."""
    monkeypatch.setitem(reproduce.SCALES, "tiny", dict(reproduce.SCALES["tiny"], paper_check=8))
    kw = dict(datasets=["mnist"], bits=(2, 3), methods=["ot", "ot-opt+ef"], scale="tiny", progress=False,
              models_dir=models)
    serial = reproduce.run(str(tmp_path / "serial"), **kw)
    spread = reproduce.run(str(tmp_path / "workers"), workers=2, **kw)
    assert [(r["method"], r["bits"]) for r in spread["datasets"]["mnist"]["runs"]] == \
        [(m, b) for m in ("ot", "ot-opt+ef") for b in (2, 3)]
    assert spread["datasets"]["mnist"]["paper_sampler"]["fd"]["n_samples"] == 8
    assert run_differences(measured_numbers(spread), measured_numbers(serial)) == []
    with pytest.raises(InputError, match="workers must be"):
        reproduce.run(str(tmp_path / "w0"), workers=0, **kw)


def test_feature_net_of_another_image_size_is_refused(tmp_path, models):
    folder = write_models(str(tmp_path), ["mnist"])
    fq.io.save_model(os.path.join(folder, "features_mnist.h5"),
                     fq.nn.Classifier(channels=3, size=32, n_classes=5, width=4, hidden=8), meta={})
    with pytest.raises(fq.FormatError, match="features_mnist.h5: feature net is for 3×32×32 images"):
        reproduce.run(str(tmp_path / "r"), datasets=["mnist"], scale="tiny", progress=False, models_dir=folder)


@pytest.mark.parametrize("argv,needle", [
    (["--bits", "2,9"], "bits must be"),
    (["--bits", "two"], "--bits must be comma-separated"),
    (["--datasets", "cifar10"], "unknown dataset"),
    (["--datasets", "moons"], "not part of the sweep"),
    (["--methods", "ot,kmeans"], "methods must be"),
    (["--quick", "--datasets", "mnist"], "--quick sets --datasets itself"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
])
def test_cli_bad_input_is_one_line_and_nonzero(argv, needle, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["reproduce", "--out", str(out), *argv]) == 1
    assert needle in _one_line_error(capsys) and not out.exists()


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--quick", "--datasets", "--bits", "--methods", "--scale", "--models", "--seed",
                   "--scheduler", "--workers", "tiny", "quick", "default", "paper"):
        assert option in text


def test_cli_runs_the_sweep(models, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["reproduce", "--out", str(out), "--datasets", "faces", "--bits", "2", "--methods", "ot-opt",
                 "--scale", "tiny", "--models", models]) == 0
    saved = json.load(open(out / "results.json"))
    assert saved["command"].startswith("fmq-np reproduce --out") and len(saved["datasets"]["faces"]["runs"]) == 1
    assert np.isfinite(saved["datasets"]["faces"]["runs"][0]["psnr"])


def test_calibrated_methods_run_in_the_sweep_with_their_calibration_recorded(models, tmp_path):
    res = reproduce.run(str(tmp_path), datasets=["mnist"], bits=(2,), methods=["ot", "ot-opt+ef", "ot-opt+bc"],
                        scale="tiny", progress=False, models_dir=models)
    entry = res["datasets"]["mnist"]
    rows = {r["method"]: r for r in entry["runs"]}
    params = reproduce.load_shipped_model("mnist", models)[0].parameters()
    one_d = sum(1 for a in params.values() if a.ndim == 1)
    for m in ("ot-opt+ef", "ot-opt+bc"):
        assert rows[m]["kept_float"] >= one_d            # calibrated rows keep every 1-D tensor in float
        assert 2 <= rows[m]["bits_per_weight"] and rows[m]["fd"]["n_samples"] == entry["n_samples"]
        assert "fd_minus_ot" in rows[m]
    assert rows["ot"]["kept_float"] < one_d              # the paper's rows quantize 1-D tensors too
    cal = entry["calibration"]
    assert cal["n"] == reproduce.SCALES["tiny"]["calib_n"] and cal["solver"] == entry["solver"]
    report = open(tmp_path / "report.md").read()
    assert "Calibration of the calibrated rows" in report and "| ot-opt+ef | 2 |" in report


def test_tuned_methods_keep_their_base_rows_codes_and_record_the_tuning(models, tmp_path):
    res = reproduce.run(str(tmp_path), datasets=["mnist"], bits=(2,),
                        methods=["ot", "ot+tune", "ot-opt+ef+tune", "ot-opt+ef+qat"], scale="tiny", progress=False,
                        models_dir=models)
    entry = res["datasets"]["mnist"]
    rows = {r["method"]: r for r in entry["runs"]}
    tiny = reproduce.SCALES["tiny"]
    for m in ("ot+tune", "ot-opt+ef+tune"):
        info = rows[m]["tuned"]
        assert (info["n"], info["iters"], info["lr"]) == (tiny["tune_n"], tiny["tune_iters"], tiny["tune_lr"])
        assert info["solver"] == entry["solver"]
        assert info["heldout_mse_after"] <= info["heldout_mse_before"] or not info["kept"]
    qat = rows["ot-opt+ef+qat"]["tuned"]                     # the +tune row, then half as many steps, codes free
    assert (qat["codes"], qat["iters"], qat["previous"]["iters"]) == ("free", tiny["tune_iters"] // 2,
                                                                      tiny["tune_iters"])
    assert rows["ot-opt+ef+qat"]["bits_per_weight"] == rows["ot-opt+ef+tune"]["bits_per_weight"]
    assert rows["ot+tune"]["bits_per_weight"] == rows["ot"]["bits_per_weight"]      # same codes, same storage
    assert rows["ot+tune"]["kept_float"] == rows["ot"]["kept_float"]
    assert entry["calibration"] is not None                          # ot-opt+ef+tune's base row is calibrated
    report = open(tmp_path / "report.md").read()
    assert "Codebook tuning of the `+tune` rows" in report and "| ot-opt+ef+tune | 2 |" in report
    assert f"more steps with free codes, {qat['code_changes']} code changes" in report
    assert qat["previous"] == rows["ot-opt+ef+tune"]["tuned"]          # started from that row's tuned model
    with pytest.raises(InputError, match="tuning step"):
        reproduce.quantize_row(reproduce.load_shipped_model("mnist", models)[0].parameters(), "ot+tune", 2)


def test_a_qat_row_reuses_its_tune_row(models, monkeypatch):
    params = reproduce.load_shipped_model("mnist", models)[0].parameters()
    calls = []

    def tune(qm, codes):
        calls.append(codes)
        return qm
    done = {}
    first = reproduce.quantize_row(params, "ot+tune", 2, tune=tune, tuned=done)
    monkeypatch.setitem(reproduce.TUNED, "ot+qat-test", ("ot+tune", "free"))
    reproduce.quantize_row(params, "ot+qat-test", 2, tune=tune, tuned=done)
    assert calls == ["fixed", "free"] and done["ot+tune", 2] is first          # the +tune row was not tuned again
    reproduce.quantize_row(params, "ot+qat-test", 2, tune=tune)               # without the dict: both steps again
    assert calls == ["fixed", "free", "fixed", "free"]


def test_sweep_without_calibrated_methods_calibrates_nothing(sweep):
    _, first = sweep
    assert all(e["calibration"] is None for e in first["datasets"].values())
