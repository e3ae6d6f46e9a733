"""``make demo``'s job: a generated phantom tracked into files that MRtrix3, TrackVis tools and
Slicer read, with a one-screen summary."""
import subprocess
import sys

from DiffTractographyLib import load_tractogram


def test_demo_writes_readable_tractograms_and_a_summary(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "DiffTractographyLib.demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) <= 24 and "streamlines" in done.stdout
    counts = {name: len(load_tractogram(out / name)) for name in ("tracks.trx", "tracks.tck", "tracks.vtk")}
    assert len(set(counts.values())) == 1 and counts["tracks.trx"] > 100
    assert (out / "fod.nii.gz").exists() and (out / "mask.nii.gz").exists() and (out / "tracks.png").stat().st_size > 10_000
