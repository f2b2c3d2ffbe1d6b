import h5py
import numpy as np
import pytest
import torch

import avloc.extract
from avloc.cli import main
from avloc.data.cache import FeatureCache
from avloc.data.manifest import load_manifest
from avloc.data.windows import FeatureWindows
from avloc.extract import extract_features, parse_shard
from avloc.types import AvlocError
from conftest import interrupt_after

SETTINGS = dict(visual="small-visual", audio="small-audio", fps=4.0, size=64, progress=False)


def _contents(path):
    """Everything in an HDF5 file: attributes and arrays, keyed by name."""
    found = {}
    with h5py.File(path, "r") as h5:
        found["/attrs"] = dict(h5.attrs)
        h5.visititems(lambda name, obj: found.__setitem__(name, obj[()] if isinstance(obj, h5py.Dataset) else None))
    return found


def _assert_same(a, b):
    ca, cb = _contents(a), _contents(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        if isinstance(ca[key], np.ndarray):
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
        else:
            assert ca[key] == cb[key], key


@pytest.fixture(scope="module")
def full_cache(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "features.h5"
    result = extract_features(tiny_dataset, out, **SETTINGS)
    assert (result.extracted, result.skipped, result.remaining) == (3, 0, 0)
    return out


def test_cache_holds_every_clip_with_shapes_and_metadata(full_cache):
    cache = FeatureCache(full_cache)
    assert sorted(cache.ids) == ["clip/0", "clip/1", "clip/2"]
    clip = cache.read("clip/1")
    assert clip.visual.shape == (8, 128, 4, 4)  # 2 s at 4 fps; 64 px / stride 16
    assert clip.audio.shape[:2] == (8, 128)
    np.testing.assert_allclose(clip.times, (np.arange(8) + 0.5) / 4)
    assert cache.meta.visual_encoder == "small-visual" and cache.meta.visual_weights.startswith("stamps:sha256=")
    assert cache.meta.audio_weights == "init-seed0"  # small-audio has no bundled set
    assert cache.meta.fps == 4.0 and cache.meta.audio_window == 0.25
    assert not full_cache.with_name(full_cache.name + ".parts").exists()
    window = cache.read("clip/1", start=2, length=4)
    np.testing.assert_array_equal(window.visual, clip.visual[2:6])


def test_resume_after_interruption_gives_the_same_file(tiny_dataset, full_cache, tmp_path, monkeypatch):
    out = tmp_path / "features.h5"
    real_join = interrupt_after(monkeypatch, avloc.extract, "join_features", 2)  # the third clip dies
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_dataset, out, **SETTINGS)
    assert not out.exists()
    parts = sorted(p.name for p in out.with_name("features.h5.parts").glob("*.npz"))
    assert parts == ["clip%2F0.npz", "clip%2F1.npz"]

    monkeypatch.setattr(avloc.extract, "join_features", real_join)
    result = extract_features(tiny_dataset, out, **SETTINGS)
    assert (result.extracted, result.skipped) == (1, 2)
    _assert_same(out, full_cache)
    again = extract_features(tiny_dataset, out, **SETTINGS)
    assert (again.extracted, again.skipped) == (0, 3)


def test_shards_split_the_work_and_the_last_one_merges(tiny_dataset, full_cache, tmp_path):
    out = tmp_path / "features.h5"
    first = extract_features(tiny_dataset, out, shard=(0, 2), **SETTINGS)
    assert (first.extracted, first.remaining) == (2, 1) and not out.exists()
    second = extract_features(tiny_dataset, out, shard=(1, 2), **SETTINGS)
    assert (second.extracted, second.remaining) == (1, 0)
    _assert_same(out, full_cache)


def test_other_settings_into_the_same_file_are_refused(tiny_dataset, full_cache):
    with pytest.raises(AvlocError, match="different settings \\(fps, audio_window\\)"):
        extract_features(tiny_dataset, full_cache, **{**SETTINGS, "fps": 2.0})


def test_feature_windows_serve_random_seconds_with_step_labels(tiny_dataset, full_cache):
    dataset = load_manifest(tiny_dataset)
    windows = FeatureWindows(FeatureCache(full_cache), dataset.split("train"), dataset.classes, steps=4)
    torch.manual_seed(0)
    starts = set()
    for _ in range(20):
        sample = windows[0]
        assert sample["visual"].shape == (4, 128, 4, 4)
        starts.add(float(sample["times"][0]))
        expected = [dataset.class_index("bell" if t < 1.0 else "background") for t in sample["times"]]
        assert sample["step_labels"].tolist() == expected
    assert len(starts) > 1
    whole = FeatureWindows(FeatureCache(full_cache), dataset.split("test"), dataset.classes, steps=None)
    assert whole[0]["visual"].shape[0] == 8 and whole[0]["label"] == dataset.class_index("bell")


def test_parse_shard():
    assert parse_shard("1/3") == (1, 3)
    for bad in ["3/3", "a/b", "1", "-1/2"]:
        with pytest.raises(AvlocError):
            parse_shard(bad)


def test_cli_extract_and_bad_input(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "f.h5"
    assert main(["extract", str(tiny_dataset), "--out", str(out), "--size", "64", "-q"]) == 0
    assert len(FeatureCache(out)) == 3
    assert main(["extract", str(tmp_path / "nowhere"), "--out", str(out), "-q"]) == 2
    assert "no such manifest" in capsys.readouterr().err
    assert main(["extract", str(tiny_dataset), "--out", str(out), "--weights", "vis=x", "-q"]) == 2
    assert "bad --weights" in capsys.readouterr().err


def test_video_windows_match_the_cached_features(tiny_dataset, full_cache):
    from avloc.audio import MelConfig
    from avloc.data.windows import VideoWindows
    from avloc.models.encoders import create_encoder

    dataset = load_manifest(tiny_dataset)
    windows = VideoWindows(dataset.split("test"), dataset.classes, steps=4, fps=4.0, size=64, mel=MelConfig())
    torch.manual_seed(3)
    sample = windows[0]
    assert sample["frames"].shape == (4, 3, 64, 64) and sample["logmel"].shape == (4, 1, 64, 23)
    first = round(float(sample["times"][0]) * 4 - 0.5)
    with torch.inference_mode():
        visual = create_encoder("small-visual", "stamps").eval()(sample["frames"])  # extract's default
    cached = FeatureCache(full_cache).read("clip/2", start=first, length=4)
    np.testing.assert_allclose(visual.numpy(), cached.visual, rtol=2**-13, atol=1e-4)  # stored rounded (the default)


def test_corrupt_video_is_reported_before_any_clip_is_encoded(tiny_dataset, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    (broken / "videos" / "2.mp4").write_bytes(b"\x00not a video")
    out = tmp_path / "f.h5"
    assert main(["extract", str(broken), "--out", str(out), "--size", "64", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("avloc: error: ") and "2.mp4" in error and "\n" not in error
    assert not out.exists()
    assert not out.with_name("f.h5.parts").exists()  # every video is looked at before the first is encoded
    assert main(["extract", str(broken), "--out", str(out), "--size", "64", "--skip-broken", "-q"]) == 0
    assert len(FeatureCache(out)) == 2
    assert "2.mp4: not a readable video file" in (tmp_path / "f.h5.skipped.txt").read_text()


def test_decoding_workers_write_the_same_file(tiny_dataset, full_cache, tmp_path):
    """What `--workers` (on by default on CUDA) changes is who decodes, not the features."""
    result = extract_features(tiny_dataset, tmp_path / "features.h5", workers=2, **SETTINGS)
    assert result.extracted == 3
    _assert_same(tmp_path / "features.h5", full_cache)
