"""QuickBundles against DIPY 1.12's on the same input order: identical labels and bit-identical float32
centroids, on reference tractograms (MRtrix3 and DIPY tracking) and generated whole-brain-like sets."""
from pathlib import Path

import numpy as np
import pytest
import torch

from DiffTractographyLib import load_tractogram
from DiffTractographyLib.clustering import hierarchical_quickbundles, mdf_distance, quickbundles, resample_streamlines
from synthetic_tractograms import bundle_tractogram

dipy_clustering = pytest.importorskip("dipy.segment.clustering")
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def dipy_quickbundles(tractogram, threshold):
    streamlines = tractogram.numpy_streamlines()
    clusters = dipy_clustering.QuickBundles(threshold).cluster(streamlines)
    labels = np.full(len(streamlines), -1)
    for k, cluster in enumerate(clusters):
        labels[cluster.indices] = k
    return labels, np.array([c.centroid for c in clusters], dtype=np.float32)


def assert_same_as_dipy(tractogram, threshold):
    labels, centroids = dipy_quickbundles(tractogram, threshold)
    ours = quickbundles(tractogram, threshold)
    np.testing.assert_array_equal(ours.labels.cpu().numpy(), labels)
    np.testing.assert_array_equal(ours.centroids.cpu().numpy(), centroids)
    np.testing.assert_array_equal(ours.sizes.cpu().numpy(), np.bincount(labels))


@pytest.mark.parametrize("name, threshold", [
    ("invivo_small/sdstream_ref.tck", 2.0), ("invivo_small/sdstream_ref.tck", 5.0),
    ("phantom_cross/detmax_ref_subset.trk", 5.0), ("phantom_cross/detmax_ref_subset.trk", 10.0),
    ("phantom_cross/sdstream_ref_subset.tck", 5.0), ("phantom_cross/tensordet_ref_subset.tck", 20.0),
])
def test_reference_tractograms(data_dir, name, threshold):
    assert_same_as_dipy(load_tractogram(data_dir / name), threshold)


@pytest.mark.parametrize("threshold", [4.0, 10.0])
def test_generated_tractogram_with_spurious_streamlines(threshold, device):
    tractogram, _ = bundle_tractogram(3000, n_bundles=40, spurious=0.1, seed=11)
    labels, centroids = dipy_quickbundles(tractogram, threshold)
    ours = quickbundles(tractogram.to(device), threshold)
    np.testing.assert_array_equal(ours.labels.cpu().numpy(), labels)
    np.testing.assert_array_equal(ours.centroids.cpu().numpy(), centroids)


def test_input_order_is_the_visiting_order(data_dir):
    tractogram = load_tractogram(data_dir / "phantom_cross/detmax_ref_subset.trk")
    shuffled = tractogram.subset(torch.randperm(len(tractogram), generator=torch.Generator().manual_seed(5)))
    assert_same_as_dipy(shuffled, 8.0)


def test_hierarchy_levels_are_dipy_quickbundles_inside_each_parent(data_dir):
    tractogram = load_tractogram(data_dir / "invivo_small/sdstream_ref.tck")
    coarse, fine = hierarchical_quickbundles(tractogram, [6.0, 3.0])
    for k in range(len(coarse)):
        members = coarse.indices(k)
        labels, centroids = dipy_quickbundles(tractogram.subset(members), 3.0)
        children = torch.nonzero(fine.parents == k).flatten()
        np.testing.assert_array_equal(fine.labels[members].numpy(), children[labels].numpy())
        np.testing.assert_array_equal(fine.centroids[children].numpy(), centroids)


def test_resampling_and_mdf_match_dipy(data_dir):
    from dipy.segment.metric import mdf
    from dipy.tracking.streamline import set_number_of_points

    tractogram = load_tractogram(data_dir / "phantom_cross/detmax_ref_subset.trk")
    streamlines = tractogram.numpy_streamlines()
    ours = resample_streamlines(tractogram, 20).numpy()
    np.testing.assert_array_equal(ours, np.array(set_number_of_points(streamlines, 20)))
    distances = mdf_distance(torch.from_numpy(ours[:5]), torch.from_numpy(ours[5:9])).numpy()
    expected = [[mdf(a, b) for b in ours[5:9]] for a in ours[:5]]
    np.testing.assert_allclose(distances, expected, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["phantom_cross/sdstream_ref.tck", "phantom_cross/detmax_ref.trk",
                                  "phantom_cross/ifod2_ref.tck", "phantom_cross/tensordet_ref.tck"])
def test_full_reference_tractograms(name):
    if not (SHARED / name).exists():
        pytest.skip("the shared reference data is not next to this checkout")
    tractogram = load_tractogram(SHARED / name)
    for threshold in (2.0, 5.0, 10.0, 20.0):
        assert_same_as_dipy(tractogram, threshold)


@pytest.mark.slow
def test_100k_generated_streamlines():
    tractogram, _ = bundle_tractogram(100_000, n_bundles=60, spurious=0.05, seed=1)
    assert_same_as_dipy(tractogram, 10.0)
