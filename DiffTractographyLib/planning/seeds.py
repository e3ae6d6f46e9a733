"""Seeds placed by gradient: move seed points so that their streamlines reach a target region and
avoid others, by gradient descent through the tracker (``optimise_seeds``). RAS mm throughout.

A seed *connects* when one of its streamlines visits the start and the target region and enters no
avoided region: ``selection.select_streamlines(include=(start, target), exclude=avoid)``, the rule
users apply to a tractogram.

Loss of a seed (mm), summed over its streamlines; d_R(p) is the signed distance in mm to region R
(negative inside, ``planning.distance``), read by trilinear interpolation of ``signed_distance_map``
of R rasterised on the field's grid (every region, sphere, box or mask, takes this one path):

- reach = max(0, -tau log mean_t exp(-d_target(p_t) / tau)), a soft minimum over the streamline's
  points never below the hard one: zero only when a point lies in the target;
- avoid = avoid_weight * sum_t sum_R tau softplus(-d_R(p_t) / tau) over avoided regions R: about
  the depth of each point inside R, and a fading push on points near R.

Each iteration tracks the seeds that do not connect yet, back-propagates the loss to them
(``tracking.replay``; seed directions get no gradient) and moves each of them ``step`` mm against
its own gradient (a normalised step: the loss's scale and the seed's distance to the target do not
set the pace). Seeds that connect are left where they are and tracked no more, so the share that
connects never decreases. A step that would take a seed out of the start region stops at the
region's boundary (bisection on the step by the region's own ``contains`` test), so the seeds stay
inside by the test used to count. A seed the tracker rejects (sdstream: the peak search from its
random start direction found no fibre) has no gradient: it draws a new start direction at the next
iteration (its seed id advances by N).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import TrackingParams
from ..errors import InputError
from ..geometry import apply_affine
from ..interpolation import VolumeField
from ..selection import select_streamlines
from ..stopping import Region
from ..tracking.engine import TrackingCancelled
from ..tracking.tracker import Tracker
from .distance import LesionSurface, signed_distance_map

#: halvings of a step that would leave the start region (the stop lies within step / 2**20 of its boundary)
HALVINGS = 20


@dataclass(frozen=True)
class SeedResult:
    """What ``optimise_seeds`` returns (new arrays; the inputs are not modified).

    seeds: (N, 3) float64 refined seeds, RAS mm, in the order given. connects: (N,) bool, the seed's
    streamline connects (see the module). seed_ids: (N,) int64 ids that key each seed's random start
    direction: ``Tracker(...)(seeds, seed_ids=seed_ids)`` tracks the very streamlines counted here
    (other ids draw other start directions, which sdstream may reject). share: (K,) share of the N
    seeds that connect after each of the K trackings, the given seeds first. loss: (K,) mean loss in
    mm of the seeds that had a streamline at their latest tracking. tracked: (K,) seeds tracked by
    each tracking (the budget is their sum: connected seeds are not tracked again).
    """

    seeds: np.ndarray
    connects: np.ndarray
    seed_ids: np.ndarray
    share: np.ndarray
    loss: np.ndarray
    tracked: np.ndarray


class RegionDistance:
    """Smooth signed distance in mm (negative inside) to a region: the region's voxels on a grid (a
    voxel is in when ``contains`` holds at its centre), ``signed_distance_map`` of their surface,
    read by trilinear interpolation (differentiable in the points)."""

    def __init__(self, region: Region, shape: Sequence[int], affine, name: str = "region"):
        centres = apply_affine(affine, np.indices(shape).reshape(3, -1).T)
        inside = region.contains(torch.from_numpy(centres)).cpu().numpy().reshape(shape)
        if not inside.any():
            raise InputError(f"the {name} holds no voxel centre of the field's grid; make it larger or move it")
        values = signed_distance_map(LesionSurface(inside, affine))
        self.volume = VolumeField(torch.from_numpy(values).double()[..., None], affine, rule="dipy")

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) RAS mm -> (...) float64 mm; points off the grid read its edge."""
        grid = self.volume.grid
        voxels = grid.to_voxel(points.reshape(-1, 3))
        voxels = torch.minimum(voxels.clamp(min=0), torch.tensor(grid.shape, dtype=voxels.dtype) - 1)
        affine = torch.from_numpy(grid.affine)
        values, _ = self.volume.sample(voxels @ affine[:3, :3].T + affine[:3, 3])
        return values[:, 0].reshape(points.shape[:-1])


