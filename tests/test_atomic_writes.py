"""fmq_np._atomic.write_text / write_json: the whole text or nothing, and the previous file kept on failure."""
import json
import math
import os

import numpy as np
import pytest

from fmq_np import _atomic
from fmq_np.theory import report


def test_write_text_round_trips_unicode_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "notes.md"
    text = "W₂ ≤ ε·e^{L}\nline two\n"
    _atomic.write_text(target, text)
    assert target.read_text(encoding="utf-8") == text
    assert os.listdir(tmp_path) == ["notes.md"]


def test_write_json_is_what_json_reads_back_followed_by_end(tmp_path):
    target = tmp_path / "r.json"
    obj = {"a": [1, 2.5, None], "b": {"c": "d"}}
    _atomic.write_json(target, obj, indent=2, end="\n")
    raw = target.read_text()
    assert raw.endswith("}\n") and json.loads(raw) == obj
    assert "\n  " in raw                                # indented by 2


def test_write_json_that_cannot_serialize_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    _atomic.write_json(target, {"old": 1})
    with pytest.raises(TypeError):
        _atomic.write_json(target, {"new": object()})
    assert json.loads(target.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_write_json_default_converts_what_json_does_not_know(tmp_path):
    target = tmp_path / "r.json"
    _atomic.write_json(target, {"x": np.float32(0.5)}, default=float)
    assert json.loads(target.read_text()) == {"x": 0.5}


def test_a_folder_as_target_is_refused_and_kept(tmp_path):
    with pytest.raises(IsADirectoryError):
        _atomic.write_text(tmp_path, "x")
    assert tmp_path.is_dir()


def test_bounds_report_json_keeps_non_finite_values_as_strings(tmp_path):
    target = tmp_path / "b.json"
    report.write_json(target, {"eps": np.array([1.0, np.inf]), "n": np.int64(3), "L": float("nan")})
    back = json.loads(target.read_text())
    assert back["eps"][0] == 1.0 and back["eps"][1] == "inf" and back["n"] == 3
    assert back["L"] == "nan" and not math.isnan(back["eps"][0])
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask            # the usual permissions, not mkstemp's 0600
