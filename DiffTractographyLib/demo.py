"""``python -m DiffTractographyLib.demo --out DIR``: generate a small crossing-fibre phantom on an
oblique grid, track it with sdstream, write the inputs, the tractogram and a PNG rendering, and print
a one-screen summary. Needs nothing but the package (matplotlib for the PNG)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .errors import InputError


def phantom(shape=(30, 30, 20)):
    """A crossing of two straight bundles and an arc over them, on a rotated 2 x 2 x 2.5 mm grid."""
    from scipy.spatial.transform import Rotation

    from .phantoms import Bundle, fod_phantom

    rot = Rotation.from_euler("xyz", [12.0, -8.0, 20.0], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([2.0, 2.0, 2.5])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    u, v, w = rot.T
    bundles = [Bundle.straight(-26 * u, 26 * u, 5.0), Bundle.straight(-26 * v, 26 * v, 5.0),
               Bundle.arc(-6 * w, u, w, 20.0, 4.0, 15, 165)]
    coeffs, mask = fod_phantom(shape, affine, bundles, noise=0.01)
    return coeffs, mask, affine


def render_png(tractogram, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    segments, colours = [], []
    for s in tractogram.numpy_streamlines():
        d = np.abs(np.diff(s, axis=0))
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        segments.append(np.stack([s[:-1], s[1:]], 1))
        colours.append(d)  # red: left-right, green: anterior-posterior, blue: inferior-superior
    segments, colours = np.concatenate(segments), np.concatenate(colours)
    fig = plt.figure(figsize=(7, 6), dpi=120)
    ax = fig.add_subplot(projection="3d")
    ax.add_collection3d(Line3DCollection(segments, colors=colours, linewidths=0.4, alpha=0.8))
    lo, hi = segments.reshape(-1, 3).min(0), segments.reshape(-1, 3).max(0)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]), xlabel="R (mm)", ylabel="A (mm)",
           zlabel="S (mm)", title=title)
    ax.set_box_aspect(hi - lo)
    ax.view_init(elev=25, azim=-60)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import nibabel as nib

    from .io import save_tractogram
    from .seeding import seeds_from_mask
    from .tracking import track

    parser = argparse.ArgumentParser(prog="python -m DiffTractographyLib.demo", description=__doc__)
    parser.add_argument("--out", default="demo_output", help="output folder (created)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    coeffs, mask, affine = phantom()
    nib.save(nib.Nifti1Image(coeffs.numpy(), affine), out / "fod.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), out / "mask.nii.gz")
    seeds = seeds_from_mask(mask, affine, seeds_per_voxel=1, rng_seed=0)
    made = time.perf_counter()
    from .fields import SHField

    params = dict(step_size=0.5, max_angle=45.0, cutoff=0.1, min_length=10.0, max_length=200.0)
    tractogram = track(SHField(coeffs, affine), seeds, mask=mask, device=args.device, **params)
    tracked = time.perf_counter()
    if len(tractogram) == 0:
        raise InputError("the demo tracked no streamline")
    save_tractogram(tractogram, out / "tracks.trx")
    save_tractogram(tractogram, out / "tracks.tck")
    written = ["tracks.trx", "tracks.tck"]
    slicer_hint = "use the DiffTractography module (no tracks.vtk: the vtk package is not installed)"
    try:
        save_tractogram(tractogram, out / "tracks.vtk")
        written.append("tracks.vtk")
        slicer_hint = "drop tracks.vtk in as a fiber bundle, or use the DiffTractography module"
    except InputError:
        pass
    try:
        render_png(tractogram, out / "tracks.png", f"{len(tractogram)} streamlines, sdstream")
        png = "tracks.png (colour = direction: red L-R, green A-P, blue I-S)"
    except ImportError:
        png = "no PNG: matplotlib is not installed"
    lengths = tractogram.arc_lengths().detach().cpu().numpy()
    meta = tractogram.meta
    print(f"""DiffTractography demo
  phantom   {coeffs.shape[0]}x{coeffs.shape[1]}x{coeffs.shape[2]} voxels of 2 x 2 x 2.5 mm, oblique grid,
            two crossing bundles and an arc, FOD lmax 8 (tournier07)   [{made - start:.1f} s]
  seeds     {len(seeds)} (1 per mask voxel, random in the voxel)
  tracking  sdstream (MRtrix3 SD_Stream), step {params['step_size']} mm, angle {params['max_angle']} deg,
            cutoff {params['cutoff']}, length {params['min_length']}-{params['max_length']} mm   [{tracked - made:.1f} s]
  result    {len(tractogram)} streamlines, {len(tractogram.points)} points, length {lengths.mean():.1f} mm mean
            ({lengths.min():.1f}-{lengths.max():.1f}); seeds rejected {meta.get('SEED_REJECTED', 0)}, too short {meta.get('TOO_SHORT', 0)}
  written   {out}/fod.nii.gz, mask.nii.gz, {", ".join(written)},
            {png}
  next      difftract track --help;  mrview {out}/fod.nii.gz -tractography.load {out}/tracks.tck
            3D Slicer (SlicerDMRI): {slicer_hint}""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
