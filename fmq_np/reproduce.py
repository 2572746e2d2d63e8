"""The paper's five-dataset experiment, scaled down: train → quantize with every method × bits → measure → report.

    from fmq_np import reproduce
    results = reproduce.run("runs/repro")          # the same as:  fmq-np reproduce --out runs/repro

Per dataset (stand-ins of MNIST, Fashion-MNIST, CIFAR-10, CelebA, ImageNet-blurred; see :mod:`fmq_np.datasets`):

1. train a small ``UNetVelocity`` with the paper's recipe (CondOT path, skewed times, AdamW betas (0.9, 0.95),
   linear LR decay, EMA) — or reuse ``OUT/<dataset>/float.h5`` when it already holds a finished run with the same
   settings (training checkpoints there on Ctrl-C and resumes on the next run);
2. for every method × bits: quantize all weights (the paper's four with ``paper_compat=True``, which quantizes
   every tensor incl. biases and norm scales except those with fewer than 2**bits values; ``ot-opt`` with every
   tensor quantized too), load the dequantized weights into a copy of the model and measure
   - ``weight_mse``: mean squared weight error over all parameters,
   - ``psnr`` / ``ssim``: the paper's velocity fidelity — the float and the quantized network's velocity at t = 0
     on a batch of real test images, both mapped to [0, 1] by the float output's min–max range (then clipped),
   - ``fd``: Fréchet distance of generated samples to real test images in the features of a small classifier
     trained on the dataset's labels (random fixed-seed features for the unlabelled faces) — an "FID-like"
     number, not comparable with Inception FIDs,
   - ``drift``: RMS difference between the quantized and the float model's samples from the same noise,
   - ``latent``: the paper's latent stability (PCA of the encoder + middle-block features at t = 0 on the real
     test images: mean / std of 20 component variances, collapsed components);
3. write ``report.md``, ``results.json`` (atomically, after every measurement), sample grids and a plot.
"""
import json
import os
import platform
import sys
import time

import numpy as np

from ._atomic import atomic_path
from .errors import InputError

DATASETS = ("mnist", "fashion", "cifar-standin", "faces", "imagenet-standin")
METHODS = ("ot", "uniform", "pwl", "log2", "ot-opt")
BITS = (2, 3, 4, 8)
#: the paper's dataset each stand-in replaces, and the paper's solver for it
PAPER_NAMES = {"mnist": ("MNIST 28×28", "midpoint"), "fashion": ("Fashion-MNIST 28×28", "heun2"),
               "cifar-standin": ("CIFAR-10 32×32", "heun2"), "faces": ("CelebA 64×64", "dopri5"),
               "imagenet-standin": ("ImageNet (blurred) 64×64", "dopri5")}
#: solver steps of the paper's samplers (midpoint step 0.01; heun2 50 NFE; dopri5: first-step hint, adaptive 1e-5)
PAPER_STEPS = {"midpoint": 100, "heun2": 25, "dopri5": 50}
#: run sizes: U-Net width/levels, training steps and batch, LR, EMA decay, evaluation sizes, solver steps ("paper":
#: :data:`PAPER_STEPS`), whether the 64×64 sets keep the paper's adaptive dopri5 (else heun2)
SCALES = {
    "tiny": dict(width=8, mults=(1, 2), steps=20, batch=8, lr=1e-3, ema=0.5, feature_steps=10, n_velocity=8,
                 n_samples=16, solver_steps=2, dopri5=False),
    "quick": dict(width=16, mults=(1, 2, 2), steps=300, batch=32, lr=1e-3, ema=0.98, feature_steps=150,
                  n_velocity=64, n_samples=128, solver_steps=5, dopri5=False),
    "full": dict(width=32, mults=(1, 2, 2), steps=5000, batch=64, lr=5e-4, ema=0.999, feature_steps=1000,
                 n_velocity=64, n_samples=1000, solver_steps="paper", dopri5=True),
}


