"""Tractogram files: .tck (MRtrix), .trk (TrackVis), .trx, .vtk/.vtp (Slicer fiber bundles).

``load_tractogram`` always returns RAS mm; ``save_tractogram`` writes RAS mm to .tck/.trk/.trx and
RAS with a ``SPACE=RAS`` tag to .vtk/.vtp, the convention SlicerDMRI's fiber bundle storage reads and
writes. Writes are atomic: a failed write never leaves a partial file behind.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import InputError
from .files import atomic_path, tractogram_format
from .streamlines import Tractogram, _lengths_to_offsets, as_numpy


def _reference_header(tractogram: Tractogram):
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(tractogram.dimensions)
    header.set_sform(tractogram.affine, code=1)
    header.set_qform(tractogram.affine, code=1)
    return header


def _nib_tractogram(t: Tractogram):
    import nibabel as nib

    dps = {k: as_numpy(v).reshape(len(t), -1) for k, v in t.data_per_streamline.items()}
    dpp = {k: as_numpy(v).reshape(len(t.points), -1).astype(np.float32) for k, v in t.data_per_point.items()}
    offsets = as_numpy(t.offsets).astype(np.int64)
    seq = nib.streamlines.ArraySequence()
    seq._data = as_numpy(t.points).astype(np.float32)
    seq._offsets = offsets[:-1]
    seq._lengths = np.diff(offsets)
    tractogram = nib.streamlines.Tractogram(seq, affine_to_rasmm=np.eye(4))
    tractogram.data_per_streamline = dps
    if dpp:
        tractogram.data_per_point = {k: nib.streamlines.ArraySequence(np.split(v, offsets[1:-1])) for k, v in dpp.items()}
    return tractogram


def _rows(a: np.ndarray) -> np.ndarray:
    """(R,) view of a C-contiguous (R, 3) array with one opaque item per row: numpy masks and
    scatters rows of it an order of magnitude faster than rows of the (R, 3) array."""
    return a.view(np.dtype((np.void, 3 * a.dtype.itemsize))).reshape(len(a))


def tck_rows(points, lengths) -> np.ndarray:
    """(P + N, 3) float32 little-endian rows as .tck stores them: each streamline's P_i vertices
    (RAS mm, from packed ``points`` (P, 3) and vertex counts ``lengths`` (N,)) followed by a NaN row."""
    points = np.ascontiguousarray(as_numpy(points), dtype="<f4")
    lengths = np.asarray(as_numpy(lengths), dtype=np.int64)
    rows = np.empty((len(points) + len(lengths), 3), dtype="<f4")
    delimiter = np.cumsum(lengths + 1) - 1
    vertex = np.ones(len(rows), dtype=bool)
    vertex[delimiter] = False
    _rows(rows)[vertex] = _rows(points)
    rows[delimiter] = np.nan
    return rows


def subset_tck_rows(rows: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The stored rows (``read_tck_rows``) of the streamlines where ``keep`` (N,) bool, in order."""
    return _rows(rows)[np.repeat(keep, lengths + 1)].view(rows.dtype).reshape(-1, 3)


def write_tck_rows(path, blocks: Iterable[tuple[np.ndarray, int]], properties: dict | None = None) -> int:
    """Write MRtrix3's .tck from blocks of (rows (R, 3) as ``tck_rows`` lays them out, number of
    streamlines in them) as they come, atomically: the header, each block in one write (converted to
    float32 little-endian where it is not), an Inf row at the end; the header's count (zero-padded,
    as MRtrix3 writes it) is filled in last. ``properties`` are extra header fields (e.g.
    ``step_size`` in mm, which tckmap reads). Returns the number of streamlines."""
    from datetime import datetime

    extra = "".join(f"{k}: {v}\n" for k, v in (properties or {}).items())
    head = f"mrtrix tracks\ntimestamp: {datetime.now().timestamp():.6f}\ndatatype: Float32LE\n{extra}".encode()
    base = len(head) + len("count: 0000000000\nfile: . \nEND\n")
    offset = base
    while offset != base + len(str(offset)):  # the offset counts its own digits
        offset = base + len(str(offset))
    count = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # UTF-8, as MRtrix3 writes its headers
        f.write(head + f"count: {0:010d}\nfile: . {offset}\nEND\n".encode())
        for rows, n in blocks:
            f.write(np.ascontiguousarray(rows, dtype="<f4"))
            count += n
        f.write(np.full(3, np.inf, dtype="<f4").tobytes())
        f.seek(len(head))
        f.write(f"count: {count:010d}".encode())
    return count


