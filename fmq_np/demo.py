"""The demo on the embedded data: a 2-D toy and the 8x8 digits, trained, sampled, measured and drawn.

    res = fq.demo.run("runs/demo", mlp_steps=5000, unet_steps=2000, seed=0, log=print)

writes into the folder (:data:`FILES`): ``moons.h5``, a 4x256 :class:`~fmq_np.nn.MLPVelocity` trained on 20 000
moons points; ``moons_samples.png`` and ``moons_data.png``, density maps of 2000 of its samples (heun2, 50 steps)
and of 2000 fresh data points; ``digits.h5``, a width-16 :class:`~fmq_np.nn.UNetVelocity` trained on the 8x8
digits; ``digits_samples.png``, a grid of 64 of its samples. It returns the sliced-W2 distance of the moons samples
to the fresh data and, as the yardstick, between two fresh data draws.
"""
import os

from ._validate import check_int
from .errors import InputError

#: the files :func:`run` writes into its folder
FILES = ("moons.h5", "moons_samples.png", "moons_data.png", "digits.h5", "digits_samples.png")
#: moons points drawn for training, and samples / fresh data points drawn for the sliced-W2 comparison
N_TRAIN, N_COMPARE = 20_000, 2000


def output_paths(out, name="out"):
    """The paths of :data:`FILES` in folder ``out``, created when missing; InputError (naming the argument as
    ``name``, e.g. a command-line flag) when ``out`` is a file."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"{name} {out} is a file; give a folder")
    os.makedirs(out, exist_ok=True)
    return [os.path.join(out, f) for f in FILES]


def run(out, *, mlp_steps=5000, unet_steps=2000, seed=0, log=None):
    """Train, save, sample and draw both demo models into folder ``out`` (see the module doc); ``log(line)``, when
    given, receives a line as each model starts training and the moons distances.

    Returns ``{"files": paths written, "sw2_samples": sliced-W2(moons samples, fresh data), "sw2_data":
    sliced-W2(another fresh draw, fresh data)}``; the distances are in data units (the toy is of unit scale).
    """
    from . import datasets, flow, images, io, nn
    from .eval import sliced_w2
    for arg, value in (("mlp_steps", mlp_steps), ("unet_steps", unet_steps)):
        check_int(arg, value, 1)
    log = log or (lambda line: None)
    paths = dict(zip(FILES, output_paths(out)))

    moons = datasets.load("moons", n=N_TRAIN, seed=seed)
    mlp = nn.build_for_dataset("moons", "mlp", hidden=256, depth=4, seed=seed)
    log(f"[1/2] MLP 4x256 on moons, {mlp_steps} steps")
    flow.fit(mlp, moons, steps=mlp_steps, batch_size=256, lr=1e-3, seed=seed, meta={"dataset": "moons"})
    io.save_model(paths["moons.h5"], mlp, meta={"dataset": "moons"})
    gen = flow.sample(mlp, n=N_COMPARE, solver="heun2", steps=50, seed=seed + 1)
    fresh = datasets.load("moons", n=N_COMPARE, seed=seed + 2)
    other = datasets.load("moons", n=N_COMPARE, seed=seed + 3)
    images.save_samples_png(paths["moons_samples.png"], gen)
    images.save_samples_png(paths["moons_data.png"], fresh)
    sw_model, sw_data = sliced_w2(gen, fresh), sliced_w2(other, fresh)
    log(f"      sliced-W2(samples, data) = {sw_model:.4f}; between two data draws = {sw_data:.4f} "
        f"(ratio {sw_model / sw_data:.2f})")

    digits = datasets.load("digits", seed=seed)
    unet = nn.build_for_dataset("digits", "unet", width=16, seed=seed)
    log(f"[2/2] U-Net (width 16) on 8x8 digits, {unet_steps} steps")
    flow.fit(unet, digits, steps=unet_steps, batch_size=64, lr=1e-3, seed=seed, meta={"dataset": "digits"})
    io.save_model(paths["digits.h5"], unet, meta={"dataset": "digits"})
    grid = flow.sample(unet, n=64, solver="heun2", steps=50, seed=seed + 1)
    images.save_samples_png(paths["digits_samples.png"], grid)
    return {"files": list(paths.values()), "sw2_samples": float(sw_model), "sw2_data": float(sw_data)}
