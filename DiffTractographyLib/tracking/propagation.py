"""The batched stepping loop: every active half-streamline advances together, one tensor op at a time.

A half-streamline starts at its seed with a direction and repeats: ask the method for the next
direction (stop on OUTSIDE_IMAGE, LOW_SIGNAL, HIGH_CURVATURE: the current point stays the last),
step ``step_size`` mm along it, stop on leaving the stopping region (EXIT_MASK: the new point is
dropped), else keep the new point and stop at the point budget (MAX_LENGTH: the point is kept).
These are MRtrix3's ``Exec::gen_track_unidir`` rules and DIPY's ``generate_streamline`` rules; the
two differ only in how the budget is counted, which ``tracking`` handles.

Finished rows leave the active set at once. Gradients flow through the points: the loop records
them with differentiable indexing, and ``checkpoint_every`` recomputes blocks of steps in the
backward pass so that memory does not grow with the number of steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ..geometry import dot3
from .methods.base import Method
from ..stopping import Region, Status


@dataclass
class HalfStreamlines:
    """Result of ``propagate``: new points (M, T, 3) after the start point (rows padded with 0),
    their counts (M,), the final ``Status`` (M,) and the direction of the first step (M, 3)."""

    points: torch.Tensor
    counts: torch.Tensor
    status: torch.Tensor
    first_step: torch.Tensor


def rk4_direction(method: Method, pos: torch.Tensor, direction: torch.Tensor, step_size: float,
                  cos_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MRtrix3's ``next_rk4``: four peak evaluations, their weighted mean, and a final evaluation at the
    end point whose direction must stay within ``max_angle`` of the first."""
    k1, status = method.next(pos, direction, check_curvature=False)
    k2, s2 = method.next(pos + k1 * (0.5 * step_size), direction, check_curvature=False)
    k3, s3 = method.next(pos + k2 * (0.5 * step_size), direction, check_curvature=False)
    mid = k2 + k3
    mid = mid / torch.sqrt(dot3(mid, mid))[:, None]
    k4, s4 = method.next(pos + k3 * step_size, mid, check_curvature=False)
    u = k1 + k2 * 2.0 + k3 * 2.0 + k4
    u = u / torch.sqrt(dot3(u, u))[:, None]
    end, s5 = method.next(pos + u * step_size, u, check_curvature=False)
    for s in (s2, s3, s4, s5):
        status = torch.where(status == Status.CONTINUE, s, status)
    curved = (status == Status.CONTINUE) & (dot3(k1, end) < cos_max)
    status = torch.where(curved, torch.full_like(status, Status.HIGH_CURVATURE), status)
    return u, status


def _steps(method: Method, pos: torch.Tensor, direction: torch.Tensor, rows: torch.Tensor, n_steps: int,
           first_index: int, step_size: float, max_points: int, region: Region | None,
           direction_fn: Callable | None, keys: tuple[torch.Tensor, torch.Tensor] | None):
    """Run ``n_steps`` iterations on the active rows; returns the new state and what was recorded."""
    rec_rows, rec_cols, rec_pos, ended_rows, ended_status, first_rows, first_dirs = [], [], [], [], [], [], []
    for k in range(first_index, first_index + n_steps):
        if len(rows) == 0:
            break
        if direction_fn is None:
            key = None if keys is None else (keys[0][rows], keys[1][rows], k)
            new_dir, status = method.next(pos, direction, key=key)
        else:
            new_dir, status = direction_fn(pos, direction)
        new_pos = pos + new_dir * step_size
        if region is not None:
            leaving = (status == Status.CONTINUE) & ~region.contains(new_pos)
            status = torch.where(leaving, torch.full_like(status, Status.EXIT_MASK), status)
        moving = status == Status.CONTINUE
        keep = moving.nonzero().squeeze(1)
        if k == 0:
            first_rows.append(rows[keep])
            first_dirs.append(new_dir[keep])
        rec_rows.append(rows[keep])
        rec_cols.append(torch.full((len(keep),), k, dtype=torch.int64, device=rows.device))
        rec_pos.append(new_pos[keep])
        if k + 1 >= max_points:
            status = torch.where(moving, torch.full_like(status, Status.MAX_LENGTH), status)
            moving = torch.zeros_like(moving)
            keep = keep[:0]
        ended = (~moving).nonzero().squeeze(1)
        ended_rows.append(rows[ended])
        ended_status.append(status[ended])
        rows, pos, direction = rows[keep], new_pos[keep], new_dir[keep]
    return rows, pos, direction, rec_rows, rec_cols, rec_pos, ended_rows, ended_status, first_rows, first_dirs


def propagate(method: Method, pos: torch.Tensor, direction: torch.Tensor, step_size: float, max_points: int,
              region: Region | None = None, rk4_cos_max: float | None = None,
              checkpoint_every: int = 32,
              keys: tuple[torch.Tensor, torch.Tensor] | None = None) -> HalfStreamlines:
    """Track half-streamlines from (M, 3) RAS ``pos`` along unit ``direction`` for at most
    ``max_points`` new points each. ``rk4_cos_max`` switches to RK4 integration. ``keys`` =
    (seed index (M,), branch (M,)) key the random draws of sampling methods (see ``Method.next``)."""
    m = len(pos)
    device = pos.device
    direction_fn = None
    if rk4_cos_max is not None:
        direction_fn = lambda p, d: rk4_direction(method, p, d, step_size, rk4_cos_max)  # noqa: E731
    rows = torch.arange(m, device=device)
    grad = torch.is_grad_enabled() and (pos.requires_grad or method.requires_grad)
    block = checkpoint_every if grad else max_points
    all_rows, all_cols, all_pos, end_rows, end_status, first_rows, first_dirs = [], [], [], [], [], [], []
    k = 0
    while k < max_points and len(rows):
        n = min(block, max_points - k)
        args = (method, pos, direction, rows, n, k, step_size, max_points, region, direction_fn, keys)
        if grad:
            out = checkpoint(_steps, *args, use_reentrant=False)
        else:
            out = _steps(*args)
        rows, pos, direction, r_rows, r_cols, r_pos, e_rows, e_status, f_rows, f_dirs = out
        all_rows += r_rows
        all_cols += r_cols
        all_pos += r_pos
        end_rows += e_rows
        end_status += e_status
        first_rows += f_rows
        first_dirs += f_dirs
        k += n
    status = torch.full((m,), int(Status.MAX_LENGTH), dtype=torch.int64, device=device)
    if end_rows:
        status[torch.cat(end_rows)] = torch.cat(end_status)
    rows_cat = torch.cat(all_rows) if all_rows else torch.zeros(0, dtype=torch.int64, device=device)
    cols_cat = torch.cat(all_cols) if all_cols else torch.zeros(0, dtype=torch.int64, device=device)
    counts = torch.bincount(rows_cat, minlength=m)
    width = int(counts.max()) if m and len(rows_cat) else 0
    points = pos.new_zeros((m, width, 3))
    if len(rows_cat):
        points = points.index_put((rows_cat, cols_cat), torch.cat(all_pos))
    first = torch.full((m, 3), float("nan"), dtype=pos.dtype, device=device)
    if first_rows:
        first = first.index_put((torch.cat(first_rows),), torch.cat(first_dirs))
    return HalfStreamlines(points, counts, status, first)
