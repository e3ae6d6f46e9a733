"""CUDA tractograms: clustered on the CPU (the compiled engine), the results returned on the device, equal to
the CPU results (and so to DIPY's)."""
import pytest
import torch

from DiffTractographyLib.clustering import hierarchical_quickbundles, quickbundles, resample_streamlines
from synthetic_tractograms import bundle_tractogram

pytestmark = pytest.mark.gpu


def test_cuda_clusters_equal_cpu_clusters():
    tractogram, _ = bundle_tractogram(20_000, n_bundles=60, spurious=0.05, seed=7)
    for threshold in (5.0, 10.0):
        cpu = quickbundles(tractogram, threshold)
        gpu = quickbundles(tractogram.to("cuda"), threshold)
        assert gpu.labels.is_cuda
        assert torch.equal(gpu.labels.cpu(), cpu.labels)
        assert torch.equal(gpu.centroids.cpu(), cpu.centroids)
    levels_cpu = hierarchical_quickbundles(tractogram, [20.0, 8.0])
    levels_gpu = hierarchical_quickbundles(tractogram.to("cuda"), [20.0, 8.0])
    for a, b in zip(levels_cpu, levels_gpu):
        assert torch.equal(a.labels, b.labels.cpu())


def test_cuda_resampling_is_bit_identical():
    tractogram, _ = bundle_tractogram(2_000, seed=8)
    for reverse in (False, True):
        assert torch.equal(resample_streamlines(tractogram.to("cuda"), 12, reverse=reverse).cpu(),
                           resample_streamlines(tractogram, 12, reverse=reverse))
