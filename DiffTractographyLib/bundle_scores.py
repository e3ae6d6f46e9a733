"""Tractometer-like scores of streamlines against known bundles (phantoms): each bundle is a tube of
radius r (mm) around a centre line, with a voxel label map.

A streamline is valid for a bundle when at least ``inside_share`` of its points lie within
r + ``margin`` of the centre line and its points cover at least ``min_coverage`` of the centre line's
length (the span of their nearest centre-line points); the first such bundle is its bundle.
Scores: VC (share of valid streamlines), VB (bundles with at least ``min_streamlines`` valid ones),
OL (share of a bundle's voxels reached by its valid streamlines, mean over bundles), OR (voxels
they reach outside the bundle over its voxel count, mean over bundles).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from .geometry import apply_affine


def assign_bundles(streamlines: Sequence[np.ndarray], centrelines: Sequence[np.ndarray], radii: Sequence[float],
                   margin: float, inside_share: float = 0.9, min_coverage: float = 0.5) -> np.ndarray:
    """Bundle index (N,) of each streamline ((P, 3) RAS mm), -1 when it is valid for none.
    centrelines: (M, 3) RAS mm each; radii and margin in mm."""
    lengths = np.array([len(s) for s in streamlines])
    bundle = np.full(len(streamlines), -1)
    if not len(streamlines) or not lengths.sum():
        return bundle
    points = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1, 3) for s in streamlines])
    owner = np.repeat(np.arange(len(streamlines)), lengths)
    for b in range(len(centrelines) - 1, -1, -1):  # the first matching bundle wins
        line = np.asarray(centrelines[b], dtype=np.float64)
        distance, nearest = cKDTree(line).query(points)
        near = np.bincount(owner, distance <= radii[b] + margin, len(streamlines)) / np.maximum(lengths, 1)
        span = np.zeros(len(streamlines))
        first = np.r_[0, np.cumsum(lengths)[:-1]]
        has = lengths > 0
        span[has] = (np.maximum.reduceat(nearest, first[has]) - np.minimum.reduceat(nearest, first[has]))
        valid = (lengths > 1) & (near >= inside_share) & (span / (len(line) - 1) >= min_coverage)
        bundle[valid] = b
    return bundle


def score_bundles(streamlines: Sequence[np.ndarray], centrelines: Sequence[np.ndarray], radii: Sequence[float],
                  labels: np.ndarray, affine, min_streamlines: int = 10) -> dict:
    """VC, VB, OL, OR (see the module docstring), the share of streamlines valid for each bundle and
    the mean length (mm). labels: (B, X, Y, Z) bool bundle masks on the grid of ``affine``; the
    margin is one (geometric mean) voxel."""
    affine = np.asarray(affine, dtype=np.float64)
    voxel = float(np.cbrt(abs(np.linalg.det(affine[:3, :3]))))
    bundle = assign_bundles(streamlines, centrelines, radii, margin=voxel)
    inverse = np.linalg.inv(affine)
    shape = np.array(labels.shape[1:])
    reached = np.zeros(labels.shape, dtype=bool)
    for s, b in zip(streamlines, bundle):
        if b < 0:
            continue
        ijk = np.rint(apply_affine(inverse, s)).astype(int)
        ijk = ijk[np.all((ijk >= 0) & (ijk < shape), axis=1)]
        reached[b][tuple(ijk.T)] = True
    size = np.maximum(labels.reshape(len(labels), -1).sum(1), 1)
    n = max(len(streamlines), 1)
    lengths = [float(np.linalg.norm(np.diff(s, axis=0), axis=1).sum()) for s in streamlines if len(s) > 1]
    return dict(n=len(streamlines), VC=float((bundle >= 0).sum() / n),
                VB=int(sum((bundle == b).sum() >= min_streamlines for b in range(len(radii)))),
                OL=float(np.mean((reached & labels).reshape(len(labels), -1).sum(1) / size)),
                OR=float(np.mean((reached & ~labels).reshape(len(labels), -1).sum(1) / size)),
                shares=[float((bundle == b).sum() / n) for b in range(len(radii))],
                mean_length_mm=float(np.mean(lengths)) if lengths else 0.0)
