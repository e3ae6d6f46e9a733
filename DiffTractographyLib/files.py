"""Output paths: tractogram formats by extension and atomic writes. Imports nothing heavy, so the
command line answers ``--help`` without loading torch."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import InputError

FORMATS = (".tck", ".trk", ".trx", ".vtk", ".vtp")


def tractogram_format(path) -> str:
    """The tractogram format of ``path`` from its extension; InputError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path}: unknown tractogram format {suffix!r}; use one of {', '.join(FORMATS)}")
    return suffix


def check_output(path, force: bool = True) -> Path:
    """Fail early, before any work, when ``path`` cannot be written: its folder is missing, or it
    exists and ``force`` is not set."""
    path = Path(path)
    if not path.parent.exists():
        raise InputError(f"{path}: the output folder {path.parent} does not exist")
    if path.exists() and not force:
        raise InputError(f"{path} exists; use --force to overwrite it")
    return path


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix); move it into place only on success."""
    path = check_output(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