def write_tck(path, chunks: Iterable[tuple[np.ndarray, np.ndarray]], properties: dict | None = None) -> int:
    """Write MRtrix3's .tck (float32 little-endian xyz triplets in RAS mm, a NaN triplet after each
    streamline, an Inf triplet at the end) from (points (P, 3), lengths (N,)) chunks as they come,
    atomically; see ``write_tck_rows``. Returns the number of streamlines."""
    return write_tck_rows(path, ((tck_rows(points, lengths), len(lengths)) for points, lengths in chunks), properties)


#: MRtrix3's .tck data types
TCK_TYPES = {"Float32LE": "<f4", "Float32BE": ">f4", "Float64LE": "<f8", "Float64BE": ">f8"}


#: .tck header fields that belong to one file, not to how its streamlines were made
_OWN_FIELDS = ("count", "total_count", "timestamp", "datatype", "file")


def tck_lineage(source) -> dict[str, str]:
    """The header fields of the .tck ``source`` that say how its streamlines were made (step_size,
    method, source, ...: all but count, total_count, timestamp, datatype and file), for a file derived
    from it to keep, as tckedit keeps them (tckmap reads step_size); {} for None or another format."""
    if source is None or tractogram_format(source) != ".tck" or not Path(source).exists():
        return {}
    return {k: v for k, v in read_tck_header(source)[0].items() if k not in _OWN_FIELDS}


