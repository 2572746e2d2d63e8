"""PSNR, SSIM and the Fréchet distance against closed forms and a slow plain-NumPy SSIM reference."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np.eval import frechet_distance, image_frechet_distance, psnr, ssim, train_feature_net


def slow_ssim(a, b, k=11):
    """SSIM by explicit loops over images, channels and window positions (mean window, population moments)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for i in range(a.shape[0]):
        for c in range(a.shape[1]):
            for r in range(a.shape[2] - k + 1):
                for q in range(a.shape[3] - k + 1):
                    x = a[i, c, r:r + k, q:q + k].astype(np.float64).ravel()
                    y = b[i, c, r:r + k, q:q + k].astype(np.float64).ravel()
                    mx, my = x.mean(), y.mean()
                    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
                    cov = ((x - mx) * (y - my)).mean()
                    values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_psnr_identical_is_inf_and_constant_offset_closed_form():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, (3, 2, 12, 12))
    assert psnr(a, a) == float("inf")
    for d in (0.1, 0.01, 0.003):
        assert psnr(a, a + d) == pytest.approx(-20 * np.log10(d), rel=1e-9)
        assert psnr(a + d, a) == pytest.approx(psnr(a, a + d))


def test_ssim_identical_is_one_and_matches_slow_reference():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (2, 3, 13, 14))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) == pytest.approx(slow_ssim(a, b), rel=1e-9)
    assert ssim(a, b) == pytest.approx(ssim(b, a), rel=1e-12)
    assert ssim(a, b) < ssim(a, np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1)) < 1.0


@pytest.mark.parametrize("call,needle", [
    (lambda: psnr(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 5))), "b must have the shape"),
    (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4))), "a must be a non-empty (n, C, H, W)"),
    (lambda: ssim(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8))), "smaller than the 11x11 window"),
    (lambda: ssim(np.full((1, 1, 11, 11), np.nan), np.zeros((1, 1, 11, 11))), "a contains NaN"),
    (lambda: frechet_distance(np.zeros((5, 3)), np.zeros((5, 4))), "feat_b must have 3 features"),
    (lambda: frechet_distance(np.zeros((1, 3)), np.zeros((5, 3))), "feat_a must be a real (n, d) array"),
])
def test_bad_input_names_the_argument(call, needle):
    with pytest.raises(fq.InputError, match=None) as info:
        call()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_frechet_distance_gaussian_closed_form_translation_and_symmetry():
    rng = np.random.default_rng(2)
    # two samples with exactly the covariances diag(s1²) and diag(s2²): whitened draws rescaled per axis
    z = rng.standard_normal((4000, 3))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    s1, s2, shift = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5]), np.array([0.3, -1.0, 2.0])
    a, b = z * s1, z * s2 + shift
    expected = shift @ shift + np.sum((s1 - s2) ** 2)       # diagonal covariances: ‖μ‖² + Σ (σ1 − σ2)²
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    c = rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4))
    d = rng.standard_normal((200, 4))
    assert frechet_distance(c + 5.0, d + 5.0) == pytest.approx(frechet_distance(c, d), rel=1e-9)
    assert frechet_distance(c, d) == pytest.approx(frechet_distance(d, c), rel=1e-9)


def test_image_frechet_distance_separates_sets_and_trains_on_labels():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-1, 0, (64, 1, 8, 8)), rng.uniform(0, 1, (64, 1, 8, 8))]).astype(np.float32)
    y = np.repeat([0, 1], 64)
    random_net = train_feature_net(x)                              # no labels: fixed-seed random features
    trained = train_feature_net(x, y, steps=30, batch_size=32)
    assert trained.features(x).shape == (128, 32)
    assert np.array_equal(random_net.features(x), train_feature_net(x).features(x))
    for net in (random_net, trained):
        near = image_frechet_distance(net, x[:32], x[32:64])
        far = image_frechet_distance(net, x[:64], x[64:])
        assert 0.0 <= near < far


def test_latent_stability_known_variances_and_collapse():
    from fmq_np.errors import InputError
    from fmq_np.eval import latent_stability
    rng = np.random.default_rng(0)
    n, scales = 20000, np.array([3.0, 2.0, 1.0, 0.5])
    f = np.zeros((n, 30))
    f[:, :4] = rng.standard_normal((n, 4)) * scales     # rank 4: 16 of 20 components collapse
    out = latent_stability(f)
    assert out["n_components"] == 20 and out["collapsed"] == 16
    var = np.r_[scales ** 2, np.zeros(16)]
    assert out["mean_variance"] == pytest.approx(var.mean(), rel=0.03)
    assert out["std_variance"] == pytest.approx(var.std(), rel=0.03)
    small = latent_stability(rng.standard_normal((5, 3)), n_components=20)
    assert small["n_components"] == 3                   # min(20, n - 1, d)
    with pytest.raises(InputError):
        latent_stability(np.ones(4))
    with pytest.raises(InputError):
        latent_stability(np.full((4, 2), np.nan))


def test_unet_latent_is_the_encoder_only():
    m = fq.nn.UNetVelocity(channels=1, size=8, width=8, mults=(1, 2), seed=0)
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    t = np.full(3, 0.3, np.float32)
    z = m.latent(x, t)
    assert z.shape == (3, 16 * 4 * 4)
    params = m.parameters()
    decoder = {k: (v + 1.0 if k.startswith(("up.", "conv_out", "norm_out")) else v) for k, v in params.items()}
    m.load_parameters(decoder)
    np.testing.assert_array_equal(m.latent(x, t), z)    # the decoder does not enter the latent
    encoder = {k: (v * 1.5 if k.startswith("conv_in") else v) for k, v in decoder.items()}
    m.load_parameters(encoder)
    assert not np.allclose(m.latent(x, t), z)


def _mmd_loops(x, y, sigma):
    """Plain-loop unbiased MMD² (the reference)."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma ** 2))
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_against_loops_and_its_properties():
    from fmq_np.errors import InputError
    from fmq_np.eval import mmd
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((5, 3)) + 0.5
    value, sigma = mmd(x, y, bandwidth=1.3)
    assert sigma == 1.3 and value == pytest.approx(_mmd_loops(x, y, 1.3), rel=1e-12)
    pooled = np.concatenate([x, y])
    dists = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(12) for j in range(i + 1, 12)]
    assert mmd(x, y)[1] == pytest.approx(np.median(dists))          # the median heuristic
    assert mmd(x, y)[0] == pytest.approx(mmd(y, x)[0])
    a, b = rng.standard_normal((400, 2)), rng.standard_normal((400, 2))
    same, shifted = mmd(a, b)[0], mmd(a, b + 1.0)[0]
    assert abs(same) < 0.01 and shifted > 0.1
    with pytest.raises(InputError):
        mmd(a, b[:, :1])
    with pytest.raises(InputError):
        mmd(a, b, bandwidth=0.0)

