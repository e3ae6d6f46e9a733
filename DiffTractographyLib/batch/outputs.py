"""The BIDS-Derivatives folder that ``difftract batch`` writes: names, atomic publication, the
provenance sidecar that marks a participant complete, failure records and input checksums.

Per participant, in ``OUTPUT_DIR/sub-01/[ses-1/]dwi/`` (``<stem>`` = the DWI's entities without
``desc``, ``<model>`` = csd or dti):

- ``<stem>_model-<model>_*``: the fitted model as ``difftract fit`` writes it (``_fod.nii.gz``,
  ``_fod.json``, ``_response.txt`` for csd; ``_FA.nii.gz`` ... for dti);
- ``<stem>_desc-signal_mask.nii.gz``: the seed and stopping mask when the input has no brain mask;
- ``<stem>_model-<model>_tractography.trx``: the streamlines, with ``seed_index``;
- ``<stem>_model-<model>_desc-clusters_tractography.trx``: the clusters, when asked;
- ``<stem>_model-<model>_tractography.json``: the sidecar, written last: every parameter, the
  version, the inputs' SHA-256, the commands that reproduce the outputs, and a summary.

Every file is written beside its final name and renamed into place; hidden leftovers of an attempt
that was killed (``.<stem>_*``) are removed when the participant is run again.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..files import atomic_path, write_text
from .bids import Participant

SOFTWARE = f"difftractography {__version__}"
LOGS = "logs"
#: what the BIDS validator should not read: the failure records and the group table
BIDSIGNORE = f"{LOGS}/\ndifftract_group.*\n"


@dataclass(frozen=True)
class Layout:
    """Where one participant's derivatives go under ``output_dir`` (``model``: csd or dti)."""

    output_dir: Path
    participant: Participant
    model: str

    @property
    def folder(self) -> Path:
        return self.output_dir / self.participant.folder

    @property
    def base(self) -> str:
        """``<stem>_model-<model>``: the fit's output prefix and the tractograms' name start."""
        return f"{self.participant.stem}_model-{self.model}"

    @property
    def seed_mask(self) -> Path:
        """The seed and stopping mask: the input's brain mask, else the derived signal mask."""
        if self.participant.mask is not None:
            return self.participant.mask
        return self.folder / f"{self.participant.stem}_desc-signal_mask.nii.gz"

    @property
    def tractogram(self) -> Path:
        return self.folder / f"{self.base}_tractography.trx"

    @property
    def clusters(self) -> Path:
        return self.folder / f"{self.base}_desc-clusters_tractography.trx"

    @property
    def sidecar(self) -> Path:
        return self.folder / f"{self.base}_tractography.json"

    @property
    def failure(self) -> Path:
        return self.output_dir / LOGS / f"{self.participant.label}_failed.json"

    def remove_leftovers(self) -> None:
        """Delete the hidden temporary files a killed attempt left beside this participant's outputs."""
        if self.folder.is_dir():
            for stale in self.folder.glob(f".{self.participant.stem}_*"):
                stale.unlink(missing_ok=True)


def checksum(path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, record: dict) -> None:
    """Write ``record`` as indented JSON, atomically."""
    write_text(path, json.dumps(record, indent=2) + "\n")


def read_json(path) -> dict | None:
    """The JSON object in ``path``; None when it is missing or unreadable (a sidecar from an older,
    interrupted run counts as absent)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def publish(source: Path, folder: Path) -> list[str]:
    """Copy every file of the folder ``source`` into ``folder`` atomically (each written beside its
    final name, then renamed); returns the names, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in source.iterdir() if p.is_file())
    for name in names:
        with atomic_path(folder / name) as tmp:
            shutil.copyfile(source / name, tmp)
    return names


def completed(layout: Layout, expected: dict) -> dict | None:
    """The sidecar of a finished participant when it was made by this version from the same
    inputs (checksums) with the same parameters and all its outputs are present, else None."""
    record = read_json(layout.sidecar)
    if record is None or any(record.get(key) != expected[key] for key in ("software", "inputs", "parameters")):
        return None
    if not all((layout.folder / name).is_file() for name in record.get("outputs", [])):
        return None
    return record


def describe(output_dir: Path, bids_dir: Path) -> None:
    """Write the derivatives' ``dataset_description.json`` and ``.bidsignore``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "dataset_description.json", {
        "Name": "difftract batch", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "difftractography", "Version": __version__,
                         "Description": "difftract batch: fit, track and cluster every participant"}],
        "SourceDatasets": [{"URL": Path(bids_dir).resolve().as_uri()}],
    })
    write_text(output_dir / ".bidsignore", BIDSIGNORE)


def record_failure(layout: Layout, stage: str, reason: str) -> None:
    """Note a failed participant in ``logs/`` and withdraw its sidecar (its outputs are not current)."""
    layout.sidecar.unlink(missing_ok=True)
    layout.failure.parent.mkdir(parents=True, exist_ok=True)
    write_json(layout.failure, {"participant_id": f"sub-{layout.participant.subject}",
                                "session_id": f"ses-{layout.participant.session}" if layout.participant.session else None,
                                "stage": stage, "reason": reason, "software": SOFTWARE})
