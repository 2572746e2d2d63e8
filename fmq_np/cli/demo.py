"""``fmq-np demo``: train, sample and draw a 2-D toy and the 8x8 digits (the embedded data)."""
from ._common import check_output, parse_seed


def add_demo_parser(sub):
    """The ``demo`` subcommand on ``sub`` (argparse subparsers)."""
    p = sub.add_parser("demo", help="train, sample and draw a 2-D toy and the 8x8 digits (the embedded data)",
                       description="Train an MLP on moons and a U-Net on 8x8 digits, sample both, report the "
                                   "sliced-W2 distance to fresh data, and write models and PNGs to --out.")
    p.add_argument("-o", "--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--mlp-steps", type=int, default=5000, help="MLP training steps (default 5000)")
    p.add_argument("--unet-steps", type=int, default=2000, help="U-Net training steps (default 2000)")
    p.add_argument("--seed", type=parse_seed, default=0, help="seed (default 0)")
    p.set_defaults(run=_demo)


def _demo(args):
    """The main job on the embedded data (:func:`fmq_np.demo.run`), its folder checked before any training."""
    from .. import demo
    check_output(*demo.output_paths(args.out, name="--out"))
    demo.run(args.out, mlp_steps=args.mlp_steps, unet_steps=args.unet_steps, seed=args.seed, log=print)
    print(f"wrote {args.out}/: {', '.join(demo.FILES)}")
