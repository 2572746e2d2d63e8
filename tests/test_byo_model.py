"""Bring your own model: an ADM U-Net from a flow_matching-layout torch checkpoint + its JSON config, sampled,
quantized and evaluated by the command line without torch (fmq_np.io.external)."""
import json
import os
import sys

import numpy as np
import pytest

import fmq_np as fq
from fmq_np.cli import main

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import make_pth as mp  # noqa: E402

#: a reduced version of flow_matching's ADM config on the 8×8 digits (GroupNorm32 needs 32-channel multiples)
CONFIG = {"in_channels": 1, "model_channels": 32, "out_channels": 1, "num_res_blocks": 1,
          "attention_resolutions": [2], "dropout": 0.0, "channel_mult": [1, 2], "conv_resample": True, "dims": 2,
          "num_classes": None, "use_checkpoint": False, "num_heads": 1, "num_head_channels": -1,
          "num_heads_upsample": -1, "use_scale_shift_norm": True, "resblock_updown": False,
          "use_new_attention_order": True, "with_fourier_features": False, "image_size": 8}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """flow_matching's training checkpoint layout: {"model": EMA state dict, "epoch"}; EMA = live weights / 2."""
    folder = tmp_path_factory.mktemp("byo")
    rng = np.random.default_rng(3)         # torch's init zeroes the output convolution: give it weights
    live = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in fq.nn.ADMUNet(**CONFIG, seed=3).parameters().items()}
    ema = {k: (v * 0.5).astype(np.float32) for k, v in live.items()}
    sd = {f"model.{k}": mp.tensor(v) for k, v in live.items()}
    sd["num_updates"] = mp.tensor(np.array(77, np.int64))
    sd.update({f"shadow_params.{i}": mp.tensor(v) for i, v in enumerate(ema.values())})
    path = str(folder / "checkpoint.pth")
    mp.write_pth(path, {"model": sd, "epoch": 3})
    cfg = str(folder / "config.json")
    with open(cfg, "w") as f:
        json.dump(CONFIG, f)
    return dict(path=path, config=cfg, live=live, ema=ema, folder=folder)


def _model(params):
    m = fq.nn.ADMUNet(**CONFIG)
    m.load_parameters(params)
    return m


@pytest.mark.parametrize("weights", ["ema", "live"])
def test_sample_a_torch_checkpoint_with_its_config(checkpoint, weights, tmp_path, capsys):
    out = str(tmp_path / "s.npy")
    assert main(["sample", checkpoint["path"], "--config", checkpoint["config"], "--key", "model", "--weights",
                 weights, "-n", "4", "--solver", "euler", "--steps", "2", "--out", out]) == 0
    assert f"({weights})" in capsys.readouterr().out
    want = fq.flow.sample(_model(checkpoint[weights]), n=4, solver="euler", steps=2, seed=0)
    np.testing.assert_array_equal(np.load(out), want)


def test_quantize_then_evaluate_a_torch_checkpoint(checkpoint, tmp_path, capsys):
    q = str(tmp_path / "q.h5")
    assert main(["quantize", checkpoint["path"], "--key", "model", "--bits", "3", "--out", q]) == 0
    res = str(tmp_path / "r.json")
    assert main(["evaluate", checkpoint["path"], q, "--config", checkpoint["config"], "--key", "model",
                 "--dataset", "digits", "-n", "8", "--solver", "euler", "--steps", "2", "--json", res]) == 0
    capsys.readouterr()
    r = json.load(open(res))
    assert r["drift"] > 0 and r["rmse"] > 0 and r["quantizer"].startswith("ot 3-bit")
    # the quantized model is the dequantized EMA weights
    deq = fq.io.ema_to_names(fq.io.load(q).dequantize(), _model(checkpoint["ema"]).parameters())
    x = fq.datasets.load("digits", n=8)
    model, _ = fq.io.load_external_model(q, checkpoint["config"])
    t = np.zeros(8, np.float32)
    np.testing.assert_array_equal(model(x, t), _model(deq)(x, t))


def test_weight_file_without_config_says_what_to_pass(checkpoint, capsys):
    assert main(["sample", checkpoint["path"], "-n", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs --config" in err


def test_config_that_does_not_fit_the_weights_names_the_mismatch(checkpoint, tmp_path, capsys):
    cfg = str(tmp_path / "wide.json")
    with open(cfg, "w") as f:
        json.dump(dict(CONFIG, model_channels=64), f)
    assert main(["sample", checkpoint["path"], "--config", cfg, "--key", "model", "-n", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "checkpoint.pth" in err and "do not fit" in err


@pytest.mark.parametrize("text,needle", [('{"in_channels": 1, "bogus": 3}', "bogus"), ("[1, 2]", "JSON object"),
                                         ("{not json", "not a JSON file")])
def test_bad_configs_are_one_line_errors(checkpoint, tmp_path, capsys, text, needle):
    cfg = str(tmp_path / "bad.json")
    with open(cfg, "w") as f:
        f.write(text)
    assert main(["sample", checkpoint["path"], "--config", cfg, "--key", "model", "-n", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err


def test_evaluate_refuses_a_quantized_file_of_another_checkpoint(checkpoint, tmp_path, capsys):
    other = str(tmp_path / "other.pth")
    params = fq.nn.ADMUNet(**CONFIG, seed=9).parameters()
    mp.write_pth(other, {"model": {k: mp.tensor(v) for k, v in params.items()}})
    q = str(tmp_path / "q.h5")
    assert main(["quantize", other, "--key", "model", "--bits", "3", "--out", q]) == 0
    capsys.readouterr()
    assert main(["evaluate", checkpoint["path"], q, "--config", checkpoint["config"], "--key", "model",
                 "--dataset", "digits", "-n", "8", "--steps", "2"]) == 1
    assert "was not quantized from" in capsys.readouterr().err
