"""Planning in the MRML scene: a bundle's density map as a volume node, its distance to a lesion as
a per-point array, a summary and optionally a bundle of the streamlines within a margin, and seeds
refined by gradient into a new fiducial node.

Runs on a plain ``vtkMRMLScene`` (``slicer-core``) as in Slicer. Input nodes are not modified; the
lesion distance is added, as a point array, to the bundle node it measures (what SlicerDMRI colours by).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..mrml import (DWI_NODE, box_from_node, bundle_node, control_points, dwi_from_node, mask_from_node,
                    node_affine, node_to_world, region_from_node, seeds_from_node, setup, volume_node)
from ..streamlines import Tractogram

#: name of the per-point lesion distance array (mm, negative inside the lesion)
DISTANCE_ARRAY = "lesion_distance"


def bundle_tractogram(node) -> Tractogram:
    """The streamlines of a fiber bundle or model node in world RAS mm (its parent transform applied)."""
    from ..polydata import polydata_to_tractogram

    polydata = node.GetPolyData() if node is not None else None
    if polydata is None or polydata.GetNumberOfLines() == 0:
        raise InputError(f"the bundle {node.GetName() if node else '(none)'} has no streamlines")
    tractogram = polydata_to_tractogram(polydata)
    to_world = node_to_world(node)
    if not np.allclose(to_world, np.eye(4)):
        import torch

        points = tractogram.points.double() @ torch.from_numpy(to_world[:3, :3].T) + torch.from_numpy(to_world[:3, 3])
        tractogram = Tractogram(points.float(), tractogram.offsets, data_per_streamline=tractogram.data_per_streamline)
    return tractogram


def density_node(scene, bundleNode, templateNode, *, precise: bool = False, endpoints: bool = False,
                 step_size: float | None = None, name: str | None = None):
    """A new scalar volume node on ``templateNode``'s grid: streamlines of ``bundleNode`` per voxel
    (tckmap's counts), mm per voxel with ``precise``, or endpoints per voxel; ``step_size`` (mm)
    sets tckmap's upsampling ratio (default: no upsampling, as tckmap for a file without one)."""
    from .density import density_map

    tractogram = bundle_tractogram(bundleNode)
    image = templateNode.GetImageData() if templateNode is not None else None
    if image is None:
        raise InputError("the density template must be a volume node holding an image")
    shape = image.GetDimensions()
    affine = node_affine(templateNode)
    values = density_map(tractogram.points.numpy(), tractogram.lengths.numpy(), shape, affine,
                         step_size=step_size, precise=precise, endpoints=endpoints)
    what = "length" if precise else "endpoints" if endpoints else "density"
    return volume_node(scene, values.astype(np.float32), affine, name=name or f"{bundleNode.GetName()} {what}")


@dataclass
class LesionReport:
    """A bundle's distance to a lesion (mm; negative inside it).

    minimum: the nearest point of any streamline; robust: the 1st percentile over streamlines of
    each streamline's nearest point (one stray streamline cannot set it); within_margin: streamlines
    that come within ``margin`` mm; near_node: those streamlines as a bundle node (``split``) or None.
    """
    minimum: float
    robust: float
    within_margin: int
    streamlines: int
    margin: float
    near_node: object = None


def lesion_distance(scene, bundleNode, lesionNode, *, margin: float = 5.0, segments: list[str] | None = None,
                    split: bool = False) -> LesionReport:
    """Signed distance of every point of ``bundleNode`` to the surface of ``lesionNode`` (label map or
    segmentation, ``segments`` default all): stored on the bundle as the point array ``lesion_distance``
    (shown as its colour), summarised, and with ``split`` the streamlines within ``margin`` mm put
    into a new bundle node."""
    import torch

    from .distance import LesionSurface

    if not margin >= 0:
        raise InputError("the margin must be a distance in mm, 0 or more")
    tractogram = bundle_tractogram(bundleNode)
    surface = LesionSurface(*mask_from_node(lesionNode, segments))
    per_point = surface.signed(tractogram.points.numpy())
    owner = np.repeat(np.arange(len(tractogram)), tractogram.lengths.numpy())
    nearest = np.full(len(tractogram), np.inf)
    np.minimum.at(nearest, owner, per_point)
    _add_point_array(bundleNode, per_point)
    near = np.flatnonzero(nearest <= margin)
    report = LesionReport(float(nearest.min()), float(np.percentile(nearest, 1)), len(near), len(tractogram), margin)
    if split and len(near):
        report.near_node = bundle_node(scene, tractogram.subset(torch.from_numpy(near)),
                                       name=f"{bundleNode.GetName()} within {margin:g} mm of {lesionNode.GetName()}")
    return report


def envelope_node(scene, inputNode, seedNode, *, repeats: int = 20, method: str = "wild", lesion=None, mask=None,
                  include=None, exclude=None, seeds_per_voxel: int = 1, seeds_per_point: int = 100,
                  seed_radius: float = 2.5, sh_basis: str = "tournier07", name: str | None = None, progress=None,
                  **parameters):
    """The uncertainty envelope of the bundle tracked from ``seedNode`` (``planning.envelope``):
    ``repeats`` runs on a wild bootstrap of the DWI node (``wild``) or with fresh probabilistic
    draws on the FOD node (``prob``); the bundle is what passes ``include``/``exclude``. Adds the
    visitation-probability volume (share of repeats visiting each voxel, on the input's grid) and
    returns (that node, ``Envelope``: with a ``lesion`` node, the distance percentiles over repeats)."""
    from ..fields import DWIField
    from .distance import LesionSurface
    from .envelope import envelope

    if method == "wild" and (inputNode is None or not inputNode.IsA(DWI_NODE)):
        raise InputError("the wild bootstrap resamples a DWI: choose a diffusion-weighted volume as input")
    if method == "prob":
        parameters.setdefault("algorithm", "prob")
    dwi = dwi_from_node(inputNode) if method == "wild" else None  # the node's signal is read once
    prepared = setup(inputNode, mask, include, exclude, sh_basis, None, parameters,
                     field=None if dwi is None else DWIField.from_dwi(dwi))
    seeds = seeds_from_node(seedNode, voxel_volume=abs(np.linalg.det(prepared.field.affine[:3, :3])),
                            seeds_per_voxel=seeds_per_voxel, seeds_per_point=seeds_per_point, seed_radius=seed_radius,
                            rng_seed=prepared.params.rng_seed)
    source = dwi if dwi is not None else prepared.field
    result = envelope(source, seeds, prepared.params, repeats=repeats, method=method, include=prepared.include,
                      exclude=prepared.exclude, lesion=LesionSurface(*mask_from_node(lesion)) if lesion else None,
                      mask=prepared.stop, rng_seed=prepared.params.rng_seed, progress=progress)
    node = volume_node(scene, result.probability, result.affine,
                       name=name or f"{seedNode.GetName()} visitation probability")
    return node, result


def start_region(seedNode, algorithm: str, seed_radius: float):
    """The region seeds of ``seedNode`` are drawn in: its ROI box, the balls of ``seed_radius`` mm
    about its control points, or its label map / segmentation."""
    from ..selection import AnyOf, Sphere

    if seedNode is not None and seedNode.IsA("vtkMRMLMarkupsROINode"):
        return box_from_node(seedNode)
    if seedNode is not None and seedNode.IsA("vtkMRMLMarkupsNode"):
        return AnyOf(tuple(Sphere(tuple(p), seed_radius) for p in control_points(seedNode)))
    return region_from_node(seedNode, algorithm)


def refine_seeds(scene, inputNode, seedNode, targetNode, avoidNode=None, *, mask=None, seeds_per_voxel: int = 1,
                 seeds_per_point: int = 100, seed_radius: float = 2.5, sh_basis: str = "tournier07",
                 iterations: int = 30, step: float = 0.5, name: str | None = None, progress=None, **parameters):
    """Seeds of ``seedNode`` (drawn as ``mrml.run`` draws them) moved by gradient descent through the
    tracker (``planning.optimise_seeds``) so that their streamlines reach ``targetNode`` and avoid
    ``avoidNode`` (region nodes: label map, segmentation or ROI), staying in the seed region. Writes
    them to a new fiducial node (the seed node is not modified); returns (node, ``SeedResult``).
    Track exactly these seeds with one seed per point and a seed radius of 0."""
    from .seeds import optimise_seeds

    if targetNode is None:
        raise InputError("choose a target region: the streamlines of the refined seeds should reach it")
    prepared = setup(inputNode, mask, targetNode, avoidNode, sh_basis, None, parameters)
    params, field = prepared.params, prepared.field
    seeds = seeds_from_node(seedNode, voxel_volume=abs(np.linalg.det(field.affine[:3, :3])),
                            seeds_per_voxel=seeds_per_voxel, seeds_per_point=seeds_per_point, seed_radius=seed_radius,
                            rng_seed=params.rng_seed)
    result = optimise_seeds(field, seeds, start_region(seedNode, params.algorithm, seed_radius),
                            prepared.include[0], prepared.exclude, params, mask=prepared.stop,
                            iterations=iterations, step=step, progress=progress)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                   scene.GenerateUniqueName(name or f"{seedNode.GetName()} refined"))
    from ..polydata import vtk_modules

    vtk, ns = vtk_modules()
    points = vtk.vtkPoints()
    points.SetData(ns.numpy_to_vtk(np.ascontiguousarray(result.seeds), deep=True))
    node.SetControlPointPositionsWorld(points)
    return node, result


def _add_point_array(node, values: np.ndarray) -> None:
    """Put ``values`` (one per point, in the polydata's cell order) on the node's polydata as
    ``DISTANCE_ARRAY`` and colour the node's displays by it."""
    from ..polydata import vtk_modules

    _, ns = vtk_modules()
    polydata = node.GetPolyData()
    conn = ns.vtk_to_numpy(polydata.GetLines().GetConnectivityArray())
    stored = np.zeros(polydata.GetNumberOfPoints(), np.float32)
    stored[conn] = values
    array = ns.numpy_to_vtk(stored, deep=True)
    array.SetName(DISTANCE_ARRAY)
    polydata.GetPointData().RemoveArray(DISTANCE_ARRAY)
    polydata.GetPointData().AddArray(array)
    polydata.Modified()
    for i in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(i)
        if hasattr(display, "SetColorModeToScalarData"):      # SlicerDMRI's fiber bundle displays
            display.SetColorModeToScalarData()
        display.SetActiveScalarName(DISTANCE_ARRAY)
        display.SetScalarVisibility(True)
