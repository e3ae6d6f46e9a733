"""``mrml.run`` and interactive seeding on real nodes: the DWI-node path tracks what the library
tracks on the equivalent NIfTI, inputs stay untouched, and a moved fiducial re-tracks only its seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("slicer")
pytestmark = pytest.mark.mrml

from DiffTractographyLib import mrml, seeding  # noqa: E402
from DiffTractographyLib.errors import InputError  # noqa: E402

FIBRE = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])  # RAS
CENTRE = (-1.0, 20.0, 47.0)  # RAS mm, inside the oblique 12^3 grid


def acquisition(n_dirs: int = 20):
    """b=0 plus ``n_dirs`` directions at b = 1000 s/mm^2 (unit RAS vectors, a fixed spread)."""
    g = np.random.default_rng(11).normal(size=(n_dirs, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.r_[0.0, np.full(n_dirs, 1000.0)], np.vstack([np.zeros(3), g])


def fibre_signal(shape, bvals, bvecs) -> np.ndarray:
    """A single fibre population along FIBRE everywhere (prolate tensor, S0 = 1000)."""
    d = 0.3e-3 * np.eye(3) + 1.4e-3 * np.outer(FIBRE, FIBRE)
    signal = 1000.0 * np.exp(-bvals * np.einsum("gi,ij,gj->g", bvecs, d, bvecs))
    return np.broadcast_to(signal.astype(np.float32), (*shape, len(bvals))).copy()


@pytest.fixture
def dwi_inputs(scene, build, oblique_affine, rotate):
    """(DWI node with a rotated measurement frame, fiducial node with two points, RAS gradients)."""
    bvals, bvecs = acquisition()
    mf = rotate([2, -1, 1], 50.0)
    node = build.dwi(scene, fibre_signal((12, 12, 12), bvals, bvecs), oblique_affine, bvals, bvecs @ mf, mf)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    points.AddControlPoint(list(CENTRE))
    points.AddControlPoint([CENTRE[0] + 6.0, CENTRE[1] - 4.0, CENTRE[2] + 2.0])
    return node, points, bvals, bvecs


def test_run_tracks_along_the_fibre_in_ras_and_leaves_the_inputs_unchanged(scene, build, dwi_inputs):
    dwi, points, _, _ = dwi_inputs
    before = build.checksum(dwi), build.checksum(points)

    bundle = mrml.run(scene, dwi, points, seeds_per_point=15, seed_radius=1.5, step_size=0.5, device="cpu")

    assert (build.checksum(dwi), build.checksum(points)) == before
    assert bundle.GetClassName() == "vtkMRMLModelNode"
    polydata = bundle.GetPolyData()
    assert polydata.GetNumberOfLines() == 30
    from DiffTractographyLib.polydata import polydata_to_tractogram

    for line in polydata_to_tractogram(polydata).numpy_streamlines():
        chord = line[-1] - line[0]
        assert abs(chord @ FIBRE) / np.linalg.norm(chord) > 1 - 1e-6
    fa = polydata.GetPointData().GetArray("FA")
    assert fa.GetRange() == pytest.approx((0.799, 0.799), abs=1e-3)  # eigenvalues 1.7, 0.3, 0.3 um^2/ms
    assert polydata.GetPointData().GetArray("tensor").GetNumberOfComponents() == 9


def test_dwi_node_tracks_the_same_streamlines_as_the_equivalent_dwi_arrays(scene, dwi_inputs, oblique_affine):
    from DiffTractographyLib.dwi import DWI
    from DiffTractographyLib.fields import DWIField
    from DiffTractographyLib.tracking import track

    dwi_node, points, bvals, bvecs = dwi_inputs
    reference = DWI(fibre_signal((12, 12, 12), bvals, bvecs), oblique_affine, bvals, bvecs)
    seeds = seeding.seeds_in_spheres(mrml.control_points(points), 1.5, 10, rng_seed=3)

    options = dict(rng_seed=3, step_size=0.5, device="cpu")
    ours = mrml.run(scene, dwi_node, points, seeds_per_point=10, seed_radius=1.5, **options)
    theirs = track(DWIField.from_dwi(reference), seeds, algorithm="tensordet", **options)

    from DiffTractographyLib.polydata import polydata_to_tractogram

    mine = polydata_to_tractogram(ours.GetPolyData())
    assert len(mine) == len(theirs) == 20
    np.testing.assert_array_equal(mine.lengths.numpy(), theirs.lengths.numpy())
    np.testing.assert_allclose(mine.points.numpy(), theirs.points.numpy(), atol=1e-4)


def test_exclude_roi_drops_the_streamlines_that_cross_it(scene, dwi_inputs):
    dwi, points, _, _ = dwi_inputs
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "no-go")
    roi.SetCenter(*(np.array(CENTRE) + 6.0 * FIBRE))
    roi.SetSize(4.0, 4.0, 4.0)

    options = dict(seeds_per_point=10, seed_radius=1.0, step_size=0.5, device="cpu")
    kept = mrml.run(scene, dwi, points, exclude=roi, **options)
    through = mrml.run(scene, dwi, points, include=roi, **options)

    assert kept.GetPolyData().GetNumberOfLines() + through.GetPolyData().GetNumberOfLines() == 20
    assert kept.GetPolyData().GetNumberOfLines() == 10  # the second point's bundle passes beside the box


def test_unknown_parameters_are_refused_in_one_line(scene, dwi_inputs):
    dwi, points, _, _ = dwi_inputs
    with pytest.raises(InputError, match="unknown parameter stepsize; tracking takes"):
        mrml.run(scene, dwi, points, stepsize=0.5)


def test_moving_a_fiducial_retracks_only_its_seeds_and_updates_the_node_in_place(scene, build, dwi_inputs):
    dwi, points, _, _ = dwi_inputs
    session = mrml.InteractiveSeeding(scene, dwi, points, seeds_per_point=12, seed_radius=1.5, step_size=0.5,
                                      device="cpu")
    assert session.update() == 2
    node = session.outputNode
    first = node.GetPolyData()
    from DiffTractographyLib.polydata import polydata_to_tractogram

    before = polydata_to_tractogram(first)
    assert session.update() == 0

    points.SetNthControlPointPosition(1, CENTRE[0] + 5.0, CENTRE[1] - 3.0, CENTRE[2] + 2.0)
    assert session.update() == 1

    after = polydata_to_tractogram(node.GetPolyData())
    assert session.outputNode is node and node.GetPolyData() is not first
    assert scene.GetNumberOfNodesByClass("vtkMRMLModelNode") == 1
    owner = lambda t: t.seed_index.numpy() // 12  # noqa: E731
    unmoved = torch.from_numpy(np.flatnonzero(owner(before) == 0))
    np.testing.assert_array_equal(after.subset(torch.from_numpy(np.flatnonzero(owner(after) == 0))).points.numpy(),
                                  before.subset(unmoved).points.numpy())
    moved = after.subset(torch.from_numpy(np.flatnonzero(owner(after) == 1)))
    seeds = seeding.seeds_in_spheres(mrml.control_points(points)[1:], 1.5, 12, indices=[1])
    assert len(moved) == 12
    for line, seed in zip(moved.numpy_streamlines(), seeds):
        assert np.linalg.norm(line - seed, axis=1).min() < 1e-5  # every streamline passes through its seed
    # a seed's random draws are keyed by its number in ``run``: the session shows what ``run`` tracks,
    # whichever points moved together
    full = polydata_to_tractogram(mrml.run(scene, dwi, points, seeds_per_point=12, seed_radius=1.5, step_size=0.5,
                                           device="cpu").GetPolyData())
    np.testing.assert_array_equal(after.seed_index.numpy(), full.seed_index.numpy())
    np.testing.assert_array_equal(after.lengths.numpy(), full.lengths.numpy())
    np.testing.assert_allclose(after.points.numpy(), full.points.numpy(), atol=1e-5)  # batch size: a few ulps


def test_clustering_makes_one_coloured_node_per_cluster_in_a_folder(scene, dwi_inputs):
    clustering = pytest.importorskip("DiffTractographyLib.clustering")
    from slicer import vtkMRMLSubjectHierarchyNode

    from DiffTractographyLib.polydata import polydata_to_tractogram

    dwi, points, _, _ = dwi_inputs
    bundle = mrml.run(scene, dwi, points, seeds_per_point=10, seed_radius=1.5, cluster_threshold=4.0,
                      min_cluster_size=2, step_size=0.5, device="cpu")

    expected = clustering.quickbundles(polydata_to_tractogram(bundle.GetPolyData()), 4.0)
    sizes = expected.sizes.tolist()
    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = hierarchy.GetItemByName(f"{bundle.GetName()} clusters")
    children = [hierarchy.GetItemDataNode(hierarchy.GetItemByPositionUnderParent(folder, i))
                for i in range(hierarchy.GetNumberOfItemChildren(folder))]
    kept = [k for k, size in enumerate(sizes) if size >= 2]
    assert len(sizes) >= 2 and len(children) == len(kept)
    colors = expected.colors().numpy() / 255.0
    for node, k in zip(children, kept):
        assert node.GetPolyData().GetNumberOfLines() == sizes[k]
        np.testing.assert_allclose(node.GetDisplayNode().GetColor(), colors[k])


def test_a_run_cancelled_from_its_progress_leaves_the_scene_as_it_was(scene, build, dwi_inputs):
    """The module's Cancel raises from the progress callback (between chunks): no node is added,
    the inputs and an existing output stay as they were."""
    from DiffTractographyLib.tracking.engine import TrackingCancelled

    dwi, points, _, _ = dwi_inputs
    output = mrml.run(scene, dwi, points, seeds_per_point=5, seed_radius=1.5, device="cpu")
    before = scene.GetNumberOfNodes(), build.checksum(dwi), build.checksum(points), output.GetPolyData().GetNumberOfLines()
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        raise TrackingCancelled("cancelled")

    with pytest.raises(TrackingCancelled):
        mrml.run(scene, dwi, points, output, seeds_per_point=400, seed_radius=1.5, device="cpu", chunk_size=64,
                 progress=progress)
    assert calls == [(64, 800)]
    assert (scene.GetNumberOfNodes(), build.checksum(dwi), build.checksum(points),
            output.GetPolyData().GetNumberOfLines()) == before


def test_envelope_of_noise_free_data_is_the_bundle_itself(scene, build, dwi_inputs):
    """A wild bootstrap of noise-free signal has no residuals: every repeat tracks the bundle again,
    so the visitation probability is 1 on the bundle's voxels and 0 elsewhere, and the distance to
    a lesion is the same in every repeat (to float32 rounding of the refitted signal)."""
    from DiffTractographyLib.planning import scene as planning

    node, points, _, _ = dwi_inputs
    data, affine = mrml.volume_arrays(node)
    lesion_data = np.zeros(data.shape[:3], np.uint8)
    lesion_data[2:4, 2:4, 2:4] = 1
    lesion = build.volume(scene, "vtkMRMLLabelMapVolumeNode", lesion_data, affine, "lesion")
    before = build.checksum(node)

    volume, result = planning.envelope_node(scene, node, points, repeats=3, lesion=lesion, seeds_per_point=20,
                                            step_size=0.5)

    probability, grid = mrml.volume_arrays(volume)
    np.testing.assert_allclose(grid, affine)
    assert set(np.unique(probability)) == {0.0, 1.0}
    assert volume.GetName() == "seeds visitation probability" and result.repeats == 3
    assert (result.streamlines == result.reference["streamlines"]).all()
    p = result.percentiles["minimum"]
    assert [p[5.0], p[50.0], p[95.0]] == pytest.approx([result.reference["minimum"]] * 3, abs=1e-5)
    assert result.reference["minimum"] > 0
    assert build.checksum(node) == before
