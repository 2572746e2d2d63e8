"""``fmq-np quantize``: quantize every float tensor of a model or weight file and print the per-tensor report."""
import os

import numpy as np

from ..errors import InputError
from ._common import check_distinct, check_input, check_output, check_spread
from ._files import is_fmq_model, is_quantized, read_named_arrays


def add_quantize_parser(sub):
    """The ``quantize`` subcommand on ``sub`` (argparse subparsers)."""
    from ..quant.tensor import GRANULARITIES, METHODS
    from ..quant.tune import DEFAULT_ITERS
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
    p.add_argument("--calib-n", type=int, default=64,
                   help="trajectories for --calibrate and --tune (default 64); when the model file names its training "
                        "set (fmq-np train records it), training-path pairs on it are added")
    p.add_argument("--tune", action="store_true",
                   help="then tune the codebooks along the float model's sampling trajectories (an fmq_np model "
                        "file): codes and bits kept, levels and float tensors fitted to the float velocity")
    p.add_argument("--tune-iters", type=int, default=DEFAULT_ITERS,
                   help=f"optimiser steps for --tune (default {DEFAULT_ITERS})")
    p.add_argument("--free-codes", action="store_true",
                   help="with --tune: then half as many steps again with the codes free to change (quantization-"
                        "aware distillation, straight-through; the bits per weight stay)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="channel",
                   help="one codebook per tensor, per output channel (axis 0) or per group (default channel)")
    p.add_argument("--group-size", type=int, default=None, help="values per group for --granularity group")
    p.add_argument("--paper-compat", action="store_true",
                   help="reproduce the published code exactly: its skip rule, 1-D tensors whole and its own NumPy "
                        "arithmetic (the dequantized weights are bit-identical to its output on this machine)")
    p.add_argument("--key", help="torch checkpoint only: the entry to quantize, e.g. 'model' for flow_matching's "
                                 "{'model', 'optimizer', 'args'} (names are then relative to it)")
    p.add_argument("-o", "--out", required=True,
                   help="output: packed quantized model (.h5), or dequantized weights under the input's names and "
                        "dtypes (.safetensors; sharded like a sharded input, with its .safetensors.index.json)")
    p.add_argument("--resume", action="store_true",
                   help="continue the partial output (OUT.partial) of an interrupted run with the same settings")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="quantize on a Dask cluster (pip install 'fmq_np[dask]'), one task per tensor, e.g. "
                        "tcp://host:8786; input and output on a file system every worker sees; same output")
    p.add_argument("--workers", type=int, help="quantize in N local processes (no Dask); same output")
    p.set_defaults(run=_quantize)


