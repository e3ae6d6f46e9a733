"""Dask worker preload of the fault test (``distributed.worker.preload``): the first worker that
publishes sub-01's tractogram writes half of it beside its final name, as an atomic write does,
then kills its own process with SIGKILL (as the OOM killer or a lost node would). The marker file
named by DIFFTRACT_KILL_MARKER records the kill, so that the retried task is left to finish."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def dask_setup(worker) -> None:
    from DiffTractographyLib.batch import outputs
    from DiffTractographyLib.files import atomic_path

    publish = outputs.publish

    def publish_or_die(source: Path, folder: Path) -> list[str]:
        marker = os.environ.get("DIFFTRACT_KILL_MARKER")
        if marker and source.name.startswith("track-") and source.parent.name == "sub-01":
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return publish(source, folder)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            name = next(p.name for p in source.iterdir() if p.suffix == ".trx")
            whole = (source / name).read_bytes()
            with atomic_path(folder / name) as tmp, open(tmp, "wb") as part:
                part.write(whole[: len(whole) // 2])
                part.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return publish(source, folder)

    outputs.publish = publish_or_die
