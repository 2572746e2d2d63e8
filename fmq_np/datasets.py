"""Datasets: 2-D toy distributions generated from a seed, and small image sets shipped under ``data/``.

All arrays are float32. Toys have shape ``(n, 2)`` and roughly unit scale; images have shape ``(n, C, H, W)``
with pixel values scaled to ``[-1, 1]`` (the flow-matching convention: data at t = 1).

Image sets (``data/PROVENANCE.md`` says where each file comes from):

- ``digits``: the 1797 UCI 8×8 digits, labels 0–9 (one split).
- ``mnist``, ``fashion``: 28×28 grey, labels 0–9; ``split="train"`` (the first 8000 of the original training
  set) or ``"test"`` (the first 1000 of the original test set).
- ``cifar-standin`` (for CIFAR-10): 32×32 colour crops of the five shipped natural photographs, drawn
  deterministically: crop i comes from photo ``i mod 5`` (its label), downsampled by 1, 2 or 4 (box average,
  chosen at random) before a random 32×32 crop; 6000 train crops (seed 1000), 1000 test crops (seed 1001).
- ``faces`` (for CelebA): the 100 LFW faces, 25×25 grey cropped to their top-left 24×24; no labels, one split.
- ``imagenet-standin`` (for ImageNet-blurred): 32×32 colour crops of the same photos downsampled by 3 or 6 and
  then blurred with a Gaussian of σ = 1 pixel (so they differ from ``cifar-standin``: other scales, other seeds,
  softer); labels = source photo; 6000 train crops (seed 2000), 1000 test crops (seed 2001).
"""
import functools
import os
import re

import numpy as np

from ._validate import check_choice, check_int
from .errors import FormatError, InputError

TOYS = ("moons", "8gaussians", "checkerboard", "swissroll")
IMAGES = ("digits", "mnist", "fashion", "cifar-standin", "faces", "imagenet-standin")
SPLITS = ("train", "test", "extra")
_ALIASES = {"8-gaussians": "8gaussians", "eight-gaussians": "8gaussians", "swiss-roll": "swissroll",
            "two-moons": "moons", "fashion-mnist": "fashion", "fashion_mnist": "fashion"}
#: file name and maximum raw pixel value of each single-split labelled image set
_IMAGE_FILES = {"digits": ("digits.npz", 16.0)}
#: file of each two-split labelled image set (uint8, arrays x_train, y_train, x_test, y_test)
_SPLIT_FILES = {"mnist": "mnist.npz", "fashion": "fashion_mnist.npz"}
#: crop stand-ins: (downsampling factors, Gaussian blur sigma in pixels or 0, {split: (count, seed)})
_CROPS = {"cifar-standin": ((1, 2, 4), 0.0, {"train": (6000, 1000), "test": (1000, 1001)}),
          "imagenet-standin": ((3, 6), 1.0, {"train": (6000, 2000), "test": (1000, 2001)})}
_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "rocket")
_CROP_SIZE = 32
_FACE_SIZE = 24
#: file stems model_path accepts (no folders, no leading dot)
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def names():
    """All dataset names :func:`load` accepts."""
    return TOYS + IMAGES


def data_dir():
    """Folder holding the shipped data, the first of: ``$FMQ_NP_DATA``; the package's ``fmq_np/data`` (where an
    installed wheel carries the repository's top-level ``data/``, see setup.py); the checkout's ``data/`` beside the
    package folder (working tree and editable installs)."""
    env = os.environ.get("FMQ_NP_DATA")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    packaged = os.path.join(here, "data")
    return packaged if os.path.isdir(packaged) else os.path.join(os.path.dirname(here), "data")


def model_path(name):
    """Path of the shipped model ``<data_dir()>/models/<name>.h5`` (a float checkpoint such as ``"mnist"`` or an FD
    feature net such as ``"features_mnist"``); FormatError with a hint when it is not there."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InputError(f"model name must be a plain file stem like 'mnist' or 'features_mnist', got {name!r}")
    folder = os.path.join(data_dir(), "models")
    path = os.path.join(folder, f"{name}.h5")
    if not os.path.isfile(path):
        present = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".h5")) if os.path.isdir(folder) else []
        raise FormatError(f"{path}: shipped model missing (present: {', '.join(present) or 'none'}; the float "
                          f"models are trained by benchmarks/train_models.py; FMQ_NP_DATA selects another folder)")
    return path


def canonical(name):
    """The canonical spelling of a dataset name; InputError for an unknown one."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TOYS + IMAGES:
        raise InputError(f"unknown dataset {name!r}; choose from {', '.join(TOYS + IMAGES)}")
    return key


def has_labels(name):
    """Whether image dataset ``name`` has class labels (``load(..., return_labels=True)`` works)."""
    key = canonical(name)
    return key in IMAGES and key != "faces"


