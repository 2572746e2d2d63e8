"""A model trained by flow_matching's own code in torch, brought into fmq_np without torch: run, quantize, evaluate.

    python benchmarks/flow_matching_e2e.py --minutes 10 [--torch-python /tmp/torchvenv/bin/python]
        [--flow-matching-src /tmp/fm_src] [--keep DIR]

1. A worker in a torch environment (``--torch-python``; the package and its tests never import torch) trains
   flow_matching's ``UNetModel`` (``examples/image/models/unet.py``, from ``--flow-matching-src``: a folder with
   ``models/unet.py``, ``models/nn.py`` and ``models/ema.py``) wrapped in its ``EMA``, on MNIST (the shipped
   training images, in [-1, 1]) as ``examples/image/training/train_loop.py`` does: the CondOT path, its
   ``skewed_timestep_sample``, the MSE to the path's velocity, AdamW, one thread, for ``--minutes``. It saves the
   checkpoint as ``train.py``'s ``save_model`` does (``{"model": EMA(model).state_dict(), "optimizer", "epoch",
   "args": argparse.Namespace}`` through ``torch.save``), then switches the EMA to eval (the shadow weights) and
   samples ``--n`` images from noise the parent gives it with the midpoint rule, ``--steps`` steps.
2. Here, without torch: ``fq.io.load_external_model`` reads the .pth (restricted unpickler) with the config as JSON;
   fmq_np samples from the same noise with the same solver, and the two sample sets are compared; ``fmq-np quantize
   checkpoint.pth --key model`` writes packed 3- and 2-bit files (``ot``, ``ot-opt``), each sampled from the same
   noise, and ``fmq-np evaluate`` runs on the 3-bit one. FDs in the shipped MNIST classifier's features with a
   paired bootstrap, beside the real-data floor at the same n.
Writes benchmarks/results/flow_matching_e2e.json and sample grids (flow_matching_e2e_<name>.png).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: flow_matching's MODEL_CONFIGS["mnist"] reduced for one CPU thread: model_channels 16 instead of 64 (32 channels
#: at every level, GroupNorm32's minimum), 1 residual block per level instead of 4, no dropout (a short run is not
#: where dropout helps). Also the ADM of benchmarks/compare_archs.py.
CONFIG = dict(in_channels=1, model_channels=16, out_channels=1, num_res_blocks=1, attention_resolutions=[2],
              dropout=0.0, channel_mult=[2, 2, 2], conv_resample=False, dims=2, num_classes=None,
              use_checkpoint=False, num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
              use_scale_shift_norm=True, resblock_updown=False, use_new_attention_order=True,
              with_fourier_features=False)
QUANTIZED = (("ot", 3), ("ot-opt", 3), ("ot", 2), ("ot-opt", 2))


def torch_worker(work, minutes, steps, src):
    """Train, save and sample in torch (see the module docstring); writes ``work``/checkpoint.pth and
    ``work``/torch_samples.npy, prints one JSON line of what it did."""
    sys.path.insert(0, src)
    import numpy as np
    import torch
    from models.ema import EMA
    from models.unet import UNetModel
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = torch.from_numpy(np.load(os.path.join(work, "train.npy")))
    x0_sample = torch.from_numpy(np.load(os.path.join(work, "noise.npy")))
    model = EMA(UNetModel(**CONFIG), decay=0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)

    def skewed_timestep_sample(n):                # examples/image/training/train_loop.py
        sigma = (torch.randn((n,)) * 1.2 - 1.2).exp()
        return torch.clip(1 / (1 + sigma), min=0.0001, max=1.0)

    model.train(True)
    t_start, c_start, step, losses = time.perf_counter(), time.process_time(), 0, []
    while time.perf_counter() - t_start < 60 * minutes:
        x1 = data[torch.randint(0, len(data), (64,))]
        x0 = torch.randn_like(x1)
        t = skewed_timestep_sample(len(x1))
        x_t = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0     # CondOTProbPath
        loss = torch.pow(model(x_t, t, extra={}) - (x1 - x0), 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_ema()
        losses.append(loss.item())
        step += 1
    seconds, cpu_seconds = time.perf_counter() - t_start, time.process_time() - c_start
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 0,
                "args": argparse.Namespace(model="mnist", batch_size=64, lr=1e-3, skewed_timesteps=True)},
               os.path.join(work, "checkpoint.pth"))
    model.train(False)                             # EMA: copies the shadow weights into the model
    h = 1.0 / steps
    with torch.inference_mode():
        out = []
        for x in torch.split(x0_sample, 250):
            for i in range(steps):
                t = torch.full((len(x),), i * h)
                mid = x + 0.5 * h * model(x, t, extra={})
                x = x + h * model(mid, t + 0.5 * h, extra={})
            out.append(x)
    np.save(os.path.join(work, "torch_samples.npy"), torch.cat(out).numpy())
    print(json.dumps(dict(steps=step, seconds=seconds, cpu_seconds=cpu_seconds, torch=torch.__version__,
                          final_loss=float(np.mean(losses[-200:])))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="torch training budget (wall, one thread)")
    ap.add_argument("--n", type=int, default=500, help="samples per set")
    ap.add_argument("--steps", type=int, default=10, help="midpoint steps of every sampler")
    ap.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    ap.add_argument("--flow-matching-src", default="/tmp/fm_src")
    ap.add_argument("--keep", default=None, help="folder for the checkpoint, config and quantized files (default: "
                                                 "a temporary one, deleted)")
    ap.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        return torch_worker(args.torch_worker, args.minutes, args.steps, args.flow_matching_src)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import numpy as np
    import fmq_np as fq
    from fmq_np import reproduce
    from fmq_np.cli import main as cli
    from fmq_np.eval import image_features
    from fmq_np.eval.fd_stats import fd_floor, paired_bootstrap

    work = args.keep or tempfile.mkdtemp(prefix="fm_e2e-")
    os.makedirs(work, exist_ok=True)
    train = fq.datasets.load("mnist", seed=0)
    np.save(os.path.join(work, "train.npy"), train)
    x0 = fq.flow.noise(fq.nn.ADMUNet(**CONFIG, image_size=28), args.n, seed=1000)
    np.save(os.path.join(work, "noise.npy"), x0)
    answer = subprocess.run([args.torch_python, os.path.abspath(__file__), "--torch-worker", work, "--minutes",
                             str(args.minutes), "--steps", str(args.steps), "--flow-matching-src",
                             args.flow_matching_src], check=True, capture_output=True, text=True)
    trained = json.loads(answer.stdout.strip().splitlines()[-1])
    print("torch:", trained)
    ckpt, config = os.path.join(work, "checkpoint.pth"), os.path.join(work, "mnist.json")
    with open(config, "w") as f:
        json.dump(dict(CONFIG, image_size=28), f)

    model, how = fq.io.load_external_model(ckpt, config, key="model")
    samples = {"torch float": np.load(os.path.join(work, "torch_samples.npy"))}
    samples["fmq_np float"] = fq.flow.sample(model, x0=x0, solver="midpoint", steps=args.steps, progress=False)
    gap = np.abs(samples["fmq_np float"] - samples["torch float"])
    sizes = {}
    for method, bits in QUANTIZED:
        name = f"{method} {bits}-bit"
        out = os.path.join(work, f"{method}_{bits}.h5")
        if cli(["quantize", ckpt, "--key", "model", "--method", method, "--bits", str(bits), "--out", out]) != 0:
            sys.exit(f"fmq-np quantize {ckpt} --method {method} --bits {bits} failed")
        qmodel, _ = fq.io.load_external_model(out, config)
        samples[name] = fq.flow.sample(qmodel, x0=x0, solver="midpoint", steps=args.steps, progress=False)
        sizes[name] = dict(bytes=os.path.getsize(out), bits_per_weight=fq.io.load(out).bits_per_weight)
    evaluate = cli(["evaluate", ckpt, os.path.join(work, "ot_3.h5"), "--config", config, "--key", "model",
                    "--dataset", "mnist", "-n", "256"])

    test = fq.datasets.load("mnist", split="test")
    net, _, _ = reproduce.load_feature_net("mnist", shape=test.shape[1:])
    ref = image_features(net, test)
    floor = fd_floor(image_features(net, train), ref, args.n, seed=2)
    stats = paired_bootstrap([{k: image_features(net, v) for k, v in samples.items()}], ref, n_boot=300, seed=0)
    rows = []
    for name, s in samples.items():
        fq.images.save_samples_png(os.path.join(HERE, "results", f"flow_matching_e2e_{name.replace(' ', '_')}.png"),
                                   s[:64])
        rows.append(dict(name=name, fd=stats.fd(name), fd_over_floor=stats.fd(name)["fd"] / floor["mean"],
                         minus_float=None if "float" in name else stats.diff(name, "fmq_np float"),
                         **sizes.get(name, {})))
    result = dict(config=CONFIG, torch_training=trained, n=args.n, sampler=f"midpoint, {args.steps} steps",
                  loaded_as=how, params=int(sum(p.size for p in model.parameters().values())),
                  float_samples_max_abs_diff=float(gap.max()), float_samples_mean_abs_diff=float(gap.mean()),
                  evaluate_exit_code=evaluate, floor=floor, rows=rows)
    with open(os.path.join(HERE, "results", "flow_matching_e2e.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['params']:,} parameters, trained {trained['steps']} steps in {trained['seconds']:.0f} s by torch; "
          f"fmq_np vs torch float samples: max |diff| {gap.max():.2e}, mean {gap.mean():.2e}")
    print("| model | bits/weight | FD (95 % interval) | FD / floor | FD - fmq_np float |\n|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["fd"]["ci"]
        d = r["minus_float"]
        print(f"| {r['name']} | {r.get('bits_per_weight', 32):.2f} | {r['fd']['fd']:.1f} [{lo:.1f}, {hi:.1f}] | "
              f"{r['fd_over_floor']:.2f} | " + ("–" if d is None else f"{d['diff']:+.1f} [{d['ci'][0]:+.1f}, "
                                                                      f"{d['ci'][1]:+.1f}]") + " |")
    print(f"floor {floor['mean']:.1f} ± {floor['std']:.1f}; files in {work}")


if __name__ == "__main__":
    main()
