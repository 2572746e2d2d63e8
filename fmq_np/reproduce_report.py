"""What :mod:`fmq_np.reproduce` writes: FD statistics per dataset, the verdict on the paper's claim, report.md,
results.json and plot.png.

The paper's claim, as this report tests it: *at 2–3 bits the equal-mass OT quantizer keeps the generative quality
of the float model, where uniform, PWL and log2 quantization fail.* Per dataset and headline bit width:

- **OT keeps quality** when FD(ot) − FD(float) is at most :data:`KEEP_TOLERANCE` × FD(float) with 95 %
  confidence (the upper end of its paired interval); it **loses quality** when the lower end is above that;
- another method **fails where OT does not** when FD(method) − FD(ot) is significantly above 0, and **beats OT**
  when it is significantly below 0.

It *supports* the claim when OT keeps quality and uniform, PWL and log2 are all significantly worse; it
*contradicts* it when OT loses quality or one of them is significantly better than OT; otherwise it *cannot tell*.
"""
import os

import numpy as np

from . import _atomic

#: how far above the float model's FD the OT model may be and still "keep quality" (fraction of FD(float))
KEEP_TOLERANCE = 0.25
#: the methods the paper's claim says fail at 2–3 bits
PAPER_BASELINES = ("uniform", "pwl", "log2")


# --------------------------------------------------------------------------------------------- statistics
def dataset_statistics(entry, ev, n_boot, seed):
    """Fill ``entry`` (a dataset's results) with FDs, intervals and paired differences from the sample features
    ``ev.features`` (``(set name, seed index) -> features``) of a :class:`~fmq_np.reproduce.Evaluator`."""
    from .eval.fd_stats import paired_bootstrap
    first = [name for (name, k) in ev.features if k == 0]
    single = paired_bootstrap([{name: ev.features[name, 0] for name in first}], ev.ref_features, n_boot=n_boot,
                              seed=seed)
    entry["fd_float"] = single.fd("float")
    multi = None
    headline = ["float"] + [f"{r['method']}@{r['bits']}" for r in entry["runs"] if r["seeds"] == entry["seeds"]
                            and r["bits"] in entry["headline_bits"]]
    if entry["seeds"] > 1:
        multi = paired_bootstrap([{name: ev.features[name, k] for name in headline} for k in range(entry["seeds"])],
                                 ev.ref_features, n_boot=n_boot, seed=seed)
        entry["fd_float_seeds"] = multi.fd("float")
    for r in entry["runs"]:
        key, ot = f"{r['method']}@{r['bits']}", f"ot@{r['bits']}"
        stats = multi if multi is not None and key in headline else single
        r["fd"] = stats.fd(key)
        r["fd_minus_float"] = stats.diff(key, "float")
        if r["method"] != "ot" and ot in stats.names:
            r["fd_minus_ot"] = stats.diff(key, ot)
    if entry.get("paper_sampler"):          # on the first n_paper noise vectors of the first draw
        m = ev.n_paper
        paper = paired_bootstrap([{"float": ev.features["float", 0][:m], "float@paper": ev.paper_features}],
                                 ev.ref_features, n_boot=n_boot, seed=seed)
        entry["paper_sampler"]["fd"] = paper.fd("float@paper")
        entry["paper_sampler"]["fd_default_same_noise"] = paper.fd("float")
        entry["paper_sampler"]["fd_minus_default"] = paper.diff("float@paper", "float")


