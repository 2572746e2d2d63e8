"""Float model checkpoints in HDF5 (format ``fmq_np.model``, version 1).

Layout::

    /                attrs: format, format_version, fmq_np_version, model_class, model_config (JSON),
                            param_names (JSON list, the model's order), meta (JSON: training metadata)
    /params/<name>   one dataset per parameter (chunked, gzip, fletcher32 checksums)
    /train_state     optional, written by fmq_np.flow.fit to resume: attrs step, seconds, rng (JSON);
                     groups raw/ (raw weights), ema/, optim/ (arrays as datasets, scalars as attrs), history/

Files are written in the HDF5 1.10 object format with fixed-length string attributes (``_h5.LIBVER``,
``_h5.set_str``), so damaged metadata is caught by HDF5's checksums as damaged data is by fletcher32; files of
the older 'earliest' format (variable-length strings, no metadata checksums) still load.

Loading validates the format, version, class, config, every name, shape and dtype, and that weights are finite;
anything wrong raises :class:`~fmq_np.errors.FormatError`. Nothing is unpickled: loading never runs code.
"""
import json

import h5py
import numpy as np

from ..errors import FmqError, FormatError, InputError
from ._h5 import LIBVER, atomic_h5, check_format, open_h5, read_attr, read_dataset, set_str

FORMAT = "fmq_np.model"
VERSION = 1
_DATASET_OPTIONS = dict(compression="gzip", compression_opts=4, fletcher32=True)


def save_model(path, model, meta=None, train_state=None):
    """Write ``model`` (its class, config and parameters) to ``path`` atomically. ``meta``: JSON-able dict."""
    from .. import __version__
    params = model.parameters()
    with atomic_h5(path, libver=LIBVER) as f:
        set_str(f, "format", FORMAT)
        f.attrs["format_version"] = VERSION
        set_str(f, "fmq_np_version", __version__)
        set_str(f, "model_class", type(model).__name__)
        set_str(f, "model_config", json.dumps(model.config()))
        set_str(f, "param_names", json.dumps(list(params)))
        set_str(f, "meta", json.dumps(meta or {}))
        _write_arrays(f.create_group("params"), params)
        if train_state is not None:
            _write_train_state(f.create_group("train_state"), train_state)


def load_model(path):
    """Rebuild the model stored in ``path`` (float checkpoint). Returns ``(model, meta)``."""
    with open_h5(path) as f:
        check_format(f, path, FORMAT, VERSION, "model checkpoint")
        class_name, config = read_attr(f, "model_class", str, path), read_json_attr(f, "model_config", path)
        check_config_shapes(class_name, config, _stored_shapes(f, "params", path), path)   # before allocating anything
        model = build_model(class_name, config, path)
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
                 "rng": read_json_attr(g, "rng", path),
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


def _stored_shapes(f, group, path):
    """``{name: shape}`` of the datasets of ``group`` (read from metadata, no data)."""
    g = f.get(group)
    if not isinstance(g, h5py.Group):
        raise FormatError(f"{path}: group {group!r} missing")
    return {k: tuple(v.shape) for k, v in g.items() if isinstance(v, h5py.Dataset)}


def check_config_shapes(class_name, config, shapes, path):
    """FormatError unless the sizes in ``config`` agree with the stored parameter ``shapes`` (``{name: shape}``),
    so that a tampered config (depth 1e8) is refused before building the model allocates anything: no integer of
    the config may exceed the number of stored values, and for MLPVelocity / UNetVelocity / Classifier the shapes
    the config implies for their first, last and per-level layers must be the stored ones."""
    if not isinstance(config, dict):
        return
    total = sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes.values())

    def bad(detail):
        return FormatError(f"{path}: model_config {json.dumps(config)[:200]} does not match the stored parameter "
                           f"shapes ({detail})")

    def values(v):
        return [x for item in v for x in values(item)] if isinstance(v, list) else [v]

    for key, value in config.items():
        for v in values(value):
            if key != "seed" and isinstance(v, int) and not isinstance(v, bool) and v > max(total, 1):
                raise bad(f"{key}={v} exceeds the {total} stored values")

    def want(name, shape):
        if shapes.get(name) != tuple(shape):
            raise bad(f"{name!r} is {shapes.get(name)}, the config implies {tuple(shape)}")

    def ints(*keys):
        vals = [config.get(k) for k in keys]
        return vals if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals) else None

    if class_name == "MLPVelocity" and ints("dim", "hidden", "depth"):
        dim, hidden, depth = ints("dim", "hidden", "depth")
        want("layers.0.weight", (hidden, dim + 1))
        want(f"layers.{depth}.weight", (dim, hidden))
        if f"layers.{depth + 1}.weight" in shapes:
            raise bad(f"more than depth + 1 = {depth + 1} layers stored")
    elif class_name == "UNetVelocity" and ints("channels", "width", "blocks"):
        channels, width, blocks = ints("channels", "width", "blocks")
        want("conv_in.weight", (width, channels, 3, 3))
        time_dim = config.get("time_dim") or 4 * width
        if isinstance(time_dim, int):
            want("time.1.weight", (time_dim, time_dim))
        mults = config.get("mults")
        if isinstance(mults, list) and all(isinstance(m, int) for m in mults):
            for i, m in enumerate(mults):
                conv = shapes.get(f"down.{i}.{blocks - 1}.conv1.weight")
                if conv is None or conv[0] != width * m:
                    raise bad(f"level {i} block {blocks - 1}: conv1 is {conv}, the config implies {width * m} "
                              "output channels")
            if any(k.startswith((f"down.{len(mults)}.", f"down.0.{blocks}.")) for k in shapes):
                raise bad(f"more levels or blocks stored than mults={mults}, blocks={blocks}")
    elif class_name == "Classifier" and ints("channels", "width"):
        channels, width = ints("channels", "width")
        want("conv.0.weight", (width, channels, 3, 3))


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
            raise InputError(f"parameter name {name!r} contains '/', which HDF5 paths cannot hold")
        arr = np.ascontiguousarray(arr)
        opts = _DATASET_OPTIONS if arr.ndim and arr.size else {}
        group.create_dataset(name, data=arr, **opts)


def _write_flat(group, state):
    """A flat dict of arrays and scalars: arrays as datasets, scalars as attributes."""
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            _write_arrays(group, {key: value})
        elif isinstance(value, str):
            set_str(group, key, value)
        else:
            group.attrs[key] = value


def _read_flat(g, name, path):
    sub = g.get(name)
    if not isinstance(sub, h5py.Group):
        raise FormatError(f"{path}: train_state/{name} missing")
    out = {k: _plain(v) for k, v in sub.attrs.items()}
    for key in sub:
        out[key] = read_dataset(sub, key, path)
    return out


def _plain(value):
    """An attribute value as Python scalar (fixed-length strings come back as bytes: decoded)."""
    value = value.item() if isinstance(value, np.generic) else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _write_train_state(g, state):
    g.attrs["step"] = int(state["step"])
    g.attrs["seconds"] = float(state["seconds"])
    set_str(g, "rng", json.dumps(state["rng"]))
    _write_arrays(g.create_group("raw"), state["raw"])
    _write_arrays(g.create_group("history"), state["history"])
    _write_flat(g.create_group("optim"), state["optim"])
    if state["ema"] is not None:
        _write_flat(g.create_group("ema"), state["ema"])
