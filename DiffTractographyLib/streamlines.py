"""The in-memory tractogram: one flat (P, 3) array of RAS-mm points plus offsets.

The arrays are torch tensors (points may carry autograd history, from differentiable tracking) or,
from the compiled tracker used without torch, numpy arrays; the writers take either. The methods
that compute answer with tensors (importing torch on use).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .geometry import as_affine


def _lengths_to_offsets(lengths):
    """(N + 1,) int64 offsets of (N,) vertex counts, numpy or torch like ``lengths``."""
    if isinstance(lengths, np.ndarray):
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets
    import torch

    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=lengths.device)
    offsets[1:] = torch.cumsum(lengths.to(torch.int64), 0)
    return offsets


def as_numpy(x):
    """A torch tensor as a numpy view (detached, on the host); a numpy array (or anything else) as
    it is."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


@dataclass
class Tractogram:
    """Streamlines in RAS mm.

    points: (P, 3) float, RAS mm (a torch tensor or a numpy array; the other arrays alike).
    offsets: (N + 1,) int64, streamline i is
    ``points[offsets[i]:offsets[i + 1]]``. affine / dimensions describe the reference image grid
    (written into .trk/.trx headers). data_per_streamline: name -> (N, ...) tensors (e.g.
    ``seed_index``, ``status``, ``cluster``); data_per_point: name -> (P, ...) tensors.
    """

    points: torch.Tensor
    offsets: torch.Tensor
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    dimensions: tuple[int, int, int] = (1, 1, 1)
    data_per_streamline: dict[str, torch.Tensor] = field(default_factory=dict)
    data_per_point: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = as_affine(self.affine)
        self.dimensions = tuple(int(d) for d in self.dimensions)
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"points must be (P, 3), got {tuple(self.points.shape)}")
        if self.offsets.ndim != 1 or len(self.offsets) < 1:
            raise ValueError("offsets must be a 1-D tensor of length N + 1")
        if int(self.offsets[-1]) != len(self.points):
            raise ValueError(f"offsets end at {int(self.offsets[-1])} but there are {len(self.points)} points")
        n, p = len(self), len(self.points)
        for name, value in self.data_per_streamline.items():
            if len(value) != n:
                raise ValueError(f"data_per_streamline[{name!r}] has {len(value)} rows for {n} streamlines")
        for name, value in self.data_per_point.items():
            if len(value) != p:
                raise ValueError(f"data_per_point[{name!r}] has {len(value)} rows for {p} points")

    # construction -------------------------------------------------------------------------------
    @classmethod
    def from_list(cls, streamlines: Sequence, affine=None, dimensions=(1, 1, 1), dtype=None,
                  data_per_streamline: dict | None = None, data_per_point: dict | None = None) -> "Tractogram":
        """Build from a list of (n_i, 3) arrays or tensors in RAS mm (tensors of ``dtype``, default float32)."""
        import torch

        dtype = dtype or torch.float32
        tensors = [torch.as_tensor(np.asarray(s) if not torch.is_tensor(s) else s, dtype=dtype).reshape(-1, 3)
                   for s in streamlines]
        lengths = torch.tensor([len(t) for t in tensors], dtype=torch.int64)
        points = torch.cat(tensors) if tensors else torch.zeros((0, 3), dtype=dtype)
        return cls(points, _lengths_to_offsets(lengths), np.eye(4) if affine is None else affine, dimensions,
                   {k: torch.as_tensor(v) for k, v in (data_per_streamline or {}).items()},
                   {k: torch.as_tensor(v) for k, v in (data_per_point or {}).items()})

    @classmethod
    def from_padded(cls, points: torch.Tensor, lengths: torch.Tensor, affine=None, dimensions=(1, 1, 1),
                    data_per_streamline: dict | None = None) -> "Tractogram":
        """Pack (N, T, 3) padded points with (N,) vertex counts; keeps autograd history."""
        import torch

        lengths = lengths.to(torch.int64)
        t = points.shape[1]
        valid = torch.arange(t, device=points.device)[None, :] < lengths.to(points.device)[:, None]
        return cls(points[valid], _lengths_to_offsets(lengths.cpu()).to(points.device),
                   np.eye(4) if affine is None else affine, dimensions, dict(data_per_streamline or {}))

    # access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> torch.Tensor:
        """Vertex count of each streamline, (N,) int64."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def seed_index(self) -> torch.Tensor | None:
        return self.data_per_streamline.get("seed_index")

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.points[int(self.offsets[i]):int(self.offsets[i + 1])]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.streamlines())

    def streamlines(self) -> list[torch.Tensor]:
        import torch

        return list(torch.split(self.points, self.lengths.tolist()))

    def numpy_streamlines(self) -> list[np.ndarray]:
        """The streamlines as float32 numpy arrays (detached, on the CPU)."""
        flat = as_numpy(self.points).astype(np.float32, copy=False)
        return np.split(flat, as_numpy(self.offsets)[1:-1])

    def padded(self, fill: float = float("nan")) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, 3) points padded with ``fill`` and the (N,) vertex counts; keeps autograd history."""
        import torch

        n, lengths = len(self), self.lengths
        t = int(lengths.max()) if n else 0
        out = self.points.new_full((n, t, 3), fill)
        valid = torch.arange(t, device=self.points.device)[None, :] < lengths.to(self.points.device)[:, None]
        out = out.masked_scatter(valid[..., None].expand(n, t, 3), self.points)
        return out, lengths

    def arc_lengths(self) -> torch.Tensor:
        """Length of each streamline in mm, (N,)."""
        import torch

        seg = torch.linalg.vector_norm(self.points[1:] - self.points[:-1], dim=1)
        seg = torch.cat([seg.new_zeros(1), seg])
        csum = torch.cumsum(seg.double(), 0)
        starts, ends = self.offsets[:-1], self.offsets[1:] - 1
        out = csum[ends.clamp(min=0)] - csum[starts.clamp(max=max(len(self.points) - 1, 0))]
        return torch.where(self.lengths > 0, out, torch.zeros_like(out)).to(self.points.dtype)

    # transformation -----------------------------------------------------------------------------
    def subset(self, index) -> "Tractogram":
        """Streamlines ``index`` (bool mask or integer indices), in that order, with their data."""
        import torch

        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = torch.nonzero(idx, as_tuple=False).flatten()
        idx = idx.to(torch.int64).cpu()
        lengths = self.lengths.cpu()[idx]
        starts = self.offsets.cpu()[:-1][idx]
        point_idx = (torch.repeat_interleave(starts, lengths)
                     + torch.arange(int(lengths.sum())) - torch.repeat_interleave(_lengths_to_offsets(lengths)[:-1], lengths))
        pdev = point_idx.to(self.points.device)
        return Tractogram(self.points[pdev], _lengths_to_offsets(lengths).to(self.offsets.device), self.affine,
                          self.dimensions,
                          {k: v[idx.to(v.device)] for k, v in self.data_per_streamline.items()},
                          {k: v[pdev.to(v.device)] for k, v in self.data_per_point.items()})

    def detach(self) -> "Tractogram":
        return Tractogram(self.points.detach(), self.offsets, self.affine, self.dimensions,
                          {k: v.detach() for k, v in self.data_per_streamline.items()},
                          {k: v.detach() for k, v in self.data_per_point.items()})

    def to(self, device) -> "Tractogram":
        return Tractogram(self.points.to(device), self.offsets.to(device), self.affine, self.dimensions,
                          {k: v.to(device) for k, v in self.data_per_streamline.items()},
                          {k: v.to(device) for k, v in self.data_per_point.items()})

    @staticmethod
    def concatenate(parts: Sequence["Tractogram"]) -> "Tractogram":
        """Join tractograms on the same grid; data keys must agree."""
        import torch

        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        lengths = torch.cat([p.lengths.cpu() for p in parts])
        return Tractogram(torch.cat([p.points for p in parts]), _lengths_to_offsets(lengths).to(first.offsets.device),
                          first.affine, first.dimensions,
                          {k: torch.cat([p.data_per_streamline[k] for p in parts]) for k in first.data_per_streamline},
                          {k: torch.cat([p.data_per_point[k] for p in parts]) for k in first.data_per_point})
