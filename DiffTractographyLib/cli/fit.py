"""``difftract fit dti|csd``: fit a model to a DWI and write its maps as NIfTI.

dti writes PREFIX_{FA,MD,AD,RD}.nii.gz (diffusivities in mm^2/s), PREFIX_V1.nii.gz (principal
eigenvector, 3 volumes) and PREFIX_RGB.nii.gz (|V1| x FA). csd writes PREFIX_fod.nii.gz (SH
coefficients), PREFIX_fod.json (basis, frame, lmax, response, shell) and PREFIX_response.txt.
Vectors and SH coefficients are in the ``--frame`` given (default world = RAS, as MRtrix3 writes
them; ``voxel`` = along the voxel axes, as DIPY writes them); the frame is recorded in each header.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import BASES, FRAMES
from ..dwi import B0_THRESHOLD
from ..dwi_io import load_dwi, load_mask
from ..errors import InputError
from . import COMMANDS
from ..files import write_text
from ..images import save_nifti
from ..models import defaults


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("fit", help=COMMANDS["fit"],
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    common = argparse.ArgumentParser(add_help=False)
    data = common.add_argument_group("input")
    data.add_argument("--dwi", required=True, metavar="FILE",
                      help="DWI: NIfTI (.nii, .nii.gz) or Slicer DWI NRRD (.nrrd, .nhdr)")
    data.add_argument("--bvals", metavar="FILE", help="FSL b-values (default: the NIfTI's .bval sidecar)")
    data.add_argument("--bvecs", metavar="FILE", help="FSL b-vectors (default: the NIfTI's .bvec sidecar)")
    data.add_argument("--grad", metavar="FILE", help="MRtrix gradient table (x y z b per row, scanner frame)")
    data.add_argument("--mask", metavar="FILE", help="NIfTI mask on the DWI grid (default: voxels with signal)")
    data.add_argument("--b0-threshold", type=float, default=B0_THRESHOLD, metavar="B",
                      help=f"b-values <= B s/mm^2 are b=0 volumes (default {B0_THRESHOLD:g})")
    out = common.add_argument_group("output")
    out.add_argument("--out-prefix", required=True, metavar="PREFIX", help="output path prefix, e.g. out/sub01")
    out.add_argument("--frame", choices=FRAMES, default="world",
                     help="frame of vectors and SH coefficients: world (RAS, MRtrix3) or voxel (voxel axes, DIPY)")
    compute = common.add_argument_group("computation")
    compute.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    compute.add_argument("--precision", choices=("float64", "float32"), default="float64")

    tensor = models.add_parser("dti", parents=[common], help="diffusion tensor (DIPY's estimators)")
    tensor.add_argument("--method", choices=defaults.METHODS, default="WLS", help="log-signal least squares (default WLS)")
    tensor.add_argument("--shell", type=float, metavar="B",
                        help="fit the b=0 volumes and the shell at B s/mm^2 only (default: all volumes)")

    fod = models.add_parser("csd", parents=[common], help="constrained spherical deconvolution (DIPY's CSD)")
    fod.add_argument("--lmax", type=int, default=8, help="maximum SH degree, even (default 8; 12 with enough directions)")
    fod.add_argument("--sh-basis", choices=BASES, default="tournier07", help="SH basis written (default tournier07)")
    fod.add_argument("--shell", type=float, metavar="B", help="shell to fit, s/mm^2 (default: the largest)")
    fod.add_argument("--response", metavar="FILE",
                     help="response 'l1 l2 l3 S0' (mm^2/s, signal; a PREFIX_response.txt) instead of estimating it")
    fod.add_argument("--fa-threshold", type=float, default=defaults.FA_THRESHOLD,
                     help=f"FA above which voxels are single-fibre for the response (default {defaults.FA_THRESHOLD})")
    fod.add_argument("--roi-radii", type=int, default=defaults.ROI_RADII,
                     help=f"half-width in voxels of the central cube searched for the response (default {defaults.ROI_RADII})")
    fod.add_argument("--tau", type=float, default=defaults.TAU, help=f"constraint threshold, x mean amplitude (default {defaults.TAU})")
    fod.add_argument("--lambda", dest="lambda_", type=float, default=defaults.LAMBDA,
                     help=f"constraint weight (default {defaults.LAMBDA})")
    parser.set_defaults(run=run)


def run(args) -> int:
    import torch

    from ..devices import resolve_device

    dwi = load_dwi(args.dwi, bvals=args.bvals, bvecs=args.bvecs, grad=args.grad, b0_threshold=args.b0_threshold)
    mask = load_mask(args.mask, dwi) if args.mask else None
    device = resolve_device(args.device)
    dtype = getattr(torch, args.precision)
    prefix = Path(args.out_prefix)
    written = (_fit_dti if args.model == "dti" else _fit_csd)(args, dwi, mask, device, dtype, prefix)
    print("\n".join(str(path) for path in written))
    return 0


def _fit_dti(args, dwi, mask, device, dtype, prefix: Path) -> list[Path]:
    from ..models import dti

    if args.shell is not None:
        dwi = dwi.select_shell(args.shell)
    fit = dti.fit_dti(dwi, mask, method=args.method, frame=args.frame, device=device, dtype=dtype)
    tag = f"difftract dti {args.method}"
    maps = {"FA": (fit.fa, "FA"), "MD": (fit.md, "MD mm2/s"), "AD": (fit.ad, "AD mm2/s"), "RD": (fit.rd, "RD mm2/s"),
            "V1": (fit.v1, f"V1 {args.frame} frame"), "RGB": (fit.color_fa, f"|V1|*FA {args.frame} frame")}
    written = []
    for name, (value, what) in maps.items():
        path = _output(prefix, f"_{name}.nii.gz")
        save_nifti(value.cpu().numpy(), dwi.affine, path, f"{tag} {what}")
        written.append(path)
    return written


def _fit_csd(args, dwi, mask, device, dtype, prefix: Path) -> list[Path]:
    from ..models import csd

    dwi = dwi.select_shell(args.shell)
    response = _read_response(args.response) if args.response else csd.estimate_response(
        dwi, mask, roi_radii=args.roi_radii, fa_threshold=args.fa_threshold)
    fod = csd.fit_fod(dwi, mask, args.lmax, response=response, basis=args.sh_basis, frame=args.frame, tau=args.tau,
                      lambda_=args.lambda_, device=device, dtype=dtype)
    fod_path, json_path, response_path = (_output(prefix, s) for s in ("_fod.nii.gz", "_fod.json", "_response.txt"))
    save_nifti(fod.coeffs.cpu().numpy(), dwi.affine, fod_path, f"difftract csd SH lmax {args.lmax} {fod.basis} {fod.frame} frame")
    sidecar = {
        "model": "csd", "software": f"difftractography {__version__}", "sh_basis": fod.basis, "sh_frame": fod.frame,
        "frame_meaning": "world: RAS directions (MRtrix3); voxel: directions along the voxel axes (DIPY)",
        "lmax": args.lmax, "shell_bvalue": dwi.shell_bvalues()[0], "tau": args.tau, "lambda": args.lambda_,
        "response": {"evals_mm2_per_s": list(response.evals), "s0": response.s0, "n_voxels": response.n_voxels},
    }
    write_text(json_path, json.dumps(sidecar, indent=2) + "\n")
    write_text(response_path, "# single-fibre response: eigenvalues l1 l2 l3 (mm^2/s) and mean b=0 signal\n"
                               + " ".join(f"{v:.10g}" for v in (*response.evals, response.s0)) + "\n")
    return [fod_path, json_path, response_path]


def _read_response(path):
    """A response file ('l1 l2 l3 S0') as ``csd.Response``."""
    from ..models import csd

    try:
        values = np.loadtxt(path, comments="#", dtype=np.float64).ravel()
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a response file ({exc})") from exc
    if values.size != 4:
        raise InputError(f"{path}: a response file holds four numbers 'l1 l2 l3 S0', got {values.size}")
    return csd.Response(tuple(values[:3].tolist()), float(values[3]))


def _output(prefix: Path, suffix: str) -> Path:
    return prefix.with_name(prefix.name + suffix)


