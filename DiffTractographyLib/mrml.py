"""MRML nodes <-> the library: what the Slicer module tracks from, and where the streamlines go.

Runs on a plain ``vtkMRMLScene`` (PyPI ``slicer-core``) as well as inside Slicer. vtk and MRML
classes are imported inside the functions that use them; nothing else of Slicer is.

Conventions: volume arrays come out in voxel order (i, j, k) as new arrays, never views into a
node (Slicer stores images k, j, i); every affine maps voxel indices to **world RAS mm**, i.e. the
node's IJKToRAS followed by its parent transform when that is linear; every direction and point is
in world RAS. No function here changes an input node.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from .config import TrackingParams, reference_rule
from .dwi import DWI
from .errors import InputError
from .geometry import as_affine, axes_rotation
from .polydata import vtk_modules as _vtk
from .tracking.algorithms import DEFAULT_FOR, algorithm

#: fibers a bundle node displays before SlicerDMRI subsamples (its own threshold); the ratio is set
#: on every write, so a node reused after a large run shows all of a smaller one
SHOWN_FIBERS = 10_000
FIBER_BUNDLE = "vtkMRMLFiberBundleNode"
DWI_NODE = "vtkMRMLDiffusionWeightedVolumeNode"
DTI_NODE = "vtkMRMLDiffusionTensorVolumeNode"

#: The noise-free acquisition a DTI node is turned into for tensordet: one b=0 image and six
#: non-coplanar directions at b = 1000 s/mm^2. Seven images fix the six tensor elements and S0, so
#: Tensor_Det's least-squares fit returns the node's tensors exactly at voxel centres.
TENSOR_BVALUE = 1000.0
_TENSOR_DIRECTIONS = np.array([[1, 0, 1], [-1, 0, 1], [0, 1, 1], [0, 1, -1], [1, 1, 0], [-1, 1, 0]]) / np.sqrt(2)

def _array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _name(node) -> str:
    return f"'{node.GetName()}'" if node is not None else "no node"


def _rotation(linear: np.ndarray) -> np.ndarray:
    """The orthogonal factor of a 3x3 linear map (polar decomposition): how it turns directions."""
    u, _, vt = np.linalg.svd(linear)
    return u @ vt


def node_to_world(node) -> np.ndarray:
    """(4, 4) node coordinates -> world RAS: the node's parent transforms (identity without one).
    InputError for a non-linear transform: harden it in Slicer first."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(f"{_name(node)} is under the non-linear transform {_name(transform)}; harden the "
                         "transform (Data module, right-click the node) and run again")
    vtk, _ = _vtk()
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _array(matrix)


def node_affine(node) -> np.ndarray:
    """(4, 4) voxel index -> world RAS mm of a volume node: IJKToRAS, then its parent transform."""
    vtk, _ = _vtk()
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    return node_to_world(node) @ _array(ijk_to_ras)


def volume_arrays(node) -> tuple[np.ndarray, np.ndarray]:
    """Voxel values of a volume node as a new (X, Y, Z) or (X, Y, Z, C) array, and its affine."""
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"the volume {_name(node)} holds no image data")
    _, ns = _vtk()
    x, y, z = image.GetDimensions()
    kji = ns.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z, y, x, -1)
    data = np.array(kji.transpose(2, 1, 0, 3))
    return (data[..., 0] if data.shape[-1] == 1 else data), node_affine(node)


def _vtk_matrix(array):
    vtk, _ = _vtk()
    matrix = vtk.vtkMatrix4x4()
    matrix.DeepCopy(np.asarray(array, dtype=np.float64).ravel())
    return matrix


def volume_node(scene, data: np.ndarray, affine, class_name: str = "vtkMRMLScalarVolumeNode", name: str = "volume"):
    """A new volume node of ``class_name`` holding (X, Y, Z) or (X, Y, Z, C) ``data`` (copied) on
    the voxel -> RAS ``affine``."""
    vtk, ns = _vtk()
    values = np.asarray(data)
    x, y, z = values.shape[:3]
    kji = np.ascontiguousarray(values.reshape(x, y, z, -1).transpose(2, 1, 0, 3).reshape(x * y * z, -1))
    image = vtk.vtkImageData()
    image.SetDimensions(x, y, z)
    image.GetPointData().SetScalars(ns.numpy_to_vtk(kji, deep=True))
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(_vtk_matrix(as_affine(affine)))
    return node


