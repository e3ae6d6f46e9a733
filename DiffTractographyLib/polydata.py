"""Tractogram <-> vtkPolyData (one polyline cell per streamline), and .vtk/.vtp files.

Points stay in RAS mm. Files carry Slicer's coordinate tag (``SPACE=RAS`` in the legacy header, a
``SPACE`` field-data string for .vtp), which Slicer's model and fiber-bundle readers honour; untagged
tractography files are read as RAS by SlicerDMRI. Needs the ``vtk`` package (present in Slicer).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .streamlines import Tractogram, _lengths_to_offsets, as_numpy

SPACE_TAG = "SPACE=RAS"


def vtk_modules():
    """``vtk`` and ``vtk.util.numpy_support``, or an InputError saying how to get them."""
    try:
        import vtk
        from vtk.util import numpy_support
    except ImportError as exc:
        raise InputError("reading or writing .vtk/.vtp needs the 'vtk' package (pip install vtk)") from exc
    return vtk, numpy_support


def tractogram_to_polydata(tractogram: Tractogram):
    """A vtkPolyData with one polyline per streamline; per-point data become point arrays, per-streamline
    data cell arrays (9-component point arrays are what SlicerDMRI treats as tensors)."""
    vtk, ns = vtk_modules()
    points = np.ascontiguousarray(as_numpy(tractogram.points), dtype=np.float32)
    pd = vtk.vtkPolyData()
    vpoints = vtk.vtkPoints()
    vpoints.SetData(ns.numpy_to_vtk(points, deep=True))
    pd.SetPoints(vpoints)
    offsets = as_numpy(tractogram.offsets).astype(np.int64)
    cells = vtk.vtkCellArray()
    cells.SetData(ns.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  ns.numpy_to_vtkIdTypeArray(np.arange(len(points), dtype=np.int64), deep=True))
    pd.SetLines(cells)
    for name, value in tractogram.data_per_point.items():
        arr = ns.numpy_to_vtk(np.ascontiguousarray(as_numpy(value).reshape(len(points), -1)), deep=True)
        arr.SetName(name)
        pd.GetPointData().AddArray(arr)
    for name, value in tractogram.data_per_streamline.items():
        arr = ns.numpy_to_vtk(np.ascontiguousarray(as_numpy(value).reshape(len(tractogram), -1)), deep=True)
        arr.SetName(name)
        pd.GetCellData().AddArray(arr)
    return pd


def polydata_to_tractogram(pd) -> Tractogram:
    """The polyline cells of ``pd`` as a Tractogram (points as stored, assumed RAS mm)."""
    import torch

    vtk, ns = vtk_modules()
    n_points = pd.GetNumberOfPoints()
    points = ns.vtk_to_numpy(pd.GetPoints().GetData()).astype(np.float32) if n_points else np.zeros((0, 3), np.float32)
    lines = pd.GetLines()
    offsets = ns.vtk_to_numpy(lines.GetOffsetsArray()).astype(np.int64, copy=False) if lines.GetNumberOfCells() else np.zeros(1, np.int64)
    conn = ns.vtk_to_numpy(lines.GetConnectivityArray()).astype(np.int64, copy=False) if lines.GetNumberOfCells() else np.zeros(0, np.int64)
    if len(conn) == n_points and np.array_equal(conn, np.arange(n_points)):
        conn = slice(None)  # the cells list the points in order, as our writer and most tools store them
    n = len(offsets) - 1
    dps = {}
    for i in range(pd.GetCellData().GetNumberOfArrays()):
        arr = pd.GetCellData().GetArray(i)
        if arr is not None and arr.GetNumberOfTuples() == n:
            dps[arr.GetName()] = torch.from_numpy(ns.vtk_to_numpy(arr).copy())
    dpp = {}
    for i in range(pd.GetPointData().GetNumberOfArrays()):
        arr = pd.GetPointData().GetArray(i)
        if arr is not None and arr.GetName():
            dpp[arr.GetName()] = torch.from_numpy(ns.vtk_to_numpy(arr)[conn].copy())
    if "seed_index" in dps:
        dps["seed_index"] = dps["seed_index"].round().to(torch.int64)
    lengths = torch.from_numpy(np.diff(offsets))
    return Tractogram(torch.from_numpy(np.ascontiguousarray(points[conn])), _lengths_to_offsets(lengths), np.eye(4),
                      (1, 1, 1), dps, dpp)


def write_polydata_file(tractogram: Tractogram, path) -> None:
    """Write .vtk (legacy binary) or .vtp (XML with the arrays appended as raw, uncompressed bytes:
    larger than zlib-compressed, but written and read about ten times faster), tagged RAS."""
    vtk, _ = vtk_modules()
    pd = tractogram_to_polydata(tractogram)
    if Path(path).suffix.lower() == ".vtp":
        tag = vtk.vtkStringArray()
        tag.SetName("SPACE")
        tag.InsertNextValue("RAS")
        pd.GetFieldData().AddArray(tag)
        writer = vtk.vtkXMLPolyDataWriter()
        writer.SetDataModeToAppended()  # the arrays as raw bytes after the XML: written and read at disk speed
        writer.EncodeAppendedDataOff()
        writer.SetCompressorTypeToNone()
    else:
        writer = vtk.vtkPolyDataWriter()
        writer.SetHeader(f"DiffTractography output. {SPACE_TAG}")
        writer.SetFileTypeToBinary()
    writer.SetFileName(str(path))
    writer.SetInputData(pd)
    if not writer.Write():
        raise InputError(f"{path}: vtk could not write the file")


def read_polydata_file(path) -> Tractogram:
    """Read a .vtk/.vtp tractography file into RAS mm (an explicit ``SPACE=LPS`` tag is honoured);
    a file vtk cannot read is an InputError."""
    vtk, _ = vtk_modules()
    xml = Path(path).suffix.lower() == ".vtp"
    reader = vtk.vtkXMLPolyDataReader() if xml else vtk.vtkPolyDataReader()
    errors = []
    reader.AddObserver(vtk.vtkCommand.ErrorEvent, lambda *_: errors.append(True))
    reader.GetExecutive().AddObserver(vtk.vtkCommand.ErrorEvent, lambda *_: errors.append(True))
    reader.SetFileName(str(path))
    shown = vtk.vtkLogger.GetCurrentVerbosityCutoff()
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)  # a damaged file is said below, in one line
    try:
        reader.Update()
    finally:
        vtk.vtkLogger.SetStderrVerbosity(shown)
    if errors or (not xml and not reader.IsFilePolyData()):
        raise InputError(f"{path}: vtk cannot read it as polydata")
    pd = reader.GetOutput()
    if xml:
        tag = pd.GetFieldData().GetAbstractArray("SPACE")
        space = tag.GetValue(0) if tag is not None and tag.GetNumberOfValues() else "RAS"
    else:
        space = "LPS" if "SPACE=LPS" in (reader.GetHeader() or "") else "RAS"
    t = polydata_to_tractogram(pd)
    if "LPS" in space:
        t.points = t.points * t.points.new_tensor([-1.0, -1.0, 1.0])
    return t
