"""Bits where they matter: per-tensor bit widths that minimise a first-order form of the ε bound under a size budget.

Objective: Σ_l s_l·‖W_l − Q_{b_l}(W_l)‖_F over tensors l, subject to Σ_l n_l·b_l ≤ budget·Σ_l n_l (n_l = number of
weights, b_l ∈ ``choices``). For an MLPVelocity, s_l is the first-order sensitivity of the certified ε bound of
:mod:`fmq_np.theory.network` to the error of tensor l: ‖ΔW h‖ ≤ ‖ΔW‖_F·max‖h‖ enters layer l's pre-activation and is
amplified by at most G_l = Π_{j>l} 1.0998·‖W_j‖₂ (j = l+1 … D; the last layer's factor without the SiLU slope), so
s_weight = G_l·max‖h_l‖ over the box (interval bounds) and s_bias = G_l. For plain arrays all s_l = 1 (minimise
the total Frobenius error) unless ``sensitivity`` is given.

Solver: exact dynamic programming over the multiple-choice knapsack (tensors × bit widths, cost = extra bits over
the smallest width). Costs are counted in units of ⌈extra budget / 200 000⌉ bits, rounded *up* per tensor, so the
budget is never exceeded; with small models the unit is 1 bit and the solution is exactly optimal. (A marginal-
return greedy, or the Lagrangian relaxation, strands budget when one large tensor's next step does not fit.)
"""
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .lipschitz import spectral_norm
from .network import SILU_DERIV_MAX, is_mlp, make_boxes, mlp_layers, mlp_ranges


def _knapsack(names, sizes, choices, budget, sens, errors):
    """Bits per tensor minimising Σ sens·error under Σ size·bits ≤ budget·Σ size (exact DP, see module doc)."""
    b0 = choices[0]
    extra_budget = int(np.floor(budget * sum(sizes.values()) - b0 * sum(sizes.values()) + 1e-9))
    unit = max(1, -(-extra_budget // 200_000))
    cap = extra_budget // unit
    best = np.zeros(cap + 1)                              # best objective with extra cost ≤ c (units)
    picks = []
    for k in names:
        costs = [-(-(sizes[k] * (b - b0)) // unit) for b in choices]
        vals = [sens[k] * errors[k][b] for b in choices]
        cand = np.full((len(choices), cap + 1), np.inf)
        for j, (c, v) in enumerate(zip(costs, vals)):
            if c <= cap:
                cand[j, c:] = best[:cap + 1 - c] + v
        picks.append(np.argmin(cand, axis=0))
        best = cand.min(axis=0)
    bits, c = {}, cap
    for k, pick in zip(reversed(names), reversed(picks)):
        j = int(pick[c])
        bits[k] = choices[j]
        c -= -(-(sizes[k] * (choices[j] - b0)) // unit)
    return {k: bits[k] for k in names}


@dataclass
class Allocation:
    """Chosen ``bits`` per tensor, the resulting ``avg_bits`` per weight, the first-order ``objective``, the
    per-tensor ``sensitivity`` and ``errors`` (name → {bits: ‖W − Q_b(W)‖_F})."""
    bits: dict
    avg_bits: float
    objective: float
    sensitivity: dict
    errors: dict


def default_quantizer(method, granularity):
    """``f(w, bits) -> w_hat`` with :func:`fmq_np.quant.quantize` (imported on first use)."""
    def quantize(w, bits):
        from ..quant import quantize as q
        return q(w, bits=bits, method=method, granularity=granularity).dequantize()
    return quantize


def mlp_sensitivity(params, lo, hi, t_range=(0.0, 1.0)):
    """First-order sensitivities s_l of the ε bound (see module doc) for an MLPVelocity parameter dict."""
    layers = mlp_layers(params)
    box_lo, box_hi = make_boxes(lo, hi, t_range, 1)
    ranges = mlp_ranges(layers, box_lo, box_hi)
    out, gain = {}, 1.0
    for i in reversed(range(len(layers))):
        h_lo, h_hi = ranges[i][0][0], ranges[i][1][0]
        out[f"layers.{i}.weight"] = gain * float(np.linalg.norm(np.maximum(np.abs(h_lo), np.abs(h_hi))))
        out[f"layers.{i}.bias"] = gain
        if i > 0:                              # layer i-1's error passes SiLU, then W_i
            gain *= float(spectral_norm(layers[i][0])) * SILU_DERIV_MAX
    return out


def allocate_bits(model_or_arrays, budget_bits_per_weight, *, method="ot", granularity="channel", choices=range(2, 9),
                  sensitivity=None, quantizer=None, box=None, errors=None):
    """Per-tensor bit widths minimising Σ s_l‖W_l − Q(W_l)‖_F at ≤ ``budget_bits_per_weight`` bits per weight.

    ``model_or_arrays``: a velocity model (its ``parameters()``) or a dict name → array. ``quantizer(w, bits)``
    returns the dequantized array (default: fmq_np.quant with ``method`` and ``granularity``). ``box``: (lo, hi)
    of the inputs for the MLP sensitivities (default ±4 per coordinate). ``errors``: precomputed curves
    (name → {bits: ‖W − Q_b(W)‖_F}, e.g. a previous ``Allocation.errors``) to skip re-quantizing. Returns an
    :class:`Allocation`.
    """
    params = model_or_arrays.parameters() if hasattr(model_or_arrays, "parameters") else dict(model_or_arrays)
    if not params:
        raise InputError("allocate_bits: no tensors given")
    choices = sorted(set(int(c) for c in choices))
    if not choices or choices[0] < 1 or choices[-1] > 8:
        raise InputError(f"choices must be bit widths in 1..8, got {choices}")
    budget = float(budget_bits_per_weight)
    if not choices[0] <= budget:
        raise InputError(f"budget {budget} bits/weight is below the smallest choice {choices[0]}")
    quantizer = quantizer or default_quantizer(method, granularity)
    if sensitivity is None:
        if is_mlp(params):
            dim = params["layers.0.weight"].shape[1] - 1
            lo, hi = box if box is not None else (-4.0 * np.ones(dim), 4.0 * np.ones(dim))
            sensitivity = mlp_sensitivity(params, lo, hi)
        else:
            sensitivity = {k: 1.0 for k in params}
    missing = set(params) - set(sensitivity)
    if missing:
        raise InputError(f"sensitivity lacks tensor {sorted(missing)[0]!r}")
    errors = {} if errors is None else dict(errors)
    for name, w in params.items():
        w64 = np.asarray(w, np.float64)
        if not np.isfinite(w64).all():
            raise InputError(f"tensor {name!r} contains NaN or Inf")
        if name in errors and all(b in errors[name] for b in choices):
            continue
        errors[name] = {b: float(np.linalg.norm(np.asarray(quantizer(w, b), np.float64) - w64)) for b in choices}
    sizes = {k: int(np.size(v)) for k, v in params.items()}
    bits = _knapsack(list(params), sizes, choices, budget, {k: sensitivity[k] for k in params}, errors)
    spent = sum(sizes[k] * b for k, b in bits.items())
    total = sum(sizes.values())
    objective = sum(sensitivity[k] * errors[k][bits[k]] for k in params)
    return Allocation(bits, spent / total, float(objective), dict(sensitivity), errors)
