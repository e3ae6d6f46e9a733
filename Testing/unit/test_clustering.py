"""QuickBundles and its resampling: DIPY's arithmetic reproduced step by step, the clustering rules
(strict threshold, nearest cluster, flipped orientation, running-mean centroids), outputs and errors."""
import numpy as np
import pytest
import torch

from DiffTractographyLib import Tractogram
from DiffTractographyLib.clustering import (cluster_colors, hierarchical_quickbundles, mdf_distance, quickbundles,
                                            resample_streamlines)
from DiffTractographyLib.errors import InputError
from synthetic_tractograms import bundle_tractogram


def set_number_of_points_loop(s: np.ndarray, n: int) -> np.ndarray:
    """DIPY's c_set_number_of_points written out in Python (float32 input): float32 differences,
    float64 arc lengths and positions (step added again and again), float32 output."""
    arc = [0.0]
    for i in range(1, len(s)):
        d = [float(np.float32(s[i, k] - s[i - 1, k])) for k in range(3)]
        arc.append(arc[-1] + float(np.sqrt((d[0] * d[0] + d[1] * d[1]) + d[2] * d[2])))
    step = arc[-1] / (n - 1)
    out = np.zeros((n, 3), np.float32)
    position, i, k = 0.0, 0, 0
    while position < arc[-1]:
        if position == arc[k]:
            out[i] = s[k]
            position, i, k = position + step, i + 1, k + 1
        elif position < arc[k]:
            ratio = 1 - ((arc[k] - position) / (arc[k] - arc[k - 1]))
            out[i] = [float(s[k - 1, d]) + ratio * float(np.float32(s[k, d] - s[k - 1, d])) for d in range(3)]
            position, i = position + step, i + 1
        else:
            k += 1
    out[n - 1] = s[-1]
    return out


def lines(*specs):
    """Straight streamlines from (start, end, vertex count) triples, RAS mm."""
    return Tractogram.from_list([np.linspace(a, b, n, dtype=np.float32) for a, b, n in specs])


@pytest.mark.parametrize("nb_points", [2, 3, 12, 20])
def test_resampling_is_dipys_loop_bit_for_bit(nb_points, device):
    tractogram, _ = bundle_tractogram(40, seed=1)
    streamlines = tractogram.numpy_streamlines()
    streamlines[3][5] = streamlines[3][4]                     # a repeated vertex (zero-length segment)
    tractogram = Tractogram.from_list(streamlines).to(device)
    for reverse in (False, True):
        ours = resample_streamlines(tractogram, nb_points, reverse=reverse).cpu().numpy()
        expected = [set_number_of_points_loop(s[::-1] if reverse else s, nb_points) for s in streamlines]
        np.testing.assert_array_equal(ours, np.stack(expected))


def test_resampling_keeps_end_vertices_and_marks_degenerate_streamlines():
    tractogram = Tractogram.from_list([np.array([[0, 0, 0], [0, 0, 3.0], [4, 0, 3]], np.float32),
                                       np.ones((4, 3), np.float32), np.zeros((1, 3), np.float32)])
    x = resample_streamlines(tractogram, 5)
    torch.testing.assert_close(x[0], torch.tensor([[0, 0, 0], [0, 0, 1.75], [0.5, 0, 3], [2.25, 0, 3], [4, 0, 3]]))
    assert torch.isnan(x[1:]).all()
    with pytest.raises(InputError, match="at least 2"):
        resample_streamlines(tractogram, 1)


def test_mdf_takes_the_better_orientation():
    a = resample_streamlines(lines(([0, 0, 0], [10, 0, 0], 11)), 4)
    b = resample_streamlines(lines(([10, 3, 0], [0, 3, 0], 11), ([0, 0, 4], [10, 0, 4], 5)), 4)
    torch.testing.assert_close(mdf_distance(a, b), torch.tensor([[3.0, 4.0]], dtype=torch.float64))


def test_threshold_is_strict_ties_go_to_the_first_cluster_and_centroids_are_running_means():
    # the second line is 2 mm from the first; the third, reversed, is 1 mm from both
    t = lines(([0, 0, 0], [30, 0, 0], 31), ([0, 2, 0], [30, 2, 0], 7), ([30, 1, 0], [0, 1, 0], 16))
    joined = quickbundles(t, 2.5, nb_points=4)
    assert joined.labels.tolist() == [0, 0, 0] and joined.sizes.tolist() == [3]
    # the reversed line joined flipped: the centroid keeps the first member's orientation
    torch.testing.assert_close(joined.centroids[0], torch.tensor([[0, 1, 0], [10, 1, 0], [20, 1, 0], [30, 1, 0.0]]))
    assert quickbundles(t, 1.5, nb_points=4).labels.tolist() == [0, 1, 0]
    assert quickbundles(t, 1.0, nb_points=4).labels.tolist() == [0, 1, 2]


