"""GPU (numba.cuda) kernels against their CPU (Numba) twins: median wall time, transfers included, answers checked.

Needs a CUDA GPU (the simulator is for correctness tests, not timings). Writes benchmarks/results/kernels_cuda.json
and prints a Markdown table for benchmarks/README.md.

    python benchmarks/bench_kernels_cuda.py [--groups 1024] [--length 4096] [--repeat 5]
"""
import argparse
import json
import os
import platform

import numpy as np

from fmq_np._numba import get_threads, resolve_device
from fmq_np.bench import median_time
from fmq_np.quant import cpu, packing

HERE = os.path.dirname(os.path.abspath(__file__))


def cases(G, n):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((G, n)).astype(np.float32)
    cb16 = np.sort(rng.standard_normal((G, 16)).astype(np.float32), axis=1)
    codes16 = rng.integers(0, 16, (G, n)).astype(np.uint8)
    codes8 = (codes16 % 8).reshape(-1)
    packed3 = packing.pack_codes(codes8, 3)
    return {
        "assign (k=16)": lambda m: m.assign(w, cb16),
        "dequantize (k=16)": lambda m: m.dequantize(codes16, cb16),
        "uniform (k=8)": lambda m: m.uniform(w, 8),
        "ot_equal_mass (k=8)": lambda m: m.ot_equal_mass(w, 8),
        "pack 3-bit": lambda m: (m.pack_codes if m is not cpu else packing.pack_codes)(codes8, 3),
        "unpack 3-bit": lambda m: (m.unpack_codes if m is not cpu else packing.unpack_codes)(packed3, 3,
                                                                                          codes8.size),
    }


def gpu_name(cuda):
    """The GPU's name ("simulator" under NUMBA_ENABLE_CUDASIM, which has no device object)."""
    if not hasattr(cuda, "get_current_device"):
        return "CUDA simulator (timings meaningless)"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def same(a, b):
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=1024)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "kernels_cuda.json"))
    args = ap.parse_args()
    resolve_device("cuda")                   # DeviceError with a clear message when there is no GPU
    from numba import cuda
    from fmq_np.quant import gpu
    rows = []
    for name, fn in cases(args.groups, args.length).items():
        fn(cpu), fn(gpu)                         # compile / warm up
        t_cpu = median_time(lambda: fn(cpu), args.repeat)
        t_gpu = median_time(lambda: fn(gpu), args.repeat)
        rows.append(dict(kernel=name, cpu_s=t_cpu, gpu_s=t_gpu, speedup=t_cpu / t_gpu, same=same(fn(cpu), fn(gpu))))
    info = dict(values=args.groups * args.length, groups=args.groups, cpu_threads=get_threads(),
                cpu=platform.processor() or platform.machine(), gpu=gpu_name(cuda))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(dict(info=info, rows=rows), fh, indent=2)
    print(f"{info['values']:,} float32 values in {args.groups} groups; GPU {info['gpu']}, "
          f"CPU {info['cpu_threads']} threads; medians of {args.repeat}, host↔device transfers included\n")
    print("| kernel | CPU (ms) | GPU (ms) | speed-up | same answer |\n|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['kernel']} | {1e3 * r['cpu_s']:.2f} | {1e3 * r['gpu_s']:.2f} | {r['speedup']:.1f}× | "
              f"{'yes' if r['same'] else 'NO'} |")


if __name__ == "__main__":
    main()
