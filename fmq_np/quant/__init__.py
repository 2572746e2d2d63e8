"""Post-training weight quantization: the paper's OT quantizer, its baselines and an exact W2-optimal codebook.

    qt = fmq_np.quant.quantize(w, bits=3, method="ot", granularity="channel")
    w_hat = qt.dequantize()
    qm = fmq_np.quant.quantize_model(named_arrays, bits=3, method="ot")
    report = fmq_np.quant.quantize_file("model.safetensors.index.json", "q.h5", bits=3)   # streaming, resumable
    cal = fmq_np.quant.calibrate(model, data, seed=0)      # statistics along the flow (fmq_np.quant.calibrate)
    qm = fmq_np.quant.quantize_model(model.parameters(), bits=2, method="ot-opt", calibration=cal)
    qm = fmq_np.quant.tune_codebooks(model, qm, data, seed=0)   # levels fitted along the flow (fmq_np.quant.tune)
"""
from fmq_np.quant.calibrate import Calibration, calibrate, load_calibration
from fmq_np.quant.model import QuantizedModel, quantize_model
from fmq_np.quant.schemes import METHODS, quantize
from fmq_np.quant.stream import quantize_file
from fmq_np.quant.tensor import QuantizedTensor
from fmq_np.quant.tune import tune_codebooks

__all__ = ["quantize", "quantize_model", "QuantizedTensor", "QuantizedModel", "METHODS", "calibrate", "Calibration",
           "load_calibration", "tune_codebooks"]
__all__ += ["quantize_file"]
