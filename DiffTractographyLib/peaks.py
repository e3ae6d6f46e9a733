"""The FOD peak nearest a direction, as MRtrix3's ``Math::SH::get_peak`` finds it, batched, with an
implicit-function gradient.

Forward: MRtrix3's search, operation for operation (spherical coordinates, ascent along the gradient
with a Newton step length capped at 0.2 rad, stop when the step is under 1e-4 rad, give up after 50
iterations), on the precomputed Legendre table or exact Legendre functions. Backward: the converged
direction u* is a maximum of f(u; c) = sum_j c_j Y_j(u) on the sphere, so with the tangent
parametrisation g(a, b) = f(normalize(u* + a e1 + b e2)), du*/dc = -E H^-1 d(grad g)/dc and
df*/dc = Y(u*) (envelope theorem); no Newton iterate is stored or differentiated.
"""
from __future__ import annotations

import math
import numpy as np
import torch

from . import sh
from .geometry import dot3

MAX_DIR_CHANGE = 0.2
ANGLE_TOLERANCE = 1e-4
MAX_ITERATIONS = 50


def _sh_derivatives(vp, vm, az, sel, q, m, m2, trig_scale):
    """``SH::derivatives`` from prepared coefficients and the combined Legendre rows ``q``:
    f, df/del, (1/sin el) df/daz, d2f/del2, (1/sin el) d2f/del daz, (1/sin2 el) d2f/daz2."""
    atpole = sel < 1e-4
    maz = az[:, None] * m
    # sqrt2 * cos(m az) is formed in double and stored in the working precision (MRtrix3)
    caz = (torch.cos(maz).double() * trig_scale).to(vp.dtype)
    saz = (torch.sin(maz).double() * trig_scale).to(vp.dtype)
    x = vp * caz + vm * saz
    y = vm * caz - vp * saz
    amp, d_el, d2_el = (x[:, None, :] * q).sum(-1).unbind(-1)
    d_az, d2_elaz = ((m * y)[:, None, :] * q[:, :2]).sum(-1).unbind(-1)
    d2_az = -(m2 * x * q[:, 0]).sum(-1)
    safe = torch.where(atpole, torch.ones_like(sel), sel)
    zero = torch.zeros_like(sel)
    d_az = torch.where(atpole, (y * q[:, 1]).sum(-1), d_az / safe)
    d2_elaz = torch.where(atpole, zero, d2_elaz / safe)
    d2_az = torch.where(atpole, zero, d2_az / (safe * safe))
    return amp, d_el, d_az, d2_el, d2_elaz, d2_az


def _newton_iteration(vp, vm, u, legendre_at, m, m2, trig_scale):
    """One iteration of ``get_peak``: (moved u, amplitude before the move, step dt).
    ``legendre_at(el)`` gives the combined Legendre rows."""
    az = torch.atan2(u[:, 1], u[:, 0])
    el = torch.acos(u[:, 2])
    ca, sa, ce, se = torch.cos(az), torch.sin(az), torch.cos(el), torch.sin(el)
    amp, d_el, d_az, h_el, h_elaz, h_az = _sh_derivatives(vp, vm, az, se, legendre_at(el), m, m2, trig_scale)
    norm = torch.sqrt(d_el * d_el + d_az * d_az)
    nz = norm != 0
    safe = torch.where(nz, norm, torch.ones_like(norm))
    a_az = torch.where(nz, d_az / safe, torch.zeros_like(norm))
    a_el = torch.where(nz, d_el / safe, torch.zeros_like(norm))
    slope = a_az * d_az + a_el * d_el
    curv = a_az * a_az * h_az + 2.0 * a_az * a_el * h_elaz + a_el * a_el * h_el
    dt = torch.where(curv != 0, -slope / torch.where(curv != 0, curv, torch.ones_like(curv)), torch.zeros_like(curv))
    dt = torch.abs(dt).clamp(max=MAX_DIR_CHANGE)  # NaN stays NaN, as in C++
    a_el, a_az = a_el * dt, a_az * dt
    moved = torch.stack([u[:, 0] + (a_el * ca * ce - a_az * sa),
                         u[:, 1] + (a_el * sa * ce + a_az * ca),
                         u[:, 2] - a_el * se], -1)
    moved = moved / torch.sqrt(dot3(moved, moved))[:, None]
    return moved, amp, dt


def _table_iteration(vp, vm, u, row_pairs, inc: float, m, m2, trig_scale):
    """``_newton_iteration`` on the precomputed table."""
    return _newton_iteration(vp, vm, u, lambda el: sh.blend_rows(el, row_pairs, inc), m, m2, trig_scale)


