"""Neural networks in NumPy + Numba with hand-written backward passes, and their optimizers.

    m = fq.nn.UNetVelocity(channels=1, size=28, width=32, seed=0)
    v = m.forward(x, t); dx = m.backward(dv)          # gradients land in m.gradients()
    opt = fq.nn.AdamW(m.parameters(), lr=1e-3); opt.step(m.gradients())

See :mod:`fmq_np.nn.layers` (layers, layouts), :mod:`fmq_np.nn.models` (networks), :mod:`fmq_np.nn.adm` (the ADM
U-Net of flow_matching / torchcfm, with torch's state-dict names), :mod:`fmq_np.nn.optim`, :mod:`fmq_np.nn.build`
(which network fits a dataset: :func:`build_for_dataset`).
"""
from .layers import (SELU, Conv2d, GlobalAvgPool, GroupNorm, Linear, Module, ResBlock, SiLU,  # noqa: F401
                     TimeEmbedding)
from .models import MODELS, Classifier, MLPVelocity, UNetVelocity, cross_entropy  # noqa: F401
from .optim import EMA, AdamW, lr_schedule  # noqa: F401
from .adm import ADMUNet  # noqa: F401
from .build import ARCHITECTURES, build_for_dataset, check_fits  # noqa: F401

MODELS["ADMUNet"] = ADMUNet   # checkpoint files rebuild models by class name from this registry

__all__ = ["MLPVelocity", "UNetVelocity", "ADMUNet", "Classifier", "MODELS", "cross_entropy", "AdamW", "EMA",
           "lr_schedule", "build_for_dataset", "check_fits", "ARCHITECTURES", "Module", "Linear", "Conv2d",
           "GroupNorm", "SiLU", "SELU", "TimeEmbedding", "ResBlock", "GlobalAvgPool"]
