"""Certified drift bounds along each sampled trajectory: local ε and local Jacobians / Lipschitz bounds in a tube.

For one noise draw x0, let x_k (k = 0..N−1, t_k = k/N, h = 1/N) be the full-precision Euler states and
B_k = x_k ± r_k (per coordinate) × {t_k}. If the quantized state x̂_k lies in B_k then

    x̂_{k+1} − x_{k+1} = (I + h·J̄_k)(x̂_k − x_k) + h·(v̂ − v)(x̂_k, t_k),

with J̄_k the mean Jacobian on the segment [x_k, x̂_k] ⊂ B_k, so e_{k+1} ≤ A_k·e_k + h·ε_k where
A_k = sup over the interval Jacobian C ± R of B_k of ‖I + hJ‖₂ ≤ ‖I + hC‖₂ + h‖R‖₂ and ε_k is the certified
velocity error on B_k (:func:`fmq_np.theory.network.box_errors`). The box radius is the bound itself, r_k = e_k
(known before step k), so x̂_k ∈ B_k holds by induction from e_0 = 0 and no fixed point has to be searched for.
The result is certified for the given noise draws (not for all noise).

Why it is much tighter than Grönwall with a global L: A_k sees the local contraction or expansion (‖I + hJ‖ can be
< 1 where the flow contracts) instead of 1 + h·sup‖J‖, and ε_k is the error near the trajectory instead of the
supremum over the whole region. What remains loose: the per-neuron intervals of the network (small here, the boxes
are tiny) and the triangle inequality between the propagated and the new error at each step (the new error need not
line up with the old one). When the drift is large (2–3 bits on a 64×3 MLP) the boxes grow, the interval
Jacobians widen and the tube bound explodes; pass ``fallback`` to cap each step by the global recursion.

Any fixed-step solver, any network (:func:`rk_tube_bound`): with stage states X_i = x + hΣ_j a_ij K_j of the
reference run and D_i a certified bound on sup ‖v̂(X̂, t_i) − v(X_i, t_i)‖ over the ball X̂ ∈ B(X_i, ρ_i),
ρ_i = e + hΣ_j |a_ij| D_j (the quantized stage state is in that ball by induction), one step gives
e' = e + hΣ_i |b_i| D_i. ``stage_error(center, rho, t)`` supplies D: :func:`mlp_stage_error` (MLP: min of
L·ρ + ε_box and L̂·ρ + ‖v̂(c) − v(c)‖, interval bounds on the box c ± ρ) or
:meth:`fmq_np.theory.unet_bounds.UNetPair.stage_error` (U-Net). For Euler on an MLP neither form dominates: this
one charges L̂·ρ where the interval Jacobian's ‖I + hJ‖ can see contraction, but its point term ‖v̂(c) − v(c)‖ is
exact where ε_box is not (1.2–1.5× the measured drift on the tested MLP, all four solvers). On the U-Net, L̂ is a
product of ~25 per-layer bounds (10^12 at a point, 10^31 and more on balls of radius 1e-4, see
:mod:`~.unet_bounds`), so the recursion e' ≈ (1 + hL̂)e + hε is exact after one step and overflows after two or
three: certified, but loose by many orders.
"""
from dataclasses import dataclass

import numpy as np

from .._validate import check_int
from ..errors import InputError
from .flow_bounds import TABLEAUX
from .lipschitz import float64_copy, mlp_lipschitz_boxes
from .network import SAFETY, box_errors, check_pair, jacobian_interval, mlp_function, mlp_layers
from .unet_bounds import UNetPair


@dataclass
class TubeBound:
    """Per-trajectory certified drift ``per_sample`` (n,) after the last step, the whole bound history ``history``
    (steps + 1, n), and the summaries ``max`` and ``rms`` (≥ W2 of the two empirical sample sets)."""
    per_sample: np.ndarray
    history: np.ndarray

    @property
    def max(self):
        return float(self.per_sample.max())

    @property
    def rms(self):
        return float(np.sqrt(np.mean(self.per_sample ** 2)))


def euler_tube_bound(params, params_hat, x0, steps, fallback=None):
    """Certified ‖x̂_N − x_N‖ for each noise draw x0 (n, dim): ``steps`` Euler steps of both MLPVelocity parameter
    sets (float64 arithmetic), see the module doc.

    ``fallback``: optional (ε, L) certified on a region that contains every state of both runs (e.g. from
    :func:`fmq_np.theory.network.mlp_error_bound` and :func:`fmq_np.theory.lipschitz.mlp_lipschitz_upper` on the
    visited box); each step then takes the smaller of the tube step and the global step (1 + hL)e + hε, both
    valid, so the result is never worse than the global Euler bound."""
    check_pair(params, params_hat)
    layers, layers_hat = mlp_layers(params), mlp_layers(params_hat, "quantized model")
    x = np.asarray(x0, np.float64)
    dim = layers[0][0].shape[1] - 1
    if x.ndim != 2 or x.shape[1] != dim or not np.isfinite(x).all():
        raise InputError(f"x0 must be a finite (n, {dim}) array, got shape {x.shape}")
    check_int("steps", steps, 1)
    f = mlp_function(params)
    h = 1.0 / steps
    e = np.zeros((steps + 1, len(x)))
    for k in range(steps):
        t = np.full((len(x), 1), k * h)
        r = e[k][:, None]
        box_lo, box_hi = np.concatenate([x - r, t], axis=1), np.concatenate([x + r, t], axis=1)
        eps = box_errors(layers, layers_hat, box_lo, box_hi)[0]
        c, rad = jacobian_interval(layers, box_lo, box_hi)
        growth = (np.linalg.svd(np.eye(dim) + h * c, compute_uv=False)[:, 0]
                  + h * np.linalg.svd(rad, compute_uv=False)[:, 0])
        e[k + 1] = (growth * e[k] + h * eps) * SAFETY
        if fallback is not None:
            e[k + 1] = np.minimum(e[k + 1], ((1 + h * fallback[1]) * e[k] + h * fallback[0]) * SAFETY)
        x = x + h * f(x, t[:, 0])
    return TubeBound(e[-1], e)