def read_tck_header(path) -> tuple[dict[str, str], int, str]:
    """The key-value fields of a .tck header (first value of a repeated key), the byte offset of its
    data and the numpy dtype of its triplets."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"mrtrix tracks":  # MRtrix3 pads the line with spaces
            raise InputError(f"{path}: not an MRtrix3 .tck file (no 'mrtrix tracks' first line)")
        fields: dict[str, str] = {}
        for line in f:
            line = line.decode("utf-8", "replace").strip()
            if line == "END":
                break
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        else:
            raise InputError(f"{path}: the .tck header has no END line")
    datatype = TCK_TYPES.get(fields.get("datatype", ""))
    where = fields.get("file", "").split()
    if datatype is None or len(where) != 2 or where[0] != ".":
        raise InputError(f"{path}: unsupported .tck header (datatype {fields.get('datatype')!r}, "
                         f"file {fields.get('file')!r})")
    return fields, int(where[1]), datatype


def read_tck_rows(path) -> tuple[np.ndarray, np.ndarray]:
    """MRtrix3's .tck as stored: (rows (R, 3) in the file's dtype, memory-mapped: each streamline's
    vertices followed by its NaN row, up to the last NaN row; vertex counts (N,) int64). Reading
    stops at the end marker (an Inf row); a file that MRtrix3 left unfinished (``count: 0``, no end
    marker) reads as MRtrix3 reads it: every streamline closed by a NaN row, a trailing open one
    left out. A file cut short of the count its header states is read up to its last complete
    streamline, with a warning."""
    fields, offset, datatype = read_tck_header(path)
    size = max((Path(path).stat().st_size - offset) // (3 * np.dtype(datatype).itemsize), 0)
    if size == 0:
        rows, lengths = np.zeros((0, 3), dtype=datatype), np.zeros(0, dtype=np.int64)
    else:
        data = np.memmap(path, dtype=datatype, mode="r", offset=offset, shape=(size, 3))
        marks = np.flatnonzero(~np.isfinite(data[:, 0]))  # NaN rows and the end marker (as MRtrix3: x alone)
        end = np.flatnonzero(np.isinf(data[marks, 0]))
        delimiters = marks[:end[0]] if len(end) else marks
        rows = data[:delimiters[-1] + 1] if len(delimiters) else data[:0]
        lengths = np.diff(delimiters, prepend=-1) - 1
    stated = fields.get("count", "").strip()
    if stated.isdigit() and int(stated) > len(lengths):
        warnings.warn(f"{path}: the header counts {int(stated)} streamlines but the file holds {len(lengths)} "
                      "(cut short?); reading those", stacklevel=2)
    return rows, lengths


def read_tck(path) -> tuple[np.ndarray, np.ndarray]:
    """MRtrix3's .tck as (points (P, 3) float32 RAS mm, lengths (N,) int64): ``read_tck_rows``
    without the NaN rows."""
    rows, lengths = read_tck_rows(path)
    vertex = np.ones(len(rows), dtype=bool)
    vertex[np.cumsum(lengths + 1) - 1] = False
    points = _rows(rows)[vertex].view(rows.dtype).reshape(-1, 3)
    return points.astype(np.float32, copy=False), lengths


def save_tractogram(tractogram: Tractogram, path, groups: dict | None = None, derived_from=None) -> None:
    """Write ``tractogram`` (RAS mm) to ``path``; the format follows the extension.

    ``groups`` (.trx only): name -> (streamline indices, (3,) uint8 RGB colour or None), written as
    TRX groups with the colour as the group's ``color`` data. ``derived_from``: the tractogram file
    these streamlines come from; a .tck written from a .tck keeps its header fields (``tck_lineage``).
    """
    fmt = tractogram_format(path)
    if groups and fmt != ".trx":
        raise InputError(f"{path}: streamline groups can only be stored in .trx files")
    if fmt == ".tck":
        write_tck(path, [(tractogram.points, np.diff(as_numpy(tractogram.offsets)))], tck_lineage(derived_from))
        return
    if fmt in (".trk", ".trx"):
        tractogram = with_grid(tractogram, path)
    with atomic_path(path) as tmp:
        if fmt == ".trk":
            from .trk import write_trk

            write_trk(tmp, as_numpy(tractogram.points), np.diff(as_numpy(tractogram.offsets)), tractogram.affine,
                      tractogram.dimensions, {k: as_numpy(v) for k, v in tractogram.data_per_streamline.items()},
                      {k: as_numpy(v) for k, v in tractogram.data_per_point.items()})
        elif fmt == ".trx":
            import trx.trx_file_memmap as tmm

            nt = _nib_tractogram(tractogram)
            dtypes = {"positions": np.float32, "offsets": np.uint64,
                      "dps": {k: (np.float32 if np.issubdtype(as_numpy(v).dtype, np.floating) else np.int64)
                              for k, v in tractogram.data_per_streamline.items()},
                      "dpv": {}}
            trx = tmm.TrxFile.from_tractogram(nt, reference=_reference_header(tractogram), dtype_dict=dtypes)
            for name, (indices, color) in (groups or {}).items():
                trx.groups[name] = np.asarray(as_numpy(indices) if hasattr(indices, "cpu") else indices, dtype=np.uint32)
                if color is not None:
                    trx.data_per_group[name] = {"color": np.asarray(color, dtype=np.uint8).reshape(1, 3)}
            try:
                tmm.save(trx, tmp)
            finally:
                trx.close()
        else:
            from .polydata import write_polydata_file

            write_polydata_file(tractogram, tmp)


def with_grid(tractogram: Tractogram, path) -> Tractogram:
    """``tractogram``, or, when it holds no grid (a .tck or .vtk read without a reference image), a copy
    with a 1 mm RAS grid around its streamlines, said in a warning naming ``path`` (what .trk and .trx
    headers need)."""
    if not _without_grid(tractogram):
        return tractogram
    warnings.warn(f"{path}: no reference image gave the streamlines a grid (--reference); the header gets a "
                  "1 mm grid around them", stacklevel=3)
    return Tractogram(tractogram.points, tractogram.offsets, *_grid_around(as_numpy(tractogram.points)),
                      tractogram.data_per_streamline, tractogram.data_per_point)


def _without_grid(tractogram: Tractogram) -> bool:
    """Whether the tractogram holds the placeholder grid of a format that carries none (one voxel at
    the origin) while its streamlines lie elsewhere."""
    points = as_numpy(tractogram.points)
    return (tractogram.dimensions == (1, 1, 1) and np.array_equal(tractogram.affine, np.eye(4)) and len(points) > 0
            and float(np.abs(points).max()) > 0.5)


def _grid_around(points: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(affine, dimensions) of a 1 mm RAS grid holding ``points`` (P, 3) mm with a voxel to spare."""
    low = np.floor(points.min(axis=0)) - 1.0
    high = np.ceil(points.max(axis=0)) + 1.0
    affine = np.eye(4)
    affine[:3, 3] = low
    return affine, tuple(int(n) for n in high - low + 1)


