"""Quantize a whole model: named float arrays → :class:`QuantizedModel`, with per-tensor policies and a report.

``quant`` knows nothing of ``fmq_np.nn``: a model is just an ordered ``dict[str, ndarray]``.
"""
import hashlib

import numpy as np

from fmq_np.errors import InputError
from fmq_np._validate import check_bits
from fmq_np.quant.schemes import as_float_array, check_options, paper_skip_reason, quantize_checked
from fmq_np.quant.tensor import QuantizedTensor


class QuantizedModel:
    """Named tensors, each a :class:`QuantizedTensor` or a plain ndarray kept in float (skipped).

    ``meta`` is JSON-serialisable: ``bits, method, granularity, group_size, paper_compat``, ``source_digest``
    (:func:`weights_digest` of the arrays it was quantized from) and optionally ``model_class`` / ``model_config``
    (set by callers so that a float model can be rebuilt).
    """

    def __init__(self, tensors, meta, originals=None, skipped=None):
        self.tensors = dict(tensors)
        self.meta = dict(meta)
        self._originals = originals or {}      # name -> float array before quantization (for the report)
        self._skipped = skipped or {}          # name -> why it was kept as it is
        self._report = None

    def dequantize(self):
        """``dict[str, ndarray]`` in the input order: quantized tensors reconstructed, skipped ones as stored."""
        return {name: t.dequantize() if isinstance(t, QuantizedTensor) else t for name, t in self.tensors.items()}

    @property
    def report(self):
        """One dict per tensor: name, shape, bits, method, mse, w2, levels_used, bits_per_weight, bytes_before,
        bytes_after, skipped. ``mse``/``w2`` are None when the original arrays are unknown (a loaded model)."""
        if self._report is None:
            self._report = [report_row(name, t, self._originals.get(name), self._skipped.get(name))
                            for name, t in self.tensors.items()]
        return self._report

    @property
    def nbytes(self):
        """Bytes to store every tensor (quantized: packed codes + codebooks)."""
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def bits_per_weight(self):
        """Storage bits per weight of the quantized tensors: packed codes at each tensor's own width (mixed widths
        included) plus their codebooks / scales, over the number of their values (tensors kept in float are not
        counted; None when none is quantized)."""
        qts = [t for t in self.tensors.values() if isinstance(t, QuantizedTensor)]
        size = sum(t.size for t in qts)
        return sum(t.bits * t.size + t.overhead_bits for t in qts) / size if size else None


#: values per chunk of the report's float64 arithmetic (bounded memory on tensors of hundreds of millions of values)
_CHUNK = 1 << 18


def weights_digest(named_arrays):
    """``"sha256:<hex>"`` of the names, dtypes, shapes and values (native byte order, C order) of ``named_arrays``,
    in order: quantize_model records it so that a quantized file can be matched with the float model it came from."""
    h = hashlib.sha256()
    for name, a in named_arrays.items():
        a = np.asarray(a)
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("="), copy=False))
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(memoryview(a.reshape(-1)).cast("B"))
    return "sha256:" + h.hexdigest()


def check_source(float_path, params, quantized_path, meta):
    """InputError when ``meta`` (a quantized file's metadata) records a digest of its source weights that
    ``params`` (read from ``float_path``) do not match; a UserWarning when it records none (files of older fmq_np
    versions: the check cannot be made). The paths only name the files in the messages."""
    import warnings
    digest = meta.get("source_digest") if isinstance(meta, dict) else None
    if digest is None:
        warnings.warn(f"{quantized_path} records no digest of its source weights (older fmq_np); cannot check that "
                      f"it was quantized from {float_path}", UserWarning, stacklevel=3)
    elif digest != weights_digest(params):
        raise InputError(f"{quantized_path} was not quantized from {float_path}: its source weights differ "
                         "(digest mismatch); pass the float model it came from")


def w2_distance(a, b):
    """Empirical 2-Wasserstein distance between the values of two equal-size arrays (sorted matching, float64).

    The values are sorted in their own dtype (the same order) and compared in float64 chunk by chunk, so the extra
    memory is one sorted copy of each array, not float64 copies."""
    x, y = np.sort(np.asarray(a).ravel()), np.sort(np.asarray(b).ravel())
    return float(np.sqrt(_sum_sq_diff(x, y) / x.size)) if x.size else 0.0


def _sum_sq_diff(x, y):
    """Σ (x − y)² in float64 over two flat arrays of equal size, chunk by chunk (NumPy's pairwise sum, not a BLAS
    dot, whose rounding depends on its thread count)."""
    total = 0.0
    for i in range(0, x.size, _CHUNK):
        d = x[i:i + _CHUNK].astype(np.float64) - y[i:i + _CHUNK].astype(np.float64)
        total += float(np.square(d, out=d).sum())
    return total


def report_row(name, t, original, skipped=None):
    """Report row of one tensor (``original``: the float array before quantization, or None)."""
    if isinstance(t, QuantizedTensor):
        w_hat = t.dequantize()
        itemsize = np.dtype(t.dtype).itemsize
        row = dict(name=name, shape=tuple(t.shape), bits=t.bits, method=t.method, levels_used=t.levels_used,
                   bits_per_weight=t.bits_per_weight, bytes_before=t.size * itemsize, bytes_after=t.nbytes,
                   skipped=t.meta.get("skipped", skipped))
    else:
        w_hat = t
        row = dict(name=name, shape=tuple(t.shape), bits=None, method=None, levels_used=None,
                   bits_per_weight=float(t.dtype.itemsize * 8), bytes_before=t.nbytes, bytes_after=t.nbytes,
                   skipped=skipped)
    if original is None:
        row.update(mse=None, w2=None)
    else:
        x, y = np.asarray(original).ravel(), np.asarray(w_hat).ravel()
        row.update(mse=_sum_sq_diff(x, y) / x.size if x.size else 0.0, w2=w2_distance(x, y))
    return row


