"""MRtrix3's image format (.mif, .mif.gz, .mih + data file), read and written as MRtrix3 3.0 does.

A text header (``mrtrix image`` ... ``END``) of ``key: value`` lines, then the raw voxels:

- ``dim`` / ``vox``: the size and voxel size (mm) of each axis;
- ``layout``: per axis, its rank in the file (0 varies fastest) and a sign (``-``: index 0 is stored
  last along that axis);
- ``datatype``: Bit (most significant bit first), [U]Int8, [U]Int16/32/64 and Float32/64 with LE/BE;
- ``scaling: offset,scale``: value = offset + scale x stored;
- ``transform``: three rows of a unit-column rotation and a translation: RAS mm = R diag(vox) ijk + t
  (a column that is not unit is normalised and its length moves into ``vox``, as MRtrix3 does);
- ``file: . OFFSET`` (data in the same file) or ``file: NAME [OFFSET]`` (a .mih's data file);
- ``dw_scheme``: one ``x,y,z,b`` line per volume, RAS directions (the DWI's gradient table).

Images come back in their header's axis order, as a NIfTI's do; the realignment MRtrix3 applies after
reading is done where tracking needs it (``geometry.realign_to_ras``).
"""
from __future__ import annotations

import gzip
import math
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

SUFFIXES = (".mif", ".mif.gz", ".mih")
MAGIC = "mrtrix image"
#: keys read as MRtrix3 reads them: case-insensitive, the last line wins
_SINGLE = ("dim", "vox", "layout", "datatype", "scaling")
_TYPES = {"bit": "bit", "int8": "i1", "uint8": "u1"}
_TYPES.update({f"{kind}{bits}{order}": f"{'<' if order == 'le' else '>'}{code}{bits // 8}"
               for kind, code in (("int", "i"), ("uint", "u"), ("float", "f"))
               for bits in ((16, 32, 64) if kind != "float" else (32, 64)) for order in ("le", "be")})


def is_mif(path) -> bool:
    """Whether ``path`` names an MRtrix3 image (.mif, .mif.gz or .mih)."""
    return str(path).lower().endswith(SUFFIXES)


@dataclass
class MifHeader:
    """An MRtrix3 image header: sizes, voxel sizes, layout, data type, scaling, voxel -> RAS affine, the
    data's file and offset, and the other keys (name -> lines)."""

    dim: tuple[int, ...]
    affine: np.ndarray
    layout: tuple[int, ...]
    datatype: str
    scaling: tuple[float, float] = (0.0, 1.0)
    data_file: Path | None = None
    offset: int = 0
    keys: dict[str, list[str]] = field(default_factory=dict)

    def stored_affine(self) -> np.ndarray:
        """Voxel -> RAS mm of the spatial axes in the order and direction the file stores them (fastest
        first, reversed axes turned back): the axes of FSL b-vectors given for this image, as MRtrix3
        reads them (``File::NIfTI::adjust_transform``)."""
        out = np.eye(4)
        out[:3, 3] = self.affine[:3, 3]
        for k, axis in enumerate(sorted(range(3), key=lambda a: abs(self.layout[a]))):
            column = self.affine[:3, axis]
            if self.layout[axis] < 0:
                out[:3, 3] += column * (self.dim[axis] - 1)
                column = -column
            out[:3, k] = column
        return out

    def dw_scheme(self) -> np.ndarray | None:
        """The ``dw_scheme`` gradient table (G, 4) (x, y, z RAS, b s/mm^2), or None."""
        rows = self.keys.get("dw_scheme")
        if not rows:
            return None
        try:
            table = np.array([[float(v) for v in row.split(",")] for row in rows])
        except ValueError as exc:
            raise InputError(f"dw_scheme: not a table of numbers ({exc})") from exc
        if table.ndim != 2 or table.shape[1] != 4:
            raise InputError(f"dw_scheme: rows must hold four numbers x,y,z,b, got {rows[0]!r}")
        return table