def load_tractogram(path, reference=None) -> Tractogram:
    """Read a tractogram in RAS mm. ``reference`` (a NIfTI path or image) supplies the grid of
    formats that carry none (.tck, .vtk/.vtp). An unreadable file is an InputError naming it."""
    fmt = tractogram_format(path)
    if not Path(path).exists():
        raise InputError(f"{path}: no such file")
    affine, dims = np.eye(4), (1, 1, 1)
    if reference is not None:
        if isinstance(reference, (str, os.PathLike)):
            from .images import load_nifti

            data, affine = load_nifti(reference, ndim=(3, 4), what="reference image")
            dims = data.shape[:3]
        else:
            affine, dims = reference.affine, reference.shape[:3]
    try:
        tractogram = _read(str(path), fmt)
    except InputError:
        raise
    except Exception as exc:  # each format library raises its own types for a damaged file
        raise InputError(f"{path}: cannot read the {fmt} tractogram ({type(exc).__name__}: {exc})") from exc
    if fmt not in (".trk", ".trx"):
        tractogram.affine, tractogram.dimensions = np.asarray(affine, dtype=np.float64), tuple(dims)
    return tractogram


def _read(path: str, fmt: str) -> Tractogram:
    import torch

    affine, dims = np.eye(4), (1, 1, 1)
    if fmt in (".vtk", ".vtp"):
        from .polydata import read_polydata_file

        return read_polydata_file(path)
    if fmt == ".tck":
        data, lengths = read_tck(path)
        return Tractogram(torch.from_numpy(data), _lengths_to_offsets(torch.from_numpy(lengths)), affine, dims)
    if fmt == ".trk":
        from .trk import read_trk

        data, lengths, affine, dims, properties, scalars = read_trk(path)
        dps = {k: torch.from_numpy(v).reshape(len(lengths), -1).squeeze(1) for k, v in properties.items()}
        dpp = {k: torch.from_numpy(v).squeeze(-1) for k, v in scalars.items()}
    else:
        import trx.trx_file_memmap as tmm

        trx = tmm.load(path)
        try:
            affine = np.asarray(trx.header["VOXEL_TO_RASMM"], dtype=np.float64)
            dims = tuple(int(d) for d in trx.header["DIMENSIONS"])
            data = np.array(trx.streamlines.get_data(), dtype=np.float32)
            lengths = np.array(trx.streamlines._lengths, dtype=np.int64)
            dps = {k: torch.as_tensor(np.array(v)).reshape(len(lengths), -1).squeeze(1) for k, v in trx.data_per_streamline.items()}
            dpp = {k: torch.as_tensor(np.array(v.get_data())).squeeze(-1) for k, v in trx.data_per_vertex.items()}
        finally:
            trx.close()
    if "seed_index" in dps:
        dps["seed_index"] = dps["seed_index"].round().to(torch.int64)
    return Tractogram(torch.from_numpy(data.reshape(-1, 3)), _lengths_to_offsets(torch.from_numpy(lengths)),
                      affine, dims, dps, dpp)
