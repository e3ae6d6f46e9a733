"""Streamline clustering: QuickBundles with DIPY's exact result (labels and float32 centroids),
flat and hierarchical, compiled for the CPU.

The package separates what ``dipy.segment`` separates: ``metric`` (the MDF distance and its lower
bounds), ``engine`` (the compiled QuickBundles pass) and ``api`` (``quickbundles``,
``hierarchical_quickbundles``, ``Clusters``); the resampling lives beside the streamlines, in
``DiffTractographyLib.resampling``. Importing it loads Numba, not torch.
"""
from ..resampling import resample, resample_both, resample_streamlines
from .api import Clusters, cluster_colors, hierarchical_quickbundles, quickbundles
from .metric import mdf_distance

__all__ = ["Clusters", "cluster_colors", "hierarchical_quickbundles", "mdf_distance", "quickbundles", "resample",
           "resample_both", "resample_streamlines"]
