"""``difftract track``: seeds -> streamlines, written as .tck/.trk/.trx/.vtk/.vtp."""
from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from ..config import ALGORITHMS, BASES, CUTOFF_MEANING, TrackingParams
from ..errors import InputError
from ..tracking.algorithms import ALGORITHMS as DECLARED
from ..tracking.algorithms import algorithm
from . import COMMANDS
from .arguments import DEFAULT_LMAX, direction, positive_count, sh_order, sphere
from .select import REGION_HELP
from ..files import FORMATS, check_outputs, tractogram_format, write_text

EPILOG = """\
Coordinates: seed files and outputs are RAS millimetres, the world space of
the NIfTI affine (.tck/.trk/.trx store RAS mm; .vtk/.vtp are tagged SPACE=RAS, the convention of
Slicer's fiber bundles). Defaults follow the reference tool of each algorithm: MRtrix3 for sdstream
and tensordet (step 0.1 voxel, angle 60 deg, cutoff 0.1, min length 5 voxels, max length 100 voxels),
DIPY for detmax and prob (step 0.25 voxel, angle 45 deg, relative pmf threshold 0.1, no min length,
max length 500 steps per half: DIPY bounds each half of a streamline on its own).

Example: difftract track --fod fod.nii.gz --seed-image mask.nii.gz --seeds-per-voxel 2 \\
             --mask mask.nii.gz --step 0.5 --angle 45 --out tracks.trx
"""


def add_seed_arguments(group, select: bool = False) -> None:
    """The seeding options ``_seed_source`` reads (track, with ``select``; envelope)."""
    group.add_argument("--seed-image", metavar="FILE", help="seed in the non-zero voxels of this image")
    group.add_argument("--seed-points", metavar="FILE",
                       help="text file of seeds, 'x y z' or 'x y z dx dy dz' per row (RAS mm, optional "
                            "initial direction; tensordet, like tckgen's Tensor_Det, starts along the "
                            "eigenvector's own sign instead); output keeps the row as seed_index")
    group.add_argument("--seeds-per-voxel", type=int, default=1, metavar="N", help="seeds per voxel (default 1)")
    group.add_argument("--seed-placement", choices=("random", "grid"), default="random",
                       help="random within each voxel (default) or a regular grid (N must be 1, 8, 27, ...)")
    group.add_argument("--seed-label", type=int, metavar="L", help="seed only where --seed-image equals L")
    group.add_argument("--seed-sphere", type=sphere, metavar="X,Y,Z,R",
                       help="seed uniformly in the ball of radius R mm about X,Y,Z (RAS mm; tckgen -seed_sphere): "
                            + ("--seeds N of them, or as many as --select needs (default --select 1000, as tckgen)"
                               if select else "--seeds N of them"))
    group.add_argument("--seeds", type=positive_count, metavar="N",
                       help="draw N seeds at random: in --seed-image instead of per voxel (a uniformly drawn seed "
                            "voxel, a uniform point in it: tckgen -seed_image -seeds N), or in --seed-sphere")
    group.add_argument("--seed-direction", type=direction, metavar="DX,DY,DZ",
                       help="start every streamline along this RAS direction (tckgen -seed_direction; tensordet, as "
                            "tckgen's Tensor_Det, keeps the eigenvector's own sign)")


def add_limit_arguments(group) -> None:
    """Step, angle, cutoff and length limits, default None: the algorithm's (track, envelope, batch)."""
    group.add_argument("--step", type=float, metavar="MM", help="step size in mm")
    group.add_argument("--angle", type=float, metavar="DEG", help="maximum angle between steps in degrees")
    group.add_argument("--cutoff", type=float, metavar="X",
                       help="stop below this: " + "; ".join(f"{k}: {v}" for k, v in CUTOFF_MEANING.items()))
    group.add_argument("--min-length", type=float, metavar="MM", help="discard streamlines shorter than this (mm)")
    group.add_argument("--max-length", type=float, metavar="MM",
                       help="stop streamlines at this length (mm; for detmax/prob: each half, as DIPY)")


