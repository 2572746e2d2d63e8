"""Flow matching: the CondOT path, time samplers, training (:func:`fit`), ODE solvers, :func:`sample` and
:func:`log_likelihood`."""
from .coupling import ot_pairing
from .likelihood import Likelihood, divergence, log_likelihood
from .paths import condot_sample, skewed_times, time_sampler, uniform_times
from .sampling import noise, sample, velocity_field
from .shapes import sample_shape
from .solvers import SOLVERS, OdeResult, integrate
from .train import BatchStep, History, fit

__all__ = ["fit", "BatchStep", "History", "sample", "noise", "velocity_field", "integrate", "OdeResult", "SOLVERS",
           "condot_sample", "uniform_times", "skewed_times", "time_sampler", "ot_pairing", "sample_shape",
           "log_likelihood", "Likelihood", "divergence"]