def _quantize(args):
    from .. import io, quant
    check_output(args.out)
    check_input(args.input, "weight file")
    check_distinct([("--out", args.out)], [("the input", args.input)])
    if is_quantized(args.input):
        raise InputError(f"{args.input} is already quantized; quantize the float model or weight file it came from")
    if args.free_codes and not args.tune:
        raise InputError("--free-codes continues the codebook tuning: add --tune")
    if args.tune and not is_fmq_model(args.input):
        raise InputError(f"--tune runs the float network: it needs an fmq_np model file, and {args.input} is a "
                         "weight file")
    if not args.calibrate and not is_fmq_model(args.input):
        return _quantize_stream(args)            # weight files: tensor by tensor (fmq_np.quant.stream)
    if args.key is not None:
        raise InputError(f"--key picks an entry of a torch checkpoint; {args.input} is an fmq_np model")
    if args.scheduler is not None or args.workers is not None:
        raise InputError("--scheduler and --workers spread a weight file's tensors (.safetensors, index.json, .npz, "
                       ".pth, plain .h5), not an fmq_np model or --calibrate")
    if args.resume:
        raise InputError("--resume continues a streamed weight file (.safetensors, index.json, .npz, .pth, plain "
                       ".h5), not an fmq_np model or --calibrate")
    arrays, origin = read_named_arrays(args.input)
    not_read = _h5_datasets_not_read(args.input, arrays) if not origin else []
    if not any(np.asarray(a).dtype.kind == "f" for a in arrays.values()):
        raise InputError(f"{args.input}: no float tensors to quantize"
                       + (f" (found only {len(arrays)} non-float arrays)" if arrays else " (the file holds none)"))
    model, data = _model_and_data(args.input) if args.calibrate or args.tune else (None, None)
    if args.calibrate:          # runs the float network along its trajectories: needs an fmq_np model file
        cal = quant.calibrate(model, data, n=args.calib_n, seed=0)
        qm = quant.quantize_model(model.parameters(), bits=args.bits, method=args.method, calibration=cal)
    else:
        qm = quant.quantize_model(arrays, bits=args.bits, method=args.method, granularity=args.granularity,
                                  group_size=args.group_size, paper_compat=args.paper_compat)
    if args.tune:
        qm = quant.tune_codebooks(model, qm, data, n=args.calib_n, seed=0, iters=args.tune_iters)
        t = qm.meta["tuned"]
        print(f"tuned: held-out velocity MSE {t['heldout_mse_before']:.4g} -> {t['heldout_mse_after']:.4g}"
              + ("" if t["kept"] else " (no better: the quantizer's codebooks are kept)"))
    if args.free_codes:
        qm = quant.tune_codebooks(model, qm, data, n=args.calib_n, seed=0, iters=max(1, args.tune_iters // 2),
                                  codes="free")
        t = qm.meta["tuned"]
        print(f"free codes: held-out velocity MSE {t['heldout_mse_before']:.4g} -> {t['heldout_mse_after']:.4g}, "
              f"{t['code_changes']} code changes" + ("" if t["kept"] else " (no better: the tuned model is kept)"))
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


def _model_and_data(path):
    """The float model of an fmq_np model file and the training set its metadata names (``fmq-np train`` records
    it), for the training-path pairs of the calibration mix; None when the file names no dataset this package has,
    or one of another sample shape (trajectories alone then). Prints which states the calibration uses, and why."""
    from .. import datasets, io
    from ..flow.shapes import sample_shape
    model, meta = io.load_model(path)
    name = meta.get("dataset")
    if not isinstance(name, str) or name not in datasets.names():
        why = "its metadata names no dataset" if name is None else f"it names {name!r}, not a dataset of fmq_np"
        print(f"calibration states: the model's own trajectories only ({why})")
        return model, None
    data = datasets.load(name)
    if tuple(data.shape[1:]) != tuple(sample_shape(model)):
        print(f"calibration states: the model's own trajectories only (its metadata names {name!r}, whose samples "
              f"are {tuple(data.shape[1:])}, not the model's {tuple(sample_shape(model))})")
        return model, None
    print(f"calibration states: the model's trajectories and training-path pairs on {name!r} (its training set)")
    return model, data


def _quantize_stream(args):
    """``fmq-np quantize`` of a weight file through :func:`fmq_np.quant.quantize_file` (bounded memory, --resume,
    --scheduler / --workers)."""
    from .. import quant
    from .._cluster import connect
    check_spread(args)
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
          + (f" in {rep['seconds']:.1f} s ({rep['mb_per_s']:.3g} MB/s)" if rep["seconds"] > 0 else ""))
    more_in, more_out = len(rep["files_in"]) - 1, len(rep["files_out"]) - 1
    print(f"on disk: {args.input}" + (f" (+{more_in} shards)" if more_in else "") + f" {rep['bytes_in']} bytes -> "
          f"{args.out}" + (f" (+{more_out} shards)" if more_out else "") + f" {rep['bytes_out']} bytes "
          f"({_ratio_text(rep['bytes_in'], rep['bytes_out'])}, file overhead included)")


def _ratio_text(size_in, size_out):
    """How the output size compares with the input's, e.g. ``3.20x smaller``."""
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
