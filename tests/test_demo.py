"""fq.demo.run: both models trained, saved and drawn into the folder; bad arguments refused before any training."""
import os

import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import InputError


def test_run_writes_loadable_models_and_pictures_and_measures_the_moons(tmp_path):
    lines = []
    res = fq.demo.run(str(tmp_path / "d"), mlp_steps=2, unet_steps=1, seed=0, log=lines.append)
    assert sorted(os.path.basename(p) for p in res["files"]) == sorted(fq.demo.FILES)
    for path in res["files"]:
        with open(path, "rb") as fh:
            head = fh.read(8)
        assert head == (b"\x89PNG\r\n\x1a\n" if path.endswith(".png") else b"\x89HDF\r\n\x1a\n")
    mlp, meta = fq.io.load_model(str(tmp_path / "d" / "moons.h5"))
    unet, _ = fq.io.load_model(str(tmp_path / "d" / "digits.h5"))
    assert isinstance(mlp, fq.nn.MLPVelocity) and isinstance(unet, fq.nn.UNetVelocity)
    assert meta["dataset"] == "moons" and unet.config()["size"] == 8
    assert np.isfinite(res["sw2_samples"]) and res["sw2_samples"] > 0 and res["sw2_data"] > 0
    # two steps of training leave the samples far from the data: farther than two draws of the data itself
    assert res["sw2_samples"] > res["sw2_data"]
    assert lines[0].startswith("[1/2]") and lines[-1].startswith("[2/2]") and "sliced-W2" in lines[1]


@pytest.mark.parametrize("kw", [{"mlp_steps": 0}, {"unet_steps": 1.5}, {"mlp_steps": True}])
def test_bad_step_counts_are_refused_before_training(kw, tmp_path, monkeypatch):
    monkeypatch.setattr(fq.flow, "fit", lambda *a, **k: pytest.fail("fit must not start"))
    with pytest.raises(InputError, match="steps must be a positive integer"):
        fq.demo.run(str(tmp_path), **kw)


def test_output_paths_refuses_a_file_and_creates_the_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"^--out .* is a file"):
        fq.demo.output_paths(str(blocker), name="--out")
    paths = fq.demo.output_paths(str(tmp_path / "new" / "sub"))
    assert os.path.isdir(tmp_path / "new" / "sub") and [os.path.dirname(p) for p in paths] == \
        [str(tmp_path / "new" / "sub")] * len(fq.demo.FILES)
