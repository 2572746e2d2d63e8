"""What the fmq-np command's malloc settings (fmq_np._allocator) buy: the shipped MNIST U-Net's sampling call
(``model(x, t)`` at batch 334, the size fq.flow.sample batches 28x28 images in) and training step (batch 64:
forward, backward, AdamW), in fresh processes with glibc's default settings and with ``keep_freed_memory()``,
interleaved, one thread each. Per process: the median of ``--calls`` timed calls and the minor page faults per
call; the table gives the median over ``--repeats`` processes of each kind.

    python benchmarks/bench_allocator.py --repeats 5 --json benchmarks/results/allocator.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, resource, statistics, sys, time
import numpy as np
if sys.argv[1] == "keep":
    from fmq_np._allocator import keep_freed_memory
    assert keep_freed_memory()
from fmq_np.nn.optim import AdamW
from fmq_np.reproduce import load_shipped_model
calls = int(sys.argv[2])
model = load_shipped_model("mnist")[0]
rng = np.random.default_rng(0)
x = rng.standard_normal((334, 1, 28, 28)).astype(np.float32)
t = rng.uniform(0, 1, 334).astype(np.float32)
opt = AdamW(model.parameters(), lr=1e-5)
def sample_call():
    model(x, t)
def train_step():
    v = model.forward(x[:64], t[:64])
    model.backward(0.01 * v)
    opt.step(model.gradients())
out = {}
for name, fn in (("sample", sample_call), ("train", train_step)):
    fn()
    times, f0 = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    out[name] = dict(seconds=statistics.median(times),
                     faults=(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / calls)
print(json.dumps(out))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="processes of each kind, interleaved")
    p.add_argument("--calls", type=int, default=5, help="timed calls per process and case")
    p.add_argument("--json", help="write the per-process figures and medians here")
    args = p.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs = {"default": [], "keep": []}
    for _ in range(args.repeats):
        for mode in runs:
            proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(args.calls)], env=env, check=True,
                                  capture_output=True, text=True)
            runs[mode].append(json.loads(proc.stdout))
    medians = {mode: {case: {k: statistics.median(r[case][k] for r in rs) for k in ("seconds", "faults")}
                      for case in ("sample", "train")} for mode, rs in runs.items()}
    print("| case | default: ms / page faults per call | keep_freed_memory: ms / faults | time ratio |")
    print("|---|---|---|---|")
    for case, label in (("sample", "sampling call, batch 334"), ("train", "training step, batch 64")):
        d, k = medians["default"][case], medians["keep"][case]
        print(f"| {label} | {1e3 * d['seconds']:.0f} / {d['faults']:.0f} | {1e3 * k['seconds']:.0f} / "
              f"{k['faults']:.0f} | {k['seconds'] / d['seconds']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(runs=runs, medians=medians, repeats=args.repeats, calls=args.calls,
                           cpu=os.cpu_count()), f, indent=1)


if __name__ == "__main__":
    main()
