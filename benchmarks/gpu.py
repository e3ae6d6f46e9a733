"""GPU tracking benchmark: DiffTractography's sdstream, detmax and prob on a whole-brain-sized
synthetic FOD and on the reference data, forward and forward+backward, against GPUStreamlines
(PyPI ``cuslines``, DIPY's CUDA tracker) on the same data and seeds in the same run, and against
DIPY's CPU tracking on this machine's CPU. Prints a table and writes benchmarks/results/gpu_*.json.

    python benchmarks/gpu.py                                  # CUDA: 128x128x90, 10k/100k/1M seeds
    python benchmarks/gpu.py --device cpu --shape 40 40 28 --seeds 2000 --backward-seeds 500

Per run: seeds/s, streamlines/s, peak GPU memory (NVML's reading of the whole device, sampled every
5 ms: our kernels allocate through numba-cuda and torch, cuslines through the CUDA runtime, so only
the device's count sees both; it includes the CUDA context), time to first streamline (the first
chunk of seeds delivered, ``--chunk-size``), and for forward+backward the ratio to forward at the
same seeds (loss: mean squared point coordinate, gradient to the FOD coefficients). A run whose
time, projected linearly from the last smaller one, exceeds ``--max-seconds`` is skipped. One warm-up run per
dataset and algorithm is excluded from the timings (CUDA context, caching allocator, compilation).

Common parameters: step 0.5 voxel, 45 degrees, cutoff 0.1, min length 10 mm, max length 200 mm,
binary mask, seeds uniform in the mask (the same RAS points for every tool). cuslines runs its
ProbDirectionGetter (the match for ``prob``) on the FOD sampled on DIPY's repulsion724 sphere
(clipped at 0), stop map = the mask (threshold 0.5), seeds in voxel coordinates, start peaks as
DIPY's (relative threshold 0.5, 25 degrees apart); its time includes copying the streamlines to
the host (ours stay on the device), and both seeds/s and streamlines/s ratios are printed. cuslines
has no deterministic getter: sdstream and detmax are compared with DIPY's CPU trackers only.
"""
from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib import SHField, Tracker  # noqa: E402
from DiffTractographyLib import sh  # noqa: E402
from DiffTractographyLib.geometry import apply_affine, axes_rotation, mean_voxel_size  # noqa: E402
from DiffTractographyLib.images import load_nifti  # noqa: E402
from DiffTractographyLib.tracking.sphere import MIN_SEPARATION_ANGLE, RELATIVE_PEAK_THRESHOLD  # noqa: E402
from DiffTractographyLib.phantoms import brain_phantom  # noqa: E402
from DiffTractographyLib.seeding import seeds_from_mask  # noqa: E402
from records import commit, save  # noqa: E402

CUSLINES_PUBLISHED = "README of GPUStreamlines: 1,000 seeds -> 2,512 streamlines in 0.212 s on one GPU (bootstrap OPDT)"


def params_for(affine) -> dict:
    return dict(step_size=0.5 * mean_voxel_size(affine), max_angle=45.0, cutoff=0.1, min_length=10.0,
                max_length=200.0)


def datasets(args) -> list[tuple[str, dict]]:
    """(name, {algorithm: (coeffs, basis), 'mask', 'affine'}) for the synthetic brain and the references."""
    coeffs, mask, affine = brain_phantom(tuple(args.shape))
    out = [(f"synthetic {'x'.join(map(str, args.shape))} lmax 8",
            dict(fod=(coeffs, "tournier07"), dipy_fod=(coeffs, "tournier07"), mask=mask, affine=affine))]
    for name in args.reference:
        d = Path(args.data) / name
        if not d.exists():
            print(f"({d} not found: skipped)")
            continue
        fod, affine = load_nifti(d / "fod_mrtrix.nii.gz", ndim=4)
        mask, _ = load_nifti(d / "mask.nii.gz", ndim=3)
        entry = dict(fod=(torch.from_numpy(fod), "tournier07"), mask=mask > 0, affine=affine)
        dipy_file = d / "fod_dipy.nii.gz"
        entry["dipy_fod"] = ((torch.from_numpy(load_nifti(dipy_file, ndim=4)[0]), "descoteaux07") if dipy_file.exists()
                             else entry["fod"])
        out.append((name, entry))
    return out


