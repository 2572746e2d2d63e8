"""``fmq-np bench``: how fast the quantizers run on this machine, on a weight file or a synthetic state dict.

With ``--stream`` (:func:`time_stream`): the streaming quantizer on a weight file, in MB/s of input, against plain
reading of the same file tensor by tensor.

Each method quantizes every tensor per channel (``paper_compat=True`` for the paper's four, as ``fmq-np quantize
--paper-compat`` does; ``ot-opt`` per channel) and the result is dequantized; the first run (which loads or compiles
the kernels) is reported on its own, then the median of ``repeat`` runs. The peer figure is a plain copy of the
same weights (the memory bound: no quantizer can beat it). Speed claims with their peers are in benchmarks/.
"""
import os
import tempfile
import time

import numpy as np

from ._validate import check_int
from .errors import InputError
from .quant.tensor import METHODS          # every method, in the order the table lists them


def synthetic_state_dict(n_params, seed=0):
    """A U-Net-like float32 state dict of about ``n_params`` parameters, values N(0, 0.05²): of eight 256×256×3×3,
    twelve 128×128×3×3 and four 256×128×3×3 convolutions, six 512×512 linear layers and 24 biases/norm scales,
    those that fit in turn (all of them from 9.3 M on), then a (rows, 1024) tensor with the rest."""
    check_int("n_params", n_params, 1024)
    rng = np.random.default_rng(seed)
    shapes = [(256, 256, 3, 3)] * 8 + [(128, 128, 3, 3)] * 12 + [(256, 128, 3, 3)] * 4 + [(512, 512)] * 6
    shapes += [(c,) for c in (256, 128, 512) for _ in range(8)]
    keep, total = [], 0
    for s in shapes:
        size = int(np.prod(s))
        if total + size <= n_params:
            keep.append(s)
            total += size
    keep.append((max(1, (n_params - total) // 1024), 1024))
    return {f"t{i}": (rng.standard_normal(s) * 0.05).astype(np.float32) for i, s in enumerate(keep)}


def median_time(fn, repeat):
    """Median wall-clock seconds of ``repeat`` calls of ``fn()`` (no warm-up call: the caller decides)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_methods(named_arrays, bits=3, methods=METHODS, repeat=3, progress=None):
    """Rows ``{method, first_s, median_s, mvalues_per_s}`` for quantize + dequantize of every float array, and the
    copy peer as a row with method ``"copy"``. ``progress(line)`` is called before each method."""
    from .quant import quantize_model
    floats = {k: np.asarray(v) for k, v in named_arrays.items() if np.asarray(v).dtype.kind == "f"}
    if not floats:
        raise InputError("no float arrays to quantize")
    n = sum(v.size for v in floats.values())
    rows = []
    for method in methods:
        if progress:
            progress(f"{method} ...")

        def run():
            qm = quantize_model(floats, bits=bits, method=method, paper_compat=method != "ot-opt",
                                policy=lambda name, a: bits)
            return qm.dequantize()

        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
        med = median_time(run, repeat)
        rows.append(dict(method=method, first_s=first, median_s=med, mvalues_per_s=n / med / 1e6))
    med = median_time(lambda: {k: v.copy() for k, v in floats.items()}, repeat)
    rows.append(dict(method="copy", first_s=None, median_s=med, mvalues_per_s=n / med / 1e6))
    return rows


def table(rows, n_values, bits):
    """The rows of :func:`time_methods` as a plain-text table."""
    from ._numba import get_threads
    copy = next(r["median_s"] for r in rows if r["method"] == "copy")
    lines = [f"{n_values:,} weights, {bits} bits, per channel, {get_threads()} Numba threads",
             f"{'method':<8} {'first run':>10} {'median':>10} {'M weights/s':>12} {'x copy':>8}"]
    for r in rows:
        first = "-" if r["first_s"] is None else f"{r['first_s']:.3f} s"
        lines.append(f"{r['method']:<8} {first:>10} {r['median_s']:>8.3f} s {r['mvalues_per_s']:>12.1f} "
                     f"{r['median_s'] / copy:>8.1f}")
    return "\n".join(lines)


def time_stream(src, bits=3, methods=("ot",), key=None, progress=None):
    """Streaming figures for the weight file ``src``: ``{bytes_in, tensors, read_s, read_mb_per_s, rows}``, a row
    ``{method, quantize_s, quantize_mb_per_s, bytes_out, slowdown}`` per method. ``read``: every tensor read as
    :func:`~fmq_np.quant.quantize_file` reads it and summed (the reading alone, after a first pass that brings the
    file into the page cache as the quantizer's run finds it); ``quantize``: ``quantize_file(src, <tmp>.h5,
    bits=bits, method=method)``, the packed output deleted afterwards, after a warm-up run of the method on a small
    file (loading the kernels and h5py is a first-call cost, 1-2 s, which ``fmq-np bench`` without ``--stream``
    reports). MB are 10**6 bytes; ``slowdown`` = quantize_s / read_s. ``progress(line)`` is called before each
    method."""
    from .io import write_safetensors
    from .quant.stream import iter_tensors, quantize_file

    def read_all():
        count, nbytes = 0, 0
        for _, array, size in iter_tensors(src, key):
            np.add.reduce(array, axis=None, dtype=np.float64)
            count, nbytes = count + 1, nbytes + size
        return count, nbytes

    read_all()                                        # the page cache, as for the quantizer
    t0 = time.perf_counter()
    count, nbytes = read_all()
    read_s = max(time.perf_counter() - t0, 1e-9)
    mb, rows = nbytes / 1e6, []
    with tempfile.TemporaryDirectory(prefix="fmq_np-bench-") as tmp:
        warm = os.path.join(tmp, "warm-up.safetensors")
        write_safetensors(warm, synthetic_state_dict(4096))
        for method in methods:
            if progress:
                progress(f"{method} (streaming) ...")
            quantize_file(warm, os.path.join(tmp, f"warm-up-{method}.h5"), bits=bits, method=method, progress=False)
            out = os.path.join(tmp, f"{method}.h5")
            t0 = time.perf_counter()
            quantize_file(src, out, bits=bits, method=method, key=key, progress=False)
            quantize_s = time.perf_counter() - t0
            rows.append(dict(method=method, quantize_s=quantize_s, quantize_mb_per_s=mb / quantize_s,
                             bytes_out=os.path.getsize(out), slowdown=quantize_s / read_s))
    return dict(bytes_in=nbytes, tensors=count, read_s=read_s, read_mb_per_s=mb / read_s, rows=rows)


def stream_table(result, bits):
    """The dict of :func:`time_stream` as a plain-text table."""
    lines = [f"streaming {result['tensors']} tensors, {result['bytes_in'] / 1e6:.1f} MB in, {bits} bits -> packed .h5",
             f"{'method':<8} {'time':>10} {'MB/s':>10} {'x read':>8} {'MB out':>8}",
             f"{'read':<8} {result['read_s']:>8.3f} s {result['read_mb_per_s']:>10.1f} {1.0:>8.1f} {'-':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['method']:<8} {r['quantize_s']:>8.3f} s {r['quantize_mb_per_s']:>10.1f} "
                     f"{r['slowdown']:>8.1f} {r['bytes_out'] / 1e6:>8.1f}")
    return "\n".join(lines)
