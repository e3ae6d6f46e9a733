"""The group table: one row per participant and session of the derivatives folder, from the
sidecars of the finished ones and the failure records of the others
(``OUTPUT_DIR/difftract_group.tsv``, described by ``difftract_group.json``)."""
from __future__ import annotations

import csv
from pathlib import Path

from ..files import atomic_path
from .outputs import LOGS, read_json, write_json

#: the ``software`` of the sidecars read (any version: the table reports what is on disk)
PRODUCT = "difftractography "

TABLE = "difftract_group.tsv"
COLUMNS = {
    "participant_id": "BIDS participant (sub-<label>)",
    "session_id": "BIDS session (ses-<label>), n/a without sessions",
    "status": "done, or failed (see reason)",
    "streamlines": "streamlines in the tractogram",
    "mean_length_mm": "mean streamline length, mm",
    "clusters": "QuickBundles clusters (n/a without --cluster-threshold)",
    "terminations": "seeds and streamline ends by outcome, as difftract track counts them",
    "seconds": "wall time of the participant's stages on their workers, s",
    "device": "where the tracking ran",
    "reason": "why the participant failed: the stage and a one-line message",
}


def row_from_sidecar(record: dict) -> dict:
    """The group-table row of a finished participant's sidecar."""
    s = record["summary"]
    return {"participant_id": record["participant_id"], "session_id": record["session_id"], "status": "done",
            "streamlines": s["streamlines"], "mean_length_mm": s["mean_length_mm"], "clusters": s["clusters"],
            "terminations": " ".join(f"{k}={v}" for k, v in s["terminations"].items()),
            "seconds": round(sum(s["seconds"].values()), 2), "device": s["device"], "reason": None}


def failure_row(participant_id: str, session_id: str | None, stage: str, reason: str) -> dict:
    return {"participant_id": participant_id, "session_id": session_id, "status": "failed",
            "reason": f"{stage}: {reason}"}


def group_rows(output_dir, labels: list[str] | None = None) -> list[dict]:
    """Rows of every participant with a sidecar of difftract batch or a failure record, sorted;
    only the subjects of ``labels`` (``01`` or ``sub-01``) when given."""
    output_dir = Path(output_dir)
    rows = []
    for path in output_dir.glob("sub-*/**/*_tractography.json"):
        record = read_json(path)
        if record is not None and str(record.get("software", "")).startswith(PRODUCT) and "summary" in record:
            rows.append(row_from_sidecar(record))
    for path in (output_dir / LOGS).glob("*_failed.json"):
        record = read_json(path)
        if record is not None:
            rows.append(failure_row(record["participant_id"], record["session_id"], record["stage"],
                                    record["reason"]))
    if labels:
        wanted = {label if label.startswith("sub-") else f"sub-{label}" for label in labels}
        rows = [row for row in rows if row["participant_id"] in wanted]
    return sorted(rows, key=lambda r: (r["participant_id"], r["session_id"] or ""))


def write_group_table(output_dir, rows: list[dict]) -> Path:
    """Write the rows as ``difftract_group.tsv`` (n/a for missing values) and its column
    descriptions as ``difftract_group.json``, atomically; returns the table's path."""
    output_dir = Path(output_dir)
    path = output_dir / TABLE
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["n/a" if row.get(c) is None else row[c] for c in COLUMNS])
    write_json(path.with_suffix(".json"), {name: {"Description": text} for name, text in COLUMNS.items()})
    return path

