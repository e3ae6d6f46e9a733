"""Include/exclude selection of whole streamlines by oriented boxes and masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from DiffTractographyLib.errors import InputError
from DiffTractographyLib.selection import Box, select
from DiffTractographyLib.stopping import BinaryMask
from DiffTractographyLib.streamlines import Tractogram


def turned_box() -> Box:
    """A 4 x 2 x 2 mm box centred at (10, 0, 0) whose long edge points along RAS y."""
    box_to_world = np.array([[0.0, -1, 0, 10], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return Box(box_to_world, [4.0, 2.0, 2.0])


def test_box_contains_points_within_its_turned_edges():
    points = torch.tensor([[10.0, 1.9, 0.9], [10.0, 2.1, 0.0], [11.1, 0.0, 0.0], [10.9, -2.0, -1.0]])
    assert turned_box().contains(points).tolist() == [True, False, False, True]


def test_box_needs_positive_edges():
    with pytest.raises(InputError, match="three positive edge lengths"):
        Box(np.eye(4), [1.0, 0.0, 1.0])


def tractogram() -> Tractogram:
    return Tractogram.from_list([
        [[0.0, 0, 0], [10.0, 0, 0]],              # 0: ends in the box
        [[0.0, 5, 0], [10.0, 5, 0]],              # 1: misses it
        [[10.0, 1.5, 0], [20.0, 1.5, 0], [20.0, 9, 9]],  # 2: starts in the box, ends in the mask voxel
    ], data_per_streamline={"seed_index": torch.tensor([4, 5, 6])})


def mask_region() -> BinaryMask:
    mask = np.zeros((3, 3, 3), bool)
    mask[2, 2, 2] = True
    return BinaryMask(mask, np.diag([10.0, 4.5, 4.5, 1.0]))  # voxel (2, 2, 2) is centred at (20, 9, 9)


def test_include_keeps_streamlines_visiting_every_region():
    kept = select(tractogram(), include=[turned_box(), mask_region()])
    assert kept.seed_index.tolist() == [6]
    assert select(tractogram(), include=[turned_box()]).seed_index.tolist() == [4, 6]


def test_exclude_drops_streamlines_entering_any_region():
    assert select(tractogram(), exclude=[mask_region()]).seed_index.tolist() == [4, 5]
    assert select(tractogram(), include=[turned_box()], exclude=[mask_region()]).seed_index.tolist() == [4]


def test_no_region_keeps_everything():
    t = tractogram()
    assert select(t) is t
