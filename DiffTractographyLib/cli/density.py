"""``difftract density``: streamline density on an image grid, as MRtrix3's ``tckmap``.

Counts, per voxel of the template, the streamlines that pass through it (once each), after
upsampling them as tckmap does (Hermite, to a third of the smallest voxel size, from the .tck
header's step_size; .trk/.trx/.vtk inputs carry no step size: give --step or --upsample).
--precise writes the length in mm of streamline within each voxel; --endpoints counts the first
and last vertices only. The map has the template's grid and affine (RAS mm), opens in Slicer and mrview.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from ..errors import InputError
from . import COMMANDS

EPILOG = """\
Example: difftract density tracks.tck --template fa.nii.gz --out tdi.nii.gz
         difftract density tracks.trx --template t1.nii.gz --precise --step 0.5 --out length.nii.gz
"""


def add_parser(sub) -> None:
    p = sub.add_parser("density", help=COMMANDS["density"], description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="TRACTOGRAM", help="tractogram (.tck, .trk, .trx, .vtk, .vtp; RAS mm)")
    p.add_argument("--template", required=True, metavar="IMAGE",
                   help="image (NIfTI or MRtrix3 .mif) whose grid (shape, affine) the map takes")
    p.add_argument("--out", required=True, metavar="MAP", help="output image (.nii, .nii.gz, .mif or .mif.gz)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--precise", action="store_true",
                      help="mm of streamline within each voxel (tckmap -precise) instead of counts")
    mode.add_argument("--endpoints", action="store_true", help="count streamline endpoints only (tckmap -ends_only)")
    p.add_argument("--step", type=float, metavar="MM",
                   help="step size of the streamlines in mm, for the upsampling ratio (default: the .tck header's)")
    p.add_argument("--upsample", type=int, metavar="N", help="upsampling ratio (default: as tckmap, from the step size)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.set_defaults(run=run)


def _read(path: str) -> tuple:
    """(points, lengths, step size in mm or None) of a tractogram file."""
    from ..files import tractogram_format

    if not Path(path).exists():
        raise InputError(f"{path}: no such file")
    if tractogram_format(path) == ".tck":
        from ..io import read_tck, read_tck_header

        step = read_tck_header(path)[0].get("step_size")
        points, lengths = read_tck(path)
        try:
            step = float(step) if step else None
        except ValueError:
            step = None
        return points, lengths, step if step is not None and step > 0 else None
    from ..io import load_tractogram

    t = load_tractogram(path)
    return t.points.detach().cpu().numpy(), t.lengths.cpu().numpy(), None


def run(args) -> int:
    import numpy as np

    from ..files import check_outputs
    from ..images import WRITTEN, nifti_grid, save_nifti
    from ..planning.density import density_map, upsample_ratio

    if args.step is not None and not args.step > 0:
        raise InputError("--step must be a positive number of mm")
    out = Path(args.out)
    if not out.name.lower().endswith(WRITTEN):
        raise InputError(f"{args.out}: the map is written as an image; name it {', '.join(WRITTEN)}")
    check_outputs([("--out", out)], inputs=[args.input, args.template], force=args.force)
    shape, affine = nifti_grid(args.template)
    grid = nifti_grid(args.template, mrtrix=True)[1]  # tckmap's reading: voxel sizes from pixdim
    start = time.perf_counter()
    points, lengths, step = _read(args.input)
    if len(lengths) == 0:
        raise InputError(f"{args.input}: the tractogram has no streamlines")
    step = args.step or step
    if step is None and args.upsample is None and not args.endpoints:
        warnings.warn(f"{args.input} records no usable step size (a .tck header's step_size; other formats "
                      "carry none): the streamlines are mapped without upsampling (give --step MM or --upsample N)",
                      stacklevel=2)
    values = density_map(points, lengths, shape, grid, step_size=step, precise=args.precise,
                         endpoints=args.endpoints, upsample=args.upsample)
    what = "mm of streamline per voxel" if args.precise else "endpoints per voxel" if args.endpoints \
        else "streamlines per voxel"
    save_nifti(values, affine, out, description=f"difftract density: {what}")
    if not args.quiet:
        ratio = 1 if args.endpoints else args.upsample or upsample_ratio(step, grid, args.precise)
        print(f"{len(lengths)} streamlines -> {out} ({what}; upsampled x{ratio}; {int(np.count_nonzero(values))} "
              f"voxels visited, max {values.max():g}) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
