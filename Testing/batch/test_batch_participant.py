"""``difftract batch BIDS_DIR OUTPUT_DIR participant`` over the phantom dataset of conftest.py (two
worker processes, one of them killed while it writes sub-01's tractogram): BIDS-Derivatives whose
streamlines are those of ``difftract fit`` + ``track`` + ``cluster`` run by hand, a sidecar with
every parameter, the version and the input checksums, a group table in which each bad subject
fails alone with a one-line reason, resumable reruns."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import shutil

import numpy as np

from DiffTractographyLib import __version__, cli
from DiffTractographyLib.batch.graph import Options
from DiffTractographyLib.batch.runner import prepare
from DiffTractographyLib.io import load_tractogram

GOOD = [("sub-01", None), ("sub-02", None), ("sub-03", "ses-1"), ("sub-03", "ses-2")]


def folder_of(out, subject, session):
    return out / subject / (session or "") / "dwi"


def stem_of(subject, session):
    return subject + (f"_{session}" if session else "")


def sidecar(out, subject, session=None) -> dict:
    path = folder_of(out, subject, session) / f"{stem_of(subject, session)}_model-csd_tractography.json"
    return json.loads(path.read_text())


def group_table(out) -> dict:
    with open(out / "difftract_group.tsv", newline="") as f:
        return {(r["participant_id"], r["session_id"]): r for r in csv.DictReader(f, delimiter="\t")}


def run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, err.getvalue()


def test_each_participant_gets_bids_derivatives_fitted_tracked_and_clustered(batch_run):
    out = batch_run.out
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0] == {"Name": "difftractography", "Version": __version__,
                                             "Description": description["GeneratedBy"][0]["Description"]}
    for subject, session in GOOD:
        stem = stem_of(subject, session)
        names = sorted(p.name for p in folder_of(out, subject, session).iterdir())
        expected = [f"{stem}_model-csd_{s}" for s in ("desc-clusters_tractography.trx", "fod.json", "fod.nii.gz",
                                                       "response.txt", "tractography.json", "tractography.trx")]
        if subject == "sub-02":  # no brain mask: the voxels with signal seed and stop
            expected.insert(0, f"{stem}_desc-signal_mask.nii.gz")
        assert names == expected
        assert sidecar(out, subject, session)["outputs"] == expected
        tractogram = load_tractogram(folder_of(out, subject, session) / f"{stem}_model-csd_tractography.trx")
        assert len(tractogram) == sidecar(out, subject, session)["summary"]["streamlines"] > 100
        assert tractogram.seed_index is not None


def test_a_participant_equals_the_commands_run_by_hand(batch_run, dataset, tmp_path):
    """sub-01 (oblique grid, brain mask; its tracking was killed once and retried): the batch's
    streamlines are those of difftract fit csd + track + cluster with the same options, run by
    hand: the same seed_index, the same points, the same clusters."""
    raw = dataset / "sub-01" / "dwi"
    dwi, bval, bvec, mask = (str(raw / f"sub-01_{s}") for s in ("dwi.nii.gz", "dwi.bval", "dwi.bvec",
                                                                "desc-brain_mask.nii.gz"))
    assert cli.main(["fit", "csd", "--dwi", dwi, "--bvals", bval, "--bvecs", bvec, "--mask", mask, "--lmax", "6",
                     "--out-prefix", str(tmp_path / "hand"), "--device", "cpu"]) == 0
    assert cli.main(["track", "--fod", str(tmp_path / "hand_fod.nii.gz"), "--seed-image", mask, "--mask", mask,
                     "--device", "cpu", "--quiet", "--out", str(tmp_path / "hand.trx")]) == 0
    assert cli.main(["cluster", str(tmp_path / "hand.trx"), "--threshold", "10", "--quiet",
                     "--out", str(tmp_path / "hand_clusters.trx")]) == 0

    folder = batch_run.out / "sub-01" / "dwi"
    batch = load_tractogram(folder / "sub-01_model-csd_tractography.trx")
    hand = load_tractogram(tmp_path / "hand.trx")
    assert len(batch) == len(hand) == sidecar(batch_run.out, "sub-01")["summary"]["streamlines"]
    np.testing.assert_array_equal(batch.seed_index.numpy(), hand.seed_index.numpy())
    np.testing.assert_array_equal(batch.lengths.numpy(), hand.lengths.numpy())
    np.testing.assert_array_equal(batch.points.numpy(), hand.points.numpy())
    clusters = load_tractogram(folder / "sub-01_model-csd_desc-clusters_tractography.trx")
    np.testing.assert_array_equal(clusters.data_per_streamline["cluster"].numpy(),
                                  load_tractogram(tmp_path / "hand_clusters.trx").data_per_streamline["cluster"].numpy())


def test_the_sidecar_records_parameters_version_checksums_and_the_commands(batch_run, dataset):
    record = sidecar(batch_run.out, "sub-01")
    assert record["software"] == f"difftractography {__version__}"
    assert record["parameters"] == {"algorithm": "sdstream", "model": "csd", "cluster_threshold": [10.0], "lmax": 6}
    for role, name in {"dwi": "dwi.nii.gz", "bval": "dwi.bval", "bvec": "dwi.bvec", "mask": "desc-brain_mask.nii.gz"}.items():
        path = dataset / "sub-01" / "dwi" / f"sub-01_{name}"
        assert record["inputs"][role] == {"path": f"sub-01/dwi/sub-01_{name}",
                                          "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    raw = dataset / "sub-01" / "dwi" / "sub-01"
    mask = f"{raw}_desc-brain_mask.nii.gz"
    assert record["commands"] == [
        f"difftract fit csd --dwi {raw}_dwi.nii.gz --bvals {raw}_dwi.bval --bvecs {raw}_dwi.bvec --mask {mask} "
        "--lmax 6 --out-prefix sub-01/dwi/sub-01_model-csd --device cpu",
        f"difftract track --fod sub-01/dwi/sub-01_model-csd_fod.nii.gz --algorithm sdstream --seed-image {mask} "
        f"--mask {mask} --device cpu --out sub-01/dwi/sub-01_model-csd_tractography.trx",
        "difftract cluster sub-01/dwi/sub-01_model-csd_tractography.trx --threshold 10 "
        "--out sub-01/dwi/sub-01_model-csd_desc-clusters_tractography.trx",
    ]
    summary = record["summary"]
    assert summary["terminations"]["accepted"] == summary["streamlines"]
    assert set(summary["seconds"]) == {"fit", "track", "cluster"} and summary["device"] == "cpu"


def test_bad_subjects_fail_alone_with_a_one_line_reason(batch_run, dataset):
    assert batch_run.rc == 1
    rows = group_table(batch_run.out)
    assert sorted(rows) == [("sub-01", "n/a"), ("sub-02", "n/a"), ("sub-03", "ses-1"), ("sub-03", "ses-2"),
                            ("sub-04", "n/a"), ("sub-05", "n/a"), ("sub-06", "n/a")]
    assert {k: r["reason"] for k, r in rows.items() if r["status"] == "failed"} == {
        ("sub-04", "n/a"): "inputs: no .bvec file beside sub-04_dwi.nii.gz (sub-04_dwi.bvec)",
        ("sub-05", "n/a"): f"fit: the DWI has 32 volumes but {dataset}/sub-05/dwi/sub-05_dwi.bval and "
                           f"{dataset}/sub-05/dwi/sub-05_dwi.bvec have 31 entries",
        ("sub-06", "n/a"): "fit: the gradient table holds negative, NaN or infinite values",
    }
    for subject, session in GOOD:
        row = rows[(subject, session or "n/a")]
        summary = sidecar(batch_run.out, subject, session)["summary"]
        assert row["status"] == "done" and row["reason"] == "n/a"
        assert int(row["streamlines"]) == summary["streamlines"]
        assert float(row["mean_length_mm"]) == summary["mean_length_mm"] > 10.0
        assert row["terminations"].startswith(f"accepted={summary['streamlines']} ")
        assert row["device"] == "cpu" and float(row["seconds"]) > 0
    assert "sub-06: FAILED (fit): the gradient table holds negative, NaN or infinite values" in batch_run.stderr
    assert "4 of 7 participants done" in batch_run.stderr


def test_progress_and_the_dashboard_are_printed(batch_run):
    lines = batch_run.stderr.splitlines()
    assert any(line.startswith("workers: a local cluster of 2 processes") and "Dask dashboard" in line
               for line in lines)
    assert "kernels: sdstream compiled for cpu" in batch_run.stderr
    assert sorted(line.split("]")[0] for line in lines if line.startswith("[")) == [f"[{k}/6" for k in range(1, 7)]


def test_a_killed_worker_is_retried_and_leaves_no_partial_file(batch_run):
    assert batch_run.marker.exists()  # a worker was killed half-way through writing sub-01's tractogram
    assert sidecar(batch_run.out, "sub-01")["summary"]["streamlines"] > 100
    hidden = [p for p in batch_run.out.rglob(".*") if p.name != ".bidsignore"]
    assert hidden == []  # no temporary file, no work folder


def test_a_rerun_skips_participants_that_are_up_to_date(batch_run, dataset):
    sidecars = sorted(batch_run.out.glob("sub-0[123]/**/*_tractography.json"))
    before = [p.stat().st_mtime_ns for p in sidecars]
    rc, err = run_cli(["batch", str(dataset), str(batch_run.out), "participant",
                       "--participant-label", "01", "sub-02", "03", *batch_run.options])
    assert rc == 0
    assert err.count("up to date, skipped") == 4 and "to run" not in err  # no Dask cluster started
    assert [p.stat().st_mtime_ns for p in sidecars] == before


def test_a_changed_input_or_parameter_reruns_what_it_changes(batch_run, dataset, tmp_path):
    ds, out = tmp_path / "ds", tmp_path / "out"
    shutil.copytree(dataset, ds)
    shutil.copytree(batch_run.out, out)
    bval = ds / "sub-02" / "dwi" / "sub-02_dwi.bval"
    bval.write_text(bval.read_text().replace(" ", "  "))  # the same b-values, other bytes: another checksum
    labels = ["01", "02", "03"]
    options = Options("sdstream", {"lmax": 6, "cluster_threshold": [10.0]})
    assert [p.participant.label for p in prepare(ds, out, options, labels=labels).todo] == ["sub-02"]
    changed = Options("sdstream", {"lmax": 6, "cluster_threshold": [8.0]})
    assert len(prepare(ds, out, changed, labels=labels).todo) == 4


def test_the_group_level_writes_the_table_from_finished_participants(batch_run, dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(batch_run.out, out)
    (out / "difftract_group.tsv").unlink()
    rc, err = run_cli(["batch", str(dataset), str(out), "group"])
    assert rc == 1  # three participants failed
    assert "4 of 7 participants done" in err
    assert group_table(out) == group_table(batch_run.out)
    rc, err = run_cli(["batch", "unused", str(out), "group", "--participant-label", "01", "03"])
    assert rc == 0 and "3 of 3 participants done" in err
