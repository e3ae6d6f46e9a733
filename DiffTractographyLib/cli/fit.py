"""``difftract fit dti|csd``: fit a model to a DWI and write its maps as NIfTI.

dti writes PREFIX_{FA,MD,AD,RD}.nii.gz (diffusivities in mm^2/s), PREFIX_V1.nii.gz (principal
eigenvector, 3 volumes) and PREFIX_RGB.nii.gz (|V1| x FA). csd writes PREFIX_fod.nii.gz (SH
coefficients), PREFIX_fod.json (basis, frame, lmax, response, shell) and PREFIX_response.txt.
Vectors and SH coefficients are in the ``--frame`` given (default world = RAS, as MRtrix3 writes
them; ``voxel`` = along the voxel axes, as DIPY writes them); the frame is recorded in each header.
Existing outputs are kept unless --force is given; a run that fails leaves none of its outputs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import BASES, FRAMES
from ..dwi import B0_THRESHOLD
from ..dwi_io import load_dwi, load_mask
from ..errors import InputError
from . import COMMANDS
from ..files import check_outputs, load_table, write_all
from ..images import nifti_bytes
from .arguments import DEFAULT_LMAX, sh_order
from ..models import defaults

#: the maps of ``fit dti``; the files ``fit MODEL --out-prefix PREFIX`` writes: PREFIX and each suffix, in order
DTI_MAPS = ("FA", "MD", "AD", "RD", "V1", "RGB")
SUFFIXES = {"dti": tuple(f"_{name}.nii.gz" for name in DTI_MAPS), "csd": ("_fod.nii.gz", "_fod.json", "_response.txt")}
#: (option, attribute, what its value is, bound, whether the bound itself is allowed, unit) of the numeric options.
#: DIPY's CSD: tau = 0 is the ideal threshold (raised for stability); lambda weighs the non-negativity
#: constraint, which 0 would switch off.
_RANGES = (("--b0-threshold", "b0_threshold", "a finite b-value", 0, True, " s/mm^2"),
           ("--shell", "shell", "a finite b-value", 0, False, " s/mm^2"),
           ("--fa-threshold", "fa_threshold", "a finite FA", 0, True, ""),
           ("--roi-radii", "roi_radii", "a number of voxels", 0, True, ""),
           ("--tau", "tau", "a finite fraction of the mean FOD amplitude", 0, True, ""),
           ("--lambda", "lambda_", "a finite constraint weight", 0, False, ""))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("fit", help=COMMANDS["fit"],
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    common = argparse.ArgumentParser(add_help=False)
    data = common.add_argument_group("input")
    data.add_argument("--dwi", required=True, metavar="FILE",
                      help="DWI: NIfTI (.nii, .nii.gz), MRtrix3 (.mif, .mif.gz, .mih; gradients from its dw_scheme) or "
                          "Slicer DWI NRRD (.nrrd, .nhdr)")
    data.add_argument("--bvals", metavar="FILE", help="FSL b-values (default: the NIfTI's .bval sidecar)")
    data.add_argument("--bvecs", metavar="FILE", help="FSL b-vectors (default: the NIfTI's .bvec sidecar)")
    data.add_argument("--grad", metavar="FILE", help="MRtrix gradient table (x y z b per row, scanner frame)")
    data.add_argument("--mask", metavar="FILE", help="mask (NIfTI or .mif) on the DWI grid (default: voxels with signal)")
    data.add_argument("--b0-threshold", type=float, default=B0_THRESHOLD, metavar="B",
                      help=f"b-values <= B s/mm^2 are b=0 volumes (default {B0_THRESHOLD:g})")
    out = common.add_argument_group("output")
    out.add_argument("--out-prefix", required=True, metavar="PREFIX", help="output path prefix, e.g. out/sub01")
    out.add_argument("--frame", choices=FRAMES, default="world",
                     help="frame of vectors and SH coefficients: world (RAS, MRtrix3) or voxel (voxel axes, DIPY)")
    out.add_argument("--force", action="store_true", help="overwrite existing outputs")
    compute = common.add_argument_group("computation")
    compute.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    compute.add_argument("--precision", choices=("float64", "float32"), default="float64")

    tensor = models.add_parser("dti", parents=[common], help="diffusion tensor (DIPY's estimators)")
    tensor.add_argument("--method", choices=defaults.METHODS, default="WLS",
                        help="log-signal least squares (default WLS)")
    tensor.add_argument("--shell", type=float, metavar="B",
                        help="fit the b=0 volumes and the shell at B s/mm^2 only (default: all volumes)")

    fod = models.add_parser("csd", parents=[common], help="constrained spherical deconvolution (DIPY's CSD)")
    fod.add_argument("--lmax", type=sh_order, default=DEFAULT_LMAX,
                     help=f"maximum SH degree, even (default {DEFAULT_LMAX}; 12 with enough directions)")
    fod.add_argument("--sh-basis", choices=BASES, default="tournier07", help="SH basis written (default tournier07)")
    fod.add_argument("--shell", type=float, metavar="B", help="shell to fit, s/mm^2 (default: the largest)")
    fod.add_argument("--response", metavar="FILE",
                     help="response 'l1 l2 l3 S0' (mm^2/s, signal; a PREFIX_response.txt) instead of estimating it")
    fod.add_argument("--fa-threshold", type=float, default=defaults.FA_THRESHOLD,
                     help=f"FA above which voxels are single-fibre for the response (default {defaults.FA_THRESHOLD})")
    fod.add_argument("--roi-radii", type=int, default=defaults.ROI_RADII,
                     help="half-width in voxels of the central cube searched for the response "
                          f"(default {defaults.ROI_RADII})")
    fod.add_argument("--tau", type=float, default=defaults.TAU,
                     help=f"constraint threshold, x mean amplitude (default {defaults.TAU})")
    fod.add_argument("--lambda", dest="lambda_", type=float, default=defaults.LAMBDA,
                     help=f"constraint weight (default {defaults.LAMBDA})")
    parser.set_defaults(run=run)


def run(args) -> int:
    import torch

    from ..devices import resolve_device

    _check_numbers(args)
    outputs = [Path(_prefix(args.out_prefix) + suffix) for suffix in SUFFIXES[args.model]]
    inputs = (args.dwi, args.bvals, args.bvecs, args.grad, args.mask, getattr(args, "response", None))
    check_outputs([(f"--out-prefix {args.out_prefix} ->", path) for path in outputs], inputs=inputs,
                  force=args.force)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.precision)
    dwi = load_dwi(args.dwi, bvals=args.bvals, bvecs=args.bvecs, grad=args.grad, b0_threshold=args.b0_threshold)
    mask = load_mask(args.mask, dwi) if args.mask else None
    contents = (_fit_dti if args.model == "dti" else _fit_csd)(args, dwi, mask, device, dtype)
    write_all(zip(outputs, contents, strict=True))
    print("\n".join(str(path) for path in outputs))
    return 0


def _check_numbers(args) -> None:
    """InputError naming the option and its value when a numeric option is out of its range."""
    for option, name, what, bound, closed, unit in _RANGES:
        value = getattr(args, name, None)  # dti has no CSD options; --shell may be left out
        if value is not None and not (math.isfinite(value) and (value >= bound if closed else value > bound)):
            raise InputError(f"{option} must be {what} {'>=' if closed else '>'} {bound:g}{unit}, got {value:g}")


def _prefix(prefix: str) -> str:
    """``--out-prefix`` as given; InputError when it names a folder rather than a file-name stem."""
    if prefix.endswith(("/", os.sep)) or Path(prefix).name in ("", ".", "..") or Path(prefix).is_dir():
        example = os.path.join(prefix, "subject")
        raise InputError(f"--out-prefix {prefix} names a folder, not a file-name stem; give e.g. {example}")
    return prefix


def _fit_dti(args, dwi, mask, device, dtype) -> list[Callable[[], bytes]]:
    """The tensor fit's maps as the bytes of their files, in the order of ``SUFFIXES['dti']``."""
    from ..models import dti

    if args.shell is not None:
        dwi = dwi.select_shell(args.shell)
    fit = dti.fit_dti(dwi, mask, method=args.method, frame=args.frame, device=device, dtype=dtype)
    tag = f"difftract dti {args.method}"
    maps = {"FA": (fit.fa, "FA"), "MD": (fit.md, "MD mm2/s"), "AD": (fit.ad, "AD mm2/s"), "RD": (fit.rd, "RD mm2/s"),
            "V1": (fit.v1, f"V1 {args.frame} frame"), "RGB": (fit.color_fa, f"|V1|*FA {args.frame} frame")}
    return [partial(nifti_bytes, maps[name][0].cpu().numpy(), dwi.affine, f"{tag} {maps[name][1]}", compress=True)
            for name in DTI_MAPS]


