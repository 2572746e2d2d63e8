"""Post-training weight quantization: the paper's OT quantizer, its baselines and an exact W2-optimal codebook.

    qt = fmq_np.quant.quantize(w, bits=3, method="ot", granularity="channel")
    w_hat = qt.dequantize()
    qm = fmq_np.quant.quantize_model(named_arrays, bits=3, method="ot")
"""
from fmq_np.quant.model import QuantizedModel, quantize_model
from fmq_np.quant.schemes import METHODS, quantize
from fmq_np.quant.tensor import QuantizedTensor

__all__ = ["quantize", "quantize_model", "QuantizedTensor", "QuantizedModel", "METHODS"]
