"""``fmq-np``: train, sample, quantize, evaluate, bench, bounds, demo and reproduce from the command line.

Every user error ends with a one-line message on stderr and a non-zero exit code (1 for errors of input or
files, 2 for bad command-line usage, 130 for Ctrl-C).
"""
import argparse
import json
import os
import sys

import numpy as np

from ._atomic import atomic_path
from .errors import FmqError


def _check_output(*paths):
    """Fail before any long work when an output file could not be written: it must not be a folder, and its folder
    must exist and take a new file (tried for real: permission bits do not tell root or read-only mounts)."""
    import tempfile
    for path in paths:
        if path is None:
            continue
        if os.path.isdir(path):
            raise FmqError(f"{path}: is a directory; give a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FmqError(f"{path}: folder {folder} does not exist")
        try:
            with tempfile.TemporaryFile(dir=folder, prefix=".fmq_np-probe-"):
                pass
        except OSError as exc:
            raise FmqError(f"{path}: folder {folder} is not writable ({exc.strerror or exc})") from None


def _check_input(path, what="model file"):
    """A one-line error for an input that is a folder or missing (before any loader sees it)."""
    if os.path.isdir(path):
        raise FmqError(f"{path}: is a directory, expected a {what}")
    if not os.path.exists(path):
        raise FmqError(f"{path}: no such file")


def _same_file(a, b):
    """True when paths ``a`` and ``b`` name one file (links and relative paths resolved)."""
    if a is None or b is None:
        return False
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_distinct(outputs, inputs):
    """Refuse an output (``(flag, path)``) that is the same file as an input (``(label, path)``): it would be
    overwritten."""
    for flag, out in outputs:
        for label, path in inputs:
            if _same_file(out, path):
                raise FmqError(f"{flag} {out} is the same file as {label}: it would be overwritten; "
                               f"choose another {flag}")


def _warn(command, text):
    print(f"fmq-np {command}: warning: {text}", file=sys.stderr, flush=True)


def _check_source(float_path, params, quantized_path, meta, command):
    """Error when the quantized file records a digest of its source weights that ``params`` do not match;
    a warning when it records none (files of older fmq_np versions)."""
    from .quant.model import weights_digest
    digest = meta.get("source_digest") if isinstance(meta, dict) else None
    if digest is None:
        _warn(command, f"{quantized_path} records no digest of its source weights (older fmq_np); cannot check "
                       f"that it was quantized from {float_path}")
    elif digest != weights_digest(params):
        raise FmqError(f"{quantized_path} was not quantized from {float_path}: its source weights differ "
                       "(digest mismatch); pass the float model it came from")


#: batch size above which --coupling ot warns: the exact assignment costs O(batch^3) per step
OT_BATCH_WARN = 1024


def _seed(text):
    """argparse type of --seed: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _finite_float(strict):
    """argparse type: a finite number > 0 (``strict``) or >= 0."""
    bound = "> 0" if strict else ">= 0"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (np.isfinite(value) and (value > 0 if strict else value >= 0)):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
        return value
    return parse


_positive_float = _finite_float(strict=True)
_nonnegative_float = _finite_float(strict=False)


def _train_memory(args, dim=None, image=None):
    """InputError before building anything when the model or a training step of these sizes cannot fit."""
    from ._memory import check_memory, memory_budget
    f32 = 4
    if dim is not None:          # MLP: weights (+ grads, Adam, EMA, copies: x8) and per-sample activations
        h, depth = args.hidden, args.depth
        n_params = (dim + 1) * h + h + (depth - 1) * (h * h + h) + h * dim + dim
        check_memory(8 * f32 * n_params, f"an MLP of width {h} and depth {depth}", "--hidden", h,
                     largest=int((memory_budget() / (8 * f32 * max(depth, 1))) ** 0.5))
        check_memory(8 * f32 * n_params, f"an MLP of width {h} and depth {depth}", "--depth", depth)
        check_memory(2 * f32 * dim * args.n_data, "the training points", "--n-data", args.n_data)
        per_sample = f32 * (4 * h * depth + 8 * dim)
        fixed = 8 * f32 * n_params + 2 * f32 * dim * args.n_data
        check_memory(fixed + per_sample * args.batch_size, "a training step", "--batch-size", args.batch_size,
                     largest=int((memory_budget() - fixed) // per_sample))
    else:                        # U-Net: ~100 width^2 weights; ~40 activation maps of width channels per sample
        c, size = image
        w = args.width
        n_params = 110 * w * w + 20 * w * c
        check_memory(8 * f32 * n_params, f"a U-Net of width {w}", "--width", w)
        per_sample = f32 * 40 * w * size * size * max(1, c)
        fixed = 8 * f32 * n_params
        check_memory(fixed + per_sample * args.batch_size, f"a training step of a width-{w} U-Net on {size}x{size} "
                     "images", "--batch-size", args.batch_size, largest=int((memory_budget() - fixed) // per_sample))


def _train(args):
    from . import datasets, flow, io, nn
    _check_output(args.out, args.checkpoint)
    _check_distinct([("--out", args.out)], [("--checkpoint", args.checkpoint)])
    if args.resume and args.checkpoint is None:
        raise FmqError("--resume needs --checkpoint FILE (the checkpoint to continue)")
    if args.checkpoint is not None and os.path.exists(args.checkpoint) and not (args.resume or args.overwrite):
        raise FmqError(f"--checkpoint {args.checkpoint} exists: pass --resume to continue that run, or --overwrite "
                       "to start over and replace it")
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--n-data", args.n_data),
                        ("--hidden", args.hidden), ("--depth", args.depth), ("--width", args.width),
                        ("--checkpoint-every", args.checkpoint_every)):
        if value < 1:
            raise FmqError(f"{flag} must be >= 1, got {value}")
    name = datasets.canonical(args.dataset)
    if args.coupling == "ot" and args.batch_size > OT_BATCH_WARN:
        _warn("train", f"--coupling ot solves an exact {args.batch_size}x{args.batch_size} assignment every step "
                       f"(cost ~batch^3: seconds to tens of seconds a step above {OT_BATCH_WARN}); a smaller "
                       "--batch-size is much faster")
    if args.model == "mlp":
        if name not in datasets.TOYS:
            raise FmqError(f"--model mlp needs a 2-D dataset ({', '.join(datasets.TOYS)}); use --model unet for {name}")
        _train_memory(args, dim=2)
        data = datasets.load(name, n=args.n_data, seed=args.seed)
        model = nn.MLPVelocity(dim=data.shape[1], hidden=args.hidden, depth=args.depth, seed=args.seed)
    else:
        if name not in datasets.IMAGES:
            raise FmqError(f"--model unet needs an image dataset ({', '.join(datasets.IMAGES)})")
        data = datasets.load(name, seed=args.seed)
        c, size = data.shape[1], data.shape[2]
        _train_memory(args, image=(c, size))
        model = nn.UNetVelocity(channels=c, size=size, width=args.width, seed=args.seed)
    hist = flow.fit(model, data, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    ema_decay=args.ema, schedule=args.schedule, warmup=args.warmup, times=args.times,
                    coupling=args.coupling, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                    resume=args.resume,
                    meta={"dataset": name, "model": args.model} | ({"n_data": args.n_data} if args.model == "mlp"
                                                                   else {}))
    tail = hist.loss[-min(100, len(hist.loss)):]
    io.save_model(args.out, model, meta={"dataset": name, "steps": args.steps, "final_loss": float(np.mean(tail)),
                                         "seconds": hist.seconds})
    print(f"trained {type(model).__name__} on {name}: {args.steps} steps in {hist.seconds:.1f} s "
          f"({args.steps / max(hist.seconds, 1e-9):.0f} steps/s), loss (last {len(tail)}) {np.mean(tail):.4f} "
          f"-> {args.out}")


def _sample(args):
    from . import flow, images
    from ._memory import check_memory, memory_budget
    from .flow.shapes import sample_shape
    _check_input(args.model)
    _check_output(args.out, args.png)
    _check_distinct([("--out", args.out), ("--png", args.png)], [("the model", args.model)])
    _check_distinct([("--png", args.png)], [("--out", args.out)])
    if args.n < 1:
        raise FmqError(f"-n must be >= 1, got {args.n}")
    model, kind = _velocity_model(args.model, args, key=args.key)
    per_sample = 3 * 4 * int(np.prod(sample_shape(model)))       # noise, result, the copy written out (float32)
    check_memory(per_sample * args.n, "the samples", "-n", args.n, largest=memory_budget() // per_sample)
    x = flow.sample(model, n=args.n, solver=args.solver, steps=args.steps, seed=args.seed, atol=args.atol,
                    rtol=args.rtol)
    if args.out:
        _save_npy(args.out, x)
    if args.png:
        images.save_samples_png(args.png, x)
    print(f"sampled {len(x)} x {x.shape[1:]} from {args.model} ({kind}) with {args.solver}"
          + "".join(f" -> {p}" for p in (args.out, args.png) if p))


def _velocity_model(path, args, key=None):
    """``(model, description)`` of ``path``: an fmq_np file as it is, a weight file through ``--config``."""
    from . import io
    if args.config is None:
        if not path.lower().endswith((".h5", ".hdf5")):
            raise FmqError(f"{path}: a weight file needs --config CONFIG.json (its ADMUNet config, e.g. "
                           "flow_matching's MODEL_CONFIGS entry with image_size)")
        return io.load_velocity_model(path)
    if _is_fmq_model(path):
        raise FmqError(f"{path} is an fmq_np model, which records its own config; drop --config")
    return io.load_external_model(path, args.config, key=key, weights=args.weights)


def _add_external_options(p):
    p.add_argument("--config", help="for a weight file (.pth, .safetensors, .npz; or its quantized .h5): the JSON "
                                    "config of its ADMUNet (flow_matching's MODEL_CONFIGS entry, with image_size)")
    p.add_argument("--key", help="with --config: the entry of a torch checkpoint holding the weights, e.g. 'model'")
    p.add_argument("--weights", choices=("ema", "live"), default="ema",
                   help="with --config, for flow_matching's EMA checkpoints: the averaged (default) or live weights")


def _bounds(args):
    from .theory.cli_bounds import run_bounds
    _check_input(args.model)
    _check_input(args.quantized, "quantized model file")
    _check_output(args.json)
    _check_distinct([("--json", args.json)], [("the model", args.model), ("the quantized model", args.quantized)])
    print(run_bounds(args.model, args.quantized, json_out=args.json, n_samples=args.n, solver=args.solver,
                     steps=args.steps, seed=args.seed, splits=args.splits, margin=args.margin))


def _demo(args):
    """The main job on the embedded data: a 2-D toy and the 8×8 digits, trained, sampled, measured, drawn."""
    from . import datasets, flow, images, io, nn
    from .eval import sliced_w2
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise FmqError(f"--out {args.out} is a file; give a folder")
    os.makedirs(args.out, exist_ok=True)
    _check_output(*(os.path.join(args.out, f) for f in ("moons.h5", "moons_samples.png", "moons_data.png",
                                                         "digits.h5", "digits_samples.png")))
    moons = datasets.load("moons", n=20_000, seed=args.seed)
    mlp = nn.MLPVelocity(dim=2, hidden=256, depth=4, seed=args.seed)
    print(f"[1/2] MLP 4x256 on moons, {args.mlp_steps} steps")
    flow.fit(mlp, moons, steps=args.mlp_steps, batch_size=256, lr=1e-3, seed=args.seed, meta={"dataset": "moons"})
    io.save_model(os.path.join(args.out, "moons.h5"), mlp, meta={"dataset": "moons"})
    n = 2000
    gen = flow.sample(mlp, n=n, solver="heun2", steps=50, seed=args.seed + 1)
    fresh = datasets.load("moons", n=n, seed=args.seed + 2)
    other = datasets.load("moons", n=n, seed=args.seed + 3)
    images.save_samples_png(os.path.join(args.out, "moons_samples.png"), gen)
    images.save_samples_png(os.path.join(args.out, "moons_data.png"), fresh)
    sw_model, sw_data = sliced_w2(gen, fresh), sliced_w2(other, fresh)
    print(f"      sliced-W2(samples, data) = {sw_model:.4f}; between two data draws = {sw_data:.4f} "
          f"(ratio {sw_model / sw_data:.2f})")

    digits = datasets.load("digits", seed=args.seed)
    unet = nn.UNetVelocity(channels=1, size=8, width=16, seed=args.seed)
    print(f"[2/2] U-Net (width 16) on 8x8 digits, {args.unet_steps} steps")
    flow.fit(unet, digits, steps=args.unet_steps, batch_size=64, lr=1e-3, seed=args.seed, meta={"dataset": "digits"})
    io.save_model(os.path.join(args.out, "digits.h5"), unet, meta={"dataset": "digits"})
    grid = flow.sample(unet, n=64, solver="heun2", steps=50, seed=args.seed + 1)
    images.save_samples_png(os.path.join(args.out, "digits_samples.png"), grid)
    print(f"wrote {args.out}/: moons.h5, moons_samples.png, moons_data.png, digits.h5, digits_samples.png")


def _evaluate(args):
    from . import datasets, io
    from .eval import compare
    from .io.quantized import read_meta
    _check_input(args.model)
    _check_input(args.quantized, "quantized model file")
    _check_output(args.json)
    _check_distinct([("--json", args.json)], [("the model", args.model), ("the quantized model", args.quantized)])
    if args.config is None:
        model, meta = io.load_model(args.model)
        source = model.parameters()
    else:                               # a weight file (and its quantized version) through --config
        model, _ = _velocity_model(args.model, args, key=args.key)
        meta, source = {}, io.read_arrays(args.model, key=args.key)
    qmodel, kind = _velocity_model(args.quantized, args)
    if type(qmodel) is not type(model) or qmodel.config() != model.config():
        raise FmqError(f"{args.quantized} is not a quantized version of {args.model} (other model class or config)")
    if _is_quantized(args.quantized):
        _check_source(args.model, source, args.quantized, read_meta(args.quantized), "evaluate")
    name = args.dataset or meta.get("dataset")
    if not name:
        raise FmqError(f"{args.model} does not record its dataset; pass --dataset")
    name = datasets.canonical(name)
    data = datasets.load(name, n=2 * args.n, seed=args.seed + 1) if name in datasets.TOYS else \
        datasets.load(name, seed=args.seed + 1)
    if args.likelihood < 0:
        raise FmqError(f"--likelihood must be >= 0, got {args.likelihood}")
    res = compare(model, qmodel, data, n=args.n, solver=args.solver, steps=args.steps, seed=args.seed,
                  likelihood=min(args.likelihood, args.n))
    res.update(model=args.model, quantized=args.quantized, quantizer=kind, dataset=name)
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as fh:
            json.dump(res, fh, indent=1)
    print(f"{args.quantized} ({kind}) vs {args.model} on {name}, {args.n} points, {args.solver} {args.steps} steps")
    print(f"  velocity at t=0: RMS error {res['rmse']:.4g}, relative {res['rel_error']:.4g}"
          + (f", PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f}" if "psnr" in res else ""))
    print(f"  samples from the same noise: RMS drift {res['drift']:.4g}")
    print(f"  sliced-W2 to data: float {res['sw2_float']:.4g}, quantized {res['sw2_quantized']:.4g} "
          f"(two data draws: {res['sw2_data']:.4g})")
    print(f"  MMD^2 to data (bandwidth {res['mmd_bandwidth']:.3g}): float {res['mmd_float']:.3g}, "
          f"quantized {res['mmd_quantized']:.3g}")
    if "bits_per_dim" in res:
        b = res["bits_per_dim"]
        print(f"  bits/dim on {b['n']} data points ({b['method']}): float {b['float']:.4g}, quantized "
              f"{b['quantized']:.4g} (difference {b['quantized_minus_float']:+.3g}, 95% [{b['ci'][0]:+.3g}, "
              f"{b['ci'][1]:+.3g}])")


def _bench(args):
    from . import bench
    from ._memory import check_memory, memory_budget
    if args.input:
        _check_input(args.input, "weight file")
        if _is_quantized(args.input):
            raise FmqError(f"{args.input} is already quantized; bench the float model or weight file it came from")
        arrays, _ = _read_named_arrays(args.input)
    else:
        per_weight = 24          # float32 weights, their copy, dequantized output, sort scratch, codes
        check_memory(per_weight * args.params, "the synthetic weights and their quantization", "--params",
                     args.params, largest=memory_budget() // per_weight)
        arrays = bench.synthetic_state_dict(args.params, seed=args.seed)
    methods = _split_list(args.methods)
    for m in methods:
        if m not in bench.METHODS:
            raise FmqError(f"--methods: {m!r} is not one of {', '.join(bench.METHODS)}")
    if args.repeat < 1:
        raise FmqError(f"--repeat must be >= 1, got {args.repeat}")
    rows = bench.time_methods(arrays, bits=args.bits, methods=methods, repeat=args.repeat,
                              progress=lambda line: print(line, file=sys.stderr, flush=True))
    n = sum(np.asarray(a).size for a in arrays.values() if np.asarray(a).dtype.kind == "f")
    print(bench.table(rows, n, args.bits))


def _reproduce(args):
    from . import reproduce
    if args.quick:
        for flag, value in (("--datasets", args.datasets), ("--bits", args.bits), ("--scale", args.scale)):
            if value is not None:
                raise FmqError(f"--quick sets {flag} itself; drop {flag} or --quick")
        q = reproduce.QUICK
        args.datasets, args.bits, args.scale = ",".join(q["datasets"]), ",".join(map(str, q["bits"])), q["scale"]
    args.datasets = args.datasets or ",".join(reproduce.DATASETS)
    args.bits = args.bits or ",".join(map(str, reproduce.BITS))
    args.scale = args.scale or "default"
    datasets, bits, methods = _split_list(args.datasets), _parse_bits(args.bits), _split_list(args.methods)
    reproduce.check_args(datasets, bits, methods, args.scale, args.seed)     # fail before creating folders
    reproduce.check_models(datasets, args.models)
    os.makedirs(args.out, exist_ok=True)
    _check_output(os.path.join(args.out, "report.md"))
    command = (f"fmq-np reproduce --out {args.out} --datasets {args.datasets} --bits {args.bits} "
               f"--methods {args.methods} --scale {args.scale} --seed {args.seed}"
               + (f" --models {args.models}" if args.models else ""))
    reproduce.run(args.out, datasets=datasets, bits=bits, methods=methods, scale=args.scale, seed=args.seed,
                  progress=True, command=command, models_dir=args.models)
    print(f"wrote {os.path.join(args.out, 'report.md')}, results.json and PNGs")


def _split_list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_bits(text):
    try:
        return [int(b) for b in _split_list(text)]
    except ValueError:
        raise FmqError(f"--bits must be comma-separated integers in 1..8, got {text!r}") from None


def _read_named_arrays(path):
    """Named float arrays of ``path`` and, for an fmq_np checkpoint, its model class/config (to rebuild it)."""
    from . import io
    if _is_fmq_model(path):
        model, _ = io.load_model(path)
        return model.parameters(), {"model_class": type(model).__name__, "model_config": model.config()}
    from .io.importers import read_arrays
    return read_arrays(path), {}


def _is_fmq_model(path):
    return _fmq_format(path) == "fmq_np.model"


def _is_quantized(path):
    return _fmq_format(path) == "fmq_np.quantized"


def _fmq_format(path):
    """The fmq_np format name of an HDF5 file, or None for any other file."""
    from . import io
    from .errors import FormatError
    if not path.endswith((".h5", ".hdf5")):
        return None
    try:
        return io.file_format(path)
    except FormatError:
        return None


def _quantize(args):
    from . import io, quant
    _check_output(args.out)
    _check_input(args.input, "weight file")
    _check_distinct([("--out", args.out)], [("the input", args.input)])
    if _is_quantized(args.input):
        raise FmqError(f"{args.input} is already quantized; quantize the float model or weight file it came from")
    if not args.calibrate and not _is_fmq_model(args.input):
        return _quantize_stream(args)
    if args.key is not None:
        raise FmqError(f"--key picks an entry of a torch checkpoint; {args.input} is an fmq_np model")
    if args.scheduler is not None or args.workers is not None:
        raise FmqError("--scheduler and --workers spread a weight file's tensors (.safetensors, index.json, .npz, "
                       ".pth, plain .h5), not an fmq_np model or --calibrate")           # weight files: tensor by tensor (fmq_np.quant.stream)
    if args.resume:
        raise FmqError("--resume continues a streamed weight file (.safetensors, index.json, .npz, .pth, plain "
                       ".h5), not an fmq_np model or --calibrate")
    arrays, origin = _read_named_arrays(args.input)
    not_read = _h5_datasets_not_read(args.input, arrays) if not origin else []
    if not any(np.asarray(a).dtype.kind == "f" for a in arrays.values()):
        raise FmqError(f"{args.input}: no float tensors to quantize"
                       + (f" (found only {len(arrays)} non-float arrays)" if arrays else " (the file holds none)"))
    if args.calibrate:          # runs the float network along its trajectories: needs an fmq_np model file
        model, _ = io.load_model(args.input)
        cal = quant.calibrate(model, n=args.calib_n, seed=0)
        qm = quant.quantize_model(model.parameters(), bits=args.bits, method=args.method, calibration=cal)
    else:
        qm = quant.quantize_model(arrays, bits=args.bits, method=args.method, granularity=args.granularity,
                                  group_size=args.group_size, paper_compat=args.paper_compat)
    qm.meta.update(origin, source=os.path.basename(args.input))
    io.save(args.out, qm)
    print(_report_table(qm.report))
    for name, sens in getattr(qm, "sensitivity", {}).items():
        print(f"sensitivity {name}: " + ", ".join(f"{b} bits {s:.3e}" for b, s in sens.items())
              + f" (quantized at {qm.meta['calibrated']['widths'].get(name, 'float')})")
    for name, why in not_read:
        print(f"skipped, not written: {name} ({why})")
    before = sum(row["bytes_before"] for row in qm.report)
    after = sum(row["bytes_after"] for row in qm.report)
    n_quantized = sum(row["bits"] is not None for row in qm.report)
    size_in, size_out = os.path.getsize(args.input), os.path.getsize(args.out)
    print(f"{len(qm.report)} tensors ({n_quantized} quantized, {len(qm.report) - n_quantized} kept as they are"
          + (f", {len(not_read)} datasets skipped" if not_read else "") + f"); weights {before} -> {after} bytes "
          f"({before / max(after, 1):.2f}x, codes and codebooks only)")
    print(f"on disk: {args.input} {size_in} bytes -> {args.out} {size_out} bytes "
          f"({_ratio_text(size_in, size_out)}, file overhead included)")


def _quantize_stream(args):
    """``fmq-np quantize`` of a weight file through :func:`fmq_np.quant.quantize_file` (bounded memory, --resume,
    --scheduler / --workers)."""
    from . import quant
    from ._cluster import connect
    if args.scheduler is not None and args.workers is not None:
        raise FmqError("give --scheduler (a Dask cluster) or --workers (local processes), not both")
    if args.workers is not None and args.workers < 1:
        raise FmqError(f"--workers must be >= 1, got {args.workers}")
    client = connect(args.scheduler) if args.scheduler is not None else None
    names = []
    try:
        rep = quant.quantize_file(args.input, args.out, bits=args.bits, method=args.method,
                                  granularity=args.granularity, group_size=args.group_size,
                                  paper_compat=args.paper_compat, resume=args.resume, key=args.key,
                                  client=client, workers=args.workers,
                                  progress=lambda done, total, name, nbytes: names.append(name),
                                  meta={"source": os.path.basename(args.input)})
    finally:
        if client is not None:
            client.close()
    print(_report_table(rep["rows"]))
    not_read = _h5_datasets_not_read(args.input, set(names))
    for name, why in not_read:
        print(f"skipped, not written: {name} ({why})")
    rows = rep["rows"]
    before, after = sum(r["bytes_before"] for r in rows), sum(r["bytes_after"] for r in rows)
    print(f"{rep['tensors']} tensors ({rep['quantized']} quantized, {len(rows) - rep['quantized']} kept as they are"
          + (f", {rep['resumed']} resumed from the partial output" if rep["resumed"] else "")
          + (f", {len(not_read)} datasets skipped" if not_read else "")
          + f"); weights {before} -> {after} bytes ({before / max(after, 1):.2f}x, codes and codebooks only)"
          + (f" at {rep['mb_per_s']:.1f} MB/s" if rep["seconds"] > 0 else ""))
    more_in, more_out = len(rep["files_in"]) - 1, len(rep["files_out"]) - 1
    print(f"on disk: {args.input}" + (f" (+{more_in} shards)" if more_in else "") + f" {rep['bytes_in']} bytes -> "
          f"{args.out}" + (f" (+{more_out} shards)" if more_out else "") + f" {rep['bytes_out']} bytes "
          f"({_ratio_text(rep['bytes_in'], rep['bytes_out'])}, file overhead included)")


def _ratio_text(size_in, size_out):
    if size_out <= size_in:
        return f"{size_in / max(size_out, 1):.2f}x smaller"
    return f"{size_out / max(size_in, 1):.2f}x LARGER than the input"


def _h5_datasets_not_read(path, arrays):
    """``(name, why)`` of the datasets of a plain HDF5 input that :func:`read_arrays` does not return (integer,
    complex, string, compound ...): listed in the report instead of vanishing."""
    if not path.endswith((".h5", ".hdf5")):
        return []
    import h5py
    found = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.append((name, f"{obj.dtype} {obj.shape} dataset, not float")) if
                         isinstance(obj, h5py.Dataset) and name not in arrays else None)
    except (OSError, ValueError, RuntimeError, TypeError):
        return []
    return found


def _report_table(rows):
    """The per-tensor quantization report as aligned text columns."""
    columns = [("name", "{}"), ("shape", "{}"), ("bits", "{}"), ("method", "{}"), ("mse", "{:.3e}"),
               ("w2", "{:.3e}"), ("levels_used", "{}"), ("bits_per_weight", "{:.3f}"),
               ("bytes_before", "{}"), ("bytes_after", "{}"), ("skipped", "{}")]
    cells = [[name for name, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(name) is None else fmt.format(row[name]) for name, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _save_npy(path, array):
    from ._atomic import atomic_path
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def build_parser():
    from .flow.solvers import SOLVERS
    from .quant.tensor import GRANULARITIES, METHODS
    parser = argparse.ArgumentParser(prog="fmq-np", description="Flow-matching models and their low-bit "
                                     "optimal-transport quantization, in NumPy + Numba.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a flow-matching model and save it as HDF5",
                       description="Train a velocity model by flow matching (CondOT path) and save it as HDF5.")
    p.add_argument("--dataset", required=True, help="2-D data for --model mlp: moons, 8gaussians, checkerboard, "
                   "swissroll; images for --model unet: digits, mnist, fashion, cifar-standin, faces, "
                   "imagenet-standin")
    p.add_argument("--model", choices=("mlp", "unet"), default="mlp", help="velocity network (default mlp)")
    p.add_argument("--steps", type=int, default=5000, help="training steps (default 5000)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of data, init and training (default 0)")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (default 256)")
    p.add_argument("--depth", type=int, default=4, help="MLP hidden layers (default 4)")
    p.add_argument("--width", type=int, default=32, help="U-Net base channels (default 32)")
    p.add_argument("--n-data", type=int, default=20000, help="2-D points drawn for training (default 20000)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay, 0 to disable (default 0.999)")
    p.add_argument("--schedule", choices=("constant", "linear", "cosine"), default="constant",
                   help="learning-rate schedule (default constant)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    p.add_argument("--times", choices=("uniform", "skewed"), default="uniform",
                   help="time sampler: uniform or the paper's skewed one (default uniform)")
    p.add_argument("--coupling", choices=("ot",), default=None, help="minibatch OT pairing of noise and data")
    p.add_argument("--checkpoint", help="HDF5 file written periodically and on Ctrl-C, for --resume")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint when it exists (the same settings, or an error naming them)")
    p.add_argument("--overwrite", action="store_true",
                   help="without --resume: replace an existing --checkpoint (refused otherwise)")
    p.add_argument("--out", required=True, help="output model file (.h5)")
    p.set_defaults(run=_train)

    p = sub.add_parser("sample", help="draw samples from a trained (or quantized) model",
                       description="Integrate a model's velocity from Gaussian noise to data.")
    p.add_argument("model", help="model file (.h5): a float checkpoint or a quantized model; or a weight file "
                                 "(.pth, .safetensors, .npz) with --config")
    p.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--solver", choices=SOLVERS, default="heun2", help="ODE solver (default heun2)")
    p.add_argument("--steps", type=int, default=50,
                   help="solver steps (default 50); dopri5 ignores it: it picks its own steps from --atol/--rtol")
    p.add_argument("--atol", type=_positive_float, default=1e-5, help="dopri5 absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=_nonnegative_float, default=1e-5, help="dopri5 relative tolerance (default 1e-5)")
    p.add_argument("--seed", type=_seed, default=0, help="noise seed (default 0)")
    p.add_argument("--out", help="samples as .npy")
    p.add_argument("--png", help="picture of the samples: image grid, or density map of 2-D points")
    _add_external_options(p)
    p.set_defaults(run=_sample)

    p = sub.add_parser("quantize", help="quantize the weights of a model or of any weight file",
                       description="Quantize every float tensor of an fmq_np model (.h5), a .npz, a .safetensors "
                                   "or another tool's HDF5 file, print the per-tensor report, write a packed HDF5.")
    p.add_argument("input", help="fmq_np model .h5, .npz, .safetensors, a sharded *.safetensors.index.json, a torch "
                                 ".pth, or .h5/.hdf5 of float datasets (weight files are read tensor by tensor)")
    p.add_argument("--bits", type=lambda s: int(s) if s.strip().lstrip("+-").isdigit() else float(s), default=4,
                   help="bits per weight, 1-8 (default 4); with --calibrate a fractional average (e.g. 2.5) mixes "
                        "the widths 2-4 by measured sensitivity")
    p.add_argument("--method", choices=METHODS, default="ot",
                   help="quantizer (default ot: the paper's equal-mass optimal transport)")
    p.add_argument("--calibrate", action="store_true",
                   help="calibrate along the float model's sampling trajectories (an fmq_np model file): GPTQ-style "
                        "error feedback through each layer's input Hessian; prints each tensor's sensitivity")
    p.add_argument("--calib-n", type=int, default=64, help="trajectories for --calibrate (default 64)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="channel",
                   help="one codebook per tensor, per output channel (axis 0) or per group (default channel)")
    p.add_argument("--group-size", type=int, default=None, help="values per group for --granularity group")
    p.add_argument("--paper-compat", action="store_true",
                   help="reproduce the published code exactly: its skip rule, 1-D tensors whole and its own NumPy "
                        "arithmetic (the dequantized weights are bit-identical to its output on this machine)")
    p.add_argument("--key", help="torch checkpoint only: the entry to quantize, e.g. 'model' for flow_matching's "
                                 "{'model', 'optimizer', 'args'} (names are then relative to it)")
    p.add_argument("--out", required=True,
                   help="output: packed quantized model (.h5), or dequantized weights under the input's names and "
                        "dtypes (.safetensors; sharded like a sharded input, with its .safetensors.index.json)")
    p.add_argument("--resume", action="store_true",
                   help="continue the partial output (OUT.partial) of an interrupted run with the same settings")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="quantize on a Dask cluster (pip install 'fmq_np[dask]'), one task per tensor, e.g. "
                        "tcp://host:8786; input and output on a file system every worker sees; same output")
    p.add_argument("--workers", type=int, help="quantize in N local processes (no Dask); same output")
    p.set_defaults(run=_quantize)

    p = sub.add_parser("evaluate", help="measure a quantized model against its float model on real data",
                       description="The paper's velocity probe (both networks at t=0 on real data: RMS and "
                                   "relative error, PSNR/SSIM for images) and samples of both models from the same "
                                   "noise (RMS drift, sliced-W2 distance and MMD^2 to data).")
    p.add_argument("model", help="float model (.h5), or a weight file with --config")
    p.add_argument("quantized", help="its quantized version (.h5 from fmq-np quantize of that model or file; with "
                                     "--config also a dequantized .safetensors)")
    p.add_argument("--dataset", help="data to probe with (default: the dataset the model was trained on)")
    p.add_argument("-n", type=int, default=256, help="data points and noise draws (default 256)")
    p.add_argument("--solver", choices=SOLVERS, default="heun2", help="ODE solver (default heun2)")
    p.add_argument("--steps", type=int, default=20, help="solver steps (default 20)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of data points and noise (default 0)")
    p.add_argument("--likelihood", type=int, default=32, metavar="N",
                   help="bits/dim of both models on N of the -n data points (images: Hutchinson, pixel units; 2-D: "
                        "exact divergence), with the paired difference; 0 skips it (default 32)")
    p.add_argument("--json", help="also write the figures as JSON here")
    _add_external_options(p)
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("bench", help="time every quantizer on this machine (a weight file or synthetic weights)",
                       description="Quantize and dequantize every float tensor per channel with each method "
                                   "(paper_compat for the paper's four), and print the first run (kernel loading "
                                   "or compiling included), the median of --repeat runs and the throughput, "
                                   "against a plain copy of the same weights.")
    p.add_argument("input", nargs="?", help="weight file (fmq_np .h5, .npz, .safetensors, HDF5); default: "
                                            "a synthetic U-Net-like state dict of --params weights")
    p.add_argument("--params", type=int, default=1_000_000, help="synthetic weights (default 1000000)")
    p.add_argument("--bits", type=int, choices=range(1, 9), default=3, metavar="{1..8}", help="bits (default 3)")
    p.add_argument("--methods", default="ot,uniform,pwl,log2,ot-opt", help="comma-separated methods (default all)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per method (default 3)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the synthetic weights (default 0)")
    p.set_defaults(run=_bench)

    p = sub.add_parser("bounds", help="theoretical error bounds of a quantized model vs measurement",
                       description="Per-tensor weight errors (measured vs predicted), the certified velocity-error "
                                   "and Lipschitz bounds, and the flow-level drift bound against the measured drift "
                                   "of samples from the same noise.")
    p.add_argument("model", help="float model (.h5)")
    p.add_argument("quantized", help="its quantized version (.h5, from fmq-np quantize)")
    p.add_argument("-n", type=int, default=256, help="noise draws for the measured drift (default 256)")
    p.add_argument("--solver", choices=SOLVERS[:4], default="euler", help="fixed-step solver (default euler)")
    p.add_argument("--steps", type=int, default=20, help="solver steps (default 20)")
    p.add_argument("--seed", type=_seed, default=0, help="noise seed (default 0)")
    p.add_argument("--splits", type=int, default=8,
                   help="MLP: sub-boxes per axis of the interval bounds; U-Net: pieces of t in [0, 1] (default 8)")
    p.add_argument("--margin", type=_nonnegative_float, default=0.5,
                   help="widening of the input box, >= 0 (default 0.5)")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(run=_bounds)

    p = sub.add_parser("demo", help="train, sample and draw a 2-D toy and the 8x8 digits (the embedded data)",
                       description="Train an MLP on moons and a U-Net on 8x8 digits, sample both, report the "
                                   "sliced-W2 distance to fresh data, and write models and PNGs to --out.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--mlp-steps", type=int, default=5000, help="MLP training steps (default 5000)")
    p.add_argument("--unet-steps", type=int, default=2000, help="U-Net training steps (default 2000)")
    p.add_argument("--seed", type=_seed, default=0, help="seed (default 0)")
    p.set_defaults(run=_demo)

    from .reproduce import BITS, CALIBRATED, DATASETS, METHODS, QUICK, SCALES
    p = sub.add_parser("reproduce", help="the paper's five-dataset sweep on the shipped models -> report.md",
                       description="Quantize the shipped float U-Net of each dataset (data/models; nothing is "
                                   "trained) with every method at every bit width and measure weight MSE, velocity "
                                   "PSNR/SSIM at t=0, the Frechet distance of samples in a shipped classifier's "
                                   "features (with its real-data floor, paired bootstrap intervals and differences "
                                   "to ot and to the float model), sample drift and latent stability; write "
                                   "OUT/report.md with a verdict on the paper's claim per dataset, OUT/results.json, "
                                   "sample grids and a plot. Ctrl-C keeps the results so far. Measured on 2 cores: "
                                   "the default run 77 min of one-core work, --quick 8 min.")
    p.add_argument("--out", default="runs/repro", help="output folder (default runs/repro)")
    p.add_argument("--quick", action="store_true",
                   help=f"the quick run: datasets {','.join(QUICK['datasets'])}, bits "
                        f"{','.join(map(str, QUICK['bits']))}, scale {QUICK['scale']}")
    p.add_argument("--datasets", default=None, help=f"comma-separated datasets (default {','.join(DATASETS)})")
    p.add_argument("--bits", default=None,
                   help=f"comma-separated bit widths in 1..8 (default {','.join(map(str, BITS))})")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated quantizers (default {','.join(METHODS)}); the paper's ot, uniform, "
                        "pwl, log2 run with paper_compat=True, ot-opt is the exact W2-optimal codebook; calibrated "
                        f"along the flow (one calibration per dataset): {','.join(CALIBRATED)} (ef: error "
                        "feedback, fisher: Fisher-weighted codebook, bc: bias correction)")
    p.add_argument("--scale", choices=tuple(SCALES), default=None,
                   help="run size: tiny (smoke test, seconds), quick (500 samples, one noise seed), default "
                        "(1000 samples, 3 noise seeds at 2-3 bits, the paper's sampler for the float model on 300 "
                        "of them, 100 on the stand-ins), paper "
                        "(2000 samples, the paper's samplers everywhere: hours)")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="folder of <dataset>.h5 float models and features_<dataset>.h5 nets (default: the shipped "
                        "data/models)")
    p.add_argument("--seed", type=int, default=0, help="offset of every noise draw (default 0)")
    p.set_defaults(run=_reproduce)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings
    try:
        with warnings.catch_warnings():           # warnings as one line each: "fmq-np CMD: warning: ..."
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *rest, **kw: _warn(args.command, str(message))
            args.run(args)
    except FmqError as exc:
        print(f"fmq-np {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"fmq-np {args.command}: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"fmq-np {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
