"""``avloc pretrain visual``: soft cell targets, composites, the delimiting gap, and weights that load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asset_fixtures import make_assets
from avloc.cli import main
from avloc.data.benchmarks.composite_assets import load_picture
from avloc.models.encoders import create_encoder
from avloc.pretrain import (Composite, PretrainConfig, cell_targets, compose_image, delimiting_gap, pretrain_visual,
                            random_crop)
from avloc.types import AvlocError


def test_cell_targets_are_the_pixel_shares_of_each_identity():
    owner = torch.full((1, 4, 4), -1)
    owner[0, :2, :2] = 0  # cell (0, 0): all identity 0
    owner[0, 2:, 2] = 1  # cell (1, 1): left column identity 1, right column background
    targets = cell_targets(owner, identities=2, stride=2)  # (1, 3, 2, 2), background last
    assert targets[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert targets[0, :, 1, 1].tolist() == [0.0, 0.5, 0.5]
    assert targets[0, :, 0, 1].tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(1, 2, 2))


def test_delimiting_gap_of_features_that_separate_an_object():
    owner = torch.full((1, 8, 8), -1)
    owner[0, :4, :4] = 0  # the top-left 2x2 cells of a 4x4 grid (stride 2)
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, :2, :2] = 1.0  # object cells point one way
    features[0, 1] = 1.0
    features[0, 1, :2, :2] = 0.0  # every other cell at a right angle
    gap, objects = delimiting_gap(features, owner, stride=2)
    assert objects == 1 and gap == pytest.approx(1.0)  # inside cos 1, outside cos 0
    gap, _ = delimiting_gap(torch.ones(1, 2, 4, 4), owner, stride=2)
    assert gap == pytest.approx(0.0)  # features alike everywhere delimit nothing


def test_compose_image_owner_is_what_is_visible_and_deterministic(tmp_path):
    assets = make_assets(tmp_path / "assets")
    pictures = [load_picture(str(p)) for p in sorted(assets.glob("*/*.png"))]
    first = compose_image(np.random.default_rng(3), pictures, [], 64)
    again = compose_image(np.random.default_rng(3), pictures, [], 64)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.owner, again.owner)
    assert first.image.shape == (64, 64, 3) and first.image.dtype == np.float32
    drawn = set(np.unique(first.owner).tolist()) - {-1}
    assert drawn and drawn <= set(range(len(pictures)))
    for identity in drawn:  # the pictures are opaque shapes of one colour: their pixels show it
        colour = pictures[identity][..., :3][pictures[identity][..., 3] > 0].mean(axis=0) / 255
        # a picture's pixels carry its colour up to the jitter of prepare_sprite (gains 0.75 to 1.25)
        mean = first.image[first.owner == identity].mean(axis=0)
        assert np.all(mean <= np.maximum(colour * 1.25, 0.02) + 0.05)


def test_pretrain_writes_weights_that_extract_loads(tmp_path, capsys):
    assets = make_assets(tmp_path / "assets")
    out = tmp_path / "visual.pt"
    assert main(["pretrain", "visual", str(assets), "--out", str(out), "--size", "64", "--crop", "32", "--steps", "2",
                 "--batch-size", "2", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "on 2 pictures: delimiting gap on 8 held-out pictures" in printed  # _silent vs the classes' pictures
    assert f"--weights visual={out}" in printed
    encoder = create_encoder("small-visual", weights=str(out))
    assert encoder.weights_id.startswith("file:sha256=")
    assert not torch.equal(encoder.state_dict()["features.0.conv.weight"],
                           create_encoder("small-visual").state_dict()["features.0.conv.weight"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("visual")] == ["visual.pt"]  # no temp left


def test_random_crops_cut_image_and_owner_alike():
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    owner = np.arange(64 * 64).reshape(64, 64)
    tops_lefts = set()
    for seed in range(20):
        cropped = random_crop(np.random.default_rng(seed), Composite(image, owner), 16)
        top, left = divmod(int(cropped.owner[0, 0]), 64)
        np.testing.assert_array_equal(cropped.owner, owner[top:top + 16, left:left + 16])
        np.testing.assert_array_equal(cropped.image, image[top:top + 16, left:left + 16])
        tops_lefts.add((top, left))
    assert len(tops_lefts) > 10 and all(0 <= t <= 48 and 0 <= l <= 48 for t, l in tops_lefts)


def test_pretrain_refuses_bad_settings_and_folders(tmp_path):
    with pytest.raises(AvlocError, match="steps must be a whole number >= 1"):
        PretrainConfig(assets="a", out="b", steps=0)
    with pytest.raises(AvlocError, match=r"crop \(300\) must be at most size \(256\)"):
        PretrainConfig(assets="a", out="b", crop=300)
    assets = make_assets(tmp_path / "assets")
    with pytest.raises(AvlocError, match="multiple of small-visual's stride"):
        pretrain_visual(PretrainConfig(assets=str(assets), out=str(tmp_path / "w.pt"), size=64, crop=40),
                        progress=False)
    with pytest.raises(AvlocError, match="not a folder"):
        pretrain_visual(PretrainConfig(assets=str(tmp_path / "none"), out=str(tmp_path / "w.pt")), progress=False)
