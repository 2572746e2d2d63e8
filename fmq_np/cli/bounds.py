"""``fmq-np bounds``: the theoretical error bounds of a quantized model against measurement."""
from ._common import check_model_pair, nonnegative_float, parse_seed


def add_bounds_parser(sub):
    """The ``bounds`` subcommand on ``sub`` (argparse subparsers)."""
    from ..flow.solvers import FIXED_STEP
    p = sub.add_parser("bounds", help="theoretical error bounds of a quantized model vs measurement",
                       description="Per-tensor weight errors (measured vs predicted), the certified velocity-error "
                                   "and Lipschitz bounds, and the flow-level drift bound against the measured drift "
                                   "of samples from the same noise.")
    p.add_argument("model", help="float model (.h5)")
    p.add_argument("quantized", help="its quantized version (.h5, from fmq-np quantize)")
    p.add_argument("-n", type=int, default=256, help="noise draws for the measured drift (default 256)")
    p.add_argument("--solver", choices=FIXED_STEP, default="euler", help="fixed-step solver (default euler)")
    p.add_argument("--steps", type=int, default=20, help="solver steps (default 20)")
    p.add_argument("--seed", type=parse_seed, default=0, help="noise seed (default 0)")
    p.add_argument("--splits", type=int, default=8,
                   help="MLP: sub-boxes per axis of the interval bounds; U-Net: pieces of t in [0, 1] (default 8)")
    p.add_argument("--margin", type=nonnegative_float, default=0.5,
                   help="widening of the input box, >= 0 (default 0.5)")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(run=_bounds)


def _bounds(args):
    from ..theory.cli_bounds import run_bounds
    check_model_pair(args)
    print(run_bounds(args.model, args.quantized, json_out=args.json, n_samples=args.n, solver=args.solver,
                     steps=args.steps, seed=args.seed, splits=args.splits, margin=args.margin))
