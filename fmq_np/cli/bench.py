"""``fmq-np bench``: time every quantizer on this machine, on a weight file or synthetic weights."""
import os
import sys
import tempfile

import numpy as np

from ..errors import InputError
from ._common import check_input, parse_seed, split_list
from ._files import is_quantized, read_named_arrays


def add_bench_parser(sub):
    """The ``bench`` subcommand on ``sub`` (argparse subparsers)."""
    from ..quant.tensor import METHODS
    p = sub.add_parser("bench", help="time every quantizer on this machine (a weight file or synthetic weights)",
                       description="Quantize and dequantize every float tensor per channel with each method "
                                   "(paper_compat for the paper's four), and print the first run (kernel loading "
                                   "or compiling included), the median of --repeat runs and the throughput, "
                                   "against a plain copy of the same weights.")
    p.add_argument("input", nargs="?", help="weight file (fmq_np .h5, .npz, .safetensors, HDF5); default: "
                                            "a synthetic U-Net-like state dict of --params weights")
    p.add_argument("--params", type=int, default=1_000_000, help="synthetic weights (default 1000000)")
    p.add_argument("--bits", type=int, choices=range(1, 9), default=3, metavar="{1..8}", help="bits (default 3)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default all)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per method (default 3; --stream times one run per method)")
    p.add_argument("--seed", type=parse_seed, default=0, help="seed of the synthetic weights (default 0)")
    p.add_argument("--stream", action="store_true",
                   help="time the streaming quantizer (fmq-np quantize FILE --out q.h5) per method in MB/s against "
                        "reading the file tensor by tensor (synthetic weights are written to a temporary "
                        ".safetensors first)")
    p.set_defaults(run=_bench)


def _bench(args):
    from .. import bench
    from .._memory import check_memory, memory_budget
    methods = split_list(args.methods)
    for m in methods:
        if m not in bench.METHODS:
            raise InputError(f"--methods: {m!r} is not one of {', '.join(bench.METHODS)}")
    if args.repeat < 1:
        raise InputError(f"--repeat must be >= 1, got {args.repeat}")
    if args.input:
        check_input(args.input, "weight file")
        if is_quantized(args.input):
            raise InputError(f"{args.input} is already quantized; bench the float model or weight file it came from")
        if args.stream:                   # never loaded whole: the streaming reader takes it tensor by tensor
            return _bench_stream(args, args.input, methods)
        arrays, _ = read_named_arrays(args.input)
    else:
        per_weight = 24          # float32 weights, their copy, dequantized output, sort scratch, codes
        check_memory(per_weight * args.params, "the synthetic weights and their quantization", "--params",
                     args.params, largest=memory_budget() // per_weight)
        arrays = bench.synthetic_state_dict(args.params, seed=args.seed)
        if args.stream:
            with tempfile.TemporaryDirectory(prefix="fmq_np-bench-") as tmp:
                from ..io import write_safetensors
                src = os.path.join(tmp, "synthetic.safetensors")
                write_safetensors(src, arrays)
                return _bench_stream(args, src, methods)
    rows = bench.time_methods(arrays, bits=args.bits, methods=methods, repeat=args.repeat,
                              progress=lambda line: print(line, file=sys.stderr, flush=True))
    n = sum(np.asarray(a).size for a in arrays.values() if np.asarray(a).dtype.kind == "f")
    print(bench.table(rows, n, args.bits))


def _bench_stream(args, src, methods):
    from .. import bench
    result = bench.time_stream(src, args.bits, methods,
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(bench.stream_table(result, args.bits))
