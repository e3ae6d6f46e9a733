"""The participants of a BIDS dataset, indexed with bids2table: one DWI series per subject and
session, with its ``.bval``/``.bvec`` and an optional brain mask.

Raw BIDS (``sub-*/[ses-*/]dwi/*_dwi.nii.gz``) and preprocessed derivatives (QSIPrep's
``*_space-T1w_desc-preproc_dwi.nii.gz`` beside ``*_desc-brain_mask.nii.gz``) are read alike:
the gradient files share the DWI's name, and the mask is the ``mask`` file of the same subject,
session and space (``desc-brain`` preferred). A subject whose files are incomplete or ambiguous is
returned with the reason (``Participant.problem``) rather than raised: it fails alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

DWI_EXTENSIONS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Participant:
    """One unit of work: a subject's DWI series in one session (``session`` None without sessions).
    Paths are absolute; ``problem`` is a one-line reason when the inputs cannot be used."""

    subject: str
    session: str | None
    dwi: Path | None = None
    bval: Path | None = None
    bvec: Path | None = None
    mask: Path | None = None
    problem: str | None = None

    @property
    def label(self) -> str:
        """``sub-01`` or ``sub-01_ses-1``: the name of this unit in messages and logs."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def folder(self) -> Path:
        """The unit's folder relative to a dataset root: ``sub-01/[ses-1/]dwi``."""
        return Path(f"sub-{self.subject}", *([f"ses-{self.session}"] if self.session else []), "dwi")

    @property
    def stem(self) -> str:
        """The DWI's name without its ``desc`` entity and suffix (``sub-01_ses-1_space-T1w``): the
        start of every derivative's name."""
        if self.dwi is None:
            return self.label
        pairs = self.dwi.name.split("_")[:-1]
        return "_".join(p for p in pairs if not p.startswith("desc-"))

    def inputs(self) -> dict[str, Path]:
        """The input files by role (dwi, bval, bvec and, when present, mask)."""
        named = {"dwi": self.dwi, "bval": self.bval, "bvec": self.bvec, "mask": self.mask}
        return {role: path for role, path in named.items() if path is not None}


def _strip(label: str) -> str:
    return label[4:] if label.startswith("sub-") else label


def parse_filters(items: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` BIDS entities (``space=T1w desc=preproc``) -> a dict; InputError otherwise."""
    filters = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError(f"--bids-filter takes KEY=VALUE entities such as space=T1w, got {item!r}")
        filters[key] = value
    return filters


def index_participants(bids_dir, labels: list[str] | None = None,
                       filters: dict[str, str] | None = None) -> list[Participant]:
    """The participants of ``bids_dir`` in subject, session order: every (subject, session) with a
    DWI series matching ``filters`` (entity -> value, e.g. ``{"space": "T1w"}``), restricted to the
    subjects of ``labels`` (``01`` or ``sub-01``). A label absent from the dataset is an InputError."""
    import bids2table

    root = Path(bids_dir).resolve()
    if not root.is_dir():
        raise InputError(f"{bids_dir}: no such BIDS folder")
    wanted = sorted({_strip(label) for label in labels}) if labels else None
    table = bids2table.index_dataset(root, include_subjects=[f"sub-{s}" for s in wanted] if wanted else None)
    rows = [row for row in table.to_pylist() if row["datatype"] == "dwi"]
    subjects = {row["sub"] for row in rows}
    if wanted:
        missing = [s for s in wanted if s not in subjects]
        if missing:
            raise InputError(f"{bids_dir}: no DWI of participant {', '.join('sub-' + s for s in missing)}")
    if not rows:
        raise InputError(f"{bids_dir}: no sub-*/[ses-*/]dwi/*_dwi.nii.gz series found")
    paths = {row["path"] for row in rows}
    units: dict[tuple[str, str | None], list[dict]] = {}
    for row in rows:
        if row["suffix"] == "dwi" and row["ext"] in DWI_EXTENSIONS and _matches(row, filters or {}):
            units.setdefault((row["sub"], row["ses"]), []).append(row)
    if not units:
        raise InputError(f"{bids_dir}: no DWI series matches --bids-filter "
                         + " ".join(f"{k}={v}" for k, v in (filters or {}).items()))
    masks = [row for row in rows if row["suffix"] == "mask" and row["ext"] in DWI_EXTENSIONS]
    return [_participant(root, subject, session, series, paths, masks)
            for (subject, session), series in sorted(units.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]


def _matches(row: dict, filters: dict[str, str]) -> bool:
    extra = dict(row["extra_entities"] or [])
    return all(str(row.get(key, extra.get(key))) == value for key, value in filters.items())


def _participant(root: Path, subject: str, session: str | None, series: list[dict], paths: set[str],
                 masks: list[dict]) -> Participant:
    if len(series) > 1:
        names = ", ".join(sorted(Path(row["path"]).name for row in series))
        return Participant(subject, session, problem=f"{len(series)} DWI series ({names}); choose one with "
                                                     "--bids-filter, e.g. acq=... or space=...")
    row = series[0]
    stem = row["path"][: -len(row["ext"])]
    bval, bvec = stem + ".bval", stem + ".bvec"
    missing = [name for name in (bval, bvec) if name not in paths]
    if missing:
        return Participant(subject, session, root / row["path"],
                           problem=f"no {' or '.join(Path(m).suffix for m in missing)} file beside "
                                   f"{Path(row['path']).name} ({' and '.join(Path(m).name for m in missing)})")
    mine = [m for m in masks if (m["sub"], m["ses"], m["space"]) == (subject, session, row["space"])]
    brain = [m for m in mine if m["desc"] == "brain"]
    chosen = brain if brain else mine
    if len(chosen) > 1:
        names = ", ".join(sorted(Path(m["path"]).name for m in chosen))
        return Participant(subject, session, root / row["path"],
                           problem=f"{len(chosen)} candidate masks ({names}); keep one desc-brain mask")
    return Participant(subject, session, root / row["path"], root / bval, root / bvec,
                       root / chosen[0]["path"] if chosen else None)
