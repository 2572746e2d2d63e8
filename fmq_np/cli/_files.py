"""What kind of file a command was given (an fmq_np model, a quantized model, another tool's weight file) and how
to load it as a velocity model or as named arrays."""
from ..errors import InputError


def velocity_model(path, args, key=None):
    """``(model, description)`` of ``path``: an fmq_np file as it is, a weight file through ``--config``."""
    from .. import io
    if args.config is None:
        if not path.lower().endswith((".h5", ".hdf5")):
            raise InputError(f"{path}: a weight file needs --config CONFIG.json (its ADMUNet config, e.g. "
                           "flow_matching's MODEL_CONFIGS entry with image_size)")
        return io.load_velocity_model(path)
    if is_fmq_model(path):
        raise InputError(f"{path} is an fmq_np model, which records its own config; drop --config")
    return io.load_external_model(path, args.config, key=key, weights=args.weights)


def add_external_options(p):
    """The options of a command that also takes another tool's weight file: ``--config``, ``--key``, ``--weights``."""
    from ..io.external import WEIGHTS
    p.add_argument("--config", help="for a weight file (.pth, .safetensors, .npz; or its quantized .h5): the JSON "
                                    "config of its ADMUNet (flow_matching's MODEL_CONFIGS entry, with image_size)")
    p.add_argument("--key", help="with --config: the entry of a torch checkpoint holding the weights, e.g. 'model'")
    p.add_argument("--weights", choices=WEIGHTS, default="ema",
                   help="with --config, for flow_matching's EMA checkpoints: the averaged (default) or live weights")


def read_named_arrays(path):
    """Named float arrays of ``path`` and, for an fmq_np checkpoint, its model class/config (to rebuild it)."""
    from .. import io
    if is_fmq_model(path):
        model, _ = io.load_model(path)
        return model.parameters(), {"model_class": type(model).__name__, "model_config": model.config()}
    from ..io.importers import read_arrays
    return read_arrays(path), {}


def is_fmq_model(path):
    """Whether ``path`` is an fmq_np float model file."""
    return fmq_format(path) == "fmq_np.model"


def is_quantized(path):
    """Whether ``path`` is an fmq_np quantized model file."""
    return fmq_format(path) == "fmq_np.quantized"


def fmq_format(path):
    """The fmq_np format name of an HDF5 file, or None for any other file."""
    from .. import io
    from ..errors import FormatError
    if not path.endswith((".h5", ".hdf5")):
        return None
    try:
        return io.file_format(path)
    except FormatError:
        return None
