"""Sample quality of the MLP velocity with default settings on the 2-D toys.

    python benchmarks/bench_quality.py [moons 8gaussians ...]

Trains MLPVelocity(dim=2, hidden=256, depth=4) for 5000 steps (batch 256, lr 1e-3, EMA 0.999, uniform times —
the defaults of ``fmq-np train``), draws 2000 samples with heun2 / 50 steps, and prints the sliced-W2 distance to a
fresh data draw next to the distance between two independent data draws of the same size (the noise floor).
"""
import sys
import time

import fmq_np as fq
from fmq_np.eval import sliced_w2


def measure(name, n=2000, steps=5000):
    data = fq.datasets.load(name, n=20_000, seed=0)
    model = fq.nn.MLPVelocity(dim=2, hidden=256, depth=4, seed=0)
    start = time.perf_counter()
    fq.flow.fit(model, data, steps=steps, batch_size=256, lr=1e-3, seed=0, progress=False)
    seconds = time.perf_counter() - start
    samples = fq.flow.sample(model, n=n, solver="heun2", steps=50, seed=1, progress=False)
    fresh, other = fq.datasets.load(name, n=n, seed=2), fq.datasets.load(name, n=n, seed=3)
    model_sw2, data_sw2 = sliced_w2(samples, fresh), sliced_w2(other, fresh)
    print(f"| {name} | {model_sw2:.4f} | {data_sw2:.4f} | {model_sw2 / data_sw2:.2f} | {seconds:.0f} s |", flush=True)


if __name__ == "__main__":
    print("| dataset | sliced-W2(samples, data) | sliced-W2(data, data) | ratio | training time |")
    print("|---|---|---|---|---|")
    for dataset in sys.argv[1:] or ["moons", "8gaussians"]:
        measure(dataset)
