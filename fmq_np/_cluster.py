"""Connecting to a Dask cluster (the optional extra ``fmq_np[dask]``): ``fmq-np quantize --scheduler ADDRESS``.

Point it at a real cluster by starting ``dask scheduler`` on one machine and ``dask worker tcp://HOST:8786`` on
each of the others, with the input and output on a file system they all see at the same path (workers read their
tensors by path and byte offset); then ``fmq-np quantize model.safetensors.index.json --out q.h5 --scheduler
tcp://HOST:8786``. The workers need fmq_np installed (the same version).
"""
from .errors import FmqError, InputError

#: seconds to wait for a scheduler before giving up
CONNECT_TIMEOUT = 5


def connect(address, timeout=CONNECT_TIMEOUT):
    """A ``distributed.Client`` of the scheduler at ``address`` (e.g. ``tcp://10.0.0.5:8786``); FmqError within
    ``timeout`` seconds when nothing answers there, or when Dask is not installed."""
    if not isinstance(address, str) or not address:
        raise InputError(f"scheduler address must be a non-empty str, got {address!r}")
    try:
        from distributed import Client
    except ImportError:
        raise FmqError("--scheduler needs Dask: pip install 'fmq_np[dask]' (dask.distributed)") from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise FmqError(f"no Dask scheduler answers at {address} within {timeout} s ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else 'no reply'})") from None
