"""Feature-cache storage: float16 (chunked, gzip) read back as float32, format-1 caches unchanged."""

import json

import h5py
import numpy as np
import pytest
import torch

from avloc.cli import main
from avloc.data.cache import (
    FORMAT,
    CacheMeta,
    ClipFeatures,
    FeatureCache,
    PartsStore,
    clip_key,
    convert_cache,
)
from avloc.data.manifest import load_manifest
from avloc.config import TrainConfig
from avloc.data.benchmarks.synth import generate_dataset
from avloc.data.windows import FeatureWindows
from avloc.evaluate import evaluate
from avloc.extract import extract_features
from avloc.protocols import Protocol
from avloc.train import fit
from avloc.types import AvlocError

META = CacheMeta(visual_encoder="small-visual", visual_weights="w", audio_encoder="small-audio", audio_weights="a",
                 fps=4.0, size=64, sample_rate=16000, audio_window=0.25, mel="{}", avloc_version="0")


def _relu_maps(rng, shape, scale):
    return np.maximum(rng.normal(scale=scale, size=shape), 0).astype(np.float32)


def test_float16_round_trip_reads_float32_within_half_precision(tmp_path):
    rng = np.random.default_rng(0)
    clip = ClipFeatures(visual=_relu_maps(rng, (12, 128, 16, 16), 3.0), audio=_relu_maps(rng, (12, 128, 4, 2), 0.05),
                        times=(np.arange(12) + 0.5) / 4)
    store = PartsStore(tmp_path / "f.h5", CacheMeta(**{**META.__dict__, "storage": "float16"}))
    store.write("a/b", clip)
    cache = FeatureCache(store.merge(["a/b"]))
    assert cache.meta.storage == "float16"
    whole, window = cache.read("a/b"), cache.read("a/b", start=5, length=4)
    for name in ("visual", "audio"):
        stored, back = getattr(clip, name), getattr(whole, name)
        assert back.dtype == np.float32 and back.shape == stored.shape
        np.testing.assert_allclose(back, stored, rtol=2**-11, atol=3e-8)  # float16: 11 significant bits
        assert not np.array_equal(back, stored)  # really rounded: stored as float16
        np.testing.assert_array_equal(getattr(window, name), back[5:9])
    np.testing.assert_array_equal(whole.times, clip.times)  # times stay float64, exact
    with h5py.File(cache.path) as h5:
        visual, audio = (h5[f"clips/{clip_key('a/b')}/{name}"] for name in ("visual", "audio"))
        assert visual.dtype == np.float16 and visual.compression == "gzip"
        assert visual.chunks == (1, 128, 16, 16)  # 64 kB a step: a window reads its own steps' chunks
        assert audio.chunks == (12, 128, 4, 2)  # 2 kB a step: the whole clip in one chunk
        assert json.loads(h5.attrs["meta"])["storage"] == "float16" and h5.attrs["format_version"] == 2


