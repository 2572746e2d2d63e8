"""Inference speed of fq.nn.ADMUNet against flow_matching's torch UNetModel (CPU), measured in the same run.

torch lives in another environment (the test suite and the package never import it), so the peer runs in a worker
process of that environment's Python (``--torch-python``), on the original model code (``--flow-matching-src``, a
folder holding flow_matching's ``models/unet.py`` and ``models/nn.py``). Both get the same weights, inputs and
``--threads`` threads (Numba kernels and NumPy's BLAS / torch intra-op); repeats alternate fmq_np, torch, so that
machine load hits both alike. Reported per case: median wall and process-CPU seconds per forward of the batch, the
speed ratio torch_time / fmq_np_time (≥ 1: fmq_np faster; also for CPU time, the fairer figure on a machine
shared with other jobs) and the largest output difference relative to max |v_torch|.

    .venv/bin/python benchmarks/bench_adm.py --threads 2 --repeats 5 --out benchmarks/results/adm_forward.json
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: the paper's MNIST and CIFAR-10 configs (flow_matching / LowBit-HighFid MODEL_CONFIGS) at reduced width
_PAPER = dict(out_channels=1, num_res_blocks=4, attention_resolutions=[2], dropout=0.3, channel_mult=[2, 2, 2],
              conv_resample=False, dims=2, num_classes=None, use_checkpoint=False, num_heads=1, num_head_channels=-1,
              num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=False, use_new_attention_order=True,
              with_fourier_features=False)
CASES = {
    "mnist_w32": dict(label="paper MNIST config, model_channels 32 (128 -> 64 channels), 28x28, batch 8",
                      config=dict(_PAPER, in_channels=1, model_channels=32), x=(8, 1, 28, 28)),
    "cifar_w32": dict(label="paper CIFAR-10 config, model_channels 32, 32x32x3, batch 8",
                      config=dict(_PAPER, in_channels=3, out_channels=3, model_channels=32), x=(8, 3, 32, 32)),
}


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blas-threads", type=int, default=None, help="NumPy BLAS threads (default: --threads)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    p.add_argument("--flow-matching-src", default="/tmp/fm_src")
    p.add_argument("--out", default=None)
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def torch_worker(args):
    """Serve timing requests (one JSON line each on stdin) with the torch model; answer one JSON line each."""
    sys.path.insert(0, args.flow_matching_src)
    import numpy as np
    import torch
    from models.unet import UNetModel
    torch.set_num_threads(args.threads)
    models = {}
    for line in sys.stdin:
        req = json.loads(line)
        data = np.load(req["inputs"], allow_pickle=False)
        if req["case"] not in models:
            m = UNetModel(**CASES[req["case"]]["config"]).float().eval()
            m.load_state_dict({k[2:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("w.")})
            models[req["case"]] = m
        m = models[req["case"]]
        x, t = torch.from_numpy(data["x"]), torch.from_numpy(data["t"])
        times, cpu = [], []
        with torch.inference_mode():
            v = m(x, t, extra={})
            for _ in range(req["reps"]):
                t0, c0 = time.perf_counter(), time.process_time()
                v = m(x, t, extra={})
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        np.save(req["out"], v.numpy())
        print(json.dumps({"times": times, "cpu": cpu}), flush=True)


def main(args):
    blas = args.threads if args.blas_threads is None else args.blas_threads
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(blas)
    import numpy as np
    import fmq_np as fq
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
    from make_adm_fixtures import fixture_weights

    worker = None
    if os.path.exists(args.torch_python):
        worker = subprocess.Popen([args.torch_python, os.path.abspath(__file__), "--torch-worker", "--threads",
                                   str(args.threads), "--flow-matching-src", args.flow_matching_src],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            case = CASES[name]
            model = fq.nn.ADMUNet(**case["config"])
            params = model.parameters()
            weights = fixture_weights(list(params), [list(v.shape) for v in params.values()], seed=1)
            model.load_parameters(weights)
            rng = np.random.default_rng(0)
            x = rng.standard_normal(case["x"]).astype(np.float32)
            t = rng.random(case["x"][0]).astype(np.float32)
            inputs = os.path.join(tmp, f"{name}.npz")
            np.savez(inputs, x=x, t=t, **{f"w.{k}": v for k, v in weights.items()})
            v = model(x, t)                                       # warm-up (compilation, buffers)
            ours, ours_cpu, theirs, theirs_cpu, v_torch = [], [], [], [], None
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                v = model(x, t)
                ours.append(time.perf_counter() - t0)
                ours_cpu.append(time.process_time() - c0)
                if worker is not None:
                    out = os.path.join(tmp, f"{name}_torch.npy")
                    worker.stdin.write(json.dumps({"case": name, "inputs": inputs, "reps": 1, "out": out}) + "\n")
                    worker.stdin.flush()
                    answer = json.loads(worker.stdout.readline())
                    theirs += answer["times"]
                    theirs_cpu += answer["cpu"]
                    v_torch = np.load(out)
            row = dict(case=name, label=case["label"], fmq_np_s=float(np.median(ours)), fmq_np_all=ours,
                       fmq_np_cpu_s=float(np.median(ours_cpu)))
            if theirs:
                row.update(torch_s=float(np.median(theirs)), torch_all=theirs, torch_cpu_s=float(np.median(theirs_cpu)),
                           speed_ratio=float(np.median(theirs) / np.median(ours)),
                           cpu_ratio=float(np.median(theirs_cpu) / np.median(ours_cpu)),
                           max_rel_diff=float(np.abs(v - v_torch).max() / np.abs(v_torch).max()))
            results.append(row)
            print(f"{name}: fmq_np {row['fmq_np_s']:.3f} s (cpu {row['fmq_np_cpu_s']:.3f} s)" + (
                f", torch {row['torch_s']:.3f} s (cpu {row['torch_cpu_s']:.3f} s), ratio {row['speed_ratio']:.2f} "
                f"(cpu {row['cpu_ratio']:.2f}), rel diff {row['max_rel_diff']:.1e}" if theirs else ""))
    if worker is not None:
        worker.stdin.close()
        worker.wait()
    if args.out:
        from fmq_np._atomic import atomic_path
        meta = dict(threads=args.threads, blas_threads=blas, repeats=args.repeats, machine=platform.machine(),
                    cpus=os.cpu_count(), load_avg=list(os.getloadavg()), fmq_np=fq.__version__)
        with atomic_path(args.out) as tmp_out, open(tmp_out, "w") as fh:
            fh.write(json.dumps(dict(meta=meta, results=results), indent=1) + "\n")


if __name__ == "__main__":
    ARGS = _parse()
    torch_worker(ARGS) if ARGS.torch_worker else main(ARGS)
