"""Which torch device a run uses."""
from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unknown name or a CUDA request without CUDA is
    an InputError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but no CUDA device is available; use cpu or auto")
    return device
