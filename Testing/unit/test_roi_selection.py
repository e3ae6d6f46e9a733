"""Include/exclude selection of whole streamlines by oriented boxes (Slicer ROIs) and masks."""
from __future__ import annotations

import numpy as np
import torch

from DiffTractographyLib.selection import OrientedBox, select_streamlines
from DiffTractographyLib.stopping import BinaryMask
from DiffTractographyLib.streamlines import Tractogram

# a 4 x 2 x 2 mm box centred at (10, 0, 0) whose first (4 mm) edge points along RAS y
TURNED_BOX = OrientedBox((10.0, 0.0, 0.0), (4.0, 2.0, 2.0), ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))


def test_box_contains_points_within_its_turned_edges():
    points = torch.tensor([[10.0, 1.9, 0.9], [10.0, 2.1, 0.0], [11.1, 0.0, 0.0], [10.9, -2.0, -1.0]])
    assert TURNED_BOX.contains(points).tolist() == [True, False, False, True]


def tractogram() -> Tractogram:
    return Tractogram.from_list([
        [[0.0, 0, 0], [10.0, 0, 0]],                     # 0: ends in the box
        [[0.0, 5, 0], [10.0, 5, 0]],                     # 1: misses it
        [[10.0, 1.5, 0], [20.0, 1.5, 0], [20.0, 9, 9]],  # 2: starts in the box, ends in the mask voxel
    ], data_per_streamline={"seed_index": torch.tensor([4, 5, 6])})


def mask_region() -> BinaryMask:
    mask = np.zeros((3, 3, 3), bool)
    mask[2, 2, 2] = True
    return BinaryMask(mask, np.diag([10.0, 4.5, 4.5, 1.0]))  # voxel (2, 2, 2) is centred at (20, 9, 9)


def kept(**regions) -> list[int]:
    t = tractogram()
    return t.seed_index[select_streamlines(t, **regions)].tolist()


def test_include_keeps_streamlines_visiting_every_region():
    assert kept(include=[TURNED_BOX, mask_region()]) == [6]
    assert kept(include=[TURNED_BOX]) == [4, 6]


def test_exclude_drops_streamlines_entering_any_region():
    assert kept(exclude=[mask_region()]) == [4, 5]
    assert kept(include=[TURNED_BOX], exclude=[mask_region()]) == [4]
    assert kept() == [4, 5, 6]
