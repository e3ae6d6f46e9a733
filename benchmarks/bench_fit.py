"""Fit time of DTI and CSD against DIPY and MRtrix3 on the same data, in one run.

    python benchmarks/bench_fit.py                                   # ../shared/data/phantom_cross, CPU
    python benchmarks/bench_fit.py --data ../shared/data/invivo_small
    python benchmarks/bench_fit.py --synthetic 100x100x70x70 --device cuda --skip-dipy --skip-mrtrix

References: DIPY TensorModel (WLS) and ConstrainedSphericalDeconvModel (on the response of
auto_response_ssst), MRtrix3 ``dwi2tensor`` and ``dwi2fod csd`` (same response, given as its zonal
SH coefficients; the DWI is converted to .mif beforehand so that gzip decoding is not timed, the
command's start-up and output write are). Ours: ``fit_dti`` and ``fit_fod`` with that response,
timed after one warm-up run, with ``torch.cuda.synchronize()`` on CUDA. Ratios are reference time /
our time (> 1: we are faster). OMP_WAIT_POLICY defaults to PASSIVE (see below). One JSON record is
printed last (``--save`` writes it to benchmarks/results/<commit>_<device>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# OpenMP threads that spin while waiting steal the cores they wait for on a shared machine; set
# before torch loads OpenMP (an explicit OMP_WAIT_POLICY in the environment wins)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib import sh  # noqa: E402
from DiffTractographyLib.dwi import DWI  # noqa: E402
from DiffTractographyLib.dwi_io import load_dwi, load_mask, ras_to_fsl  # noqa: E402
from DiffTractographyLib.images import save_nifti  # noqa: E402
from DiffTractographyLib.models.csd import estimate_response, fit_fod, response_rh  # noqa: E402
from DiffTractographyLib.models.dti import fit_dti  # noqa: E402
from records import commit, save  # noqa: E402


def synthetic_dwi(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[DWI, np.ndarray]:
    """A brain-sized DWI: 1 or 2 sticks-and-tensor fibres per voxel (random directions), b=1000,
    6 b=0 volumes, Rician noise at SNR 20; the mask is the inscribed ellipsoid."""
    rng = np.random.default_rng(seed)
    nx, ny, nz, n = shape
    g = rng.normal(size=(n - 6, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    bvecs = np.vstack([np.zeros((6, 3)), g])
    bvals = np.r_[np.zeros(6), np.full(n - 6, 1000.0)]
    axes = [np.linspace(-1, 1, k) for k in (nx, ny, nz)]
    mask = sum(a ** 2 for a in np.meshgrid(*axes, indexing="ij")) <= 1.0
    fibres = rng.normal(size=(2, nx, ny, nz, 3)).astype(np.float32)
    fibres /= np.linalg.norm(fibres, axis=-1, keepdims=True)
    weight = np.where(rng.random((nx, ny, nz)) < 0.4, 0.5, 1.0).astype(np.float32)
    signal = np.zeros((nx, ny, nz, n), np.float32)
    for k, w in enumerate((weight, 1.0 - weight)):
        cos2 = np.einsum("xyzc,gc->xyzg", fibres[k], g.astype(np.float32)) ** 2
        signal[..., 6:] += w[..., None] * np.exp(-1000 * (0.3e-3 + 1.4e-3 * cos2))
    signal[..., :6] = 1.0
    noise = rng.normal(scale=0.05, size=(2,) + signal.shape).astype(np.float32)
    data = 1000 * np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2) * mask[..., None]
    return DWI(data, np.diag([2.0, 2.0, 2.0, 1.0]), bvals, bvecs), mask


def timed(run, device: torch.device, repeat: int) -> float:
    """Best wall time of ``repeat`` runs after one warm-up."""
    run()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def command_time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "phantom_cross",
                        help="folder with dwi.nii.gz, dwi.bval, dwi.bvec and optionally mask.nii.gz")
    parser.add_argument("--synthetic", metavar="XxYxZxG", help="a generated volume instead of --data, e.g. 100x100x70x70")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and MRtrix3 -nthreads (DIPY runs on one)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-dipy", action="store_true")
    parser.add_argument("--skip-mrtrix", action="store_true")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/<commit>_<device>.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.precision)

    if args.synthetic:
        dwi, mask = synthetic_dwi(tuple(int(v) for v in args.synthetic.lower().split("x")))
        source = f"synthetic {args.synthetic}"
    else:
        dwi = load_dwi(args.data / "dwi.nii.gz")
        mask = load_mask(args.data / "mask.nii.gz", dwi) if (args.data / "mask.nii.gz").exists() else None
        source = str(args.data)
    dwi = dwi.select_shell()
    if mask is None:
        mask = np.any(dwi.data != 0, axis=3)
    response = estimate_response(dwi)
    rows: list[dict] = []

    def record(task, reference, ref_seconds, ours_seconds):
        rows.append({"task": task, "reference": reference, "reference_s": ref_seconds, "ours_s": ours_seconds,
                     "ratio": ref_seconds / ours_seconds})

    ours_dti = timed(lambda: fit_dti(dwi, mask, device=device, dtype=dtype), device, args.repeat)
    ours_csd = timed(lambda: fit_fod(dwi, mask, 8, response=response, device=device, dtype=dtype), device, args.repeat)

    if not args.skip_dipy:
        from dipy.core.gradients import gradient_table
        from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel
        from dipy.reconst.dti import TensorModel

        gtab = gradient_table(dwi.bvals, bvecs=dwi.bvecs_voxel)
        start = time.perf_counter()
        TensorModel(gtab).fit(dwi.data, mask=mask)
        record("DTI WLS", "DIPY TensorModel", time.perf_counter() - start, ours_dti)
        model = ConstrainedSphericalDeconvModel(gtab, (np.array(response.evals), response.s0), sh_order_max=8)
        start = time.perf_counter()
        model.fit(dwi.data, mask=mask)
        record("CSD lmax 8", "DIPY ConstrainedSphericalDeconvModel", time.perf_counter() - start, ours_csd)

    if not args.skip_mrtrix and shutil.which("dwi2fod"):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            save_nifti(dwi.data, dwi.affine, tmp / "dwi.nii")
            save_nifti(mask.astype(np.float32), dwi.affine, tmp / "mask.nii")
            np.savetxt(tmp / "dwi.bval", dwi.bvals[None])
            np.savetxt(tmp / "dwi.bvec", ras_to_fsl(dwi.bvecs, dwi.affine).T)
            subprocess.run(["mrconvert", "-quiet", str(tmp / "dwi.nii"), "-fslgrad", str(tmp / "dwi.bvec"),
                            str(tmp / "dwi.bval"), str(tmp / "dwi.mif")], check=True)
            degrees = np.arange(0, 9, 2)
            zonal = response.s0 * response_rh(response, dwi.bvals[~dwi.b0_mask], dwi.bvecs[~dwi.b0_mask], 8) \
                * np.sqrt((2 * degrees + 1) / (4 * np.pi))
            np.savetxt(tmp / "response.txt", zonal[None])
            common = ["-quiet", "-force", "-nthreads", str(args.threads), "-mask", str(tmp / "mask.nii")]
            record("DTI WLS", f"MRtrix3 dwi2tensor -nthreads {args.threads}",
                   command_time(["dwi2tensor", str(tmp / "dwi.mif"), str(tmp / "dt.mif")] + common), ours_dti)
            record("CSD lmax 8", f"MRtrix3 dwi2fod csd -nthreads {args.threads}",
                   command_time(["dwi2fod", "csd", str(tmp / "dwi.mif"), str(tmp / "response.txt"), str(tmp / "fod.mif"),
                                 "-lmax", "8"] + common), ours_csd)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{args.threads} threads"
    print(f"{source}: {int(mask.sum())} voxels, {len(dwi.bvals)} volumes; ours on {device_name}, {args.precision}")
    print(f"ours: DTI {ours_dti:.3f} s, CSD {ours_csd:.3f} s ({mask.sum() / ours_csd:.0f} voxels/s)")
    print(f"{'task':12} {'reference':44} {'ref s':>8} {'ours s':>8} {'ratio':>7}")
    for row in rows:
        print(f"{row['task']:12} {row['reference']:44} {row['reference_s']:8.3f} {row['ours_s']:8.3f} {row['ratio']:7.2f}")
    result = {"commit": commit(), "device": device_name, "torch": torch.__version__, "precision": args.precision,
              "threads": args.threads, "source": source, "voxels": int(mask.sum()), "volumes": len(dwi.bvals),
              "sh_lmax": 8, "n_coeffs": sh.n_coeffs(8), "ours_dti_s": ours_dti, "ours_csd_s": ours_csd, "rows": rows}
    print(json.dumps(result))
    if args.save:
        save(result, f"{result['commit']}_{device.type}")


if __name__ == "__main__":
    main()
