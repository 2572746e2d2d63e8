"""Certified ε = sup ‖v_θ(x, t) − v_θ̂(x, t)‖₂ and Lipschitz L of x ↦ v_θ(x, t) for :class:`fmq_np.nn.UNetVelocity`.

One pass through the U-Net's graph (the same order as ``UNetVelocity._run``) carries, per box (the N axis of the
(C, N, H, W) layout), for every activation h of the full-precision network:

* ``lo, hi``   an interval enclosure of h over the box (interval bound propagation, center ± radius form);
* ``elo, ehi`` a signed interval enclosure of the error ĥ − h of the quantized network (ĥ ∈ [lo + elo, hi + ehi]);
* ``lip``      (N,) an upper bound on the ℓ2 Lipschitz constant of x ↦ h on the box.

Layer rules (W, b the full-precision weights, ΔW = Ŵ − W, Δb likewise):

* conv (with nearest ×2 upsampling fused, stride 1 or 2): ẑ − z ∈ Ŵ[e] + ΔW[h] + Δb; L ← ‖conv‖_op·L
  (:func:`fmq_np.theory.lipschitz.conv_operator_norm`). On the input layer an optional ℓ2 ball ‖x − c‖ ≤ ρ
  tightens each output to W·c ± ρ‖W_o‖_F (intersected with the box enclosure).
* GroupNorm + scale-shift + SiLU, u = (γ·n + β)(1 + s) + s', n = P x / σ(x) per group, σ² = var + eps: a certified
  lower bound var_lo of each group variance over the box (:func:`~.image_intervals.group_variance_bounds`) gives
  σ ≥ √(var_lo + eps) ≥ √eps. With J = (1/σ)(I − n nᵀ/m) P the Jacobian of n (‖J‖₂ ≤ 1/σ),
  n̂ − n = ∫J(ξ)dξ·e ∈ [1/σ]·([Pe] − [n]·[nᵀPe]/m) with σ and n enclosed on the hull of both input ranges
  and [nᵀPe] the interval dot product (∩ ±√m‖Pe‖), intersected with |Δn| ≤ ‖e‖₂/σ_lo and the difference of the
  two output ranges (|n_i| ≤ √(m − 1) always).
  L ← L · max over groups of (max_c |γ_c|·sup|1 + s_c|·sup|SiLU'|) / σ_lo.
* time MLP and the per-block scale-shift Linear: the MLP rules of :mod:`fmq_np.theory.network` on (N, F) arrays;
  they do not depend on x (no Lipschitz term). The sinusoidal embedding is enclosed exactly over t ∈ [t_lo, t_hi].
* residual add: intervals add, L ← L_f + L_g; skip concatenation: intervals concatenate, L ← √(L_a² + L_b²).

ε per box is ‖max(|elo|, |ehi|)‖₂ of the output (× (1 + 1e-9)); every radius is padded for float64 rounding, so
the interval part holds for the exact (real-arithmetic) networks, like the MLP's. Each range is also intersected
with the ball form h(x) ∈ B(h(c), L_h·‖x − c‖) around the float64 value h(c) at the box center, which is taken as
exact: its rounding (relative ~1e-15 a layer) is *not* propagated, because pushing it through the product-of-norms
L_h (10^10 and more on trained U-Nets) would swamp every bound. So the U-Net bounds are certified up to the float64
rounding of one forward evaluation at the box center.

Where it is loose, and why (numbers: benchmarks/README.md, "U-Net"): on a box of the size of the data region, IBP
ranges wrap by ~25× per conv + GroupNorm pair through ~25 layers and every group variance lower bound drops to 0,
so each GroupNorm may amplify by 1/√eps ≈ 316: L comes out astronomically large (10^45 on a trained digits U-Net)
and ε is only kept finite by the √(m − 1) cap on normalised values — certified but useless. At a single point
(radius 0) the variance bounds are the true variances and ε is the measured error, but L is still a product of
~25 per-layer factors (10^12 against an empirical local Jacobian norm of ~2); on a ball of radius ρ the ranges
are h(c) ± L_h·ρ, so from ρ ≈ 1e-4 the deep variance bounds drop to 0 again and ε(ball) explodes. The product of
per-layer norms, not GroupNorm's variance floor, is what keeps the U-Net bounds loose.
"""
from dataclasses import dataclass

