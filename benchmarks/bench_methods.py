"""The paper's comparison on the demo models: every quantizer at 2, 3 and 4 bits per weight.

    fmq-np demo --out runs/demo                       # trains the two models (a few minutes)
    python benchmarks/bench_methods.py runs/demo      # this table (+ PNG grids of the digits samples)

For each method and bit width, every weight tensor with ndim > 1 is quantized per output channel (biases and
norm scales stay in float, fmq_np's default policy), and the dequantized model samples from the *same noise* as
the float model (heun2, 50 steps). Columns: relative weight error ‖W − Q(W)‖²/‖W‖² over all quantized tensors;
pathwise drift RMS between float and quantized samples (an upper bound on their W2); sliced-W2 from the samples
to held-out data (float model's value in the first row).
"""
import os
import sys

import numpy as np

import fmq_np as fq
from fmq_np.eval import sliced_w2

METHODS = ("ot", "ot-opt", "uniform", "pwl", "log2")
BITS = (2, 3, 4)


def evaluate(model, x0, data):
    samples = fq.flow.sample(model, x0=x0, solver="heun2", steps=50, progress=False)
    return samples, sliced_w2(samples, data, n_projections=128)


def sweep(path, data, n, out_folder):
    model = fq.io.load(path)
    float_params = {k: v.copy() for k, v in model.parameters().items()}
    x0 = fq.flow.noise(model, n, seed=11)
    ref, ref_sw2 = evaluate(model, x0, data)
    name = os.path.splitext(os.path.basename(path))[0]
    print(f"\n### {name} ({type(model).__name__}, {sum(v.size for v in float_params.values())} weights, "
          f"{n} samples)\n")
    print("| method | bits | rel. weight error | drift RMS | sliced-W2 to data |")
    print("|---|---|---|---|---|")
    print(f"| float | 32 | 0 | 0 | {ref_sw2:.4f} |")
    for method in METHODS:
        for bits in BITS:
            qm = fq.quant.quantize_model(float_params, bits=bits, method=method, granularity="channel")
            hat = qm.dequantize()
            err = sum(float(np.sum((float_params[k].astype(np.float64) - hat[k]) ** 2)) for k in hat)
            norm = sum(float(np.sum(float_params[k].astype(np.float64) ** 2)) for k in hat)
            model.load_parameters(hat)
            samples, sw2 = evaluate(model, x0, data)
            drift = float(np.sqrt(np.mean(np.sum((samples - ref).reshape(n, -1).astype(np.float64) ** 2, 1))))
            print(f"| {method} | {bits} | {err / norm:.2e} | {drift:.4f} | {sw2:.4f} |", flush=True)
            if samples.ndim == 4 and bits == 2:
                fq.images.save_samples_png(os.path.join(out_folder, f"{name}_{method}_{bits}bit.png"), samples[:64])
    model.load_parameters(float_params)


def main(folder):
    out_folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    sweep(os.path.join(folder, "moons.h5"), fq.datasets.load("moons", n=2000, seed=5), 2000, out_folder)
    sweep(os.path.join(folder, "digits.h5"), fq.datasets.load("digits"), 500, out_folder)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
