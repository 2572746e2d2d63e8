"""Generate samples by integrating a velocity model from Gaussian noise (t = 0) to data (t = 1)."""
import numpy as np

from .._progress import Progress
from .._threads import run_batches
from .._validate import check_int
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


#: values per sampling batch when ``batch_size`` is not given: ~1 MB of float32 state per batch keeps a U-Net's
#: activations in cache (28×28 images, one core: 3.5 ms per image and velocity at batch 250, 4.6 ms at batch 1000)
BATCH_VALUES = 1 << 18


def sample(model, *, n=1000, solver="heun2", steps=50, seed=0, x0=None, batch_size=None, atol=1e-5, rtol=1e-5,
           progress=None, threads=None):
    """Draw ``n`` samples: integrate ``model`` from the noise of ``seed`` (or the given ``x0``) with ``solver``.

    Returns float32 (n, *sample_shape). Passing the same ``seed`` (or ``x0``) to two models gives the pathwise
    comparison the quantization bounds speak of. Work is split into batches of ``batch_size`` samples (default:
    :data:`BATCH_VALUES` values per batch, e.g. 334 images of 28×28; an adaptive solver chooses its steps per
    batch). Batches run at once on ``threads`` threads with one-thread kernels (None: fmq_np's thread count, see
    :func:`fmq_np._threads.batch_threads`; only for fmq_np models, whose inference caches nothing): the batches
    are the same whatever the thread count, and so are the samples.
    """
    check_solver(solver, steps)
    if x0 is None:
        check_int("n", n, 1)
        x0 = noise(model, n, seed)
    else:
        x0 = check_data(model, x0, "x0")
    if batch_size is None:
        batch_size = max(1, BATCH_VALUES // max(1, int(np.prod(x0.shape[1:]))))
    check_int("batch_size", batch_size, 1)
    f = velocity_field(model)
    out = np.empty_like(x0)
    batches = [slice(start, start + batch_size) for start in range(0, len(x0), batch_size)]
    with Progress(len(x0), f"sample[{solver}]", enabled=progress) as bar:

        def run(rows):
            out[rows] = integrate(f, x0[rows], solver=solver, steps=steps, atol=atol, rtol=rtol).x
            bar.update(len(x0[rows]))

        run_batches(run, batches, threads, model)
    return out