def random_seeds(mask, affine, n: int) -> np.ndarray:
    per_voxel = max(1, math.ceil(n / int(mask.sum())))
    seeds = seeds_from_mask(mask, affine, per_voxel, rng_seed=1)
    return seeds[np.random.default_rng(1).permutation(len(seeds))[:n]]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceMemory:
    """The device's used memory (MiB, NVML), sampled in a thread while a run lasts; None without NVML."""

    def __init__(self, device: torch.device):
        self.handle, self.peak, self._stop = None, None, None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self.read = lambda: pynvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20
        except Exception:  # no NVML: memory is not reported
            self.handle = None

    def __enter__(self):
        if self.handle is None:
            return self
        import threading

        torch.cuda.empty_cache()
        self.peak, self._stop = self.read(), threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, self.read())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.read())


def run_ours(data: dict, algorithm: str, seeds: np.ndarray, args, backward: bool) -> dict:
    coeffs, basis = data["dipy_fod" if algorithm in ("detmax", "prob") else "fod"]
    device = torch.device(args.device)
    coeffs = coeffs.to(device).float().requires_grad_(backward)
    field = SHField(coeffs, data["affine"], basis)
    tracker = Tracker(field, mask=data["mask"], algorithm=algorithm, device=args.device,
                      chunk_size=args.chunk_size, precision="float32", **params_for(data["affine"]))
    first = []

    def progress(done: int, total: int) -> None:
        if not first:
            synchronize(device)
            first.append(time.perf_counter())

    with DeviceMemory(device) as memory:
        synchronize(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            tractogram = tracker(seeds, progress=progress)
            if backward:
                (tractogram.points.square().sum() / max(len(tractogram.points), 1)).backward()
        synchronize(device)
        seconds = time.perf_counter() - start
    return dict(seconds=seconds, seeds=len(seeds), streamlines=len(tractogram),
                points=int(tractogram.lengths.sum()), first_seconds=first[0] - start, peak_memory_mb=memory.peak)


def too_long(done: dict, n: int, limit: float) -> bool:
    """Whether a run of ``n`` seeds would take more than ``limit`` seconds, projected from the largest
    smaller run in ``done`` (seeds -> result)."""
    smaller = [k for k in done if k < n]
    return bool(smaller) and done[max(smaller)]["seconds"] * n / max(smaller) > limit


def sphere_odf(coeffs: torch.Tensor, basis: str, affine, vertices: np.ndarray, device) -> np.ndarray:
    """The FOD sampled at sphere ``vertices`` given in voxel axes (cuslines' and DIPY's frame),
    clipped at 0: (X, Y, Z, V) float32."""
    lmax = sh.lmax_for(coeffs.shape[-1])
    directions = vertices @ axes_rotation(affine).T if basis == "tournier07" else vertices
    b = sh.basis_matrix(torch.as_tensor(directions, dtype=torch.float64), lmax, basis).float().to(device)
    flat = coeffs.detach().to(device).float().reshape(-1, coeffs.shape[-1])
    odf = torch.cat([(part @ b.T).clamp(min=0).cpu() for part in flat.split(1 << 18)])
    return odf.reshape(*coeffs.shape[:3], len(vertices)).numpy()


def run_cuslines(data: dict, seed_sets: list[np.ndarray], args) -> list[dict] | str:
    """cuslines' ProbDirectionGetter on the same seeds; a one-line error when it cannot run."""
    if args.no_cuslines:
        return "skipped (--no-cuslines)"
    if not torch.cuda.is_available():
        return "skipped: needs CUDA"
    try:
        import nibabel as nib
        from cuslines.cuda_python import GPUTracker, ProbDirectionGetter
        from dipy.data import get_sphere
    except Exception as exc:  # an absent or broken CUDA stack raises many types
        return f"cannot import cuslines.cuda_python: {type(exc).__name__}: {exc}"
    sphere = get_sphere(name="repulsion724")
    coeffs, basis = data["dipy_fod"]
    affine, mask = data["affine"], data["mask"]
    p = params_for(affine)
    voxel = mean_voxel_size(affine)
    odf = sphere_odf(coeffs, basis, affine, sphere.vertices, args.device)
    inverse = np.linalg.inv(affine)
    results = []
    try:
        tracker = GPUTracker(ProbDirectionGetter(), odf, mask.astype(np.float64), 0.5, sphere.vertices,
                             sphere.edges, max_angle=math.radians(p["max_angle"]), step_size=p["step_size"] / voxel,
                             relative_peak_thresh=RELATIVE_PEAK_THRESHOLD,  # start peaks as ours and DIPY's
                             min_separation_angle=math.radians(MIN_SEPARATION_ANGLE),
                             rng_seed=0)  # its own point limits (501 per half) and pmf threshold
        reference = nib.Nifti1Image(mask.astype(np.float32), affine)
        with tracker as gpu:
            gpu.generate_sft(apply_affine(inverse, seed_sets[0][:1000]), reference)  # warm-up
            done = {}
            for seeds in seed_sets:
                if too_long(done, len(seeds), args.max_seconds):
                    print(f"  cuslines, {len(seeds)} seeds: skipped (projected over {args.max_seconds} s)")
                    continue
                with DeviceMemory(torch.device(args.device)) as memory:
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    sft = gpu.generate_sft(apply_affine(inverse, seeds), reference)
                    torch.cuda.synchronize()
                    seconds = time.perf_counter() - start
                done[len(seeds)] = r = dict(seconds=seconds, seeds=len(seeds), streamlines=len(sft.streamlines),
                                            points=int(sum(len(s) for s in sft.streamlines)),
                                            peak_memory_mb=memory.peak)
                results.append(r)
    except Exception as exc:  # CUDA errors surface as RuntimeError or cuda-python's own types
        return f"cuslines failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return results


def run_dipy(data: dict, algorithm: str, seeds: np.ndarray) -> dict | None:
    """DIPY's CPU tracker of the same kind (ClosestPeak for sdstream), one thread."""
    from dipy.data import default_sphere
    from dipy.direction import (ClosestPeakDirectionGetter, DeterministicMaximumDirectionGetter,
                                ProbabilisticDirectionGetter)
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.stopping_criterion import BinaryStoppingCriterion

    coeffs, basis = data["dipy_fod"]
    if basis != "descoteaux07":  # DIPY reads its own basis in the voxel frame
        coeffs = sh.convert_basis(coeffs.double(), basis, "descoteaux07")
        if len(seeds) and not np.allclose(axes_rotation(data["affine"]), np.eye(3)):
            return None
    getter = {"sdstream": ClosestPeakDirectionGetter, "detmax": DeterministicMaximumDirectionGetter,
              "prob": ProbabilisticDirectionGetter}[algorithm]
    p = params_for(data["affine"])
    start = time.perf_counter()
    dg = getter.from_shcoeff(coeffs.double().numpy(), max_angle=p["max_angle"], sphere=default_sphere,
                             **({} if algorithm == "sdstream" else {"pmf_threshold": p["cutoff"]}))
    streamlines = list(LocalTracking(dg, BinaryStoppingCriterion(data["mask"]), seeds, data["affine"],
                                     step_size=p["step_size"], maxlen=int(p["max_length"] / p["step_size"])))
    return dict(seconds=time.perf_counter() - start, seeds=len(seeds), streamlines=len(streamlines),
                points=int(sum(len(s) for s in streamlines)))


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def row(name: str, r: dict) -> str:
    memory = "" if r.get("peak_memory_mb") is None else f"{r['peak_memory_mb']:9.0f}"
    first = "" if r.get("first_seconds") is None else f"{r['first_seconds']:8.3f}"
    return (f"  {name:44s} {r['seeds']:>8d} {r['seeds'] / r['seconds']:>10.0f} "
            f"{r['streamlines'] / r['seconds']:>12.0f} {r['seconds']:>8.2f} {first:>8s} {memory:>9s}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 128, 90], help="synthetic grid (1.5 mm voxels)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--backward-seeds", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--algorithms", nargs="+", default=["sdstream", "detmax", "prob"])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--reference", nargs="*", default=["phantom_cross", "invivo_small"])
    ap.add_argument("--dipy-seeds", type=int, default=300, help="seeds for DIPY's CPU trackers (slow)")
    ap.add_argument("--chunk-size", type=int, help="seeds per chunk (default: the library's per device)")
    ap.add_argument("--no-cuslines", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="skip a run projected to take longer")
    ap.add_argument("--out", help="JSON record (default benchmarks/results/gpu_<commit>_<device>.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU run)"
    print(f"device {args.device}: {gpu_name}; torch {torch.__version__}; {datetime.date.today()}")
    header = f"  {'run':44s} {'seeds':>8s} {'seeds/s':>10s} {'streamlines/s':>12s} {'seconds':>8s} {'first s':>8s} {'peak MiB':>9s}"
    record = dict(date=str(datetime.date.today()), device=args.device, gpu=gpu_name, torch=torch.__version__,
                  commit=commit(), args=vars(args), cuslines=_version("cuslines"),
                  dipy=_version("dipy"), runs=[])
    for name, data in datasets(args):
        print(f"\n{name}: {int(data['mask'].sum())} mask voxels, {params_for(data['affine'])}\n{header}")
        record.setdefault("params", {})[name] = params_for(data["affine"])
        seed_sets = [random_seeds(data["mask"], data["affine"], n) for n in args.seeds]
        for algorithm in args.algorithms:
            run_ours(data, algorithm, seed_sets[0][:1000], args, backward=False)  # warm-ups
            if args.backward_seeds:
                run_ours(data, algorithm, seed_sets[0][:100], args, backward=True)
            forward = {}
            for seeds in seed_sets:
                if too_long(forward, len(seeds), args.max_seconds):
                    print(f"  ours {algorithm} forward, {len(seeds)} seeds: skipped (projected over {args.max_seconds} s)")
                    continue
                r = run_ours(data, algorithm, seeds, args, backward=False)
                forward[len(seeds)] = r
                record["runs"].append(dict(dataset=name, tool="ours", algorithm=algorithm, mode="forward", **r))
                print(row(f"ours {algorithm} forward", r))
            both = {}
            for n in args.backward_seeds:
                if too_long(both, n, args.max_seconds):
                    print(f"  ours {algorithm} forward+backward, {n} seeds: skipped (projected over {args.max_seconds} s)")
                    continue
                seeds = random_seeds(data["mask"], data["affine"], n)
                try:
                    r = run_ours(data, algorithm, seeds, args, backward=True)
                except torch.cuda.OutOfMemoryError:
                    print(f"  ours {algorithm} forward+backward, {n} seeds: out of GPU memory")
                    continue
                if n not in forward:
                    forward[n] = run_ours(data, algorithm, seeds, args, backward=False)
                r["over_forward"] = r["seconds"] / forward[n]["seconds"]
                both[n] = r
                record["runs"].append(dict(dataset=name, tool="ours", algorithm=algorithm, mode="forward+backward", **r))
                print(row(f"ours {algorithm} forward+backward", r) + f"   {r['over_forward']:.2f}x forward")
            dipy = run_dipy(data, algorithm, seed_sets[0][:args.dipy_seeds]) if args.dipy_seeds else None
            if not forward:
                continue
            if dipy is None and args.dipy_seeds:
                print(f"  DIPY CPU {algorithm}: skipped (FOD not in DIPY's basis and frame)")
            if dipy:
                record["runs"].append(dict(dataset=name, tool="dipy-cpu", algorithm=algorithm, mode="forward", **dipy))
                ratio = forward[len(seed_sets[0])]["seeds"] / forward[len(seed_sets[0])]["seconds"] / (
                    dipy["seeds"] / dipy["seconds"])
                print(row(f"DIPY CPU (1 thread) {algorithm}", dipy) + f"   ours {ratio:.1f}x")
        cuslines = run_cuslines(data, seed_sets, args) if "prob" in args.algorithms else "skipped (no prob)"
        if isinstance(cuslines, str):
            print(f"  cuslines: {cuslines}\n  published: {CUSLINES_PUBLISHED}")
            record["runs"].append(dict(dataset=name, tool="cuslines", error=cuslines))
            continue
        for r in cuslines:
            ours = next((x for x in record["runs"] if x["dataset"] == name and x.get("algorithm") == "prob"
                         and x.get("mode") == "forward" and x["seeds"] == r["seeds"] and x["tool"] == "ours"), None)
            if ours is None:
                record["runs"].append(dict(dataset=name, tool="cuslines", algorithm="prob", mode="forward", **r))
                print(row("cuslines ProbDirectionGetter", r))
                continue
            r["ours_over_cuslines"] = (ours["seeds"] / ours["seconds"]) / (r["seeds"] / r["seconds"])
            r["ours_over_cuslines_streamlines"] = (ours["streamlines"] / ours["seconds"]) / (
                r["streamlines"] / r["seconds"])
            record["runs"].append(dict(dataset=name, tool="cuslines", algorithm="prob", mode="forward", **r))
            print(row("cuslines ProbDirectionGetter", r) + f"   ours {r['ours_over_cuslines']:.2f}x seeds/s, "
                  f"{r['ours_over_cuslines_streamlines']:.2f}x streamlines/s")
    path = save(record, f"gpu_{record['commit']}_{device.type}", args.out)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
