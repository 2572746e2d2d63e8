"""Generate samples by integrating a velocity model from Gaussian noise (t = 0) to data (t = 1)."""
import numpy as np

from .._progress import Progress
from ..errors import InputError
from .shapes import check_data, sample_shape
from .solvers import check_solver, integrate


def noise(model, n, seed=0):
    """The standard-normal starting points ``sample`` uses for ``seed``: float32 (n, *sample_shape)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((int(n),) + sample_shape(model), dtype=np.float32)


def velocity_field(model):
    """Adapter ``f(x, t_scalar) -> v`` for the solvers (inference mode, float32)."""
    def f(x, t):
        return model(x, np.full(len(x), t, dtype=np.float32))
    return f


def sample(model, n=1000, solver="heun2", steps=50, seed=0, x0=None, batch_size=4096, atol=1e-5, rtol=1e-5,
           progress=None):
    """Draw ``n`` samples: integrate ``model`` from the noise of ``seed`` (or the given ``x0``) with ``solver``.

    Returns float32 (n, *sample_shape). Passing the same ``seed`` (or ``x0``) to two models gives the pathwise
    comparison the quantization bounds speak of. Work is split into batches of ``batch_size`` samples.
    """
    check_solver(solver, steps)
    if x0 is None:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n must be a positive integer, got {n!r}")
        x0 = noise(model, n, seed)
    else:
        x0 = check_data(model, x0, "x0")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    f = velocity_field(model)
    out = np.empty_like(x0)
    with Progress(len(x0), f"sample[{solver}]", enabled=progress) as bar:
        for start in range(0, len(x0), batch_size):
            chunk = x0[start:start + batch_size]
            out[start:start + len(chunk)] = integrate(f, chunk, solver, steps, atol=atol, rtol=rtol).x
            bar.update(len(chunk))
    return out
