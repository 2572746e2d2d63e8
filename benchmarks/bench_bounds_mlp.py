"""Bounds vs measurement on a trained 2-D MLP, every method × bits 2–8 (the MLP half of issue 5's check).

Trains ``MLPVelocity(dim=2, hidden=--hidden, depth=--depth)`` on moons for ``--steps`` steps, quantizes it per
channel with each of fmq_np's five methods at each bit width, and compares in float64 (``fmq_np.theory.cli_bounds.
flow_summary``, the same code as ``fmq-np bounds``): the certified ε on the box of visited points (± 0.5) vs the
largest error measured there, the global Euler flow bound and the per-draw tube bound vs the measured max drift
(Euler, ``--nfe`` steps, ``--samples`` draws from the same noise), and the measured RMS drift (≥ W2 between the
two sample sets) and sliced-W2. Also the cheap 2^(−b) form of the analysis (``flow_bounds.drift_scaling``): its
predicted OT / uniform drift ratio √(C_ot / C_uniform) at equal gain, against the measured ratio of RMS drifts.
Writes benchmarks/results/bounds_mlp.json and prints Markdown tables.

    python benchmarks/bench_bounds_mlp.py [--steps 800] [--hidden 64] [--depth 3] [--bits 2,3,4,5,6,7,8]
"""
import argparse
import os
import time

import numpy as np

import fmq_np as fq
from fmq_np.theory import flow_bounds, network, report, weights
from fmq_np.theory.cli_bounds import flow_summary

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("ot", "ot-opt", "uniform", "pwl", "log2")


def scaling_rows(model, bits_list, samples, nfe):
    """OT / uniform drift ratio: predicted by the 2^(−b) form (size-weighted per-channel C) vs measured RMS drift."""
    params = model.parameters()
    mats = {k: np.asarray(v, np.float64) for k, v in params.items() if np.ndim(v) >= 2}
    x0 = fq.flow.noise(model, samples, seed=0).astype(np.float64)
    f64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    rows = []
    for bits in bits_list:
        const, drift = {}, {}
        for method in ("ot", "uniform"):
            const[method] = sum(w.size * weights.mse_constant(w, method, bits, "channel") for w in mats.values())
            hat = fq.quant.quantize_model(params, bits=bits, method=method).dequantize()
            drift[method] = flow_bounds.pathwise_drift(
                network.mlp_function(f64),
                network.mlp_function({k: np.asarray(v, np.float64) for k, v in hat.items()}),
                x0, solver="euler", steps=nfe)[0]
        predicted = float(flow_bounds.drift_scaling(bits, const["ot"], 1.0) /
                          flow_bounds.drift_scaling(bits, const["uniform"], 1.0))
        measured = drift["ot"] / drift["uniform"] if drift["uniform"] > 0 else None
        rows.append(dict(bits=bits, predicted_ratio=predicted, measured_ratio=measured, drift_rms=drift))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800, help="training steps (default 800)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden width (default 64)")
    ap.add_argument("--depth", type=int, default=3, help="hidden layers (default 3)")
    ap.add_argument("--nfe", type=int, default=20, help="Euler steps of the sampled flows (default 20)")
    ap.add_argument("--samples", type=int, default=500, help="noise draws (default 500)")
    ap.add_argument("--bits", default="2,3,4,5,6,7,8", help="comma list of bit widths (default 2..8)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bounds_mlp.json"))
    args = ap.parse_args()
    data = fq.datasets.load("moons", n=20_000, seed=0)
    model = fq.nn.MLPVelocity(dim=2, hidden=args.hidden, depth=args.depth, seed=0)
    t0 = time.time()
    fq.flow.fit(model, data, steps=args.steps, batch_size=256, lr=1e-3, seed=0, progress=False)
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s")
    bits_list = [int(b) for b in args.bits.split(",")]
    scaling = scaling_rows(model, bits_list, args.samples, args.nfe)
    print("| bits | OT / uniform drift, 2^(-b) form | measured (RMS drift) |\n|---|---|---|")
    for r in scaling:
        print(f"| {r['bits']} | {r['predicted_ratio']:.3g} | {report.fmt(r['measured_ratio'])} |", flush=True)
    print("| method | bits | ε bound / measured | global bound / max drift | tube bound / max drift "
          "| drift RMS | tube RMS bound | sliced-W2 |\n|---|---|---|---|---|---|---|---|")
    rows = []
    for method in METHODS:
        for bits in bits_list:
            t0 = time.time()
            qm = fq.quant.quantize_model(model.parameters(), bits=bits, method=method)
            r = flow_summary(model, qm.dequantize(), n_samples=args.samples, solver="euler", steps=args.nfe, seed=0,
                             splits=8, margin=0.5)
            r.update(method=method, bits=bits, seconds=time.time() - t0)
            rows.append(r)
            print(f"| {method} | {bits} | {report.fmt(r['eps_tightness'])} | {report.fmt(r['flow_tightness'])} "
                  f"| {report.fmt(r['tube_tightness'])} | {r['drift_rms']:.3g} | {r['tube_bound_rms']:.3g} "
                  f"| {r['sliced_w2']:.3g} |", flush=True)
    report.write_json(args.out, dict(config=vars(args), scaling=scaling, rows=rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
