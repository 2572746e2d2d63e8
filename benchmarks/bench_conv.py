"""The two paths of fmq_np's 3×3 "same" convolution, layer by layer: Winograd F(2×2, 3×3) tiles against im2col + GEMM.

    python benchmarks/bench_conv.py [--threads 1] [--batch 256] [--repeats 7] [--out results/conv_winograd.json]

For each (input channels, output channels, side) of the shipped U-Nets (width 16 and 32 at 28×28 and 14×14, plus a
one-channel input layer and a one-channel output layer) one ``Conv2d(..., act="silu")`` forward runs on the same
input with ``fmq_np.nn.layers.WINOGRAD_MIN_SIDE`` as shipped (tiles where the layer qualifies) and raised (im2col
everywhere), interleaved, and the medians are compared; ``--train`` times forward + backward instead. These
figures set the thresholds ``WINOGRAD_MIN_SIDE`` and ``WINOGRAD_MIN_IN_CHANNELS``.
"""
import argparse
import json
import os
import platform
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--threads", type=int, default=1, help="Numba and BLAS threads (default 1)")
ap.add_argument("--batch", type=int, default=256, help="samples per call (default 256)")
ap.add_argument("--repeats", type=int, default=7, help="timed calls per path and layer (median reported)")
ap.add_argument("--train", action="store_true", help="time forward + backward (a training step's work)")
ap.add_argument("--out", help="write the results as JSON here")
args = ap.parse_args()
for var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402  (after the thread settings)

from fmq_np.nn import layers  # noqa: E402

LAYERS = [(1, 16, 28), (16, 16, 28), (16, 32, 28), (32, 32, 14), (32, 32, 28), (64, 64, 14), (96, 32, 28),
          (16, 1, 28)]
PATHS = {"winograd": layers.WINOGRAD_MIN_SIDE, "im2col": 10 ** 9}       # the WINOGRAD_MIN_SIDE of each path


def time_layer(c_in, c_out, side, rng):
    conv = layers.Conv2d(c_in, c_out, 3, act="silu", rng=rng)
    x = rng.standard_normal((c_in, args.batch, side, side)).astype(np.float32)
    dy = rng.standard_normal((c_out, args.batch, side, side)).astype(np.float32)
    times = {path: [] for path in PATHS}
    default = layers.WINOGRAD_MIN_SIDE
    try:
        for _ in range(args.repeats + 1):              # the first round compiles and warms the buffers
            for path, side_min in PATHS.items():
                layers.WINOGRAD_MIN_SIDE = side_min
                t0 = time.perf_counter()
                conv.forward(x, train=args.train)
                if args.train:
                    conv.backward(dy)
                times[path].append(time.perf_counter() - t0)
    finally:
        layers.WINOGRAD_MIN_SIDE = default
    med = {path: float(np.median(t[1:])) for path, t in times.items()}
    return dict(c_in=c_in, c_out=c_out, side=side, tiles_used=conv._winograd(side, side, c_in),
                im2col_ms=med["im2col"] * 1e3, winograd_ms=med["winograd"] * 1e3,
                speedup=med["im2col"] / med["winograd"])


def main():
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'layer':<16} {'im2col ms':>10} {'tiles ms':>10} {'speed-up':>9}")
    for c_in, c_out, side in LAYERS:
        row = time_layer(c_in, c_out, side, rng)
        rows.append(row)
        note = "" if row["tiles_used"] else "  (im2col both: below the thresholds)"
        print(f"{c_in:>3}->{c_out:<3} {side}x{side:<5} {row['im2col_ms']:>10.1f} {row['winograd_ms']:>10.1f} "
              f"{row['speedup']:>8.2f}x{note}")
    if args.out:
        meta = dict(threads=args.threads, batch=args.batch, repeats=args.repeats, train=args.train,
                    machine=f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
                    load_average=os.getloadavg(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
