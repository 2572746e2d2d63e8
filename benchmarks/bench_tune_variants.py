"""Where the low-bit Fashion-MNIST gap comes from (issue 13): variants of codebook tuning on the shipped model.

Every row starts from the reproduction's ``ot-opt+ef`` at ``--bits`` (default 2; fmq_np.reproduce.quantize_row,
calibration with the default scale's settings) and is measured like ``fmq-np reproduce`` (its ``Evaluator``): FD
of ``--n`` samples from one noise draw shared by every model, in the shipped feature net's features, with
paired-bootstrap 95 % intervals of FD − float (fmq_np.eval.fd_stats); drift = RMS to the float samples from the
same noise.

Rows (``--rows``, all by default): the base; ``tune_codebooks`` at the default scale's step count and lr 2e-3 (128
trajectories) and ``--long`` steps at lr 5e-3; the long tuning followed by **free codes** (``tune_codebooks(...,
codes="free")``, ``--free-iters`` steps at lr 5e-3: quantization-aware distillation in which the codes may change
too, latent weights trained through the rounding by the straight-through estimator; one row per ``--lr-latent``);
the default tuning followed by **endpoint distillation** (this script's :func:`endpoint_tune`: the levels are
fitted so that the quantized model's samples, backpropagated through the fixed-step solver, land where the float
model's do from the same noise: drift itself is the loss); and **mixed
widths** (``bits`` = base + 0.15 and + 0.3 over widths base..base + 2 chosen by the calibration's measured
sensitivities, then the default tuning), which buy quality with code bits.

    nice -n 10 python benchmarks/bench_tune_variants.py --dataset fashion --json benchmarks/results/tune_variants.json
    python benchmarks/bench_tune_variants.py --dataset fashion --rows free-codes --lr-latent 3e-3 1e-2 3e-2 \
        --json benchmarks/results/tune_free_codes_fashion.json
"""
import argparse
import copy
import json
import sys
import time

import numpy as np

import fmq_np as fq
from fmq_np import reproduce
from fmq_np.eval import image_features
from fmq_np.eval.fd_stats import paired_bootstrap
from fmq_np.nn.optim import AdamW
from fmq_np.quant.calibrate import quantize_calibrated
from fmq_np.quant.tensor import QuantizedTensor
from fmq_np.quant.tune import TrainableLevels, tuned_model

#: explicit Runge-Kutta tableaux (a, b, c) of the fixed-step solvers endpoint_tune backpropagates through
TABLEAU = {"heun2": ([[], [1.0]], [0.5, 0.5], [0.0, 1.0]),
           "midpoint": ([[], [0.5]], [0.0, 1.0], [0.0, 0.5])}