def run(out_dir, datasets=DATASETS, bits=BITS, methods=METHODS, scale="quick", seed=0, progress=True,
        command=None):
    """Run the sweep and write ``out_dir/report.md``, ``results.json``, PNGs; returns the results dict.

    ``datasets``: names from :data:`DATASETS`; ``bits``: widths in 1..8; ``methods``: from :data:`METHODS`;
    ``scale``: a key of :data:`SCALES`; ``progress``: print one line per step of work to stderr;
    ``command``: the command line to quote in the report (default: the equivalent Python call).
    """
    datasets, bits, methods = check_args(datasets, bits, methods, scale, seed)
    os.makedirs(out_dir, exist_ok=True)
    cfg = SCALES[scale]
    command = command or (f"fmq_np.reproduce.run({out_dir!r}, datasets={datasets}, bits={bits}, "
                          f"methods={methods}, scale={scale!r}, seed={seed})")
    results = dict(command=command, scale=scale, settings=_jsonable(cfg), seed=seed, bits=list(bits),
                   methods=list(methods), machine=f"{platform.machine()} {platform.system()}, "
                   f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}", datasets={})
    start = time.perf_counter()
    try:
        for i, name in enumerate(datasets):
            _say(progress, f"[{i + 1}/{len(datasets)}] {name}")
            _run_dataset(out_dir, name, bits, methods, cfg, seed, progress, results)
    except KeyboardInterrupt:       # Ctrl-C: report what was measured (training checkpoints itself), then stop
        results["interrupted"] = True
        _finish(out_dir, results, start)
        raise
    _finish(out_dir, results, start)
    _say(progress, f"done in {results['seconds']:.0f} s -> {os.path.join(out_dir, 'report.md')}")
    return results


def _finish(out_dir, results, start):
    """Write results.json, the plot and report.md for what ``results`` holds so far."""
    results["seconds"] = time.perf_counter() - start
    _write_json(os.path.join(out_dir, "results.json"), results)
    results["plot"] = _plot(out_dir, results)
    _write_text(os.path.join(out_dir, "report.md"), report_markdown(results))
    _write_json(os.path.join(out_dir, "results.json"), results)


def check_args(datasets, bits, methods, scale, seed):
    """Validate :func:`run`'s arguments (InputError naming the bad one); returns cleaned datasets, bits, methods."""
    from .datasets import canonical
    if isinstance(datasets, str) or not datasets:
        raise InputError(f"datasets must be a non-empty list of names, got {datasets!r}")
    datasets = [canonical(d) for d in datasets]
    for d in datasets:
        if d not in DATASETS:
            raise InputError(f"datasets: {d!r} is not part of the sweep; choose from {', '.join(DATASETS)}")
    if not bits or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= b <= 8
                       for b in bits):
        raise InputError(f"bits must be a non-empty list of integers in 1..8, got {bits!r}")
    if isinstance(methods, str) or not methods or any(m not in METHODS for m in methods):
        raise InputError(f"methods must be a non-empty list from {', '.join(METHODS)}, got {methods!r}")
    if scale not in SCALES:
        raise InputError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return list(dict.fromkeys(datasets)), sorted({int(b) for b in bits}), list(dict.fromkeys(methods))


def _run_dataset(out_dir, name, bits, methods, cfg, seed, progress, results):
    """Train (or reuse) one dataset's model, sweep methods × bits, write its PNGs; its results go into
    ``results["datasets"][name]`` (and ``results.json``) as they come."""
    from . import images
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    model, trained = train_or_reuse(os.path.join(folder, "float.h5"), name, cfg, seed, progress)
    t_train = time.perf_counter() - t0
    ev = _Evaluator(name, model, cfg, seed, progress)
    entry = dict(paper_dataset=PAPER_NAMES[name][0], solver=ev.solver, solver_steps=ev.steps, trained=trained,
                 train_seconds=t_train, parameters=int(sum(p.size for p in model.parameters().values())),
                 model_config=_jsonable(model.config()), feature_net=ev.feature_kind, fd_float=ev.fd_float,
                 fd_data=ev.fd_data, latent_float=ev.latent_float, runs=[])
    results["datasets"][name] = entry
    images.save_samples_png(os.path.join(folder, "real.png"), ev.real[:64])
    images.save_samples_png(os.path.join(folder, "samples_float.png"), ev.float_samples[:64])
    lowest = min(bits)
    for k, (method, b) in enumerate((m, b) for m in methods for b in bits):
        row, samples = ev.measure(method, b)
        entry["runs"].append(row)
        _write_json(os.path.join(out_dir, "results.json"), results)
        _say(progress, f"  {name} {method:7s} {b}-bit ({k + 1}/{len(methods) * len(bits)}): "
                       f"psnr {row['psnr']:.2f} dB, ssim {row['ssim']:.3f}, fd {row['fd']:.3g}, "
                       f"drift {row['drift']:.3g}")
        if b == lowest:
            images.save_samples_png(os.path.join(folder, f"samples_{method}_{b}bit.png"), samples[:64])
    entry["seconds"] = time.perf_counter() - t0


