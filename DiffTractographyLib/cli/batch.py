"""``difftract batch``: every participant of a BIDS dataset through fit -> track -> cluster on Dask
(a BIDS App: BIDS_DIR OUTPUT_DIR participant|group).

participant: each participant (subject and session) is a Dask task graph that runs the commands
``difftract fit``, ``difftract track`` and, with --cluster-threshold, ``difftract cluster`` with the
options below, so its outputs are those of the commands run by hand (its sidecar lists them).
Participants whose outputs exist with the same parameters, input checksums and version are
skipped; a participant with bad input fails alone, with a one-line reason, and the exit status is
then 1. Writes BIDS-Derivatives into OUTPUT_DIR and the group table difftract_group.tsv.
group: writes the group table from the participants in OUTPUT_DIR, running nothing.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..config import ALGORITHMS
from ..errors import InputError
from . import COMMANDS
from .track import add_limit_arguments

EPILOG = """\
Input: raw BIDS (sub-*/[ses-*/]dwi/*_dwi.nii.gz with its .bval/.bvec, an optional *_mask.nii.gz of
the same subject, session and space) or a preprocessed derivatives folder (QSIPrep's
*_desc-preproc_dwi.nii.gz with *_desc-brain_mask.nii.gz; choose the series with
--bids-filter space=T1w desc=preproc when there are several). The brain mask is the seed and
stopping mask; without one, the voxels with signal are (written as *_desc-signal_mask.nii.gz).
sdstream, detmax and prob track the CSD FOD of `difftract fit csd`; tensordet tracks the DWI's
tensor (and `difftract fit dti` writes its maps). Options left out take the commands' defaults.

Where it runs: a LocalCluster of --workers processes by default; --scheduler joins a running Dask
cluster (Kubernetes through dask-kubernetes, a multi-GPU machine through dask-cuda); --cluster-config
builds a SLURM/PBS/SGE/LSF cluster with dask-jobqueue from a Dask configuration file (see
docs/batch.md and docs/batch-slurm.yaml). With --gpus-per-worker, tracking goes to workers holding a
GPU resource. Progress goes to stderr, with the address of the Dask dashboard.

Example: difftract batch /data/ds001 /data/ds001/derivatives/difftract participant \\
             --participant-label 01 02 --workers 2 --lmax 6 --cluster-threshold 10
"""

#: batch options that are parameters of the outputs (the rest say where and how fast they run)
PARAMETERS = ("shell", "b0_threshold", "lmax", "fa_threshold", "roi_radii", "tau", "lambda_", "seeds_per_voxel",
              "seed_placement", "step", "angle", "cutoff", "min_length", "max_length", "rk4", "unidirectional",
              "noprecomputed", "precision", "rng_seed", "cluster_threshold", "cluster_points", "cluster_min_size")


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help=COMMANDS["batch"], description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="BIDS dataset (raw, or a derivatives folder such as QSIPrep's)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="BIDS-Derivatives folder to write")
    p.add_argument("analysis_level", choices=("participant", "group"), help="participant: run; group: the group table")
    sel = p.add_argument_group("participants")
    sel.add_argument("--participant-label", nargs="+", metavar="LABEL",
                     help="subjects to process (01 or sub-01; default all)")
    sel.add_argument("--bids-filter", nargs="+", metavar="KEY=VALUE",
                     help="BIDS entities the DWI series must have, e.g. space=T1w desc=preproc")
    where = p.add_argument_group("execution (Dask)")
    place = where.add_mutually_exclusive_group()
    place.add_argument("--workers", type=int, metavar="N",
                       help="worker processes of the local cluster, or workers to request with --cluster-config "
                            "(default: the local cores, at most one per participant; 1 with --gpus-per-worker)")
    place.add_argument("--scheduler", metavar="ADDRESS", help="join the Dask cluster of this scheduler (tcp://host:8786)")
    where.add_argument("--cluster-config", metavar="YAML",
                       help="start workers through dask-jobqueue from this Dask configuration file "
                            "(a 'jobqueue: slurm:' section; docs/batch-slurm.yaml)")
    where.add_argument("--threads-per-worker", type=int, metavar="N",
                       help="CPU threads of each participant's stages (default: the local cores shared among the "
                            "workers; on a remote cluster, the worker's cores)")
    where.add_argument("--gpus-per-worker", type=int, default=0, metavar="N",
                       help="GPUs each worker holds (Dask resource GPU=N); tracking runs on them (default 0)")
    where.add_argument("--work-dir", metavar="DIR", help="temporary files (default OUTPUT_DIR/.work)")
    fit = p.add_argument_group("fit (difftract fit csd; dti for tensordet)")
    fit.add_argument("--lmax", type=int, help="maximum SH degree of the CSD (default 8)")
    fit.add_argument("--shell", type=float, metavar="B", help="shell to fit, s/mm^2 (default: csd the largest, dti all)")
    fit.add_argument("--b0-threshold", type=float, metavar="B", help="b-values <= B are b=0 volumes (default 50)")
    fit.add_argument("--fa-threshold", type=float, help="FA of the response's single-fibre voxels (default 0.7)")
    fit.add_argument("--roi-radii", type=int, help="half-width in voxels of the response's search cube (default 10)")
    fit.add_argument("--tau", type=float, help="CSD constraint threshold (default 0.1)")
    fit.add_argument("--lambda", dest="lambda_", type=float, help="CSD constraint weight (default 1)")
    seeds = p.add_argument_group("seeding (in the brain mask)")
    seeds.add_argument("--seeds-per-voxel", type=int, metavar="N", help="seeds per voxel (default 1)")
    seeds.add_argument("--seed-placement", choices=("random", "grid"), help="random (default) or grid")
    trk = p.add_argument_group("tracking (difftract track)")
    trk.add_argument("--algorithm", choices=ALGORITHMS, default="sdstream", help="default sdstream")
    add_limit_arguments(trk)
    trk.add_argument("--rk4", action="store_true", help="fourth-order Runge-Kutta integration (sdstream)")
    trk.add_argument("--unidirectional", action="store_true", help="track only forwards from each seed")
    trk.add_argument("--noprecomputed", action="store_true", help="evaluate SH exactly (no Legendre table)")
    trk.add_argument("--precision", choices=("float32", "float64"), help="default float32 (float64 for detmax)")
    trk.add_argument("--rng-seed", type=int, metavar="N", help="seed of all random draws (default 0)")
    clu = p.add_argument_group("clustering (difftract cluster; only with --cluster-threshold)")
    clu.add_argument("--cluster-threshold", type=float, nargs="+", metavar="MM",
                     help="QuickBundles MDF thresholds in mm (several, decreasing: a hierarchy)")
    clu.add_argument("--cluster-points", type=int, metavar="M", help="points per resampled streamline (default 12)")
    clu.add_argument("--cluster-min-size", type=int, metavar="N", help="drop clusters smaller than N (default 1)")
    p.set_defaults(run=run)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args) -> int:
    from ..batch.graph import Options
    from ..batch.report import group_rows, write_group_table

    options = Options(args.algorithm, {name: getattr(args, name) for name in PARAMETERS}).check()
    if args.analysis_level == "participant":
        rows = _participants(args, options)
    else:
        rows = group_rows(args.output_dir, args.participant_label)
        if not rows:
            raise InputError(f"{args.output_dir}: no participant of difftract batch found")
    table = write_group_table(args.output_dir, group_rows(args.output_dir))
    failed = [r for r in rows if r["status"] == "failed"]
    _log(f"{len(rows) - len(failed)} of {len(rows)} participants done -> {table}")
    for row in failed:
        _log(f"  {row['participant_id']}{' ' + row['session_id'] if row['session_id'] else ''} failed: {row['reason']}")
    return 1 if failed else 0


def _participants(args, options) -> list[dict]:
    from dataclasses import replace

    from ..batch.cluster import compile_kernels, dashboard_line, open_client
    from ..batch.bids import parse_filters
    from ..batch.runner import execute, prepare

    for name in ("workers", "threads_per_worker"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.gpus_per_worker < 0:
        raise InputError("--gpus-per-worker must be 0 or more")
    if args.cluster_config is not None and args.scheduler is not None:
        raise InputError("give --scheduler or --cluster-config, not both")
    local = args.scheduler is None and args.cluster_config is None
    batch = prepare(args.bids_dir, args.output_dir, options, labels=args.participant_label,
                    filters=parse_filters(args.bids_filter), work_dir=args.work_dir, gpu=args.gpus_per_worker > 0,
                    log=_log)
    if not batch.todo:
        return batch.rows
    cores = len(os.sched_getaffinity(0))
    if args.workers:
        workers = args.workers
    elif not local:  # jobs to request with --cluster-config (unused with --scheduler)
        workers = len(batch.todo)
    else:
        workers = 1 if args.gpus_per_worker else min(len(batch.todo), cores)
    threads = args.threads_per_worker or (max(1, cores // workers) if local else None)
    batch.todo = [replace(plan, threads=threads) for plan in batch.todo]
    _log(f"{len(batch.todo)} participants to run; " + compile_kernels(options, args.gpus_per_worker > 0))
    with open_client(workers=workers, scheduler=args.scheduler, cluster_config=args.cluster_config,
                     gpus=args.gpus_per_worker) as client:
        where = args.scheduler or args.cluster_config or f"a local cluster of {workers} processes"
        per = threads or "the worker's cores"
        _log(f"workers: {where}; threads per participant: {per}; {dashboard_line(client)}")
        return execute(batch, client, _log)