def verdicts(entry):
    """``{bits: (verdict, reasons)}`` for the dataset's headline bit widths and an overall ``(verdict, reasons)``;
    verdicts are ``"supports"``, ``"contradicts"``, ``"cannot tell"`` (see the module doc)."""
    runs = {(r["method"], r["bits"]): r for r in entry["runs"] if "fd" in r}
    float_fd = (entry.get("fd_float_seeds") or entry["fd_float"])["fd"]
    per_bits = {}
    for b in entry["headline_bits"]:
        ot = runs.get(("ot", b))
        others = [runs.get((m, b)) for m in PAPER_BASELINES]
        if ot is None or any(o is None for o in others):
            per_bits[b] = ("cannot tell", ["ot, uniform, pwl and log2 were not all measured"])
            continue
        lo, hi = ot["fd_minus_float"]["ci"]
        reasons = []
        keeps = hi <= KEEP_TOLERANCE * float_fd
        loses = lo > KEEP_TOLERANCE * float_fd
        reasons.append(f"ot vs float: {_diff_text(ot['fd_minus_float'])} "
                       f"({'keeps' if keeps else 'loses' if loses else 'not shown to keep'} quality: tolerance "
                       f"{KEEP_TOLERANCE * float_fd:.3g})")
        worse = beats = 0
        for m, o in zip(PAPER_BASELINES, others):
            d = o["fd_minus_ot"]
            worse += d["significant"] and d["diff"] > 0
            beats += d["significant"] and d["diff"] < 0
            reasons.append(f"{m} − ot: {_diff_text(d)}")
        if loses or beats:
            per_bits[b] = ("contradicts", reasons)
        elif keeps and worse == len(PAPER_BASELINES):
            per_bits[b] = ("supports", reasons)
        else:
            per_bits[b] = ("cannot tell", reasons)
    kinds = [v for v, _ in per_bits.values()]
    if not kinds:
        overall = "cannot tell"
    elif "contradicts" in kinds:
        overall = "contradicts"
    elif all(k == "supports" for k in kinds):
        overall = "supports"
    else:
        overall = "cannot tell"
    return per_bits, overall


def _diff_text(d):
    lo, hi = d["ci"]
    text = f"{d['diff']:+.3g} [{lo:+.3g}, {hi:+.3g}]"
    return text if d["significant"] else text + " no significant difference"


# --------------------------------------------------------------------------------------------- files
def finish(out_dir, results, seconds):
    """Write results.json, the plot and report.md for what ``results`` holds so far."""
    results["seconds"] = seconds
    for entry in results["datasets"].values():
        if entry["runs"] and "fd" in entry["runs"][0]:
            per_bits, overall = verdicts(entry)
            entry["verdict"] = dict(overall=overall, per_bits={str(b): dict(verdict=v, reasons=r)
                                                               for b, (v, r) in per_bits.items()})
    write_json(os.path.join(out_dir, "results.json"), results)
    results["plot"] = _plot(out_dir, results)
    _atomic.write_text(os.path.join(out_dir, "report.md"), report_markdown(results))
    write_json(os.path.join(out_dir, "results.json"), results)


def write_json(path, obj):
    """``obj`` as JSON at ``path``, atomically (NumPy scalars and tuples converted)."""
    _atomic.write_json(path, obj, default=_json_default)


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


# --------------------------------------------------------------------------------------------- Markdown
def report_markdown(results):
    """The Markdown report of a results dict from :func:`fmq_np.reproduce.run`."""
    cfg = results["settings"]
    lines = ["# fmq_np reproduction of the paper's five-dataset sweep (scaled down)", "",
             f"Command: `{results['command']}`  ", f"Scale `{results['scale']}`, seed {results['seed']}, "
             f"wall time {results.get('seconds', 0):.0f} s on {results['machine']}"
             + (" — **interrupted (Ctrl-C): partial results**." if results.get("interrupted") else "."), "",
             "Every model samples from the same noise as the float model, so FDs are compared in pairs: "
             f"`FD [lo, hi]` is the FD with its 95 % paired bootstrap interval ({cfg['n_boot']} replicates over "
             "sample rows and reference images; basic intervals: an FD of n samples is biased upwards, resampling "
             "repeats rows and inflates it further, and the basic interval undoes that shift, so it can lie below "
             "the FD itself), `− ot` and `− float` are the paired differences "
             "FD(row) − FD(ot at the same bits) and FD(row) − FD(float) with theirs. A difference whose interval "
             "crosses 0 is marked *n.s.* (no significant difference). FD is measured in the penultimate features "
             "of a classifier trained on the dataset's labels and shipped in data/models (not Inception: compare "
             "FDs within a dataset, and with its floor).", ""]
    lines += _claim(results)
    lines += _headline(results)
    lines += _theory_check(results)
    for name, entry in results["datasets"].items():
        lines += _dataset_section(name, entry)
    lines += ["## What is scaled down (honestly)", "", *_notes(results), ""]
    if results.get("plot"):
        lines += [f"Plot: {results['plot']}", ""]
    return "\n".join(lines)


