"""Float model checkpoints in HDF5 (format ``fmq_np.model``, version 1).

Layout::

    /                attrs: format, format_version, fmq_np_version, model_class, model_config (JSON),
                            param_names (JSON list, the model's order), meta (JSON: training metadata)
    /params/<name>   one dataset per parameter (chunked, gzip, fletcher32 checksums)
    /train_state     optional, written by fmq_np.flow.fit to resume: attrs step, seconds, rng (JSON);
                     groups raw/ (raw weights), ema/, optim/ (arrays as datasets, scalars as attrs), history/

Loading validates the format, version, class, config, every name, shape and dtype, and that weights are finite;
anything wrong raises :class:`~fmq_np.errors.FormatError`. Nothing is unpickled: loading never runs code.
"""
import json

import h5py
import numpy as np

from ..errors import FmqError, FormatError
from ._h5 import atomic_h5, check_format, open_h5, read_attr, read_dataset

FORMAT = "fmq_np.model"
VERSION = 1
_DATASET_OPTIONS = dict(compression="gzip", compression_opts=4, fletcher32=True)


def save_model(path, model, meta=None, train_state=None):
    """Write ``model`` (its class, config and parameters) to ``path`` atomically. ``meta``: JSON-able dict."""
    from .. import __version__
    params = model.parameters()
    with atomic_h5(path) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = VERSION
        f.attrs["fmq_np_version"] = __version__
        f.attrs["model_class"] = type(model).__name__
        f.attrs["model_config"] = json.dumps(model.config())
        f.attrs["param_names"] = json.dumps(list(params))
        f.attrs["meta"] = json.dumps(meta or {})
        _write_arrays(f.create_group("params"), params)
        if train_state is not None:
            _write_train_state(f.create_group("train_state"), train_state)


def load_model(path):
    """Rebuild the model stored in ``path`` (float checkpoint). Returns ``(model, meta)``."""
    with open_h5(path) as f:
        check_format(f, path, FORMAT, VERSION, "model checkpoint")
        model = build_model(read_attr(f, "model_class", str, path), read_json_attr(f, "model_config", path), path)
        names = read_json_attr(f, "param_names", path)
        params = read_params(f, "params", model.parameters(), path)
        if list(params) != names:
            raise FormatError(f"{path}: parameter order {names} does not match the model's")
        model.load_parameters(params)
        return model, read_json_attr(f, "meta", path)


def load_train_state(path, model):
    """The resume state of a checkpoint written by ``fit`` for ``model`` (same class/config)."""
    with open_h5(path) as f:
        check_format(f, path, FORMAT, VERSION, "model checkpoint")
        if read_attr(f, "model_class", str, path) != type(model).__name__ or \
                _architecture(read_json_attr(f, "model_config", path)) != _architecture(model.config()):
            raise FormatError(f"{path}: checkpoint holds a different model than the one being trained")
        g = f.get("train_state")
        if not isinstance(g, h5py.Group):
            raise FormatError(f"{path}: no train_state group (not a training checkpoint)")
        state = {"step": read_attr(g, "step", int, path), "seconds": read_attr(g, "seconds", float, path),
                 "rng": json.loads(read_attr(g, "rng", str, path)),
                 "raw": read_params(g, "raw", model.parameters(), path),
                 "history": {k: read_dataset(g, f"history/{k}", path) for k in ("step", "loss", "lr")},
                 "optim": _read_flat(g, "optim", path),
                 "ema": _read_flat(g, "ema", path) if "ema" in g else None}
        return state


def _architecture(config):
    """A model config without its initialisation seed, as JSON would return it."""
    if not isinstance(config, dict):
        return config
    return json.loads(json.dumps({k: v for k, v in config.items() if k != "seed"}))


def read_json_attr(obj, name, path):
    """A JSON-encoded string attribute, decoded; FormatError when it is missing or not valid JSON."""
    text = read_attr(obj, name, str, path)
    try:
        return json.loads(text)
    except ValueError:
        raise FormatError(f"{path}: attribute {name!r} is not valid JSON") from None


def build_model(class_name, config, path):
    """Instantiate ``fmq_np.nn.MODELS[class_name](**config)``; FormatError for unknown classes or bad configs."""
    from ..nn import MODELS
    cls = MODELS.get(class_name)
    if cls is None:
        raise FormatError(f"{path}: unknown model class {class_name!r}; known: {', '.join(MODELS)}")
    if not isinstance(config, dict):
        raise FormatError(f"{path}: model_config must be a JSON object")
    try:
        return cls(**config)
    except (FmqError, TypeError, ValueError) as exc:
        raise FormatError(f"{path}: cannot build {class_name} from its stored config ({exc})") from None


def read_params(f, group, reference, path):
    """Read group ``group`` as parameters matching ``reference`` (name → array) exactly: names, shapes, dtypes."""
    g = f.get(group)
    if not isinstance(g, h5py.Group):
        raise FormatError(f"{path}: group {group!r} missing")
    extra = sorted(set(g) - set(reference))
    if extra:
        raise FormatError(f"{path}: unexpected parameters in {group!r}: {', '.join(extra[:5])}")
    out = {}
    for name, ref in reference.items():
        arr = read_dataset(g, name, path, dtype=ref.dtype, shape=ref.shape)
        if not np.isfinite(arr).all():
            raise FormatError(f"{path}: parameter {name!r} contains NaN or Inf")
        out[name] = arr
    return out


def _write_arrays(group, arrays):
    for name, arr in arrays.items():
        if "/" in name:
            raise FmqError(f"parameter name {name!r} contains '/', which HDF5 paths cannot hold")
        arr = np.ascontiguousarray(arr)
        opts = _DATASET_OPTIONS if arr.ndim and arr.size else {}
        group.create_dataset(name, data=arr, **opts)


def _write_flat(group, state):
    """A flat dict of arrays and scalars: arrays as datasets, scalars as attributes."""
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            _write_arrays(group, {key: value})
        else:
            group.attrs[key] = value


def _read_flat(g, name, path):
    sub = g.get(name)
    if not isinstance(sub, h5py.Group):
        raise FormatError(f"{path}: train_state/{name} missing")
    out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in sub.attrs.items()}
    for key in sub:
        out[key] = read_dataset(sub, key, path)
    return out


def _write_train_state(g, state):
    g.attrs["step"] = int(state["step"])
    g.attrs["seconds"] = float(state["seconds"])
    g.attrs["rng"] = json.dumps(state["rng"])
    _write_arrays(g.create_group("raw"), state["raw"])
    _write_arrays(g.create_group("history"), state["history"])
    _write_flat(g.create_group("optim"), state["optim"])
    if state["ema"] is not None:
        _write_flat(g.create_group("ema"), state["ema"])
