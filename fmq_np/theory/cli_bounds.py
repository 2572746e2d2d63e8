"""``fmq-np bounds MODEL.h5 QUANTIZED.h5 [--json OUT]``: per-tensor errors (measured vs predicted) and the
network / flow bounds against the measured velocity error and sample drift.

Everything is computed on float64 copies of the two networks. The measured drift uses ``n_samples`` noise draws of
``seed`` integrated by ``solver`` with ``steps`` steps for both models; the MLP's certified ε and L hold on the box
that contains every point either solver run evaluated (plus ``margin``), so the flow bound is certified for these
noise draws (and bounds W2 between the two distributions up to the noise mass whose paths leave the box). The
much tighter per-trajectory tube bound (:mod:`fmq_np.theory.tube`) is reported as well (MLP: every draw, the
stage recursion; for Euler the per-draw minimum of it and the interval-Jacobian recursion).

U-Net (:mod:`fmq_np.theory.unet_bounds`): the certified ε and L on the same kind of box (per pixel) with the
t-interval cut into ``splits`` pieces, the global flow bound from them and the stage-recursion tube bound on the
first ``TUBE_DRAWS`` draws. The box and tube values are certified but very loose (see that module); they are printed as
computed, ``inf`` where they overflow.
"""
import numpy as np

from .._validate import check_int
from ..errors import FormatError, InputError
from . import flow_bounds, lipschitz, network, report, weights
from .tube import TubeBound, euler_tube_bound, mlp_tube_bound, unet_tube_bound
from .unet_bounds import UNetPair

#: noise draws the U-Net tube bound is computed on (three interval passes per solver stage and draw)
TUBE_DRAWS = 16
#: uniform points of the box on which the U-Net's ε is measured (besides the visited points)
BOX_POINTS = 256


def _load_pair(model_path, quantized_path):
    from .. import io
    from ..quant import QuantizedModel
    from ..quant.model import check_source
    model = io.load(model_path)
    if not hasattr(model, "parameters"):
        raise InputError(f"{model_path}: expected a float model checkpoint, got a quantized model")
    qm = io.load(quantized_path)
    if not isinstance(qm, QuantizedModel):
        raise InputError(f"{quantized_path}: not a quantized model (a float checkpoint?); run fmq-np quantize first")
    params = model.parameters()
    check_source(model_path, params, quantized_path, qm.meta)
    params_hat = qm.dequantize()
    try:
        network.check_pair(params, params_hat)
    except InputError as exc:
        raise InputError(f"{quantized_path} does not match {model_path}: {exc}") from None
    for name, w in params.items():
        if not np.isfinite(w).all():
            raise FormatError(f"{model_path}: tensor {name!r} contains NaN or Inf")
    return model, qm, params, params_hat