def endpoint_tune(model, qm, x0, x1, *, solver, steps, iters=300, batch_size=16, lr=2e-3, lr_float=1e-4, seed=0):
    """Fit ``qm``'s levels (and float tensors) so that samples of the quantized model from noise ``x0`` (N, ...)
    end at the float model's ``x1`` (same shape): loss mean((x̂1 − x1)²), its gradient by reverse mode through
    ``steps`` steps of ``solver`` (each stage's vector-Jacobian product by the network's forward/backward)."""
    a, b, c = TABLEAU[solver]
    rng = np.random.default_rng(seed)
    student = copy.deepcopy(model)
    live, grads = student.parameters(), student.gradients()
    levels = {k: TrainableLevels(qt) for k, qt in qm.tensors.items() if isinstance(qt, QuantizedTensor)}
    floats = [k for k, v in qm.tensors.items() if k not in levels and np.asarray(v).dtype.kind == "f"]
    for k, v in qm.tensors.items():
        np.copyto(live[k], levels[k].weights() if k in levels else np.asarray(v))
    opt_levels = AdamW({k: lv.u for k, lv in levels.items()}, lr=lr)
    opt_floats = AdamW({k: live[k] for k in floats}, lr=lr_float)
    h = np.float32(1.0 / steps)
    losses = []
    for step in range(iters):
        pick = rng.integers(0, len(x0), batch_size)
        x, tape = x0[pick].copy(), []
        for i in range(steps):
            t = np.full(len(x), i * h, np.float32)
            ys, ks = [], []
            for j in range(len(b)):
                y = (x + h * sum(a[j][m] * ks[m] for m in range(j))).astype(np.float32) if j else x
                ys.append(y)
                ks.append(student(y, t + np.float32(c[j] * h)))
            tape.append((ys, t))
            x = (x + h * sum(b[j] * ks[j] for j in range(len(b)))).astype(np.float32)
        r = x - x1[pick]
        losses.append(float(np.mean(r * r)))
        g = (2.0 / r.size) * r
        total = {k: np.zeros(live[k].shape) for k in list(levels) + floats}
        for ys, t in reversed(tape):
            dys = [None] * len(b)
            for j in reversed(range(len(b))):
                dk = h * (b[j] * g + sum(a[m][j] * dys[m] for m in range(j + 1, len(b))))
                student.forward(ys[j], t + np.float32(c[j] * h))
                dys[j] = student.backward(dk.astype(np.float32))
                for k in total:
                    total[k] += grads[k]
            g = g + sum(dys)
        decay = 1.0 - step / iters
        opt_levels.step({k: lv.gradient(total[k]) for k, lv in levels.items()}, lr=lr * decay)
        opt_floats.step({k: total[k].astype(np.float32) for k in floats}, lr=lr_float * decay)
        for k, lv in levels.items():
            np.copyto(live[k], lv.weights())
    tensors = {k: levels[k].tensor() if k in levels else live[k].copy() if k in floats else v
               for k, v in qm.tensors.items()}
    return tuned_model(qm, tensors, dict(endpoint_iters=iters, first_loss=losses[0], last_loss=losses[-1]))


