"""Training speed of fmq_np.nn against the same architectures in PyTorch (CPU), measured in the same run.

One step = flow-matching forward + backward + AdamW update (batch of noise/data pairs drawn each step; fmq_np:
``fq.flow.BatchStep``, what ``fit`` runs, its batch split over the threads); for the ``forward*`` cases one
forward pass without gradients at batch 256 (torch: ``inference_mode``); for the ``sample*`` cases the velocities
of 512 images in two batches of 256 (fmq_np: ``fq.flow.sample`` with one Euler step, which runs the batches on
the threads at once; torch: two forwards), the work of sampling.
Cases: MLP 4x256 on 2-D data, batch 1024; U-Net (width 32, mults 1-2-2, 1 block per level) on 28x28, batch 64;
``unet16``: width 16; ``forward16`` / ``forward32`` / ``sample16`` / ``sample32``: width 16 / 32.
``--one-part`` measures fmq_np's training step and sampling with the whole batch in one call on multi-threaded
kernels instead (the behaviour before batch threads).
fmq_np and torch runs are interleaved (repeat r: fmq_np, then torch) so that machine load hits both alike; the
figure is the median over repeats of steps/s. Both use ``--threads`` threads (Numba kernels, torch intra-op; NumPy's
BLAS too unless ``--blas-threads`` says otherwise). Without torch the peer columns are left empty.

    python benchmarks/bench_train.py --threads 2 --repeats 5 --out benchmarks/results/train_t2.json
"""
import argparse
import json
import os
import platform
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="Numba and torch threads")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="threads of NumPy's BLAS (default: --threads); 1 avoids OpenBLAS spin-waits on a busy machine")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per case and library (median reported)")
    p.add_argument("--cases", default="mlp,unet",
                   help="comma list of: mlp, unet, unet16, forward16, forward32, sample16, sample32")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="apply the fmq-np command's malloc settings (fmq_np._allocator) to this process, for both "
                        "libraries")
    p.add_argument("--one-part", action="store_true",
                   help="fmq_np: no batch threads (the whole batch in one call, multi-threaded kernels)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args()


ARGS = _parse()
ARGS.blas_threads = ARGS.threads if ARGS.blas_threads is None else ARGS.blas_threads
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402  (after the thread variables on purpose)

import fmq_np as fq  # noqa: E402
from fmq_np import _numba  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the peer is optional
    torch = None

def _unet(width):
    return lambda: fq.nn.UNetVelocity(channels=1, size=28, width=width, mults=(1, 2, 2), blocks=1, groups=8, seed=0)


#: ``kind`` "train": one FM training step; "sample": one forward pass without gradients (fmq_np ``model(x, t)``,
#: torch under ``inference_mode``), what sampling and the reproduction's evaluation spend their time on
CASES = {
    "mlp": dict(label="MLP 4x256, 2-D, batch 1024", kind="train", batch=1024, steps=40, shape=(2,), width=None,
                make=lambda: fq.nn.MLPVelocity(dim=2, hidden=256, depth=4, seed=0)),
    "unet": dict(label="U-Net w32 (1,2,2), 28x28, batch 64", kind="train", batch=64, steps=3, shape=(1, 28, 28),
                 width=32, make=_unet(32)),
    "unet16": dict(label="U-Net w16 (1,2,2) (the shipped models), 28x28, batch 64", kind="train", batch=64, steps=6,
                   shape=(1, 28, 28), width=16, make=_unet(16)),
    "forward16": dict(label="U-Net w16 forward, no gradients, 28x28, batch 256", kind="forward", batch=256, steps=3,
                      shape=(1, 28, 28), width=16, make=_unet(16)),
    "forward32": dict(label="U-Net w32 forward, no gradients, 28x28, batch 256", kind="forward", batch=256, steps=2,
                      shape=(1, 28, 28), width=32, make=_unet(32)),
    "sample16": dict(label="U-Net w16 sampling velocities, 2 batches of 256", kind="sample", batch=256, steps=2,
                     shape=(1, 28, 28), width=16, make=_unet(16)),
    "sample32": dict(label="U-Net w32 sampling velocities, 2 batches of 256", kind="sample", batch=256, steps=1,
                     shape=(1, 28, 28), width=32, make=_unet(32)),
}


def fm_batch(rng, batch, shape):
    """A flow-matching batch: x_t, t, target velocity (float32)."""
    x1 = rng.standard_normal((batch, *shape), dtype=np.float32)
    x0 = rng.standard_normal((batch, *shape), dtype=np.float32)
    t = rng.random(batch, dtype=np.float32)
    tb = t.reshape(-1, *([1] * len(shape)))
    return (1 - tb) * x0 + tb * x1, t, x1 - x0


#: batches of 256 a ``sample`` case evaluates per step
SAMPLE_BATCHES = 2


def ours_stepper(case):
    model = case["make"]()
    opt = fq.nn.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    threads = 1 if ARGS.one_part else None
    train_step = fq.flow.BatchStep(model, opt, case["batch"], threads=threads) if case["kind"] == "train" else None

    def step():
        if case["kind"] == "sample":
            x = rng.standard_normal((SAMPLE_BATCHES * case["batch"], *case["shape"]), dtype=np.float32)
            fq.flow.sample(model, x0=x, solver="euler", steps=1, batch_size=case["batch"], progress=False,
                           threads=threads)
            return
        xt, t, target = fm_batch(rng, case["batch"], case["shape"])
        if case["kind"] == "forward":
            model(xt, t)
            return
        train_step(xt, t, target, lr=1e-4)
    return step, sum(p.size for p in model.parameters().values())


# ---------------------------------------------------------------- the PyTorch peer (same architectures)
if torch is not None:
    class TorchMLP(torch.nn.Module):
        def __init__(self, dim=2, hidden=256, depth=4):
            super().__init__()
            sizes = [dim + 1] + [hidden] * depth
            layers = []
            for i in range(depth):
                layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), torch.nn.SiLU()]
            self.net = torch.nn.Sequential(*layers, torch.nn.Linear(hidden, dim))

        def forward(self, x, t):
            return self.net(torch.cat([x, t[:, None]], dim=1))

    class TorchResBlock(torch.nn.Module):
        def __init__(self, cin, cout, tdim, groups):
            super().__init__()
            self.norm1 = torch.nn.GroupNorm(groups, cin)
            self.conv1 = torch.nn.Conv2d(cin, cout, 3, padding=1)
            self.emb = torch.nn.Linear(tdim, 2 * cout)
            self.norm2 = torch.nn.GroupNorm(groups, cout)
            self.conv2 = torch.nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = torch.nn.Conv2d(cin, cout, 1) if cin != cout else torch.nn.Identity()

        def forward(self, x, temb_act):
            h = self.conv1(F.silu(self.norm1(x)))
            scale, shift = self.emb(temb_act)[:, :, None, None].chunk(2, dim=1)
            h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
            return h + self.skip(x)

    class TorchUNet(torch.nn.Module):
        def __init__(self, channels=1, width=32, mults=(1, 2, 2), groups=8):
            super().__init__()
            tdim = 4 * width
            self.width = width
            self.time = torch.nn.Sequential(torch.nn.Linear(width, tdim), torch.nn.SiLU(),
                                            torch.nn.Linear(tdim, tdim), torch.nn.SiLU())
            self.conv_in = torch.nn.Conv2d(channels, width, 3, padding=1)
            chans = [width * m for m in mults]
            self.down, self.downsample, c = torch.nn.ModuleList(), torch.nn.ModuleList(), width
            for i, ci in enumerate(chans):
                self.down.append(TorchResBlock(c, ci, tdim, groups))
                c = ci
                if i < len(chans) - 1:
                    self.downsample.append(torch.nn.Conv2d(c, c, 3, stride=2, padding=1))
            self.mid = TorchResBlock(c, c, tdim, groups)
            self.up, self.upsample = torch.nn.ModuleList(), torch.nn.ModuleList()
            for i in reversed(range(len(chans))):
                self.up.append(TorchResBlock(c + chans[i], chans[i], tdim, groups))
                c = chans[i]
                if i > 0:
                    self.upsample.append(torch.nn.Conv2d(c, c, 3, padding=1))
            self.norm_out = torch.nn.GroupNorm(groups, c)
            self.conv_out = torch.nn.Conv2d(c, channels, 3, padding=1)

        def forward(self, x, t):
            half = self.width // 2
            freqs = torch.exp(-np.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
            arg = 1000.0 * t[:, None] * freqs
            temb = self.time(torch.cat([torch.cos(arg), torch.sin(arg)], dim=1))
            h = self.conv_in(x)
            skips = []
            for i, block in enumerate(self.down):
                h = block(h, temb)
                skips.append(h)
                if i < len(self.downsample):
                    h = self.downsample[i](h)
            h = self.mid(h, temb)
            for j, block in enumerate(self.up):
                h = block(torch.cat([h, skips[len(skips) - 1 - j]], dim=1), temb)
                if j < len(self.upsample):
                    h = self.upsample[j](F.interpolate(h, scale_factor=2, mode="nearest"))
            return self.conv_out(F.silu(self.norm_out(h)))

    def torch_stepper(case):
        torch.manual_seed(0)
        model = TorchMLP() if case["width"] is None else TorchUNet(width=case["width"])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
        rng = np.random.default_rng(0)

        def step():
            if case["kind"] == "sample":
                x = torch.from_numpy(rng.standard_normal((SAMPLE_BATCHES * case["batch"], *case["shape"]),
                                                         dtype=np.float32))
                with torch.inference_mode():
                    for rows in torch.split(x, case["batch"]):
                        rows + model(rows, torch.zeros(len(rows)))
                return
            xt, t, target = (torch.from_numpy(a) for a in fm_batch(rng, case["batch"], case["shape"]))
            if case["kind"] == "forward":
                with torch.inference_mode():
                    model(xt, t)
                return
            loss = F.mse_loss(model(xt, t), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step, sum(p.numel() for p in model.parameters())


def timed(step, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def main():
    if ARGS.keep_freed_memory:
        from fmq_np._allocator import keep_freed_memory
        keep_freed_memory()
    threads = _numba.set_threads(ARGS.threads)
    if torch is not None:
        torch.set_num_threads(threads)
    rows = []
    for name in ARGS.cases.split(","):
        case = CASES[name]
        ours, n_ours = ours_stepper(case)
        peer, n_peer = torch_stepper(case) if torch is not None else (None, None)
        if n_peer is not None and n_peer != n_ours:
            sys.exit(f"{name}: parameter counts differ (fmq_np {n_ours}, torch {n_peer}): not the same model")
        for fn in (ours, peer):
            if fn is not None:
                timed(fn, max(1, case["steps"] // 3))          # warm-up (and Numba compilation)
        ours_runs, peer_runs = [], []
        for _ in range(ARGS.repeats):
            ours_runs.append(timed(ours, case["steps"]))
            if peer is not None:
                peer_runs.append(timed(peer, case["steps"]))
        row = dict(case=name, label=case["label"], params=n_ours, fmq_np_steps_s=float(np.median(ours_runs)),
                   fmq_np_runs=ours_runs)
        if peer is not None:
            row.update(torch_steps_s=float(np.median(peer_runs)), torch_runs=peer_runs,
                       ratio=float(np.median(ours_runs) / np.median(peer_runs)))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_runs")}), flush=True)
    meta = dict(threads=threads, blas_threads=ARGS.blas_threads, repeats=ARGS.repeats, one_part=ARGS.one_part,
                keep_freed_memory=ARGS.keep_freed_memory,
                python=platform.python_version(), numpy=np.__version__,
                torch=None if torch is None else torch.__version__, machine=platform.machine(),
                processor=platform.processor(), cpus=os.cpu_count(), load_avg=os.getloadavg(),
                time=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    print("\n| case | params | fmq_np steps/s | torch steps/s | ratio |\n|---|---|---|---|---|")
    for r in rows:
        peer = f"{r['torch_steps_s']:.2f} | {r['ratio']:.2f}x" if "torch_steps_s" in r else "n/a | n/a"
        print(f"| {r['label']} | {r['params']} | {r['fmq_np_steps_s']:.2f} | {peer} |")
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
