"""Datasets: 2-D toy distributions generated from a seed, and small image sets shipped under ``data/``.

All arrays are float32. Toys have shape ``(n, 2)`` and roughly unit scale; images have shape ``(n, C, H, W)``
with pixel values scaled to ``[-1, 1]`` (the flow-matching convention: data at t = 1).
"""
import os

import numpy as np

from .errors import FormatError, InputError

TOYS = ("moons", "8gaussians", "checkerboard", "swissroll")
IMAGES = ("digits",)
_ALIASES = {"8-gaussians": "8gaussians", "eight-gaussians": "8gaussians", "swiss-roll": "swissroll",
            "two-moons": "moons"}
#: file name and maximum raw pixel value of each shipped image set
_IMAGE_FILES = {"digits": ("digits.npz", 16.0)}


def names():
    """All dataset names :func:`load` accepts."""
    return TOYS + IMAGES


def data_dir():
    """Folder holding the shipped data: ``$FMQ_NP_DATA`` or the repository's ``data/``."""
    return os.environ.get("FMQ_NP_DATA") or os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


def canonical(name):
    """The canonical spelling of a dataset name; InputError for an unknown one."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TOYS + IMAGES:
        raise InputError(f"unknown dataset {name!r}; choose from {', '.join(TOYS + IMAGES)}")
    return key


def load(name, n=None, seed=0, return_labels=False):
    """Load ``n`` samples of dataset ``name`` (float32).

    Toys: ``n`` defaults to 10 000, drawn afresh from ``seed``. Images: all samples when ``n`` is None, otherwise
    ``n`` of them chosen without replacement by ``seed``. ``return_labels`` gives ``(x, y)`` for labelled images.
    """
    key = canonical(name)
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise InputError(f"n must be a positive integer, got {n!r}")
    if key in TOYS:
        if return_labels:
            raise InputError(f"dataset {key!r} has no labels")
        rng = np.random.default_rng(seed)
        return _TOY_MAKERS[key](rng, 10_000 if n is None else int(n)).astype(np.float32)
    x, y = _load_images(key)
    if n is not None:
        if n > len(x):
            raise InputError(f"dataset {key!r} has {len(x)} samples, asked for n={n}")
        idx = np.sort(np.random.default_rng(seed).choice(len(x), size=int(n), replace=False))
        x, y = x[idx], y[idx]
    return (x, y) if return_labels else x


def data_shape(name):
    """Shape of one sample of dataset ``name``: ``(2,)`` for toys, ``(C, H, W)`` for images."""
    key = canonical(name)
    if key in TOYS:
        return (2,)
    return _load_images(key)[0].shape[1:]


def _load_images(key):
    filename, max_value = _IMAGE_FILES[key]
    path = os.path.join(data_dir(), filename)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: dataset file missing (rebuild with: python data/build_data.py)")
    try:
        with np.load(path, allow_pickle=False) as f:
            raw, labels = f["x"], f["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{path}: not a valid dataset file ({exc})") from None
    if raw.ndim == 3:
        raw = raw[:, None]
    x = (raw.astype(np.float32) / np.float32(max_value)) * np.float32(2.0) - np.float32(1.0)
    return x, labels.astype(np.int64)


def _moons(rng, n):
    n_outer = n // 2
    theta = rng.uniform(0.0, np.pi, n)
    outer = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    inner = np.stack([1.0 - np.cos(theta), 0.5 - np.sin(theta)], axis=1)
    x = np.where((np.arange(n) < n_outer)[:, None], outer, inner)
    x = x + rng.normal(0.0, 0.05, size=(n, 2))
    x = (x - np.array([0.5, 0.25])) * 1.5
    return x[rng.permutation(n)]


def _eight_gaussians(rng, n):
    angles = rng.integers(0, 8, n) * (np.pi / 4.0)
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + rng.normal(0.0, 0.15, size=(n, 2))


def _checkerboard(rng, n):
    x1 = rng.uniform(-2.0, 2.0, n)
    x2 = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1)


def _swissroll(rng, n):
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(0.0, 1.0, n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5.0
    return x + rng.normal(0.0, 0.05, size=(n, 2))


_TOY_MAKERS = {"moons": _moons, "8gaussians": _eight_gaussians, "checkerboard": _checkerboard,
               "swissroll": _swissroll}
