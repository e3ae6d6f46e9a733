"""Static checks of the Slicer extension: what ships, what the module reaches in its .ui, and that
importing the module and the MRML adapter stays cheap. Runs without Slicer."""
from __future__ import annotations

import ast
import py_compile
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "DiffTractography"
LIB_DIR = ROOT / "DiffTractographyLib"
MODULE = MODULE_DIR / "DiffTractography.py"
UI = MODULE_DIR / "Resources" / "UI" / "DiffTractography.ui"


def cmake_lists(path: Path) -> dict[str, list[str]]:
    """The ``set(NAME item ...)`` lists of a CMake file, and ``string(REPLACE a b NAME input)``, in
    order, with ${VAR} of earlier one-item values expanded."""
    text = re.sub(r"(^|\s)#.*", "", path.read_text(), flags=re.M)
    values: dict[str, list[str]] = {}

    def expand(item: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)][0], item).strip('"')

    for command, body in re.findall(r"\b(set|string)\(\s*([^)]*)\)", text):
        words = body.split()
        if command == "set":
            values[words[0]] = [expand(item) for item in words[1:]]
        elif words[0] == "REPLACE":
            old, new, name, source = (expand(w) for w in words[1:5])
            values[words[3]] = [source.replace(old, new)]
    return values


def shipped_files(folder: Path, suffix: str | None = None) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and (suffix is None or p.suffix == suffix)}


@pytest.fixture(scope="module")
def module_lists() -> dict[str, list[str]]:
    return cmake_lists(MODULE_DIR / "CMakeLists.txt")


@pytest.fixture(scope="module")
def module_ast() -> ast.Module:
    return ast.parse(MODULE.read_text())


@pytest.fixture(scope="module")
def ui_root() -> ET.Element:
    return ET.parse(UI).getroot()


def test_every_library_file_is_listed_for_packaging(module_lists):
    scripts, resources = module_lists["LIB_PYTHON_SCRIPTS"], module_lists["LIB_PYTHON_RESOURCES"]
    missing = sorted(shipped_files(LIB_DIR, ".py") - set(scripts))
    assert not missing, f"add to LIB_PYTHON_SCRIPTS in DiffTractography/CMakeLists.txt: {missing}"
    missing = sorted(shipped_files(LIB_DIR) - shipped_files(LIB_DIR, ".py") - set(resources))
    assert not missing, f"add to LIB_PYTHON_RESOURCES in DiffTractography/CMakeLists.txt: {missing}"
    assert len(scripts + resources) == len(set(scripts + resources))


def test_every_module_python_file_is_listed(module_lists):
    missing = sorted(shipped_files(MODULE_DIR, ".py") - set(module_lists["MODULE_PYTHON_SCRIPTS"]))
    assert not missing, f"add to MODULE_PYTHON_SCRIPTS in DiffTractography/CMakeLists.txt: {missing}"


def test_every_listed_file_exists(module_lists):
    listed = ([MODULE_DIR / f for f in module_lists["MODULE_PYTHON_SCRIPTS"] + module_lists["MODULE_PYTHON_RESOURCES"]]
              + [LIB_DIR / f for f in module_lists["LIB_PYTHON_SCRIPTS"] + module_lists["LIB_PYTHON_RESOURCES"]])
    assert [str(p.relative_to(ROOT)) for p in listed if not p.is_file()] == []


def test_library_is_installed_as_a_package_beside_the_module():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    call = re.search(r"ctkMacroCompilePythonScript\((.*?)\)\s*$", text, re.S | re.M).group(1)
    assert "SOURCE_DIR ${PROJECT_SOURCE_DIR}/${LIB_NAME}" in call
    assert "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${LIB_NAME}" in call
    assert "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${LIB_NAME}" in call
    assert cmake_lists(MODULE_DIR / "CMakeLists.txt")["LIB_NAME"] == [LIB_DIR.name]


def test_extension_metadata():
    values = cmake_lists(ROOT / "CMakeLists.txt")
    assert values["EXTENSION_CATEGORY"] == ["Diffusion"]
    assert values["EXTENSION_DEPENDS"] == ["SlicerDMRI", "PyTorch"]
    repository = values["EXTENSION_REPOSITORY"][0]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository)
    assert values["EXTENSION_HOMEPAGE"][0].startswith(repository)
    files = repository.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):  # files of this repository that exist
        for url in values[key]:
            assert url.startswith(files) and (ROOT / url[len(files):]).is_file(), url
    assert (ROOT / "LICENSE.txt").is_file()
    assert f'href="{values["EXTENSION_HOMEPAGE"][0]}"' in MODULE.read_text()  # the help text links the README
    assert "add_subdirectory(DiffTractography)" in (ROOT / "CMakeLists.txt").read_text()