def read_header(path) -> MifHeader:
    """The header of a .mif, .mif.gz or .mih file (InputError naming the file when it is not one)."""
    path = Path(path)
    try:
        with (gzip.open if _gzipped(path) else open)(path, "rb") as stream:
            return _parse(_header_text(stream), path)
    except (OSError, EOFError, ValueError, OverflowError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read as an MRtrix image ({exc})") from exc


def read_mif(path) -> tuple[np.ndarray, MifHeader]:
    """(voxels in the header's axis order, as stored type or float64 when scaled; the header)."""
    header = read_header(path)
    path = Path(path)
    count = math.prod(header.dim)
    itemsize = 1 / 8 if header.datatype == "bit" else np.dtype(header.datatype).itemsize
    nbytes = math.ceil(count * itemsize)
    try:
        if _gzipped(path):
            with gzip.open(path, "rb") as stream:  # no more than the header says, whatever the file holds
                stream.seek(header.offset)
                raw = stream.read(nbytes)
        else:
            held = os.path.getsize(header.data_file) - header.offset
            if held < nbytes:
                raise InputError(f"{path}: the image data is truncated ({max(held, 0)} of {nbytes} bytes)")
            with open(header.data_file, "rb") as stream:
                stream.seek(header.offset)
                raw = stream.read(nbytes)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read the image data ({exc})") from exc
    if len(raw) < nbytes:
        raise InputError(f"{path}: the image data is truncated ({len(raw)} of {nbytes} bytes)")
    if header.datatype == "bit":
        flat = np.unpackbits(np.frombuffer(raw, np.uint8), count=count).astype(bool)
    else:
        flat = np.frombuffer(raw, header.datatype, count=count)
    data = _image_order(flat, header.dim, header.layout)
    offset, scale = header.scaling
    if (offset, scale) != (0.0, 1.0):
        data = offset + scale * data.astype(np.float64)
    return data, header


def mif_bytes(array, affine, description: str = "", compress: bool = False) -> bytes:
    """A float32 .mif file's bytes (gzip-compressed with ``compress``, for .mif.gz): the array's axes as
    stored (layout +0,+1,...), ``affine`` (voxel -> RAS mm) as transform and voxel sizes."""
    array = np.asarray(array, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    rotation = affine[:3, :3] / sizes
    vox = [*sizes.tolist(), *([1.0] * (array.ndim - 3))]
    lines = [MAGIC, "dim: " + ",".join(str(s) for s in array.shape), "vox: " + ",".join(repr(v) for v in vox),
             "layout: " + ",".join(f"+{a}" for a in range(array.ndim)), "datatype: Float32LE"]
    lines += [f"transform: {','.join(repr(float(v)) for v in (*rotation[r], affine[r, 3]))}" for r in range(3)]
    lines += [f"comments: {line}" for line in description.splitlines() if line.strip()]
    head = ("\n".join(lines) + "\nfile: . ").encode()
    offset = len(head) + 16
    offset += -offset % 4  # the data starts at a multiple of 4, as MRtrix3 writes it
    text = head + f"{offset}\nEND\n".encode()
    payload = text + bytes(offset - len(text)) + array.astype("<f4").tobytes(order="F")
    return gzip.compress(payload, compresslevel=6) if compress else payload


def _gzipped(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _header_text(stream) -> list[str]:
    """The header's lines up to END (or the end of the file); bytes that are not UTF-8 (in comments,
    say) are kept as they are, as MRtrix3 keeps them."""
    first = stream.readline(4096).decode("utf-8", "surrogateescape").strip()
    if not first.startswith(MAGIC):
        raise ValueError(f"it does not start with '{MAGIC}'")
    lines = []
    while True:
        line = stream.readline(1 << 20)
        if not line:
            return lines
        text = line.decode("utf-8", "surrogateescape").split("#", 1)[0].strip(" \t\r\n\0")
        if text == "END":
            return lines
        lines.append(text)


def _parse(lines: list[str], path: Path) -> MifHeader:
    values: dict[str, str] = {}
    transform: list[list[float]] = []
    keys: dict[str, list[str]] = {}
    data_file = None
    for line in lines:
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key, value = key.strip(), value.strip()
        if key.lower() in _SINGLE:
            values[key.lower()] = value
        elif key.lower() == "transform":
            transform.append([float(v) for v in value.split(",")])
        elif key == "file" and data_file is None:
            data_file = value
        else:
            keys.setdefault(key, []).append(value)
    for required in ("dim", "vox", "datatype"):
        if required not in values:
            raise ValueError(f"no '{required}' entry")
    dim = tuple(int(v) for v in values["dim"].split(","))
    if len(dim) < 3 or min(dim) < 1:
        raise ValueError(f"dim: {values['dim']} is not a 3-D or larger image")
    vox = [float(v) for v in values["vox"].split(",")][:3]
    if len(vox) < 3 or not all(math.isfinite(v) and v > 0 for v in vox):
        raise ValueError(f"vox: {values['vox']} has no finite positive voxel size for each spatial axis")
    layout = _layout(values.get("layout"), len(dim))
    datatype = values["datatype"].lower()
    if datatype not in _TYPES:
        unordered = re.fullmatch(r"(c?float|u?int)(16|32|64)", datatype)
        why = "it gives no byte order (LE or BE), and MRtrix3 cannot read it either" if unordered else \
            "real voxels with LE/BE byte order are read"
        raise ValueError(f"datatype {values['datatype']} is not supported: {why}")
    scaling = (0.0, 1.0)
    if "scaling" in values:
        scaling = tuple(float(v) for v in values["scaling"].split(","))
        if len(scaling) != 2 or not all(math.isfinite(v) for v in scaling):
            raise ValueError(f"scaling: {values['scaling']} is not two finite numbers offset,scale")
    if data_file is None:
        raise ValueError("no 'file' entry")
    name, *rest = data_file.split()
    offset = int(rest[0]) if rest else 0
    if offset < 0:
        raise ValueError(f"file: {data_file}: a negative offset")
    if name == ".":
        if offset <= 0:
            raise ValueError("'file: .' without the offset of the data")
        location = path
    elif _gzipped(path):
        raise ValueError(f"file: {data_file}: a .mif.gz holds its data itself ('file: . OFFSET'), as MRtrix3 requires")
    else:
        location = path.parent / name
    return MifHeader(dim, _affine(transform, vox, dim, path), layout, _TYPES[datatype], scaling, location, offset,
                     keys)


def _layout(text: str | None, ndim: int) -> tuple[int, ...]:
    """Signed file ranks (+-(rank + 1)) per axis from a ``layout`` entry (default +0,+1,...)."""
    if text is None:
        return tuple(range(1, ndim + 1))
    entries = [e.strip() for e in text.split(",")]
    if len(entries) != ndim or not all(re.fullmatch(r"[+-]\d+", e) for e in entries):
        raise ValueError(f"layout: {text} does not give a signed rank for each of the {ndim} axes")
    ranks = [int(e[1:]) for e in entries]
    if sorted(ranks) != list(range(ndim)):
        raise ValueError(f"layout: {text} is not a permutation of 0..{ndim - 1}")
    return tuple((r + 1) * (-1 if e[0] == "-" else 1) for e, r in zip(entries, ranks))


def _affine(transform: list[list[float]], vox: list[float], dim: tuple[int, ...], path: Path) -> np.ndarray:
    """Voxel -> RAS mm from the transform rows and voxel sizes (columns normalised as MRtrix3's
    ``Header::sanitise_transform``); without a transform, MRtrix3's default centred on the grid."""
    vox = np.asarray(vox, dtype=np.float64)
    if not transform:
        warnings.warn(f"{path}: no transform in the header; the image is centred on the scanner origin, as MRtrix3 "
                      "places it", stacklevel=4)
        rotation, translation = np.eye(3), -0.5 * (np.asarray(dim[:3]) - 1) * vox
    else:
        if len(transform) < 3 or any(len(row) != 4 for row in transform[:3]):
            raise ValueError("transform: three rows of four numbers expected")
        rows = np.asarray(transform[:3], dtype=np.float64)
        rotation, translation = rows[:, :3].copy(), rows[:, 3]
        lengths = np.linalg.norm(rotation, axis=0)
        if not (np.isfinite(rows).all() and (lengths > 0).all() and abs(np.linalg.det(rotation)) > 1e-6):
            raise ValueError("transform: the rows do not give finite, independent axis directions")
        off = np.abs(lengths - 1.0) > 1e-6
        rotation[:, off] /= lengths[off]
        vox = np.where(off, vox * lengths, vox)
    affine = np.eye(4)
    affine[:3, :3] = rotation * vox
    affine[:3, 3] = translation
    return affine


def _image_order(flat: np.ndarray, dim: tuple[int, ...], layout: tuple[int, ...]) -> np.ndarray:
    """The voxels of file order ``flat`` indexed by the header's axes (ranks and flips of ``layout``)."""
    order = sorted(range(len(dim)), key=lambda a: abs(layout[a]))  # fastest first
    slowest_first = order[::-1]
    data = flat.reshape([dim[a] for a in slowest_first]).transpose(np.argsort(slowest_first))
    flips = tuple(a for a in range(len(dim)) if layout[a] < 0)
    return np.flip(data, flips) if flips else data
