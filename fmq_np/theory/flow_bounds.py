"""Flow level: from a velocity error ε to the drift of the generated samples.

Setting. v is L-Lipschitz in x (for all t ∈ [0, 1]) on a region that contains both flows, and the perturbed field
v̂ satisfies ‖v̂(x, t) − v(x, t)‖ ≤ ε there. Both flows start from the same noise x0 and run from t = 0 to t = 1.

* Continuous flow (Grönwall): ‖x̂_1 − x_1‖ ≤ ε·(e^L − 1)/L, hence W2(p_θ, p_θ̂) ≤ ε·(e^L − 1)/L (the same-noise
  coupling is one coupling of the two push-forwards). ``(e^L − 1)/L`` is evaluated as ``expm1(L)/L``, equals 1 at
  L = 0 and is kept in log-space (``log_factor``) when e^L would overflow.
* N fixed steps of an explicit Runge–Kutta method (``euler``, ``midpoint``, ``heun2``, ``rk4``, step h = 1/N):
  with stage errors dᵢ = ‖k̂ᵢ(x̂) − kᵢ(x)‖ ≤ αᵢ‖Δx‖ + βᵢε, αᵢ = L(1 + hΣⱼ|aᵢⱼ|αⱼ), βᵢ = 1 + LhΣⱼ|aᵢⱼ|βⱼ,
  one step maps ‖Δx‖ to at most (1 + a)‖Δx‖ + Bε with a = hΣᵢ|bᵢ|αᵢ, B = hΣᵢ|bᵢ|βᵢ, so after N steps
  ‖Δx_N‖ ≤ Bε·((1 + a)^N − 1)/a = Bε·expm1(N·log1p(a))/a (→ N·B·ε as L → 0). For Euler this is the classical
  ε·((1 + L/N)^N − 1)/L.

Tightness. On the linear field v = L·x with the constant perturbation v̂ = v + c (‖c‖ = ε) every inequality above is
an equality for L ≥ 0 and all four tableaux (their coefficients are non-negative), so the factors cannot be improved
in general. On trained networks they are loose because (i) the global Lipschitz constant is a worst case over the
whole region and all directions while trajectories see a much smaller local expansion (often contraction), and
(ii) ε is a supremum while the typical error along a trajectory is smaller and not aligned from step to step.

Units: ε in units of x per unit time, L in 1/time, the results in units of x.
"""
import math

import numpy as np

from .._validate import check_int
from ..errors import InputError

