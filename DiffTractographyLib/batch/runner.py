"""The participant level of ``difftract batch``: which participants need running (``prepare``:
indexing, input checksums, up-to-date sidecars), running them on a Dask client (``execute``), and
their rows of the group table. A participant's failure is its row's reason; the others go on."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import graph
from .bids import index_participants
from .graph import Options, Plan
from .outputs import SOFTWARE, Layout, checksum, completed, describe, record_failure
from .report import failure_row, row_from_sidecar

#: the work folder's default name inside OUTPUT_DIR (hidden: not part of the derivatives)
WORK = ".work"


@dataclass
class Batch:
    """The participants to run (``todo``) and the rows of those settled without running: up to
    date, or failed at indexing (``rows``)."""

    work_dir: Path
    todo: list[Plan] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def prepare(bids_dir, output_dir, options: Options, *, labels: list[str] | None = None,
            filters: dict[str, str] | None = None, work_dir=None, gpu: bool = False,
            log: Callable[[str], None] = lambda line: None) -> Batch:
    """Index ``bids_dir``, write the derivatives' description, and sort the participants: inputs
    unusable (failed now), outputs up to date (same version, input checksums and parameters:
    skipped), or to run."""
    root = Path(bids_dir).resolve()
    output_dir = Path(output_dir).resolve()
    if output_dir == root:
        raise InputError(f"{output_dir}: the output folder must differ from the BIDS folder")
    participants = index_participants(root, labels, filters)
    describe(output_dir, root)
    batch = Batch(Path(work_dir).resolve() if work_dir else output_dir / WORK)
    parameters = options.parameters()
    for p in participants:
        layout = Layout(output_dir, p, options.model)
        if p.problem is not None:
            record_failure(layout, "inputs", p.problem)
            batch.rows.append(failure_row(*_ids(p), "inputs", p.problem))
            log(f"{p.label}: FAILED (inputs): {p.problem}")
            continue
        inputs = {role: {"path": str(path.relative_to(root)), "sha256": checksum(path)}
                  for role, path in p.inputs().items()}
        expected = {"software": SOFTWARE, "inputs": inputs, "parameters": parameters}
        record = completed(layout, expected)
        if record is not None:
            batch.rows.append(row_from_sidecar(record))
            log(f"{p.label}: up to date, skipped")
        else:
            batch.todo.append(Plan(layout, options, batch.work_dir, expected, gpu=gpu))
    return batch


def _ids(p) -> tuple[str, str | None]:
    return f"sub-{p.subject}", f"ses-{p.session}" if p.session else None


def reason(exc: BaseException) -> str:
    """A one-line account of a stage's exception."""
    from distributed import KilledWorker

    if isinstance(exc, InputError):
        text = str(exc)
    elif isinstance(exc, KilledWorker):
        text = "the worker running it died each time it was tried (KilledWorker)"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def execute(batch: Batch, client, log: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Run ``batch.todo`` on ``client``, one task graph per participant; returns all the rows
    (``batch.rows`` first), logging each participant as it ends."""
    from distributed import as_completed

    graphs = {}
    for plan in batch.todo:
        stages = graph.submit(client, plan)
        graphs[stages[-1]] = (plan, stages)
    rows = list(batch.rows)
    for k, future in enumerate(as_completed(list(graphs)), 1):
        plan, stages = graphs[future]
        label = plan.participant.label
        if future.status == "finished":
            row = row_from_sidecar(future.result())
            log(f"[{k}/{len(graphs)}] {label}: {row['streamlines']} streamlines, mean {row['mean_length_mm']:.1f} mm, "
                f"{row['seconds']:.1f} s on {row['device']}")
        else:
            failed = next(s for s in stages if s.status != "finished")
            stage = failed.key.split("-", 1)[0]
            why = reason(failed.exception())
            record_failure(plan.layout, stage, why)
            shutil.rmtree(plan.work_folder, ignore_errors=True)
            row = failure_row(*_ids(plan.participant), stage, why)
            log(f"[{k}/{len(graphs)}] {label}: FAILED ({stage}): {why}")
        rows.append(row)
    if batch.work_dir.is_dir() and not any(batch.work_dir.iterdir()):
        batch.work_dir.rmdir()
    return sorted(rows, key=lambda r: (r["participant_id"], r["session_id"] or ""))
