"""Theory: from weight quantization error to the drift of generated samples — bounds checked against measurement.

* :mod:`.weights`      measured and predicted per-tensor errors (uniform Δ²/12, Panter–Dite, equal-mass OT)
* :mod:`.lipschitz`    certified upper and empirical lower Lipschitz constants; convolution operator norms
* :mod:`.network`      certified ε = sup‖v_θ − v_θ̂‖ over a box × t-interval (MLP), measured ε
* :mod:`.unet_bounds`  certified ε and L for the U-Net (interval + ball forms through GroupNorm);
  :mod:`.image_intervals` the interval convolutions, group-variance bounds and trig enclosures it uses
* :mod:`.flow_bounds`  Grönwall and fixed-step solver factors, the 2^(−b) scaling form, measured drift
* :mod:`.tube`         per-trajectory certified drift: Euler with interval Jacobians (MLP), any fixed-step solver
  with stage errors on balls (MLP, U-Net)
* :mod:`.allocate`     per-tensor bit widths minimising the first-order bound under a size budget
* :mod:`.cli_bounds`   ``run_bounds`` behind ``fmq-np bounds``; :mod:`.report` tables and JSON
"""
from .allocate import Allocation, allocate_bits
from .cli_bounds import run_bounds
from .flow_bounds import (discrete_factor, drift_scaling, flow_bound, gronwall_factor, log_gronwall_factor,
                          pathwise_drift, visited_points)
from .lipschitz import (conv_operator_norm, jacobian_norm_lower, lipschitz_lower, lipschitz_upper, spectral_norm)
from .network import ErrorBound, error_bound, measured_error, mlp_function
from .tube import TubeBound, euler_tube_bound, mlp_tube_bound, rk_tube_bound, unet_tube_bound
from .unet_bounds import UNetCertifier, UNetPair
from .weights import mse_constant, panter_dite_integral, predicted_mse, weight_errors

__all__ = ["allocate_bits", "Allocation", "run_bounds", "flow_bound", "gronwall_factor", "log_gronwall_factor",
           "discrete_factor", "drift_scaling", "pathwise_drift", "visited_points", "conv_operator_norm",
           "jacobian_norm_lower", "lipschitz_lower", "lipschitz_upper", "spectral_norm", "error_bound",
           "ErrorBound", "measured_error", "mlp_function", "euler_tube_bound", "TubeBound", "rk_tube_bound",
           "mlp_tube_bound", "unet_tube_bound", "UNetCertifier", "UNetPair", "weight_errors",
           "predicted_mse", "mse_constant", "panter_dite_integral"]
