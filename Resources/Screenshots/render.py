"""The Extensions Index screenshot: a bundle tracked by DiffTractography (``sdstream``) drawn over an
axial slice of its input, rendered off-screen with matplotlib (no Slicer window can be captured where
this is built; the picture shows what the module puts in the scene, not its GUI).

    python Resources/Screenshots/render.py            # writes Resources/Screenshots/DiffTractography_1.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from DiffTractographyLib import SHField, Tracker
    from DiffTractographyLib.phantoms import brain_phantom
    from DiffTractographyLib.seeding import seeds_from_mask

    coeffs, mask, affine = brain_phantom((64, 64, 64), 2.5)
    seeds = seeds_from_mask(mask, affine, 1, rng_seed=0)
    seeds = seeds[np.random.default_rng(0).permutation(len(seeds))[:4000]]
    tractogram = Tracker(SHField(coeffs.float(), affine), mask=mask)(seeds)
    k = coeffs.shape[2] // 2
    slice_z = affine[2, 2] * k + affine[2, 3]
    background = coeffs[:, :, k, 0].numpy().T  # the FOD's l = 0 term: (y, x) for imshow
    extent = [affine[0, 3] - 1.25, affine[0, 3] + affine[0, 0] * (coeffs.shape[0] - 0.5),
              affine[1, 3] - 1.25, affine[1, 3] + affine[1, 1] * (coeffs.shape[1] - 0.5)]
    segments, colours = [], []
    for s in tractogram.numpy_streamlines():
        near = np.abs(s[:, 2] - slice_z) < 12.0  # the slab around the slice
        if near.sum() < 2:
            continue
        s = s[near]
        d = np.abs(np.diff(s, axis=0))
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        segments.append(np.stack([s[:-1, :2], s[1:, :2]], 1))
        colours.append(np.c_[d, np.full(len(d), 0.6)])  # red: left-right, green: anterior-posterior
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    fig.patch.set_facecolor("black")
    ax.imshow(background, cmap="gray", origin="lower", extent=extent, vmin=0.0, vmax=3.0 * background.max())
    ax.add_collection(LineCollection(np.concatenate(segments), colors=np.concatenate(colours), linewidths=0.5))
    ax.set_axis_off()
    ax.set_title(f"DiffTractography: sdstream, {len(tractogram):,} streamlines over an axial slice of the FOD",
                 color="white", fontsize=10)
    fig.tight_layout()
    out = HERE / "DiffTractography_1.png"
    fig.savefig(out, facecolor="black")
    print(f"written {out}")


if __name__ == "__main__":
    main()
