"""What ``difftract batch`` reads and where it runs, without running a participant: the BIDS
index (raw and QSIPrep-style derivatives, sessions, masks, filters, incomplete subjects), the SLURM
job script dask-jobqueue writes from docs/batch-slurm.yaml, and the one-line errors of bad calls."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from DiffTractographyLib import cli
from DiffTractographyLib.batch.bids import Participant, index_participants
from DiffTractographyLib.batch.cluster import jobqueue_cluster
from DiffTractographyLib.batch.graph import FIT_OPTIONS, Options, Plan
from DiffTractographyLib.batch.outputs import Layout
from DiffTractographyLib.cli.batch import PARAMETERS
from DiffTractographyLib.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def touch(root: Path, *names: str) -> Path:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def test_the_index_finds_one_dwi_per_subject_and_session_with_its_gradients_and_mask(dataset):
    units = index_participants(dataset)
    assert [(u.label, u.problem) for u in units] == [
        ("sub-01", None), ("sub-02", None), ("sub-03_ses-1", None), ("sub-03_ses-2", None),
        ("sub-04", "no .bvec file beside sub-04_dwi.nii.gz (sub-04_dwi.bvec)"), ("sub-05", None), ("sub-06", None)]
    sub01, sub02, ses2 = units[0], units[1], units[3]
    assert (sub01.dwi, sub01.bval, sub01.bvec, sub01.mask) == tuple(
        dataset / "sub-01" / "dwi" / f"sub-01_{s}" for s in ("dwi.nii.gz", "dwi.bval", "dwi.bvec", "desc-brain_mask.nii.gz"))
    assert sub02.mask is None
    assert ses2.folder == Path("sub-03/ses-2/dwi") and ses2.stem == "sub-03_ses-2"
    assert [u.label for u in index_participants(dataset, ["sub-03", "01"])] == ["sub-01", "sub-03_ses-1", "sub-03_ses-2"]


def test_a_qsiprep_derivatives_folder_is_read_with_bids_filters(tmp_path):
    root = touch(tmp_path / "qsiprep", *[f"sub-01/ses-A/dwi/sub-01_ses-A_space-{space}_desc-{d}"
                                         for space in ("T1w", "ACPC") for d in
                                         ("preproc_dwi.nii.gz", "preproc_dwi.bval", "preproc_dwi.bvec",
                                          "brain_mask.nii.gz")])
    (ambiguous,) = index_participants(root)
    assert ambiguous.problem == ("2 DWI series (sub-01_ses-A_space-ACPC_desc-preproc_dwi.nii.gz, "
                                 "sub-01_ses-A_space-T1w_desc-preproc_dwi.nii.gz); choose one with --bids-filter, "
                                 "e.g. acq=... or space=...")
    (unit,) = index_participants(root, filters={"space": "T1w", "desc": "preproc"})
    assert unit.problem is None and unit.session == "A"
    assert unit.mask == root / "sub-01/ses-A/dwi/sub-01_ses-A_space-T1w_desc-brain_mask.nii.gz"
    assert unit.bvec == root / "sub-01/ses-A/dwi/sub-01_ses-A_space-T1w_desc-preproc_dwi.bvec"
    assert unit.stem == "sub-01_ses-A_space-T1w"  # the derivatives' names keep the space, not the desc


def test_a_participant_label_that_is_not_in_the_dataset_is_an_error(dataset):
    with pytest.raises(InputError, match=r"ds: no DWI of participant sub-09$"):
        index_participants(dataset, ["01", "09"])


def test_every_batch_option_reaches_its_command_with_the_value_given(tmp_path):
    given = ["--lmax", "6", "--shell", "1000", "--b0-threshold", "20", "--fa-threshold", "0.6", "--roi-radii", "5",
             "--tau", "0.2", "--lambda", "0.5", "--seeds-per-voxel", "3", "--seed-placement", "grid",
             "--step", "0.1234567", "--angle", "35", "--cutoff", "0.05", "--min-length", "3", "--max-length", "80",
             "--rk4", "--unidirectional", "--noprecomputed", "--precision", "float32", "--rng-seed", "7",
             "--cluster-threshold", "10", "5.5", "--cluster-points", "20", "--cluster-min-size", "2"]
    args = cli.build_parser("batch").parse_args(["batch", "ds", "out", "participant", *given])
    options = Options(args.algorithm, {name: getattr(args, name) for name in PARAMETERS}).check()
    unit = Participant("01", None, *(tmp_path / f"sub-01_{s}" for s in ("dwi.nii.gz", "dwi.bval", "dwi.bvec", "mask.nii.gz")))
    plan = Plan(Layout(tmp_path, unit, options.model), options, tmp_path, {})
    fit = cli.build_parser("fit").parse_args(plan.fit_argv(tmp_path / "prefix"))
    track = cli.build_parser("track").parse_args(plan.track_argv(tmp_path / "prefix", unit.mask, tmp_path / "t.trx"))
    cluster = cli.build_parser("cluster").parse_args(plan.cluster_argv(tmp_path / "t.trx", tmp_path / "c.trx"))
    renamed = {"cluster_threshold": "threshold", "cluster_points": "points", "cluster_min_size": "min_size"}
    for name in PARAMETERS:
        command = cluster if name in renamed else fit if name in FIT_OPTIONS["csd"] else track
        assert getattr(command, renamed.get(name, name)) == getattr(args, name), name
    assert (fit.model, fit.mask, track.seed_image, track.mask) == ("csd", str(unit.mask), str(unit.mask), str(unit.mask))


def test_the_documented_slurm_configuration_gives_this_job_script(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cluster makes its log folder here
    cluster = jobqueue_cluster(ROOT / "docs" / "batch-slurm.yaml", gpus=1)
    try:
        script = cluster.job_script().splitlines()
    finally:
        cluster.close()
    assert [line for line in script if line.startswith("#SBATCH")] == [
        "#SBATCH -J difftract-worker",
        "#SBATCH -e difftract-logs/difftract-worker-%J.err",
        "#SBATCH -o difftract-logs/difftract-worker-%J.out",
        "#SBATCH -p gpu",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH -t 04:00:00",
        "#SBATCH --gres=gpu:1",
    ]
    assert "module load apptainer" in script
    worker = script[-1].split()
    assert worker[:8] == ["apptainer", "exec", "--nv", "--bind", "/data", "difftract.sif", "python", "-m"]
    assert worker[8] == "distributed.cli.dask_worker"
    assert " ".join(worker[11:]).endswith("--nthreads 1 --memory-limit 32.00GiB --nanny --death-timeout 120 "
                                          "--local-directory $TMPDIR --resources GPU=1")


def test_a_cluster_configuration_without_one_jobqueue_section_is_an_error(tmp_path):
    config = tmp_path / "k8s.yaml"
    config.write_text("kubernetes:\n  image: difftract\n")
    with pytest.raises(InputError, match="holds one 'jobqueue:' section among slurm, pbs"):
        jobqueue_cluster(config)


@pytest.mark.parametrize("argv, message", [
    (["nowhere", "out", "participant"], "nowhere: no such BIDS folder"),
    (["{ds}", "out", "participant", "--participant-label", "09"], "no DWI of participant sub-09"),
    (["{ds}", "out", "participant", "--algorithm", "tensordet", "--lmax", "6"],
     "--lmax: options of the CSD fit, which tensordet does not use (it tracks the diffusion tensor)"),
    (["{ds}", "out", "participant", "--cluster-points", "20"], "--cluster-points and --cluster-min-size need"),
    (["{ds}", "out", "participant", "--bids-filter", "space"], "--bids-filter takes KEY=VALUE entities"),
    (["{ds}", "{ds}", "participant"], "the output folder must differ from the BIDS folder"),
    (["{ds}", "out", "participant", "--workers", "0"], "--workers must be at least 1"),
    (["{ds}", "out", "participant", "--scheduler", "tcp://a:1", "--cluster-config", "x.yaml"],
     "give --scheduler or --cluster-config, not both"),
    (["{ds}", "empty", "group"], "empty: no participant of difftract batch found"),
])
def test_bad_calls_end_with_one_error_line(argv, message, dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(["batch", *(a.format(ds=dataset) for a in argv)])
    assert rc == 2
    assert err.getvalue().startswith("difftract: error: ") and err.getvalue().count("\n") == 1
    assert message in err.getvalue()
