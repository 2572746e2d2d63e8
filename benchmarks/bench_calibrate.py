"""Quantization calibrated along the flow (issue 13) on the shipped MNIST / Fashion-MNIST U-Nets.

For each dataset and bit width: the paper's ``ot`` (paper_compat, every tensor), ``ot-opt`` on every tensor (as
``fmq-np reproduce`` runs it), the same data-free ``ot-opt`` with 1-D tensors kept in float (the tensor set the
calibrated variants quantize), and the calibrated variants alone and combined. Each is measured like the
reproduction (fmq_np.reproduce.Evaluator): FD of ``--n`` samples (the shipped feature net, paired bootstrap
intervals from fmq_np.eval.fd_stats over the same noise for every model), drift (RMS to the float samples from the
same noise) and the paper's velocity PSNR (t = 0 on real images).

    nice -n 15 python benchmarks/bench_calibrate.py --datasets mnist fashion --bits 2 3 --n 500 --steps 4 \
        --json benchmarks/results/calibrate.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import fmq_np as fq
from fmq_np import reproduce
from fmq_np.eval import velocity_fidelity
from fmq_np.eval.fd_stats import paired_bootstrap

#: the rows: the sweep's own methods (fmq_np.reproduce.quantize_row: the paper's ot, ot-opt on every tensor, the
#: calibrated ones of fmq_np.reproduce.CALIBRATED), and data-free ot-opt with 1-D tensors kept in float (the tensor
#: set the calibrated rows quantize)
TWO_D_ONLY = "ot-opt (2-D only)"
VARIANTS = ("ot", "ot-opt", TWO_D_ONLY) + tuple(reproduce.CALIBRATED) + tuple(reproduce.TUNED)


def quantize(params, label, bits, cal, tune):
    if label == TWO_D_ONLY:
        return fq.quant.quantize_model(params, bits=bits, method="ot-opt")
    return reproduce.quantize_row(params, label, bits, cal, tune=tune)


def run_dataset(name, bits_list, variants, n, steps, calib_n, calib_steps, seed, log, calib_widths=(2, 3, 4),
                tune_n=128, tune_iters=600):
    model, _, path = reproduce.load_shipped_model(name)
    cfg = dict(n_samples=n, seeds=1, steps=steps, paper_check=False, n_velocity=64, n_likelihood=0,
               calib_n=calib_n, tune_n=tune_n, tune_iters=tune_iters)
    t0 = time.perf_counter()
    ev = reproduce.Evaluator(name, model, cfg, seed, progress=False)
    log(f"{name}: float model {path}; evaluator ready in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    data = fq.datasets.load(name)
    cal = fq.quant.calibrate(model, data, n=calib_n, solver=ev.solver, steps=calib_steps, seed=seed,
                             widths=calib_widths)
    cal_s = time.perf_counter() - t0
    log(f"{name}: calibration {cal.meta['n_states']} states in {cal_s:.0f} s")
    params = model.parameters()
    rows, feats = [], {"float": ev.features["float", 0]}
    for bits in bits_list:
        for label in variants:
            t0 = time.perf_counter()
            qm = quantize(params, label, bits, cal, ev.tune)
            qmodel = fq.nn.UNetVelocity(**model.config())
            qmodel.load_parameters(qm.dequantize())
            samples = ev._sample(qmodel, ev.x0[0])
            key = f"{label}@{bits}"
            feats[key] = fq.eval.image_features(ev.net, samples)
            drift = float(np.sqrt(np.mean((samples.astype(np.float64) - ev.float_samples[0]) ** 2)))
            psnr = velocity_fidelity(ev.v_float, ev._velocity(qmodel))["psnr"]
            rows.append(dict(dataset=name, variant=label, bits=bits, drift=drift, psnr=float(psnr),
                             bits_per_weight=qm.bits_per_weight,
                             kept_float=sum(1 for r in qm.report if r["skipped"]), tensors=len(qm.report),
                             seconds=time.perf_counter() - t0))
            log(f"{name} {key}: drift {drift:.4f}, psnr {psnr:.2f} dB ({rows[-1]['seconds']:.0f} s)")
    stats = paired_bootstrap([feats], ev.ref_features, n_boot=200, seed=seed)
    fl = stats.fd("float")
    for r in rows:
        key = f"{r['variant']}@{r['bits']}"
        d = stats.fd(key)
        r.update(fd=d["fd"], fd_ci=d["ci"], fd_ratio=d["fd"] / fl["fd"], minus_float=stats.diff(key, "float"))
    return dict(dataset=name, float_fd=fl, floor=ev.floor, n_samples=ev.n, solver=ev.solver, steps=ev.steps,
                calibration=dict(cal.meta, seconds=cal_s), rows=rows)


def table(results):
    lines = ["| dataset | bits | variant | bits/weight | FD [95 % CI] | FD / float | drift | velocity PSNR |",
             "|---|---|---|---|---|---|---|---|"]
    for res in results:
        f = res["float_fd"]
        lines.append(f"| {res['dataset']} | float | — | 32 | {f['fd']:.2f} [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}] "
                     f"| 1.00 | 0 | — |")
        for r in res["rows"]:
            lines.append(f"| {r['dataset']} | {r['bits']} | {r['variant']} | {r['bits_per_weight']:.2f} | "
                         f"{r['fd']:.2f} [{r['fd_ci'][0]:.2f}, {r['fd_ci'][1]:.2f}] | {r['fd_ratio']:.2f} | "
                         f"{r['drift']:.4f} | {r['psnr']:.2f} dB |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion"])
    p.add_argument("--bits", nargs="+", type=int, default=[2, 3])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--n", type=int, default=500, help="samples per FD")
    p.add_argument("--steps", type=int, default=4, help="sampler steps (the dataset's solver: heun2 / midpoint)")
    p.add_argument("--calib-n", type=int, default=64)
    p.add_argument("--calib-steps", type=int, default=8)
    p.add_argument("--calib-widths", nargs="+", type=int, default=[2, 3, 4],
                   help="widths whose sensitivities calibration measures (only mixed widths use them)")
    p.add_argument("--tune-n", type=int, default=128, help="trajectories of the +tune rows' codebook tuning")
    p.add_argument("--tune-iters", type=int, default=600, help="optimiser steps of the +tune rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    run_datasets(args, lambda name, log: run_dataset(name, args.bits, args.variants, args.n, args.steps,
                                                     args.calib_n, args.calib_steps, args.seed, log,
                                                     args.calib_widths, args.tune_n, args.tune_iters), table)


def run_datasets(args, measure, table):
    """``measure(name, log)`` for each of ``args.datasets``, the results written to ``args.json`` (if given) after
    each one and printed as ``table(results)``; log lines go to stderr."""
    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    results = []
    for name in args.datasets:
        results.append(measure(name, log))
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as fh:
                json.dump(dict(command=" ".join(sys.argv), results=results), fh, indent=1, default=float)
        print(table(results[-1:]), flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
