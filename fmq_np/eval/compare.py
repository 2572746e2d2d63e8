"""A quantized model against its float model, measured on real data (``fmq-np evaluate``, ``fmq_np.reproduce``).

Every figure is float64:

* the paper's velocity probe: both networks' velocity at t = 0 on real data points — RMS difference, relative
  error ``‖Δv‖ / ‖v‖``, and for images PSNR / SSIM after mapping both to [0, 1] by the float output's range;
* samples of both models from the same noise: RMS drift, and each sample set's sliced-W2 distance and MMD² to
  real data;
* with ``likelihood=N``: the test bits/dim of both models on N held-out data points (:func:`likelihood_pair`).
"""
import numpy as np

from .._validate import check_int
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


def paired_difference(a, b):
    """``{mean, minus, ci_minus, n}`` of per-item figures ``b`` and ``a`` (same items): mean of b, mean of b − a and
    its normal 95 % interval (mean ± 1.96 standard errors; infinite for one item)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = b - a
    half = 1.96 * float(np.std(d, ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else float("inf")
    return dict(mean=float(np.mean(b)), minus=float(np.mean(d)),
                ci_minus=[float(np.mean(d) - half), float(np.mean(d) + half)], n=len(d))


def likelihood_pair(model, quantized_model, x, *, solver="heun2", steps=20, seed=0):
    """Bits/dim of data ``x`` under both models, the same probes for both: ``{float, quantized, quantized_minus_float
    (with its interval), n, method}``. Images (n, C, H, W) in [−1, 1]: Hutchinson, one Rademacher probe per item,
    pixel units (256 levels); other data: the exact divergence. ``steps`` of ``solver`` from data to noise."""
    from ..flow import log_likelihood
    image = np.ndim(x) == 4
    kw = dict(method="hutchinson" if image else "exact", solver=solver, steps=steps, seed=seed,
              levels=256 if image else None, progress=False)
    bpd_float = log_likelihood(model, x, **kw).bits_per_dim
    bpd_quant = log_likelihood(quantized_model, x, **kw).bits_per_dim
    diff = paired_difference(bpd_float, bpd_quant)
    return dict(float=float(np.mean(bpd_float)), quantized=diff["mean"], quantized_minus_float=diff["minus"],
                ci=diff["ci_minus"], n=diff["n"], method=kw["method"])


def compare(model, quantized_model, data, *, n=256, solver="heun2", steps=20, seed=0, likelihood=0):
    """Measure what quantization changed. ``data``: real samples shaped like the models' inputs (at least 2n);
    returns a dict of the velocity fidelity at t = 0 on ``n`` data points, the RMS ``drift`` between both models'
    samples from the same ``n`` noise draws (``solver``, ``steps``), and ``sw2_float`` / ``sw2_quantized``: each
    sample set's sliced-W2 distance to ``n`` other data points; ``sw2_data``, the distance between the two sets of
    ``n`` data points, is the floor these can reach with ``n`` samples; ``mmd_float`` / ``mmd_quantized``: the
    unbiased MMD² of each sample set to those data points, with one Gaussian bandwidth (``mmd_bandwidth``, the
    median heuristic on the float samples and the data). ``likelihood``: also the bits/dim of both models on that
    many of the probe's data points (``bits_per_dim``, :func:`likelihood_pair`; 0: not measured)."""
    from ..flow import noise, sample
    check_int("n", n, 2)
    check_int("likelihood", likelihood, 0)
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
    if likelihood:
        out["bits_per_dim"] = likelihood_pair(model, quantized_model, probe[:likelihood], solver=solver,
                                              steps=steps, seed=seed)
    return out
