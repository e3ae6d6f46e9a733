"""Real, even-degree spherical harmonics: the bases of MRtrix3 and DIPY, evaluation, conversion.

Storage order is the same in every basis: l = 0, 2, 4, ... and within each l, m = -l..l, so
coefficient (l, m) sits at ``l (l + 1) / 2 + m``. The bases differ in which real function each slot
holds (P is the orthonormal associated Legendre function with the Condon-Shortley phase):

- ``tournier07`` (MRtrix3): m > 0: sqrt2 P_l^m cos(m phi); m < 0: sqrt2 P_l^|m| sin(|m| phi).
- ``descoteaux07`` (DIPY's default, ``legacy=True``, what DIPY's CSD writes): m > 0: sqrt2 P_l^m sin(m phi);
  m < 0: sqrt2 P_l^|m| cos(|m| phi).
- ``descoteaux07-nonlegacy`` (DIPY ``legacy=False``): as ``descoteaux07`` with (-1)^m on the m < 0 slots.

Directions are unit vectors in the frame the coefficients were fitted in; theta is measured from +z,
phi = atan2(y, x). Index tables and basis conversion need only numpy (the compiled kernels use them);
evaluation is in torch (differentiable), imported on use.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .config import BASES
from .errors import InputError

Y00 = 0.282094791773878  # 1 / sqrt(4 pi), MRtrix3's literal
#: rows of MRtrix3's precomputed Legendre table (``PrecomputedAL``)
LEGENDRE_TABLE_ROWS = 512


def n_coeffs(lmax: int) -> int:
    """Number of even-degree coefficients up to ``lmax``."""
    return (lmax + 1) * (lmax + 2) // 2


def lmax_for(n: int) -> int:
    """``lmax`` for ``n`` coefficients; InputError unless ``n`` is a valid even-degree count."""
    lmax = 2 * int((math.sqrt(1 + 8 * n) - 3) // 4) if n else -1
    if n < 1 or n_coeffs(lmax) != n:
        valid = ", ".join(f"{n_coeffs(l)} (lmax {l})" for l in range(0, 14, 2))
        raise InputError(f"{n} volumes is not a number of even-degree SH coefficients; expected one of {valid}")
    return lmax


def check_basis(basis: str) -> str:
    if basis not in BASES:
        raise InputError(f"unknown SH basis {basis!r}; choose one of {', '.join(BASES)}")
    return basis


@lru_cache(maxsize=None)
def degrees_orders(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(l, m) of every coefficient slot, in storage order."""
    ls, ms = [], []
    for l in range(0, lmax + 1, 2):
        ls += [l] * (2 * l + 1)
        ms += list(range(-l, l + 1))
    return np.array(ls), np.array(ms)


def index(l: int, m: int) -> int:
    return l * (l + 1) // 2 + m


def index_mpos(l: int, m: int) -> int:
    """Slot of P_l^m (even l, 0 <= m <= l) in the Legendre arrays returned by ``legendre``."""
    return l * l // 4 + m


