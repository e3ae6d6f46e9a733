"""Shared fixtures: devices, dtypes, seeded generators; markers gpu (skipped without CUDA) and slow
(only with --runslow)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# idle OpenMP workers sleep instead of spinning: on a shared or small CI machine spinning threads slow
# torch several-fold (must be set before torch starts its thread pool)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = Path(__file__).resolve().parent / "Data"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: use --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        metafunc.parametrize("device", devices)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
