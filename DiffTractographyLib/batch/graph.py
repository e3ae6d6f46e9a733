"""One participant as a Dask task graph: fit -> track -> [cluster] -> finish.

Each stage runs the ``difftract`` command of the same name in the worker's process, on options
built from the batch's (``Options``), so that a participant's outputs are those of the commands
run by hand; the sidecar records those commands. A stage writes into a fresh work folder, then
publishes its files atomically into the derivatives (``outputs.publish``); ``finish`` writes the
sidecar last. Tracking asks for one ``GPU`` resource when the workers hold GPUs, so that Dask sends
it to a worker with one. A failed stage raises; Dask marks the stages after it failed too.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import socket
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import outputs
from .bids import Participant
from .outputs import Layout

#: batch option -> ``difftract fit`` option, by model; csd's options do not exist for dti
FIT_OPTIONS = {
    "csd": {"shell": "--shell", "b0_threshold": "--b0-threshold", "lmax": "--lmax", "fa_threshold": "--fa-threshold",
            "roi_radii": "--roi-radii", "tau": "--tau", "lambda_": "--lambda"},
    "dti": {"shell": "--shell", "b0_threshold": "--b0-threshold"},
}
#: batch option -> ``difftract track`` option
TRACK_OPTIONS = {"seeds_per_voxel": "--seeds-per-voxel", "seed_placement": "--seed-placement", "step": "--step",
                 "angle": "--angle", "cutoff": "--cutoff", "min_length": "--min-length", "max_length": "--max-length",
                 "rk4": "--rk4", "unidirectional": "--unidirectional", "noprecomputed": "--noprecomputed",
                 "precision": "--precision", "rng_seed": "--rng-seed"}
#: batch option -> ``difftract cluster`` option
CLUSTER_OPTIONS = {"cluster_threshold": "--threshold", "cluster_points": "--points", "cluster_min_size": "--min-size"}
#: the file ``difftract fit csd --out-prefix PREFIX`` writes the FOD to
FOD_SUFFIX = "_fod.nii.gz"

# One stage at a time in a worker process: a stage uses every thread given to the worker, and it
# captures the process's stdout and stderr (the commands' messages, which go into the sidecar).
_STAGE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Options:
    """The participant-level parameters: ``algorithm`` and the options given by the user, by batch
    name (``values``; an option not given is left to the command's default)."""

    algorithm: str = "sdstream"
    values: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        """csd for the FOD algorithms, dti for tensordet (which tracks the DWI's tensor itself)."""
        from ..tracking.algorithms import algorithm

        return "csd" if algorithm(self.algorithm).tracks_fod else "dti"

    @property
    def clustering(self) -> bool:
        return self.values.get("cluster_threshold") is not None

    def check(self) -> "Options":
        """InputError for options the chosen algorithm's fit does not take."""
        fit = {**FIT_OPTIONS["csd"], **FIT_OPTIONS["dti"]}
        unused = [fit[k] for k in fit if k not in FIT_OPTIONS[self.model] and self.values.get(k) is not None]
        if unused:
            raise InputError(f"{', '.join(unused)}: options of the CSD fit, which {self.algorithm} does not use "
                             "(it tracks the diffusion tensor)")
        if not self.clustering and any(self.values.get(k) is not None for k in ("cluster_points", "cluster_min_size")):
            raise InputError("--cluster-points and --cluster-min-size need --cluster-threshold")
        return self

    def parameters(self) -> dict:
        """Every parameter that shapes the outputs (the sidecar's ``parameters``)."""
        given = {k: v for k, v in self.values.items() if v is not None and v is not False}
        return {"algorithm": self.algorithm, "model": self.model, **dict(sorted(given.items()))}

    def argv(self, table: dict) -> list[str]:
        """The command-line options of ``table`` (batch name -> command option) that were given."""
        argv = []
        for name, flag in table.items():
            value = self.values.get(name)
            if value is True:
                argv.append(flag)
            elif isinstance(value, (list, tuple)):
                argv += [flag, *map(_text, value)]
            elif value is not None and value is not False:
                argv += [flag, _text(value)]
        return argv


def _text(value) -> str:
    """A value as typed: floats exactly (repr), without a trailing '.0' when whole."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to run one participant. ``threads``: CPU threads of each stage
    (None: the cores the worker's process may use); ``gpu``: track on the worker's GPU;
    ``expected``: the sidecar's software, inputs and parameters (what a rerun compares)."""

    layout: Layout
    options: Options
    work_dir: Path
    expected: dict
    threads: int | None = None
    gpu: bool = False

    @property
    def participant(self) -> Participant:
        return self.layout.participant

    @property
    def work_folder(self) -> Path:
        """The participant's temporary folder (its stages' attempts are folders inside)."""
        return self.work_dir / self.participant.label

    @property
    def track_device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    def fit_argv(self, prefix: Path) -> list[str]:
        p = self.participant
        argv = ["fit", self.options.model, "--dwi", str(p.dwi), "--bvals", str(p.bval), "--bvecs", str(p.bvec)]
        if p.mask is not None:
            argv += ["--mask", str(p.mask)]
        return argv + self.options.argv(FIT_OPTIONS[self.options.model]) + [
            "--out-prefix", str(prefix), "--device", "cpu"]

    def track_argv(self, fit_prefix: Path, seed_mask: Path, out: Path, threads: int | None = None) -> list[str]:
        p, o = self.participant, self.options
        if o.model == "csd":
            field_argv = ["--fod", f"{fit_prefix}{FOD_SUFFIX}"]
        else:
            field_argv = ["--dwi", str(p.dwi), "--bvals", str(p.bval), "--bvecs", str(p.bvec)]
        return ["track", *field_argv, "--algorithm", o.algorithm, "--seed-image", str(seed_mask), "--mask",
                str(seed_mask), *o.argv(TRACK_OPTIONS), "--device", self.track_device,
                *(["--nthreads", str(threads)] if threads else []), "--out", str(out)]

    def cluster_argv(self, tractogram: Path, out: Path) -> list[str]:
        return ["cluster", str(tractogram), *self.options.argv(CLUSTER_OPTIONS), "--out", str(out)]

    def commands(self) -> list[str]:
        """The commands that reproduce this participant's outputs by hand, run in OUTPUT_DIR."""
        lay = self.layout

        def rel(path: Path) -> Path:
            return path.relative_to(lay.output_dir) if path.is_relative_to(lay.output_dir) else path

        prefix = rel(lay.folder / lay.base)
        argvs = [self.fit_argv(prefix), self.track_argv(prefix, rel(lay.seed_mask), rel(lay.tractogram))]
        if self.options.clustering:
            argvs.append(self.cluster_argv(rel(lay.tractogram), rel(lay.clusters)))
        return [shlex.join(["difftract", *argv]) for argv in argvs]


def run_command(argv: list[str]) -> None:
    """Run ``difftract argv`` in this process; its InputError propagates, and an option it rejects
    becomes one."""
    from ..cli import build_parser

    try:
        args = build_parser(argv[0]).parse_args(argv)
    except SystemExit as exc:
        raise InputError(f"difftract {argv[0]} rejected the options {shlex.join(argv[1:])}") from exc
    status = args.run(args)
    if status:
        raise InputError(f"difftract {argv[0]} ended with status {status}")


@contextlib.contextmanager
def _stage(plan: Plan, name: str, result: dict):
    """A fresh work folder for stage ``name`` (earlier attempts' folders and hidden leftovers
    removed), with the process's output captured into ``result["messages"]`` and the time into
    ``result["seconds"]``; the folder is removed afterwards, whatever happens."""
    import torch

    with _STAGE_LOCK:
        base = plan.work_folder
        for old in base.glob(f"{name}-*"):
            shutil.rmtree(old, ignore_errors=True)
        plan.layout.remove_leftovers()
        folder = base / f"{name}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        threads = plan.threads or len(os.sched_getaffinity(0))
        torch.set_num_threads(threads)
        log = io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
                warnings.simplefilter("always", UserWarning)  # else a long-lived worker shows each one once
                yield folder, threads
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result.update(seconds=round(time.perf_counter() - start, 3), messages=log.getvalue().strip(),
                      worker=socket.gethostname())


def fit_stage(plan: Plan) -> dict:
    """``difftract fit``, and the signal mask when the participant has no brain mask; the
    participant's previous sidecar is withdrawn first, as its outputs are about to change."""
    result: dict = {"stage": "fit"}
    plan.layout.sidecar.unlink(missing_ok=True)
    with _stage(plan, "fit", result) as (folder, _):
        run_command(plan.fit_argv(folder / plan.layout.base))
        if plan.participant.mask is None:
            _write_signal_mask(plan, folder / plan.layout.seed_mask.name)
        result["files"] = outputs.publish(folder, plan.layout.folder)
    return result


def _write_signal_mask(plan: Plan, path: Path) -> None:
    """The voxels with any non-zero signal: the region ``difftract fit`` fits without a mask."""
    from ..dwi_io import load_dwi
    from ..images import save_nifti
    from ..models.volumes import as_mask

    p = plan.participant
    dwi = load_dwi(p.dwi, bvals=p.bval, bvecs=p.bvec)
    save_nifti(as_mask(dwi), dwi.affine, path, "difftract batch: voxels with signal")


def track_stage(plan: Plan, fit: dict) -> dict:
    """``difftract track`` from the published fit; counts, mean length and terminations."""
    import numpy as np

    from ..io import load_tractogram
    from ..polylines import polyline_lengths
    from ..streamlines import as_numpy

    result: dict = {"stage": "track"}
    lay = plan.layout
    with _stage(plan, "track", result) as (folder, threads):
        out = folder / lay.tractogram.name
        run_command(plan.track_argv(lay.folder / lay.base, lay.seed_mask, out, threads))
        tractogram = load_tractogram(out)
        lengths = polyline_lengths(as_numpy(tractogram.points), as_numpy(tractogram.lengths))
        result.update(streamlines=len(tractogram), mean_length_mm=round(float(np.mean(lengths)), 3),
                      device=_device_name(plan.track_device))
        result["files"] = outputs.publish(folder, lay.folder)
    result["terminations"] = terminations(result["messages"])
    return result


def _device_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    return f"cuda ({torch.cuda.get_device_name()})"


def terminations(messages: str) -> dict[str, int]:
    """The counts of ``difftract track``'s summary line 'terminations and outcomes: accepted 338,
    exit_mask 952, ...' -> {"accepted": 338, "exit_mask": 952, ...}."""
    found = re.search(r"^terminations and outcomes: (.*)$", messages, re.MULTILINE)
    if found is None:
        return {}
    pairs = (item.rsplit(" ", 1) for item in found.group(1).split(", "))
    return {name: int(count) for name, count in pairs}


def cluster_stage(plan: Plan, track: dict) -> dict:
    """``difftract cluster`` of the published tractogram; the number of clusters."""
    import torch

    from ..io import load_tractogram

    result: dict = {"stage": "cluster"}
    lay = plan.layout
    with _stage(plan, "cluster", result) as (folder, _):
        out = folder / lay.clusters.name
        run_command(plan.cluster_argv(lay.tractogram, out))
        labels = load_tractogram(out).data_per_streamline["cluster"]
        result["clusters"] = int(torch.unique(labels[labels >= 0]).numel())
        result["files"] = outputs.publish(folder, lay.folder)
    return result


def finish(plan: Plan, *stages: dict) -> dict:
    """Write the sidecar (last: it marks the participant complete), clear its failure record and
    work folder; returns its group-table row."""
    by_stage = {s["stage"]: s for s in stages}
    track = by_stage["track"]
    record = {
        **plan.expected,
        "participant_id": f"sub-{plan.participant.subject}",
        "session_id": f"ses-{plan.participant.session}" if plan.participant.session else None,
        "commands": plan.commands(),
        "commands_cwd": "the derivatives folder (OUTPUT_DIR)",
        "outputs": sorted({name for s in stages for name in s["files"]} | {plan.layout.sidecar.name}),
        "summary": {"streamlines": track["streamlines"], "mean_length_mm": track["mean_length_mm"],
                    "terminations": track["terminations"], "clusters": by_stage.get("cluster", {}).get("clusters"),
                    "seconds": {s["stage"]: s["seconds"] for s in stages}, "device": track["device"],
                    "worker": track["worker"]},
        "messages": {s["stage"]: s["messages"] for s in stages},
    }
    outputs.write_json(plan.layout.sidecar, record)
    plan.layout.failure.unlink(missing_ok=True)
    shutil.rmtree(plan.work_folder, ignore_errors=True)
    return record


def submit(client, plan: Plan) -> list:
    """Submit the participant's stages; returns their futures in order, ``finish``'s last."""
    tag = f"{plan.participant.label}-{uuid.uuid4().hex[:6]}"
    fit = client.submit(fit_stage, plan, key=f"fit-{tag}")
    track = client.submit(track_stage, plan, fit, key=f"track-{tag}", resources={"GPU": 1} if plan.gpu else None)
    stages = [fit, track]
    if plan.options.clustering:
        stages.append(client.submit(cluster_stage, plan, track, key=f"cluster-{tag}"))
    return stages + [client.submit(finish, plan, *stages, key=f"finish-{tag}")]
