"""``fmq-np evaluate``: measure a quantized model against its float model on real data."""
from .._atomic import write_json
from ..errors import InputError
from ._common import check_model_pair, parse_seed
from ._files import add_external_options, is_quantized, velocity_model


def add_evaluate_parser(sub):
    """The ``evaluate`` subcommand on ``sub`` (argparse subparsers)."""
    from ..flow.solvers import SOLVERS
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
    p.add_argument("--seed", type=parse_seed, default=0, help="seed of data points and noise (default 0)")
    p.add_argument("--likelihood", type=int, default=32, metavar="N",
                   help="bits/dim of both models on N of the -n data points (images: Hutchinson, pixel units; 2-D: "
                        "exact divergence), with the paired difference; 0 skips it (default 32)")
    p.add_argument("--json", help="also write the figures as JSON here")
    add_external_options(p)
    p.set_defaults(run=_evaluate)


def _evaluate(args):
    from .. import datasets, io
    from ..eval import compare
    from ..io.quantized import read_meta
    from ..quant.model import check_source
    check_model_pair(args)
    if args.config is None:
        model, meta = io.load_model(args.model)
        source = model.parameters()
    else:                               # a weight file (and its quantized version) through --config
        model, _ = velocity_model(args.model, args, key=args.key)
        meta, source = {}, io.read_arrays(args.model, key=args.key)
    qmodel, kind = velocity_model(args.quantized, args)
    if type(qmodel) is not type(model) or qmodel.config() != model.config():
        raise InputError(f"{args.quantized} is not a quantized version of {args.model} (other model class or config)")
    if is_quantized(args.quantized):
        check_source(args.model, source, args.quantized, read_meta(args.quantized))
    name = args.dataset or meta.get("dataset")
    if not name:
        raise InputError(f"{args.model} does not record its dataset; pass --dataset")
    name = datasets.canonical(name)
    data = datasets.load(name, n=2 * args.n, seed=args.seed + 1) if name in datasets.TOYS else \
        datasets.load(name, seed=args.seed + 1)
    if args.likelihood < 0:
        raise InputError(f"--likelihood must be >= 0, got {args.likelihood}")
    res = compare(model, qmodel, data, n=args.n, solver=args.solver, steps=args.steps, seed=args.seed,
                  likelihood=min(args.likelihood, args.n))
    res.update(model=args.model, quantized=args.quantized, quantizer=kind, dataset=name)
    if args.json:
        write_json(args.json, res)
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
