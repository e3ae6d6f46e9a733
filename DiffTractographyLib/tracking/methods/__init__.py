"""Tracking methods in torch, one per file: the reference the compiled kernels are tested against and
the differentiable path (``Tracker`` uses them when the field or the seeds require grad)."""
from __future__ import annotations

import importlib

import torch

from ...config import TrackingParams
from ..algorithms import algorithm
from .base import Method


def make_method(field, params: TrackingParams, dtype: torch.dtype) -> Method:
    """The method of ``params.algorithm`` (already resolved) on ``field``: the class its declaration
    names, built by its ``from_params``."""
    declared = algorithm(params.algorithm)
    declared.check_field(field)
    module, name = declared.method.split(":")
    return getattr(importlib.import_module(f".{module}", __name__), name).from_params(field, params, dtype)
