"""``difftract select``: keep the streamlines that pass regions of interest and length limits, as
MRtrix3's ``tckedit -include/-exclude/-ends_only/-minlength/-maxlength``, and measure how close
they come to a lesion.

A streamline is kept when it visits every --include region (AND), enters no --exclude region
(OR) and its length is within the limits. Regions test the streamline's vertices (every vertex,
or only the first and last with --ends-only).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import COMMANDS
from ..files import FORMATS, atomic_path, check_outputs, load_table, tractogram_format

#: the region syntax of ``selection.parse_region``
REGION_HELP = (
    "A region is a mask or label volume, NIfTI or MRtrix3 .mif (LABELS.nii.gz, non-zero voxels; LABELS.nii.gz:3,5 "
    "for label values 3 and 5), sphere:X,Y,Z,R (centre and radius, RAS mm), "
    "box:XMIN,XMAX,YMIN,YMAX,ZMIN,ZMAX (axis-aligned, RAS mm) or "
    "obox:X,Y,Z,SX,SY,SZ,RX,RY,RZ (oriented box: centre, side lengths in mm, rotations in degrees "
    "about the R, A then S axes). Boundaries are included."
)

EPILOG = f"""\
Regions: {REGION_HELP}
Coordinates are RAS mm (the world space of the NIfTI affine); lengths and distances are in mm.

--distance-to LESION measures, for every kept streamline, the smallest distance in mm from its
vertices to the lesion: a label volume (NIfTI or .mif) (LESION.nii.gz or LESION.nii.gz:LABEL; signed distance
to the surface of its voxels, negative inside) or a text file of surface points 'x y z' per row (RAS
mm; unsigned distance to the nearest point). The distances are stored with the streamlines as 'lesion_distance' (.trk/.trx) and written to
--distance-out (one per kept streamline, output order). With --cluster-labels (the --labels-out
file of 'difftract cluster') the smallest distance of every cluster is printed as well.

Example: difftract select tracks.trx --include sphere:-20,-15,10,6 --exclude roi.nii.gz:2 \\
             --min-length 30 --distance-to lesion.nii.gz --out cst.trx
