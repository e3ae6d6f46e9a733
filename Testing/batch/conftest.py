"""The BIDS dataset of the batch tests, and one participant-level run of ``difftract batch`` over
it that the tests share (a Dask LocalCluster of two worker processes; one worker is killed while
it writes sub-01's tractogram).

Dataset (``batch.phantom_dataset``, 18 x 18 x 14 voxels, 30 directions): sub-01 (oblique, brain
mask), sub-02 (x-flipped, no mask: seeds in the voxels with signal), sub-03 with sessions 1 and 2;
and three subjects with bad input: sub-04 has no .bvec, sub-05's gradient files list one volume
fewer than its DWI holds, sub-06's .bval holds a NaN.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from DiffTractographyLib.batch.phantom_dataset import write_dataset, write_subject

HERE = Path(__file__).resolve().parent
#: the options of the shared run, beyond BIDS_DIR OUTPUT_DIR participant
OPTIONS = ["--lmax", "6", "--cluster-threshold", "10"]


def write_bad_subjects(root: Path) -> None:
    """sub-04: no .bvec; sub-05: one gradient entry fewer than volumes; sub-06: a NaN b-value."""
    for k in (4, 5, 6):
        write_subject(root / f"sub-0{k}" / "dwi", f"sub-0{k}", seed=100 * k, flip_x=False, with_mask=False)
    (root / "sub-04/dwi/sub-04_dwi.bvec").unlink()
    for ext in ("bval", "bvec"):
        path = root / f"sub-05/dwi/sub-05_dwi.{ext}"
        np.savetxt(path, np.loadtxt(path, ndmin=2)[:, :-1], fmt="%.8f")
    bval = root / "sub-06/dwi/sub-06_dwi.bval"
    values = np.loadtxt(bval)
    values[5] = np.nan
    np.savetxt(bval, values[None], fmt="%g")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bids") / "ds"
    write_dataset(root, n_subjects=3)
    write_bad_subjects(root)
    return root


@pytest.fixture(scope="session")
def batch_run(dataset, tmp_path_factory):
    """``difftract batch ds out participant --workers 2 --lmax 6 --cluster-threshold 10``, with
    the worker killer preloaded. Returns rc, stderr, out, marker and the options."""
    import dask
    import distributed  # noqa: F401  (registers the distributed config)

    from DiffTractographyLib import cli

    out = tmp_path_factory.mktemp("derivatives") / "difftract"
    marker = out.parent / "killed.pid"
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(stderr):
        mp.setenv("DIFFTRACT_KILL_MARKER", str(marker))
        with dask.config.set({"distributed.worker.preload": [str(HERE / "kill_once.py")]}):
            rc = cli.main(["batch", str(dataset), str(out), "participant", "--workers", "2", *OPTIONS])
    return SimpleNamespace(rc=rc, stderr=stderr.getvalue(), out=out, marker=marker, options=OPTIONS)
