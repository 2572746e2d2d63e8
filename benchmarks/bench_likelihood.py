"""How quantization changes a flow model's test likelihood: bits/dim of the float model and of every method at 2-4 bits.

    fmq-np demo --out runs/demo                                  # or any float checkpoints (moons MLP, digits U-Net)
    python benchmarks/bench_likelihood.py runs/demo/moons.h5 runs/demo/digits.h5 [-n 1000] [--steps 20]
        [--solver heun2] [--probes 1] [--out benchmarks/results/likelihood.json]

For each float checkpoint, data of its dataset (a fresh draw for the toys, the test split for images that have one)
(``meta["dataset"]``, else the file name's prefix
before ``_`` or ``.``) is scored with ``fq.flow.log_likelihood``: the exact divergence for vector data, Hutchinson
(``--probes`` Rademacher probes, fixed seed, so the float and every quantized model see the same probes: a paired
comparison) for images. Every weight tensor with ndim > 1 is quantized per output channel (biases and norm scales
stay float, as in bench_methods.py). Columns: mean bits/dim (−log p / (D ln 2), continuous density in the data's
units; for images also the pixel-units figure with ``levels=256``, no dequantization noise), its change from the
float model, and the standard error of that change over the samples (paired).
"""
import argparse
import os

import numpy as np

import fmq_np as fq
from fmq_np.theory import report

METHODS = ("ot", "ot-opt", "uniform", "pwl", "log2")
BITS = (2, 3, 4)


def _dataset_of(path, meta):
    name = (meta or {}).get("dataset")
    if name:
        return name
    return os.path.basename(path).split(".")[0].split("_")[0]


def _score(model, x, args, image):
    res = fq.flow.log_likelihood(model, x, method="hutchinson" if image else "exact", solver=args.solver,
                                 steps=args.steps, seed=0, n_probes=args.probes if image else 1,
                                 levels=256 if image else None)
    return res.bits_per_dim


def sweep(path, args):
    model, meta = fq.io.checkpoint.load_model(path)
    dataset = _dataset_of(path, meta)
    image = len(fq.flow.sample_shape(model)) == 3
    if image:    # the test split where the dataset has one; the 8x8 digits have none (training images then)
        split = "test" if dataset in ("mnist", "fashion") or "standin" in dataset else "train"
        x = fq.datasets.load(dataset, split=split)
        x = x[np.random.default_rng(5).permutation(len(x))[:args.n]]
        held = "test" if split == "test" else "training (no test split)"
    else:
        x = fq.datasets.load(dataset, n=args.n, seed=5)
        held = "fresh"
    float_params = {k: v.copy() for k, v in model.parameters().items()}
    ref = _score(model, x, args, image)
    unit = "bits/dim (pixel units, 256 levels)" if image else "bits/dim"
    print(f"\n### {os.path.basename(path)}: {type(model).__name__} on {dataset}, {len(x)} {held} samples, "
          f"{'Hutchinson, %d probe(s)' % args.probes if image else 'exact divergence'}, {args.solver} "
          f"{args.steps} steps\n")
    print(f"| method | bits | {unit} | change vs float | s.e. of change |")
    print("|---|---|---|---|---|")
    print(f"| float | 32 | {ref.mean():.4f} | 0 | 0 |", flush=True)
    rows = [dict(model=path, dataset=dataset, method="float", bits=32, bits_per_dim=float(ref.mean()))]
    for method in METHODS:
        for bits in BITS:
            qm = fq.quant.quantize_model(float_params, bits=bits, method=method, granularity="channel")
            model.load_parameters({**float_params, **qm.dequantize()})
            bpd = _score(model, x, args, image)
            diff = bpd - ref
            se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
            print(f"| {method} | {bits} | {bpd.mean():.4f} | {diff.mean():+.4f} | {se:.4f} |", flush=True)
            rows.append(dict(model=path, dataset=dataset, method=method, bits=bits, bits_per_dim=float(bpd.mean()),
                             change=float(diff.mean()), change_se=se))
    model.load_parameters(float_params)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="float checkpoints (.h5)")
    ap.add_argument("-n", type=int, default=1000, help="held-out samples per model (default 1000)")
    ap.add_argument("--solver", default="heun2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--probes", type=int, default=1, help="Hutchinson probes per image (default 1)")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = [row for path in args.models for row in sweep(path, args)]
    if args.out:
        report.write_json(args.out, dict(config=vars(args), rows=rows))
    return rows


if __name__ == "__main__":
    main()