#: the optional rows of the table, in order
ROWS = ("tune", "long", "free-codes", "endpoint", "mixed")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion", choices=["mnist", "fashion"])
    p.add_argument("--bits", type=int, default=2, choices=[2, 3, 4], help="code width of the base row")
    p.add_argument("--n", type=int, default=1000, help="samples per FD (one noise draw)")
    p.add_argument("--long", type=int, default=2000, help="steps of the long tuning row")
    p.add_argument("--endpoint-iters", type=int, default=300)
    p.add_argument("--free-iters", type=int, default=1000, help="steps of the free-codes row")
    p.add_argument("--lr-latent", type=float, nargs="+", default=[1e-2],
                   help="latent-weight rates of the free-codes rows (one row each; units of the row's RMS weight)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="rows after the base (default all)")
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if "endpoint" in args.rows and "tune" not in args.rows:
        p.error("the endpoint row starts from the tune row: add tune to --rows")
    name = args.dataset
    cfg = dict(reproduce.SCALES["default"], n_samples=args.n, seeds=1, paper_check=0, n_likelihood=0)
    model = reproduce.load_shipped_model(name)[0]
    ev = reproduce.Evaluator(name, model, cfg, 0, False)
    data = fq.datasets.load(name)
    params = model.parameters()
    tune_kw = dict(n=ev.tune_n, solver=ev.solver, steps=ev.steps, seed=11)
    rows, features = [], {"float": ev.features["float", 0]}

    def measure(label, qm, t0, **extra):
        qmodel = fq.nn.UNetVelocity(**model.config())
        qmodel.load_parameters(qm.dequantize())
        samples = ev._sample(qmodel, ev.x0[0])
        features[label] = image_features(ev.net, samples)
        drift = float(np.sqrt(np.mean((samples.astype(np.float64) - ev.float_samples[0]) ** 2)))
        rows.append(dict(label=label, bits_per_weight=qm.bits_per_weight, drift=drift,
                         seconds=time.perf_counter() - t0, **extra))
        print(f"{label}: drift {drift:.4f}, {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    base = reproduce.quantize_row(params, "ot-opt+ef", args.bits, ev.calibration())
    measure("ot-opt+ef", base, t0)
    if "tune" in args.rows:
        t0 = time.perf_counter()
        tuned = fq.quant.tune_codebooks(model, base, data, iters=ev.tune_iters, **tune_kw)
        measure(f"+tune ({ev.tune_iters} steps, lr 2e-3)", tuned, t0,
                heldout_mse=tuned.meta["tuned"]["heldout_mse_after"])
    if {"long", "free-codes"} & set(args.rows):
        t0 = time.perf_counter()
        long = fq.quant.tune_codebooks(model, base, data, iters=args.long, lr=5e-3, **tune_kw)
        measure(f"+tune ({args.long} steps, lr 5e-3)", long, t0, heldout_mse=long.meta["tuned"]["heldout_mse_after"])
    for lr_latent in args.lr_latent if "free-codes" in args.rows else ():
        t0 = time.perf_counter()
        free = fq.quant.tune_codebooks(model, long, data, iters=args.free_iters, lr=5e-3, codes="free",
                                       lr_latent=lr_latent, **tune_kw)
        info = free.meta["tuned"]
        measure(f"+tune ({args.long} steps), then free codes ({args.free_iters} steps, latent lr {lr_latent:g})",
                free, t0, heldout_mse=info["heldout_mse_after"], code_changes=info["code_changes"], kept=info["kept"])
    if "endpoint" in args.rows:
        t0 = time.perf_counter()
        x0 = fq.flow.noise(model, 1024, seed=777)
        x1 = fq.flow.sample(model, x0=x0, solver=ev.solver, steps=ev.steps, progress=False)
        ends = endpoint_tune(model, tuned, x0, x1, solver=ev.solver, steps=ev.steps, iters=args.endpoint_iters)
        measure(f"+tune, then endpoint distillation ({args.endpoint_iters} steps)", ends, t0,
                endpoint_loss=[ends.meta["tuned"]["first_loss"], ends.meta["tuned"]["last_loss"]])
    if "mixed" in args.rows:
        t0 = time.perf_counter()
        widths = (args.bits, args.bits + 1, args.bits + 2)
        cal = fq.quant.calibrate(model, data, n=ev.calib_n, solver=ev.solver, steps=ev.steps, seed=7, widths=widths,
                                 sens_states=64)
        for budget in (args.bits + 0.15, args.bits + 0.3):
            mixed = quantize_calibrated(params, budget, "ot-opt", cal)
            widened = {k: w for k, w in mixed.meta["calibrated"]["widths"].items() if w and w > args.bits}
            tm = fq.quant.tune_codebooks(model, mixed, data, iters=ev.tune_iters, **tune_kw)
            measure(f"mixed {budget:g} bits (widths {widths[0]}-{widths[-1]}) +tune", tm, t0, widened=widened)
            t0 = time.perf_counter()
    stats = paired_bootstrap([features], ev.ref_features, n_boot=args.n_boot, seed=0)
    fd_float = stats.fd("float")["fd"]
    print(f"float FD {fd_float:.2f} (n = {ev.n}, {ev.solver} {ev.steps} steps)")
    print("| row | bits/weight | FD / float | FD − float [95 %] | drift |\n|---|---|---|---|---|")
    for row in rows:
        fd, d = stats.fd(row["label"]), stats.diff(row["label"], "float")
        row.update(fd=fd, minus_float=d, ratio=fd["fd"] / fd_float)
        print(f"| {row['label']} | {row['bits_per_weight']:.2f} | {row['ratio']:.3f} | {d['diff']:+.1f} "
              f"[{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}] | {row['drift']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(dataset=name, bits=args.bits, n_samples=ev.n, solver=ev.solver, steps=ev.steps,
                           float_fd=stats.fd("float"), rows=rows), f, indent=1, default=float)


if __name__ == "__main__":
    main()
