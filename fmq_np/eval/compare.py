"""A quantized model against its float model, measured on real data (``fmq-np evaluate``, ``fmq_np.reproduce``).

Every figure is float64:

* the paper's velocity probe: both networks' velocity at t = 0 on real data points — RMS difference, relative
  error ``‖Δv‖ / ‖v‖``, and for images PSNR / SSIM after mapping both to [0, 1] by the float output's range;
* samples of both models from the same noise: RMS drift, and each sample set's sliced-W2 distance and MMD² to
  real data.
"""
import numpy as np

from .._checks import is_int
from ..errors import InputError
from .metrics import mmd, psnr, sliced_w2, ssim


def unit_range(v, lo, hi):
    """``v`` mapped to [0, 1] by the range [lo, hi] (the float model's output range), clipped; float64."""
    return np.clip((np.asarray(v, np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def velocity_fidelity(v_float, v_quant):
    """``{rmse, rel_error}`` of two velocity batches of the same shape, plus ``psnr`` (dB) and ``ssim`` for image
    batches (n, C, H, W), both mapped to [0, 1] by the float batch's min and max as :func:`unit_range` does.
    SSIM uses the usual 11×11 window, or on images smaller than that the largest odd window that fits
    (``ssim_window``: 7 on the 8×8 digits)."""
    a = np.asarray(v_float, np.float64)
    b = np.asarray(v_quant, np.float64)
    if a.shape != b.shape:
        raise InputError(f"velocity batches differ in shape: {a.shape} vs {b.shape}")
    diff = b - a
    out = dict(rmse=float(np.sqrt(np.mean(diff ** 2))),
               rel_error=float(np.linalg.norm(diff) / max(np.linalg.norm(a), 1e-300)))
    if a.ndim == 4:
        lo, hi = float(a.min()), float(a.max())
        ua, ub = unit_range(a, lo, hi), unit_range(b, lo, hi)
        window = min(11, (min(a.shape[2:]) - 1) // 2 * 2 + 1)
        out.update(psnr=psnr(ua, ub), ssim=ssim(ua, ub, window=window), ssim_window=window)
    return out


def compare(model, quantized_model, data, n=256, solver="heun2", steps=20, seed=0):
    """Measure what quantization changed. ``data``: real samples shaped like the models' inputs (at least 2n);
    returns a dict of the velocity fidelity at t = 0 on ``n`` data points, the RMS ``drift`` between both models'
    samples from the same ``n`` noise draws (``solver``, ``steps``), and ``sw2_float`` / ``sw2_quantized``: each
    sample set's sliced-W2 distance to ``n`` other data points; ``sw2_data``, the distance between the two sets of
    ``n`` data points, is the floor these can reach with ``n`` samples; ``mmd_float`` / ``mmd_quantized``: the
    unbiased MMD² of each sample set to those data points, with one Gaussian bandwidth (``mmd_bandwidth``, the
    median heuristic on the float samples and the data)."""
    from ..flow import noise, sample
    if not is_int(n) or n < 2:
        raise InputError(f"n must be an integer >= 2, got {n!r}")
    data = np.asarray(data)
    if len(data) < 2 * n:
        raise InputError(f"data holds {len(data)} samples; n={n} needs at least {2 * n} (use n <= {len(data) // 2})")
    pick = np.random.default_rng(seed).choice(len(data), 2 * n, replace=False)
    probe, reference = data[pick[:n]], data[pick[n:]]
    t0 = np.zeros(n, probe.dtype)
    out = velocity_fidelity(model(probe, t0), quantized_model(probe, t0))
    x0 = noise(model, n, seed=seed + 1)
    s_float = sample(model, x0=x0, solver=solver, steps=steps, progress=False)
    s_quant = sample(quantized_model, x0=x0, solver=solver, steps=steps, progress=False)
    mmd_float, sigma = mmd(s_float, reference)
    out.update(mmd_float=mmd_float, mmd_quantized=mmd(s_quant, reference, bandwidth=sigma)[0], mmd_bandwidth=sigma)
    out.update(drift=float(np.sqrt(np.mean((s_quant.astype(np.float64) - s_float) ** 2))),
               sw2_float=sliced_w2(s_float, reference, seed=seed),
               sw2_quantized=sliced_w2(s_quant, reference, seed=seed),
               sw2_data=sliced_w2(probe, reference, seed=seed), n=n, solver=solver, steps=steps)
    return out
