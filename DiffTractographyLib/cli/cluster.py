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
from . import COMMANDS
from ..files import FORMATS, atomic_path, check_output, tractogram_format

EPILOG = """\
Units: --threshold in mm (DIPY's examples use 10; there is no default), coordinates RAS mm.
Outputs: --out FILE.trx writes one .trx whose groups cluster_0000, cluster_0001, ... hold the
clusters (with a 'color' per group), and the label of every streamline as data 'cluster';
--out FOLDER writes cluster_0000.trk, ... (--format) into that folder. Labels are -1 for
streamlines with fewer than two distinct points (they cannot be resampled) and for members of
clusters smaller than --min-size. With several thresholds the files hold the finest level, and
.trk/.trx outputs also carry each coarser level as data 'cluster_level0', 'cluster_level1', ...
Colours depend only on the cluster number, so they are the same in every run.

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
    p.add_argument("--out", required=True, metavar="OUT", help="a .trx file (clusters as groups) or a folder")
    p.add_argument("--format", choices=[f[1:] for f in FORMATS], default="trk",
                   help="file format of the per-cluster files when --out is a folder (default trk)")
    p.add_argument("--labels-out", metavar="FILE",
                   help="text file: the cluster of each input streamline, one row per streamline in input order "
                        "(one column per level, coarse to fine, with several thresholds)")
    p.add_argument("--centroids-out", metavar="FILE", help="tractogram of the cluster centroids (finest level)")
    p.add_argument("--reference", metavar="NIFTI", help="image giving the grid of .tck/.vtk inputs (for .trk/.trx outputs)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..clustering import hierarchical_quickbundles, quickbundles
    from ..io import load_tractogram
    from ..devices import resolve_device

    if args.min_size < 1:
        raise InputError(f"--min-size must be at least 1, got {args.min_size}")
    out = check_output(args.out)
    to_folder = out.suffix.lower() != ".trx"
    for path in (args.labels_out, args.centroids_out):
        if path is not None:
            check_output(path)
    if args.centroids_out is not None:
        tractogram_format(args.centroids_out)
    tractogram = load_tractogram(args.input, reference=args.reference).to(resolve_device(args.device))
    if len(tractogram) == 0:
        raise InputError(f"{args.input}: the tractogram has no streamlines")
    if len(args.threshold) == 1:
        levels = [quickbundles(tractogram, args.threshold[0], args.points, min_size=args.min_size)]
    else:
        levels = hierarchical_quickbundles(tractogram, args.threshold, args.points, min_size=args.min_size)
    clusters = levels[-1]
    labelled = tractogram.to("cpu")
    for i, level in enumerate(levels[:-1]):
        labelled.data_per_streamline[f"cluster_level{i}"] = level.labels.cpu()
    labelled.data_per_streamline["cluster"] = clusters.labels.cpu()
    if to_folder:
        _write_folder(labelled, clusters, out, args.format)
    else:
        _write_trx(labelled, clusters, out)
    if args.labels_out is not None:
        table = np.stack([level.labels.cpu().numpy() for level in levels], 1)
        with atomic_path(args.labels_out) as tmp:
            np.savetxt(tmp, table, fmt="%d")
    if args.centroids_out is not None:
        _write_centroids(labelled, clusters, args.centroids_out)
    if not args.quiet:
        _summary(levels, len(tractogram))
    return 0


def _name(k: int) -> str:
    return f"cluster_{k:04d}"


def _write_trx(tractogram, clusters, out: Path) -> None:
    from ..io import save_tractogram

    colors = clusters.colors().numpy()
    groups = {_name(k): (clusters.indices(k).cpu(), colors[k]) for k in range(len(clusters))}
    save_tractogram(tractogram, out, groups=groups)


def _write_folder(tractogram, clusters, out: Path, fmt: str) -> None:
    from ..io import save_tractogram

    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder or a .trx path to --out")
    out.mkdir(exist_ok=True)
    for k in range(len(clusters)):
        save_tractogram(tractogram.subset(clusters.indices(k).cpu()), out / f"{_name(k)}.{fmt}")


def _write_centroids(tractogram, clusters, path) -> None:
    import torch

    from ..io import save_tractogram
    from ..streamlines import Tractogram

    centroids = clusters.centroids.cpu()
    m = centroids.shape[1]
    offsets = torch.arange(len(centroids) + 1, dtype=torch.int64) * m
    save_tractogram(Tractogram(centroids.reshape(-1, 3), offsets, tractogram.affine, tractogram.dimensions,
                               {"size": clusters.sizes.cpu()}), path)


def _summary(levels, n: int) -> None:
    import torch

    for level in levels:
        sizes = level.sizes.cpu()
        clustered = int(sizes.sum())
        largest = ", ".join(str(int(s)) for s in torch.sort(sizes, descending=True).values[:5])
        print(f"threshold {level.threshold:g} mm: {len(level)} clusters hold {clustered} of {n} streamlines "
              f"(largest {largest})", file=sys.stderr)
    clusters = levels[-1]
    if clusters.n_undefined:
        print(f"{clusters.n_undefined} streamlines have fewer than two distinct points and were not clustered "
              "(label -1)", file=sys.stderr)
    dropped = int((clusters.labels < 0).sum()) - clusters.n_undefined
    if dropped:
        print(f"{dropped} streamlines are in clusters below --min-size (label -1)", file=sys.stderr)