def _check_sizes(model, params, n_samples, steps, splits):
    """InputError before the work when ``n_samples``, ``splits`` (and ``steps``) cannot fit in memory."""
    from .._memory import check_memory, memory_budget
    from ..flow import sample_shape
    dim = int(np.prod(sample_shape(model)))
    per_draw = 8 * 2 * dim * (4 * steps + 4)          # float64 points both models visit (up to 4 stages a step)
    check_memory(per_draw * n_samples, f"the visited points of {n_samples} draws x {steps} steps", "-n",
                 n_samples, largest=memory_budget() // per_draw)
    if network.is_mlp(params):
        widths = sum(w.shape[0] for k, w in params.items() if k.endswith(".weight"))
        d_in = params["layers.0.weight"].shape[1]             # dim + 1 (t)
        per_box = 8 * 12 * widths                             # interval ranges of every layer, float64
        check_memory(per_box * splits ** d_in, f"interval bounds on {splits}^{d_in} sub-boxes", "--splits", splits,
                     largest=int((memory_budget() / per_box) ** (1.0 / d_in)))
    else:
        width = int(model.config().get("width", 32)) if hasattr(model, "config") else 32
        per_piece = 8 * 2 * 64 * width * dim                  # interval activations of one t-piece, float64
        check_memory(per_piece * splits, f"U-Net interval bounds on {splits} t-pieces", "--splits", splits,
                     largest=memory_budget() // per_piece)


def tensor_rows(params, qm):
    """One row per tensor: measured errors and, for quantized tensors of a predictable method, the prediction."""
    from ..quant import QuantizedTensor
    params_hat = qm.dequantize()
    rows = []
    for name, w in params.items():
        qt = qm.tensors[name]
        quantized = isinstance(qt, QuantizedTensor)
        gran = qt.granularity if quantized else "tensor"
        gsize = (qt.group_size or 0) if quantized else 0
        row = dict(name=name, shape=tuple(np.shape(w)), bits=qt.bits if quantized else None,
                   method=qt.method if quantized else "skipped")
        row.update(weights.weight_errors(w, params_hat[name], gran, gsize, name))
        if quantized and qt.method in weights.PREDICTABLE and qt.bits <= 8:
            row["predicted_mse"] = weights.predicted_mse(w, qt.bits, qt.method, gran, group_size=gsize, name=name)
            row["pred/meas"] = row["predicted_mse"] / row["mse"] if row["mse"] > 0 else None
        rows.append(row)
    return rows


def flow_summary(model, params_hat, *, n_samples, solver, steps, seed, splits, margin):
    """Measured ε / drift / sliced-W2 and the certified ε, L, flow and tube bounds (dict of floats and arrays)."""
    from ..eval.metrics import sliced_w2
    from ..flow import noise
    params = {k: np.asarray(v, np.float64) for k, v in model.parameters().items()}
    params_hat = {k: np.asarray(v, np.float64) for k, v in params_hat.items()}
    if network.is_mlp(params):
        m64, m64_hat = network.mlp_function(params), network.mlp_function(params_hat)
    else:
        m64, m64_hat = lipschitz.float64_copy(model), lipschitz.float64_copy(model)
        m64_hat.load_parameters(params_hat)
    x0 = noise(model, n_samples, seed).astype(np.float64)
    rms, mx, x1, x1_hat = flow_bounds.pathwise_drift(m64, m64_hat, x0, solver=solver, steps=steps)
    xa, ta = flow_bounds.visited_points(m64, x0, solver=solver, steps=steps)
    xb, tb = flow_bounds.visited_points(m64_hat, x0, solver=solver, steps=steps)
    pts, tms = np.concatenate([xa, xb]), np.concatenate([ta, tb])
    eps_meas = network.measured_error(m64, m64_hat, pts, tms)[0]
    out = dict(solver=solver, steps=steps, n_samples=n_samples, drift_rms=rms, drift_max=mx,
               sliced_w2=sliced_w2(x1, x1_hat, seed=seed), eps_measured=eps_meas,
               lipschitz_lower=lipschitz.lipschitz_lower(m64, x0[:min(64, len(x0))], steps=min(steps, 10)))
    lo, hi = pts.min(axis=0) - margin, pts.max(axis=0) + margin
    rng = np.random.default_rng(seed)
    bound_solver = solver if solver in flow_bounds.TABLEAUX else "exact"
    if not network.is_mlp(params):
        out.update(_unet_summary(model, params_hat, m64, m64_hat, x0, eps_meas, lo, hi, rng, splits, solver, steps))
        out["note"] = ("U-Net: the certified eps, L and drift bounds are loose by many orders (GroupNorm 1/sigma "
                       "and products of per-layer norms); see fmq_np.theory.unet_bounds")
    else:
        xs = rng.uniform(lo, hi, (20000, len(lo)))
        eps_box = max(eps_meas, network.measured_error(m64, m64_hat, xs, rng.uniform(0, 1, len(xs)))[0])
        bound = network.mlp_error_bound(params, params_hat, lo, hi, splits=splits)
        L_up = lipschitz.mlp_lipschitz_upper(params, lo, hi, splits=max(1, splits // 2))  # one SVD per layer, box
        if solver in flow_bounds.TABLEAUX:
            tube = mlp_tube_bound(params, params_hat, x0, solver, steps)
            if solver == "euler":                                  # both certified per draw: keep the smaller
                other = euler_tube_bound(params, params_hat, x0, steps, fallback=(bound.eps, L_up))
                tube = TubeBound(np.minimum(tube.per_sample, other.per_sample), np.minimum(tube.history,
                                                                                            other.history))
            out.update(tube_bound_max=tube.max, tube_bound_rms=tube.rms, tube_draws=len(x0),
                       tube_drift_max=mx, tube_tightness=tube.max / mx if mx > 0 else None)
        out.update(eps_bound=bound.eps, eps_measured_box=eps_box, lipschitz_upper=L_up)
    out.update(box_lo=lo, box_hi=hi, eps_tightness=_ratio(out["eps_bound"], out["eps_measured_box"]))
    flow = flow_bounds.flow_bound(out["eps_bound"], out["lipschitz_upper"], bound_solver,
                                  steps if bound_solver != "exact" else None)
    out.update(flow_bound=flow, flow_bound_solver=bound_solver, flow_tightness=_ratio(flow, mx))
    return out


def _ratio(bound, measured):
    return bound / measured if measured > 0 else None


def _unet_summary(model, params_hat, m64, m64_hat, x0, eps_meas, lo, hi, rng, splits, solver, steps):
    """The U-Net's certified values (see the module doc) and the measurements they are compared with."""
    pair = UNetPair(model, params_hat)
    eps, L, _ = pair.error_bound(lo, hi, (0.0, 1.0), t_splits=splits)
    xs = rng.uniform(lo, hi, (BOX_POINTS,) + lo.shape)
    eps_box = max(eps_meas, network.measured_error(m64, m64_hat, xs, rng.uniform(0, 1, len(xs)))[0])
    out = dict(eps_bound=eps, eps_measured_box=eps_box, lipschitz_upper=L)
    if solver in flow_bounds.TABLEAUX:
        draws = x0[:TUBE_DRAWS]
        tube = unet_tube_bound(model, params_hat, draws, solver, steps)
        d_max = flow_bounds.pathwise_drift(m64, m64_hat, draws, solver=solver, steps=steps)[1]
        out.update(tube_bound_max=tube.max, tube_bound_rms=tube.rms, tube_draws=len(draws), tube_drift_max=d_max,
                   tube_tightness=_ratio(tube.max, d_max))
    return out


def run_bounds(model_path, quantized_path, *, json_out=None, n_samples=256, solver="euler", steps=20, seed=0,
               splits=8, margin=0.5):
    """Compare ``quantized_path`` with ``model_path``: returns the report as text; writes JSON to ``json_out``.

    ``n_samples`` noise draws (``seed``) are integrated with ``solver``/``steps`` by both networks; ``splits``
    sub-boxes per axis tighten the MLP's certified bounds (cost ∝ splits^(dim+1)); for the U-Net they cut the
    t-interval into that many pieces; ``margin`` widens the box.
    """
    check_int("n_samples", n_samples, 1)
    check_int("splits", splits, 1)
    check_int("steps", steps, 1)
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.integer, np.floating)) or \
            not (np.isfinite(margin) and margin >= 0):
        raise InputError(f"margin must be a finite number >= 0 (a negative one shrinks the box below the visited "
                         f"points and the bound is no longer certified), got {margin!r}")
    model, qm, params, params_hat = _load_pair(model_path, quantized_path)
    _check_sizes(model, params, n_samples, steps, splits)
    rows = tensor_rows(params, qm)
    summary = flow_summary(model, params_hat, n_samples=n_samples, solver=solver, steps=steps, seed=seed,
                           splits=splits, margin=margin)
    cols = ["name", "shape", "method", "bits", "frobenius", "mse", "predicted_mse", "pred/meas", "w2", "max_abs"]
    text = [report.table(rows, cols, title=f"weights: {quantized_path} vs {model_path}"), ""]
    flow_rows = [dict(quantity="eps = sup|v - v_hat| on the box", bound=summary["eps_bound"],
                      measured=summary["eps_measured_box"], ratio=summary["eps_tightness"]),
                 dict(quantity="Lipschitz L", bound=summary["lipschitz_upper"],
                      measured=summary["lipschitz_lower"]),
                 dict(quantity=f"drift |x1 - x1_hat| ({solver}, {steps} steps)", bound=summary["flow_bound"],
                      measured=summary["drift_max"], ratio=summary.get("flow_tightness")),
                 dict(quantity=f"drift |x1 - x1_hat|, tube bound ({summary.get('tube_draws', 0)} draws)",
                      bound=summary.get("tube_bound_max"), measured=summary.get("tube_drift_max"),
                      ratio=summary.get("tube_tightness")),
                 dict(quantity="drift RMS (>= W2)", bound=summary.get("tube_bound_rms") if
                      summary.get("tube_draws") == n_samples else None, measured=summary["drift_rms"]),
                 dict(quantity="sliced W2", measured=summary["sliced_w2"])]
    text.append(report.table(flow_rows, ["quantity", "bound", "measured", "ratio"], title="flow"))
    if "note" in summary:
        text.append(f"note: {summary['note']}")
    if json_out is not None:
        report.write_json(json_out, dict(model=str(model_path), quantized=str(quantized_path), meta=qm.meta,
                                         tensors=rows, flow=summary))
    return "\n".join(text)
