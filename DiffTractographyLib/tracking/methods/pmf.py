"""What DIPY's pmf direction getters share, batched: the FOD on the vertices of a discrete sphere,
the relative threshold, the ``max_angle`` cone, peaks at seeds, DIPY's tracking semantics, and a
softmax relaxation of the vertex choice that carries gradients.

pmf: ``B c`` with c the trilinearly interpolated SH coefficients (DIPY's bounds; 0 outside the
image) and B the field's basis on the sphere's vertices. A vertex is admissible when it lies in the
cone around the previous direction and its pmf is positive and at least ``cutoff`` times the largest
pmf on the sphere (DIPY zeroes the rest). The chosen vertex is flipped to continue forwards.

Frames: the coefficients live in the field's frame (DIPY: the voxel axes, ``SHField.frame="voxel"``);
the vertices are kept rotated to RAS by R = ``SHField.to_world()``, so directions at the ``Method``
interface are unit RAS vectors. DIPY steps ``step_size * d / voxel_size`` in voxel coordinates, that
is ``A (step_size * d / voxel_size) = step_size * R d`` in RAS for an affine A = R diag(voxel_size)
without shear: stepping along R d in RAS is DIPY's step, for anisotropic voxels too.

Gradients: the chosen vertex is piecewise constant in the coefficients, so its exact derivative is 0.
The forward pass keeps it exactly. The backward pass uses the relaxation
``d_soft = normalize(sum_i y_i s_i v_i)``, ``y = softmax((log pmf_i + g_i) / temperature)`` over the
relaxation's support: the cone's vertices whose pmf is positive and at least ``cutoff`` times the
largest pmf *in the cone* (DIPY's admissible set, thresholded by the largest on the whole sphere, is
the same set on 99.3% of the steps through phantom_cross's FOD, and the cone's maximum spares the
backward pass the rest of the sphere), s_i the sign aligning v_i with the previous direction and g the method's noise
(0 for detmax: a soft argmax; Gumbel for prob: the Gumbel-softmax), as a straight-through surrogate
``d = v + d_soft - stopgrad(d_soft)``. The surrogate reads the coefficients at the detached current
point: the field's coefficients get the relaxation's gradient, while points depend on the seeds as in
the hard forward (each point moves with its seed). With ``relaxed=True`` the path follows ``d_soft``
itself, a smooth function of seeds and coefficients (gradient checks, annealing).
"""
from __future__ import annotations

import numpy as np
import torch

from ... import sh
from ...fields import SHField
from ...interpolation import VolumeField
from ...geometry import voxel_sizes
from ...stopping import Status
from ..sphere import (LOOKUP_CELLS, MIN_SEPARATION_ANGLE, RELATIVE_PEAK_THRESHOLD, cone_table, default_sphere,
                      vertex_lookup)
from ..algorithms import TEMPERATURE
from .base import Method



