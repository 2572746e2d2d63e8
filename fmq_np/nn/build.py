"""Which velocity network fits a dataset, built to the shape of its samples.

    m = fq.nn.build_for_dataset("moons", "mlp", hidden=256, depth=4)     # MLPVelocity(dim=2, ...)
    m = fq.nn.build_for_dataset("digits", "unet", width=16)               # UNetVelocity(channels=1, size=8, ...)

An ``"mlp"`` (:class:`~fmq_np.nn.MLPVelocity`) takes the 2-D toys (``datasets.TOYS``), a ``"unet"``
(:class:`~fmq_np.nn.UNetVelocity`) the square image sets (``datasets.IMAGES``).
"""
from .. import datasets
from .._validate import check_choice
from ..errors import InputError
from .models import MLPVelocity, UNetVelocity

#: architecture name -> (the datasets it takes, what they are, in words)
ARCHITECTURES = {"mlp": (datasets.TOYS, "a 2-D dataset"), "unet": (datasets.IMAGES, "an image dataset")}


def check_fits(dataset, architecture, name="architecture"):
    """The canonical name of ``dataset`` when ``architecture`` (a key of :data:`ARCHITECTURES`) can learn it;
    otherwise InputError naming the argument as ``name`` (e.g. a command-line flag) and the datasets it takes."""
    key = datasets.canonical(dataset)
    check_choice(name, architecture, ARCHITECTURES)
    takes, what = ARCHITECTURES[architecture]
    if key not in takes:
        hint = f"; use {name} unet for {key}" if architecture == "mlp" else ""    # every other dataset is an image
        raise InputError(f"{name} {architecture} needs {what} ({', '.join(takes)}){hint}")
    return key


def build_for_dataset(dataset, architecture="mlp", *, hidden=256, depth=4, width=32, seed=0):
    """A fresh (untrained) velocity network of ``architecture`` sized for the samples of ``dataset``.

    ``"mlp"``: :class:`~fmq_np.nn.MLPVelocity` of ``dim`` = the toy's dimension (2), ``hidden`` units in each of
    ``depth`` hidden layers. ``"unet"``: :class:`~fmq_np.nn.UNetVelocity` of the images' channels C and size H (= W)
    and ``width`` base channels. ``seed`` draws the initial weights. InputError when the architecture
    does not take this dataset (see :func:`check_fits`).
    """
    key = check_fits(dataset, architecture)
    shape = datasets.data_shape(key)
    if architecture == "mlp":
        return MLPVelocity(dim=shape[0], hidden=hidden, depth=depth, seed=seed)
    channels, size, _ = shape                    # every image set is square
    return UNetVelocity(channels=channels, size=size, width=width, seed=seed)