def default_policy(bits, paper_compat=False):
    """The policy ``quantize_model`` uses when given none: ``policy(name, array)`` returns ``bits`` for every tensor,
    except 1-D ones (biases, norm scales), kept in float (None) unless ``paper_compat``.

    (``quantize_model`` with this policy also keeps in float, unless ``paper_compat``, a tiny tensor: one whose
    groups hold no more values than there are levels, that the quantizer reproduces exactly (``ot``, ``ot-opt``),
    and whose codebooks would take as many bytes as its values. The dequantized model is the same either way.)"""
    def policy(name, array):
        return bits if paper_compat or array.ndim > 1 else None
    return policy


def quantize_model(named_arrays, *, bits=3, method="ot", granularity="channel", group_size=None, paper_compat=False,
                   policy=None, weights=None, device="auto", calibration=None, error_feedback=None,
                   bias_correction=None):
    """Quantize every float array of ``named_arrays`` → :class:`QuantizedModel`.

    ``policy(name, array) -> bits | None`` picks each tensor's bit width: it is called once per float tensor, in
    order, with the tensor's name and its float array (not to be modified), and returns an integer width in 1..8
    (``bits`` then only sets ``meta["bits"]`` for it) or None to keep the tensor in float; any other answer is an
    InputError naming the tensor. Without one, :func:`default_policy` ``(bits, paper_compat)`` keeps 1-D tensors in
    float unless ``paper_compat``, and tiny tensors that would not shrink are kept in float too (see there).
    With ``paper_compat=True`` the published skip rule applies
    (``numel < 2**bits`` for ot/pwl/log2 → kept in float). Non-float arrays are kept as they are.
    ``weights``: optional ``dict[name, importance array]`` for ``method="ot-opt"``. ``method="log2"`` at 1 bit warns
    (its two levels are the smallest magnitudes). ``meta["source_digest"]`` records :func:`weights_digest` of
    ``named_arrays``.

    ``calibration``: a :class:`~fmq_np.quant.calibrate.Calibration` of the model these arrays are the weights of
    (another model's → InputError). It turns on, for every ≥ 2-D float tensor, per channel: error feedback
    through the layer's input Hessian on the method's codebook (``error_feedback``, default True: what measured
    best), bias correction of the float biases only with ``bias_correction=True``, and mixed widths when ``bits``
    is fractional (a budget on the average code width of the quantized tensors, among the calibrated widths;
    ``bits_per_weight`` adds the codebooks). See :mod:`fmq_np.quant.calibrate`.
    """
    if calibration is not None:
        if policy is not None or weights is not None or paper_compat or granularity != "channel" or group_size:
            raise InputError("calibration= quantizes per channel with its own weights and widths: it takes no "
                             "policy, weights, paper_compat or other granularity")
        check_options(2, method, granularity, None, False)
        from fmq_np.quant.calibrate import quantize_calibrated
        return quantize_calibrated(named_arrays, bits, method, calibration,
                                   error_feedback_on=True if error_feedback is None else bool(error_feedback),
                                   bias_correction=bool(bias_correction),
                                   device=device)
    if error_feedback or bias_correction:
        raise InputError("error_feedback and bias_correction need calibration= (fmq_np.quant.calibrate)")
    bits, group_size = check_options(bits, method, granularity, group_size, paper_compat)
    if not hasattr(named_arrays, "items"):
        raise InputError("named_arrays must be a mapping of name -> array")
    weights = weights or {}
    custom = policy is not None
    policy = policy if custom else default_policy(bits, paper_compat)
    why = "kept in float by policy" if custom else "1-D tensor kept in float (default policy)"
    tensors, originals, skipped = {}, {}, {}
    for name, array in named_arrays.items():
        array = np.asarray(array)
        if array.dtype.kind != "f":
            tensors[name], originals[name], skipped[name] = array, array, "not a float array"
            continue
        array = as_float_array(array, name)
        b = policy(name, array)
        b = None if b is None else check_bits(b, f"policy({name!r})")
        rule = paper_skip_reason(array.size, b, method) if b is not None and paper_compat else None
        originals[name] = array
        if b is None or rule:
            tensors[name], skipped[name] = array, rule or why
            continue
        qt = quantize_checked(array, bits=b, method=method, granularity=granularity, group_size=group_size,
                              paper_compat=paper_compat, weights=weights.get(name), device=device, name=name)
        if (not custom and not paper_compat and qt.codes.shape[1] <= qt.n_levels and qt.nbytes >= array.nbytes
                and np.array_equal(qt.dequantize(), array)):
            tensors[name], skipped[name] = array, (f"kept in float: {qt.codes.shape[1]} values per group for "
                                                   f"{qt.n_levels} levels are reproduced exactly, in {qt.nbytes} "
                                                   f"bytes quantized vs {array.nbytes}")
            continue
        tensors[name] = qt
    meta = dict(bits=bits, method=method, granularity=granularity, group_size=group_size or None,
                paper_compat=bool(paper_compat), source_digest=weights_digest(named_arrays))
    return QuantizedModel(tensors, meta, originals, skipped)