class PmfMethod(Method):
    """DIPY's ``LocalTracking`` with a pmf direction getter on ``field`` (an ``SHField``).

    cutoff: relative pmf threshold (``pmf_threshold``). max_angle: degrees. sphere: a DIPY
    ``Sphere`` (vertices in the field's frame, and edges for the peaks at seeds), default
    ``default_sphere``. temperature, relaxed: see the module docstring.

    Every step after the first starts from a vertex (flipped or not); then the candidates are read
    from a table of each vertex's cone (about a third of the sphere for 45 degrees) instead of
    testing all vertices.

    One deliberate difference: ``track`` rejects seeds outside the stopping mask, where DIPY tracks
    from them (usually returning the lone seed).
    """

    def __init__(self, field: SHField, cutoff: float, max_angle: float, sphere=None,
                 temperature: float = TEMPERATURE, relaxed: bool = False, dtype=torch.float64):
        self.sphere = default_sphere() if sphere is None else sphere
        device = field.coeffs.device
        self.volume = VolumeField(field.coeffs.to(dtype), field.affine, rule="dipy")
        v = np.asarray(self.sphere.vertices, dtype=np.float64)
        self.basis = sh.basis_matrix(torch.as_tensor(v), field.lmax, field.basis).T.to(device, dtype).contiguous()
        self.rotation = field.to_world().to(device=device, dtype=dtype)
        self.vertices = torch.as_tensor(v, dtype=dtype, device=device) @ self.rotation.T  # (D, 3) RAS
        self.voxel_size = torch.as_tensor(voxel_sizes(field.affine), dtype=dtype, device=device)
        self.cutoff = float(cutoff)
        self.cos_max = float(np.cos(np.deg2rad(max_angle)))
        self.temperature = float(temperature)
        self.relaxed = relaxed
        self.cone_vertices = torch.as_tensor(cone_table(v, self.cos_max, self.algorithm.cone_inclusive)[0],
                                             device=device)
        lookup = vertex_lookup(self.vertices.cpu().numpy())
        self.vertex_lookup = None if lookup is None else torch.as_tensor(lookup, device=device)

    def _cell(self, directions: torch.Tensor) -> torch.Tensor:
        """``sphere.direction_cells`` of (N, 3) directions, in torch."""
        g = LOOKUP_CELLS
        ijk = ((directions + 1.0) * (g / 2)).floor().clamp(0, g - 1).to(torch.int64)
        return (ijk[..., 0] * g + ijk[..., 1]) * g + ijk[..., 2]

    @property
    def requires_grad(self) -> bool:
        return self.volume.data.requires_grad

    def pmf(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unthresholded pmf (N, D) at (N, 3) RAS points, and ``inside`` (N,); rows outside are 0."""
        c, inside = self.volume.sample(pos)
        return c @ self.basis, inside

    def outside_cone(self, abs_cos: torch.Tensor) -> torch.Tensor:
        """Vertices outside the cone, from |cos(previous direction, vertex)| (the declaration says
        whether |cos| = cos(max_angle) is inside)."""
        return abs_cos < self.cos_max if self.algorithm.cone_inclusive else abs_cos <= self.cos_max

    def cone(self, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Candidate vertices (N, K) for unit RAS ``direction`` (N, 3), and which of them lie outside
        the cone (None: none do)."""
        if self.vertex_lookup is not None:
            j = self.vertex_lookup[self._cell(direction)]
            v = self.vertices[j.clamp(min=0)]
            if bool(((j >= 0) & ((v == direction).all(-1) | (v == -direction).all(-1))).all()):
                return self.cone_vertices[j], None
        every = torch.arange(len(self.vertices), device=direction.device).expand(len(direction), -1)
        return every, self.outside_cone((direction @ self.vertices.T).abs_())

    def admissible(self, values: torch.Tensor, outside: torch.Tensor | None, top: torch.Tensor) -> torch.Tensor:
        """Candidates that are in the cone, positive and at least ``cutoff`` x ``top`` (DIPY's rule
        with ``top`` the largest pmf on the sphere, at least 0; the relaxation's with the cone's)."""
        ok = (values > 0) & (values >= self.cutoff * top[:, None])
        return ok if outside is None else ok & ~outside

    def noise(self, key, vertices: torch.Tensor) -> torch.Tensor | None:
        """Noise g added to log pmf before the choice at the (N, K) ``vertices`` (indices), or None."""
        return None

    def choose(self, values: torch.Tensor, outside: torch.Tensor | None, top: torch.Tensor,
               noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Position (N,) of the chosen candidate among the (N, K) candidate pmf ``values`` (and
        noise), and whether there was one (N,)."""
        raise NotImplementedError

    def soft_direction(self, pmf: torch.Tensor, admissible: torch.Tensor, sign: torch.Tensor,
                       noise: torch.Tensor | None) -> torch.Tensor:
        """The relaxed direction (N, 3) RAS: vertices aligned by ``sign`` weighted by
        softmax((log pmf + noise) / temperature) over the admissible ones."""
        logits = torch.log(torch.where(admissible, pmf, torch.ones_like(pmf)))
        if noise is not None:
            logits = logits + noise
        some = admissible.any(-1, keepdim=True)
        logits = torch.where(admissible, logits / self.temperature,
                             torch.where(some, torch.full_like(logits, -torch.inf), torch.zeros_like(logits)))
        d = (torch.softmax(logits, -1) * sign) @ self.vertices
        return d / torch.linalg.vector_norm(d, dim=-1, keepdim=True).clamp(min=torch.finfo(d.dtype).tiny)

    def init(self, pos, direction):
        """DIPY tests nothing at the seed: every start direction is tracked."""
        return direction, torch.ones(len(pos), dtype=torch.bool, device=pos.device)

    def next(self, pos, direction, check_curvature=True, key=None):
        """The chosen vertex (LOW_SIGNAL when no vertex is admissible, HIGH_CURVATURE when only
        vertices outside the cone would be, OUTSIDE_IMAGE outside the image). The cone is part of the
        choice, so ``check_curvature`` changes nothing."""
        grad = torch.is_grad_enabled()
        surrogate = grad and self.requires_grad and not self.relaxed
        with torch.set_grad_enabled(grad and (self.relaxed or surrogate)):
            pmf, inside = self.pmf(pos if self.relaxed else pos.detach())
        hard_pmf = pmf.detach()
        direction = direction.detach()
        top = hard_pmf.amax(-1).clamp(min=0)
        candidates, outside = self.cone(direction)
        position, ok = self.choose(hard_pmf.gather(1, candidates), outside, top, self.noise(key, candidates))
        u = self.vertices[candidates.gather(1, position[:, None])[:, 0]]
        u = torch.where(((u * direction).sum(-1) > 0)[:, None], u, -u)  # DIPY: v if v . d > 0, else -v
        if self.relaxed or surrogate:
            cos = direction @ self.vertices.T
            outside = self.outside_cone(cos.abs())
            cone_top = torch.where(outside, torch.zeros_like(hard_pmf), hard_pmf).amax(-1)  # the support's threshold
            admissible = self.admissible(hard_pmf, outside, cone_top)
            every = torch.arange(len(self.vertices), device=pos.device).expand(len(pos), -1)
            soft = self.soft_direction(pmf, admissible, torch.where(cos > 0, 1.0, -1.0).to(cos.dtype),
                                       self.noise(key, every))
            u = soft if self.relaxed else u + (soft - soft.detach())
        failed = torch.where(top > 0, Status.HIGH_CURVATURE, Status.LOW_SIGNAL)
        status = torch.where(inside, torch.where(ok, Status.CONTINUE, failed), Status.OUTSIDE_IMAGE)
        return u, status.to(torch.int64)

    def reverse(self, seed_direction, first_half):
        """DIPY starts the second half along F[0] - F[1] normalised in voxel coordinates (F: the
        first half's points), which differs from the reversed first step for anisotropic voxels,
        and along the reversed seed direction when the first half took no step."""
        step = first_half.first_step
        back = -(step @ self.rotation) / self.voxel_size  # voxel coordinates, SH frame
        back = back / torch.linalg.vector_norm(back, dim=-1, keepdim=True)
        return torch.where(torch.isnan(step).any(-1, keepdim=True), -seed_direction, back @ self.rotation.T)

    def initial_directions(self, pos):
        """DIPY's ``initial_direction``: ``peak_directions`` of the thresholded pmf at each seed
        (relative peak threshold 0.5, 25 degrees apart), one zero direction where there is none
        (DIPY then returns the seed alone)."""
        from dipy.direction.peaks import peak_directions

        with torch.no_grad():
            pmf, _ = self.pmf(pos)
            top = pmf.amax(-1, keepdim=True).clamp(min=0)
            pmf = torch.where(pmf < self.cutoff * top, torch.zeros_like(pmf), pmf)
        directions, rows = [], []
        for i, values in enumerate(pmf.to(device="cpu", dtype=torch.float64).numpy()):
            peaks = peak_directions(values, self.sphere, relative_peak_threshold=RELATIVE_PEAK_THRESHOLD,
                                    min_separation_angle=MIN_SEPARATION_ANGLE)[0]
            peaks = peaks if len(peaks) else np.zeros((1, 3))
            directions.append(peaks)
            rows += [i] * len(peaks)
        d = torch.as_tensor(np.concatenate(directions), dtype=self.rotation.dtype, device=pos.device)
        return d @ self.rotation.T, torch.as_tensor(rows, dtype=torch.int64, device=pos.device)
