"""Quantization calibrated along the flow (issue 13) on the 2-D MLP: the paper's ot, ot-opt and every calibrated
variant at 2 and 3 bits, plus mixed widths at 2.5 bits per weight, on moons and 8gaussians.

    nice -n 5 python benchmarks/bench_calibrate_2d.py --json benchmarks/results/calibrate_2d.json

Per dataset: ``MLPVelocity(dim=2, hidden=256, depth=4, seed=0)`` trained by ``fq.flow.fit`` with its defaults
(``--train-steps`` at batch 256, lr 1e-3) on 20,000 points, then calibrated once
(``fq.quant.calibrate(model, data, n=--calib-n, solver="heun2", steps=--steps, widths=(2, 3))``). Every model
(float and each quantized one) samples ``--n`` points from each of ``--seeds`` noise draws (the same noise for every
model; heun2, ``--steps`` steps). Quality = sliced-W2 of the samples to a fixed draw of ``--n`` real points
(fmq_np.eval.sliced_w2, 256 projections), per noise draw; the floor is the sliced-W2 of other real draws of the
same size. Each row reports the mean over the draws and the paired difference to the float model with its normal
95 % interval over the draws (fmq_np.eval.paired_difference), and the drift (RMS distance to the float samples from
the same noise). Rows are named as in ``fmq-np reproduce --methods`` (fmq_np.reproduce.quantize_row), plus
``ot-opt (2-D only)`` (data-free ot-opt with 1-D tensors in float, the tensor set the calibrated rows quantize) and
``ot-opt+ef @ 2.5`` (error feedback with mixed widths 2/3 chosen from the measured sensitivities under a 2.5
bits-per-weight budget).
"""
import argparse
import time

import numpy as np

import fmq_np as fq
from fmq_np.eval import paired_difference, sliced_w2

from bench_calibrate import VARIANTS, quantize, run_datasets      # the same rows, quantized the same way

def run_dataset(name, args, log):
    data = fq.datasets.load(name, n=20_000, seed=0)
    model = fq.nn.MLPVelocity(dim=2, hidden=256, depth=4, seed=0)
    t0 = time.perf_counter()
    fq.flow.fit(model, data, steps=args.train_steps, batch_size=256, lr=1e-3, seed=0, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cal = fq.quant.calibrate(model, data, n=args.calib_n, solver="heun2", steps=args.steps, seed=0, widths=(2, 3))
    cal_s = time.perf_counter() - t0
    log(f"{name}: trained {args.train_steps} steps in {train_s:.0f} s, calibrated in {cal_s:.0f} s")
    ref = fq.datasets.load(name, n=args.n, seed=1)
    floor = [sliced_w2(fq.datasets.load(name, n=args.n, seed=100 + k), ref) for k in range(args.seeds)]
    noise = [fq.flow.noise(model, args.n, seed=1000 + k) for k in range(args.seeds)]

    def measure(m):
        samples = [fq.flow.sample(m, x0=x0, solver="heun2", steps=args.steps, progress=False) for x0 in noise]
        return samples, [sliced_w2(s, ref) for s in samples]
    float_samples, float_sw2 = measure(model)
    rows = [dict(dataset=name, variant="float", bits=None, sw2=float(np.mean(float_sw2)), drift=0.0)]
    params = model.parameters()
    jobs = [(label, b) for b in args.bits for label in args.variants]
    if args.mixed:
        jobs.append(("ot-opt+ef", 2.5))
    for label, bits in jobs:
        qm = quantize(params, label, bits, cal, None)
        qmodel = fq.nn.MLPVelocity(**model.config())
        qmodel.load_parameters(qm.dequantize())
        samples, sw2 = measure(qmodel)
        d = paired_difference(float_sw2, sw2)
        drift = float(np.sqrt(np.mean([np.mean((s.astype(np.float64) - f) ** 2)
                                       for s, f in zip(samples, float_samples)])))
        rows.append(dict(dataset=name, variant=label + (f" @ {bits}" if bits == 2.5 else ""), bits=bits,
                         bits_per_weight=qm.bits_per_weight, sw2=d["mean"], minus_float=d["minus"],
                         ci_minus_float=d["ci_minus"], ratio_float=d["mean"] / float(np.mean(float_sw2)),
                         drift=drift, widths=(qm.meta.get("calibrated") or {}).get("widths")))
        log(f"{name} {rows[-1]['variant']} {bits}: sw2 {d['mean']:.4f} ({rows[-1]['ratio_float']:.2f}x float), "
            f"drift {drift:.4f}")
    return dict(dataset=name, train_steps=args.train_steps, train_seconds=train_s, calibration=dict(cal.meta,
                seconds=cal_s), floor=dict(mean=float(np.mean(floor)), std=float(np.std(floor, ddof=1))),
                float_sw2=float(np.mean(float_sw2)), n=args.n, seeds=args.seeds, steps=args.steps, rows=rows)


def table(results):
    lines = ["| dataset | bits | variant | bits/weight | sliced-W2 | / float | − float [95 %] | drift |",
             "|---|---|---|---|---|---|---|---|"]
    for res in results:
        lines.append(f"| {res['dataset']} | data floor | — | — | "
                     f"{res['floor']['mean']:.4f} ± {res['floor']['std']:.4f} "
                     "| — | — | — |")
        for r in res["rows"]:
            if r["bits"] is None:
                lines.append(f"| {r['dataset']} | float | — | 32 | {r['sw2']:.4f} | 1.00 | — | 0 |")
                continue
            lo, hi = r["ci_minus_float"]
            lines.append(f"| {r['dataset']} | {r['bits']} | {r['variant']} | {r['bits_per_weight']:.2f} | "
                         f"{r['sw2']:.4f} | {r['ratio_float']:.2f} | {r['minus_float']:+.4f} [{lo:+.4f}, {hi:+.4f}] "
                         f"| {r['drift']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["moons", "8gaussians"])
    p.add_argument("--bits", nargs="+", type=int, default=[2, 3])
    untuned = [v for v in VARIANTS if not v.endswith("+tune")]      # tuning runs on the U-Nets' bench only
    p.add_argument("--variants", nargs="+", default=untuned, choices=untuned)
    p.add_argument("--no-mixed", dest="mixed", action="store_false", help="skip the 2.5-bit mixed-width row")
    p.add_argument("--n", type=int, default=1000, help="samples per noise draw and real points per draw")
    p.add_argument("--seeds", type=int, default=20, help="noise draws (the interval is over them)")
    p.add_argument("--steps", type=int, default=20, help="heun2 steps of the sampler and of the calibration")
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--calib-n", type=int, default=64, help="calibration trajectories")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    run_datasets(args, lambda name, log: run_dataset(name, args, log), table)


if __name__ == "__main__":
    main()
