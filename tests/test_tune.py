"""Codebook tuning along the flow (fmq_np.quant.tune): the levels' gradient against finite differences, what tuning
keeps (codes up to a per-row relabelling, widths, storage cost, sorted rows, affine uniform rows through a file),
that it lowers the held-out velocity error, free codes (nearest-level assignment against a brute-force loop, codes
that change, storage that does not), seeded reproducibility and bad input."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.errors import InputError
from fmq_np.quant.tune import TrainableLevels, tune_codebooks

from gradcheck import check_directional

FAST = dict(n=8, steps=2, iters=40, batch_size=8)


@pytest.fixture(scope="module")
def mlp():
    return fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=3)


@pytest.fixture(scope="module")
def data():
    return fq.datasets.load("moons", n=256, seed=0)


def _partition(codes):
    """Per row, the set of index groups sharing a code (what a relabelling of the levels leaves unchanged)."""
    return [sorted(tuple(np.flatnonzero(row == c)) for c in np.unique(row)) for row in codes]


@pytest.mark.parametrize("method", ["ot-opt", "uniform", "ot"])
def test_level_gradient_is_the_chain_rule_through_the_codes(method):
    """L(u) = Σ dy · ŵ(u) for a random dy: the levels' gradient against central differences (4-D tensor)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3))
    qt = fq.quant.quantize(w, bits=2, method=method, granularity="channel")
    lv = TrainableLevels(qt)
    arrays = {"u": lv.u.astype(np.float64)}

    def forward():
        lv.u[...] = arrays["u"]
        return lv.weights().astype(np.float64)

    check_directional(forward, lambda dy: {"u": lv.gradient(dy).astype(np.float64)}, arrays, rng, eps=1e-2,
                      rtol=2e-4, atol=1e-4, directions=3)
    assert np.array_equal(TrainableLevels(qt).weights(), qt.dequantize())          # untouched levels rebuild the tensor


def test_assign_codes_each_value_to_its_rows_nearest_level(monkeypatch):
    rng = np.random.default_rng(5)
    qt = fq.quant.quantize(rng.standard_normal((4, 10)), bits=2, method="ot-opt", granularity="channel")
    lv = TrainableLevels(qt)
    assert lv.assign(lv.row_weights()) == 0                 # the start: the tensor's own codes
    assert np.array_equal(lv.codes(), qt.codes)
    lv.u[...] = 0.3 * rng.standard_normal(lv.u.shape)
    values = rng.standard_normal((4, 10))
    changed = lv.assign(values)
    cb = lv.codebook()
    for g in range(4):
        for j in range(10):
            dist = [abs(values[g, j] - level) for level in cb[g]]
            assert lv.codes()[g, j] == dist.index(min(dist))
    assert changed == np.count_nonzero(lv.codes() != qt.codes) > 0
    monkeypatch.setattr("fmq_np.quant.tune.ASSIGN_BLOCK", 9)        # one row (10 values x 4 levels > 9) a block
    blocked = TrainableLevels(qt)
    blocked.u[...] = lv.u
    assert blocked.assign(values) == changed and np.array_equal(blocked.codes(), lv.codes())
    assert np.array_equal(lv.weights(), cb.astype(qt.dtype)[np.arange(4)[:, None], lv.codes()])
    assert np.array_equal(lv.row_gradient(np.ones(qt.shape), 2 * lv.s),
                          np.broadcast_to(2 * lv.s, (4, 10)).astype(np.float32))


@pytest.mark.parametrize("method,bits", [("ot-opt", 2), ("uniform", 2)])
def test_free_codes_change_codes_lower_the_error_and_keep_the_storage(mlp, data, tmp_path, method, bits):
    qm = fq.quant.quantize_model(mlp.parameters(), bits=bits, method=method, policy=lambda name, a: bits)
    tuned = tune_codebooks(mlp, qm, data, seed=1, **FAST)
    free = tune_codebooks(mlp, tuned, data, seed=1, codes="free", lr_latent=5e-2, **FAST)
    info = free.meta["tuned"]
    assert info["codes"] == "free" and info["previous"] == tuned.meta["tuned"]
    # same seed, same states: the free run starts where the fixed-code run ended (exactly for free codebooks; an
    # affine row is stored as c * scale + offset in the dtype, which rounds its levels differently)
    assert np.isclose(info["heldout_mse_before"], tuned.meta["tuned"]["heldout_mse_after"],
                      rtol=0 if method == "ot-opt" else 1e-4)
    assert info["kept"] and info["heldout_mse_after"] < info["heldout_mse_before"] and info["code_changes"] > 0
    assert any(_partition(free.tensors[k].codes) != _partition(tuned.tensors[k].codes) for k in qm.tensors)
    assert free.bits_per_weight == qm.bits_per_weight
    fq.io.save(tmp_path / "free.h5", free)
    back = fq.io.load(tmp_path / "free.h5")
    for name, qt in free.tensors.items():
        assert (qt.bits, qt.shape, qt.affine) == (bits, qm.tensors[name].shape, method == "uniform")
        assert (np.diff(qt.codebook, axis=1) >= 0).all()
        assert np.array_equal(back.tensors[name].dequantize(), qt.dequantize())


