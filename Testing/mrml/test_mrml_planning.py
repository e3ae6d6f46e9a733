"""Planning in the scene: a bundle's density map as a volume node on a template's grid, and its
signed distance to a lesion as a point array, a summary and a split-off bundle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("slicer")
pytestmark = pytest.mark.mrml

from DiffTractographyLib import mrml  # noqa: E402
from DiffTractographyLib.io import read_tck  # noqa: E402
from DiffTractographyLib.planning import scene as planning  # noqa: E402
from DiffTractographyLib.planning.density import density_map  # noqa: E402
from DiffTractographyLib.streamlines import Tractogram  # noqa: E402

# three straight streamlines along x at y = 0, 4 and 12 mm, z = 0, one point per mm from x = -10 to 10
LINES = [np.stack([np.arange(-10.0, 11.0), np.full(21, y), np.zeros(21)], 1) for y in (0.0, 4.0, 12.0)]


def bundle(scene):
    return mrml.bundle_node(scene, Tractogram.from_list(LINES, data_per_streamline={"seed_index": torch.arange(3)}),
                            name="CST")


def lesion(scene, build):
    """A 2 mm cube of lesion voxels: voxel (5, 5, 5) of a 1 mm grid whose origin is at (-5, -5, -5)."""
    data = np.zeros((11, 11, 11), np.uint8)
    data[5, 5, 5] = 1
    affine = np.eye(4)
    affine[:3, 3] = -5.0
    return build.volume(scene, "vtkMRMLLabelMapVolumeNode", data, affine, "tumour")


def test_distance_per_point_summary_and_split(scene, build):
    cst, tumour = bundle(scene), lesion(scene, build)
    before = build.checksum(tumour)

    report = planning.lesion_distance(scene, cst, tumour, margin=5.0, split=True)

    # the cube spans -0.5..0.5 mm: the first streamline passes through it, the second 3.5 mm from it
    assert report.minimum == pytest.approx(-0.5) and report.within_margin == 2 and report.streamlines == 3
    assert report.robust == pytest.approx(np.percentile([-0.5, 3.5, 11.5], 1))
    distances = planning.bundle_tractogram(cst).data_per_point[planning.DISTANCE_ARRAY].numpy()
    assert distances.shape == (63,) and distances[10] == pytest.approx(-0.5) and distances[0] == pytest.approx(
        np.hypot(9.5, 0.0))
    assert report.near_node.GetName() == "CST within 5 mm of tumour"
    assert report.near_node.GetPolyData().GetNumberOfLines() == 2
    display = cst.GetDisplayNode()
    assert display.GetActiveScalarName() == planning.DISTANCE_ARRAY and display.GetScalarVisibility()
    assert build.checksum(tumour) == before                           # the lesion node is not modified


def test_a_bundle_under_a_transform_is_measured_in_world_space(scene, build):
    cst, tumour = bundle(scene), lesion(scene, build)
    shift = np.eye(4)
    shift[1, 3] = -4.0                                                # moves the second streamline onto the lesion
    build.transform(scene, shift, cst)
    report = planning.lesion_distance(scene, cst, tumour, margin=0.0)
    assert report.minimum == pytest.approx(-0.5) and report.within_margin == 1 and report.near_node is None


def test_density_volume_is_on_the_templates_grid(scene, build, oblique_affine, data_dir):
    points, lengths = read_tck(data_dir / "invivo_small" / "sdstream_ref.tck")
    tracts = mrml.bundle_node(scene, Tractogram(torch.from_numpy(points),
                                                torch.from_numpy(np.r_[0, np.cumsum(lengths)])), name="tracts")
    # the oblique 2 x 2.5 x 3 mm template, centred on the in-vivo bundle (15 x 20 x 22 mm)
    oblique_affine[:3, 3] += points.mean(0) - oblique_affine[:3, :3] @ [4, 3.5, 3] - oblique_affine[:3, 3]
    template = build.volume(scene, "vtkMRMLScalarVolumeNode", np.zeros((9, 8, 7), np.float32), oblique_affine, "t1")

    node = planning.density_node(scene, tracts, template, step_size=0.25)

    values, affine = mrml.volume_arrays(node)
    np.testing.assert_allclose(affine, oblique_affine)
    expected = density_map(points, lengths, (9, 8, 7), oblique_affine, step_size=0.25)
    np.testing.assert_array_equal(values, expected)
    assert node.GetName() == "tracts density" and values.max() == 74


def test_an_empty_bundle_is_refused_in_one_line(scene, build):
    empty = mrml.bundle_node(scene, Tractogram.from_list([]), name="empty")
    with pytest.raises(Exception, match="the bundle empty has no streamlines"):
        planning.lesion_distance(scene, empty, lesion(scene, build))


def test_refined_seeds_go_to_a_new_fiducial_node_inside_the_seed_balls(scene, build):
    from DiffTractographyLib.phantoms import Bundle, fod_phantom

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-28.0, -16.0, -10.0]
    straight = Bundle.straight([-30, -5, 0], [30, -5, 0], 7.5)            # reaches the target
    turning = Bundle.arc([-14, 25, 0], [0, -1, 0], [1, 0, 0], 20.0, 7.5, -40, 90)   # turns away
    fod = build.volume(scene, "vtkMRMLVectorVolumeNode", fod_phantom((29, 19, 11), affine, [straight, turning],
                                                                      lmax=6)[0].numpy(), affine, "fod")
    seeds = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    seeds.AddControlPoint(-14.0, 0.0, 0.0)
    target = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "target")
    target.SetCenter(14.0, -5.0, 0.0)
    target.SetSize(8.0, 8.0, 8.0)

    node, result = planning.refine_seeds(scene, fod, seeds, target, seeds_per_point=32, seed_radius=5.0,
                                         step_size=0.5, cutoff=0.05)

    assert node.GetName() == "seeds refined" and node.GetNumberOfControlPoints() == 32
    refined = mrml.control_points(node)
    assert (np.linalg.norm(refined - [-14.0, 0.0, 0.0], axis=1) <= 5.0 + 1e-6).all()
    assert result.share[0] < 0.2 and result.share[-1] >= 0.8
    assert seeds.GetNumberOfControlPoints() == 1 and mrml.control_points(seeds).tolist() == [[-14.0, 0.0, 0.0]]