# Butcher tableaux (a: strictly lower triangular rows, b: weights) of the fixed-step solvers of fmq_np.flow.
TABLEAUX = {
    "euler": (((),), (1.0,)),
    "midpoint": (((), (0.5,)), (0.0, 1.0)),
    "heun2": (((), (1.0,)), (0.5, 0.5)),
    "rk4": (((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}


def _check_nonneg(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a real number, got {value!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"{name} must be finite and >= 0, got {value!r}")
    return value


def log_gronwall_factor(L):
    """log((e^L − 1)/L) for L ≥ 0 (0 at L = 0), stable for any L: L + log1p(−e^{−L}) − log L when L > 1."""
    L = _check_nonneg("L", L)
    if L == 0.0:
        return 0.0
    if L <= 1.0:
        return math.log(math.expm1(L) / L)
    return L + math.log1p(-math.exp(-L)) - math.log(L)


def gronwall_factor(L):
    """(e^L − 1)/L for L ≥ 0 with the L = 0 limit 1; ``inf`` only when the value itself exceeds float range."""
    L = _check_nonneg("L", L)
    if L == 0.0:
        return 1.0
    if L < 700.0:
        return math.expm1(L) / L
    lf = log_gronwall_factor(L)
    return math.exp(lf) if lf < 709.0 else math.inf


def step_constants(solver, L, steps):
    """(a, B) of one step of ``solver`` with step h = 1/steps: ‖Δx'‖ ≤ (1 + a)‖Δx‖ + B·ε (see module doc)."""
    if solver not in TABLEAUX:
        raise InputError(f"no fixed-step bound for solver {solver!r}; choose from {', '.join(TABLEAUX)}")
    check_int("steps", steps, 1)
    L = _check_nonneg("L", L)
    h = 1.0 / int(steps)
    a_rows, b = TABLEAUX[solver]
    alpha, beta = [], []
    for row in a_rows:
        alpha.append(L * (1.0 + h * sum(abs(c) * al for c, al in zip(row, alpha))))
        beta.append(1.0 + L * h * sum(abs(c) * be for c, be in zip(row, beta)))
    a = h * sum(abs(bi) * al for bi, al in zip(b, alpha))
    B = h * sum(abs(bi) * be for bi, be in zip(b, beta))
    return a, B


def log_discrete_factor(solver, L, steps):
    """log of the factor F with ‖x̂_N − x_N‖ ≤ ε·F for ``steps`` steps of a fixed-step ``solver`` (see module doc)."""
    a, B = step_constants(solver, L, steps)
    n = int(steps)
    if a == 0.0:
        return math.log(n * B)
    growth = n * math.log1p(a)                       # log (1 + a)^N
    log_expm1 = growth + math.log1p(-math.exp(-growth)) if growth > 1.0 else math.log(math.expm1(growth))
    return math.log(B) + log_expm1 - math.log(a)


def discrete_factor(solver, L, steps):
    """F with ‖x̂_N − x_N‖ ≤ ε·F for ``steps`` steps of ``solver`` ∈ euler, midpoint, heun2, rk4 (L = 0 → 1)."""
    lf = log_discrete_factor(solver, L, steps)
    return math.exp(lf) if lf < 709.0 else math.inf


def flow_bound(eps, L, solver="exact", steps=None):
    """Certified bound on the pathwise drift ‖x̂_1 − x_1‖ (and on W2 between the two sample distributions).

    ``solver="exact"``: the continuous flow, ε·(e^L − 1)/L. A fixed-step solver name with ``steps``: the discrete
    bound for that many steps. ``dopri5`` (adaptive steps chosen differently for the two fields) has no such bound:
    use ``"exact"`` (valid up to dopri5's own tolerance on each flow). Computed in log-space; ε = 0 gives 0.
    """
    eps = _check_nonneg("eps", eps)
    if eps == 0.0:
        return 0.0
    if solver == "exact":
        lf = log_gronwall_factor(L)
    elif solver in TABLEAUX:
        if steps is None:
            raise InputError(f"flow_bound: solver {solver!r} needs steps")
        lf = log_discrete_factor(solver, L, steps)
    else:
        raise InputError(f"flow_bound: unknown solver {solver!r}; choose 'exact' or one of {', '.join(TABLEAUX)}")
    total = math.log(eps) + lf
    return math.exp(total) if total < 709.0 else math.inf


def drift_scaling(bits, mse_constant, gain):
    """The cheap 2^(−b) form of the analysis: drift ≈ gain·√(C·2^(−2b)), i.e. W2² ∝ 2^(−2b).

    ``mse_constant`` C: per-weight MSE ≈ C·2^(−2b) (see :func:`fmq_np.theory.weights.mse_constant`); ``gain``: the
    factor turning an RMS weight error into drift (√n_weights × network sensitivity × flow factor). ``bits``
    scalar or array. The OT / uniform ratio of two such forms at equal gain is √(C_ot / C_uniform) in drift and
    C_ot / C_uniform in W2². Not a certified bound: it is the high-resolution approximation of one.
    """
    bits = np.asarray(bits, dtype=np.float64)
    return gain * np.sqrt(mse_constant) * np.exp2(-bits)


def pathwise_drift(model, model_hat, x0, *, solver="euler", steps=20, atol=1e-5, rtol=1e-5):
    """Measured drift between the two models' samples from the same noise x0 (n, ...) with the same solver.

    Returns (rms, max, x1, x1_hat): RMS and max over samples of ‖x̂_1 − x_1‖₂ (the RMS upper-bounds W2 between the
    two empirical sample sets) and the endpoints. The state has the dtype of x0 (float64 for bound checks).
    """
    from ..flow.solvers import integrate

    x0 = np.asarray(x0)

    def field(m):
        return lambda x, t: m(x, np.full(len(x), t, dtype=x.dtype))

    x1 = integrate(field(model), x0, solver=solver, steps=steps, atol=atol, rtol=rtol).x
    x1_hat = integrate(field(model_hat), x0, solver=solver, steps=steps, atol=atol, rtol=rtol).x
    d = np.linalg.norm((x1_hat - x1).reshape(len(x0), -1).astype(np.float64), axis=1)
    return float(np.sqrt(np.mean(d ** 2))), float(d.max()), x1, x1_hat


def visited_points(model, x0, *, solver="euler", steps=20, atol=1e-5, rtol=1e-5):
    """Every (x, t) at which ``solver`` evaluates ``model`` from x0: points (m, ...) and times (m,), float64.

    The box a certified ε and L must cover is the hull of these points for both models (plus a margin).
    """
    from ..flow.solvers import integrate

    xs, ts = [], []

    def field(x, t):
        xs.append(np.array(x, dtype=np.float64))
        ts.append(np.full(len(x), t, dtype=np.float64))
        return model(x, np.full(len(x), t, dtype=x.dtype))

    integrate(field, np.asarray(x0), solver=solver, steps=steps, atol=atol, rtol=rtol)
    return np.concatenate(xs), np.concatenate(ts)
