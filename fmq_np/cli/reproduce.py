"""``fmq-np reproduce``: the paper's five-dataset sweep on the shipped models, written as a report."""
import os
import signal

from ..errors import InputError
from ._common import check_output, check_spread, split_list


def add_reproduce_parser(sub):
    """The ``reproduce`` subcommand on ``sub`` (argparse subparsers)."""
    from ..reproduce import BITS, CALIBRATED, DATASETS, METHODS, QUICK, SCALES, TUNED
    p = sub.add_parser("reproduce", help="the paper's five-dataset sweep on the shipped models -> report.md",
                       description="Quantize the shipped float U-Net of each dataset (data/models; nothing is "
                                   "trained) with every method at every bit width and measure weight MSE, velocity "
                                   "PSNR/SSIM at t=0, the Frechet distance of samples in a shipped classifier's "
                                   "features (with its real-data floor, paired bootstrap intervals and differences "
                                   "to ot and to the float model), sample drift and latent stability; write "
                                   "OUT/report.md with a verdict on the paper's claim per dataset, OUT/results.json, "
                                   "sample grids and a plot. Ctrl-C (or SIGTERM) keeps the results so far. Measured "
                                   "on 2 cores: the default run 30 min with --workers 2; --quick 4.3 min with "
                                   "--workers 2.")
    p.add_argument("-o", "--out", default="runs/repro", help="output folder (default runs/repro)")
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
                        "feedback, fisher: Fisher-weighted codebook, bc: bias correction); their codebooks "
                        f"tuned along the flow: {','.join(TUNED)} (tune: codes kept; qat: then the codes free "
                        "too)")
    p.add_argument("--scale", choices=tuple(SCALES), default=None,
                   help="run size: tiny (smoke test, seconds), quick (500 samples, one noise seed), default "
                        "(1000 samples, 3 noise seeds at 2-3 bits, the paper's sampler for the float model on 300 "
                        "of them, 100 on the stand-ins), paper "
                        "(2000 samples, the paper's samplers everywhere: hours)")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="folder of <dataset>.h5 float models and features_<dataset>.h5 nets (default: the shipped "
                        "data/models)")
    p.add_argument("--seed", type=int, default=0, help="offset of every noise draw (default 0)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="measure on a Dask cluster (pip install 'fmq_np[dask]'), one task per method and bit width "
                        "of each dataset, e.g. tcp://host:8786; the same numbers as a serial run")
    p.add_argument("--workers", type=int, metavar="N",
                   help="measure each dataset's (method, bits) rows in N local processes (no Dask), each with "
                        "its share of the CPUs as threads; the same numbers as a serial run")
    p.set_defaults(run=_reproduce)


def _reproduce(args):
    from .. import reproduce
    from .._cluster import connect
    if args.quick:
        for flag, value in (("--datasets", args.datasets), ("--bits", args.bits), ("--scale", args.scale)):
            if value is not None:
                raise InputError(f"--quick sets {flag} itself; drop {flag} or --quick")
        q = reproduce.QUICK
        args.datasets, args.bits, args.scale = ",".join(q["datasets"]), ",".join(map(str, q["bits"])), q["scale"]
    args.datasets = args.datasets or ",".join(reproduce.DATASETS)
    args.bits = args.bits or ",".join(map(str, reproduce.BITS))
    args.scale = args.scale or "default"
    datasets, bits, methods = split_list(args.datasets), _parse_bits(args.bits), split_list(args.methods)
    reproduce.check_args(datasets, bits, methods, args.scale, args.seed)     # fail before creating folders
    check_spread(args)
    reproduce.check_models(datasets, args.models)
    os.makedirs(args.out, exist_ok=True)
    check_output(os.path.join(args.out, "report.md"))
    command = (f"fmq-np reproduce --out {args.out} --datasets {args.datasets} --bits {args.bits} "
               f"--methods {args.methods} --scale {args.scale} --seed {args.seed}"
               + (f" --models {args.models}" if args.models else ""))
    client = connect(args.scheduler) if args.scheduler is not None else None
    previous = signal.signal(signal.SIGTERM, _interrupt)      # kill: keep the rows so far, as Ctrl-C does
    try:
        reproduce.run(args.out, datasets=datasets, bits=bits, methods=methods, scale=args.scale, seed=args.seed,
                      progress=True, command=command, models_dir=args.models, client=client,
                      workers=args.workers)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if client is not None:
            client.close()
    print(f"wrote {os.path.join(args.out, 'report.md')}, results.json and PNGs")


def _interrupt(signum, frame):
    """SIGTERM handler: stop the sweep the way Ctrl-C does (the report of what was measured is written)."""
    raise KeyboardInterrupt("terminated (SIGTERM)")


def _parse_bits(text):
    """The integers of the comma-separated ``--bits`` text (their range is checked by the sweep)."""
    try:
        return [int(b) for b in split_list(text)]
    except ValueError:
        raise InputError(f"--bits must be comma-separated integers in 1..8, got {text!r}") from None
