"""``difftract envelope``: the uncertainty envelope of a bundle. The same seeds are tracked --repeats
times, on wild bootstrap replicates of the DWI refitted around the bundle (--method wild) or with
fresh probabilistic draws (--method prob); the result is the share of repeats whose bundle visits
each voxel and, with --lesion, the spread over repeats of the bundle's distance to the lesion.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..config import ALGORITHMS, BASES
from ..errors import InputError
from ..files import check_outputs, write_text
from ..images import WRITTEN
from . import COMMANDS
from .select import REGION_HELP
from .arguments import DEFAULT_LMAX, sh_order
from .track import add_limit_arguments, add_seed_arguments

EPILOG = f"""\
Regions (--include, --exclude): {REGION_HELP}
The bundle of a repeat is its streamlines that visit every --include region and no --exclude region.

--lesion LESION: a label volume (NIfTI or .mif) (LESION.nii.gz or LESION.nii.gz:LABEL; signed distance to the
surface of its voxels, negative inside) or a text file of surface points 'x y z' per row (RAS mm;
unsigned). Per repeat: the bundle's minimum distance, and a robust distance that one stray
streamline cannot set: the --robust-percentile-th percentile (default 1) over the bundle's
streamlines of each streamline's smallest distance. Both are reported as the 5th, 50th and 95th
percentiles over the repeats, numpy's 'linear' method: with sorted values v_0..v_(R-1) the q-th
percentile sits at h = (R - 1) q / 100 between v_floor(h) and v_ceil(h); a repeat with no
streamline in the bundle counts as +inf mm.

Wild bootstrap: tensordet tracks each replicate of the DWI (log-linear tensor residuals); sdstream,
detmax and prob track CSD (order --lmax) refitted to each replicate (SH signal residuals). Replicates
are drawn in the voxel box around the seeds and the first run's streamlines widened by --margin mm,
and the box grows when a repeat's streamlines come near its edge. Everything random is drawn from
--rng-seed: the same command gives the same output.