import numpy as np

from .._validate import check_int
from ..errors import InputError
from .image_intervals import (ROUND, centered_interval, conv2d, conv_interval, cos_interval,
                              group_variance_bounds, pad_radius, sin_interval)
from .lipschitz import conv_operator_norm
from .network import (SAFETY, _interval_matvec, _interval_mul, check_pair, silu, silu_deriv_range, silu_interval,
                      silu_slope)


@dataclass
class Node:
    """Enclosures of one activation (C, N, H, W) — or (N, F) in the time path — of the full-precision network over
    each box: range [lo, hi], error ĥ − h ∈ [elo, ehi]; for image activations also ``lip`` (N,), a Lipschitz bound
    of x ↦ h w.r.t. the input, and the ball form h ∈ B(c, rho): ``c`` the float64 value at the box center and
    ``rho`` (N,) = (Lipschitz bound) × (input radius) (None in the time path)."""
    lo: np.ndarray
    hi: np.ndarray
    elo: np.ndarray
    ehi: np.ndarray
    lip: np.ndarray = None
    c: np.ndarray = None
    rho: np.ndarray = None


def _ball_clip(lo, hi, c, rho):
    """[lo, hi] ∩ [c − rho, c + rho] elementwise (rho (N,) broadcast over the N axis), the ball widened by the
    rounding allowance of c at this layer (not propagated: see the module doc)."""
    r = pad_radius(c, rho[None, :, None, None])
    return np.maximum(lo, c - r), np.minimum(hi, c + r)


@dataclass
class UNetBound:
    """Per box (n,): certified ``eps`` (sup ℓ2 velocity error) and ``lipschitz`` (ℓ2, in x); the output range
    ``out_lo``/``out_hi`` (n, C, H, W) of the full-precision network and its ball form: every output on the box lies
    within ``rho`` (n,) of ``out_c`` (n, C, H, W), the float64 output at the box center, in ℓ2; ``var_lo`` the
    smallest certified group variance lower bound met in any GroupNorm (n,) (0: that GroupNorm only had its eps)."""
    eps: np.ndarray
    lipschitz: np.ndarray
    out_lo: np.ndarray
    out_hi: np.ndarray
    out_c: np.ndarray
    rho: np.ndarray
    var_lo: np.ndarray


