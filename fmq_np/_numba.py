"""The one place that knows how fmq_np uses Numba: cache directory, threads, fastmath, CUDA.

Import this module before anything imports :mod:`numba` (``fmq_np/__init__`` does) so that the cache fallback
takes effect: when the package folder is read-only and ``NUMBA_CACHE_DIR`` is unset, compiled kernels are cached in
a writable per-user directory instead, so ``cache=True`` can never make an import fail.

Use :func:`jit` (CPU kernels) everywhere instead of calling ``numba.njit`` directly.
"""
import os
import sys
import tempfile

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _writable(path):
    try:
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".fmq_np_probe_", delete=True)
        probe.close()
        return True
    except OSError:
        return False


def _fallback_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [os.path.join(base, "fmq_np", "numba"),
                  os.path.join(tempfile.gettempdir(), f"fmq_np-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")]
    for cand in candidates:
        try:
            os.makedirs(cand, exist_ok=True)
        except OSError:
            continue
        if _writable(cand):
            return cand
    return None


def _configure_cache():
    """Point NUMBA_CACHE_DIR at a writable place when the package folder is read-only."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    if _writable(_PACKAGE_DIR):
        return
    fallback = _fallback_cache_dir()
    if fallback is not None:
        os.environ["NUMBA_CACHE_DIR"] = fallback
        if "numba" in sys.modules:  # imported before fmq_np, numba read its config already: tell it too
            from numba.core import config
            config.CACHE_DIR = fallback


_configure_cache()
# OpenMP worker threads that spin between parallel launches stall every launch whenever the cores are shared
# (30 ms instead of 3 ms per call measured on a loaded 2-core machine); sleeping workers cost microseconds.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# numba itself is imported only by the modules that compile kernels, so ``import fmq_np`` stays light.

#: fastmath flags for float kernels of the networks: reassociation/contraction allowed, but NaN and Inf keep their
#: meaning (no ``nnan``/``ninf``), so non-finite values are still detected and propagated.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}   # a set: numba rejects frozensets

#: True when the CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` set before numba was imported).
CUDA_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"

# ---------------------------------------------------------------------------------------------------- tunables
# Tunables of the quantizer kernels (fmq_np.quant.cpu, fmq_np.quant.gpu). A cached kernel freezes the globals it
# reads, and its cache is invalidated only by edits to its own file: so kernels take these as arguments (the
# host wrappers pass them), and never read them as globals.

#: values per tile of the element-wise CPU kernels (assign, dequantize): a tile's input (16 KiB of float32) and codes
#: (4 KiB) stay in the L1/L2 caches while it is worked on, and a long row still splits into tiles to share out.
QUANT_TILE = 4096
#: values: a call touching fewer runs on the calling thread, with no parallel launch. Waking the workers costs more
#: than splitting the work saves (measured on a loaded 2-core machine: dequantize of 16 x 256 codes 27 µs on the
#: calling thread, 270 µs as a parallel launch; switching the thread count instead costs ~80 µs a switch).
QUANT_PARALLEL_MIN = 1 << 16
#: blocks of rows or tiles per thread in a parallel launch: several per thread, so unequal rows even out, and few
#: enough that each block's one set of scratch arrays is allocated rarely.
QUANT_BLOCKS_PER_THREAD = 4
#: bytes: dequantize writes outputs this large or larger with non-temporal stores. 4 MiB is about a core's share of
#: the last-level cache: a larger output does not stay cached anyway, so not reading its lines first saves bandwidth.
QUANT_STREAM_BYTES = 1 << 22
#: subtrees: a DP layer of a single row (optimal_levels) runs its top divide-and-conquer levels serially until this
#: many subtrees are left, then one parallel launch: 16 gives every one of up to 16 threads a subtree, yet the serial
#: top (15 tasks) is a small part of a layer of a long row.
QUANT_DP_SPLIT = 16
#: CUDA threads per block: 128 keeps a GPU's multiprocessors busy on the small per-thread work of these kernels; the
#: simulator runs each CUDA thread as a Python thread, so 32 there keeps the tests quick.
CUDA_THREADS = 32 if CUDA_SIMULATOR else 128


def jit(*args, fastmath=False, parallel=False, **kwargs):
    """``numba.njit`` with fmq_np's policy: cached, nogil; exact IEEE arithmetic unless ``fastmath`` is asked for.

    Usable bare (``@jit``) or with options (``@jit(parallel=True)``, ``@jit(fastmath=FASTMATH)``).
    """
    import numba
    options = dict(cache=True, nogil=True, fastmath=fastmath, parallel=parallel, **kwargs)
    if len(args) == 1 and callable(args[0]):
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)


def set_threads(n=None):
    """Set the number of Numba threads (``None``: ``FMQ_NP_THREADS`` or all cores). Returns the number in use."""
    import numba
    if n is None:
        n = env_threads() or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    return numba.get_num_threads()


def env_threads():
    """``FMQ_NP_THREADS`` as an int (0 or unset: all cores); InputError naming it when it is not an integer >= 0."""
    text = os.environ.get("FMQ_NP_THREADS", "").strip()
    try:
        n = int(text) if text else 0
    except ValueError:
        n = -1
    if n < 0:
        from .errors import InputError
        raise InputError(f"FMQ_NP_THREADS must be an integer >= 0 (0: all cores), got {text!r}")
    return n


def get_threads():
    """Number of threads Numba's parallel kernels use now."""
    import numba
    return numba.get_num_threads()


def parallel_threads(work):
    """The thread policy of the quantizer kernels: how many threads a call touching ``work`` values runs on, 1 (the
    calling thread, no parallel launch) under :data:`QUANT_PARALLEL_MIN` values, else all of Numba's threads."""
    return 1 if work < QUANT_PARALLEL_MIN else get_threads()


def cuda_available():
    """True when ``numba.cuda`` can run kernels: a real GPU, or the simulator when it is enabled."""
    if CUDA_SIMULATOR:
        return True
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # no driver, no toolkit, broken install: all mean "no GPU"
        return False


def cuda_device(f):
    """``numba.cuda.jit(device=True)`` of a helper written once for both backends: ``f`` is its plain function or
    the CPU :func:`jit` of it (compiled again from ``f.py_func``; under ``NUMBA_DISABLE_JIT`` ``f`` is plain)."""
    from numba import cuda
    return cuda.jit(device=True)(getattr(f, "py_func", f))


def resolve_device(device):
    """Map ``"cpu" | "cuda" | "auto"`` to ``"cpu"`` or ``"cuda"``; ``"cuda"`` without a GPU raises DeviceError."""
    from .errors import DeviceError, InputError
    if device not in ("cpu", "cuda", "auto"):
        raise InputError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if device == "auto":
        return "cpu"
    raise DeviceError("device='cuda' was requested but no CUDA GPU is available (numba.cuda.is_available() is False)")


if os.environ.get("FMQ_NP_THREADS"):
    try:
        set_threads()
    except ValueError as _exc:   # a bad FMQ_NP_THREADS (InputError) must not break the import: say so, use all cores
        import warnings
        warnings.warn(f"{_exc}; using all cores", RuntimeWarning, stacklevel=2)
