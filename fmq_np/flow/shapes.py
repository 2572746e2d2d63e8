"""The shape of one sample a velocity model works on, and validation of data batches against it."""
import numpy as np

from ..errors import InputError


def sample_shape(model):
    """``(dim,)`` for an MLP velocity, ``(channels, size, size)`` for an image model (read from ``model.config()``;
    an ADMUNet's from in_channels and image_size)."""
    cfg = model.config()
    if "dim" in cfg:
        return (int(cfg["dim"]),)
    if "channels" in cfg and "size" in cfg:
        return (int(cfg["channels"]), int(cfg["size"]), int(cfg["size"]))
    if "in_channels" in cfg and "image_size" in cfg:    # ADMUNet: the velocity has x's shape
        if int(cfg["image_size"]) < 1 or cfg.get("out_channels") != cfg["in_channels"]:
            raise InputError(f"{type(model).__name__} needs image_size >= 1 and out_channels == in_channels to "
                             f"train or sample, got image_size={cfg['image_size']}, "
                             f"out_channels={cfg.get('out_channels')}, in_channels={cfg['in_channels']}")
        return (int(cfg["in_channels"]), int(cfg["image_size"]), int(cfg["image_size"]))
    raise InputError(f"cannot tell the sample shape of {type(model).__name__} from its config {cfg}")


def check_data(model, data, what="data"):
    """Return ``data`` as float32 after checking it is (n, *sample_shape) and finite; InputError otherwise."""
    data = np.asarray(data)
    expected = sample_shape(model)
    if data.ndim != len(expected) + 1 or data.shape[1:] != expected or len(data) == 0:
        raise InputError(f"{what} has shape {data.shape}, expected (n, {', '.join(map(str, expected))}) "
                         f"for {type(model).__name__}")
    if not np.issubdtype(data.dtype, np.floating):
        raise InputError(f"{what} must be floating point, got {data.dtype}")
    if not np.isfinite(data).all():
        raise InputError(f"{what} contains NaN or Inf")
    return data.astype(np.float32, copy=False)
