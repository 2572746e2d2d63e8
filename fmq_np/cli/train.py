"""``fmq-np train``: train a velocity model on a dataset by flow matching and save it."""
import os

import numpy as np

from ..errors import InputError
from ._common import check_distinct, check_output, parse_seed, warn

#: batch size above which --coupling ot warns: the exact assignment costs O(batch^3) per step
OT_BATCH_WARN = 1024


def add_train_parser(sub):
    """The ``train`` subcommand on ``sub`` (argparse subparsers)."""
    from ..datasets import IMAGES, TOYS
    from ..flow.coupling import COUPLINGS
    from ..flow.paths import TIME_SAMPLERS
    from ..nn import ARCHITECTURES
    from ..nn.optim import SCHEDULES
    p = sub.add_parser("train", help="train a flow-matching model and save it as HDF5",
                       description="Train a velocity model by flow matching (CondOT path) and save it as HDF5.")
    p.add_argument("--dataset", required=True, help=f"2-D data for --model mlp: {', '.join(TOYS)}; images for "
                                                    f"--model unet: {', '.join(IMAGES)}")
    p.add_argument("--model", choices=tuple(ARCHITECTURES), default="mlp", help="velocity network (default mlp)")
    p.add_argument("--steps", type=int, default=5000, help="training steps (default 5000)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--seed", type=parse_seed, default=0, help="seed of data, init and training (default 0)")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (default 256)")
    p.add_argument("--depth", type=int, default=4, help="MLP hidden layers (default 4)")
    p.add_argument("--width", type=int, default=32, help="U-Net base channels (default 32)")
    p.add_argument("--n-data", type=int, default=20000, help="2-D points drawn for training (default 20000)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay, 0 to disable (default 0.999)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning-rate schedule (default constant)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    p.add_argument("--times", choices=tuple(TIME_SAMPLERS), default="uniform",
                   help="time sampler: uniform or the paper's skewed one (default uniform)")
    p.add_argument("--coupling", choices=COUPLINGS, default=None, help="minibatch OT pairing of noise and data")
    p.add_argument("--checkpoint", help="HDF5 file written periodically and on Ctrl-C, for --resume")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint when it exists (the same settings, or an error naming them)")
    p.add_argument("--overwrite", action="store_true",
                   help="without --resume: replace an existing --checkpoint (refused otherwise)")
    p.add_argument("-o", "--out", required=True, help="output model file (.h5)")
    p.set_defaults(run=_train)


def _train(args):
    from .. import datasets, flow, io, nn
    check_output(args.out, args.checkpoint)
    check_distinct([("--out", args.out)], [("--checkpoint", args.checkpoint)])
    if args.resume and args.checkpoint is None:
        raise InputError("--resume needs --checkpoint FILE (the checkpoint to continue)")
    if args.checkpoint is not None and os.path.exists(args.checkpoint) and not (args.resume or args.overwrite):
        raise InputError(f"--checkpoint {args.checkpoint} exists: pass --resume to continue that run, or --overwrite "
                       "to start over and replace it")
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--n-data", args.n_data),
                        ("--hidden", args.hidden), ("--depth", args.depth), ("--width", args.width),
                        ("--checkpoint-every", args.checkpoint_every)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    name = datasets.canonical(args.dataset)
    if args.coupling == "ot" and args.batch_size > OT_BATCH_WARN:
        warn("train", f"--coupling ot solves an exact {args.batch_size}x{args.batch_size} assignment every step "
                      f"(cost ~batch^3: seconds to tens of seconds a step above {OT_BATCH_WARN}); a smaller "
                      "--batch-size is much faster")
    nn.check_fits(name, args.model, name="--model")
    shape = datasets.data_shape(name)
    _train_memory(args, shape)
    data = datasets.load(name, n=args.n_data if args.model == "mlp" else None, seed=args.seed)
    model = nn.build_for_dataset(name, args.model, hidden=args.hidden, depth=args.depth, width=args.width,
                                 seed=args.seed)
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


def _train_memory(args, shape):
    """InputError before building anything when the model or a training step of these sizes cannot fit in memory;
    ``shape``: that of one sample, ``(dim,)`` for the MLP's points, ``(C, H, W)`` for the U-Net's images."""
    from .._memory import check_memory, memory_budget
    f32 = 4
    if args.model == "mlp":      # MLP: weights (+ grads, Adam, EMA, copies: x8) and per-sample activations
        dim, = shape
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
        c, size, _ = shape
        w = args.width
        n_params = 110 * w * w + 20 * w * c
        check_memory(8 * f32 * n_params, f"a U-Net of width {w}", "--width", w)
        per_sample = f32 * 40 * w * size * size * max(1, c)
        fixed = 8 * f32 * n_params
        check_memory(fixed + per_sample * args.batch_size, f"a training step of a width-{w} U-Net on {size}x{size} "
                     "images", "--batch-size", args.batch_size, largest=int((memory_budget() - fixed) // per_sample))
