"""CondOT path, time samplers, minibatch OT coupling, datasets, sliced W2 and PNG output."""
import itertools
import zlib

import numpy as np
import pytest

import fmq_np as fq
from fmq_np import FormatError, InputError
from fmq_np.eval import sliced_w2, w2_1d
from fmq_np.flow import condot_sample, ot_pairing, skewed_times, uniform_times


def test_condot_endpoints_and_velocity():
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    xt, ut = condot_sample(x0, x1, np.array([0.0, 1.0, 0.5, 0.25, 0.75]))
    np.testing.assert_allclose(xt[0], x0[0])
    np.testing.assert_allclose(xt[1], x1[1])
    np.testing.assert_allclose(xt[2], (x0[2] + x1[2]) / 2)
    np.testing.assert_allclose(ut, x1 - x0)
    # d/dt x_t equals u_t
    h = 1e-6
    a, _ = condot_sample(x0, x1, np.full(5, 0.3))
    b, _ = condot_sample(x0, x1, np.full(5, 0.3 + h))
    np.testing.assert_allclose((b - a) / h, ut, rtol=1e-5, atol=1e-5)


def test_skewed_times_follow_the_paper_formula():
    t = skewed_times(np.random.default_rng(1), 200_000)
    z = np.random.default_rng(1).standard_normal(200_000)
    np.testing.assert_allclose(t, np.maximum(1 / (1 + np.exp(1.2 * z - 1.2)), 1e-4).astype(np.float32))
    assert t.min() >= 1e-4 and t.max() < 1
    assert abs(np.median(t) - 1 / (1 + np.exp(-1.2))) < 0.01
    u = uniform_times(np.random.default_rng(2), 100_000)
    assert abs(u.mean() - 0.5) < 0.01 and u.dtype == np.float32


def test_ot_pairing_is_optimal_against_brute_force():
    rng = np.random.default_rng(3)
    x0, x1 = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    paired = ot_pairing(x0, x1)
    assert sorted(map(tuple, paired)) == sorted(map(tuple, x0))
    best = min(sum(np.sum((x0[p[i]] - x1[i]) ** 2) for i in range(6)) for p in itertools.permutations(range(6)))
    assert np.isclose(np.sum((paired - x1) ** 2), best)


@pytest.mark.parametrize("name", fq.datasets.TOYS)
def test_toys_are_seeded_float32_and_bounded(name):
    a = fq.datasets.load(name, n=2000, seed=5)
    b = fq.datasets.load(name, n=2000, seed=5)
    c = fq.datasets.load(name, n=2000, seed=6)
    assert a.dtype == np.float32 and a.shape == (2000, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() < 4 and 0.5 < a.std() < 2


def test_digits_are_scaled_images_with_labels():
    x, y = fq.datasets.load("digits", return_labels=True)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    sub = fq.datasets.load("digits", n=100, seed=0)
    assert sub.shape == (100, 1, 8, 8)
    assert fq.datasets.data_shape("digits") == (1, 8, 8)


def test_dataset_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="unknown dataset"):
        fq.datasets.load("cifar100")
    with pytest.raises(InputError, match="n must be"):
        fq.datasets.load("moons", n=0)
    with pytest.raises(InputError, match="1797 samples"):
        fq.datasets.load("digits", n=5000)
    monkeypatch.setenv("FMQ_NP_DATA", str(tmp_path))
    with pytest.raises(FormatError, match="missing"):
        fq.datasets.load("digits")
    (tmp_path / "digits.npz").write_bytes(b"not a zip file")
    with pytest.raises(FormatError, match="not a valid dataset"):
        fq.datasets.load("digits")


def test_w2_1d_matches_hand_computation_and_symmetry():
    assert np.isclose(w2_1d([0.0, 1.0], [0.0, 0.5, 1.0]), np.sqrt(1 / 12))
    a, b = np.random.default_rng(0).normal(size=(2, 300))
    assert np.isclose(w2_1d(a, b), w2_1d(b, a))
    assert np.isclose(w2_1d(a, a + 2.0), 2.0)
    assert np.isclose(w2_1d(a, np.repeat(a, 3)), 0.0)


def test_sliced_w2_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    assert sliced_w2(x, x) == 0.0
    shift = sliced_w2(x, x + np.array([3.0, 0.0]), n_projections=512)
    # mean over unit directions of (3·cos θ)² is 4.5
    assert abs(shift - np.sqrt(4.5)) < 0.1
    with pytest.raises(InputError):
        sliced_w2(x, np.ones((5, 3)))
    with pytest.raises(InputError):
        sliced_w2(x, np.full((5, 2), np.nan))


def _read_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big") == zlib.crc32(tag + body)
        chunks[tag] = chunks.get(tag, b"") + body
        pos += 12 + length
    w, h = int.from_bytes(chunks[b"IHDR"][:4], "big"), int.from_bytes(chunks[b"IHDR"][4:8], "big")
    channels = {0: 1, 2: 3}[chunks[b"IHDR"][9]]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + w * channels)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:].reshape(h, w, channels).squeeze()


def test_png_grid_round_trip(tmp_path):
    imgs = np.linspace(-1, 1, 4 * 8 * 8).reshape(4, 1, 8, 8)
    fq.images.save_samples_png(tmp_path / "g.png", imgs, scale=1)
    pix = _read_png(tmp_path / "g.png")
    assert pix.shape == (2 * 9 + 1, 2 * 9 + 1)
    np.testing.assert_array_equal(pix[1:9, 1:9], np.clip((imgs[0, 0] + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8))
    rgb = np.zeros((3, 3, 4, 4))
    fq.images.save_samples_png(tmp_path / "c.png", rgb, scale=2)
    assert _read_png(tmp_path / "c.png").shape == (2 * 9 + 1, 2 * 9 + 1, 3)
    fq.images.save_samples_png(tmp_path / "d.png", np.random.default_rng(0).normal(size=(100, 2)))
    assert _read_png(tmp_path / "d.png").shape == (256, 256)
    with pytest.raises(InputError):
        fq.images.save_samples_png(tmp_path / "x.png", np.zeros((3, 5)))
