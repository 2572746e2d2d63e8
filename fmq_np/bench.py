"""``fmq-np bench``: how fast the quantizers run on this machine, on a weight file or a synthetic state dict.

Each method quantizes every tensor per channel (``paper_compat=True`` for the paper's four, as ``fmq-np quantize
--paper-compat`` does; ``ot-opt`` per channel) and the result is dequantized; the first run (which loads or compiles
the kernels) is reported on its own, then the median of ``repeat`` runs. The peer figure is a plain copy of the
same weights (the memory bound: no quantizer can beat it). Speed claims with their peers are in benchmarks/.
"""
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


def _median_time(fn, repeat):
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
        med = _median_time(run, repeat)
        rows.append(dict(method=method, first_s=first, median_s=med, mvalues_per_s=n / med / 1e6))
    med = _median_time(lambda: {k: v.copy() for k, v in floats.items()}, repeat)
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
