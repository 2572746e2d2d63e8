"""How tight are the certified U-Net bounds? A digits U-Net (the demo's architecture), every method × bits.

Trains ``UNetVelocity(channels=1, size=8, width=16)`` on the 8×8 digits for ``--steps`` steps, quantizes it with
fmq_np.quant (per-channel defaults of ``quantize_model``) and compares, in float64:

* ε on the box (hull of every visited point ± ``--margin``, t ∈ [0, 1] cut into 8 pieces): certified
  (:meth:`UNetPair.error_bound`) vs the largest measured ‖v̂ − v‖ on the visited points and 256 uniform box points;
* L: certified on that box, certified on a ball of radius 0 around the visited points (the local product bound),
  vs the empirical lower estimate (power iteration along trajectories);
* the stage error on balls B(c, ρ) around visited points (what the tube consumes): certified sup‖v̂(x̂) − v(c)‖ vs
  the largest value found on 24 random points of the sphere, ρ = 1e-4, 1e-3, 1e-2;
* the drift: global flow bound and stage tube bound (first 16 draws) vs the measured max drift (Euler, ``--nfe``
  steps, 256 draws from the same noise); also the measured RMS drift (an upper bound on W2 between the two sample
  sets) and the sliced-W2 between the float and the quantized samples.

Writes benchmarks/results/bounds_unet.json and prints a Markdown table (copied into benchmarks/README.md).

    python benchmarks/bench_bounds.py [--steps 400] [--nfe 10] [--samples 256] [--bits 2,3,4,5,6,7,8]
"""
import argparse
import os
import time

import numpy as np

import fmq_np as fq
from fmq_np.theory import flow_bounds, lipschitz, network, report
from fmq_np.theory.tube import unet_tube_bound
from fmq_np.theory.unet_bounds import UNetPair

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("ot", "ot-opt", "uniform", "pwl", "log2")
RADII = (1e-4, 1e-3, 1e-2)


def sphere_max(f_hat, base, center, t, rho, rng, n_dirs=24):
    """Largest ‖v̂(c + d) − v(c)‖ found over ``n_dirs`` random d with ‖d‖ = rho (a lower estimate of the sup)."""
    best = np.zeros(len(center))
    for _ in range(n_dirs):
        d = rng.standard_normal(center.shape)
        d *= (rho / np.linalg.norm(d.reshape(len(d), -1), axis=1))[:, None, None, None]
        best = np.maximum(best, np.linalg.norm((f_hat(center + d, t) - base).reshape(len(d), -1), axis=1))
    return best


def evaluate(model, params_hat, x0, nfe, margin, rng):
    m64 = lipschitz.float64_copy(model)
    m64_hat = lipschitz.float64_copy(model)
    m64_hat.load_parameters(params_hat)
    rms, mx, x1, x1_hat = flow_bounds.pathwise_drift(m64, m64_hat, x0, solver="euler", steps=nfe)
    xa, ta = flow_bounds.visited_points(m64, x0, solver="euler", steps=nfe)
    xb, tb = flow_bounds.visited_points(m64_hat, x0, solver="euler", steps=nfe)
    pts, tms = np.concatenate([xa, xb]), np.concatenate([ta, tb])
    lo, hi = pts.min(axis=0) - margin, pts.max(axis=0) + margin
    pair = UNetPair(model, params_hat)
    eps, L, _ = pair.error_bound(lo, hi, (0.0, 1.0), t_splits=8)
    xs = rng.uniform(lo, hi, (256,) + lo.shape)
    eps_meas = max(network.measured_error(m64, m64_hat, pts, tms)[0],
                   network.measured_error(m64, m64_hat, xs, rng.uniform(0, 1, len(xs)))[0])
    pick = rng.choice(len(xa), 16, replace=False)
    center, t = xa[pick], ta[pick]
    L_point = float(pair.full.bounds(center, 0.0, t).lipschitz.max())
    base = m64(center, t)
    stage = {}
    for rho in RADII:
        bound = pair.stage_error(center, np.full(len(center), rho), t)
        found = sphere_max(m64_hat, base, center, t, rho, rng)
        stage[f"{rho:g}"] = dict(bound=float(bound.max()), found=float(found.max()),
                                 ratio_median=float(np.median(bound / found)))
    draws = x0[:16]
    tube = unet_tube_bound(model, params_hat, draws, "euler", nfe)
    _, tube_mx, _, _ = flow_bounds.pathwise_drift(m64, m64_hat, draws, solver="euler", steps=nfe)
    finite_steps = int((np.isfinite(tube.history).all(axis=1)).sum() - 1)
    return dict(drift_rms=rms, sliced_w2=fq.eval.sliced_w2(x1, x1_hat), eps_bound=eps, eps_measured=eps_meas,
                lipschitz_box=L, lipschitz_point=L_point, stage=stage,
                drift_max=mx, flow_bound=flow_bounds.flow_bound(eps, L, "euler", nfe), tube_max=tube.max,
                tube_drift_max=tube_mx, tube_history_max=tube.history.max(axis=1), tube_finite_steps=finite_steps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    ap.add_argument("--nfe", type=int, default=10, help="Euler steps of the sampled flows (default 10)")
    ap.add_argument("--samples", type=int, default=256, help="noise draws for the measured drift (default 256)")
    ap.add_argument("--margin", type=float, default=0.1, help="widening of the box (default 0.1)")
    ap.add_argument("--bits", default="2,4,8", help="comma list of bit widths (default 2,4,8)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bounds_unet.json"))
    args = ap.parse_args()
    data = fq.datasets.load("digits", seed=0)
    model = fq.nn.UNetVelocity(channels=1, size=8, width=16, seed=0)
    t0 = time.time()
    fq.flow.fit(model, data, steps=args.steps, batch_size=64, lr=1e-3, seed=0, progress=False)
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s")
    x0 = fq.flow.noise(model, args.samples, seed=1).astype(np.float64)
    L_low = lipschitz.lipschitz_lower(lipschitz.float64_copy(model), x0[:32], steps=args.nfe)
    rows = []
    for method in METHODS:
        for bits in [int(b) for b in args.bits.split(",")]:
            t0 = time.time()
            qm = fq.quant.quantize_model(model.parameters(), bits=bits, method=method)
            params_hat = {k: np.asarray(v, np.float64) for k, v in qm.dequantize().items()}
            r = evaluate(model, params_hat, x0, args.nfe, args.margin, np.random.default_rng(bits))
            r.update(method=method, bits=bits, seconds=time.time() - t0)
            rows.append(r)
            s = r["stage"]
            print(f"| {method} | {bits} | {r['eps_bound'] / r['eps_measured']:.3g} | "
                  f"{r['lipschitz_point']:.2g} / {r['lipschitz_box']:.2g} | "
                  + " | ".join(f"{s[k]['ratio_median']:.3g}" for k in s)
                  + f" | {r['drift_rms']:.3g} | {r['sliced_w2']:.3g} | {r['drift_max']:.3g} | {r['flow_bound']:.3g}"
                  f" | {r['tube_max']:.3g} "
                  f"({r['tube_finite_steps']}) |", flush=True)
    report.write_json(args.out, dict(config=vars(args), lipschitz_lower=L_low, rows=rows))
    print(f"Lipschitz lower estimate {L_low:.3g}; wrote {args.out}")


if __name__ == "__main__":
    main()