def test_every_widget_the_module_reaches_is_in_the_ui(module_ast, ui_root):
    reached = {node.attr for node in ast.walk(module_ast)
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
               and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    names = {w.get("name") for w in ui_root.iter("widget")}
    assert reached, "the module reaches no widget: the check would be vacuous"
    assert sorted(reached - names) == []


def parameter_fields(module_ast) -> dict[str, ast.AnnAssign]:
    cls = next(n for n in module_ast.body if isinstance(n, ast.ClassDef) and n.name == "DiffTractographyParameterNode")
    return {n.target.id: n for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_ui_binds_every_parameter_and_nothing_else(module_ast, ui_root):
    bound = [p.find("string").text for p in ui_root.iter("property") if p.get("name") == "SlicerParameterName"]
    assert len(bound) == len(set(bound))
    assert sorted(bound) == sorted(parameter_fields(module_ast))


def test_ui_top_level_is_a_mrml_widget_connected_to_every_node_combo_box(ui_root):
    top = ui_root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    combos = {w.get("name") for w in ui_root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    wiring = (top.get("name"), "mrmlSceneChanged(vtkMRMLScene*)", "setMRMLScene(vtkMRMLScene*)")
    connected = {c.findtext("receiver") for c in ui_root.iter("connection")
                 if (c.findtext("sender"), c.findtext("signal"), c.findtext("slot")) == wiring}
    assert combos and combos == connected


def test_choices_match_the_library(module_ast):
    from DiffTractographyLib.config import ALGORITHMS
    from DiffTractographyLib.sh import BASES

    fields = parameter_fields(module_ast)
    assert ast.literal_eval(fields["shBasis"].annotation.slice.elts[1].args[0]) == list(BASES)
    algorithms = fields["algorithm"].annotation.slice.elts[1].args[0]
    assert ast.dump(algorithms) == ast.dump(ast.parse('["auto", *ALGORITHMS]', mode="eval").body) and ALGORITHMS


def top_level_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_at_load_time_stay_light(module_ast):
    assert "torch" not in top_level_imports(module_ast)
    adapter = top_level_imports(ast.parse((LIB_DIR / "mrml.py").read_text()))
    assert not adapter & {"torch", "vtk", "slicer", "qt", "ctk"}


def test_reload_reads_the_library_again(module_ast):
    widget = next(n for n in module_ast.body if isinstance(n, ast.ClassDef) and n.name == "DiffTractographyWidget")
    reload = next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "onReload")
    calls = {ast.unparse(n.func) for n in ast.walk(reload) if isinstance(n, ast.Call)}
    assert {"DiffTractographyLib.unload", "ScriptedLoadableModuleWidget.onReload"} <= calls


def test_console_runs_ensure_the_dependencies_and_ask_for_a_minimum_torch(module_ast):
    logic = next(n for n in module_ast.body if isinstance(n, ast.ClassDef) and n.name == "DiffTractographyLogic")
    run = next(n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    calls = {ast.unparse(n.func): n.lineno for n in ast.walk(run) if isinstance(n, ast.Call)}
    assert calls["ensureDependencies"] < calls["mrml.run"]
    install = next(n for n in ast.walk(module_ast) if isinstance(n, ast.Call) and ast.unparse(n.func).endswith("installTorch"))
    assert {k.arg for k in install.keywords} == {"askConfirmation", "torchVersionRequirement"}


def test_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE), cfile=str(tmp_path / "module.pyc"), doraise=True)


def test_icon_is_a_128_pixel_png():
    head = (MODULE_DIR / "Resources" / "Icons" / "DiffTractography.png").read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (128, 128)


def test_requirements_never_name_what_slicer_or_the_pytorch_extension_provides():
    text = (MODULE_DIR / "Resources" / "requirements.txt").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    names = {re.split(r"[<>=!~\[ ]", line)[0].lower() for line in lines if line}
    assert names == {"dipy", "nibabel", "trx-python", "numba"}
    assert not names & {"torch", "vtk", "numpy", "scipy", "simpleitk", "pyqt5", "pyside6", "slicer-core"}