def dwi_node(scene, dwi: DWI, name: str = "DWI"):
    """A new vtkMRMLDiffusionWeightedVolumeNode holding ``dwi`` with its gradients in RAS (identity
    measurement frame); ``dwi_from_node`` gives ``dwi`` back."""
    node = volume_node(scene, dwi.data, dwi.affine, DWI_NODE, name)
    node.SetNumberOfGradients(len(dwi.bvals))
    for i, (b, g) in enumerate(zip(dwi.bvals, dwi.bvecs)):
        node.SetBValue(i, float(b))
        node.SetDiffusionGradient(i, [float(v) for v in g])
    node.SetMeasurementFrameMatrix(_vtk_matrix(np.eye(4)))
    return node


def _require(node, class_name: str, what: str) -> None:
    if node is None or not node.IsA(class_name):
        raise InputError(f"{what} must be a {class_name}, got {node.GetClassName() if node else 'nothing'}")


def _measurement_frame(node) -> np.ndarray:
    vtk, _ = _vtk()
    matrix = vtk.vtkMatrix4x4()
    node.GetMeasurementFrameMatrix(matrix)
    return _array(matrix)[:3, :3]


def dwi_from_node(node) -> DWI:
    """A vtkMRMLDiffusionWeightedVolumeNode as a ``DWI``: the signal (X, Y, Z, G) float32, the
    affine, the b-values as stored, and the gradients in world RAS, ``g = R MF g_node``.

    MF, the node's measurement frame, maps gradient coordinates to RAS (Slicer's NRRD reader already
    negates the rows of an LPS frame); R is the rotation of a linear parent transform. Slicer's NRRD
    reader derives each b-value as ``b_ref |g|^2 / max |g|^2`` in floating point, so b = 1000 can
    read back as 999.99995: b-values are passed on unrounded and grouped into shells with tolerance.
    """
    _require(node, DWI_NODE, "the DWI input")
    _, ns = _vtk()
    data, affine = volume_arrays(node)
    n = node.GetNumberOfGradients()
    if data.ndim != 4 or data.shape[3] != n:
        raise InputError(f"the DWI {_name(node)} has {data.shape[3] if data.ndim == 4 else 1} images but "
                         f"{n} gradients")
    gradients = ns.vtk_to_numpy(node.GetDiffusionGradients()).reshape(n, 3).astype(np.float64)
    bvals = ns.vtk_to_numpy(node.GetBValues()).astype(np.float64)
    to_world = _rotation(node_to_world(node)[:3, :3]) @ _measurement_frame(node)
    return DWI(data.astype(np.float32, copy=False), affine, bvals, gradients @ to_world.T)


def tensors_from_node(node) -> tuple[np.ndarray, np.ndarray]:
    """A vtkMRMLDiffusionTensorVolumeNode as tensors (X, Y, Z, 3, 3) float64 in world RAS (mm^2/s)
    and the affine. Slicer keeps tensor components in the node's measurement frame (its NRRD reader
    turns them to the voxel axes and sets MF to that rotation): ``D = R MF D_node MF^T R^T``."""
    _require(node, DTI_NODE, "the DTI input")
    image = node.GetImageData()
    tensors = image.GetPointData().GetTensors() if image is not None else None
    if tensors is None:
        raise InputError(f"the DTI volume {_name(node)} holds no tensors")
    _, ns = _vtk()
    x, y, z = image.GetDimensions()
    d = np.array(ns.vtk_to_numpy(tensors).reshape(z, y, x, 3, 3).transpose(2, 1, 0, 3, 4), dtype=np.float64)
    r = _rotation(node_to_world(node)[:3, :3]) @ _measurement_frame(node)
    return r @ d @ r.T, node_affine(node)


def dwi_from_tensors(tensors: np.ndarray, affine) -> DWI:
    """The noise-free DWI that (X, Y, Z, 3, 3) RAS ``tensors`` (mm^2/s) predict with S0 = 1 on the
    ``TENSOR_BVALUE`` acquisition: how a DTI node is tracked by tensordet."""
    bvecs = np.vstack([np.zeros(3), _TENSOR_DIRECTIONS])
    bvals = np.r_[0.0, np.full(len(_TENSOR_DIRECTIONS), TENSOR_BVALUE)]
    adc = np.einsum("gi,...ij,gj->...g", bvecs, tensors, bvecs)
    return DWI(np.exp(-bvals * adc).astype(np.float32), affine, bvals, bvecs)


