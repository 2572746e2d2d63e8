"""The hostile-input pass of issue 12, one test per finding: no data loss, no raw traceback, nothing silently wrong,
clear messages, honest sizes."""
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import h5py
import numpy as np
import pytest

import fmq_np as fq
from fmq_np import _atomic
from fmq_np.cli import main
from fmq_np.errors import FormatError, InputError

TINY = ["--hidden", "8", "--depth", "1", "--batch-size", "16", "--n-data", "256"]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "warning:" not in ln]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny trained MLP, a second one of the same architecture and config (one step more) and the first one
    quantized."""
    d = tmp_path_factory.mktemp("hostile")
    paths = {"m": str(d / "m.h5"), "other": str(d / "other.h5"), "q": str(d / "q.h5")}
    assert main(["train", "--dataset", "moons", "--steps", "3", *TINY, "--out", paths["m"]]) == 0
    assert main(["train", "--dataset", "moons", "--steps", "4", *TINY, "--out", paths["other"]]) == 0
    assert main(["quantize", paths["m"], "--bits", "3", "--out", paths["q"]]) == 0
    return paths


# ------------------------------------------------------------------------------------------------- data loss
def test_sample_refuses_to_overwrite_its_model(files, capsys, tmp_path, monkeypatch):
    before = open(files["m"], "rb").read()
    assert main(["sample", files["m"], "--out", files["m"]]) == 1
    _one_line_error(capsys, "same file as the model")
    link = tmp_path / "link.h5"
    os.symlink(files["m"], link)                       # the same file under another name
    monkeypatch.chdir(os.path.dirname(files["m"]))
    assert main(["sample", "m.h5", "--png", str(link)]) == 1
    _one_line_error(capsys, "same file")
    assert open(files["m"], "rb").read() == before


def test_quantize_refuses_to_overwrite_its_input(files, capsys, tmp_path):
    npz = tmp_path / "w.npz"
    np.savez(npz, w=np.ones((4, 8), np.float32))
    before = npz.read_bytes()
    assert main(["quantize", str(npz), "--out", str(npz)]) == 1
    _one_line_error(capsys, "same file as the input")
    assert npz.read_bytes() == before
    model_bytes = open(files["m"], "rb").read()
    assert main(["quantize", files["m"], "--out", files["m"]]) == 1
    assert open(files["m"], "rb").read() == model_bytes


def test_train_refuses_checkpoint_equal_to_out(tmp_path, capsys):
    ck = str(tmp_path / "s.h5")
    assert main(["train", "--dataset", "moons", "--steps", "2", *TINY, "--checkpoint", ck, "--out", ck]) == 1
    _one_line_error(capsys, "same file as --checkpoint")
    assert not os.path.exists(ck)


# ------------------------------------------------------------------------------------------ raw tracebacks
@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "moons", "--out", "x.h5"], ["sample", "m.h5"], ["evaluate", "m.h5", "q.h5"],
    ["bench"], ["demo"], ["bounds", "m.h5", "q.h5"]])
def test_negative_seed_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--seed", "-1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "must be an integer >= 0" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,flag", [
    (["train", "--dataset", "moons", "--batch-size", "1000000000", "--out", "x.h5"], "--batch-size"),
    (["train", "--dataset", "moons", "--hidden", "100000", "--out", "x.h5"], "--hidden"),
    (["train", "--dataset", "moons", "--n-data", "10000000000", "--out", "x.h5"], "--n-data"),
    (["train", "--dataset", "digits", "--model", "unet", "--batch-size", "100000000", "--out", "x.h5"],
     "--batch-size"),
    (["bench", "--params", "1000000000000"], "--params"),
])
def test_huge_sizes_are_refused_before_allocating(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FMQ_NP_MAX_MEMORY", str(8 * 10 ** 9))
    monkeypatch.setattr(fq.flow, "fit", lambda *a, **k: pytest.fail("fit must not start"))
    assert main(argv) == 1
    _one_line_error(capsys, flag, "more than the 8 GB allowed")


def test_huge_sample_and_split_counts_are_refused(files, capsys, monkeypatch):
    monkeypatch.setenv("FMQ_NP_MAX_MEMORY", str(8 * 10 ** 9))
    assert main(["sample", files["m"], "-n", "1000000000"]) == 1
    _one_line_error(capsys, "-n 1000000000", "at most about")
    assert main(["bounds", files["m"], files["q"], "--splits", "1000", "-n", "4", "--steps", "2"]) == 1
    _one_line_error(capsys, "--splits 1000", "at most about")


def _tamper_config(path, out, **changes):
    with open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read())
    with h5py.File(out, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg.update(changes)
        f.attrs["model_config"] = json.dumps(cfg)


@pytest.mark.parametrize("changes", [{"depth": 10 ** 8}, {"hidden": 70000}, {"depth": 3}, {"dim": 5}])
def test_tampered_mlp_config_is_refused_before_building(files, tmp_path, changes):
    bad = str(tmp_path / "bad.h5")
    _tamper_config(files["m"], bad, **changes)
    with pytest.raises(FormatError, match="does not match the stored parameter shapes"):
        fq.io.load(bad)


def test_tampered_unet_config_is_refused(tmp_path):
    path = str(tmp_path / "u.h5")
    fq.io.save(path, fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2)))
    for changes in ({"width": 4096}, {"mults": [1, 2, 2]}, {"blocks": 10 ** 6}, {"mults": [1, 10 ** 6]}):
        bad = str(tmp_path / "bad.h5")
        _tamper_config(path, bad, **changes)
        with pytest.raises(FormatError, match="does not match the stored parameter shapes"):
            fq.io.load(bad)
    assert isinstance(fq.io.load(path), fq.nn.UNetVelocity)       # the untouched file still loads


@pytest.mark.parametrize("margin", ["nan", "-1", "inf"])
def test_bounds_margin_must_be_finite_and_nonnegative(files, margin, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bounds", files["m"], files["q"], "--margin", margin])
    assert exc.value.code == 2 and "--margin" in capsys.readouterr().err
    from fmq_np.theory.cli_bounds import run_bounds
    with pytest.raises(InputError, match="margin must be a finite number >= 0"):
        run_bounds(files["m"], files["q"], margin=float(margin), n_samples=4, steps=2)


def test_bad_thread_count_warns_instead_of_a_traceback(monkeypatch):
    env = dict(os.environ, FMQ_NP_THREADS="abc")
    out = subprocess.run([sys.executable, "-c", "import fmq_np._numba as n; print(n.get_threads() >= 1)"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "True"
    assert "FMQ_NP_THREADS" in out.stderr and "Traceback" not in out.stderr
    monkeypatch.setenv("FMQ_NP_THREADS", "-2")
    with pytest.raises(InputError, match="FMQ_NP_THREADS"):
        fq._numba.env_threads()
    monkeypatch.setenv("FMQ_NP_THREADS", "1")
    assert fq._numba.env_threads() == 1


@pytest.mark.parametrize("method", ["ot", "uniform", "pwl", "log2", "ot-opt"])
def test_big_endian_arrays_quantize_like_native_ones(method):
    w = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    native = fq.quant.quantize(w, bits=3, method=method)
    swapped = fq.quant.quantize(w.astype(">f4"), bits=3, method=method)
    np.testing.assert_array_equal(swapped.codes, native.codes)
    np.testing.assert_array_equal(swapped.codebook, native.codebook)
    qm = fq.quant.quantize_model({"w": w.astype(">f4")}, bits=3, method=method)
    np.testing.assert_array_equal(qm.dequantize()["w"], native.dequantize())


def test_report_of_a_large_tensor_stays_within_a_few_copies():
    from fmq_np.quant.model import report_row, w2_distance
    rng = np.random.default_rng(0)
    small = rng.standard_normal((3, 50)).astype(np.float32)
    qt = fq.quant.quantize(small, bits=2, method="ot")
    row = report_row("s", qt, small)
    hat = qt.dequantize().astype(np.float64)
    assert row["mse"] == pytest.approx(np.mean((small.astype(np.float64) - hat) ** 2), rel=1e-12)
    x, y = np.sort(small.ravel().astype(np.float64)), np.sort(hat.ravel())
    assert w2_distance(small, hat) == pytest.approx(np.sqrt(np.mean((x - y) ** 2)), rel=1e-12)
    w = rng.standard_normal((16, 1 << 17)).astype(np.float32)
    n = w.size
    qt = fq.quant.quantize(w, bits=3, method="ot")
    qt.dequantize(), qt.levels_used                   # kernels compiled before tracing (numba allocates a lot)
    tracemalloc.start()
    try:
        report_row("w", qt, w)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # dequantized + two sorted float32 copies + float64 chunks ~ 3.5 * 4n; float64 copies of everything: >= 8 * 4n
    assert peak < 5 * 4 * n, peak


# ------------------------------------------------------------------------------------------ silently wrong
def test_resume_with_other_settings_names_the_mismatch(tmp_path, capsys):
    ck, out = str(tmp_path / "c.h5"), str(tmp_path / "m.h5")
    def train(dataset, steps, *extra):
        return main(["train", "--dataset", dataset, "--steps", steps, "--checkpoint-every", "2", *TINY,
                     "--checkpoint", ck, "--out", out, *extra])
    assert train("moons", "4") == 0
    assert train("8gaussians", "4", "--resume") == 1
    _one_line_error(capsys, "cannot resume", "dataset='moons'")
    assert train("moons", "6", "--resume") == 1
    _one_line_error(capsys, "cannot resume", "steps=4")
    assert train("moons", "4", "--resume") == 0          # the same run resumes


def test_quantize_lists_the_datasets_it_cannot_quantize(tmp_path, capsys):
    src = str(tmp_path / "other.h5")
    with h5py.File(src, "w") as f:
        f["enc/w"] = np.ones((4, 8), np.float32)
        f["steps"] = np.arange(3)
        f["phase"] = np.ones(2, np.complex64)
        f["label"] = np.bytes_("hello")
    assert main(["quantize", src, "--out", str(tmp_path / "q.h5")]) == 0
    out = capsys.readouterr().out
    for name in ("steps", "phase", "label"):
        assert f"skipped, not written: {name}" in out
    assert "3 datasets skipped" in out


def test_dopri5_help_is_true_about_steps(files, tmp_path, capsys):
    runs = []
    for steps in ("1", "7"):
        out = str(tmp_path / f"s{steps}.npy")
        assert main(["sample", files["m"], "-n", "8", "--solver", "dopri5", "--steps", steps, "--out", out]) == 0
        runs.append(np.load(out))
    np.testing.assert_array_equal(runs[0], runs[1])
    help_text = fq.cli.build_parser()._subparsers._group_actions[0].choices["sample"].format_help()
    assert "dopri5 ignores it" in " ".join(help_text.split()) and "first-step hint" not in help_text


@pytest.mark.parametrize("method", ["ot", "uniform", "pwl", "log2", "ot-opt"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_near_the_largest_float_give_finite_levels_within_range(method, dtype, tmp_path):
    big = np.finfo(dtype).max
    w = np.array([[big, -big, 0.97 * big, 1.0, -0.9 * big, 0.5 * big, big, 0.5],
                  [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]], dtype)
    qt = fq.quant.quantize(w, bits=2, method=method)
    w_hat = qt.dequantize()
    assert np.isfinite(w_hat).all() and np.isfinite(qt.codebook).all()
    assert (w_hat >= w.min(axis=1, keepdims=True)).all() and (w_hat <= w.max(axis=1, keepdims=True)).all()
    normal = fq.quant.quantize(w[1:], bits=2, method=method)       # rows that do not overflow are unchanged
    np.testing.assert_array_equal(qt.codebook[1], normal.codebook[0])
    path = str(tmp_path / "q.h5")
    fq.io.save(path, fq.quant.quantize_model({"w": w}, bits=2, method=method))
    np.testing.assert_array_equal(fq.io.load(path).dequantize()["w"], w_hat)


def test_log2_at_one_bit_warns(files, capsys):
    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    with pytest.warns(UserWarning, match="log2 at 1 bit"):
        fq.quant.quantize(w, bits=1, method="log2")
    out = os.path.join(os.path.dirname(files["q"]), "log2.h5")
    assert main(["quantize", files["m"], "--bits", "1", "--method", "log2", "--out", out]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("fmq-np quantize: warning: log2 at 1 bit") for line in err)


def test_quantized_file_records_its_source_and_evaluate_bounds_check_it(files, capsys, tmp_path):
    from fmq_np.quant.model import weights_digest
    model = fq.io.load(files["m"])
    assert fq.io.load(files["q"]).meta["source_digest"] == weights_digest(model.parameters())
    small = ["-n", "8", "--steps", "2"]
    assert main(["evaluate", files["other"], files["q"], *small]) == 1
    _one_line_error(capsys, "was not quantized from", files["other"])
    assert main(["bounds", files["other"], files["q"], *small, "--splits", "1"]) == 1
    _one_line_error(capsys, "was not quantized from")
    assert main(["bounds", files["m"], files["q"], *small, "--splits", "1"]) == 0
    old = str(tmp_path / "old.h5")                      # a file of an older fmq_np: no digest -> warning, no error
    with open(files["q"], "rb") as src, open(old, "wb") as dst:
        dst.write(src.read())
    with h5py.File(old, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        del meta["source_digest"]
        f.attrs["meta"] = np.bytes_(json.dumps(meta))
    capsys.readouterr()
    assert main(["bounds", files["m"], old, *small, "--splits", "1"]) == 0
    assert "warning: " in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- unclear
def test_unwritable_out_is_reported_up_front_with_the_users_path(capsys, monkeypatch):
    monkeypatch.setattr(fq.flow, "fit", lambda *a, **k: pytest.fail("fit must not start"))
    assert main(["train", "--dataset", "moons", *TINY, "--out", "/proc/m.h5"]) == 1
    line = _one_line_error(capsys, "/proc/m.h5", "not writable")
    assert ".tmp-" not in line
    with pytest.raises(OSError) as exc:
        with _atomic.atomic_path("/proc/x.h5"):
            pass
    assert exc.value.filename == "/proc/x.h5"


def test_demo_checks_its_folder_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fq.flow, "fit", lambda *a, **k: pytest.fail("fit must not start"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker)]) == 1
    _one_line_error(capsys, "is a file")


@pytest.mark.parametrize("argv", [["sample", "{d}"], ["quantize", "{d}", "--out", "{t}/q.h5"],
                                  ["evaluate", "{d}", "{d}"], ["bounds", "{d}", "{d}"], ["bench", "{d}"]])
def test_a_directory_as_input_says_so(argv, tmp_path, capsys):
    assert main([a.format(d=tmp_path, t=tmp_path) for a in argv]) == 1
    _one_line_error(capsys, "is a directory")


@pytest.mark.parametrize("flag", ["--atol", "--rtol"])
def test_nan_tolerance_is_a_usage_error(files, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", files["m"], "--solver", "dopri5", flag, "nan"])
    assert exc.value.code == 2 and flag in capsys.readouterr().err


def test_resume_and_checkpoint_flags_are_not_silently_ignored(tmp_path, capsys):
    out, ck = str(tmp_path / "m.h5"), str(tmp_path / "c.h5")
    assert main(["train", "--dataset", "moons", *TINY, "--resume", "--out", out]) == 1
    _one_line_error(capsys, "--resume needs --checkpoint")
    args = ["train", "--dataset", "moons", "--steps", "2", *TINY, "--checkpoint", ck, "--out", out]
    assert main(args) == 0
    before = open(ck, "rb").read()
    assert main(args) == 1
    _one_line_error(capsys, "exists", "--resume", "--overwrite")
    assert open(ck, "rb").read() == before
    assert main(args + ["--overwrite"]) == 0


class _SigtermAt(fq.nn.MLPVelocity):
    """An MLP whose training forward sends this process SIGTERM at one chosen call."""
    at = None
    calls = 0

    def forward(self, x, t):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(x, t)


def test_sigterm_saves_the_step_reached_like_ctrl_c(tmp_path):
    data = fq.datasets.load("moons", n=256, seed=0)
    ck = str(tmp_path / "c.h5")
    m = _SigtermAt(dim=2, hidden=8, depth=1, seed=0)
    m.at = 3
    with pytest.raises(KeyboardInterrupt, match="SIGTERM after step 3"):
        fq.flow.fit(m, data, steps=6, batch_size=16, seed=0, checkpoint=ck, checkpoint_every=100)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL            # the handler is put back
    resumed = _SigtermAt(dim=2, hidden=8, depth=1, seed=0)          # at None: no signal
    hist = fq.flow.fit(resumed, data, steps=6, batch_size=16, seed=0, checkpoint=ck, resume=True)
    assert hist.step == list(range(1, 7))
    straight = fq.nn.MLPVelocity(dim=2, hidden=8, depth=1, seed=0)
    fq.flow.fit(straight, data, steps=6, batch_size=16, seed=0)
    for name, w in straight.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[name], w)


def test_temp_files_of_killed_writes_are_cleaned_up(tmp_path):
    target = str(tmp_path / "x.h5")
    code = ("import os, signal, sys; from fmq_np._atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    open(tmp, 'w').write('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, target])
    assert proc.returncode == -signal.SIGKILL
    left = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-x.h5~")]
    assert len(left) == 1 and not os.path.exists(target)
    host = left[0].split("~")[1]
    recent_dead = tmp_path / left[0]
    alive = tmp_path / f".tmp-x.h5~{host}~{os.getpid()}~live.h5"
    far_host = tmp_path / ".tmp-x.h5~elsewhere~1~old.h5"
    other_target = tmp_path / f".tmp-y.h5~{host}~{left[0].split('~')[2]}~z.h5"     # the same dead writer
    for p in (alive, far_host, other_target):
        p.write_text("x")
    old = time.time() - 2 * _atomic.ABANDONED_SECONDS
    os.utime(far_host, (old, old))
    assert _atomic.remove_stale_temps(target) == [str(far_host)]   # the dead writer's file is too recent yet
    far_host.write_text("x")
    os.utime(far_host, (old, old))
    stale = time.time() - 2 * _atomic.STALE_SECONDS
    os.utime(recent_dead, (stale, stale))
    os.utime(alive, (stale, stale))
    with _atomic.atomic_path(target) as tmp:
        open(tmp, "w").write("whole")
    names = set(os.listdir(tmp_path))
    assert recent_dead.name not in names and far_host.name not in names       # dead writer, abandoned file
    assert alive.name in names and other_target.name in names                 # a live writer, another target
    assert open(target).read() == "whole"


@pytest.mark.parametrize("make", ["npz", "h5"])
def test_empty_inputs_are_an_error(make, tmp_path, capsys):
    src = str(tmp_path / f"empty.{make}")
    if make == "npz":
        np.savez(src)
    else:
        with h5py.File(src, "w") as f:
            f["n"] = np.arange(3)
    assert main(["quantize", src, "--out", str(tmp_path / "q.h5")]) == 1
    _one_line_error(capsys, "tensors to quantize")


def test_requantizing_a_quantized_file_is_an_error(files, capsys, tmp_path):
    assert main(["quantize", files["q"], "--out", str(tmp_path / "qq.h5")]) == 1
    _one_line_error(capsys, "already quantized")


# ------------------------------------------------------------------------------------------------- honest
def test_size_report_gives_the_real_bytes_on_disk(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {f"t{i}": rng.standard_normal((4, 4)).astype(np.float32) for i in range(50)}
    arrays["big"] = rng.standard_normal((64, 256)).astype(np.float32)
    src, out = str(tmp_path / "w.npz"), str(tmp_path / "q.h5")
    np.savez(src, **arrays)
    assert main(["quantize", src, "--bits", "3", "--out", out]) == 0
    text = capsys.readouterr().out
    assert f"{os.path.getsize(src)} bytes -> {out} {os.path.getsize(out)} bytes" in text
    qm = fq.io.load(out)
    for row in qm.report:          # a tiny tensor never costs more than its float values
        assert row["bytes_after"] <= row["bytes_before"], row
    # nor much more on disk: the small tensors share a pack (a few bytes of index each), not an HDF5 object each
    assert os.path.getsize(out) <= sum(row["bytes_after"] for row in qm.report) + 40 * len(arrays) + 8192
    assert isinstance(qm.tensors["big"], fq.quant.QuantizedTensor)
    np.testing.assert_array_equal(qm.tensors["t0"], arrays["t0"])            # kept exactly, in float


def test_velocity_fidelity_of_8x8_images_uses_the_largest_window_that_fits():
    """evaluate on the 8x8 digits: SSIM with a 7x7 window instead of failing on the 11x11 one."""
    from fmq_np.eval.compare import velocity_fidelity
    v = np.random.default_rng(0).standard_normal((4, 1, 8, 8))
    same, off = velocity_fidelity(v, v), velocity_fidelity(v, v + 0.3 * np.sin(v))
    assert same["ssim_window"] == off["ssim_window"] == 7
    assert same["ssim"] == pytest.approx(1.0) and 0 < off["ssim"] < 1 and off["rmse"] > 0


def test_ot_coupling_with_a_big_batch_warns(capsys, monkeypatch, tmp_path):
    def stop(*a, **k):
        raise fq.FmqError("stopped before training")
    monkeypatch.setattr(fq.flow, "fit", stop)
    assert main(["train", "--dataset", "moons", "--coupling", "ot", "--batch-size", "4096", "--hidden", "8",
                 "--depth", "1", "--out", str(tmp_path / "m.h5")]) == 1
    err = capsys.readouterr().err
    assert "warning: --coupling ot" in err and "4096x4096" in err
