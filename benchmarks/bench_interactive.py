"""Interactive planning in Slicer: time from moving a fiducial to the new fiber-bundle polydata, for a
1,000-seed ball of 5 mm radius inside the white matter (target: 100 ms on 2 cores), on a brain-sized
phantom, against MRtrix3 ``tckgen`` tracking the same ball from scratch (what re-running a
file-based tool after each move costs).

Runs ``DiffTractographyLib.mrml.InteractiveSeeding`` on a plain MRML scene (slicer-core), as the
Slicer module does after its debounce timer fires; no Slicer application needed. The fiducial is
moved to ``--balls`` centres drawn inside the mask (at least 5 mm from its edge) and each move is
timed; the engine share (the prepared ``Tracker`` on the same seeds) is timed separately. sdstream
tracks ``phantoms.brain_phantom`` (64^3, 2.5 mm); tensordet tracks the DWI of the same fibres
(``phantoms.brain_dwi_phantom``, 30 directions at b = 1000 and one b = 0), with MRtrix3's defaults
for both. Prints one JSON record (``--save``: benchmarks/results/interactive_<commit>_cpu.json).

    python benchmarks/bench_interactive.py [--balls 7] [--seeds 1000] [--radius 5] [--threads 2] [--save]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import machine, run  # noqa: E402
from records import commit, save  # noqa: E402

SHAPE, VOXEL = (64, 64, 64), 2.5


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--balls", type=int, default=7, help="fiducial positions timed (default 7)")
    p.add_argument("--seeds", type=int, default=1000, help="seeds in the fiducial's ball (default 1000)")
    p.add_argument("--radius", type=float, default=5.0, help="ball radius in mm (default 5)")
    p.add_argument("--algorithm", nargs="+", default=["sdstream", "tensordet"], choices=["sdstream", "tensordet"])
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the kernels (default 2)")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/interactive_<commit>_cpu.json")
    return p.parse_args()


def gradient_table() -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(0).normal(size=(30, 3))
    return np.r_[0.0, np.full(30, 1000.0)], np.vstack([[0.0, 0.0, 0.0], g / np.linalg.norm(g, axis=1, keepdims=True)])


def ball_centres(mask: np.ndarray, affine: np.ndarray, count: int, margin: float) -> np.ndarray:
    """``count`` RAS centres of mask voxels at least ``margin`` mm inside the mask."""
    from scipy.ndimage import distance_transform_edt

    deep = np.argwhere(distance_transform_edt(mask) * VOXEL >= margin)
    picked = deep[np.random.default_rng(1).choice(len(deep), count, replace=False)]
    return picked @ affine[:3, :3].T + affine[:3, 3]


def tckgen_seconds(args, algorithm: str, inputs: dict, centre) -> float:
    """Wall time of tckgen from the same ball (process start and image loading included)."""
    source = (["-algorithm", "Tensor_Det", inputs["dwi"], "-fslgrad", inputs["bvec"], inputs["bval"]]
              if algorithm == "tensordet" else ["-algorithm", "SD_Stream", inputs["fod"]])
    return run(["tckgen", *source, Path(inputs["dwi"]).parent / "out.tck", "-seed_sphere",
                ",".join(f"{v:.4f}" for v in (*centre, args.radius)), "-seeds", args.seeds, "-select", "0",
                "-mask", inputs["mask"], "-nthreads", args.threads, "-force", "-quiet"])["seconds"]


def bench(args, algorithm: str, scene, nodes: dict, centres: np.ndarray, inputs: dict) -> dict:
    from DiffTractographyLib import mrml, seeding

    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"seed {algorithm}")
    points.AddControlPoint(list(centres[0]))
    started = time.perf_counter()
    session = mrml.InteractiveSeeding(scene, nodes[algorithm], points, mask=nodes["mask"], algorithm=algorithm,
                                      seeds_per_point=args.seeds, seed_radius=args.radius, device="cpu",
                                      nthreads=args.threads)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    session.update()  # the first update loads (or compiles) the kernels
    first = time.perf_counter() - started
    moves, engine, streamlines, point_counts = [], [], [], []
    for centre in centres[1:]:
        points.SetNthControlPointPosition(0, *centre)
        started = time.perf_counter()
        session.update()
        moves.append(time.perf_counter() - started)
        seeds = seeding.seeds_in_spheres(centre[None], args.radius, args.seeds, indices=[0])
        started = time.perf_counter()
        tracked = session.tracker(seeds)
        engine.append(time.perf_counter() - started)
        streamlines.append(len(tracked))
        point_counts.append(len(tracked.points))
    reference = [tckgen_seconds(args, algorithm, inputs, c) for c in centres[1:]] if shutil.which("tckgen") else []
    return {
        "algorithm": algorithm, "seeds": args.seeds, "radius_mm": args.radius, "balls": len(moves),
        "streamlines_median": statistics.median(streamlines), "points_median": statistics.median(point_counts),
        "setup_s": round(setup, 3), "first_update_s": round(first, 3),
        "move_to_polydata_s": summary(moves), "engine_track_s": summary(engine), "target_s": 0.1,
        "meets_target": statistics.median(moves) <= 0.1,
        "tckgen_from_scratch_s": summary(reference) if reference else None,
    }


def summary(seconds: list[float]) -> dict:
    return {"median": round(statistics.median(seconds), 4), "min": round(min(seconds), 4),
            "max": round(max(seconds), 4)}


def main() -> None:
    args = parse_args()
    from slicer import vtkMRMLScene

    from DiffTractographyLib import mrml
    from DiffTractographyLib.dwi import DWI
    from DiffTractographyLib.phantoms import brain_dwi_phantom, brain_phantom

    coeffs, mask, affine = brain_phantom(SHAPE, VOXEL)
    bvals, bvecs = gradient_table()
    dwi, _, _ = brain_dwi_phantom(bvals, bvecs, SHAPE, VOXEL)
    scene = vtkMRMLScene()
    nodes = {"sdstream": mrml.volume_node(scene, coeffs.numpy(), affine, "vtkMRMLVectorVolumeNode", "FOD"),
             "tensordet": mrml.dwi_node(scene, DWI(dwi, affine, bvals, bvecs)),
             "mask": mrml.volume_node(scene, mask.astype(np.uint8), affine, "vtkMRMLLabelMapVolumeNode", "mask")}
    centres = ball_centres(mask, affine, args.balls + 1, margin=args.radius)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = {"fod": folder / "fod.nii.gz", "dwi": folder / "dwi.nii.gz", "mask": folder / "mask.nii.gz",
                  "bval": folder / "dwi.bval", "bvec": folder / "dwi.bvec"}
        nib.save(nib.Nifti1Image(coeffs.numpy(), affine), inputs["fod"])
        nib.save(nib.Nifti1Image(dwi, affine), inputs["dwi"])
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), inputs["mask"])
        np.savetxt(inputs["bval"], bvals[None], fmt="%g")
        # FSL's convention: voxel axes (= RAS for this diagonal affine), x flipped for a positive determinant
        np.savetxt(inputs["bvec"], (bvecs * [-1.0, 1.0, 1.0]).T, fmt="%.8f")
        results = [bench(args, a, scene, nodes, centres, inputs) for a in args.algorithm]
    record = {"benchmark": "interactive", "commit": commit(), **machine(), "threads": args.threads,
              "phantom": {"shape": SHAPE, "voxel_mm": VOXEL}, "results": results}
    print(json.dumps(record, indent=1))
    if args.save:
        save(record, f"interactive_{record['commit']}_cpu")


if __name__ == "__main__":
    main()
