"""The package imports without torch or vtk (Slicer loads the module fast, and without torch), and
every public name resolves."""
import subprocess
import sys

import DiffTractographyLib


def test_import_pulls_in_neither_torch_nor_vtk():
    code = "import sys, DiffTractographyLib; print('torch' in sys.modules, 'vtk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_public_names_resolve():
    for name in DiffTractographyLib.__all__:
        assert getattr(DiffTractographyLib, name) is not None


def test_unload_makes_the_next_import_read_the_files_again():
    code = ("import DiffTractographyLib, DiffTractographyLib.config as c; old = c\n"
            "names = DiffTractographyLib.unload()\n"
            "import DiffTractographyLib.config as c\n"
            "print('DiffTractographyLib.config' in names, 'DiffTractographyLib' in names, c is not old)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]


def test_every_command_answers_help_without_torch():
    from DiffTractographyLib.cli import COMMANDS

    code = ("import sys, contextlib, io\nfrom DiffTractographyLib.cli import main\n"
            "for name in sys.argv[1:]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main([name, '--help'])\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
