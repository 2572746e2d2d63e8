"""``fmq-np``: train, sample, quantize, evaluate, bench, bounds, demo and reproduce from the command line.

Every user error ends with a one-line message on stderr and a non-zero exit code (1 for errors of input or
files, 2 for bad command-line usage, 130 for Ctrl-C).

One module per command: ``add_<cmd>_parser(sub)`` declares its options beside ``_<cmd>(args)``, which runs it;
:mod:`._common` holds the path checks and argparse types they share, :mod:`._files` what kind of model file a
command was given.
"""
import argparse
import sys

from ..errors import FmqError
from ._common import warn
from .bench import add_bench_parser
from .bounds import add_bounds_parser
from .demo import add_demo_parser
from .evaluate import add_evaluate_parser
from .quantize import add_quantize_parser
from .reproduce import add_reproduce_parser
from .sample import add_sample_parser
from .train import add_train_parser

#: the subcommands' parser builders, in the order ``fmq-np --help`` lists them
COMMANDS = (add_train_parser, add_sample_parser, add_quantize_parser, add_evaluate_parser, add_bench_parser,
            add_bounds_parser, add_demo_parser, add_reproduce_parser)


def build_parser():
    """The ``fmq-np`` argument parser: one subcommand per entry of :data:`COMMANDS`; ``args.run(args)`` runs it."""
    parser = argparse.ArgumentParser(prog="fmq-np", description="Flow-matching models and their low-bit "
                                     "optimal-transport quantization, in NumPy + Numba.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(sub)
    return parser


def console():
    """The ``fmq-np`` command (console script and ``python -m fmq_np.cli``): :func:`main` in a process of its own,
    with :mod:`fmq_np._allocator`'s malloc settings; exits with its code."""
    from .._allocator import keep_freed_memory
    keep_freed_memory()
    sys.exit(main())


def main(argv=None):
    """Run ``fmq-np`` on ``argv`` (default ``sys.argv[1:]``); returns the exit code (usage errors exit with 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings
    try:
        with warnings.catch_warnings():           # warnings as one line each: "fmq-np CMD: warning: ..."
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *rest, **kw: warn(args.command, str(message))
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

