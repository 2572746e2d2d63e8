"""Which layers make a quantized U-Net's samples go wrong: quantize one layer group at a time, and all but one.

    python benchmarks/ablate_layers.py fashion --methods ot,ot-opt --bits 2,3 [--n 256] [--out results/F.json]
    python benchmarks/ablate_layers.py fashion --model benchmarks/checkpoints/fashion.ckpt.h5

For a shipped U-Net (data/models/<name>.h5), each layer group (the time MLP, conv_in, each down / up level, the
downsamplers and upsamplers, the middle block, norm_out, conv_out) is quantized the way the reproduction's row
``method`` does (fmq_np.reproduce.quantize_row) in two ablations: *only* that group quantized (the rest float) and
*all but* that group quantized. Every model samples the same n noise images with the reproduction's default sampler
(its solver at 4 steps). Per row: the drift (RMS pixel distance to the float model's samples from the same noise),
the mean pixel value (the float model's is in the header), and the FD in the shipped classifier's features against
the test images (at this n an FD is biased upwards and noisy: compare rows with each other, not with the report's
n = 1000 figures). A group whose "only" row carries most of the full model's drift, or whose "all but" row removes
most of it, is where the quantizer fails.
"""
import argparse
import os
import time

import numpy as np

import fmq_np as fq
from fmq_np import _atomic, nn, reproduce
from fmq_np.eval import image_features
from fmq_np.eval.fd_stats import paired_bootstrap

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 4


def layer_group(name):
    """The group of parameter ``name``: ``down.0``, ``up.2``, ... for the levels, else the first name part."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("down", "up") else parts[0]


def ablate(name, methods, bits_list, n, seed=0, model_file=None):
    if model_file is None:
        model, meta, _ = reproduce.load_shipped_model(name)
    else:
        model, meta = fq.io.load_model(model_file)
    solver = reproduce.PAPER_NAMES[name][1]
    params = {k: np.asarray(v) for k, v in model.parameters().items()}
    groups = {}
    for k in params:
        groups.setdefault(layer_group(k), []).append(k)
    test = fq.datasets.load(name, split="test")
    net, _, _ = reproduce.load_feature_net(name, shape=test.shape[1:])
    ref = image_features(net, test)
    x0 = fq.flow.noise(model, n, seed=seed + 1000)

    def sample(weights):
        student = nn.UNetVelocity(**model.config())
        student.load_parameters(weights)
        return fq.flow.sample(student, x0=x0, solver=solver, steps=STEPS, progress=False)

    float_samples = sample(params)
    sets, rows = {"float": image_features(net, float_samples)}, []
    for method in methods:
        for bits in bits_list:
            quantized = reproduce.quantize_row(params, method, bits).dequantize()
            variants = [("all", None, quantized)]
            for group, keys in groups.items():
                variants.append(("only", group, {**params, **{k: quantized[k] for k in keys}}))
                variants.append(("all but", group, {**quantized, **{k: params[k] for k in keys}}))
            for kind, group, weights in variants:
                t0 = time.perf_counter()
                samples = sample(weights)
                key = f"{method}@{bits} {kind} {group or ''}".strip()
                sets[key] = image_features(net, samples)
                rows.append(dict(method=method, bits=bits, ablation=kind, group=group, key=key,
                                 drift=float(np.sqrt(np.mean((samples.astype(np.float64) - float_samples) ** 2))),
                                 mean_pixel=float(samples.mean()), seconds=time.perf_counter() - t0))
                print(f"{key}: drift {rows[-1]['drift']:.3f}, mean pixel {rows[-1]['mean_pixel']:+.3f}", flush=True)
    stats = paired_bootstrap([sets], ref, n_boot=100, seed=seed)
    for row in rows:
        row["fd"] = stats.fd(row["key"])
    return dict(dataset=name, n=n, solver=f"{solver}, {STEPS} steps", trained_steps=meta.get("trained_steps"),
                float=dict(mean_pixel=float(float_samples.mean()), fd=stats.fd("float")),
                groups={g: len(ks) for g, ks in groups.items()}, rows=rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(reproduce.PAPER_NAMES), help="shipped U-Net (dataset) to ablate")
    ap.add_argument("--methods", default="ot",
                    help=f"comma-separated methods of {', '.join(reproduce.METHODS)} (default ot; the calibrated "
                         "and tuned rows need a calibration or tuning step this script does not run)")
    ap.add_argument("--bits", default="2,3", help="comma-separated bit widths (default 2,3)")
    ap.add_argument("--n", type=int, default=256, help="samples per model (default 256)")
    ap.add_argument("--model", help="a U-Net file of that dataset to ablate instead of the shipped model")
    ap.add_argument("-o", "--out", help="JSON file for the rows (default results/ablate_<name>.json)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in reproduce.METHODS]
    if unknown:
        ap.error(f"--methods: {', '.join(unknown)} not among {', '.join(reproduce.METHODS)}")
    result = ablate(args.name, methods, [int(b) for b in args.bits.split(",")], args.n,
                    model_file=args.model)
    out = args.out or os.path.join(HERE, "results", f"ablate_{args.name}.json")
    _atomic.write_json(out, result)
    print(f"float: mean pixel {result['float']['mean_pixel']:+.3f}, FD {result['float']['fd']['fd']:.1f}")
    for row in result["rows"]:
        print(f"{row['key']:32s} drift {row['drift']:.3f}  mean pixel {row['mean_pixel']:+.3f}  "
              f"FD {row['fd']['fd']:.1f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
