"""The fmq-np command line: real runs end to end, true --help, one-line errors with non-zero exits."""
import subprocess
import sys

import numpy as np
import pytest

import fmq_np as fq
from fmq_np.cli import main


def test_train_then_sample_moons(tmp_path, capsys):
    out = str(tmp_path / "m.h5")
    assert main(["train", "--dataset", "moons", "--steps", "30", "--hidden", "16", "--depth", "1",
                 "--batch-size", "32", "-o", out]) == 0          # -o: the short form of every --out
    assert "trained MLPVelocity on moons" in capsys.readouterr().out
    assert main(["sample", out, "-n", "50", "--solver", "rk4", "--steps", "4", "-o", str(tmp_path / "s.npy"),
                 "--png", str(tmp_path / "s.png")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (50, 2) and np.isfinite(s).all()
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_train_digits_unet(tmp_path):
    out = str(tmp_path / "d.h5")
    assert main(["train", "--dataset", "digits", "--model", "unet", "--width", "8", "--steps", "2",
                 "--batch-size", "8", "--out", out]) == 0
    assert main(["sample", out, "-n", "4", "--solver", "euler", "--steps", "2",
                 "--png", str(tmp_path / "g.png")]) == 0
    assert isinstance(fq.io.load(out), fq.nn.UNetVelocity)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--dataset", "nope", "--out", "x.h5"], "unknown dataset"),
    (["train", "--dataset", "digits", "--model", "mlp", "--out", "x.h5"], "needs a 2-D dataset"),
    (["train", "--dataset", "moons", "--steps", "0", "--out", "x.h5"], "steps must be"),
    (["sample", "missing.h5"], "no such file"),
    (["train", "--dataset", "moons", "--out", "no/such/folder/m.h5"], "does not exist"),
    (["quantize", "missing.npz", "--out", "no/such/folder/q.h5"], "does not exist"),
])
def test_errors_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_corrupt_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage" * 10)
    assert main(["sample", str(bad)]) == 1
    assert "not a readable HDF5" in capsys.readouterr().err


def test_help_lists_every_subcommand_and_runs_as_a_console_script():
    out = subprocess.run([sys.executable, "-m", "fmq_np.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "sample"):
        assert command in out.stdout
    for command in ("train", "sample"):
        sub = subprocess.run([sys.executable, "-m", "fmq_np.cli", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: fmq-np " + command in sub.stdout


def test_cli_argument_errors_are_input_errors(tmp_path):
    """What the user typed wrong is an InputError (a file's bad content would be a FormatError)."""
    from fmq_np.cli._common import check_input, check_output
    from fmq_np.errors import InputError
    with pytest.raises(InputError, match="no such file"):
        check_input(str(tmp_path / "missing.h5"))
    with pytest.raises(InputError, match="is a directory"):
        check_output(str(tmp_path))
