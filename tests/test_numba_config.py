"""The Numba set-up in fmq_np._numba: a light import, the cache fallback, device selection."""
import os
import subprocess
import sys

import pytest

from fmq_np import DeviceError, InputError, _numba


def test_import_fmq_np_does_not_import_numba():
    code = "import sys, fmq_np; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_read_only_package_folder_moves_the_cache(monkeypatch, tmp_path):
    import numba.core.config
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", numba.core.config.CACHE_DIR)
    monkeypatch.setattr(_numba, "_writable", lambda path: path != _numba._PACKAGE_DIR)
    _numba._configure_cache()
    expected = os.path.join(str(tmp_path), "fmq_np", "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == expected and os.path.isdir(expected)
    assert numba.core.config.CACHE_DIR == expected


def test_an_explicit_cache_dir_is_left_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(_numba, "_writable", lambda path: False)
    _numba._configure_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_device_resolution_without_a_gpu(monkeypatch):
    monkeypatch.setattr(_numba, "cuda_available", lambda: False)
    assert _numba.resolve_device("auto") == "cpu"
    assert _numba.resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        _numba.resolve_device("cuda")
    with pytest.raises(InputError, match="device"):
        _numba.resolve_device("tpu")
