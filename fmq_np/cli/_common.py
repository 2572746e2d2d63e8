"""What every ``fmq-np`` command shares: checks of input and output paths made before any long work, the one-line
warning, and the argparse types of seeds and tolerances."""
import argparse
import os
import sys

import numpy as np

from ..errors import InputError


def check_output(*paths):
    """Fail before any long work when an output file could not be written: it must not be a folder, and its folder
    must exist and take a new file (tried for real: permission bits do not tell root or read-only mounts)."""
    import tempfile
    for path in paths:
        if path is None:
            continue
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory; give a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise InputError(f"{path}: folder {folder} does not exist")
        try:
            with tempfile.TemporaryFile(dir=folder, prefix=".fmq_np-probe-"):
                pass
        except OSError as exc:
            raise InputError(f"{path}: folder {folder} is not writable ({exc.strerror or exc})") from None


def check_spread(args):
    """``--scheduler`` / ``--workers`` of a command that spreads its work: not both, and at least one worker."""
    if args.scheduler is not None and args.workers is not None:
        raise InputError("give --scheduler (a Dask cluster) or --workers (local processes), not both")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")


def check_input(path, what="model file"):
    """A one-line error for an input that is a folder or missing (before any loader sees it)."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a {what}")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")


def same_file(a, b):
    """True when paths ``a`` and ``b`` name one file (links and relative paths resolved)."""
    if a is None or b is None:
        return False
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_distinct(outputs, inputs):
    """Refuse an output (``(flag, path)``) that is the same file as an input (``(label, path)``): it would be
    overwritten."""
    for flag, out in outputs:
        for label, path in inputs:
            if same_file(out, path):
                raise InputError(f"{flag} {out} is the same file as {label}: it would be overwritten; "
                               f"choose another {flag}")


def check_model_pair(args):
    """The paths of a command that compares a float model with its quantized version: ``args.model`` and
    ``args.quantized`` must be files, ``args.json`` (optional) writable and neither of them."""
    check_input(args.model)
    check_input(args.quantized, "quantized model file")
    check_output(args.json)
    check_distinct([("--json", args.json)], [("the model", args.model), ("the quantized model", args.quantized)])


def warn(command, text):
    """Print ``text`` on stderr as the one-line warning ``fmq-np COMMAND: warning: TEXT``."""
    print(f"fmq-np {command}: warning: {text}", file=sys.stderr, flush=True)


def parse_seed(text):
    """argparse type of --seed: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def finite_float(strict):
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


positive_float = finite_float(strict=True)
nonnegative_float = finite_float(strict=False)


def split_list(text):
    """The non-empty, stripped items of the comma-separated ``text``."""
    return [item.strip() for item in text.split(",") if item.strip()]