def test_free_code_rates_follow_each_tensors_width(mlp, data):
    from fmq_np.quant.tune import LATENT_RATES, latent_rate
    assert latent_rate(2) == LATENT_RATES[2] and latent_rate(8) == latent_rate(3) == LATENT_RATES[3]
    first = next(k for k, a in mlp.parameters().items() if a.ndim == 2)
    qm = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot-opt",
                                 policy=lambda name, a: 3 if name == first else 2)
    by_width = tune_codebooks(mlp, qm, data, seed=1, codes="free", **FAST)
    assert by_width.meta["tuned"]["lr_latent"] == sorted({LATENT_RATES[2], LATENT_RATES[3]})
    # one explicit rate for every tensor is another run
    one = tune_codebooks(mlp, qm, data, seed=1, codes="free", lr_latent=LATENT_RATES[2], **FAST)
    assert one.meta["tuned"]["lr_latent"] == [LATENT_RATES[2]]
    assert not np.array_equal(one.tensors[first].codebook, by_width.tensors[first].codebook)


def test_tuning_lowers_the_heldout_error_and_keeps_the_codes(mlp, data):
    qm = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot-opt", policy=lambda name, a: 2)
    tuned = tune_codebooks(mlp, qm, data, seed=1, **FAST)
    info = tuned.meta["tuned"]
    assert info["kept"] and info["heldout_mse_after"] < info["heldout_mse_before"]
    assert tuned.bits_per_weight == qm.bits_per_weight
    for name, qt in qm.tensors.items():
        new = tuned.tensors[name]
        assert (new.bits, new.shape, new.method) == (qt.bits, qt.shape, qt.method)
        assert _partition(new.codes) == _partition(qt.codes)
        assert (np.diff(new.codebook, axis=1) >= 0).all()
    assert any(not np.array_equal(tuned.tensors[k].codebook, qm.tensors[k].codebook) for k in qm.tensors)
    # the measured error is the tuned model's: rebuild it from the dequantized tensors
    student = fq.nn.MLPVelocity(**mlp.config())
    student.load_parameters(tuned.dequantize())
    assert np.isfinite(student(data[:16], np.full(16, 0.5, np.float32))).all()
    assert mlp.parameters()["layers.0.weight"] is not None            # the float model is not changed
    assert np.array_equal(mlp.parameters()["layers.0.weight"], qm._originals["layers.0.weight"])


def test_float_tensors_move_only_when_asked(mlp, data):
    qm = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot-opt")        # biases kept in float
    frozen = tune_codebooks(mlp, qm, data, seed=1, floats=False, **FAST)
    moved = tune_codebooks(mlp, qm, data, seed=1, **FAST)
    for name, a in qm.tensors.items():
        if isinstance(a, np.ndarray):
            assert np.array_equal(frozen.tensors[name], a)
    assert any(not np.array_equal(moved.tensors[k], a) for k, a in qm.tensors.items() if isinstance(a, np.ndarray))


def test_tuned_uniform_rows_stay_affine_through_a_file(mlp, data, tmp_path):
    qm = fq.quant.quantize_model(mlp.parameters(), bits=3, method="uniform", policy=lambda name, a: 3)
    tuned = tune_codebooks(mlp, qm, data, seed=2, **FAST)
    assert tuned.meta["tuned"]["kept"]
    path = tmp_path / "tuned.h5"
    fq.io.save(path, tuned)
    back = fq.io.load(path)
    for name, qt in tuned.tensors.items():
        assert qt.affine
        assert np.array_equal(back.tensors[name].dequantize(), qt.dequantize())
    assert back.bits_per_weight == qm.bits_per_weight


def test_seeded_runs_are_bitwise_equal_and_lr_zero_changes_nothing(mlp, data):
    qm = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot", policy=lambda name, a: 2)
    a = tune_codebooks(mlp, qm, data, seed=4, **FAST)
    b = tune_codebooks(mlp, qm, data, seed=4, **FAST)
    for name in qm.tensors:
        assert np.array_equal(a.tensors[name].codebook, b.tensors[name].codebook)
        assert np.array_equal(a.tensors[name].codes, b.tensors[name].codes)
    c, d = (tune_codebooks(mlp, qm, data, seed=4, codes="free", lr_latent=5e-2, **FAST) for _ in range(2))
    for name in qm.tensors:
        assert np.array_equal(c.tensors[name].codebook, d.tensors[name].codebook)
        assert np.array_equal(c.tensors[name].codes, d.tensors[name].codes)
    still = tune_codebooks(mlp, qm, data, seed=4, lr=0.0, lr_float=0.0, **FAST)
    assert not still.meta["tuned"]["kept"]
    assert all(still.tensors[k] is qm.tensors[k] for k in qm.tensors)