def default_algorithm(node) -> str:
    """The default algorithm of the field kind: DWI and DTI nodes (tensordet), SH-coefficient volumes
    (sdstream)."""
    return DEFAULT_FOR["dwi" if node is not None and (node.IsA(DWI_NODE) or node.IsA(DTI_NODE)) else "fod"]


def field_from_node(node, sh_basis: str = "tournier07", sh_frame: str | None = None, device=None):
    """The field to track on: a ``DWIField`` for a DWI or DTI node, an ``SHField`` for a volume
    whose components are SH coefficients (a vector volume; ``sh_basis``/``sh_frame`` as
    ``fields.SHField``), float32 on ``device``."""
    import torch

    from .fields import DWIField, SHField

    if node is None:
        raise InputError("choose an input volume: a DWI, a DTI or an SH-coefficient volume")
    if node.IsA(DWI_NODE):
        return DWIField.from_dwi(dwi_from_node(node), device=device)
    if node.IsA(DTI_NODE):
        return DWIField.from_dwi(dwi_from_tensors(*tensors_from_node(node)), device=device)
    coeffs, affine = volume_arrays(node)
    if coeffs.ndim != 4:
        raise InputError(f"{_name(node)} has one value per voxel; an FOD needs one component per SH coefficient")
    field = SHField(torch.as_tensor(coeffs, dtype=torch.float32, device=device), affine, sh_basis, sh_frame)
    turn = _rotation(node_to_world(node)[:3, :3])
    if field.frame == "world" and not np.allclose(turn, np.eye(3), atol=1e-6):
        raise InputError(f"{_name(node)} is under a rotating transform and its SH directions are in the world "
                         "frame; harden the transform with an FOD-aware tool first")
    return field


def segment_ids(node) -> list[str]:
    """All segment IDs of a segmentation node, in order."""
    vtk, _ = _vtk()
    ids = vtk.vtkStringArray()
    node.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