def load(name, n=None, seed=0, return_labels=False, split="train"):
    """Load ``n`` samples of dataset ``name`` (float32).

    Toys: ``n`` defaults to 10 000, drawn afresh from ``seed``. Images: all samples of ``split`` (``"train"`` or,
    for mnist, fashion and the crop stand-ins, ``"test"``) when ``n`` is None, otherwise ``n`` of them chosen
    without replacement by ``seed``. ``return_labels`` gives ``(x, y)`` (y int64) for labelled images.
    """
    key = canonical(name)
    if n is not None:
        check_int("n", n, 1)
    check_choice("split", split, SPLITS)
    if key in TOYS:
        if return_labels:
            raise InputError(f"dataset {key!r} has no labels")
        rng = np.random.default_rng(seed)
        return _TOY_MAKERS[key](rng, 10_000 if n is None else int(n)).astype(np.float32)
    if return_labels and not has_labels(key):
        raise InputError(f"dataset {key!r} has no labels")
    x, y = _load_images(key, split)
    if n is not None:
        if n > len(x):
            raise InputError(f"dataset {key!r} ({split}) has {len(x)} samples, asked for n={n}")
        idx = np.sort(np.random.default_rng(seed).choice(len(x), size=int(n), replace=False))
        x, y = x[idx], y[idx]
    else:
        x, y = x.copy(), y.copy()
    return (x, y) if return_labels else x


def data_shape(name):
    """Shape of one sample of dataset ``name``: ``(2,)`` for toys, ``(C, H, W)`` for images."""
    key = canonical(name)
    if key in TOYS:
        return (2,)
    return _load_images(key, "train")[0].shape[1:]


def _read_npz(folder, filename, keys):
    """The arrays ``keys`` of the file ``filename`` in ``folder``; FormatError when it is missing or malformed."""
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: dataset file missing (rebuild with: python data/build_data.py)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return [f[k] for k in keys]
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{path}: not a valid dataset file ({exc})") from None


def _scaled(raw, max_value):
    """uint8-like raw pixels (n, H, W) or (n, C, H, W) → float32 (n, C, H, W) in [−1, 1]."""
    if raw.ndim == 3:
        raw = raw[:, None]
    return (raw.astype(np.float32) / np.float32(max_value)) * np.float32(2.0) - np.float32(1.0)


def _load_images(key, split):
    """``(x float32 (n, C, H, W) in [−1, 1], y int64 (n,))`` of one split (y = −1 where there are no labels).

    Cached per data folder: callers must not modify the arrays (``load`` hands out copies)."""
    return _load_images_from(data_dir(), key, split)


@functools.lru_cache(maxsize=16)
def _load_images_from(folder, key, split):
    single = key in _IMAGE_FILES or key == "faces"
    if single and split != "train":
        raise InputError(f"dataset {key!r} has a single split: use split='train'")
    if key in _IMAGE_FILES:
        filename, max_value = _IMAGE_FILES[key]
        raw, labels = _read_npz(folder, filename, ("x", "y"))
        return _scaled(raw, max_value), labels.astype(np.int64)
    if key == "faces":
        (raw,) = _read_npz(folder, "lfw_faces.npz", ("x",))
        return _scaled(raw[:, :_FACE_SIZE, :_FACE_SIZE], 255.0), np.full(len(raw), -1, np.int64)
    if key in _SPLIT_FILES:
        raw, labels = _read_npz(folder, _SPLIT_FILES[key], (f"x_{split}", f"y_{split}"))
        return _scaled(raw, 255.0), labels.astype(np.int64)
    factors, sigma, splits = _CROPS[key]
    if split not in splits:
        raise InputError(f"dataset {key!r} has no {split!r} split; use 'train' or 'test'")
    count, seed = splits[split]
    photos = _read_npz(folder, "natural_images.npz", _PHOTOS)
    return _crops(photos, factors, sigma, count, seed)


def _crops(photos, factors, sigma, count, seed):
    """``count`` 32×32 RGB crops: crop i from photo ``i mod len(photos)`` (its label), box-downsampled by a factor
    drawn from ``factors``, at a uniform random position, then blurred by a Gaussian of ``sigma`` pixels."""
    rng = np.random.default_rng(seed)
    pyramids = [{f: _box_downsample(p.astype(np.float32), f) for f in factors} for p in photos]
    x = np.empty((count, 3, _CROP_SIZE, _CROP_SIZE), np.float32)
    labels = np.arange(count, dtype=np.int64) % len(photos)
    for i, k in enumerate(labels):
        img = pyramids[k][factors[rng.integers(len(factors))]]
        r = rng.integers(img.shape[0] - _CROP_SIZE + 1)
        c = rng.integers(img.shape[1] - _CROP_SIZE + 1)
        x[i] = img[r:r + _CROP_SIZE, c:c + _CROP_SIZE].transpose(2, 0, 1)
    if sigma > 0:
        x = _gaussian_blur(x, sigma)
    return (x / np.float32(255.0)) * np.float32(2.0) - np.float32(1.0), labels


def _box_downsample(img, factor):
    """Average ``factor``×``factor`` blocks of an (H, W, 3) image (trailing rows/columns that do not fill a block
    are dropped)."""
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    return img[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))


def _gaussian_blur(x, sigma):
    """Separable Gaussian blur (radius ⌈3σ⌉, edge-replicating padding) of images x (n, C, H, W), float32."""
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="edge")
    x = sum(w * padded[:, :, j:j + x.shape[2]] for j, w in enumerate(kernel))
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (radius, radius)), mode="edge")
    return sum(w * padded[:, :, :, j:j + x.shape[3]] for j, w in enumerate(kernel)).astype(np.float32)


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