def _fit_csd(args, dwi, mask, device, dtype) -> list[Callable[[], bytes]]:
    """The FOD, its sidecar and the response as the bytes of their files, in the order of ``SUFFIXES['csd']``."""
    from ..models import csd

    dwi = dwi.select_shell(args.shell)
    response = _read_response(args.response) if args.response else csd.estimate_response(
        dwi, mask, roi_radii=args.roi_radii, fa_threshold=args.fa_threshold)
    fod = csd.fit_fod(dwi, mask, args.lmax, response=response, basis=args.sh_basis, frame=args.frame, tau=args.tau,
                      lambda_=args.lambda_, device=device, dtype=dtype)
    sidecar = {
        "model": "csd", "software": f"difftractography {__version__}", "sh_basis": fod.basis, "sh_frame": fod.frame,
        "frame_meaning": "world: RAS directions (MRtrix3); voxel: directions along the voxel axes (DIPY)",
        "lmax": args.lmax, "shell_bvalue": dwi.shell_bvalues()[0], "tau": args.tau, "lambda": args.lambda_,
        "response": {"evals_mm2_per_s": list(response.evals), "s0": response.s0, "n_voxels": response.n_voxels},
    }
    response_text = ("# single-fibre response: eigenvalues l1 l2 l3 (mm^2/s) and mean b=0 signal\n"
                     + " ".join(f"{v:.10g}" for v in (*response.evals, response.s0)) + "\n")
    return [partial(nifti_bytes, fod.coeffs.cpu().numpy(), dwi.affine,
                    f"difftract csd SH lmax {args.lmax} {fod.basis} {fod.frame} frame", compress=True),
            partial(str.encode, json.dumps(sidecar, indent=2) + "\n"),
            partial(str.encode, response_text)]


def _read_response(path):
    """A response file ('l1 l2 l3 S0') as ``csd.Response``."""
    from ..models import csd

    try:
        values = load_table(path, comments="#", dtype=np.float64).ravel()
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a response file ({exc})") from exc
    if values.size != 4:
        raise InputError(f"{path}: a response file holds four numbers 'l1 l2 l3 S0', got {values.size}")
    return csd.Response(tuple(values[:3].tolist()), float(values[3]))
