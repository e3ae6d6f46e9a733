"""Where the participants run: a Dask cluster, and the compiled kernels it needs.

- ``open_client``: a ``LocalCluster`` of worker processes (the default), an existing cluster at a
  scheduler address (``--scheduler``: a cluster started by ``dask-kubernetes``, ``dask-cuda``,
  ``dask scheduler``/``dask worker``), or a job-queue cluster (SLURM, PBS, SGE, LSF, ...) built by
  ``dask-jobqueue`` from a Dask configuration file (``jobqueue_cluster``).
- ``compile_kernels``: numba compiles the tracking kernels on their first call (20-30 s per
  algorithm and precision) and caches them on disk; tracking a tiny phantom in the parent process
  before the workers start compiles them once, and every worker then loads them from the cache.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from .graph import Options


def compile_kernels(options: Options, gpu: bool) -> str:
    """Compile (or load from numba's cache) the kernels the batch's tracking uses by tracking a tiny
    phantom with the same options; for GPU workers the CUDA kernels, when this process can compile
    them. Invalid tracking options fail here, before any participant (InputError). Returns what was
    done, for the log."""
    from ..config import TrackingParams
    from ..dwi import DWI
    from ..fields import DWIField, SHField
    from ..phantoms import Bundle, dwi_phantom, fod_phantom
    from ..tracking import track
    from ..tracking.kernels.availability import cuda_status

    device = "cuda" if gpu else "cpu"
    if gpu and not cuda_status()[0]:
        return "kernels: no CUDA here; each GPU worker compiles them on its first participant"
    shape, affine = (8, 8, 8), np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -7.0
    bundles = [Bundle.straight((-6.0, 0.0, 0.0), (6.0, 0.0, 0.0), 3.0)]
    if options.model == "csd":
        coeffs, mask = fod_phantom(shape, affine, bundles)
        field = SHField(coeffs, affine)
    else:
        bvecs = np.vstack([np.zeros(3), np.eye(3), np.array([[1.0, 1, 0], [1, 0, 1], [0, 1, 1]]) / np.sqrt(2)])
        bvals = np.r_[0.0, np.full(6, 1000.0)]
        field = DWIField.from_dwi(DWI(dwi_phantom(shape, affine, bundles, bvals, bvecs), affine, bvals, bvecs))
        mask = None
    values = options.values
    params = TrackingParams(algorithm=options.algorithm, step_size=values.get("step"), max_angle=values.get("angle"),
                            cutoff=values.get("cutoff"), min_length=values.get("min_length"),
                            max_length=values.get("max_length"), rk4=bool(values.get("rk4")),
                            unidirectional=bool(values.get("unidirectional")),
                            sh_precomputed=not values.get("noprecomputed"), precision=values.get("precision"),
                            device=device).validate()
    track(field, np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0]]), params, mask=mask)
    return f"kernels: {options.algorithm} compiled for {device} (numba's on-disk cache)"


#: dask-jobqueue's cluster classes by the name of their configuration section
JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
            "htcondor": "HTCondorCluster", "oar": "OARCluster", "moab": "MoabCluster"}


def jobqueue_cluster(config_path, gpus: int = 0):
    """A dask-jobqueue cluster from a Dask configuration file holding one ``jobqueue: <system>:``
    section (the format of ``~/.config/dask/jobqueue.yaml``; keys as in dask-jobqueue's docs). The
    workers are given ``--resources GPU=<gpus>`` when ``gpus`` > 0. Starts its scheduler here; no
    job is submitted until the cluster is scaled."""
    import dask_jobqueue
    import yaml

    path = Path(config_path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not a readable YAML file ({exc})") from exc
    systems = list((config or {}).get("jobqueue") or {})
    if len(systems) != 1 or systems[0] not in JOBQUEUE:
        raise InputError(f"{path}: a cluster configuration holds one 'jobqueue:' section among "
                         f"{', '.join(JOBQUEUE)}; found {systems or 'none'}")
    # the configuration's keys are the cluster's arguments with '-' for '_', but for 'name': the job's name
    kwargs = {"job_name" if key == "name" else key.replace("-", "_"): value
              for key, value in config["jobqueue"][systems[0]].items()}
    if gpus:
        kwargs["worker_extra_args"] = [*kwargs.get("worker_extra_args", []), "--resources", f"GPU={gpus}"]
    try:
        return getattr(dask_jobqueue, JOBQUEUE[systems[0]])(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from exc


@contextlib.contextmanager
def open_client(*, workers: int, scheduler: str | None = None, cluster_config: str | None = None,
                gpus: int = 0, dashboard: str = ":8787") -> Iterator:
    """A ``distributed.Client``: of the scheduler at ``scheduler``; of a job-queue cluster from
    ``cluster_config`` scaled to ``workers`` jobs' workers; else of a ``LocalCluster`` of ``workers``
    processes of one task each (a task uses the threads the batch gives it), holding ``gpus`` GPU
    resources each. Everything started here is closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            yield client
        return
    if cluster_config is not None:
        cluster = jobqueue_cluster(cluster_config, gpus)
        cluster.scale(workers)
    else:
        # idle OpenMP threads sleep rather than spin: the workers share the cores (as Testing/conftest.py)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               resources={"GPU": gpus} if gpus else None, dashboard_address=dashboard,
                               env={"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
    with cluster, Client(cluster) as client:
        yield client


def dashboard_line(client) -> str:
    """Where the Dask dashboard is (it needs bokeh)."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return "Dask dashboard: unavailable (pip install 'bokeh>=3.1')"
    return f"Dask dashboard: {client.dashboard_link}"
