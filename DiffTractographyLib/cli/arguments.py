"""Argument types and defaults shared by the commands: a bad value is refused as the command line is
read, with argparse's one-line message."""
from __future__ import annotations

import argparse
import math

#: the SH order of a CSD fit when --lmax is not given (as DIPY's and MRtrix3's defaults)
DEFAULT_LMAX = 8


def sphere(text: str) -> tuple[float, float, float, float]:
    """--seed-sphere X,Y,Z,R: four finite numbers, R >= 0."""
    values = _numbers(text, 4)
    if values is None or values[3] < 0:
        raise argparse.ArgumentTypeError(f"give X,Y,Z,R: the centre in RAS mm and a radius >= 0 mm, got {text}")
    return values


def direction(text: str) -> tuple[float, float, float]:
    """--seed-direction DX,DY,DZ: three finite numbers, not all zero."""
    values = _numbers(text, 3)
    if values is None or not any(values):
        raise argparse.ArgumentTypeError(f"give DX,DY,DZ: a RAS direction other than 0,0,0, got {text}")
    return values


def _numbers(text: str, count: int) -> tuple[float, ...] | None:
    """``count`` comma-separated finite numbers, or None."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return None
    return values if len(values) == count and all(math.isfinite(v) for v in values) else None


def positive_count(text: str) -> int:
    """A count option (--seeds, --select): a whole number >= 1, refused as the command line is read."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"give a whole number >= 1, got {text}")
    return count


def sh_order(text: str) -> int:
    """``--lmax``: an even SH order >= 2, refused as the command line is read (before any fit)."""
    try:
        order = int(text)
    except ValueError:
        order = None
    if order is None or order < 2 or order % 2:
        raise argparse.ArgumentTypeError(f"the SH order must be an even number >= 2, got {text}")
    return order
