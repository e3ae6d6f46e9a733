"""Compiled per-streamline tracking kernels (Numba): one call tracks every streamline of a batch
to its end, on all CPU cores (``cpu``) or one CUDA thread each (``cuda``), from one algorithm source
(``common``, ``sdstream``, ``tensordet``, ``pmf``, ``rows``), and replay a run backwards for its
gradients (``replay``). ``tracking.engine`` prepares their inputs; compiled code is cached on disk (next to these files, or in the user's cache directory when
they are read-only; ``NUMBA_CACHE_DIR`` chooses another).

Numba validates a cached function against its own file only, while the kernels inline functions of
the other files here: when any of them changes, every cached kernel of this folder is dropped.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: the files whose code the kernels compile in (besides this folder's)
_SOURCES = ("rng.py", "stopping.py", "tracking/sphere.py")


def _drop_stale_caches() -> None:
    files = sorted(_HERE.glob("*.py")) + [_HERE.parents[1] / name for name in _SOURCES]
    digest = hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest()
    cache = _HERE / "__pycache__"
    stamp = cache / "kernel-sources.sha1"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        for stale in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            stale.unlink(missing_ok=True)  # a concurrent process (a test worker) may have dropped it
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: Numba caches in the user's directory, rewritten with the files
        pass


_drop_stale_caches()
