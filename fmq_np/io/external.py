"""Models whose weights come from another tool's file: an ADM U-Net built from its config and a weight file.

    model, how = fq.io.load_external_model("checkpoint.pth", "mnist_config.json", key="model")

``config``: a dict or the path of a JSON file holding one: flow_matching's ``MODEL_CONFIGS`` entry (the keys of
:class:`fmq_np.nn.ADMUNet`, with ``image_size`` set so the sampler knows the shape). ``path``: any weight file
:func:`fmq_np.io.read_arrays` reads (.pth and other torch checkpoints, .safetensors, .npz, HDF5 of datasets), or a
packed quantized file of such weights (``fmq-np quantize weights.pth --key model --out q.h5``; dequantized here).
``key``: the entry of a torch checkpoint to read (``"model"`` for flow_matching's training checkpoints).

flow_matching saves the EMA wrapper's state dict (``model.<name>`` live weights, ``num_updates``,
``shadow_params.<i>`` averaged weights). ``weights="ema"`` (default) loads the averaged weights
(:func:`fmq_np.io.ema_to_names`), ``"live"`` the ``model.<name>`` ones; a plain state dict is loaded as it is.
float16 and bfloat16 tensors are widened to float32 (exactly). Loading is strict (names, shapes): errors name the
file and the first mismatch.
"""
import json
import os

import numpy as np

from ..errors import FmqError, FormatError, InputError

WEIGHTS = ("ema", "live")


def read_config(config):
    """``config`` as a dict: a dict is returned as it is, a str is the path of a JSON object."""
    if isinstance(config, dict):
        return config
    if not isinstance(config, (str, os.PathLike)):
        raise InputError(f"config must be a dict or the path of a JSON file, got {type(config).__name__}")
    try:
        with open(config) as f:
            cfg = json.load(f)
    except OSError as exc:
        raise FormatError(f"{config}: cannot read the config ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise FormatError(f"{config}: not a JSON file ({exc})") from None
    if not isinstance(cfg, dict):
        raise FormatError(f"{config}: the config must be a JSON object of ADMUNet settings, got a "
                          f"{type(cfg).__name__}")
    return cfg


def load_external_model(path, config, key=None, weights="ema"):
    """An :class:`~fmq_np.nn.ADMUNet` of ``config`` holding the weights of ``path``; returns ``(model, how)``,
    ``how`` a short description ("ema weights of checkpoint.pth", "ot 3-bit dequantized ...")."""
    from . import file_format, load, read_arrays
    from .importers import _pick
    from ..nn import ADMUNet
    if weights not in WEIGHTS:
        raise InputError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    cfg = read_config(config)
    try:
        model = ADMUNet(**cfg)
    except InputError as exc:
        raise InputError(f"{config if not isinstance(config, dict) else 'config'}: {exc}") from None
    path = os.fspath(path)
    if path.lower().endswith((".h5", ".hdf5")) and file_format(path) == "fmq_np.quantized":
        qm = load(path)
        arrays = qm.dequantize() if key is None else _pick(qm.dequantize(), key, path, ".")
        how = f"{qm.meta.get('method')} {qm.meta.get('bits')}-bit dequantized"
    else:
        arrays = read_arrays(path, key=key)
        how = "weights"
    params, layout = _state_dict(arrays, model, weights, path)
    try:
        model.load_parameters(params)
    except (InputError, FmqError) as exc:
        raise FormatError(f"{path}: the weights do not fit the config's ADMUNet: {exc}") from None
    return model, f"{how} ({layout}) of {os.path.basename(path)}"


def _state_dict(arrays, model, weights, path):
    """``(parameters, layout)`` from ``arrays``: an EMA wrapper's ``weights`` mapped to the model's names (layout
    ``weights``) or a plain state dict (layout ``"state dict"``); half floats widened."""
    from .torch_pth import ema_to_names
    layout = "state dict"
    if any(k == "shadow_params.0" or k.endswith(".shadow_params.0") for k in arrays):
        layout = weights
        if weights == "ema":
            try:
                arrays = ema_to_names(arrays, model.parameters())
            except InputError as exc:
                raise FormatError(f"{path}: the weights do not fit the config's ADMUNet: {exc}") from None
        else:
            prefix = next(k[:-len("shadow_params.0")] for k in arrays if k.endswith("shadow_params.0")) + "model."
            arrays = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
    return {k: a.astype(np.float32) if a.dtype.kind == "f" and a.dtype.itemsize < 4 else a
            for k, a in arrays.items()}, layout