def test_bad_input(mlp, data):
    qm = fq.quant.quantize_model(mlp.parameters(), bits=2, method="ot-opt")
    other = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=4)
    with pytest.raises(InputError, match="not quantized from this model"):
        tune_codebooks(other, qm, data, **FAST)
    with pytest.raises(InputError, match="QuantizedModel"):
        tune_codebooks(mlp, mlp.parameters(), data, **FAST)
    with pytest.raises(InputError, match="lr"):
        tune_codebooks(mlp, qm, data, lr=-1.0, **FAST)
    with pytest.raises(InputError, match="codes must be one of fixed, free"):
        tune_codebooks(mlp, qm, data, codes="loose", **FAST)
    with pytest.raises(InputError, match="lr_latent"):
        tune_codebooks(mlp, qm, data, codes="free", lr_latent=float("nan"), **FAST)
    with pytest.raises(InputError, match="iters"):
        tune_codebooks(mlp, qm, data, **dict(FAST, iters=0))
    with pytest.raises(InputError, match="forward"):
        tune_codebooks(object(), qm, data, **FAST)


def test_cli_quantize_tune(tmp_path, capsys):
    from fmq_np.cli import main
    m = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=0)
    fq.io.save(tmp_path / "m.h5", m)
    plain, tuned = tmp_path / "q.h5", tmp_path / "t.h5"
    assert main(["quantize", str(tmp_path / "m.h5"), "--bits", "2", "--method", "ot-opt", "--out", str(plain)]) in (
        0, None)
    assert main(["quantize", str(tmp_path / "m.h5"), "--bits", "2", "--method", "ot-opt", "--tune", "--calib-n",
                 "4", "--tune-iters", "30", "--out", str(tuned)]) in (0, None)
    text = capsys.readouterr().out
    assert "tuned: held-out velocity MSE" in text
    assert "own trajectories only (its metadata names no dataset)" in text
    free = tmp_path / "f.h5"
    assert main(["quantize", str(tmp_path / "m.h5"), "--bits", "2", "--method", "ot-opt", "--tune", "--free-codes",
                 "--calib-n", "4", "--tune-iters", "30", "--out", str(free)]) in (0, None)
    assert "code changes" in capsys.readouterr().out
    f = fq.io.load(free).meta["tuned"]
    assert (f["codes"], f["iters"], f["previous"]["iters"]) == ("free", 15, 30)
    assert main(["quantize", str(tmp_path / "m.h5"), "--free-codes", "--out", str(tmp_path / "x.h5")]) == 1
    assert "add --tune" in capsys.readouterr().err
    a, b = fq.io.load(plain), fq.io.load(tuned)
    assert b.meta["tuned"]["iters"] == 30 and b.meta["tuned"]["n"] == 4
    assert b.bits_per_weight == a.bits_per_weight
    for name, qt in a.tensors.items():
        if isinstance(qt, fq.quant.QuantizedTensor):
            assert _partition(b.tensors[name].codes) == _partition(qt.codes)
    # a model file that names its training set (as fmq-np train writes it): training-path pairs join the states
    fq.io.save_model(tmp_path / "moons.h5", m, meta={"dataset": "moons"})
    with_data = tmp_path / "t2.h5"
    assert main(["quantize", str(tmp_path / "moons.h5"), "--bits", "2", "--method", "ot-opt", "--tune", "--calib-n",
                 "4", "--tune-iters", "30", "--out", str(with_data)]) in (0, None)
    assert "training-path pairs on 'moons'" in capsys.readouterr().out
    states = b.meta["tuned"]["states"]
    assert fq.io.load(with_data).meta["tuned"]["states"] == states + states // 4
    # a training set of another sample shape: said, and trajectories alone
    fq.io.save_model(tmp_path / "mnist-named.h5", m, meta={"dataset": "mnist"})
    assert main(["quantize", str(tmp_path / "mnist-named.h5"), "--bits", "2", "--method", "ot-opt", "--tune",
                 "--calib-n", "4", "--tune-iters", "30", "--out", str(tmp_path / "t3.h5")]) in (0, None)
    assert "trajectories only (its metadata names 'mnist', whose samples are (1, 28, 28), not the model's (2,))" \
        in capsys.readouterr().out
    assert fq.io.load(tmp_path / "t3.h5").meta["tuned"]["states"] == states
    np.savez(tmp_path / "w.npz", **m.parameters())
    assert main(["quantize", str(tmp_path / "w.npz"), "--tune", "--out", str(tmp_path / "q2.h5")]) == 1
    err = capsys.readouterr().err
    assert "w.npz" in err and "--tune" in err and len(err.strip().splitlines()) == 1
