"""``difftract cluster``: group streamlines with QuickBundles (DIPY's exact semantics).

Streamlines are resampled to --points points equally spaced along their length and compared with
the MDF distance: the mean distance in mm between corresponding points, in the better of the two
orientations. A streamline joins the nearest cluster when that distance is below --threshold, else
it founds a new one; streamlines are visited in input order, and the result is the partition
dipy.segment.clustering.QuickBundles returns. Several thresholds (decreasing) build a hierarchy:
each level splits the clusters of the level above.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import FORMATS, check_outputs, tractogram_format, write_text
from ..streamlines import Tractogram, _lengths_to_offsets, as_numpy
from . import COMMANDS

EPILOG = """\
Units: --threshold in mm (DIPY's examples use 10; there is no default), coordinates RAS mm.
Outputs: --out FILE.trx writes one .trx whose groups cluster_0000, cluster_0001, ... hold the
clusters (with a 'color' per group), and the label of every streamline as data 'cluster';
--out FOLDER writes cluster_0000.trk, ... (--format) into that folder. Labels are -1 for
streamlines with fewer than two distinct points (they cannot be resampled) and for members of
clusters smaller than --min-size. With several thresholds the files hold the finest level, and
.trk/.trx outputs also carry each coarser level as data 'cluster_level0', 'cluster_level1', ...
Colours depend only on the cluster number, so they are the same in every run.

Give at least one of --out, --labels-out and --centroids-out; only what is asked for is written.
A .tck input is read without torch (numpy and the compiled clustering only); the clustering runs on
the CPU, on every core for the levels of a hierarchy.

Example: difftract cluster tracks.tck --threshold 10 --min-size 20 --out bundles.trx --labels-out labels.txt
"""


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help=COMMANDS["cluster"], description=__doc__,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help=f"tractogram ({', '.join(FORMATS)})")
    p.add_argument("--threshold", type=float, nargs="+", required=True, metavar="MM",
                   help="MDF distance threshold in mm; several decreasing values build a hierarchy")
    p.add_argument("--points", type=int, default=12, metavar="M", help="points per resampled streamline (default 12)")
    p.add_argument("--min-size", type=int, default=1, metavar="N",
                   help="drop clusters with fewer than N streamlines (their label becomes -1; default 1)")
    p.add_argument("--out", metavar="OUT", help="a .trx file (clusters as groups) or a folder")
    p.add_argument("--format", choices=[f[1:] for f in FORMATS], default="trk",
                   help="file format of the per-cluster files when --out is a folder (default trk)")
    p.add_argument("--labels-out", metavar="FILE",
                   help="text file: the cluster of each input streamline, one row per streamline in input order "
                        "(one column per level, coarse to fine, with several thresholds)")
    p.add_argument("--centroids-out", metavar="FILE", help="tractogram of the cluster centroids (finest level)")
    p.add_argument("--reference", metavar="NIFTI", help="image giving the grid of .tck/.vtk inputs (for .trk/.trx outputs)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing outputs (and the cluster files an earlier run left in --out FOLDER)")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..clustering import hierarchical_quickbundles

    if args.min_size < 1:
        raise InputError(f"--min-size must be at least 1, got {args.min_size}")
    if args.out is None and args.labels_out is None and args.centroids_out is None:
        raise InputError("nothing to write: give --out, --labels-out or --centroids-out")
    out = Path(args.out) if args.out is not None else None
    folder = out is not None and out.suffix.lower() != ".trx"
    if folder and out.suffix.lower() in FORMATS:
        raise InputError(f"--out {out}: clusters go into one .trx file or a folder of per-cluster files, "
                         f"not one {out.suffix} file")
    check_outputs([("--out", None if folder else out), ("--labels-out", args.labels_out),
                   ("--centroids-out", args.centroids_out)], inputs=[args.input, args.reference], force=args.force)
    if folder:
        _check_folder(out, args.force)
    if args.centroids_out is not None:
        tractogram_format(args.centroids_out)
    tractogram = _read(args.input, args.reference)
    if len(tractogram) == 0:
        raise InputError(f"{args.input}: the tractogram has no streamlines")
    levels = hierarchical_quickbundles(tractogram, args.threshold, args.points, min_size=args.min_size)
    clusters = levels[-1]
    written = [f".{args.format}" if folder else out.suffix.lower()] if out is not None else []
    written += [Path(args.centroids_out).suffix.lower()] if args.centroids_out is not None else []
    if {".trk", ".trx"} & set(written):  # headers with a grid: one for every file, said once
        from ..io import with_grid

        tractogram = with_grid(tractogram, args.input)
    if out is not None:
        for i, level in enumerate(levels[:-1]):
            tractogram.data_per_streamline[f"cluster_level{i}"] = level.labels
        tractogram.data_per_streamline["cluster"] = clusters.labels
        if out.suffix.lower() == ".trx":
            _write_trx(tractogram, clusters, out)
        else:
            _write_folder(tractogram, clusters, out, args.format, args.input)
    if args.labels_out is not None:
        columns = [map(str, level.labels.tolist()) for level in levels]
        write_text(args.labels_out, "".join(" ".join(row) + "\n" for row in zip(*columns)))
    if args.centroids_out is not None:
        _write_centroids(tractogram, clusters, args.centroids_out)
    if not args.quiet:
        _summary(levels, len(tractogram))
    return 0


def _read(path: str, reference: str | None) -> Tractogram:
    """The input tractogram as numpy arrays: a .tck read directly (no torch), other formats (or a
    --reference grid) through ``load_tractogram``."""
    from ..io import load_tractogram, read_tck

    if tractogram_format(path) == ".tck" and reference is None:
        if not Path(path).exists():
            raise InputError(f"{path}: no such file")
        points, lengths = read_tck(path)
        return Tractogram(points, _lengths_to_offsets(lengths))
    t = load_tractogram(path, reference=reference)
    return Tractogram(as_numpy(t.points), as_numpy(t.offsets), t.affine, t.dimensions,
                      {k: as_numpy(v) for k, v in t.data_per_streamline.items()},
                      {k: as_numpy(v) for k, v in t.data_per_point.items()})


def _name(k: int) -> str:
    return f"cluster_{k:04d}"


def _write_trx(tractogram: Tractogram, clusters, out: Path) -> None:
    from ..io import save_tractogram

    colors = clusters.colors()
    members = _members(clusters)
    save_tractogram(tractogram, out, groups={_name(k): (members[k], colors[k]) for k in range(len(clusters))})


def _earlier_clusters(out: Path) -> list[Path]:
    """The per-cluster files of an earlier run in the folder ``out``."""
    return [f for f in out.glob("cluster_*") if f.is_file() and f.suffix.lower() in FORMATS
            and f.stem[len("cluster_"):].isdigit()]


def _check_folder(out: Path, force: bool) -> None:
    """--out FOLDER: a folder (or a new name in an existing folder) without another run's clusters,
    unless --force (which replaces them)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder or a .trx path to --out")
    if not out.parent.exists():
        raise InputError(f"{out}: the output folder {out.parent} does not exist")
    if out.is_dir() and _earlier_clusters(out) and not force:
        raise InputError(f"{out} holds the cluster files of an earlier run; use --force to replace them")


def _write_folder(tractogram: Tractogram, clusters, out: Path, fmt: str, source) -> None:
    from ..io import save_tractogram

    out.mkdir(exist_ok=True)
    for stale in _earlier_clusters(out):
        stale.unlink()
    lengths = np.diff(tractogram.offsets)
    for k, index in enumerate(_members(clusters)):
        counts = lengths[index]
        first = _lengths_to_offsets(counts)
        vertices = np.arange(first[-1]) + np.repeat(tractogram.offsets[index] - first[:-1], counts)
        save_tractogram(Tractogram(tractogram.points[vertices], first, tractogram.affine, tractogram.dimensions,
                                   {name: v[index] for name, v in tractogram.data_per_streamline.items()},
                                   {name: v[vertices] for name, v in tractogram.data_per_point.items()}),
                        out / f"{_name(k)}.{fmt}", derived_from=source)


def _members(clusters) -> list[np.ndarray]:
    """The input indices of each cluster's streamlines, in input order."""
    order = np.argsort(clusters.labels, kind="stable")
    bounds = np.searchsorted(clusters.labels[order], np.arange(len(clusters) + 1))
    return np.split(order, bounds)[1:-1]


def _write_centroids(tractogram: Tractogram, clusters, path) -> None:
    from ..io import save_tractogram

    centroids = clusters.centroids
    lengths = np.full(len(centroids), centroids.shape[1], np.int64)
    save_tractogram(Tractogram(centroids.reshape(-1, 3), _lengths_to_offsets(lengths), tractogram.affine,
                               tractogram.dimensions, {"size": clusters.sizes}), path)


def _summary(levels, n: int) -> None:
    for level in levels:
        largest = ", ".join(str(s) for s in np.sort(level.sizes)[::-1][:5].tolist()) or "none"
        print(f"threshold {level.threshold:g} mm: {len(level)} clusters hold {int(level.sizes.sum())} of {n} "
              f"streamlines (largest {largest})", file=sys.stderr)
    clusters = levels[-1]
    if clusters.n_undefined:
        print(f"{clusters.n_undefined} streamlines have fewer than two distinct points and were not clustered "
              "(label -1)", file=sys.stderr)
    dropped = int((clusters.labels < 0).sum()) - clusters.n_undefined
    if dropped:
        print(f"{dropped} streamlines are in clusters below --min-size (label -1)", file=sys.stderr)
