"""Test helpers: tolerances and small synthetic inputs built in code."""
from __future__ import annotations

import numpy as np
import torch


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two polylines' vertices (mm)."""
    d = np.sqrt(((np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :]) ** 2).sum(-1))
    return float(max(d.min(1).max(), d.min(0).max()))


def assert_close(actual, expected, rtol=None, atol=None):
    torch.testing.assert_close(torch.as_tensor(actual), torch.as_tensor(expected), rtol=rtol, atol=atol)
