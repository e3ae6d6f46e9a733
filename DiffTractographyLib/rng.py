"""Counter-based random numbers: the value drawn for (rng_seed, seed index, stream, draw) does not
depend on chunking, device or the order in which streamlines are processed, so a run is
reproducible from ``rng_seed`` alone and a checkpointed backward pass sees the same draws."""
from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash kept in int64 (multipliers < 2**31: products never overflow)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x297A2D39) & _MASK
    return x ^ (x >> 15)


def uniform(rng_seed: int, index: torch.Tensor, stream: int | torch.Tensor, n: int | torch.Tensor,
            dtype=torch.float64) -> torch.Tensor:
    """(len(index), n) uniforms in (0, 1) for integer keys ``index`` in draw ``stream`` (an int, or
    an int64 tensor with one stream per key). ``n`` may instead be a (len(index), K) tensor of draw
    numbers: then draw d of each key is returned where ``n`` holds d."""
    key = _mix(_mix(index.to(torch.int64) + _mix(torch.tensor(rng_seed, dtype=torch.int64))) ^ (stream * 0x3C6EF372 & _MASK))
    draws = torch.arange(n, dtype=torch.int64, device=index.device)[None, :] if isinstance(n, int) else n.to(torch.int64)
    bits = _mix(_mix(key[:, None] ^ (draws * 0x1B873593 & _MASK)) + 0x9E3779B9)
    return ((bits.to(torch.float64) + 0.5) / 4294967296.0).to(dtype)


def unit_vectors(rng_seed: int, index: torch.Tensor, stream: int, dtype=torch.float32) -> torch.Tensor:
    """(len(index), 3) directions uniform on the sphere."""
    return on_sphere(uniform(rng_seed, index, stream, 2)).to(dtype)


def on_sphere(u: torch.Tensor) -> torch.Tensor:
    """(N, 2) uniforms in (0, 1) -> (N, 3) unit vectors uniform on the sphere (z and azimuth)."""
    z = 2.0 * u[:, 0] - 1.0
    phi = 2.0 * math.pi * u[:, 1]
    r = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
