"""Does allocate_bits beat a uniform bit width on measured drift at the same average bits/weight?

Trains a small MLPVelocity on moons, then for each method and budget b compares
  * uniform width: every tensor at b bits,
  * allocate_bits(budget=b) with the network sensitivities (the first-order form of the certified ε bound),
  * allocate_bits(budget=b) with all sensitivities 1 (minimise the total Frobenius error only),
on the measured pathwise drift (RMS and max of ‖x̂_1 − x_1‖ from the same noise, Euler 20 steps, float64), the
sliced W2 between the two sample sets, and the certified bounds. Writes benchmarks/results/allocation.json and
prints a Markdown table (copied into benchmarks/README.md).

    python benchmarks/bench_allocation.py [--steps 800] [--samples 1000] [--hidden 64] [--depth 3]
"""
import argparse
import os
import time

import numpy as np

import fmq_np as fq
from fmq_np.eval.metrics import sliced_w2
from fmq_np.theory import allocate_bits, euler_tube_bound, flow_bounds, lipschitz, network, report

HERE = os.path.dirname(os.path.abspath(__file__))


def quantize_all(params, bits, method):
    return {k: fq.quant.quantize(v, bits=int(bits[k]), method=method, granularity="channel").dequantize()
            .astype(np.float64) for k, v in params.items()}


def evaluate(params64, params_hat, x0, box, splits):
    f, f_hat = network.mlp_function(params64), network.mlp_function(params_hat)
    rms, mx, x1, x1_hat = flow_bounds.pathwise_drift(f, f_hat, x0, solver="euler", steps=20)
    eps = network.mlp_error_bound(params64, params_hat, box[0], box[1], splits=splits).eps
    L = lipschitz.mlp_lipschitz_upper(params64, box[0], box[1], splits=4)
    tube = euler_tube_bound(params64, params_hat, x0, 20, fallback=(eps, L))
    return dict(drift_rms=rms, drift_max=mx, sliced_w2=sliced_w2(x1, x1_hat), eps_bound=eps,
                flow_bound=flow_bounds.flow_bound(eps, L, "euler", 20), tube_bound_rms=tube.rms,
                tube_bound_max=tube.max)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    args = ap.parse_args()
    t0 = time.time()
    data = fq.datasets.load("moons", n=5000, seed=0)
    model = fq.nn.MLPVelocity(dim=2, hidden=args.hidden, depth=args.depth, seed=0)
    fq.flow.fit(model, data, steps=args.steps, batch_size=256, lr=2e-3, seed=0, progress=False)
    params = model.parameters()
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    x0 = fq.flow.noise(model, args.samples, seed=1).astype(np.float64)
    pts = flow_bounds.visited_points(network.mlp_function(params64), x0, solver="euler", steps=20)[0]
    box = (pts.min(axis=0) - 0.5, pts.max(axis=0) + 0.5)
    sizes = {k: v.size for k, v in params.items()}
    rows, curves = [], {}
    for method in ("ot", "uniform"):
        for budget in (2, 3, 4):
            variants = {"uniform width": {k: budget for k in params}}
            for label, sens in (("allocated (bound sensitivities)", None),
                                ("allocated (Frobenius only)", {k: 1.0 for k in params})):
                alloc = allocate_bits(params, budget, method=method, sensitivity=sens, box=box,
                                      errors=curves.get(method))
                curves[method] = alloc.errors
                variants[label] = alloc.bits
            for label, bits in variants.items():
                avg = sum(sizes[k] * b for k, b in bits.items()) / sum(sizes.values())
                row = dict(method=method, budget=budget, variant=label, avg_bits=avg, bits=bits)
                row.update(evaluate(params64, quantize_all(params, bits, method), x0, box, 8))
                rows.append(row)
                print(f"{method:8s} b={budget} {label:32s} avg={avg:.3f} drift_rms={row['drift_rms']:.4g} "
                      f"sw2={row['sliced_w2']:.4g} bound={row['flow_bound']:.4g}", flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    report.write_json(os.path.join(HERE, "results", "allocation.json"),
                      dict(config=vars(args), seconds=time.time() - t0, box=box, rows=rows))
    cols = ["method", "budget", "variant", "avg_bits", "drift_rms", "tube_bound_rms", "drift_max", "tube_bound_max",
            "sliced_w2", "eps_bound", "flow_bound"]
    print(report.table(rows, cols))


if __name__ == "__main__":
    main()