def _claim(results):
    lines = ["## The paper's claim, per dataset", "",
             "*At 2–3 bits the equal-mass OT quantizer keeps the float model's generative quality, where uniform, "
             "PWL and log2 fail.* Tested per headline bit width: OT keeps quality when the upper end of "
             f"FD(ot) − FD(float) is at most {KEEP_TOLERANCE:.0%} of FD(float); uniform/PWL/log2 fail where OT "
             "does not when FD(method) − FD(ot) is significantly above 0 (module doc of "
             "`fmq_np.reproduce_report`).", "", "| dataset | verdict | per bit width |", "|---|---|---|"]
    for name, entry in results["datasets"].items():
        v = entry.get("verdict")
        if v is None:
            reason = ("no FD: unlabelled images (see its section)" if entry.get("fd_floor") is None
                      else "not measured")
            lines.append(f"| {name} | cannot tell | {reason} |")
            continue
        cells = "; ".join(f"{b} bits: **{x['verdict']}** ({' · '.join(x['reasons'])})"
                          for b, x in v["per_bits"].items())
        lines.append(f"| {name} | **{v['overall']}** | {cells} |")
    return lines + [""]


def _headline(results):
    lines = ["## Headline: FD at the headline bit widths (mean over the noise seeds)", "",
             "| dataset | seeds × n | floor (real data) | float | method | bits | FD [95 %] | − ot | − float |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results["datasets"].items():
        if "fd_float" not in entry:
            continue
        flt = entry.get("fd_float_seeds") or entry["fd_float"]
        floor = entry["fd_floor"]
        for r in entry["runs"]:
            if r["bits"] not in entry["headline_bits"] or "fd" not in r:
                continue
            lines.append(f"| {name} | {r['fd']['groups']} × {r['fd']['n_samples']} | {floor['mean']:.3g} ± "
                         f"{floor['std']:.2g} | {_fd_text(flt)} | {r['method']} | {r['bits']} | {_fd_text(r['fd'])} "
                         f"| {_maybe_diff(r.get('fd_minus_ot'))} | {_maybe_diff(r['fd_minus_float'])} |")
    return lines + [""]


def _fd_text(f):
    return f"{f['fd']:.3g} [{f['ci'][0]:.3g}, {f['ci'][1]:.3g}]"


def _maybe_diff(d):
    if d is None:
        return "-"
    text = f"{d['diff']:+.3g} [{d['ci'][0]:+.3g}, {d['ci'][1]:+.3g}]"
    return text if d["significant"] else text + " *n.s.*"


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


def _free_codes_note(info):
    """What a tuned row's ``tuned`` record adds when its codes were free (``codes="free"``): steps and code changes."""
    if info.get("codes") != "free":
        return ""
    return f" (then {info['iters']} more steps with free codes, {info['code_changes']} code changes)"


def _dataset_section(name, entry):
    cfg = entry["model_config"]
    recipe = entry.get("recipe") or {}
    lines = [f"## {name} (stand-in for {entry['paper_dataset']})", "",
             f"Float model `{os.path.basename(entry['model_file'])}`: U-Net width {cfg['width']}, levels "
             f"{cfg['mults']}, {entry['parameters']} parameters, trained {entry['trained_steps']} steps at batch "
             f"{recipe.get('batch')} ({(entry.get('train_seconds') or 0) / 60:.0f} min on one core). Sampler "
             f"{entry['solver']} with {entry['solver_steps']} steps, {entry['seeds']} noise seed(s) × "
             f"{entry['n_samples']} samples.", ""]
    if entry.get("fd_floor") is None:
        lines += ["No FD for this set: its images have no labels, so no classifier can be trained for its features, "
                  "and random-weight features carry no information (their FDs were ~1e-5 whatever the samples); a "
                  "self-supervised net trained on 100 images would be no better. The rows below give the paper's "
                  "velocity PSNR/SSIM, the sample drift and the latent stability only.", ""]
    elif "fd_float" not in entry:
        lines += ["The run was stopped before this set's FD statistics were computed: its rows below have no FD "
                  "(their sample features were in memory only; run the set again).", ""]
    else:
        feat = entry["feature_net"]
        floor = entry["fd_floor"]
        flt = entry["fd_float"]
        lines += [f"FD features: `{os.path.basename(feat['file'])}`, {feat['features']} features, test accuracy "
                  f"{feat['test_accuracy']:.2%}. FD of the float model: **{_fd_text(flt)}** "
                  f"({flt['fd'] / floor['mean']:.2f}× the floor); floor (FD of {floor['n_samples']} real training "
                  f"images, mean ± std over {floor['draws']} disjoint draws): **{floor['mean']:.3g} ± "
                  f"{floor['std']:.2g}**; Gaussian noise: {entry['fd_noise']:.3g}.", ""]
        if entry.get("fd_float_seeds"):
            lines += [f"Float FD over {entry['seeds']} noise seeds: {_fd_text(entry['fd_float_seeds'])} "
                      f"(per seed: {', '.join(f'{v:.3g}' for v in entry['fd_float_seeds']['per_group'])}).", ""]
        paper = entry.get("paper_sampler")
        if paper and "fd" in paper:
            how = (f"dopri5, tolerance {paper['tolerance']:g}" if paper["solver"] == "dopri5" else
                   f"{paper['solver']}, {paper['steps']} steps")
            lines += [f"The paper's sampler ({how}, {paper['seconds']:.0f} s) on the first {paper['n_samples']} noise "
                      f"vectors: float FD {_fd_text(paper['fd'])}, the default sampler on the same noise "
                      f"{_fd_text(paper['fd_default_same_noise'])}; paper minus default: "
                      f"{_maybe_diff(paper['fd_minus_default'])} (FD grows as n shrinks: compare these two with each "
                      "other, not with the table).", ""]
    cal = entry.get("calibration")
    if cal:
        lines += [f"Calibration of the calibrated rows: {cal['n']} trajectories of the default sampler "
                  f"and {cal['train_pairs']} training-path pairs ({cal['n_states']} states in all, "
                  f"{cal['seconds']:.0f} s); those rows keep 1-D tensors in float (the paper's rows quantize them "
                  "too), which the bits/weight column counts.", ""]
    tuned = [r for r in entry["runs"] if r.get("tuned")]
    if tuned:
        t0 = tuned[0]["tuned"].get("previous", tuned[0]["tuned"])      # a +qat row's record holds its +tune run
        lines += [f"Codebook tuning of the `+tune` rows (`fmq_np.quant.tune`): {t0['n']} trajectories of the default "
                  f"sampler plus training-path pairs ({t0['states']} states, an eighth held out), {t0['iters']} "
                  f"steps of {t0['batch_size']} at lr {t0['lr']:g}; held-out velocity MSE before → after: "
                  + "; ".join(f"{r['method']} {r['bits']}-bit {r['tuned']['heldout_mse_before']:.3g} → "
                              f"{r['tuned']['heldout_mse_after']:.3g}" + _free_codes_note(r["tuned"])
                              + ("" if r["tuned"]["kept"] else " (not kept)") for r in tuned) + ".", ""]
    lines += [f"Latent stability of the float model: {_latent_cell(entry['latent_float'])}.", ""]
    lik = entry.get("likelihood_float")
    if lik:
        lines += [f"Test bits/dim of the float model: {lik['bits_per_dim']:.4g} on {lik['n']} test images "
                  "(Hutchinson, one fixed probe per image, the same probes for every model; pixel units, no "
                  "dequantization); `bpd − float` is each model's paired difference with a normal 95 % interval.", ""]
    lines += ["| method | bits | bits/weight | weight MSE | predicted | PSNR (dB) | SSIM | FD [95 %] | − ot | − float "
              "| drift | latent variance (collapsed) | bpd − float |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in entry["runs"]:
        pred = "-" if r.get("predicted_mse") is None else f"{r['predicted_mse']:.2e}"
        bpw = "-" if r.get("bits_per_weight") is None else f"{r['bits_per_weight']:.2f}"
        fd = _fd_text(r["fd"]) if "fd" in r else "-"
        lik = r.get("likelihood")
        bpd = "-" if not lik else (f"{lik['minus_float']:+.3g} [{lik['ci_minus_float'][0]:+.3g}, "
                                   f"{lik['ci_minus_float'][1]:+.3g}]")
        lines.append(f"| {r['method']} | {r['bits']} | {bpw} | {r['weight_mse']:.3e} | {pred} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.4f} | {fd} | {_maybe_diff(r.get('fd_minus_ot'))} | "
                     f"{_maybe_diff(r.get('fd_minus_float'))} | {r['drift']:.3g} | {_latent_cell(r['latent'])} "
                     f"| {bpd} |")
    methods = dict.fromkeys(r["method"] for r in entry["runs"])
    low = sorted({r["bits"] for r in entry["runs"] if r["bits"] in (2, 3)})
    pngs = ", ".join(f"`{name}/samples_{m}_{b}bit.png`" for b in low for m in methods)
    return lines + ["", f"Samples: `{name}/real.png`, `{name}/samples_float.png`" + (f", {pngs}" if pngs else "")
                    + ".", ""]


def _latent_cell(stats):
    """``mean ± std (collapsed/components)`` of a latent_stability dict."""
    return (f"{stats['mean_variance']:.3g} ± {stats['std_variance']:.2g} "
            f"({stats['collapsed']}/{stats['n_components']})")


def _notes(results):
    """What differs from the paper, generated from the recipes and datasets actually used."""
    from . import recipes
    cfg = results["settings"]
    entries = results["datasets"]
    nets = "; ".join(f"{name}: width {e['model_config']['width']}, {e['trained_steps']} steps at batch "
                     f"{(e.get('recipe') or {}).get('batch')}" for name, e in entries.items())
    paper = recipes.PAPER_RECIPE
    lines = [f"- Networks: small U-Nets with one residual block per level and no attention ({nets}), trained with "
             f"the paper's recipe otherwise: CondOT path, {paper['times']} times, AdamW betas {paper['betas']}, "
             f"{paper['schedule']} LR decay, EMA (the paper: ADM U-Nets of 128 channels with attention, lr 1e-4, "
             "far longer).",
             f"- Data ({_data_sizes(entries)}): MNIST and Fashion-MNIST are subsets of the originals; CIFAR-10, "
             "CelebA and ImageNet cannot be obtained here, so stand-ins are used (`fmq_np.datasets`): colour crops "
             "of five photographs (`cifar-standin`, label = photo), LFW faces in grey (`faces`, no labels), "
             "blurred crops at other scales (`imagenet-standin`; the paper's CIFAR-10 is 32×32, its CelebA and "
             "ImageNet 64×64).",
             f"- FD: {cfg['n_samples']} samples per FD (at most the test images; faces: no FD) in the features of a "
             "small shipped classifier, not 50k samples and Inception features.",
             (f"- Sampling: the paper's solver kinds with {cfg['steps']} fixed steps (heun2 in place of the adaptive "
              "dopri5 of the two 64×64 sets) instead of the paper's midpoint step 0.01, heun2 50 NFE and dopri5 "
              "1e-5; where measured, each section shows the float model's FD with the paper's own sampler."
              if cfg["steps"] != "paper" else "- Sampling: the paper's solvers and steps."),
             "- Quantization: `ot`, `uniform`, `pwl`, `log2` run with `paper_compat=True` as the published code "
             "does: every tensor is quantized, incl. biases and norm scales (tensors of ndim > 1 per output "
             "channel, 1-D ones whole), except tensors with fewer than 2**bits values for ot/pwl/log2; `ot-opt` "
             "(ours, the exact W2-optimal codebook) quantizes every tensor the same way, with no size skip.",
             f"- Latent stability on {cfg['n_samples']} real test images (faces: 100) instead of the paper's 10k.",
             *([f"- Calibrated rows ({', '.join(m for m in results['methods'] if '+' in m)}; ours, beyond the paper: "
                "`fmq_np.reproduce.CALIBRATED`): per channel on every ≥ 2-D tensor, 1-D tensors kept in float; "
                "statistics from the float model's own default-sampler trajectories plus training-path pairs; "
                "`+tune` rows (`fmq_np.reproduce.TUNED`) keep their base row's tensors and codes (`ot+tune`: the "
                "paper's `ot`, every tensor) and fit the levels and float tensors to the float velocity on such states "
                "(`fmq_np.quant.tune`); `+qat` rows continue a `+tune` row with the codes free to change (latent "
                "weights trained through the rounding, straight-through)."]
               if any("+" in m for m in results["methods"]) else []),
             "- Velocity PSNR/SSIM: as the paper, the network is probed at t = 0 with real images as input; both "
             "outputs are mapped to [0, 1] with the float output's min and max (PAPER.md does not say how the "
             "published code maps velocities to [0, 1]); SSIM uses all 11×11 windows that fit (no padding)."]
    return lines


def _data_sizes(entries):
    """``"mnist: 8000 train / 5000 test images of 1×28×28; ..."`` for the datasets of a report, from
    :mod:`fmq_np.datasets` (faces: its images are its test set too)."""
    from . import datasets
    parts = []
    for name in entries:
        train = datasets.load(name)
        test = len(datasets.load(name, split="test")) if datasets.has_labels(name) else None
        shape = "×".join(map(str, train.shape[1:]))
        parts.append(f"{name}: {len(train)} train" + (f" / {test} test" if test is not None else "")
                     + f" images of {shape}")
    return "; ".join(parts)


def _plot(out_dir, results):
    """Velocity PSNR, FD (with intervals) and drift vs bits per method and dataset as ``plot.png`` when
    matplotlib is installed; else a note saying why there is no plot."""
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
            bits = [r["bits"] for r in runs]
            axes[0, j].plot(bits, [min(r["psnr"], 120.0) for r in runs], "o-", label=method)   # PSNR may be inf
            axes[2, j].plot(bits, [r["drift"] for r in runs], "o-", label=method)
            if runs and "fd" in runs[0]:
                fd = np.array([r["fd"]["fd"] for r in runs])
                ci = np.array([r["fd"]["ci"] for r in runs]).T
                err = np.clip(np.stack([fd - ci[0], ci[1] - fd]), 0, None)
                axes[1, j].errorbar(bits, fd, yerr=err, fmt="o-", capsize=2, label=method)
        if "fd_float" in entry:
            axes[1, j].axhline(entry["fd_float"]["fd"], color="k", ls="--", lw=1, label="float model")
            axes[1, j].axhline(entry["fd_floor"]["mean"], color="grey", ls=":", lw=1, label="real data (floor)")
        axes[0, j].set_title(name)
        axes[-1, j].set_xlabel("bits")
        for i, (_, label, yscale) in enumerate(rows):
            axes[i, j].set_yscale(yscale)
            axes[i, 0].set_ylabel(label)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "plot.png")
    with _atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return "`plot.png` (velocity PSNR, FD with 95 % intervals, and drift vs bits, per method and dataset)"