def test_a_streamline_joins_the_nearest_cluster_not_the_first_close_one():
    t = lines(([0, 0, 0], [30, 0, 0], 10), ([0, 9, 0], [30, 9, 0], 10), ([0, 5, 0], [30, 5, 0], 10))
    clusters = quickbundles(t, 6.0)
    assert clusters.labels.tolist() == [0, 1, 1]             # 5 mm to cluster 0, 4 mm to cluster 1


def test_threshold_extremes_and_min_size():
    tractogram, _ = bundle_tractogram(300, n_bundles=8, seed=2)
    assert len(quickbundles(tractogram, 1e-3)) == 300
    everything = quickbundles(tractogram, 1e4)
    assert len(everything) == 1 and everything.labels.eq(0).all()
    full = quickbundles(tractogram, 8.0)
    big = quickbundles(tractogram, 8.0, min_size=10)
    kept = full.sizes >= 10
    assert big.sizes.tolist() == full.sizes[kept].tolist()
    torch.testing.assert_close(big.centroids, full.centroids[kept])
    dropped = ~kept[full.labels]
    assert big.labels[dropped].eq(-1).all()
    assert torch.equal(torch.unique(big.labels[~dropped]), torch.arange(len(big)))


def test_degenerate_streamlines_get_label_minus_one_and_are_counted():
    t = lines(([0, 0, 0], [30, 0, 0], 10), ([5, 5, 5], [5, 5, 5], 3), ([0, 1, 0], [30, 1, 0], 10))
    clusters = quickbundles(t, 5.0)
    assert clusters.labels.tolist() == [0, -1, 0] and clusters.n_undefined == 1


def test_a_founder_keeps_the_orientation_nearer_to_the_nearest_centroid():
    # the second line runs backwards 20 mm away: it founds a cluster, stored walked forwards
    t = lines(([0, 0, 0], [30, 0, 0], 4), ([30, 20, 0], [0, 20, 0], 4))
    clusters = quickbundles(t, 5.0, nb_points=4)
    assert clusters.labels.tolist() == [0, 1]
    forwards = torch.tensor([[0, 20, 0], [10, 20, 0], [20, 20, 0], [30, 20, 0.0]])
    torch.testing.assert_close(clusters.centroids[1], forwards)


def test_numpy_tractograms_give_numpy_clusters_equal_to_the_tensor_ones():
    tractogram, _ = bundle_tractogram(1000, n_bundles=15, spurious=0.1, seed=3)
    arrays = Tractogram(tractogram.points.numpy(), tractogram.offsets.numpy())
    tensors = hierarchical_quickbundles(tractogram, [12.0, 6.0])
    numpy_levels = hierarchical_quickbundles(arrays, [12.0, 6.0])
    for a, b in zip(tensors, numpy_levels):
        assert isinstance(b.labels, np.ndarray) and isinstance(b.centroids, np.ndarray)
        np.testing.assert_array_equal(b.labels, a.labels.numpy())
        np.testing.assert_array_equal(b.centroids, a.centroids.numpy())
        np.testing.assert_array_equal(b.indices(3), a.indices(3).numpy())
    np.testing.assert_array_equal(numpy_levels[1].parents, tensors[1].parents.numpy())
    assert isinstance(resample_streamlines(arrays, 12), np.ndarray)


@pytest.mark.parametrize("threshold", [float("nan"), 0.0, -1.0])
def test_bad_thresholds_and_empty_input_are_input_errors(threshold):
    with pytest.raises(InputError, match="positive distance in mm"):
        quickbundles(lines(([0, 0, 0], [1, 0, 0], 2)), threshold)
    with pytest.raises(InputError, match="no streamlines"):
        quickbundles(Tractogram.from_list([]), 10.0)


def test_hierarchy_levels_nest_and_each_level_is_quickbundles_within_its_parent():
    tractogram, _ = bundle_tractogram(800, n_bundles=10, seed=4)
    coarse, fine = hierarchical_quickbundles(tractogram, [20.0, 8.0])
    assert torch.equal(coarse.labels, quickbundles(tractogram, 20.0).labels) and coarse.parents is None
    assert torch.equal(fine.parents[fine.labels], coarse.labels)
    for k in range(len(coarse)):
        members = coarse.indices(k)
        alone = quickbundles(tractogram.subset(members), 8.0)
        children = torch.nonzero(fine.parents == k).flatten()
        assert torch.equal(fine.centroids[children], alone.centroids)
        assert torch.equal(children[alone.labels], fine.labels[members])
    with pytest.raises(InputError, match="decrease"):
        hierarchical_quickbundles(tractogram, [8.0, 20.0])


def test_colours_depend_only_on_the_cluster_number():
    colours = cluster_colors(40)
    assert colours.dtype == torch.uint8 and colours.shape == (40, 3)
    assert torch.equal(colours[:10], cluster_colors(10))
    assert len(torch.unique(colours, dim=0)) == 40
    assert torch.equal(colours[0], torch.tensor([242, 36, 36], dtype=torch.uint8))
