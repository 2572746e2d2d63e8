"""``fmq-np sample``: integrate a model's velocity from noise to data; samples as .npy and a picture."""
import numpy as np

from ..errors import InputError
from ._common import check_distinct, check_input, check_output, nonnegative_float, parse_seed, positive_float
from ._files import add_external_options, velocity_model


def add_sample_parser(sub):
    """The ``sample`` subcommand on ``sub`` (argparse subparsers)."""
    from ..flow.solvers import SOLVERS
    p = sub.add_parser("sample", help="draw samples from a trained (or quantized) model",
                       description="Integrate a model's velocity from Gaussian noise to data.")
    p.add_argument("model", help="model file (.h5): a float checkpoint or a quantized model; or a weight file "
                                 "(.pth, .safetensors, .npz) with --config")
    p.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--solver", choices=SOLVERS, default="heun2", help="ODE solver (default heun2)")
    p.add_argument("--steps", type=int, default=50,
                   help="solver steps (default 50); dopri5 ignores it: it picks its own steps from --atol/--rtol")
    p.add_argument("--atol", type=positive_float, default=1e-5, help="dopri5 absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=nonnegative_float, default=1e-5, help="dopri5 relative tolerance (default 1e-5)")
    p.add_argument("--seed", type=parse_seed, default=0, help="noise seed (default 0)")
    p.add_argument("-o", "--out", help="samples as .npy")
    p.add_argument("--png", help="picture of the samples: image grid, or density map of 2-D points")
    add_external_options(p)
    p.set_defaults(run=_sample)


def _sample(args):
    from .. import flow, images
    from .._memory import check_memory, memory_budget
    from ..flow.shapes import sample_shape
    check_input(args.model)
    check_output(args.out, args.png)
    check_distinct([("--out", args.out), ("--png", args.png)], [("the model", args.model)])
    check_distinct([("--png", args.png)], [("--out", args.out)])
    if args.n < 1:
        raise InputError(f"-n must be >= 1, got {args.n}")
    model, kind = velocity_model(args.model, args, key=args.key)
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


def _save_npy(path, array):
    from .._atomic import atomic_path
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