class UNetCertifier:
    """Certified bounds for a UNetVelocity and a quantized parameter set, on boxes × time intervals.

    ``model``: a :class:`fmq_np.nn.UNetVelocity` (architecture, GroupNorm eps, time embedding); ``params_hat``:
    dequantized parameters (same names and shapes); ``base``: the reference parameters (default the model's own).
    All parameters are used in float64. Caches the convolution operator norms.
    """

    def __init__(self, model, params_hat, base=None):
        from ..nn import UNetVelocity
        if not isinstance(model, UNetVelocity):
            raise InputError(f"UNetCertifier needs a UNetVelocity, got {type(model).__name__}")
        params = model.parameters() if base is None else base
        check_pair(params, params_hat)
        check_pair(model.parameters(), params)
        self.p = {k: np.asarray(v, np.float64) for k, v in params.items()}
        self.q = {k: np.asarray(v, np.float64) for k, v in params_hat.items()}
        self.cfg = model.config()
        self.eps_gn = float(model.norm_out.eps)
        self.freqs = np.asarray(model.time_embed._freqs, np.float64)
        self.t_scale = float(model.time_embed.scale)
        self.shape = (self.cfg["channels"], self.cfg["size"], self.cfg["size"])
        self._norms = {}
        self._var_lo = self._t_wide = None

    # ----- layers -------------------------------------------------------------------------------------------
    def _opnorm(self, name, size, stride=1, up=1):
        key = (name, size)
        if key not in self._norms:
            self._norms[key] = conv_operator_norm(self.p[name + ".weight"], size, stride=stride, up=up)
        return self._norms[key]

    def _conv(self, x, name, stride=1, up=1):
        w, b = self.p[name + ".weight"], self.p[name + ".bias"]
        dw, db = self.q[name + ".weight"] - w, self.q[name + ".bias"] - b
        lo, hi = conv_interval(w, x.lo, x.hi, stride, up)
        a_lo, a_hi = conv_interval(w + dw, x.elo, x.ehi, stride, up)          # Ŵ(ĥ − h)
        c_lo, c_hi = conv_interval(dw, x.lo, x.hi, stride, up)                # (Ŵ − W)h
        bb, dbb = b[:, None, None, None], db[:, None, None, None]
        norm = self._opnorm(name, x.lo.shape[2], stride, up)
        c = conv2d(x.c, w, stride, up=up) + bb
        rho = x.rho * norm * SAFETY
        lo, hi = _ball_clip(lo + bb, hi + bb, c, rho)
        return Node(lo, hi, a_lo + c_lo + dbb, a_hi + c_hi + dbb, x.lip * norm, c, rho)

    def _linear(self, x, name, act):
        w, b = self.p[name + ".weight"], self.p[name + ".bias"]
        dw, db = self.q[name + ".weight"] - w, self.q[name + ".bias"] - b
        c, r = (x.lo + x.hi) / 2, (x.hi - x.lo) / 2
        zc = c @ w.T + b
        zr = pad_radius(zc, r @ np.abs(w).T)
        z_lo, z_hi = zc - zr, zc + zr
        a_lo, a_hi = _interval_matvec(w + dw, x.elo, x.ehi)
        c_lo, c_hi = _interval_matvec(dw, x.lo, x.hi)
        d_lo, d_hi = a_lo + c_lo + db, a_hi + c_hi + db
        if not act:
            return Node(z_lo, z_hi, d_lo, d_hi)
        g_lo, g_hi = silu_deriv_range(np.minimum(z_lo, z_lo + d_lo), np.maximum(z_hi, z_hi + d_hi))
        e_lo, e_hi = _interval_mul(g_lo, g_hi, d_lo, d_hi)
        return Node(*silu_interval(z_lo, z_hi), e_lo, e_hi)

    def _normalized(self, lo, hi, groups, center=None, rho=None):
        """Enclosure of the normalised values n = (x − μ)/σ over [lo, hi] (∩ the ball B(center, rho) if given),
        group layout; σ bounds (G, 1, N, 1) and the variance lower bound (G, N)."""
        cc, rd = centered_interval(lo, hi, groups)
        var_lo, var_hi = group_variance_bounds(lo, hi, groups, center, rho)
        s_lo = np.sqrt(var_lo + self.eps_gn)[:, None, :, None] * (1.0 - 1e-12)
        s_hi = np.sqrt(var_hi + self.eps_gn)[:, None, :, None] * (1.0 + 1e-12)
        n_lo, n_hi = _interval_mul(cc - rd, cc + rd, 1.0 / s_hi, 1.0 / s_lo)
        cap = np.sqrt(cc.shape[1] * cc.shape[3] - 1.0) * SAFETY
        return np.clip(n_lo, -cap, cap), np.clip(n_hi, -cap, cap), s_lo, s_hi, var_lo

    def _group_norm(self, x, name, mod=None):
        """GroupNorm ``name`` + optional scale-shift ``mod`` = (scale Node, shift Node), each (C, N) + SiLU."""
        groups = self.cfg["groups"]
        shape = x.lo.shape
        gm, bt = self.p[name + ".weight"], self.p[name + ".bias"]
        dgm, dbt = self.q[name + ".weight"] - gm, self.q[name + ".bias"] - bt
        n_lo, n_hi, s_lo, _, var_lo = self._normalized(np.minimum(x.lo, x.c), np.maximum(x.hi, x.c), groups, x.c,
                                                       x.rho)
        self._var_lo = np.minimum(self._var_lo, var_lo.min(axis=0))
        q_lo, q_hi = x.lo + x.elo, x.hi + x.ehi
        nq_lo, nq_hi = self._normalized(q_lo, q_hi, groups)[:2]
        nh_lo, nh_hi, sh_lo, sh_hi, _ = self._normalized(np.minimum(x.lo, q_lo), np.maximum(x.hi, q_hi), groups)
        e_c, e_r = centered_interval(x.elo, x.ehi, groups)                      # P e, group layout
        pe_lo, pe_hi = e_c - e_r, e_c + e_r
        m = e_c.shape[1] * e_c.shape[3]
        pe_norm = np.sqrt((np.maximum(np.abs(pe_lo), np.abs(pe_hi)) ** 2).sum(axis=(1, 3), keepdims=True))
        d_lo, d_hi = _interval_mul(nh_lo, nh_hi, pe_lo, pe_hi)                  # [n_j]·[(Pe)_j]
        cap = np.sqrt(m) * pe_norm * SAFETY                                     # |nᵀPe| ≤ ‖n‖‖Pe‖, ‖n‖ ≤ √m
        q_lo = np.maximum(d_lo.sum(axis=(1, 3), keepdims=True), -cap) / m       # [nᵀPe]/m
        q_hi = np.minimum(d_hi.sum(axis=(1, 3), keepdims=True), cap) / m
        nq = _interval_mul(nh_lo, nh_hi, q_lo, q_hi)
        pad = ROUND * pe_norm                                                   # rounding of the dot products
        dn_lo, dn_hi = _interval_mul(pe_lo - nq[1] - pad, pe_hi - nq[0] + pad, 1.0 / sh_hi, 1.0 / sh_lo)
        e_mag = np.maximum(np.abs(x.elo), np.abs(x.ehi)).reshape(e_c.shape)
        l2cap = np.sqrt((e_mag ** 2).sum(axis=(1, 3), keepdims=True)) / sh_lo * SAFETY
        dn_lo = np.maximum(np.maximum(dn_lo, -l2cap), nq_lo - n_hi)
        dn_hi = np.minimum(np.minimum(dn_hi, l2cap), nq_hi - n_lo)
        n_lo, n_hi, dn_lo, dn_hi = (a.reshape(shape) for a in (n_lo, n_hi, dn_lo, dn_hi))
        g4, dg4, b4 = gm[:, None, None, None], dgm[:, None, None, None], bt[:, None, None, None]
        a_lo, a_hi = _interval_mul(g4, g4, n_lo, n_hi)
        a_lo, a_hi = a_lo + b4, a_hi + b4
        t1 = _interval_mul(g4 + dg4, g4 + dg4, dn_lo, dn_hi)                     # γ̂ Δn
        t2 = _interval_mul(dg4, dg4, n_lo, n_hi)                                 # Δγ n
        da_lo = t1[0] + t2[0] + dbt[:, None, None, None]
        da_hi = t1[1] + t2[1] + dbt[:, None, None, None]
        gain = np.abs(g4)
        cg = x.c.reshape(groups, -1, shape[1], shape[2] * shape[3])            # the center's exact GroupNorm
        cg = cg - cg.mean(axis=(1, 3), keepdims=True)
        cg = cg / np.sqrt((cg ** 2).mean(axis=(1, 3), keepdims=True) + self.eps_gn)
        u_c = g4 * cg.reshape(shape) + b4
        t_var = 0.0                                # |u(c, t) − u_c| allowed for t over its interval
        if mod is None:
            u_lo, u_hi, du_lo, du_hi = a_lo, a_hi, da_lo, da_hi
        else:
            sc, sf = mod
            s1_lo, s1_hi = 1.0 + sc.lo[:, :, None, None], 1.0 + sc.hi[:, :, None, None]
            ds_lo, ds_hi = sc.elo[:, :, None, None], sc.ehi[:, :, None, None]
            u_lo, u_hi = _interval_mul(a_lo, a_hi, s1_lo, s1_hi)
            u_lo, u_hi = u_lo + sf.lo[:, :, None, None], u_hi + sf.hi[:, :, None, None]
            p1 = _interval_mul(da_lo, da_hi, s1_lo + ds_lo, s1_hi + ds_hi)     # (â − a)(1 + ŝ)
            p2 = _interval_mul(a_lo, a_hi, ds_lo, ds_hi)                        # a·Δs
            du_lo = p1[0] + p2[0] + sf.elo[:, :, None, None]
            du_hi = p1[1] + p2[1] + sf.ehi[:, :, None, None]
            gain = gain * np.maximum(np.abs(s1_lo), np.abs(s1_hi))
            s_mid, sh_mid = (s1_lo + s1_hi) / 2, (sf.lo + sf.hi)[:, :, None, None] / 2
            t_var = (np.abs(u_c) * (s1_hi - s1_lo) / 2 + (sf.hi - sf.lo)[:, :, None, None] / 2) * self._t_wide
            u_c = u_c * s_mid + sh_mid
        pad = pad_radius(u_lo, 0.0) + pad_radius(u_hi, 0.0)
        u_lo, u_hi = u_lo - pad, u_hi + pad
        g_lo, g_hi = silu_deriv_range(np.minimum(u_lo, u_lo + du_lo), np.maximum(u_hi, u_hi + du_hi))
        e_lo, e_hi = _interval_mul(g_lo, g_hi, du_lo, du_hi)
        slope = silu_slope(u_lo, u_hi)
        per_group = (slope * gain).reshape(groups, -1, shape[1], shape[2] * shape[3]).max(axis=(1, 3))
        factor = (per_group / s_lo[:, 0, :, 0]).max(axis=0) * SAFETY
        c = silu(u_c)
        t_term = np.sqrt(((slope * t_var) ** 2).sum(axis=(0, 2, 3)))
        rho = (x.rho * factor + t_term) * SAFETY
        lo, hi = _ball_clip(*silu_interval(u_lo, u_hi), c, rho)
        return Node(lo, hi, e_lo, e_hi, x.lip * factor, c, rho)

    def _resblock(self, x, temb, name):
        co = self.p[name + ".conv1.weight"].shape[0]
        h = self._conv(self._group_norm(x, name + ".norm1"), name + ".conv1")
        e = self._linear(temb, name + ".emb", act=False)
        scale = Node(e.lo[:, :co].T, e.hi[:, :co].T, e.elo[:, :co].T, e.ehi[:, :co].T)
        shift = Node(e.lo[:, co:].T, e.hi[:, co:].T, e.elo[:, co:].T, e.ehi[:, co:].T)
        h = self._conv(self._group_norm(h, name + ".norm2", (scale, shift)), name + ".conv2")
        s = self._conv(x, name + ".skip") if name + ".skip.weight" in self.p else x
        c = h.c + s.c
        rho = (h.rho + s.rho) * SAFETY
        lo, hi = _ball_clip(h.lo + s.lo, h.hi + s.hi, c, rho)
        return Node(lo, hi, h.elo + s.elo, h.ehi + s.ehi, h.lip + s.lip, c, rho)

    # ----- the network --------------------------------------------------------------------------------------
    def _input(self, center, radius, ball):
        """conv_in on the box center ± radius (∩ the ℓ2 ball of radius ``ball`` around the center, if given)."""
        name = "conv_in"
        w, b = self.p[name + ".weight"], self.p[name + ".bias"]
        dw, db = self.q[name + ".weight"] - w, self.q[name + ".bias"] - b
        c = np.ascontiguousarray(center.transpose(1, 0, 2, 3))
        r = np.ascontiguousarray(np.broadcast_to(radius, center.shape).transpose(1, 0, 2, 3))
        lo, hi = conv_interval(w, c - r, c + r)
        e_lo, e_hi = conv_interval(dw, c - r, c + r)
        if ball is not None:
            for ww, (a, z) in ((w, (lo, hi)), (dw, (e_lo, e_hi))):
                mid = conv2d(c, ww)
                rad = pad_radius(mid, np.sqrt((ww ** 2).sum(axis=(1, 2, 3)))[:, None, None, None]
                                 * ball[None, :, None, None])
                np.maximum(a, mid - rad, out=a)
                np.minimum(z, mid + rad, out=z)
        bb, dbb = b[:, None, None, None], db[:, None, None, None]
        norm = self._opnorm(name, self.shape[1])
        rho_x = np.sqrt((r ** 2).sum(axis=(0, 2, 3)))
        if ball is not None:
            rho_x = np.minimum(rho_x, ball)
        c_out = conv2d(c, w) + bb
        rho = rho_x * norm * SAFETY
        lo, hi = _ball_clip(lo + bb, hi + bb, c_out, rho)
        return Node(lo, hi, e_lo + dbb, e_hi + dbb, np.full(len(center), norm), c_out, rho)

    def _time(self, t_lo, t_hi):
        arg_lo = (self.t_scale * t_lo)[:, None] * self.freqs
        arg_hi = (self.t_scale * t_hi)[:, None] * self.freqs
        c_lo, c_hi = cos_interval(arg_lo, arg_hi)
        s_lo, s_hi = sin_interval(arg_lo, arg_hi)
        lo, hi = np.concatenate([c_lo, s_lo], axis=1), np.concatenate([c_hi, s_hi], axis=1)
        temb = Node(lo, hi, np.zeros_like(lo), np.zeros_like(lo))
        return self._linear(self._linear(temb, "time.0", True), "time.1", True)

    def bounds(self, center, radius=0.0, t_lo=0.0, t_hi=None, ball=None):
        """Certified bounds on each box: x ∈ center ± radius (∩ ‖x − center‖₂ ≤ ball), t ∈ [t_lo, t_hi].

        ``center`` (n, C, H, W); ``radius`` ≥ 0 broadcastable to it (per-pixel half-widths, units of x);
        ``t_lo``/``t_hi`` scalars or (n,) (t_hi defaults to t_lo); ``ball`` None or (n,) ℓ2 radii. Returns
        :class:`UNetBound` (eps in units of x per unit time, lipschitz in 1/time).
        """
        center = np.asarray(center, np.float64)
        if center.ndim != 4 or center.shape[1:] != self.shape or not np.isfinite(center).all():
            raise InputError(f"center must be a finite (n, {', '.join(map(str, self.shape))}) array, "
                             f"got shape {center.shape}")
        n = len(center)
        radius = np.asarray(radius, np.float64)
        t_lo = np.broadcast_to(np.asarray(t_lo, np.float64), (n,))
        t_hi = t_lo if t_hi is None else np.broadcast_to(np.asarray(t_hi, np.float64), (n,))
        if not (np.isfinite(radius).all() and (radius >= 0).all()) or np.any(t_hi < t_lo):
            raise InputError("radius must be finite and >= 0, and t_lo <= t_hi")
        if ball is not None:
            ball = np.broadcast_to(np.asarray(ball, np.float64), (n,))
            if not (np.isfinite(ball).all() and (ball >= 0).all()):
                raise InputError("ball radii must be finite and >= 0")
        self._var_lo = np.full(n, np.inf)
        self._t_wide = (t_hi > t_lo)[None, :, None, None]     # point times: the float64 scale-shift is taken as exact
        temb = self._time(t_lo, t_hi)
        h = self._input(center, radius, ball)
        skips = []
        levels = len(self.cfg["mults"])
        for i in range(levels):
            for b in range(self.cfg["blocks"]):
                h = self._resblock(h, temb, f"down.{i}.{b}")
            skips.append(h)
            if i < levels - 1:
                h = self._conv(h, f"downsample.{i}", stride=2)
        h = self._resblock(h, temb, "mid")
        for i in reversed(range(levels)):
            s = skips[i]
            h = Node(*(np.concatenate([a, z], axis=0) for a, z in
                       ((h.lo, s.lo), (h.hi, s.hi), (h.elo, s.elo), (h.ehi, s.ehi))), np.hypot(h.lip, s.lip),
                     np.concatenate([h.c, s.c], axis=0), np.hypot(h.rho, s.rho) * SAFETY)
            for b in range(self.cfg["blocks"]):
                h = self._resblock(h, temb, f"up.{i}.{b}")
            if i > 0:
                h = self._conv(h, f"upsample.{i}", up=2)
        out = self._conv(self._group_norm(h, "norm_out"), "conv_out")
        mag = np.maximum(np.abs(out.elo), np.abs(out.ehi))
        eps = np.sqrt((mag ** 2).sum(axis=(0, 2, 3))) * SAFETY
        return UNetBound(eps, out.lip * SAFETY, out.lo.transpose(1, 0, 2, 3), out.hi.transpose(1, 0, 2, 3),
                         out.c.transpose(1, 0, 2, 3), out.rho, self._var_lo)