class PeakFinder:
    """MRtrix3's peak search for SH coefficients in the tournier07 basis, (N, C) at a time.

    precomputed: use the 512-row Legendre table (MRtrix3's default) or exact Legendre functions.
    tolerance: stop when the angular step is below this (radians; MRtrix3: 1e-4).
    polish: exact Newton iterations on the sphere after the search (0 = MRtrix3); with > 0 the peak
        is converged to machine precision, as float64 gradient checks need.
    """

    def __init__(self, lmax: int, precomputed: bool = True, tolerance: float = ANGLE_TOLERANCE,
                 polish: int = 0, device=None, dtype=torch.float32):
        self.lmax, self.tolerance, self.polish = lmax, tolerance, polish
        self.dtype = dtype
        t = sh.derivative_terms(lmax)
        n0, k = len(t["c0"]), len(t["ip"])
        zero_slot = sh.n_coeffs(lmax)  # index of a zero column appended to the coefficients
        # every (l, m) term as one column: m = 0 terms first, then m > 0 (cos-type, sin-type slots)
        self._cos_slot = torch.as_tensor(np.r_[t["c0"], t["ip"]], dtype=torch.int64, device=device)
        self._sin_slot = torch.as_tensor(np.r_[np.full(n0, zero_slot), t["im"]], dtype=torch.int64, device=device)
        m = np.r_[np.zeros(n0), t["m"]]
        self._m = torch.as_tensor(m, dtype=dtype, device=device)
        self._m2 = self._m * self._m
        self._trig_scale = torch.as_tensor(np.where(m > 0, math.sqrt(2.0), 1.0), dtype=torch.float64, device=device)
        self._combine = torch.as_tensor(sh.legendre_combination(lmax), dtype=dtype, device=device)
        self.table = None
        if precomputed:
            self.table = sh.LegendreTable(lmax, device=device)
            rows = (self.table.rows.to(dtype) @ self._combine.T).reshape(self.table.n, 3, n0 + k)
            self._row_pairs = self.table.pairs(rows)  # (n - 1, 2, 3, L0 + K)
            self._inc = float(self.table.inc)

    def combined_legendre(self, elevation: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """(N, 3, L0 + K) Legendre terms of ``SH::derivatives`` at ``elevation``: rows are P_l^m,
        its first and its second theta-derivative ladder, for every (l, m) term (m = 0 terms first);
        read from the precomputed table by linear blending of two rows, or exact."""
        if exact or self.table is None:
            al = sh.legendre(self.lmax, torch.cos(elevation))
            return (al @ self._combine.T).reshape(len(elevation), 3, -1)
        return sh.blend_rows(elevation, self._row_pairs, self._inc)

    def prepare(self, c: torch.Tensor):
        """The coefficients a search reuses at every iteration, one column per (l, m) term:
        (cos-type slot, sin-type slot; 0 for m = 0)."""
        c = torch.cat([c, c.new_zeros(len(c), 1)], 1)
        return c[:, self._cos_slot], c[:, self._sin_slot]

    def derivatives(self, coeffs, el: torch.Tensor, az: torch.Tensor, exact: bool = False):
        """Amplitude and the plain coordinate derivatives of ``SH::derivatives`` for prepared
        coefficients: f, df/del, (1/sin el) df/daz, d2f/del2, (1/sin el) d2f/del daz,
        (1/sin2 el) d2f/daz2."""
        vp, vm = coeffs
        return _sh_derivatives(vp, vm, az, torch.sin(el), self.combined_legendre(el, exact), self._m, self._m2,
                               self._trig_scale)

    def _iterate(self, coeffs, u: torch.Tensor):
        """One iteration of ``get_peak``: (moved u, amplitude before the move, step dt)."""
        vp, vm = coeffs
        if self.table is None:
            return _newton_iteration(vp, vm, u, self.combined_legendre, self._m, self._m2, self._trig_scale)
        return _table_iteration(vp, vm, u, self._row_pairs, self._inc, self._m, self._m2, self._trig_scale)

    @torch.no_grad()
    def search(self, c: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Peak direction (N, 3) and amplitude (N,) from start directions ``u`` (N, 3) for
        tournier07 coefficients ``c`` (N, C). Rows that do not converge give NaN (MRtrix3)."""
        n = len(u)
        out_u = torch.full_like(u, float("nan"))
        out_f = torch.full((n,), float("nan"), dtype=u.dtype, device=u.device)
        active = torch.arange(n, device=u.device)
        pending = torch.ones(n, dtype=torch.bool, device=u.device)
        cur_c, cur_u = self.prepare(c), u
        for _ in range(MAX_ITERATIONS):
            if len(active) == 0:
                break
            cur_u, amp, dt = self._iterate(cur_c, cur_u)
            newly = (dt < self.tolerance) & pending
            if not bool(newly.any()):
                continue
            idx = newly.nonzero().squeeze(1)
            ids = active[idx]
            out_u[ids] = cur_u[idx]
            out_f[ids] = amp[idx]
            pending = pending & ~newly
            remaining = pending.nonzero().squeeze(1)
            if 2 * len(remaining) <= len(active):  # drop finished rows once they are half the batch
                active, cur_u, pending = active[remaining], cur_u[remaining], pending[remaining]
                cur_c = tuple(v[remaining] for v in cur_c)
        if self.polish:
            ok = ~torch.isnan(out_f)
            out_u[ok], out_f[ok] = self._polish(self.prepare(c[ok]), out_u[ok])
        return out_u, out_f

    def _polish(self, coeffs, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Newton steps with exact derivatives; at a maximum the plain coordinate derivatives of
        ``SH::derivatives`` are the Riemannian gradient and Hessian, so convergence is quadratic."""
        for i in range(self.polish + 1):
            az = torch.atan2(u[:, 1], u[:, 0])
            el = torch.acos(u[:, 2].clamp(-1.0, 1.0))
            amp, g_el, g_az, h_el, h_elaz, h_az = self.derivatives(coeffs, el, az, exact=True)
            if i == self.polish:
                return u, amp
            hess = torch.stack([torch.stack([h_el, h_elaz], -1), torch.stack([h_elaz, h_az], -1)], -2)
            step = -_solve_negative_definite(hess, torch.stack([g_el, g_az], -1))
            step = torch.where((torch.sin(el) < 1e-4)[:, None], torch.zeros_like(step), step)
            ca, sa, ce, se = torch.cos(az), torch.sin(az), torch.cos(el), torch.sin(el)
            e_el = torch.stack([ca * ce, sa * ce, -se], -1)
            e_az = torch.stack([-sa, ca, torch.zeros_like(ca)], -1)
            u = u + step[:, :1] * e_el + step[:, 1:] * e_az
            u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        return u, amp

    def peak(self, c: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``search`` with the implicit gradient with respect to ``c`` (u is a starting guess)."""
        if torch.is_grad_enabled() and c.requires_grad:
            return _ImplicitPeak.apply(c, u, self)
        return self.search(c, u)


def _tangent_basis(u: torch.Tensor) -> torch.Tensor:
    """(N, 3, 2) orthonormal tangent vectors at unit ``u``."""
    helper = torch.zeros_like(u)
    pick = torch.argmin(u.abs(), dim=-1)
    helper[torch.arange(len(u)), pick] = 1.0
    e1 = torch.linalg.cross(u, helper)
    e1 = e1 / torch.linalg.vector_norm(e1, dim=-1, keepdim=True)
    e2 = torch.linalg.cross(u, e1)
    return torch.stack([e1, e2], -1)


def _tangent_gradient_hessian(c: torch.Tensor, u: torch.Tensor, lmax: int, create_graph: bool):
    """Gradient (N, 2) and Hessian (N, 2, 2) of g(a, b) = f(normalize(u + a e1 + b e2); c) at 0, and E."""
    e = _tangent_basis(u.detach())
    ab = torch.zeros(len(u), 2, dtype=u.dtype, device=u.device, requires_grad=True)
    d = u.detach() + (e @ ab[..., None])[..., 0]
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    g = (c * sh.basis_matrix(d, lmax)).sum(-1)
    (grad,) = torch.autograd.grad(g.sum(), ab, create_graph=True)
    rows = [torch.autograd.grad(grad[:, i].sum(), ab, retain_graph=True, create_graph=create_graph)[0] for i in range(2)]
    return grad, torch.stack(rows, 1), e, g


def _solve_negative_definite(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """z = H^-1 w for 2x2 H taken as negative definite (eigenvalues clamped below -1e-8 |H|)."""
    evals, evecs = torch.linalg.eigh(h)
    scale = evals.abs().amax(-1, keepdim=True).clamp(min=1e-30)
    evals = torch.minimum(evals, -1e-8 * scale)
    return (evecs @ ((evecs.transpose(-1, -2) @ w[..., None])[..., 0] / evals)[..., None])[..., 0]


class _ImplicitPeak(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c, u0, finder):
        u, f = finder.search(c.detach(), u0.detach())
        ctx.save_for_backward(c, u)
        ctx.lmax = finder.lmax
        return u, f

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_u, grad_f):
        c, u = ctx.saved_tensors
        ok = ~torch.isnan(u).any(-1)
        grad_c = torch.zeros_like(c)
        if bool(ok.any()):
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                cc = c[ok].detach().requires_grad_(True)
                gu = torch.nan_to_num(grad_u[ok]) if grad_u is not None else torch.zeros_like(u[ok])
                gf = torch.nan_to_num(grad_f[ok]) if grad_f is not None else torch.zeros(len(cc), dtype=c.dtype, device=c.device)
                grad, hess, e, g = _tangent_gradient_hessian(cc, u[ok], ctx.lmax, create_graph=False)
                w = (e.transpose(-1, -2) @ gu[..., None])[..., 0]
                z = _solve_negative_definite(hess.detach(), w)
                # du*/dc = -E H^-1 d(grad)/dc ; df*/dc = Y(u*)
                total = -(grad * z).sum() + (g * gf).sum()
                (gc,) = torch.autograd.grad(total, cc)
            grad_c[ok] = gc
        return grad_c, None, None
