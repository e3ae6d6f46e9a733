"""Output paths: every problem found before any work, in one line that names the user's path."""
import pytest

from DiffTractographyLib.errors import InputError
from DiffTractographyLib.files import atomic_path, check_outputs


def test_two_options_naming_one_file_are_refused(tmp_path):
    with pytest.raises(InputError, match="--out-prob and --out-json name the same file"):
        check_outputs([("--out-prob", tmp_path / "p.nii.gz"), ("--out-json", tmp_path / "." / "p.nii.gz")])


def test_an_output_may_not_overwrite_an_input(tmp_path):
    source = tmp_path / "in.tck"
    source.write_bytes(b"x")
    with pytest.raises(InputError, match="--labels-out .*in.tck is an input"):
        check_outputs([("--labels-out", source)], inputs=[source], force=True)
    assert source.read_bytes() == b"x"


def test_existing_outputs_need_force_and_folders_are_refused(tmp_path):
    (tmp_path / "old.txt").write_text("keep")
    with pytest.raises(InputError, match="old.txt exists; use --force"):
        check_outputs([("--out", None), ("--labels-out", tmp_path / "old.txt")])
    check_outputs([("--labels-out", tmp_path / "old.txt")], force=True)
    (tmp_path / "d.tck").mkdir()
    with pytest.raises(InputError, match="--out .*d.tck is a folder"):
        check_outputs([("--out", tmp_path / "d.tck")], force=True)


def test_a_failed_write_names_the_users_path_and_leaves_nothing(tmp_path):
    target = tmp_path / "map.nii.gz"
    target.mkdir()  # os.replace onto a folder fails
    with pytest.raises(InputError, match=r"^.*map\.nii\.gz: cannot write \(Is a directory\)$"):
        with atomic_path(target) as tmp:
            open(tmp, "wb").write(b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz"]


def test_a_system_error_while_writing_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from DiffTractographyLib.cli import main
    from DiffTractographyLib.cli import density as density_command

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(density_command, "run", full_disk)
    template = tmp_path / "t.nii"
    assert main(["density", "x.tck", "--template", str(template), "--out", str(tmp_path / "m.nii")]) == 1
    assert capsys.readouterr().err == "difftract: error: No space left on device\n"