def add_parser(sub) -> None:
    p = sub.add_parser("track", help=COMMANDS["track"], description=__doc__,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    inp = p.add_argument_group("input field")
    inp.add_argument("--fod", metavar="FILE",
                     help="4-D image (NIfTI, or MRtrix3 .mif) of FOD SH coefficients (sdstream, detmax, prob)")
    inp.add_argument("--sh-basis", choices=BASES, default="tournier07",
                     help="SH basis of --fod: tournier07 (MRtrix3, default), descoteaux07 (DIPY's default, "
                          "legacy=True), descoteaux07-nonlegacy (DIPY legacy=False)")
    inp.add_argument("--sh-frame", choices=("world", "voxel"),
                     help="frame of the FOD's directions: world (RAS, MRtrix3) or voxel (image axes, DIPY); "
                          "default world for tournier07, voxel for descoteaux07")
    inp.add_argument("--dwi", metavar="FILE",
                     help="DWI: 4-D NIfTI, MRtrix3 .mif (gradients from its dw_scheme) or Slicer DWI NRRD. tensordet "
                          "tracks it directly; the FOD algorithms "
                          "first fit CSD (lmax --lmax, response from single-fibre voxels)")
    inp.add_argument("--bvals", metavar="FILE", help="FSL b-values of --dwi (s/mm^2; default: the .bval beside it)")
    inp.add_argument("--bvecs", metavar="FILE", help="FSL b-vectors of --dwi (voxel axes, x flipped for a "
                                                     "positive-determinant affine; default: the .bvec beside it)")
    inp.add_argument("--grad", metavar="FILE", help="MRtrix gradient table of --dwi (rows x y z b, RAS)")
    inp.add_argument("--lmax", type=sh_order, default=DEFAULT_LMAX,
                     help=f"SH order of the CSD fit for --dwi (default {DEFAULT_LMAX})")
    add_seed_arguments(p.add_argument_group("seeds (one of)"), select=True)
    chosen = p.add_argument_group("selection (as tckgen's)")
    chosen.add_argument("--select", type=positive_count, metavar="N",
                        help="track until N streamlines are accepted and keep those, the first N in seed order "
                             "(tckgen -select): seeds are drawn at random in --seed-image, at most --seeds of them "
                             "(default 1000 x N), or taken from --seed-points in order")
    chosen.add_argument("--include", action="append", default=[], metavar="REGION",
                        help="region every kept streamline must visit (repeatable: all of them; tckgen -include). "
                             + REGION_HELP)
    chosen.add_argument("--exclude", action="append", default=[], metavar="REGION",
                        help="region no kept streamline may enter, its seed apart (repeatable; tckgen -exclude)")
    trk = p.add_argument_group("tracking")
    trk.add_argument("--algorithm", choices=ALGORITHMS, default="sdstream",
                     help="; ".join(f"{a.name}: {a.summary}" for a in DECLARED.values()) + " (default sdstream)")
    trk.add_argument("--mask", metavar="FILE", help="stopping mask: seeds outside are rejected, streamlines "
                                                    "stop where they would leave it")
    trk.add_argument("--stop-map", metavar="FILE",
                     help="scalar stopping map (e.g. FA): streamlines continue while its trilinearly "
                          "interpolated value is above --stop-threshold (DIPY's ThresholdStoppingCriterion) and, "
                          "with --mask, inside the mask; seeds at or below it are rejected")
    trk.add_argument("--stop-threshold", type=float, metavar="X", help="threshold of --stop-map (its units)")
    add_limit_arguments(trk)
    trk.add_argument("--rk4", action="store_true", help="fourth-order Runge-Kutta integration (sdstream)")
    trk.add_argument("--unidirectional", action="store_true", help="track only forwards from each seed")
    trk.add_argument("--noprecomputed", action="store_true",
                     help="evaluate SH exactly instead of through MRtrix3's precomputed Legendre table")
    run = p.add_argument_group("execution and output")
    run.add_argument("--device", default="auto",
                     help="auto (a CUDA GPU when present with the CUDA toolchain, else the CPU), cpu, cuda or cuda:N")
    run.add_argument("--nthreads", type=int, metavar="N", help="CPU threads (default: all cores)")
    run.add_argument("--precision", choices=("float32", "float64"),
                     help="arithmetic precision (default float32; float64 for detmax, as DIPY)")
    run.add_argument("--chunk-size", type=int, metavar="N",
                     help="seeds per kernel call (default: sized for progress about 4 times a second)")
    run.add_argument("--rng-seed", type=int, default=0, metavar="N", help="seed of all random draws (default 0)")
    run.add_argument("--out", required=True, metavar="FILE", help=f"output tractogram ({', '.join(FORMATS)})")
    run.add_argument("--output-seeds", metavar="FILE",
                     help="also write each streamline's seed as tckgen -output_seeds does: CSV rows of the streamline "
                          "index, the seed's vertex index in it and its x,y,z (RAS mm)")
    run.add_argument("--force", action="store_true", help="overwrite --out (and --output-seeds) if they exist")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(run=run_track)


def _mrtrix(args) -> bool:
    """Whether the algorithm reproduces MRtrix3, which reads a NIfTI's affine its own way
    (``images.mrtrix_affine``): every image of the run is then read so."""
    from ..config import reference_rule

    return reference_rule(args.algorithm) == "mrtrix"


def _read_input(args):
    """The FOD (an SHField) or the DWI named on the command line."""
    from ..fields import SHField
    from ..images import load_nifti, zero_non_finite

    if (args.fod is None) == (args.dwi is None):
        raise InputError("give exactly one of --fod (SH coefficients) or --dwi (diffusion-weighted images)")
    if args.fod is not None:
        _unused(("--bvals", args.bvals is not None), ("--bvecs", args.bvecs is not None),
                ("--grad", args.grad is not None), ("--lmax", args.lmax != DEFAULT_LMAX), why="for --dwi; ignored with --fod")
        data, affine = load_nifti(args.fod, ndim=4, what="FOD", mrtrix=_mrtrix(args))
        data = zero_non_finite(data, "(no fibre: streamlines end there)")
        try:
            return SHField(data, affine, args.sh_basis, args.sh_frame)
        except InputError as exc:
            raise InputError(f"{args.fod}: {exc}") from exc
    from ..dwi_io import load_dwi

    fits_fod = algorithm(args.algorithm).tracks_fod
    _unused(("--sh-basis", args.sh_basis != "tournier07"), ("--sh-frame", args.sh_frame is not None),
            why="for --fod; ignored with --dwi" + (" (the CSD fit's FOD is tournier07, world frame)" if fits_fod else ""))
    if not fits_fod:
        _unused(("--lmax", args.lmax != DEFAULT_LMAX), why=f"for a CSD fit; {args.algorithm} tracks the DWI itself")
    return load_dwi(args.dwi, bvals=args.bvals, bvecs=args.bvecs, grad=args.grad, mrtrix=_mrtrix(args))


def _unused(*options: tuple[str, bool], why: str) -> None:
    """One warning naming the ``options`` given (option, given) that this run does not use, and ``why``."""
    given = [option for option, was_given in options if was_given]
    if given:
        warnings.warn(f"{', '.join(given)}: {why}", stacklevel=3)


def _region_test(args, stats: Counter) -> Callable | None:
    """``keep(chunk)`` for --include / --exclude (tckgen's test, ``selection.tckgen_keeps``), counting the
    streamlines it rejects in ``stats``; None without regions (and then torch is not imported)."""
    if not args.include and not args.exclude:
        return None
    from ..selection import parse_region, tckgen_keeps

    include = [parse_region(spec) for spec in args.include]
    exclude = [parse_region(spec) for spec in args.exclude]

    def keep(chunk) -> np.ndarray:
        kept = tckgen_keeps(chunk.points, chunk.lengths, chunk.before, include, exclude)
        rejected = int((~kept).sum())
        stats.update({"ACCEPTED": -rejected, "REJECTED_BY_REGIONS": rejected})
        return kept

    return keep


def _field(args, source, mask):
    """What to track: an FOD as read; a DWI as is for tensordet, else its CSD fit (``mask`` (data,
    affine), on the DWI's grid, limits the fit)."""
    from ..fields import DWIField, SHField

    if isinstance(source, SHField):
        return source
    if not algorithm(args.algorithm).tracks_fod:
        return DWIField.from_dwi(source)
    from ..devices import resolve_device
    from ..models.csd import fit_fod

    if not args.quiet:
        print(f"fitting CSD (lmax {args.lmax}) to {args.dwi}", file=sys.stderr)
    fod = fit_fod(source, None if mask is None else mask[0], lmax=args.lmax, device=resolve_device(args.device))
    return SHField(fod.coeffs.float().cpu().numpy(), source.affine, fod.basis, fod.frame)


def _seeds(args, field_affine, field_shape) -> tuple[np.ndarray, np.ndarray | None]:
    """(seed points (N, 3) RAS mm, start directions (N, 3) or None) as the options ask."""
    draw, count = _seed_source(args, field_affine, field_shape)
    if count is None:
        raise InputError("--seed-sphere draws seeds at random: give their number, --seeds N")
    return draw(0, count)


def _seed_source(args, field_affine, field_shape) -> tuple[Callable[[int, int], tuple], int | None]:
    """The seeds as (draw(start, stop) -> (points (n, 3) RAS mm, start directions (n, 3) or None), how
    many there are: None for the endless random stream that --select draws from without --seeds)."""
    points_of, file_directions, count = _seed_points(args, field_affine, field_shape)
    along = None if args.seed_direction is None else np.asarray(args.seed_direction, dtype=np.float64)
    if along is not None and file_directions is not None:
        raise InputError(f"{args.seed_points} gives the seeds' directions; --seed-direction would replace them")

    def draw(start: int, stop: int) -> tuple:
        points = points_of(start, stop)
        if along is not None:
            return points, np.broadcast_to(along, points.shape)
        return points, None if file_directions is None else file_directions[start:stop]

    return draw, count


def _seed_points(args, field_affine, field_shape) -> tuple[Callable[[int, int], np.ndarray], np.ndarray | None,
                                                            int | None]:
    """(points_of(start, stop) -> seeds start..stop-1, a seed file's directions or None, the number of
    seeds or None) of the one seed source given."""
    from ..config import reference_rule
    from ..images import load_nifti
    from ..seeding import BallSeeds, RandomSeeds, read_seed_file, seeds_from_mask

    sources = [flag for flag, value in (("--seed-image", args.seed_image), ("--seed-points", args.seed_points),
                                        ("--seed-sphere", args.seed_sphere)) if value is not None]
    if len(sources) != 1:
        raise InputError(f"give exactly one of --seed-image, --seed-points or --seed-sphere, got "
                         f"{' and '.join(sources) if sources else 'none'}")
    per_voxel = [("--seeds-per-voxel", args.seeds_per_voxel != 1), ("--seed-placement", args.seed_placement != "random")]
    if args.seed_sphere is not None:
        _unused(("--seed-label", args.seed_label is not None), *per_voxel,
                why="for --seed-image; ignored with --seed-sphere")
        return BallSeeds(args.seed_sphere[:3], args.seed_sphere[3], args.rng_seed).draw, None, args.seeds
    if args.seed_points is not None:
        _unused(("--seed-label", args.seed_label is not None), *per_voxel, ("--seeds", args.seeds is not None),
                why="for --seed-image; ignored with --seed-points")
        points, directions = read_seed_file(args.seed_points)
        _reject_outside(args.seed_points, points, field_affine, field_shape)
        return partial(_rows, points), directions, len(points)
    image, affine = load_nifti(args.seed_image, ndim=3, what="seed image", mrtrix=_mrtrix(args))
    if args.seeds is not None or getattr(args, "select", None):
        given = [flag for flag, was_given in per_voxel if was_given]
        if given:
            raise InputError(f"{', '.join(given)} place seeds in every voxel of --seed-image; --seeds and --select "
                             "draw them at random in it: give one or the other")
        stream = RandomSeeds(image, affine, args.rng_seed, args.seed_label, reference_rule(args.algorithm))
        return stream.draw, None, args.seeds
    points = seeds_from_mask(image, affine, args.seeds_per_voxel, args.seed_placement, args.rng_seed,
                             args.seed_label, reference_rule(args.algorithm))
    return partial(_rows, points), None, len(points)


def _rows(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    return array[start:stop]


def _reject_outside(path, points: np.ndarray, field_affine, field_shape) -> None:
    """Warn that seed rows outside the image will be rejected (tckgen's way); InputError when all are."""
    from ..seeding import outside_grid

    outside = outside_grid(points, field_affine, field_shape)
    if outside.any():
        first = int(np.argmax(outside))
        where = (f"{path}: {int(outside.sum())} of {len(points)} seeds lie outside the image "
                 f"(first: row {first}, {points[first].round(2).tolist()} mm RAS)")
        if outside.all():
            raise InputError(where)
        warnings.warn(f"{where}; they are rejected, as tckgen rejects a seed outside its mask", stacklevel=4)


def _seed_rows(chunk, first: int) -> str:
    """tckgen's -output_seeds rows of a chunk whose first streamline is number ``first``: the
    streamline's index, its seed's vertex index and the seed's x,y,z in RAS mm."""
    seeds = chunk.points[np.cumsum(chunk.lengths) - chunk.lengths + chunk.before]
    return "".join(f"{first + i},{before},{x:.9g},{y:.9g},{z:.9g},\n"
                   for i, (before, (x, y, z)) in enumerate(zip(chunk.before.tolist(), seeds.tolist())))


def _tck_properties(args, params: TrackingParams, select: int | None) -> dict[str, str]:
    """The .tck header fields, named as tckgen names them, that describe the run (``tckinfo`` lists
    them; ``tckmap`` and ``tckedit`` read step_size): lengths in mm, the angle in degrees."""
    fields = {"method": args.algorithm, "step_size": params.step_size, "max_angle": params.max_angle,
              "threshold": params.cutoff, "min_dist": params.min_length, "max_dist": params.max_length,
              "rk4": int(params.rk4), "unidirectional": int(params.unidirectional), "source": args.fod or args.dwi,
              "max_num_tracks": select}
    return {key: f"{value:g}" if isinstance(value, float) else str(value)
            for key, value in fields.items() if value is not None}


def _with_stop_map(args, mask):
    """The stopping region: ``mask`` ((data, affine) or None), and the --stop-map threshold when given."""
    from ..config import reference_rule
    from ..images import load_nifti
    from ..stopping import AllOf, BinaryMask, ThresholdMap

    if (args.stop_map is None) != (args.stop_threshold is None):
        raise InputError("--stop-map and --stop-threshold go together")
    if args.stop_map is None:
        return mask
    values, affine = load_nifti(args.stop_map, ndim=3, what="stopping map", mrtrix=_mrtrix(args))
    stop = ThresholdMap(values, affine, args.stop_threshold)
    if mask is None:
        return stop
    return AllOf(BinaryMask(*mask, rule=reference_rule(args.algorithm)), stop)


def run_track(args) -> int:
    from ..dwi import DWI
    from ..images import load_nifti
    from ..io import save_tractogram, write_tck
    from ..streamlines import Tractogram
    from ..tracking.engine import COMPILING, KernelTracker, warm_up

    tractogram_format(args.out)
    check_outputs([("--out", args.out), ("--output-seeds", args.output_seeds)],
                  inputs=[args.fod, args.dwi, args.mask, args.seed_image, args.seed_points, args.stop_map],
                  force=args.force)
    out = Path(args.out)
    warming = threading.Thread(target=warm_up, daemon=True)  # overlaps the image reads
    warming.start()
    params = TrackingParams(algorithm=args.algorithm, step_size=args.step, max_angle=args.angle, cutoff=args.cutoff,
                            min_length=args.min_length, max_length=args.max_length, rk4=args.rk4,
                            unidirectional=args.unidirectional, sh_precomputed=not args.noprecomputed,
                            precision=args.precision, device=args.device, chunk_size=args.chunk_size,
                            nthreads=args.nthreads, rng_seed=args.rng_seed).validate()
    stats: Counter = Counter()
    keep = _region_test(args, stats)  # a wrong region is said before any image is read
    source = _read_input(args)
    draw, available = _seed_source(args, source.affine, source.shape)
    mask = fit_mask = None
    if args.mask is not None:
        if isinstance(source, DWI) and algorithm(args.algorithm).tracks_fod:
            from ..dwi_io import load_mask

            mask = fit_mask = (load_mask(args.mask, source, _mrtrix(args)), source.affine)  # the CSD fit's grid
        else:
            mask = load_nifti(args.mask, ndim=3, what="mask", mrtrix=_mrtrix(args))
    mask = _with_stop_map(args, mask)
    field = _field(args, source, fit_mask)
    start = time.perf_counter()
    warming.join()
    tracker = KernelTracker(field, params, mask=mask)
    if not args.quiet and tracker.needs_compiling():
        print(COMPILING, file=sys.stderr)
    # a seed sphere without --seeds selects 1000 streamlines, tckgen's default for seeds drawn at random
    select = 1000 if available is None and args.select is None else args.select
    if select:
        most = 1000 * select if available is None else available  # tckgen's -seeds default
        total, unit = select, "streamline"
        run = partial(tracker.select, draw, select, most, stats=stats, keep=keep)
    else:
        points, directions = draw(0, available)
        total = most = len(points)
        unit = "seed"
        run = partial(tracker.chunks, points, seed_directions=directions, stats=stats, keep=keep)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit=unit, desc="tracking", file=sys.stderr, disable=None, mininterval=0.5)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    seeds_used = most
    seed_rows: list[str] = []

    def accepted():
        """The tracker's chunks; none accepted at all is an error (raised before an output is committed)."""
        nonlocal seeds_used
        n = 0
        for part in run(progress=progress):
            if args.output_seeds:
                seed_rows.append(_seed_rows(part, n))
            n += len(part.lengths)
            if select and n == select:  # the selection ends at its last streamline's seed
                seeds_used = int(part.seed_index[-1]) + 1
            yield part
        if n == 0:
            outcomes = {k: v for k, v in stats.items() if k != "SEEDS_TRACKED"}
            raise InputError(f"no streamline was accepted from {most} seeds ({outcomes}); "
                             "check the mask, the cutoff and the seeds")
        if select and n < select:
            warnings.warn(f"only {n} of the {select} streamlines asked for were accepted from {most} seeds",
                          stacklevel=2)

    try:
        if out.suffix.lower() == ".tck":  # streamed to the file chunk by chunk: memory stays flat
            count = write_tck(out, ((chunk.points, chunk.lengths) for chunk in accepted()),
                              _tck_properties(args, tracker.params, select))
        else:
            parts = list(accepted())
            lengths = np.concatenate([p.lengths for p in parts])
            count = len(lengths)
            offsets = np.zeros(count + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            save_tractogram(Tractogram(np.concatenate([p.points for p in parts]), offsets, field.affine, tracker.shape,
                                       {"seed_index": np.concatenate([p.seed_index for p in parts])}), out)
    finally:
        if bar is not None:
            bar.close()
    if args.output_seeds:
        write_text(args.output_seeds, "#Track_index,Seed_index,Pos_x,Pos_y,Pos_z,\n" + "".join(seed_rows))
    if not args.quiet:
        seconds = time.perf_counter() - start
        tracked = stats.pop("SEEDS_TRACKED", most)
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(stats.items()))
        first = f"the first {seeds_used} seeds ({tracked} tracked)" if seeds_used < tracked else f"{seeds_used} seeds"
        print(f"{count} streamlines from {first} in {seconds:.1f} s -> {out}\n"
              f"terminations and outcomes: {counts}", file=sys.stderr)
    return 0
