"""Compiled per-streamline tracking kernels (Numba): one call tracks every streamline of a batch
to its end, on all CPU cores (``cpu``) or one CUDA thread each (``cuda``), from one algorithm source
(``common``, ``sdstream``, ``tensordet``, ``pmf``, ``rows``). ``tracking.engine`` prepares their
inputs; compiled code is cached on disk (next to these files, or in the user's cache directory when
they are read-only; ``NUMBA_CACHE_DIR`` chooses another)."""
