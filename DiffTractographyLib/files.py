"""Output paths: tractogram formats by extension and atomic writes. Imports nothing heavy, so the
command line answers ``--help`` without loading torch."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable
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


def check_outputs(outputs, inputs=(), force: bool = False) -> None:
    """``check_output`` for every (option, path) of ``outputs`` (None paths skipped), and fail when two
    options name the same file, when one names an input, or when one names a folder."""
    seen: dict[Path, str] = {}
    sources = {Path(p).resolve(): p for p in inputs if p is not None}
    for flag, path in outputs:
        if path is None:
            continue
        where = Path(path).resolve()
        if where.is_dir():  # before the existence check: --force cannot overwrite a folder
            raise InputError(f"{flag} {path} is a folder; name a file")
        check_output(path, force=force)
        if where in seen:
            raise InputError(f"{seen[where]} and {flag} name the same file {path}")
        if where in sources:
            raise InputError(f"{flag} {path} is an input; name another file")
        seen[where] = flag


def write_all(contents: Iterable[tuple[Path, Callable[[], bytes]]]) -> None:
    """Write the bytes ``content()`` to ``path`` for every (path, content) of ``contents``, each through
    ``atomic_path``, and move them all into place only when every one was written: a failure leaves
    the earlier files as they were (with --force too) and none of this run's."""
    with contextlib.ExitStack() as staged:  # each file's move waits for the stack's exit
        for path, content in contents:
            Path(staged.enter_context(atomic_path(path))).write_bytes(content())


def load_table(path, **options):
    """``numpy.loadtxt(path, **options)`` without numpy's warning for a file with no rows: callers
    check the table and say what is wrong in one line."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
        return np.loadtxt(path, **options)


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix); move it into place only on success."""
    path = check_output(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename not in (None, tmp) and getattr(exc, "filename2", None) != tmp:
            raise  # another file's error (an input read inside the block): its own name
        raise InputError(f"{path}: cannot write ({exc.strerror})") from exc  # the user's name, not ours
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