"""


def add_parser(sub) -> None:
    p = sub.add_parser("select", help=COMMANDS["select"],
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help=f"tractogram ({', '.join(FORMATS)})")
    p.add_argument("--include", action="append", default=[], metavar="REGION",
                   help="region every kept streamline must visit (repeatable: all of them)")
    p.add_argument("--exclude", action="append", default=[], metavar="REGION",
                   help="region no kept streamline may enter (repeatable: any of them)")
    p.add_argument("--ends-only", action="store_true", help="test only the first and last vertex against the regions")
    p.add_argument("--min-length", type=float, metavar="MM", help="drop streamlines shorter than MM")
    p.add_argument("--max-length", type=float, metavar="MM", help="drop streamlines longer than MM")
    p.add_argument("--distance-to", metavar="LESION", help="lesion label volume or surface points (see below)")
    p.add_argument("--distance-out", metavar="FILE", help="text file of the lesion distance of every kept streamline")
    p.add_argument("--cluster-labels", metavar="FILE",
                   help="cluster of every input streamline (difftract cluster --labels-out): per-cluster distances")
    p.add_argument("--out", required=True, metavar="FILE", help=f"kept streamlines ({', '.join(FORMATS)})")
    p.add_argument("--reference", metavar="NIFTI", help="image giving the grid of .tck/.vtk inputs (for .trk/.trx outputs)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.set_defaults(run=run)


def run(args) -> int:
    tractogram_format(args.out)
    check_outputs([("--out", args.out), ("--distance-out", args.distance_out)],
                  inputs=[args.cluster_labels, args.reference], force=args.force)  # --out may replace INPUT
    for flag, value in (("--min-length", args.min_length), ("--max-length", args.max_length)):
        if value is not None and not value >= 0:
            raise InputError(f"{flag} must be a length in mm >= 0, got {value}")
    if args.min_length is not None and args.max_length is not None and args.min_length > args.max_length:
        raise InputError(f"--min-length {args.min_length:g} mm exceeds --max-length {args.max_length:g} mm")
    for flag, given in (("--distance-out", args.distance_out), ("--cluster-labels", args.cluster_labels)):
        if given is not None and args.distance_to is None:
            raise InputError(f"{flag} needs --distance-to")
    if not (args.include or args.exclude or args.distance_to or args.cluster_labels) \
            and tractogram_format(args.input) == tractogram_format(args.out) == ".tck":
        return _lengths_only(args)
    from ..io import load_tractogram, save_tractogram
    from ..selection import cluster_distances, lesion_distances, parse_region, select_streamlines

    include = [parse_region(spec) for spec in args.include]
    exclude = [parse_region(spec) for spec in args.exclude]
    lesion = _lesion(args.distance_to) if args.distance_to is not None else None
    tractogram = load_tractogram(args.input, reference=args.reference)
    if len(tractogram) == 0:
        raise InputError(f"{args.input}: the tractogram has no streamlines")
    labels = _cluster_labels(args.cluster_labels, len(tractogram)) if args.cluster_labels else None
    keep = select_streamlines(tractogram, include, exclude, ends_only=args.ends_only,
                              **_length_limits(args))
    kept = tractogram.subset(keep)
    distances = None
    if lesion is not None:
        distances = lesion_distances(kept, lesion)
        kept.data_per_streamline["lesion_distance"] = distances.float()
    save_tractogram(kept, args.out, derived_from=args.input)
    if args.distance_out is not None:
        with atomic_path(args.distance_out) as tmp:
            np.savetxt(tmp, distances.numpy(), fmt="%.4f")
    if not args.quiet:
        print(f"kept {len(kept)} of {len(tractogram)} streamlines -> {args.out}", file=sys.stderr)
        if distances is not None and len(kept):
            print(f"lesion distance: min {float(distances.min()):.2f} mm, median {float(distances.median()):.2f} mm",
                  file=sys.stderr)
        if distances is not None and labels is not None:
            kept_labels = labels[keep]
            per_cluster = cluster_distances(distances, kept_labels, int(labels.max()) + 1)
            for k in np.flatnonzero(np.isfinite(per_cluster.numpy())).tolist():
                print(f"cluster {k}: {int((kept_labels == k).sum())} kept streamlines, "
                      f"closest {float(per_cluster[k]):.2f} mm", file=sys.stderr)
    return 0


def _lengths_only(args) -> int:
    """Length limits from .tck to .tck, as tckedit does it: numpy on the file's stored rows
    (memory-mapped, NaN rows in place), the kept ones written back in one block; no torch."""
    from ..io import read_tck_rows, subset_tck_rows, tck_lineage, write_tck_rows
    from ..polylines import packed_starts, within_length

    if not Path(args.input).exists():
        raise InputError(f"{args.input}: no such file")
    rows, lengths = read_tck_rows(args.input)
    if len(lengths) == 0:
        raise InputError(f"{args.input}: the tractogram has no streamlines")
    limits = _length_limits(args)
    keep = within_length(rows, lengths, limits["min_length"], limits["max_length"], starts=packed_starts(lengths, gap=1))
    if not keep.all():
        rows = subset_tck_rows(rows, lengths, keep)
    elif Path(args.out).resolve() == Path(args.input).resolve():
        rows = np.array(rows)  # release the mapping before the output replaces its file
    kept = write_tck_rows(args.out, [(rows, int(keep.sum()))], tck_lineage(args.input))
    if not args.quiet:
        print(f"kept {kept} of {len(lengths)} streamlines -> {args.out}", file=sys.stderr)
    return 0


def _length_limits(args) -> dict:
    """--min-length / --max-length as tckedit applies them: widened by a tenth of the step for a .tck
    whose header has a step_size (``polylines.tckedit_limits``)."""
    from ..polylines import tckedit_limits

    limits = args.min_length, args.max_length
    if any(v is not None for v in limits) and tractogram_format(args.input) == ".tck" and Path(args.input).exists():
        from ..io import read_tck_header

        limits = tckedit_limits(*limits, read_tck_header(args.input)[0])
    return dict(zip(("min_length", "max_length"), limits))


def _lesion(spec: str):
    """A lesion as a mask (an image, optional ':labels') or (V, 3) surface points from a text file."""
    from ..selection import is_image, parse_region
    from ..stopping import BinaryMask

    if is_image(spec.rsplit(":", 1)[0]) or is_image(spec):
        region = parse_region(spec)
        if not isinstance(region, BinaryMask):
            raise InputError(f"--distance-to {spec!r}: give a label volume (NIfTI or .mif) or a text file of points")
        return region
    if not Path(spec).exists():
        raise InputError(f"{spec}: no such lesion file")
    try:
        points = load_table(spec, ndmin=2, delimiter="," if spec.endswith(".csv") else None)
    except ValueError as exc:
        raise InputError(f"{spec}: not a table of 'x y z' points ({exc})") from exc
    if points.shape[1] != 3 or len(points) == 0:
        raise InputError(f"{spec}: expected rows of three coordinates 'x y z' (RAS mm), got shape {points.shape}")
    return points


def _cluster_labels(path: str, n: int):
    """(n,) int64 tensor of cluster labels from a labels file."""
    import torch

    if not Path(path).exists():
        raise InputError(f"{path}: no such labels file")
    try:
        table = load_table(path, ndmin=2, dtype=np.int64)
    except ValueError as exc:
        raise InputError(f"{path}: not a table of integer cluster labels ({exc})") from exc
    if len(table) != n:
        raise InputError(f"{path}: {len(table)} labels for {n} streamlines")
    return torch.from_numpy(table[:, -1])