def test_held_clips_read_from_memory_alike_and_within_the_budget(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    store = PartsStore(tmp_path / "f.h5", CacheMeta(**{**META.__dict__, "storage": "float16"}))
    clips = {name: ClipFeatures(visual=_relu_maps(rng, (8, 128, 16, 16), 3.0), audio=_relu_maps(rng, (8, 128, 4, 2), 0.05),
                                times=(np.arange(8) + 0.5) / 4) for name in ("a", "b")}
    for name, clip in clips.items():
        store.write(name, clip)
    path = store.merge(list(clips))
    from_file, held = FeatureCache(path), FeatureCache(path)
    one_clip = 8 * 128 * (16 * 16 + 4 * 2) * 2 + 8 * 8  # float16 maps + float64 times, in bytes
    held.hold(1.5 * one_clip / 2**20)  # room for one clip, not two
    for name in ("a", "b"):
        first, again = held.read(name, start=2, length=4), from_file.read(name, start=2, length=4)
        for field in ("visual", "audio", "times"):
            assert np.array_equal(getattr(first, field), getattr(again, field))
    assert list(held._held) == ["a"]  # "b" did not fit: read from the file, as before
    monkeypatch.setattr(held, "_file", lambda: pytest.fail("a held clip touched the file"))
    window = held.read("a", start=5, length=3)
    assert window.visual.dtype == np.float32 and np.array_equal(window.visual, from_file.read("a", 5, 3).visual)
    with pytest.raises(ValueError, match="budget_mb"):
        held.hold(-1)


def test_old_format_cache_is_read_unchanged(tmp_path):
    """A format-1 file (float32, contiguous, metadata without a storage field) as avloc 0.1 wrote it."""
    rng = np.random.default_rng(1)
    visual, audio = rng.normal(size=(6, 16, 4, 4)).astype(np.float32), rng.normal(size=(6, 8, 2, 2)).astype(np.float32)
    old_meta = {key: value for key, value in META.__dict__.items() if key != "storage"}
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["format"], h5.attrs["format_version"], h5.attrs["meta"] = FORMAT, 1, json.dumps(old_meta)
        group = h5.create_group("clips").create_group("clip_0")
        group.create_dataset("visual", data=visual)
        group.create_dataset("audio", data=audio)
        group.create_dataset("times", data=(np.arange(6) + 0.5) / 4)
    cache = FeatureCache(path)
    assert cache.meta.storage == "float32" and cache.meta.differences(META) == []
    clip = cache.read("clip_0", start=1, length=4)
    np.testing.assert_array_equal(clip.visual, visual[1:5])
    np.testing.assert_array_equal(clip.audio, audio[1:5])
    # and it converts: every clip, float16, the other metadata kept
    new = FeatureCache(convert_cache(path, tmp_path / "new.h5"))
    assert new.meta.storage == "float16" and new.meta.differences(cache.meta) == []
    np.testing.assert_allclose(new.read("clip_0").visual, visual, rtol=2**-11, atol=3e-8)


def test_float16_refuses_maps_beyond_its_range_and_unknown_storage(tmp_path):
    store = PartsStore(tmp_path / "f.h5", CacheMeta(**{**META.__dict__, "storage": "float16"}))
    big = ClipFeatures(visual=np.full((2, 4, 2, 2), 70000.0, np.float32), audio=np.zeros((2, 4, 1, 1), np.float32),
                       times=np.array([0.125, 0.375]))
    with pytest.raises(AvlocError, match="beyond float16.*--storage float32"):
        store.write("clip", big)
    PartsStore(tmp_path / "g.h5", META).write("clip", big)  # float32 keeps them
    with pytest.raises(AvlocError, match="unknown feature storage"):
        PartsStore(tmp_path / "h.h5", CacheMeta(**{**META.__dict__, "storage": "int8"}))


def test_extract_records_the_storage_and_both_read_alike(tiny_dataset, tmp_path):
    settings = dict(visual="small-visual", audio="small-audio", fps=4.0, size=64, progress=False)
    half = FeatureCache(extract_features(tiny_dataset, tmp_path / "half.h5", **settings).out)
    assert main(["extract", str(tiny_dataset), "--out", str(tmp_path / "full.h5"), "--size", "64",
                 "--storage", "float32", "-q"]) == 0
    full = FeatureCache(tmp_path / "full.h5")
    assert (half.meta.storage, full.meta.storage) == ("float16", "float32")
    assert half.meta.differences(full.meta) == []  # the same features: a model trained on one reads the other
    for clip_id in full.ids:
        a, b = full.read(clip_id), half.read(clip_id)
        np.testing.assert_allclose(b.visual, a.visual, rtol=2**-11, atol=3e-8)
        np.testing.assert_allclose(b.audio, a.audio, rtol=2**-11, atol=3e-8)
    assert (tmp_path / "half.h5").stat().st_size < 0.6 * (tmp_path / "full.h5").stat().st_size
    dataset = load_manifest(tiny_dataset)
    windows = FeatureWindows(half, dataset.records, dataset.classes, steps=4)
    assert windows[0]["visual"].dtype == windows[0]["audio"].dtype == torch.float32


def test_eval_metrics_are_unchanged_on_a_float16_cache(tmp_path):
    """Train a tiny STM on a float32 cache; evaluate it on that cache and on its float16 copy."""
    dataset = generate_dataset(tmp_path / "data", clips=20, seed=1, size=64, seconds=2.0, workers=1, progress=False)
    full = extract_features(dataset, tmp_path / "full.h5", size=64, progress=False, storage="float32").out
    half = convert_cache(full, tmp_path / "half.h5", "float16")
    config = TrainConfig(dataset=str(dataset), features=str(full), out=str(tmp_path / "run"), size=64, epochs=2,
                         batch_size=8, lr=1e-3, model_options={"variant": "c+u", "channels": 32})
    best = fit(config, progress=False)
    reports = [evaluate(best, dataset, split="test", features=str(cache), protocol=Protocol(size=64), progress=False)
               for cache in (full, half)]
    before, after = _numbers(reports[0]["rows"]), _numbers(reports[1]["rows"])
    assert before.keys() == after.keys() and any(key.endswith("ciou_at") for key in before)
    assert {key: round(after[key] - value, 4) for key, value in before.items() if abs(after[key] - value) > 1e-3} == {}


def _numbers(report, prefix=""):
    """Every number of an eval report, by its path."""
    if isinstance(report, dict):
        return {k: v for key, value in report.items() for k, v in _numbers(value, f"{prefix}/{key}").items()}
    if isinstance(report, list):
        return {k: v for i, value in enumerate(report) for k, v in _numbers(value, f"{prefix}/{i}").items()}
    if isinstance(report, (int, float)) and not isinstance(report, bool):
        return {prefix: float(report)}
    return {}
