"""Files: validated HDF5 for float models and quantized models, and import of named arrays from other tools.

``save(path, obj)`` writes a velocity model (``fmq_np.model``) or a QuantizedModel (``fmq_np.quantized``);
``load(path)`` reads either back, telling them apart by the file's ``format`` attribute. Loading never runs code
(no pickle) and raises :class:`~fmq_np.errors.FormatError` on anything malformed. Writes are atomic.

``read_arrays(path, key=None)`` reads the named arrays of other tools' files (.npz, .safetensors, .h5, and PyTorch
.pth/.pt/.ckpt checkpoints through a restricted unpickler that runs no code); ``ema_to_names`` maps flow_matching's
EMA ``shadow_params.<i>`` to parameter names; ``write_safetensors`` hands weights back to torch pipelines.
"""
from ..errors import FormatError, InputError
from ._h5 import open_h5, read_attr
from .checkpoint import load_model, save_model
from .importers import read_arrays, write_safetensors
from .torch_pth import ema_to_names


def file_format(path):
    """The ``format`` attribute of an fmq_np HDF5 file (``"fmq_np.model"`` or ``"fmq_np.quantized"``)."""
    with open_h5(path) as f:
        return read_attr(f, "format", str, path)


def save(path, obj, meta=None):
    """Write a velocity model or a QuantizedModel to ``path`` (HDF5, atomic)."""
    if hasattr(obj, "parameters") and hasattr(obj, "config"):
        return save_model(path, obj, meta=meta)
    from ..quant.model import QuantizedModel
    if isinstance(obj, QuantizedModel):
        from .quantized import save_quantized
        return save_quantized(path, obj)
    raise InputError(f"save: cannot store a {type(obj).__name__}; expected a model or a QuantizedModel")


def load(path):
    """Read ``path``: a float checkpoint gives the model, a quantized file gives the QuantizedModel."""
    kind = file_format(path)
    if kind == "fmq_np.model":
        return load_model(path)[0]
    if kind == "fmq_np.quantized":
        from .quantized import load_quantized
        return load_quantized(path)
    raise FormatError(f"{path}: unknown format {kind!r}")


def load_velocity_model(path):
    """A ready-to-run velocity model from a float checkpoint, or from a quantized file that records its model
    class and config (weights dequantized). Returns ``(model, description)``."""
    kind = file_format(path)
    if kind == "fmq_np.model":
        model, meta = load_model(path)
        return model, "float"
    qm = load(path)
    cls, cfg = qm.meta.get("model_class"), qm.meta.get("model_config")
    if cls is None or cfg is None:
        raise FormatError(f"{path}: quantized file does not record its model class/config; cannot rebuild a model")
    from .checkpoint import build_model
    model = build_model(cls, cfg, path)
    try:
        model.load_parameters(qm.dequantize())
    except InputError as exc:
        raise FormatError(f"{path}: quantized tensors do not fit {cls}: {exc}") from None
    return model, f"{qm.meta.get('method')} {qm.meta.get('bits')}-bit"


from .external import load_external_model  # noqa: E402  (after the names it uses)

__all__ = ["save", "load", "load_velocity_model", "load_external_model", "file_format", "save_model", "load_model",
           "read_arrays", "write_safetensors", "ema_to_names"]