def mask_from_node(node, segments: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A region node as a boolean (X, Y, Z) mask on its own grid and that grid's affine: a label map
    or scalar volume (non-zero voxels) or a segmentation (the union of ``segments``, default all)."""
    if node is not None and node.IsA("vtkMRMLSegmentationNode"):
        return _segments_mask(node, segments)
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA(DWI_NODE) or node.IsA(DTI_NODE):
        raise InputError(f"a region must be a label map or a segmentation, got {_name(node)}")
    data, affine = volume_arrays(node)
    if data.ndim != 3:
        raise InputError(f"the region {_name(node)} has several components; use a label map")
    return data != 0, affine


def _segments_mask(node, segments):
    from slicer import vtkOrientedImageData, vtkSegmentation

    vtk, ns = _vtk()
    segmentation = node.GetSegmentation()
    if not segmentation.ContainsRepresentation("Binary labelmap"):
        raise InputError(f"the segmentation {_name(node)} has no binary labelmap; create it in the "
                         "Segmentations module (Representations) and run again")
    chosen = segments if segments is not None else segment_ids(node)
    unknown = [s for s in chosen if segmentation.GetSegment(s) is None]
    if unknown or not chosen:
        raise InputError(f"the segmentation {_name(node)} has no segment {', '.join(unknown) or '(none chosen)'}")
    ids = vtk.vtkStringArray()
    for s in chosen:
        ids.InsertNextValue(s)
    merged = vtkOrientedImageData()
    node.GenerateMergedLabelmapForAllSegments(merged, vtkSegmentation.EXTENT_UNION_OF_EFFECTIVE_SEGMENTS, None, ids)
    x0, x1, y0, y1, z0, z1 = merged.GetExtent()
    if x1 < x0 or y1 < y0 or z1 < z0:
        raise InputError(f"the chosen segments of {_name(node)} are empty")
    labels = ns.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    image_to_world = vtk.vtkMatrix4x4()
    merged.GetImageToWorldMatrix(image_to_world)
    first_voxel = np.eye(4)
    first_voxel[:3, 3] = (x0, y0, z0)
    return labels.transpose(2, 1, 0) != 0, node_to_world(node) @ _array(image_to_world) @ first_voxel


def box_from_node(node):
    """A vtkMRMLMarkupsROINode as a ``selection.OrientedBox`` in world RAS (its rotation and parent
    transforms included; a transform that shears the box is refused)."""
    from .selection import OrientedBox

    _require(node, "vtkMRMLMarkupsROINode", "the ROI")
    box_to_world = _array(node.GetObjectToWorldMatrix())
    scale = np.linalg.norm(box_to_world[:3, :3], axis=0)
    return OrientedBox(tuple(box_to_world[:3, 3]), tuple(np.array(node.GetSize()) * scale),
                       tuple(map(tuple, axes_rotation(box_to_world))))


def control_points(node) -> np.ndarray:
    """(M, 3) world RAS positions of a markups node's placed control points, in order. A point still
    being placed (preview), unset or marked missing has no position to seed from and is left out."""
    p = [0.0, 0.0, 0.0]
    out = []
    for i in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(i) != node.PositionDefined:
            continue
        node.GetNthControlPointPositionWorld(i, p)
        out.append(list(p))
    return np.array(out, dtype=float).reshape(-1, 3)


def seeds_from_node(node, *, voxel_volume: float, seeds_per_voxel: int = 1, seed_placement: str = "random",
                    seeds_per_point: int = 100, seed_radius: float = 2.5, segments: list[str] | None = None,
                    rng_seed: int = 0) -> np.ndarray:
    """(N, 3) world RAS seeds from a seed node.

    Label map or segmentation: ``seeds_per_voxel`` in each voxel of the region (``seeding.seeds_from_mask``).
    Markups fiducials: ``seeds_per_point`` uniform in a ball of ``seed_radius`` mm around each control
    point. Markups ROI: uniform in the box, as many as ``seeds_per_voxel`` per ``voxel_volume`` (mm^3,
    the tracked image's voxel). All draws depend only on ``rng_seed`` (and the voxel or point).
    """
    from . import seeding

    if node is None:
        raise InputError("choose a seed node: a label map, a segmentation, a markups fiducial list or a markups ROI")
    if node.IsA("vtkMRMLMarkupsROINode"):
        box_to_world, size = _array(node.GetObjectToWorldMatrix()), np.array(node.GetSize())
        volume = abs(np.linalg.det(box_to_world[:3, :3])) * float(np.prod(size))
        count = max(1, round(seeds_per_voxel * volume / voxel_volume))
        return seeding.seeds_in_box(box_to_world, size, count, rng_seed)
    if node.IsA("vtkMRMLMarkupsNode"):
        points = control_points(node)
        if len(points) == 0:
            raise InputError(f"the markups {_name(node)} has no placed control points to seed around")
        return seeding.seeds_in_spheres(points, seed_radius, seeds_per_point, rng_seed)
    mask, affine = mask_from_node(node, segments)
    return seeding.seeds_from_mask(mask, affine, seeds_per_voxel, seed_placement, rng_seed)


def region_from_node(node, algorithm: str, segments: list[str] | None = None, device=None):
    """A mask, label map, segmentation or ROI node as a region with ``contains(points)``: a
    ``stopping.BinaryMask`` on the node's own grid (nearest voxel in RAS, the algorithm's rounding
    rule, as ``difftract track --mask``) or a ``selection.OrientedBox``."""
    if node.IsA("vtkMRMLMarkupsROINode"):
        return box_from_node(node)
    from .stopping import BinaryMask

    mask, affine = mask_from_node(node, segments)
    return BinaryMask(mask, affine, rule=reference_rule(algorithm), device=device)


def regions(nodes, algorithm: str, device=None) -> list:
    """``region_from_node`` of a node, a list of nodes, or None (no region)."""
    if nodes is None:
        return []
    listed = nodes if isinstance(nodes, (list, tuple)) else [nodes]
    return [region_from_node(n, algorithm, device=device) for n in listed]


def tracking_params(node, parameters: dict) -> TrackingParams:
    """``TrackingParams`` from keyword ``parameters`` (its field names); the algorithm defaults to
    ``default_algorithm(node)``. Unknown names are an InputError."""
    names = {f.name for f in dataclasses.fields(TrackingParams)}
    unknown = sorted(set(parameters) - names)
    if unknown:
        raise InputError(f"unknown parameter {', '.join(unknown)}; tracking takes {', '.join(sorted(names))} "
                         "besides the seeding, region and output options")
    return TrackingParams(**{"algorithm": default_algorithm(node), **parameters}).validate()


def bundle_node(scene, tractogram, node=None, name: str = "DiffTractography"):
    """Put ``tractogram`` (RAS mm) into ``node`` (its polydata is replaced) or into a new node: a
    vtkMRMLFiberBundleNode when the scene knows the class (SlicerDMRI is loaded), else a
    vtkMRMLModelNode with one polyline per streamline. Display nodes are created once."""
    from .polydata import tractogram_to_polydata

    if node is None:
        kind = FIBER_BUNDLE if scene.IsNodeClassRegistered(FIBER_BUNDLE) else "vtkMRMLModelNode"
        node = scene.AddNewNodeByClass(kind, scene.GenerateUniqueName(name))
    node.SetAndObservePolyData(tractogram_to_polydata(tractogram))
    if hasattr(node, "SetSubsamplingRatio"):  # a fiber bundle: show all, or SlicerDMRI's 10,000 of many
        node.SetSubsamplingRatio(min(1.0, SHOWN_FIBERS / max(len(tractogram), 1)))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def cluster_nodes(scene, tractogram, labels, colors, name: str = "DiffTractography clusters",
                  min_cluster_size: int = 1) -> tuple[int, list]:
    """One bundle node per cluster (``labels`` (N,) cluster index per streamline, -1 for none;
    ``colors`` (K, 3) RGB in 0..1 per cluster), solid-coloured, in a new subject-hierarchy folder
    ``name``. Clusters with fewer than ``min_cluster_size`` streamlines get no node. Returns
    (folder item ID, nodes)."""
    import torch

    from slicer import vtkMRMLSubjectHierarchyNode

    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if len(labels) != len(tractogram):
        raise InputError(f"{len(labels)} cluster labels for {len(tractogram)} streamlines")
    if len(labels) and (labels.min() < -1 or labels.max() >= len(colors)):
        raise InputError(f"cluster labels must lie in -1..{len(colors) - 1}, one colour per cluster")
    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), scene.GenerateUniqueName(name))
    nodes = []
    for k in range(len(colors)):
        members = np.flatnonzero(labels == k)
        if len(members) < max(min_cluster_size, 1):
            continue
        node = bundle_node(scene, tractogram.subset(torch.from_numpy(members)), name=f"{name} {k}")
        for i in range(node.GetNumberOfDisplayNodes()):
            display = node.GetNthDisplayNode(i)
            if hasattr(display, "SetColorModeToSolid"):
                display.SetColorModeToSolid()
            display.SetColor(*colors[k])
        item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(folder, node)
        hierarchy.SetItemParent(item, folder)
        nodes.append(node)
    return folder, nodes


class Setup(NamedTuple):
    """What ``run`` and ``InteractiveSeeding`` prepare from the nodes: the parameters, the field on
    the tracking device, the stopping region (or None) and the include / exclude regions."""
    params: TrackingParams
    field: object
    stop: object
    include: list
    exclude: list


def setup(inputNode, mask, include, exclude, sh_basis: str, sh_frame: str | None, parameters: dict,
          field=None) -> Setup:
    """``Setup`` from the nodes; ``field``: the input's field when the caller has read it already."""
    from .devices import resolve_device

    params = tracking_params(inputNode, parameters)
    device = resolve_device(params.device)
    field = field if field is not None else field_from_node(inputNode, sh_basis, sh_frame, device=device)
    stop = region_from_node(mask, params.algorithm, device=device) if mask is not None else None
    return Setup(params, field, stop, regions(include, params.algorithm, device),
                 regions(exclude, params.algorithm, device))


def run(scene, inputNode, seedNode, outputNode=None, *, mask=None, include=None, exclude=None,
        segment_ids: list[str] | None = None, seeds_per_voxel: int = 1, seed_placement: str = "random",
        seeds_per_point: int = 100, seed_radius: float = 2.5, sh_basis: str = "tournier07",
        sh_frame: str | None = None, cluster_threshold: float = 0.0, min_cluster_size: int = 1,
        name: str = "DiffTractography", progress: Callable[[int, int], None] | None = None,
        notice: Callable[[str], None] | None = None, **parameters):
    """Track from ``seedNode`` through ``inputNode`` and put the streamlines (world RAS) into
    ``outputNode`` or a new fiber bundle (model) node, which is returned. Input nodes are not modified.

    inputNode: DWI, DTI, or SH-coefficient vector volume (``sh_basis``, ``sh_frame``).
    seedNode: label map, segmentation (``segment_ids``, default all), markups fiducials
        (``seeds_per_point`` in a ball of ``seed_radius`` mm) or markups ROI; see ``seeds_from_node``.
    mask: stopping region (label map or segmentation). include / exclude: a region node or a list
        of them; streamlines must visit every include region and no exclude region.
    parameters: ``TrackingParams`` fields (algorithm, step_size mm, max_angle degrees, cutoff,
        min_length / max_length mm, device, rng_seed, ...). The algorithm defaults to tensordet for
        DWI/DTI input and sdstream for SH input.
    cluster_threshold: when positive, QuickBundles the result with this MDF threshold (mm) and also
        make one node per cluster of at least ``min_cluster_size`` streamlines (``cluster_nodes``).
    progress: called with (seeds done, seeds total) after each chunk; raise from it to cancel.
    notice: called with a one-line message before a long pause (the kernels' first compile).
    """
    from .models.dti import tensors_along
    from .selection import selected
    from .tracking import Tracker
    from .tracking.engine import COMPILING

    prepared = setup(inputNode, mask, include, exclude, sh_basis, sh_frame, parameters)
    params, field = prepared.params, prepared.field
    seeds = seeds_from_node(seedNode, voxel_volume=abs(np.linalg.det(as_affine(field.affine)[:3, :3])),
                            seeds_per_voxel=seeds_per_voxel, seed_placement=seed_placement,
                            seeds_per_point=seeds_per_point, seed_radius=seed_radius, segments=segment_ids,
                            rng_seed=params.rng_seed)
    tracker = Tracker(field, params, mask=prepared.stop)
    if notice is not None and tracker.needs_compiling():
        notice(COMPILING)
    tractogram = selected(tracker(seeds, progress=progress), prepared.include, prepared.exclude)
    if not algorithm(params.algorithm).tracks_fod:  # the DWI's tensors along the streamlines, for SlicerDMRI
        tractogram = tensors_along(tractogram, field)
    output = bundle_node(scene, tractogram, outputNode, name)
    if cluster_threshold > 0:
        labels, colors = _clusters(tractogram, cluster_threshold)
        cluster_nodes(scene, tractogram, labels, colors, f"{output.GetName()} clusters", min_cluster_size)
    return output


def _clusters(tractogram, threshold: float):
    """QuickBundles labels (N,) and colours (K, 3) in 0..1; a colour depends only on the cluster's index."""
    from .clustering import quickbundles

    clusters = quickbundles(tractogram, threshold)
    return clusters.labels.cpu().numpy(), clusters.colors().cpu().numpy() / 255.0


class InteractiveSeeding:
    """Interactive planning with a markups fiducial list: ``update()`` re-tracks only the seed balls
    of control points that moved or were added since the last update (``tracking.session``) and
    replaces the output node's polydata (``SetAndObservePolyData``). The field, mask and parameters
    are prepared once, as ``run`` prepares them, and stay on the tracking device.

    Streamlines of control point m carry ``seed_index`` in ``m * seeds_per_point + (0..seeds_per_point-1)``,
    as ``run`` numbers them. Per-point tensors are left out: fitting them at every point costs about
    half as much as the tracking itself, and a final ``run`` adds them.
    """

    def __init__(self, scene, inputNode, fiducialNode, outputNode=None, *, mask=None, include=None, exclude=None,
                 seeds_per_point: int = 100, seed_radius: float = 2.5, sh_basis: str = "tournier07",
                 sh_frame: str | None = None, name: str = "DiffTractography", **parameters):
        from .tracking import Tracker
        from .tracking.session import RetrackSession

        _require(fiducialNode, "vtkMRMLMarkupsFiducialNode", "interactive seeding")
        prepared = setup(inputNode, mask, include, exclude, sh_basis, sh_frame, parameters)
        tracker = Tracker(prepared.field, prepared.params, mask=prepared.stop)
        self.session = RetrackSession(tracker, seeds_per_point, seed_radius, include=prepared.include,
                                      exclude=prepared.exclude)
        self.scene, self.fiducials, self.outputNode, self.name = scene, fiducialNode, outputNode, name

    @property
    def tracker(self):
        return self.session.tracker

    def update(self) -> int:
        """Re-track the control points that changed; returns how many were re-tracked."""
        tractogram, changed = self.session.update(control_points(self.fiducials))
        self.outputNode = bundle_node(self.scene, tractogram, self.outputNode, self.name)
        return changed
