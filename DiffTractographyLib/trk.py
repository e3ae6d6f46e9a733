"""TrackVis .trk files without a loop over streamlines in numpy's hands.

The header is nibabel's (its 1000-byte record, field names and the voxmm <-> RAS mm affines, so that
files read and write as nibabel's do); the body, one int32 point count per streamline followed by
its points (x y z and the per-point scalars, float32 voxmm) and its properties, is laid out or split
with whole-array operations. Reading walks the count words once to find each streamline's start.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .files import atomic_path


def _header(affine, dimensions, n: int, scalars: dict[str, int], properties: dict[str, int]):
    """nibabel's little-endian TrackVis header record for a tractogram on this grid."""
    from nibabel.orientations import aff2axcodes
    from nibabel.streamlines.trk import (MAX_NB_NAMED_PROPERTIES_PER_STREAMLINE, MAX_NB_NAMED_SCALARS_PER_POINT,
                                         Field, TrkFile, encode_value_in_name)

    if len(scalars) > MAX_NB_NAMED_SCALARS_PER_POINT or len(properties) > MAX_NB_NAMED_PROPERTIES_PER_STREAMLINE:
        raise InputError(f".trk holds at most {MAX_NB_NAMED_SCALARS_PER_POINT} named per-point arrays and "
                         f"{MAX_NB_NAMED_PROPERTIES_PER_STREAMLINE} named per-streamline ones")
    header = TrkFile._default_structarr(endianness="little")
    header[Field.VOXEL_TO_RASMM] = np.asarray(affine, dtype=np.float32)
    header[Field.DIMENSIONS] = np.asarray(dimensions, dtype=np.int16)
    header[Field.VOXEL_SIZES] = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).astype(np.float32)
    header[Field.VOXEL_ORDER] = "".join(aff2axcodes(affine))
    header[Field.NB_STREAMLINES] = n
    header[Field.NB_SCALARS_PER_POINT] = sum(scalars.values()) if n else 0
    header[Field.NB_PROPERTIES_PER_STREAMLINE] = sum(properties.values()) if n else 0
    if n:
        for field, named in (("scalar_name", scalars), ("property_name", properties)):
            names = np.zeros(header[field].shape[-1], dtype="S20")
            for i, (name, width) in enumerate(named.items()):
                names[i] = encode_value_in_name(width, name)
            header[field] = names
    return header


def write_trk(path, points: np.ndarray, lengths: np.ndarray, affine, dimensions,
              data_per_streamline: dict | None = None, data_per_point: dict | None = None) -> None:
    """Write ``points`` (P, 3) RAS mm in streamlines of ``lengths`` (N,) to a .trk on the grid
    (``affine`` voxel -> RAS mm, ``dimensions``) atomically; named arrays (N, k) / (P, k) become
    properties / scalars (float32, names in sorted order, as nibabel writes them)."""
    from nibabel.streamlines.trk import get_affine_rasmm_to_trackvis

    lengths = np.asarray(lengths, dtype=np.int64)
    dps = {k: np.asarray(v, dtype=np.float32).reshape(len(lengths), -1) for k, v in sorted((data_per_streamline or {}).items())}
    dpp = {k: np.asarray(v, dtype=np.float32).reshape(len(points), -1) for k, v in sorted((data_per_point or {}).items())}
    header = _header(affine, dimensions, len(lengths), {k: v.shape[1] for k, v in dpp.items()},
                     {k: v.shape[1] for k, v in dps.items()})
    to_voxmm = get_affine_rasmm_to_trackvis(header)
    voxmm = np.asarray(points, dtype=np.float32) @ to_voxmm[:3, :3].T + to_voxmm[:3, 3]  # nibabel's arithmetic
    row = np.concatenate([voxmm.astype("<f4"), *dpp.values()], axis=1) if dpp else voxmm.astype("<f4")
    extra = np.concatenate(list(dps.values()), axis=1) if dps else np.zeros((len(lengths), 0), "<f4")
    k, p = row.shape[1], extra.shape[1]
    words = np.empty(len(lengths) * (1 + p) + len(points) * k, dtype="<i4")
    starts = np.arange(len(lengths)) * (1 + p) + (np.cumsum(lengths) - lengths) * k
    words[starts] = lengths
    values = words.view("<f4")
    extras = (starts + 1 + lengths * k)[:, None] + np.arange(p)
    values[extras] = extra
    values[_point_words(len(words), starts, extras)] = row.ravel()  # in order: the points' words are in order
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        words.tofile(f)


def read_trk(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, dict, dict]:
    """(points (P, 3) float32 RAS mm, lengths (N,), affine voxel -> RAS mm, dimensions, properties
    name -> (N, k), scalars name -> (P, k)) of a .trk file (versions 1 and 2, either byte order)."""
    import warnings

    from nibabel.streamlines.trk import Field, TrkFile, get_affine_trackvis_to_rasmm

    with warnings.catch_warnings(record=True) as notes:  # nibabel's notes on default header fields
        warnings.simplefilter("always")
        header = TrkFile._read_header(str(path))
    if int(header["version"]) >= 2 and any("vox_to_ras" in str(note.message) for note in notes):
        warnings.warn(f"{path}: the header records no voxel-to-RAS transform (vox_to_ras); its points are read "
                      "with an identity orientation, as in a TrackVis version 1 file", stacklevel=2)
    order = ">" if header[Field.ENDIANNESS] in (">", "big") else "<"
    words = np.fromfile(path, dtype=order + "i4", offset=header["_offset_data"])
    s, p = int(header[Field.NB_SCALARS_PER_POINT]), int(header[Field.NB_PROPERTIES_PER_STREAMLINE])
    k = 3 + s
    starts = []
    at, end = 0, len(words)
    while at < end:                       # one step per streamline: the count words chain
        starts.append(at)
        at += 1 + int(words[at]) * k + p
    if at != end:
        raise InputError(f"{path}: the .trk data ends inside a streamline (truncated file?)")
    starts = np.asarray(starts, dtype=np.int64)
    lengths = words[starts].astype(np.int64)
    values = words.view(order + "f4")
    extras = (starts + 1 + lengths * k)[:, None] + np.arange(p)
    rows = values[_point_words(len(words), starts, extras)].reshape(-1, k).astype(np.float32)
    extra = values[extras].astype(np.float32)
    to_ras = get_affine_trackvis_to_rasmm(header)
    points = (np.dot(rows[:, :3], to_ras[:3, :3].T) + to_ras[:3, 3]).astype(np.float32)
    scalars = _named(header["scalar_name"], rows[:, 3:], "scalars")
    properties = _named(header["property_name"], extra, "properties")
    affine = np.asarray(header[Field.VOXEL_TO_RASMM], dtype=np.float64)
    return points, lengths, affine, tuple(int(d) for d in header[Field.DIMENSIONS]), properties, scalars


def _point_words(total: int, starts: np.ndarray, extras: np.ndarray) -> np.ndarray:
    """(total,) bool: the words that hold points and scalars (not a count, not a property)."""
    words = np.ones(total, dtype=bool)
    words[starts] = False
    words[extras] = False
    return words


def _named(names, values: np.ndarray, rest: str) -> dict[str, np.ndarray]:
    """Columns of ``values`` by TrackVis's encoded names; unnamed trailing columns as ``rest``."""
    from nibabel.streamlines.trk import decode_value_from_name

    out, at = {}, 0
    for field in names:
        name, width = decode_value_from_name(field)
        if width:
            out[name] = values[:, at:at + width]
            at += width
    if at < values.shape[1]:
        out[rest] = values[:, at:]
    return out