def train_or_reuse(path, name, cfg, seed, progress):
    """The float U-Net of dataset ``name``: loaded from ``path`` when it holds a finished run with these settings,
    else trained (resuming an interrupted run in ``path``). Returns ``(model, trained_now)``."""
    from . import datasets, flow, io, nn
    shape = datasets.data_shape(name)
    model = nn.UNetVelocity(channels=shape[0], size=shape[1], width=cfg["width"], mults=cfg["mults"], seed=seed)
    settings = _train_settings(cfg)
    if os.path.exists(path):
        saved, meta = io.load_model(path)
        same = saved.config() == model.config() and meta.get("reproduce") == settings
        if same and meta.get("trained_steps") == cfg["steps"]:
            _say(progress, f"  reusing {path} ({cfg['steps']} steps)")
            return saved, False
        if not same:
            raise InputError(f"{path} was trained with other settings (another --scale or --seed?); "
                             "use another --out or delete it")
    data = datasets.load(name, seed=seed)
    _say(progress, f"  training U-Net (width {cfg['width']}) on {len(data)} images, {cfg['steps']} steps")
    flow.fit(model, data, steps=cfg["steps"], batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
             betas=(0.9, 0.95), ema_decay=cfg["ema"], schedule="linear", times="skewed", checkpoint=path,
             checkpoint_every=max(cfg["steps"] // 5, 1), resume=True, progress=None if progress else False,
             meta={"dataset": name, "reproduce": settings})
    return model, True


def _train_settings(cfg):
    """The settings a float checkpoint records and must match to be reused (JSON-able)."""
    settings = {k: cfg[k] for k in ("width", "mults", "steps", "batch", "lr", "ema")}
    settings["mults"] = list(settings["mults"])
    return settings


class _Evaluator:
    """Everything the measurements of one dataset share: the float model's velocities and samples, the real
    images, the feature network and the noise."""

    def __init__(self, name, model, cfg, seed, progress):
        from . import datasets, flow
        from .eval import image_features, train_feature_net
        self.model = model
        self.solver = PAPER_NAMES[name][1]
        if self.solver == "dopri5" and not cfg["dopri5"]:
            self.solver = "heun2"
        self.steps = PAPER_STEPS[self.solver] if cfg["solver_steps"] == "paper" else cfg["solver_steps"]
        split = "test" if datasets.has_labels(name) else "train"
        n = min(cfg["n_samples"], len(datasets.load(name, split=split)))
        self.real = datasets.load(name, n=n, seed=seed + 1, split=split)
        x_train, labels = _train_images(name, seed)
        _say(progress, f"  feature network ({'trained on labels' if labels is not None else 'random weights'})")
        self.net = train_feature_net(x_train, labels, steps=cfg["feature_steps"], seed=seed)
        self.feature_kind = ("classifier trained on labels" if labels is not None
                             else "random-weight classifier (no labels)")
        self.real_features = image_features(self.net, self.real)
        # noise floor: FD between n training images and the n real test images (None without a test split)
        other = x_train[np.random.default_rng(seed + 2).choice(len(x_train), n, replace=False)]
        self.fd_data = self._fd(other) if split == "test" else None
        self.x_velocity = datasets.load(name, n=min(cfg["n_velocity"], n), seed=seed + 3, split=split)
        self.v_float = self._velocity(model)
        self.x0 = flow.noise(model, n, seed=seed + 4)
        _say(progress, f"  sampling {n} images from the float model ({self.solver}, {self.steps} steps)")
        self.float_samples = self._sample(model)
        self.fd_float = self._fd(self.float_samples)
        self.latent_float = self._latent(model)

    def _latent(self, model):
        """The paper's latent stability: PCA of the encoder + middle-block features at t = 0 on the real images."""
        from .eval import latent_stability
        return latent_stability(model.latent(self.real, np.zeros(len(self.real), np.float32)))

    def _velocity(self, model):
        """The paper's probe: velocity at t = 0 on real images (n, C, H, W)."""
        return model(self.x_velocity, np.zeros(len(self.x_velocity), np.float32))

    def _sample(self, model):
        from . import flow
        return flow.sample(model, x0=self.x0, solver=self.solver, steps=self.steps, progress=False)

    def _fd(self, samples):
        from .eval import frechet_distance, image_features
        return frechet_distance(image_features(self.net, samples), self.real_features)

    def measure(self, method, bits):
        """Quantize with ``method`` at ``bits`` and measure; returns ``(row dict, samples)``."""
        from . import nn, quant
        from .eval import velocity_fidelity
        params = self.model.parameters()
        if method == "ot-opt":       # our method, on the same tensors as the paper's (every tensor)
            qm = quant.quantize_model(params, bits=bits, method=method, policy=lambda name, array: bits)
        else:
            qm = quant.quantize_model(params, bits=bits, method=method, paper_compat=True)
        qmodel = nn.UNetVelocity(**self.model.config())
        qmodel.load_parameters(qm.dequantize())
        sizes = [int(np.prod(r["shape"])) for r in qm.report]
        mse = sum(r["mse"] * k for r, k in zip(qm.report, sizes)) / sum(sizes)
        predicted = _predicted_mse(params, qm.report, sizes, method, bits)
        fidelity = velocity_fidelity(self.v_float, self._velocity(qmodel))
        samples = self._sample(qmodel)
        drift = float(np.sqrt(np.mean((samples.astype(np.float64) - self.float_samples) ** 2)))
        row = dict(method=method, bits=bits, weight_mse=mse, predicted_mse=predicted, psnr=fidelity["psnr"], ssim=fidelity["ssim"],
                   fd=self._fd(samples), drift=drift, latent=self._latent(qmodel),
                   kept_float=sum(1 for r in qm.report if r["skipped"]), tensors=len(qm.report))
        return row, samples


def _predicted_mse(params, report, sizes, method, bits):
    """The theory's weight-level prediction (:func:`fmq_np.theory.weights.predicted_mse`, per channel) of the mean
    squared weight error over all parameters, tensors kept in float counting 0; None for log2 (no prediction)."""
    from .theory.weights import PREDICTABLE, predicted_mse
    if method not in PREDICTABLE:
        return None
    total = sum(predicted_mse(params[r["name"]], bits, method, "channel") * k
                for r, k in zip(report, sizes) if r["bits"] is not None and not r["skipped"])
    return total / sum(sizes)


def _train_images(name, seed):
    """Training images and labels (None for unlabelled sets) for the feature network."""
    from . import datasets
    if datasets.has_labels(name):
        return datasets.load(name, seed=seed, return_labels=True)
    return datasets.load(name, seed=seed), None


def report_markdown(results):
    """The Markdown report of a results dict from :func:`run`."""
    cfg = results["settings"]
    lines = ["# fmq_np reproduction of the paper's five-dataset sweep (scaled down)", "",
             f"Command: `{results['command']}`  ", f"Scale `{results['scale']}`, seed {results['seed']}, "
             f"wall time {results.get('seconds', 0):.0f} s on {results['machine']}"
             + (" — **interrupted (Ctrl-C): partial results**." if results.get("interrupted") else "."), "",
             "Columns: `weight MSE` over all parameters and, `predicted`, the theory's prediction of it made before "
             "quantizing (fmq_np.theory.weights: Δ²/12 for uniform, the equal-mass error of the quantile function for "
             "ot and pwl, Panter–Dite for ot-opt, none for log2); `PSNR`/`SSIM` (dB / 1 = identical) of the quantized vs "
             f"the float network's velocity at t = 0 on {cfg['n_velocity']} real test images (both mapped to "
             "[0, 1] by the float output's range); `FD` = Fréchet distance of generated samples to real images "
             "in a small classifier's features (lower is better; *not* an Inception FID); `drift` = RMS "
             "difference to the float model's samples from the same noise (pixels in [−1, 1]); `latent variance` = "
             "the paper's latent stability: PCA of the encoder + middle-block features at t = 0 on the real test "
             "images to 20 components, mean ± std of their variances and (in brackets) how many of them collapsed "
             "(variance < 1e-4).", ""]
    lines += _summary(results)
    lines += _theory_check(results)
    for name, entry in results["datasets"].items():
        lines += _dataset_section(name, entry)
    lines += ["## What is scaled down (honestly)", "", *_notes(results), ""]
    if results.get("plot"):
        lines += [f"Plot: {results['plot']}", ""]
    return "\n".join(lines)


def _summary(results):
    """A table: per dataset and bit width, the method with the highest velocity PSNR / the lowest drift."""
    bits = results["bits"]
    lines = ["## Summary: best method per bit width (highest velocity PSNR / lowest sample drift)", "",
             "| dataset | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---" * (len(bits) + 1) + "|"]
    for name, entry in results["datasets"].items():
        cells = []
        for b in bits:
            runs = [r for r in entry["runs"] if r["bits"] == b]
            cells.append(f"{max(runs, key=lambda r: r['psnr'])['method']} / "
                         f"{min(runs, key=lambda r: r['drift'])['method']}" if runs else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _theory_check(results):
    """A table: per method and bit width, the range over datasets of predicted / measured weight MSE."""
    bits = results["bits"]
    ratios = {}
    for entry in results["datasets"].values():
        for r in entry["runs"]:
            if r.get("predicted_mse") is not None and r["weight_mse"] > 0:
                ratios.setdefault(r["method"], {}).setdefault(r["bits"], []).append(r["predicted_mse"] /
                                                                                     r["weight_mse"])
    if not ratios:
        return []
    lines = ["## Theory check: predicted / measured weight MSE (range over the datasets)", "",
             "| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---" * (len(bits) + 1) + "|"]
    for method, by_bits in ratios.items():
        cells = [f"{min(by_bits[b]):.2f}–{max(by_bits[b]):.2f}" if b in by_bits else "-" for b in bits]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def _dataset_section(name, entry):
    cfg = entry["model_config"]
    lines = [f"## {name} (stand-in for {entry['paper_dataset']})", "",
             f"U-Net width {cfg['width']}, levels {cfg['mults']}, {entry['parameters']} parameters; "
             f"{'trained now' if entry['trained'] else 'reused checkpoint'} ({entry['train_seconds']:.0f} s); "
             f"sampler {entry['solver']}, {entry['solver_steps']} steps; features: {entry['feature_net']}.  ",
             f"FD of the float model: **{entry['fd_float']:.4g}**; FD between real training and test images "
             f"of the same number (the noise floor): "
             + ("n/a (a single image set)" if entry["fd_data"] is None else f"{entry['fd_data']:.4g}") + ".", "",
             f"Latent stability of the float model: {_latent_cell(entry['latent_float'])}.", "",
             "| method | bits | weight MSE | predicted | PSNR (dB) | SSIM | FD | drift | latent variance (collapsed) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in entry["runs"]:
        pred = "-" if r.get("predicted_mse") is None else f"{r['predicted_mse']:.2e}"
        lines.append(f"| {r['method']} | {r['bits']} | {r['weight_mse']:.3e} | {pred} | {r['psnr']:.2f} | {r['ssim']:.4f} "
                     f"| {r['fd']:.4g} | {r['drift']:.3g} | {_latent_cell(r['latent'])} |")
    lowest = min(r["bits"] for r in entry["runs"])
    pngs = ", ".join(f"`{name}/samples_{m}_{lowest}bit.png`" for m in dict.fromkeys(r["method"] for r in entry["runs"]))
    return lines + ["", f"Samples: `{name}/real.png`, `{name}/samples_float.png`, {pngs}.", ""]


def _latent_cell(stats):
    """``mean ± std (collapsed/components)`` of a latent_stability dict."""
    return (f"{stats['mean_variance']:.3g} ± {stats['std_variance']:.2g} "
            f"({stats['collapsed']}/{stats['n_components']})")


def _notes(results):
    cfg = results["settings"]
    return [f"- Networks: U-Nets of width {cfg['width']} with {len(cfg['mults'])} levels and one residual block per "
            "level, no attention (the paper: 128 channels, 4 blocks per level, attention), trained "
            f"{cfg['steps']} steps at batch {cfg['batch']} with lr {cfg['lr']:g} decaying linearly and EMA "
            f"{cfg['ema']} (the paper: lr 1e-4 for far longer); same CondOT path, MSE loss, skewed times, "
            "AdamW betas (0.9, 0.95).",
            "- Data: MNIST and Fashion-MNIST are 8000-image training subsets (test: 1000 images); CIFAR-10, "
            "CelebA and ImageNet cannot be obtained here, so stand-ins are used: 32×32 colour crops of five "
            "photographs (`cifar-standin`, label = photo), the 100 LFW faces at 24×24 grey (`faces`, no labels), "
            "blurred 32×32 crops at other scales (`imagenet-standin`; the paper's ImageNet is 64×64).",
            f"- Metrics: FD uses {cfg['n_samples']} samples (faces: 100) and a small classifier's 32 features, "
            "not 50k samples and Inception; compare FDs within a table and against the float model and the noise "
            "floor only. The unlabelled faces use a fixed-seed random-weight classifier's features, whose FD has an "
            "arbitrary (tiny) absolute scale: read it relative to the float model's.",
            ("- Sampling: the paper's solvers and steps" if cfg["solver_steps"] == "paper" else
             f"- Sampling: the paper's fixed-step solvers with {cfg['solver_steps']} steps")
            + ("" if cfg["dopri5"] else "; heun2 replaces the paper's adaptive dopri5 for the two 64×64 sets")
            + " (the paper: midpoint step 0.01, heun2 50 NFE, dopri5 1e-5).",
            "- Quantization: `ot`, `uniform`, `pwl`, `log2` run with `paper_compat=True` as the published code "
            "does: every tensor is quantized, incl. biases and norm scales (tensors of ndim > 1 per output channel, "
            "1-D ones whole), except tensors with fewer than 2**bits values for ot/pwl/log2; `ot-opt` (ours, the "
            "exact W2-optimal codebook) quantizes every tensor the same way, with no size skip.",
            f"- Latent stability on the {cfg['n_samples']} real test images of the FD (faces: 100) instead of "
            "the paper's 10k.",
            "- Velocity PSNR/SSIM: as the paper, the network is probed at t = 0 with real images as input; both "
            "outputs are mapped to [0, 1] with the float output's min and max (PAPER.md does not say how the "
            "published code maps velocities to [0, 1]); SSIM uses all 11×11 windows that fit (no padding)."]


def _plot(out_dir, results):
    """Velocity PSNR, FD and drift vs bits per method and dataset as ``plot.png`` when matplotlib is installed;
    else a note saying why there is no plot."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn: matplotlib is not installed (pip install 'fmq_np[plot]')"
    names = list(results["datasets"])
    rows = (("psnr", "velocity PSNR (dB)", "linear"), ("fd", "FD (log)", "log"), ("drift", "drift (log)", "log"))
    fig, axes = plt.subplots(len(rows), len(names), figsize=(3.2 * len(names), 8.4), squeeze=False)
    for j, name in enumerate(names):
        entry = results["datasets"][name]
        for method in results["methods"]:
            runs = [r for r in entry["runs"] if r["method"] == method]
            for i, (key, _, _) in enumerate(rows):
                values = [min(r[key], 120.0) if key == "psnr" else r[key] for r in runs]   # PSNR may be inf
                axes[i, j].plot([r["bits"] for r in runs], values, "o-", label=method)
        axes[1, j].axhline(entry["fd_float"], color="k", ls="--", lw=1, label="float model")
        axes[0, j].set_title(name)
        axes[-1, j].set_xlabel("bits")
        for i, (_, label, yscale) in enumerate(rows):
            axes[i, j].set_yscale(yscale)
            axes[i, 0].set_ylabel(label)
    axes[1, -1].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "plot.png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return "`plot.png` (velocity PSNR, FD and drift vs bits, per method and dataset)"


def _jsonable(cfg):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _write_json(path, obj):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def _say(enabled, line):
    if enabled:
        print(line, file=sys.stderr, flush=True)