class UNetPair:
    """The three certifiers the U-Net bounds need: the pair (model, quantized) and each network on its own."""

    def __init__(self, model, params_hat):
        self.pair = UNetCertifier(model, params_hat)
        self.full = UNetCertifier(model, self.pair.p)
        self.hat = UNetCertifier(model, params_hat, base=params_hat)
        self.shape = self.pair.shape

    def stage_error(self, center, rho, t):
        """Certified sup over x̂ ∈ B(center, rho) (ℓ2) of ‖v̂(x̂, t) − v(center, t)‖₂, (n,), for center (n, C, H, W),
        rho (n,) and t (n,): the smaller of ‖v̂(c) − v(c)‖ + L̂·rho (float64 evaluations at c, taken as exact) and
        ε_box + L·rho (interval propagation of the error on the box c ± rho, rounding padded)."""
        rho = np.asarray(rho, np.float64)
        ref = self.full.bounds(center, 0.0, t)
        hat = self.hat.bounds(center, rho[:, None, None, None], t, ball=rho)
        diff = np.linalg.norm((hat.out_c - ref.out_c).reshape(len(rho), -1), axis=1)
        out = (diff + hat.rho) * SAFETY
        wide = rho > 0                                      # at radius 0 the point form is exact
        if wide.any():
            r = rho[wide]
            box = self.pair.bounds(center[wide], r[:, None, None, None], np.asarray(t)[wide], ball=r)
            out[wide] = np.minimum(out[wide], (box.eps + box.lipschitz * r) * SAFETY)
        return out

    def error_bound(self, lo, hi, t_range=(0.0, 1.0), t_splits=1):
        """Certified (ε, L) on the box x ∈ [lo, hi] (per pixel, arrays of the sample shape or scalars) × t-range,
        the t-interval cut into ``t_splits`` pieces (one box each); (ε, L, per-piece UNetBound)."""
        check_int("t_splits", t_splits, 1)
        lo = np.broadcast_to(np.asarray(lo, np.float64), self.shape)
        hi = np.broadcast_to(np.asarray(hi, np.float64), self.shape)
        if np.any(hi < lo) or not (0.0 <= t_range[0] <= t_range[1]):
            raise InputError(f"box needs lo <= hi and 0 <= t0 <= t1, got t={t_range}")
        edges = np.linspace(t_range[0], t_range[1], t_splits + 1)
        center = np.broadcast_to((lo + hi) / 2, (t_splits,) + self.shape)
        b = self.pair.bounds(center, (hi - lo) / 2, edges[:-1], edges[1:])
        return float(b.eps.max()), float(b.lipschitz.max()), b


__all__ = ["Node", "UNetBound", "UNetCertifier", "UNetPair"]
