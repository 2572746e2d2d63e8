"""Sample quality of the MLP velocity on the 2-D toys, for a training recipe and budget.

    python benchmarks/bench_quality.py [moons 8gaussians ...] [--steps 3000] [--seeds 0,1]
        [--schedule constant|linear|cosine] [--warmup 0] [--ema 0.999] [--ema-warmup on|off] [--final-lr 1e-8]
        [--out results.json] [--save FOLDER]

Trains MLPVelocity(dim=2, hidden=256, depth=4) for ``--steps`` steps (batch 256, lr 1e-3; schedule, warm-up and
EMA decay as given, by default those of ``fq.flow.fit``), draws 2000 samples with heun2 / 50 steps, and prints the
sliced-W2 distance to a fresh data draw next to the distance between two independent data draws of the same size
(the noise floor) and their ratio (goal: ≤ 2). ``--seeds`` repeats each dataset with other training seeds (model
init and batches); the sampling noise and the data draws stay fixed. ``--out`` also writes the rows as JSON,
``--save`` the trained models.
"""
import argparse
import os
import time

import fmq_np as fq
from fmq_np.eval import sliced_w2
from fmq_np.theory import report


def measure(name, steps, seed, fit_kwargs, n=2000, save=None):
    """One training run; returns a row dict (sliced-W2 of samples and of a second data draw, ratio, seconds)."""
    data = fq.datasets.load(name, n=20_000, seed=0)
    model = fq.nn.MLPVelocity(dim=2, hidden=256, depth=4, seed=seed)
    start = time.perf_counter()
    fq.flow.fit(model, data, steps=steps, batch_size=256, lr=1e-3, seed=seed, progress=False, **fit_kwargs)
    seconds = time.perf_counter() - start
    if save:
        fq.io.save(os.path.join(save, f"{name}_s{seed}.h5"), model, meta={"dataset": name})
    samples = fq.flow.sample(model, n=n, solver="heun2", steps=50, seed=1, progress=False)
    fresh, other = fq.datasets.load(name, n=n, seed=2), fq.datasets.load(name, n=n, seed=3)
    model_sw2, data_sw2 = sliced_w2(samples, fresh), sliced_w2(other, fresh)
    return dict(dataset=name, seed=seed, steps=steps, model_sw2=model_sw2, data_sw2=data_sw2,
                ratio=model_sw2 / data_sw2, seconds=seconds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="*", default=["moons", "8gaussians"])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    ap.add_argument("--schedule", default=None, help="lr schedule (default: fit's)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: fit's)")
    ap.add_argument("--ema", type=float, default=None, help="EMA decay (default: fit's)")
    ap.add_argument("--ema-warmup", choices=("on", "off"), default=None, help="EMA decay ramp (default: fit's)")
    ap.add_argument("--final-lr", type=float, default=None, help="final lr of linear/cosine (default: fit's)")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--save", default=None, help="folder to save each trained model in (<dataset>_s<seed>.h5)")
    args = ap.parse_args(argv)
    fit_kwargs = {}
    if args.schedule is not None:
        fit_kwargs["schedule"] = args.schedule
    if args.warmup is not None:
        fit_kwargs["warmup"] = args.warmup
    if args.ema is not None:
        fit_kwargs["ema_decay"] = args.ema
    if args.ema_warmup is not None:
        fit_kwargs["ema_warmup"] = args.ema_warmup == "on"
    if args.final_lr is not None:
        fit_kwargs["final_lr"] = args.final_lr
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"steps={args.steps}, fit options {fit_kwargs or '(defaults)'}\n")
    print("| dataset | seed | sliced-W2(samples, data) | sliced-W2(data, data) | ratio | training time |")
    print("|---|---|---|---|---|---|")
    rows = []
    for dataset in args.datasets:
        for seed in seeds:
            row = measure(dataset, args.steps, seed, fit_kwargs, save=args.save)
            rows.append(row)
            print(f"| {dataset} | {seed} | {row['model_sw2']:.4f} | {row['data_sw2']:.4f} | {row['ratio']:.2f} "
                  f"| {row['seconds']:.0f} s |", flush=True)
    if args.out:
        report.write_json(args.out, dict(config=dict(vars(args), fit_kwargs=fit_kwargs), rows=rows))
    return rows


if __name__ == "__main__":
    main()