def _check_run(x0, steps, solver):
    check_int("steps", steps, 1)
    if solver not in TABLEAUX:
        raise InputError(f"no tube bound for solver {solver!r}; choose from {', '.join(TABLEAUX)}")
    x = np.asarray(x0, np.float64)
    if x.ndim < 2 or not np.isfinite(x).all():
        raise InputError(f"x0 must be a finite (n, ...) array, got shape {x.shape}")
    return x


#: ball radius (units of x) beyond which a draw's bound is set to inf without evaluating (it is meaningless there
#: and the interval arithmetic would overflow)
HOPELESS = 1e50


def _stage(stage_error, x, rho, t):
    """stage_error on the draws whose rho is below HOPELESS; inf for the others."""
    d = np.full(len(x), np.inf)
    ok = rho < HOPELESS
    if ok.any():
        d[ok] = stage_error(x[ok], rho[ok], t[ok])
    return d


def rk_tube_bound(stage_error, f, x0, solver, steps):
    """Certified ‖x̂_N − x_N‖ per noise draw for ``steps`` steps of a fixed-step ``solver`` (euler, midpoint, heun2,
    rk4; step h = 1/steps from t = 0) run by the reference field ``f(x, t)`` (float64, x (n, ...), t (n,)) and a
    perturbed one, given ``stage_error(center (n, ...), rho (n,), t (n,)) -> (n,)``: a certified bound on
    sup over x̂ ∈ B(center, rho) of ‖v̂(x̂, t) − v(center, t)‖₂ (see the module doc). Returns :class:`TubeBound`;
    a draw whose bound passes ``HOPELESS`` is reported as inf."""
    x = _check_run(x0, steps, solver)
    a_rows, b = TABLEAUX[solver]
    h = 1.0 / steps
    n = len(x)
    e = np.zeros((steps + 1, n))
    for k in range(steps):
        ks, ds = [], []
        for row in a_rows:
            xi, rho = x, e[k].copy()
            for a, kj, dj in zip(row, ks, ds):
                if a != 0.0:
                    xi = xi + (h * a) * kj
                    rho = rho + h * abs(a) * dj
            ti = np.full(n, k * h + sum(row) * h)
            ks.append(np.asarray(f(xi, ti), np.float64))
            ds.append(_stage(stage_error, xi, rho * SAFETY, ti))
        x = x + h * sum(bi * ki for bi, ki in zip(b, ks))
        e[k + 1] = (e[k] + h * sum(abs(bi) * di for bi, di in zip(b, ds))) * SAFETY
    return TubeBound(e[-1], e)


def mlp_stage_error(params, params_hat):
    """``stage_error`` for two MLPVelocity parameter sets (float64): on the box c ± rho (which holds the ℓ2 ball),
    the smaller of L·ρ + ε_box and L̂·ρ + ‖v̂(c) − v(c)‖ (certified ε and per-box Lipschitz bounds)."""
    check_pair(params, params_hat)
    layers, layers_hat = mlp_layers(params), mlp_layers(params_hat, "quantized model")
    f, f_hat = mlp_function(params), mlp_function(params_hat)

    def stage_error(center, rho, t):
        r = rho[:, None]
        box_lo = np.concatenate([center - r, t[:, None]], axis=1)
        box_hi = np.concatenate([center + r, t[:, None]], axis=1)
        eps_box = box_errors(layers, layers_hat, box_lo, box_hi)[0]
        via_box = mlp_lipschitz_boxes(layers, box_lo, box_hi) * rho + eps_box
        v, v_hat = f(center, t), f_hat(center, t)
        at_c = np.linalg.norm(v_hat - v, axis=1) + 1e-12 * (1.0 + np.linalg.norm(v, axis=1)
                                                             + np.linalg.norm(v_hat, axis=1))
        via_point = mlp_lipschitz_boxes(layers_hat, box_lo, box_hi) * rho + at_c
        return np.minimum(via_box, via_point) * SAFETY
    return stage_error


def mlp_tube_bound(params, params_hat, x0, solver, steps):
    """:func:`rk_tube_bound` for two MLPVelocity parameter sets (float64) and noise x0 (n, dim)."""
    return rk_tube_bound(mlp_stage_error(params, params_hat), mlp_function(params), x0, solver, steps)


def unet_tube_bound(model, params_hat, x0, solver, steps):
    """:func:`rk_tube_bound` for a UNetVelocity and its dequantized parameters, noise x0 (n, C, H, W)."""
    return rk_tube_bound(UNetPair(model, params_hat).stage_error, float64_copy(model), x0, solver, steps)
