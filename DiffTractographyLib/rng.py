"""Counter-based random numbers: the value drawn for (rng_seed, seed index, stream, draw) does not
depend on chunking, device or the order in which streamlines are processed, so a run is
reproducible from ``rng_seed`` alone and a checkpointed backward pass sees the same draws.

One hash serves every backend: ``mix``, ``stream_key`` and ``draw_bits`` are plain integer
arithmetic on int64 values, so the same functions run on numpy arrays, torch tensors (CPU or CUDA)
and, compiled, inside the tracking kernels. ``uniform`` and ``unit_vectors`` take numpy arrays or
torch tensors and answer in kind; this module imports neither torch nor numba.
"""
from __future__ import annotations

import math

import numpy as np

_MASK = 0xFFFFFFFF
_INV_2_32 = 1.0 / 4294967296.0


def mix(x):
    """A 32-bit integer hash kept in int64 (multipliers < 2**31: products never overflow)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x297A2D39) & _MASK
    return x ^ (x >> 15)


def stream_key(rng_seed, index, stream):
    """The key of draw stream ``stream`` of integer key ``index`` (a seed's index) under ``rng_seed``."""
    return mix(mix(index + mix(rng_seed)) ^ (stream * 0x3C6EF372 & _MASK))


def draw_bits(key, draw):
    """32 random bits (in int64) of draw number ``draw`` of a stream ``key``."""
    return mix(mix(key ^ (draw * 0x1B873593 & _MASK)) + 0x9E3779B9)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def uniform(rng_seed: int, index, stream, n, dtype=None):
    """(len(index), n) uniforms in (0, 1) for integer keys ``index`` in draw ``stream`` (an int, or
    an int64 array with one stream per key). ``n`` may instead be a (len(index), K) array of draw
    numbers: then draw d of each key is returned where ``n`` holds d. numpy in, numpy out (float64
    unless ``dtype``); torch in, torch out on the same device."""
    if _is_torch(index):
        import torch

        index = index.to(torch.int64)
        draws = torch.arange(n, dtype=torch.int64, device=index.device)[None, :] if isinstance(n, int) else n.to(torch.int64)
        bits = draw_bits(stream_key(rng_seed, index, stream)[:, None], draws)
        return ((bits.to(torch.float64) + 0.5) * _INV_2_32).to(dtype or torch.float64)
    index = np.asarray(index, dtype=np.int64)
    draws = np.arange(n, dtype=np.int64)[None, :] if isinstance(n, int) else np.asarray(n, dtype=np.int64)
    bits = draw_bits(stream_key(rng_seed, index, np.asarray(stream, dtype=np.int64))[:, None], draws)
    return ((bits.astype(np.float64) + 0.5) * _INV_2_32).astype(dtype or np.float64)


def on_sphere(u):
    """(N, 2) uniforms in (0, 1) -> (N, 3) unit vectors uniform on the sphere (z and azimuth)."""
    if _is_torch(u):
        import torch

        z = 2.0 * u[:, 0] - 1.0
        phi = 2.0 * math.pi * u[:, 1]
        r = torch.sqrt((1.0 - z * z).clamp(min=0.0))
        return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    z = 2.0 * u[:, 0] - 1.0
    phi = 2.0 * math.pi * u[:, 1]
    r = np.sqrt(np.maximum(1.0 - z * z, 0.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def unit_vectors(rng_seed: int, index, stream: int, dtype=None):
    """(len(index), 3) directions uniform on the sphere, drawn in float64 and cast to ``dtype``."""
    v = on_sphere(uniform(rng_seed, index, stream, 2))
    if dtype is None:
        return v
    return v.to(dtype) if _is_torch(v) else v.astype(dtype)