def n_mpos(lmax: int) -> int:
    return (lmax // 2 + 1) ** 2


@lru_cache(maxsize=None)
def _conversion(lmax: int, basis: str) -> tuple[np.ndarray, np.ndarray]:
    """tournier07 -> ``basis``: ``out[..., i] = sign[i] * t[..., perm[i]]``."""
    ls, ms = degrees_orders(lmax)
    if basis == "tournier07":
        return np.arange(len(ls)), np.ones(len(ls))
    perm = np.array([index(l, -m) for l, m in zip(ls, ms)])  # descoteaux swaps the cos and sin slots
    sign = np.ones(len(ls))
    if basis == "descoteaux07-nonlegacy":
        sign = np.where((ms < 0) & (np.abs(ms) % 2 == 1), -1.0, 1.0)
    return perm, sign


def convert_basis(coeffs, from_basis: str, to_basis: str):
    """Re-express SH coefficients (..., C) of one basis in another (same frame): a numpy array, or
    a torch tensor (differentiable)."""
    check_basis(from_basis), check_basis(to_basis)
    if from_basis == to_basis:
        return coeffs
    lmax = lmax_for(coeffs.shape[-1])
    perm, sign = _conversion(lmax, from_basis)
    inv = np.empty_like(perm)  # invert from_basis -> tournier07
    inv[perm] = np.arange(len(perm))
    to_perm, to_sign = _conversion(lmax, to_basis)
    if isinstance(coeffs, np.ndarray):
        t = coeffs[..., inv] * sign[inv].astype(coeffs.dtype)
        return t[..., to_perm] * to_sign.astype(coeffs.dtype)
    import torch

    t = coeffs[..., torch.as_tensor(inv)] * torch.as_tensor(sign[inv], dtype=coeffs.dtype, device=coeffs.device)
    return t[..., torch.as_tensor(to_perm)] * torch.as_tensor(to_sign, dtype=coeffs.dtype, device=coeffs.device)


def _sqrt_ratio(dtype, num: int, den: int = 1) -> float:
    """sqrt(num / den) rounded as C++ computes it in ``dtype`` (a torch or numpy dtype)."""
    if str(dtype).endswith("float32"):
        return float(np.sqrt(np.float32(num) / np.float32(den)))
    return math.sqrt(num / den)


def _namespace(x):
    """(array module, cast function) of a numpy array or a torch tensor."""
    if isinstance(x, np.ndarray):
        return np, lambda a, dtype: a.astype(dtype)
    import torch

    return torch, lambda a, dtype: a.to(dtype)


def legendre(lmax: int, x):
    """Orthonormal associated Legendre functions with the Condon-Shortley phase,
    P_l^m(x) for even l <= lmax and 0 <= m <= l, as (..., n_mpos(lmax)), slot ``index_mpos(l, m)``,
    for a numpy array or a torch tensor ``x``.

    Follows MRtrix3's ``Legendre::Plm_sph`` operation by operation (the P_m^m seed in double, the
    upward recurrence in the dtype of ``x``), so float32 results round as MRtrix3's do."""
    xp, cast = _namespace(x)
    x2 = x * x
    one_minus = 1.0 - cast(x2, xp.float64)
    columns: dict[tuple[int, int], object] = {}
    for m in range(lmax + 1):
        if m:
            helper = xp.ones_like(one_minus)
            for k in range(2, 2 * m + 1, 2):
                helper = one_minus * (k - 1) / k * helper
            pm = cast(float(xp.asarray(Y00, dtype=x.dtype)) * xp.sqrt((2 * m + 1) * helper), x.dtype)
            pm = xp.where(x2 >= 1.0, xp.zeros_like(pm), -pm if m & 1 else pm)
        else:
            pm = xp.full_like(x, Y00)
        values = {m: pm}
        if m < lmax:
            f = _sqrt_ratio(x.dtype, 2 * m + 3)
            values[m + 1] = x * f * pm
            for n in range(m + 2, lmax + 1):
                nxt = x * values[n - 1] - values[n - 2] / f
                f = _sqrt_ratio(x.dtype, 4 * n * n - 1, n * n - m * m)
                values[n] = nxt * f
        for l in range(m + (m & 1), lmax + 1, 2):
            columns[(l, m)] = values[l]
    order = sorted(columns, key=lambda lm: index_mpos(*lm))
    return xp.stack([columns[lm] for lm in order], -1)


@lru_cache(maxsize=None)
def derivative_terms(lmax: int) -> dict[str, np.ndarray]:
    """Index and constant arrays of ``SH::derivatives`` for every (l, m) in its order: the m = 0
    terms by l, then the m > 0 terms by m, then l."""
    f32 = lambda v: float(np.sqrt(np.float32(v)))  # noqa: E731  (MRtrix3 takes float square roots)
    t: dict[str, list] = {k: [] for k in ("c0", "a0", "a1", "a2", "s1", "s2", "ll1",
                                          "ip", "im", "a", "am1", "ap1", "am2", "ap2",
                                          "A", "B", "C", "D", "E", "m")}
    for l in range(0, lmax + 1, 2):
        t["c0"].append(index(l, 0))
        t["a0"].append(index_mpos(l, 0))
        t["a1"].append(index_mpos(l, 1) if l else 0)
        t["a2"].append(index_mpos(l, 2) if l else 0)
        t["s1"].append(f32(l * (l + 1)))
        t["s2"].append(f32(l * (l + 1) * (l - 1) * (l + 2)) if l else 0.0)
        t["ll1"].append(float(l * (l + 1)))
    for m in range(1, lmax + 1):
        for l in range(m + (m & 1), lmax + 1, 2):
            t["ip"].append(index(l, m))
            t["im"].append(index(l, -m))
            t["a"].append(index_mpos(l, m))
            t["am1"].append(index_mpos(l, m - 1))
            t["ap1"].append(index_mpos(l, m + 1) if l > m else 0)
            t["am2"].append(index_mpos(l, m - 2) if m > 1 else index_mpos(l, 1))
            t["ap2"].append(index_mpos(l, m + 2) if l > m + 1 else 0)
            t["A"].append(f32((l + m) * (l - m + 1)))
            t["B"].append(f32((l - m) * (l + m + 1)) if l > m else 0.0)
            t["C"].append(float((l + m) * (l - m + 1) + (l - m) * (l + m + 1)))
            d = f32((l + m) * (l - m + 1) * (l + m - 1) * (l - m + 2))
            t["D"].append(-d if m == 1 else d)
            t["E"].append(f32((l - m) * (l + m + 1) * (l - m - 1) * (l + m + 2)) if l > m + 1 else 0.0)
            t["m"].append(float(m))
    return {k: np.array(v) for k, v in t.items()}


@lru_cache(maxsize=None)
def ladder_terms(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The P_l^m slots (T, 5) and factors (T, 5) of each ``derivative_terms`` term's sums in
    ``SH::derivatives``. m = 0: slots (l,0), (l,1), (l,2) with l(l+1), sqrt(l(l+1)),
    sqrt((l-1) l (l+1) (l+2)); m > 0: slots (l,m), (l,m-1), (l,m+1), (l,m-2) ((l,1) for m = 1),
    (l,m+2) with its C, A, B, D, E (0 where a slot does not exist)."""
    t = derivative_terms(lmax)
    zeros = np.zeros(len(t["c0"]))
    slots = np.r_[np.stack([t["a0"], t["a1"], t["a2"], zeros, zeros], 1).reshape(-1, 5),
                  np.stack([t["a"], t["am1"], t["ap1"], t["am2"], t["ap2"]], 1).reshape(-1, 5)]
    factors = np.r_[np.stack([t["ll1"], t["s1"], t["s2"], zeros, zeros], 1).reshape(-1, 5),
                    np.stack([t["C"], t["A"], t["B"], t["D"], t["E"]], 1).reshape(-1, 5)]
    return slots.astype(np.int64), factors


@lru_cache(maxsize=None)
def legendre_combination(lmax: int) -> np.ndarray:
    """(3 (L0 + K), n_mpos) matrix taking P_l^m (``sh.legendre`` slots) to the three rows of
    ``peaks.PeakFinder.combined_legendre`` (the theta-derivative ladder of ``SH::derivatives``)."""
    slots, f = ladder_terms(lmax)
    n0 = len(derivative_terms(lmax)["c0"])
    out = np.zeros((3, len(slots), n_mpos(lmax)))  # columns in the order of PeakFinder's terms
    for j, (s, (f0, f1, f2, f3, f4)) in enumerate(zip(slots, f)):
        out[0, j, s[0]] += 1.0
        if j < n0:
            out[1, j, s[1]] += f1
            out[2, j, s[2]] += f2 / 2.0
            out[2, j, s[0]] -= f0 / 2.0
        else:
            out[1, j, s[1]] += f1 / -2.0
            out[1, j, s[2]] -= f2 / -2.0
            out[2, j, s[0]] += -f0 / 4.0
            out[2, j, s[3]] += f3 / 4.0
            out[2, j, s[4]] += f4 / 4.0
    return out.reshape(3 * len(slots), -1)


@lru_cache(maxsize=None)
def _basis_gather(lmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each tournier07 slot: Legendre slot, |m|, and the kind (0: m = 0, 1: cos, -1: sin)."""
    ls, ms = degrees_orders(lmax)
    leg = np.array([index_mpos(l, abs(m)) for l, m in zip(ls, ms)])
    return leg, np.abs(ms), np.sign(ms)


def basis_matrix(directions, lmax: int, basis: str = "tournier07"):
    """SH basis evaluated at unit ``directions`` (..., 3): (..., n_coeffs(lmax)), for a numpy array or
    a torch tensor (differentiable)."""
    check_basis(basis)
    if not isinstance(directions, np.ndarray):
        import torch

        directions = torch.as_tensor(directions)
    xp, _ = _namespace(directions)
    d = directions
    z = xp.clip(d[..., 2], -1.0, 1.0)
    phi = xp.arctan2(d[..., 1], d[..., 0])
    p = legendre(lmax, z)
    leg, mabs, kind = _basis_gather(lmax)
    mphi = phi[..., None] * xp.asarray(np.maximum(mabs, 0), dtype=d.dtype)
    trig = xp.where(xp.asarray(kind >= 0), xp.cos(mphi), xp.sin(mphi))
    scale = xp.asarray(np.where(kind == 0, 1.0, math.sqrt(2.0)), dtype=d.dtype)
    if xp is not np:
        trig, scale = trig.to(d.device), scale.to(d.device)
    t = p[..., leg] * trig * scale
    perm, sign = _conversion(lmax, basis)
    return t[..., perm] * xp.asarray(sign, dtype=d.dtype).to(d.device) if xp is not np else t[..., perm] * sign


def amplitudes(coeffs: torch.Tensor, directions: torch.Tensor, basis: str = "tournier07") -> torch.Tensor:
    """Amplitudes (..., D) of SH coefficients (..., C) on unit directions (D, 3)."""
    b = basis_matrix(directions.to(coeffs.dtype), lmax_for(coeffs.shape[-1]), basis)
    return coeffs @ b.T


def _cos(x):
    return math.cos(x)


@lru_cache(maxsize=None)
def _float_cos():
    import numba

    return numba.vectorize(["float32(float32)"], cache=True)(_cos)


def float_cos(x) -> np.ndarray:
    """cos of float32 values by the platform's float cosine (C's ``std::cos`` of a float, as MRtrix3
    calls it), which numpy's own vectorised cosine differs from by an ulp at times."""
    return _float_cos()(np.asarray(x, dtype=np.float32))


@lru_cache(maxsize=None)
def precomputed_legendre(lmax: int, n: int = LEGENDRE_TABLE_ROWS) -> tuple[np.ndarray, np.float32]:
    """MRtrix3's ``PrecomputedAL<float>``: (n, n_mpos) float32 P_l^m at the elevations k inc, and
    inc = pi / (n - 1) rad, computed as it does (float recurrence, ``std::cos (k*inc)``). Read-only."""
    inc = np.float32(math.pi / (n - 1))
    rows = legendre(lmax, float_cos(np.arange(n, dtype=np.float32) * inc))
    rows.flags.writeable = False
    return rows, inc


class LegendreTable:
    """MRtrix3's ``PrecomputedAL`` (``precomputed_legendre``) as a torch tensor, read by linear
    blending of two rows (the default, ``sh_precomputed``, of SD_Stream)."""

    def __init__(self, lmax: int, n: int = LEGENDRE_TABLE_ROWS, device=None):
        import torch

        self.lmax, self.n = lmax, n
        rows, self.inc = precomputed_legendre(lmax, n)
        self.rows = torch.from_numpy(rows.copy()).to(device)  # (n, n_mpos) float32

    def to(self, device) -> "LegendreTable":
        self.rows = self.rows.to(device)
        return self

    def pairs(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n - 1, 2, ...) pairs of consecutive rows (i, i + 1) of ``rows`` (default: the table's own,
        or any per-row transform of them) for ``blend_rows``."""
        import torch

        rows = self.rows if rows is None else rows
        return torch.stack([rows[:-1], rows[1:]], 1)

    def __call__(self, elevation: torch.Tensor) -> torch.Tensor:
        """(..., n_mpos) blended rows at ``elevation`` (..., radians, float32)."""
        return blend_rows(elevation, self.pairs().to(elevation.dtype), float(self.inc))


def blend_rows(el: torch.Tensor, row_pairs: torch.Tensor, inc: float) -> torch.Tensor:
    """``PrecomputedAL::set`` and ``get``: row int(el / inc) blended linearly with the next, for
    elevations (any shape) in [0, pi] radians; ``row_pairs`` from ``LegendreTable.pairs``. At el = pi the blend
    with fraction 1 on the last pair gives the last row."""
    import torch

    x = el / inc
    i = x.to(torch.int64).clamp(0, row_pairs.shape[0] - 1)  # C's int(): truncation
    frac = (x - i.to(x.dtype)).clamp(max=1.0)
    weights = torch.stack([1.0 - frac, frac], -1)
    return (weights[(...,) + (None,) * (row_pairs.dim() - 2)] * row_pairs[i]).sum(el.dim())
