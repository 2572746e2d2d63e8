"""fmq_np — flow-matching models and optimal-transport weight quantization in NumPy + Numba.

Submodules load on first use so that ``import fmq_np`` stays light::

    import fmq_np as fq
    X = fq.datasets.load("moons", n=10_000, seed=0)
    m = fq.nn.MLPVelocity(dim=2, hidden=256, depth=4, seed=0)
    fq.flow.fit(m, X, steps=5000, batch_size=256, lr=1e-3, seed=0)
    qm = fq.quant.quantize_model(m.parameters(), bits=3, method="ot")
"""
import importlib

from . import _numba  # noqa: F401  (configures numba's cache before any kernel module is imported)
from .errors import DeviceError, FmqError, FormatError, InputError

__version__ = "0.1.0"

_SUBMODULES = ("nn", "flow", "quant", "theory", "eval", "datasets", "io", "images", "reproduce", "bench", "cli",
               "demo")

__all__ = ["FmqError", "FormatError", "InputError", "DeviceError", "__version__", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'fmq_np' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