def _stop_at_boundary(region: Region, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``new`` where ``region`` contains it, else the farthest point found inside on the way from
    ``old`` (inside) to ``new``."""
    out = new.clone()
    leaving = torch.nonzero(~region.contains(new)).flatten()
    if len(leaving):
        a, b = old[leaving], new[leaving]
        inside, outside = torch.zeros(len(leaving), 1, dtype=a.dtype), torch.ones(len(leaving), 1, dtype=a.dtype)
        for _ in range(HALVINGS):
            middle = (inside + outside) / 2
            ok = region.contains(a + middle * (b - a))[:, None]
            inside, outside = torch.where(ok, middle, inside), torch.where(ok, outside, middle)
        out[leaving] = a + inside * (b - a)
    return out


def _seed_losses(tractogram, n: int, to_target: RegionDistance, to_avoid: Sequence[RegionDistance], tau: float,
                 avoid_weight: float) -> torch.Tensor:
    """(n,) float64 loss in mm of each seed row (``seed_index`` % n), summed over its streamlines."""
    points, lengths = tractogram.padded()
    valid = torch.arange(points.shape[1])[None, :] < lengths[:, None]
    p = torch.nan_to_num(points.double())
    d = torch.where(valid, to_target(p), torch.inf)
    per_line = (-tau * (torch.logsumexp(-d / tau, 1) - torch.log(lengths.double()))).clamp(min=0)
    for distance in to_avoid:
        depth = tau * torch.nn.functional.softplus(-distance(p) / tau)
        per_line = per_line + avoid_weight * torch.where(valid, depth, 0.0).sum(1)
    owner = tractogram.seed_index.cpu() % n
    return torch.zeros(n, dtype=torch.float64).index_add(0, owner, per_line)


def _check(seeds, start, target, avoid, iterations, step, tau, avoid_weight, stop_share) -> np.ndarray:
    """The seeds as a new (N, 3) float64 array, or ``InputError`` for bad arguments."""
    x = np.array(seeds, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) == 0 or not np.isfinite(x).all():
        raise InputError(f"seeds must be a non-empty (N, 3) array of finite RAS mm points, got shape {x.shape}")
    if int(iterations) != iterations or iterations < 0:
        raise InputError(f"iterations must be a whole number >= 0, got {iterations}")
    for value, name in ((step, "step"), (tau, "tau")):
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a positive number of mm, got {value}")
    if not (np.isfinite(avoid_weight) and avoid_weight >= 0):
        raise InputError(f"avoid_weight must be a non-negative number, got {avoid_weight}")
    if not 0 < stop_share <= 1:
        raise InputError(f"stop_share must be in (0, 1], got {stop_share}")
    for region, name in ((start, "start region"), (target, "target region"),
                         *((r, f"avoided region {i + 1}") for i, r in enumerate(avoid))):
        if not hasattr(region, "contains"):
            raise InputError(f"the {name} must be a region (Sphere, Box, OrientedBox or BinaryMask), "
                             f"got {type(region).__name__}")
    outside = int((~start.contains(torch.from_numpy(x))).sum())
    if outside:
        raise InputError(f"{outside} of {len(x)} seeds lie outside the start region; the seeds must start inside it")
    return x


def optimise_seeds(field, seeds, start: Region, target: Region, avoid: Sequence[Region] = (),
                   params: TrackingParams | None = None, *, mask=None, iterations: int = 30, step: float = 0.5,
                   tau: float = 0.5, avoid_weight: float = 1.0, stop_share: float = 1.0,
                   progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None, **overrides) -> SeedResult:
    """Move ``seeds`` (N, 3) RAS mm, all inside ``start``, so that their streamlines reach ``target``
    and enter no region of ``avoid`` (the module describes the loss and the rules).

    field, params, mask, overrides: as ``track``. Regions: ``selection.Sphere``, ``Box``,
    ``OrientedBox``, ``stopping.BinaryMask`` (anything with ``contains``). iterations: gradient steps
    at most; each tracks the seeds not connecting yet, and one more tracking measures the last step.
    step: mm a seed moves per iteration. tau: softness of the losses in mm. stop_share: stop once
    this share of the seeds connects. progress(trackings done, trackings at most) is called after
    each tracking; cancel() returning True stops the run (``tracking.engine.TrackingCancelled``).
    The inputs are not modified.
    """
    x0 = _check(seeds, start, target, avoid, iterations, step, tau, avoid_weight, stop_share)
    n, iterations = len(x0), int(iterations)
    tracker = Tracker(field, params, mask=mask, **overrides)
    to_target = RegionDistance(target, field.shape, field.affine, "target region")
    to_avoid = [RegionDistance(r, field.shape, field.affine, f"avoided region {i + 1}") for i, r in enumerate(avoid)]
    x = torch.tensor(x0, requires_grad=True)
    connects = torch.zeros(n, dtype=torch.bool)
    attempt = torch.zeros(n, dtype=torch.int64)            # new seed ids (start directions) after a rejection
    seed_loss = torch.full((n,), float("nan"), dtype=torch.float64)
    shares, losses, tracked = [], [], []
    for k in range(iterations + 1):
        if cancel is not None and cancel():
            raise TrackingCancelled("seed optimisation was cancelled")
        rows = torch.nonzero(~connects).flatten()
        last = k == iterations
        with torch.set_grad_enabled(not last):
            t = tracker(x[rows], seed_ids=rows + n * attempt[rows], cancel=cancel)
            loss = _seed_losses(t, n, to_target, to_avoid, tau, avoid_weight)
        owner = t.seed_index.cpu() % n
        has_line = torch.zeros(n, dtype=torch.bool)
        has_line[owner] = True
        seed_loss[rows] = torch.where(has_line[rows], loss.detach()[rows], float("nan"))
        connects[owner[select_streamlines(t, include=(start, target), exclude=avoid)]] = True
        shares.append(float(connects.double().mean()))
        losses.append(float(seed_loss.nanmean()))
        tracked.append(len(rows))
        if progress is not None:
            progress(k + 1, iterations + 1)
        if last or shares[-1] >= stop_share:
            break
        attempt[rows] += (~has_line[rows]).long()
        if has_line.any():
            (gradient,) = torch.autograd.grad(loss.sum(), x)
            with torch.no_grad():
                norm = torch.linalg.vector_norm(gradient, dim=1, keepdim=True)
                moving = ~connects & (norm[:, 0] > 0)
                moved = _stop_at_boundary(start, x, x - step * gradient / norm.clamp(min=1e-300))
                x.copy_(torch.where(moving[:, None], moved, x))
    return SeedResult(x.detach().numpy().copy(), connects.numpy().copy(), (torch.arange(n) + n * attempt).numpy(),
                      np.array(shares), np.array(losses), np.array(tracked))
