"""The no-model reference maps of ``avloc eval``."""

import pytest
import torch

from avloc.baselines import BaselineMaps, baseline_name
from avloc.types import AvlocError


def test_centre_is_the_box_of_half_the_width_and_height():
    maps = BaselineMaps("centre")(3)
    assert maps.shape == (3, 8, 8)
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1.0
    assert torch.equal(maps[0], expected) and torch.equal(maps[2], expected)


def test_random_maps_are_reproducible_and_differ_per_step():
    first, second = BaselineMaps("random")(4), BaselineMaps("random")(4)
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1])


def test_baseline_name_parses_sources_and_refuses_unknown_ones():
    assert baseline_name("baseline:centre") == "centre"
    assert baseline_name("runs/stm/best.pt") is None
    with pytest.raises(AvlocError, match="unknown baseline 'middle'"):
        baseline_name("baseline:middle")
