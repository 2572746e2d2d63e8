"""Issue 10's target for the shipped float models: FD of 2,000 samples at most 1.5x the real-data floor at n = 2,000.

    python benchmarks/float_fd.py [mnist fashion] [--n 2000] [--steps 4,20] [--out results/float_fd.json]
    python benchmarks/float_fd.py fashion --model benchmarks/checkpoints/fashion.ckpt.h5 --steps 20 --out F.json

For each dataset: the shipped U-Net (data/models/<name>.h5) samples n images from one noise draw with the
reproduction's solver (midpoint for MNIST, heun2 for Fashion-MNIST) at each --steps; the FD of the samples to the
test images in the shipped classifier's features (fmq_np.reproduce.load_feature_net) is printed with its basic
bootstrap interval, next to the floor (mean +- std of the FD of disjoint draws of n training images against the same
test images) and their ratio. ``--model`` measures another U-Net file of that one dataset instead (a training
checkpoint, or a candidate recipe's model), from the same noise.
"""
import argparse
import json
import os
import time

import fmq_np as fq
from fmq_np import reproduce
from fmq_np.eval import image_features
from fmq_np.eval.fd_stats import fd_floor, paired_bootstrap

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(name, n, steps_list, seed=0, n_boot=200, model_file=None):
    if model_file is None:
        model, meta, _ = reproduce.load_shipped_model(name)
    else:
        model, meta = fq.io.load_model(model_file)
    test = fq.datasets.load(name, split="test")
    net, _, _ = reproduce.load_feature_net(name, shape=test.shape[1:])
    ref = image_features(net, test)
    floor = fd_floor(image_features(net, fq.datasets.load(name)), ref, n, seed=seed + 2)
    solver = reproduce.PAPER_NAMES[name][1]
    x0 = fq.flow.noise(model, n, seed=seed + 1000)
    sets, seconds = {}, {}
    for steps in steps_list:
        t0 = time.perf_counter()
        sets[f"{steps} steps"] = image_features(net, fq.flow.sample(model, x0=x0, solver=solver, steps=steps,
                                                                    progress=False))
        seconds[f"{steps} steps"] = time.perf_counter() - t0
    stats = paired_bootstrap([sets], ref, n_boot=n_boot, seed=seed)
    rows = [dict(sampler=f"{solver}, {k}", fd=stats.fd(k), ratio=stats.fd(k)["fd"] / floor["mean"],
                 seconds=seconds[k]) for k in sets]
    return dict(dataset=name, n=n, model=model_file or "shipped", config=model.config(),
                trained_steps=meta.get("trained_steps"), floor=floor, rows=rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", default=["mnist", "fashion"])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", default="4,20", help="comma-separated solver steps (default 4,20)")
    ap.add_argument("--model", help="a U-Net file to measure instead of the shipped model (one dataset only)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "float_fd.json"))
    args = ap.parse_args()
    if args.model and len(args.names) != 1:
        ap.error("--model needs exactly one dataset name")
    steps = [int(s) for s in args.steps.split(",")]
    results = [measure(name, args.n, steps, model_file=args.model) for name in args.names]
    print("| dataset | trained steps | sampler | FD (95 % interval) | floor (mean ± std) | ratio |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for row in r["rows"]:
            lo, hi = row["fd"]["ci"]
            print(f"| {r['dataset']} | {r['trained_steps']} | {row['sampler']} | {row['fd']['fd']:.1f} "
                  f"[{lo:.1f}, {hi:.1f}] | {r['floor']['mean']:.1f} ± {r['floor']['std']:.1f} | "
                  f"{row['ratio']:.2f} |")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
