"""Which U-Net learns more per CPU-hour: fq.nn.ADMUNet (the paper's ADM, reduced) or fq.nn.UNetVelocity?

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/compare_archs.py --minutes 12 [--dataset mnist]

Each network gets the same CPU budget on one thread and the shipped models' recipe (fmq_np.recipes: batch 64,
AdamW lr 1e-3 with betas (0.9, 0.95), linear decay to ~0, skewed times, EMA 0.999 with warm-up, seed 0). The
number of steps that fits the budget is set from the median time of 10 warm-up steps, so that each run's LR decay
ends with its budget. After training, each EMA model samples ``--n`` images from the same noise (midpoint, ``--steps``
steps, 10 by default) and their FD to the test images is computed in the
features of the shipped classifier, with a paired bootstrap interval for each FD and for their difference, beside
the real-data floor at the same n. Writes benchmarks/results/compare_archs_<dataset>.json and the two sample grids.
"""
import argparse
import json
import os
import time

import numpy as np

import fmq_np as fq
from fmq_np import recipes, reproduce
from fmq_np.eval import image_features
from fmq_np.eval.fd_stats import fd_floor, paired_bootstrap
from flow_matching_e2e import CONFIG

HERE = os.path.dirname(os.path.abspath(__file__))

def build(arch, channels, size):
    """A fresh network: ``arch`` "adm" (flow_matching_e2e.CONFIG, flow_matching's MNIST ADM reduced) or "unet" (the
    shipped models' UNetVelocity)."""
    if arch == "adm":
        return fq.nn.ADMUNet(**dict(CONFIG, in_channels=channels, out_channels=channels, image_size=size))
    settings = recipes.RECIPES["mnist"][1]
    return fq.nn.UNetVelocity(channels=channels, size=size, width=settings["width"], mults=settings["mults"], seed=0)


def seconds_per_step(model, data, batch):
    """Median wall seconds of one training step of ``model`` (10 steps after 2 of warm-up; they train ``model``,
    so the caller probes a throw-away copy)."""
    fq.flow.fit(model, data, steps=2, batch_size=batch, progress=False)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        fq.flow.fit(model, data, steps=1, batch_size=batch, progress=False)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def train(arch, data, minutes, batch, channels, size):
    per_step = seconds_per_step(build(arch, channels, size), data, batch)
    steps = max(1, int(60 * minutes / per_step))
    model = build(arch, channels, size)
    t0, c0 = time.perf_counter(), time.process_time()
    hist = fq.flow.fit(model, data, steps=steps, batch_size=batch, lr=1e-3, seed=0, betas=(0.9, 0.95),
                       ema_decay=0.999, ema_warmup=True, schedule="linear", times="skewed", progress=True)
    params = int(sum(p.size for p in model.parameters().values()))
    return model, dict(arch=arch, params=params, seconds_per_step=per_step, steps=steps,
                       seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                       final_loss=float(np.mean(hist.loss[-200:])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist", choices=("mnist", "fashion"))
    ap.add_argument("--minutes", type=float, default=12.0, help="training budget of each network (wall, 1 thread)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=1000, help="samples per FD")
    ap.add_argument("--steps", type=int, default=10, help="midpoint steps of the sampler")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or os.path.join(HERE, "results", f"compare_archs_{args.dataset}.json")
    data = fq.datasets.load(args.dataset, seed=0)
    channels, size = data.shape[1], data.shape[2]
    test = fq.datasets.load(args.dataset, split="test")
    net, _, _ = reproduce.load_feature_net(args.dataset, shape=test.shape[1:])
    ref = image_features(net, test)
    floor = fd_floor(image_features(net, data), ref, args.n, seed=2)
    x0 = fq.flow.noise(build("unet", channels, size), args.n, seed=1000)
    runs, features = [], {}
    for arch in ("unet", "adm"):
        model, run = train(arch, data, args.minutes, args.batch, channels, size)
        samples = fq.flow.sample(model, x0=x0, solver="midpoint", steps=args.steps, progress=False)
        features[arch] = image_features(net, samples)
        fq.images.save_samples_png(os.path.join(HERE, "results", f"compare_archs_{args.dataset}_{arch}.png"),
                                   samples[:64])
        runs.append(run)
        print(json.dumps(run))
    stats = paired_bootstrap([features], ref, n_boot=300, seed=0)
    for run in runs:
        run["fd"] = stats.fd(run["arch"])
        run["fd_over_floor"] = run["fd"]["fd"] / floor["mean"]
    result = dict(dataset=args.dataset, minutes=args.minutes, n=args.n, sampler=f"midpoint, {args.steps} steps",
                  floor=floor, adm_config=CONFIG, runs=runs, adm_minus_unet=stats.diff("adm", "unet"))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print("| network | params | s/step | steps in budget | FD (95 % interval) | FD / floor |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        lo, hi = r["fd"]["ci"]
        print(f"| {r['arch']} | {r['params']:,} | {r['seconds_per_step']:.3f} | {r['steps']} | {r['fd']['fd']:.1f} "
              f"[{lo:.1f}, {hi:.1f}] | {r['fd_over_floor']:.2f} |")
    d = result["adm_minus_unet"]
    print(f"ADM - UNetVelocity: {d['diff']:.1f} [{d['ci'][0]:.1f}, {d['ci'][1]:.1f}]; floor {floor['mean']:.1f}")


if __name__ == "__main__":
    main()