Outputs: --out-prob, a float32 image (NIfTI or .mif) of the share of repeats (0..1) on the --template grid (default
the input's grid); --out-json, per-repeat values, percentiles and timings. Coordinates are RAS mm.

Example: difftract envelope --dwi dwi.nii.gz --seed-image roi.nii.gz --mask brain.nii.gz \\
             --include sphere:-20,-15,10,6 --lesion lesion.nii.gz --repeats 20 \\
             --out-prob envelope.nii.gz --out-json envelope.json
"""


def add_parser(sub) -> None:
    p = sub.add_parser("envelope", help=COMMANDS["envelope"], description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    inp = p.add_argument_group("input")
    inp.add_argument("--dwi", metavar="FILE",
                     help="DWI: 4-D NIfTI, MRtrix3 .mif or Slicer DWI NRRD (needed by --method wild)")
    inp.add_argument("--bvals", metavar="FILE", help="FSL b-values of --dwi (s/mm^2; default: the .bval beside it)")
    inp.add_argument("--bvecs", metavar="FILE", help="FSL b-vectors of --dwi (default: the .bvec beside it)")
    inp.add_argument("--grad", metavar="FILE", help="MRtrix gradient table of --dwi (rows x y z b, RAS)")
    inp.add_argument("--fod", metavar="FILE",
                     help="4-D image (NIfTI or .mif) of FOD SH coefficients (--method prob only)")
    inp.add_argument("--sh-basis", choices=BASES, default="tournier07", help="SH basis of --fod (as difftract track)")
    inp.add_argument("--sh-frame", choices=("world", "voxel"), help="frame of --fod (as difftract track)")
    inp.add_argument("--lmax", type=sh_order, default=DEFAULT_LMAX,
                     help=f"SH order of the CSD fits of --dwi (default {DEFAULT_LMAX})")
    inp.add_argument("--mask", metavar="FILE", help="stopping mask on the input's grid (also limits the response fit)")
    add_seed_arguments(p.add_argument_group("seeds (one of)"))
    env = p.add_argument_group("envelope")
    env.add_argument("--method", choices=("wild", "prob"), default="wild",
                     help="wild: wild bootstrap of the DWI, refitted per repeat (default); prob: probabilistic "
                          "tracking with fresh random draws per repeat")
    env.add_argument("--repeats", type=int, default=20, metavar="R", help="number of repeats (default 20)")
    env.add_argument("--algorithm", choices=ALGORITHMS,
                     help="tracking algorithm (default tensordet for wild, prob for prob)")
    env.add_argument("--include", action="append", default=[], metavar="REGION",
                     help="region every bundle streamline must visit (repeatable)")
    env.add_argument("--exclude", action="append", default=[], metavar="REGION",
                     help="region no bundle streamline may enter (repeatable)")
    env.add_argument("--lesion", metavar="LESION", help="lesion label volume or surface points (see below)")
    env.add_argument("--robust-percentile", type=float, default=1.0, metavar="Q",
                     help="percentile over streamlines of the robust distance (default 1)")
    env.add_argument("--margin", type=float, default=5.0, metavar="MM",
                     help="mm around the bundle in which replicates are drawn at first (default 5)")
    env.add_argument("--rng-seed", type=int, default=0, metavar="N", help="seed of all random draws (default 0)")
    trk = p.add_argument_group("tracking (defaults as difftract track)")
    add_limit_arguments(trk)
    trk.add_argument("--nthreads", type=int, metavar="N", help="CPU threads (default: all cores)")
    out = p.add_argument_group("output")
    out.add_argument("--template", metavar="IMAGE", help="grid of --out-prob (default: the input's grid)")
    out.add_argument("--out-prob", metavar="FILE",
                     help="visitation probability, float32 image (.nii, .nii.gz, .mif or .mif.gz)")
    out.add_argument("--out-json", metavar="FILE", help="per-repeat values, percentiles and timings (JSON)")
    out.add_argument("--force", action="store_true", help="overwrite existing outputs")
    out.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..config import TrackingParams

    if args.out_prob is None and args.out_json is None:
        raise InputError("nothing to write: give --out-prob or --out-json")
    check_outputs([("--out-prob", args.out_prob), ("--out-json", args.out_json)],
                  inputs=[args.dwi, args.bvals, args.bvecs, args.grad, args.fod, args.mask, args.seed_image,
                          args.seed_points, args.template], force=args.force)
    if args.out_prob and not str(args.out_prob).lower().endswith(WRITTEN):
        raise InputError(f"--out-prob {args.out_prob}: write the probability volume as {', '.join(WRITTEN)}")
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}")
    if not args.margin >= 0:
        raise InputError(f"--margin must be a number of mm >= 0, got {args.margin}")
    if args.method == "wild" and args.dwi is None:
        raise InputError("--method wild resamples a DWI: give --dwi")
    args.algorithm = algorithm = args.algorithm or ("tensordet" if args.method == "wild" else "prob")
    params = TrackingParams(algorithm=algorithm, step_size=args.step, max_angle=args.angle, cutoff=args.cutoff,
                            min_length=args.min_length, max_length=args.max_length, nthreads=args.nthreads,
                            rng_seed=args.rng_seed).validate()
    from ..images import load_nifti, nifti_grid, save_nifti
    from ..planning.envelope import envelope
    from ..selection import parse_region
    from .select import _lesion
    from .track import _mrtrix, _read_input, _seeds

    include = [parse_region(spec) for spec in args.include]
    exclude = [parse_region(spec) for spec in args.exclude]
    lesion = _lesion(args.lesion) if args.lesion else None
    if lesion is None and args.robust_percentile != 1.0:
        warnings.warn("--robust-percentile: for the distance to --lesion; ignored without --lesion", stacklevel=2)
    template = nifti_grid(args.template) if args.template else None
    source = _read_input(args)  # every image read as the algorithm's reference tool reads it
    points, directions = _seeds(args, source.affine, source.shape)
    mask = None
    if args.mask is not None:
        if args.dwi is not None:
            from ..dwi_io import load_mask

            mask = load_mask(args.mask, source, _mrtrix(args))
        else:
            data, affine = load_nifti(args.mask, ndim=3, what="mask", mrtrix=_mrtrix(args))
            mask = (data > 0, affine)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.repeats, unit="repeat", desc=f"envelope ({args.method})", file=sys.stderr,
                   disable=None, mininterval=0.5)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        result = envelope(source, points, params, repeats=args.repeats, method=args.method, include=include,
                          exclude=exclude, lesion=lesion, mask=mask, template=template, seed_directions=directions,
                          lmax=args.lmax, margin=args.margin, robust_percentile=args.robust_percentile,
                          rng_seed=args.rng_seed, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if not result.streamlines.any():
        warnings.warn("no repeat gave the bundle a streamline (check the seeds, the regions and --cutoff): the "
                      "visitation map is zero everywhere", stacklevel=2)
    if args.out_prob:
        save_nifti(result.probability, result.affine, args.out_prob,
                   description=f"difftract envelope: share of {args.repeats} {args.method} repeats")
    if args.out_json:
        write_text(args.out_json, json.dumps(result.to_json(), indent=1) + "\n")
    if not args.quiet:
        _summary(result)
    return 0


def _summary(result) -> None:
    counts = result.streamlines
    print(f"{result.repeats} {result.method} repeats ({result.algorithm}) in {result.seconds['total']:.1f} s: "
          f"bundle of {int(counts.min())} to {int(counts.max())} streamlines (reference run "
          f"{result.reference['streamlines']}); {int((counts == 0).sum())} empty repeats; "
          f"{int((result.probability > 0).sum())} voxels visited at least once", file=sys.stderr)
    if result.percentiles is not None:
        for name, label in (("minimum", "minimum"), ("robust", f"robust (p{result.robust_percentile:g})")):
            p = result.percentiles[name]
            print(f"lesion distance, {label}: 5th {p[5.0]:.2f} mm, median {p[50.0]:.2f} mm, 95th {p[95.0]:.2f} mm "
                  f"over repeats", file=sys.stderr)
