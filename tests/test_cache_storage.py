"""Feature-cache storage: rounded float32 and float16 (chunked, gzip) read back as float32, format-1 caches unchanged."""

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
    round_significand,
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


@pytest.mark.parametrize("storage, dtype, rtol, level, audio_steps_per_chunk", [
    ("rounded", np.float32, 2**-13, 4, 8),  # 13 significant bits; 4 kB of audio a step: 8 steps make a chunk
    ("float16", np.float16, 2**-11, 1, 12),  # 11 significant bits; 2 kB a step: the whole clip in one chunk
])
def test_round_trip_reads_float32_within_the_storage_precision(tmp_path, storage, dtype, rtol, level,
                                                               audio_steps_per_chunk):
    rng = np.random.default_rng(0)
    clip = ClipFeatures(visual=_relu_maps(rng, (12, 128, 16, 16), 3.0), audio=_relu_maps(rng, (12, 128, 4, 2), 0.05),
                        times=(np.arange(12) + 0.5) / 4)
    store = PartsStore(tmp_path / "f.h5", CacheMeta(**{**META.__dict__, "storage": storage}))
    store.write("a/b", clip)
    cache = FeatureCache(store.merge(["a/b"]))
    assert cache.meta.storage == storage
    whole, window = cache.read("a/b"), cache.read("a/b", start=5, length=4)
    for name in ("visual", "audio"):
        stored, back = getattr(clip, name), getattr(whole, name)
        assert back.dtype == np.float32 and back.shape == stored.shape
        np.testing.assert_allclose(back, stored, rtol=rtol, atol=3e-8)
        assert not np.array_equal(back, stored)  # really rounded
        np.testing.assert_array_equal(getattr(window, name), back[5:9])
    np.testing.assert_array_equal(whole.times, clip.times)  # times stay float64, exact
    with h5py.File(cache.path) as h5:
        visual, audio = (h5[f"clips/{clip_key('a/b')}/{name}"] for name in ("visual", "audio"))
        assert visual.dtype == dtype and (visual.compression, visual.compression_opts) == ("gzip", level)
        assert visual.shuffle == (storage == "rounded")
        assert visual.chunks == (1, 128, 16, 16)  # a step of maps is >= 32 kB: a window reads its own steps' chunks
        assert audio.chunks == (audio_steps_per_chunk, 128, 4, 2)
        assert json.loads(h5.attrs["meta"])["storage"] == storage and h5.attrs["format_version"] == 2


def test_round_significand_rounds_to_nearest_with_ties_to_even():
    one_ulp = 2.0**-12  # the last kept bit of a value in [1, 2) at 12 stored bits
    cases = {1 + one_ulp / 2: 1.0,  # a tie: the kept part 1.000..0 is even, stays
             1 + 1.5 * one_ulp: 1 + 2 * one_ulp,  # a tie: 1 + 1 ulp is odd, goes up to even
             1 + 0.49 * one_ulp: 1.0, 1 + 0.51 * one_ulp: 1 + one_ulp,
             2 - 2.0**-23: 2.0,  # rounding up carries into the exponent
             -(1 + 0.51 * one_ulp): -(1 + one_ulp), 0.0: 0.0, 3.0: 3.0}
    values = np.array(list(cases), dtype=np.float32)
    np.testing.assert_array_equal(round_significand(values, 12, "x"), np.array(list(cases.values()), np.float32))
    rng = np.random.default_rng(0)
    values = (rng.normal(size=10_000) * 10.0 ** rng.uniform(-30, 30, size=10_000)).astype(np.float32)
    rounded = round_significand(values, 12, "x")
    assert not (rounded.view(np.uint32) & np.uint32(2**11 - 1)).any()  # the 11 dropped bits are zero
    error = np.abs(rounded.astype(np.float64) - values)
    assert (error <= 2.0**-13 * np.abs(values)).all()
    # the nearest value with 12 stored bits: no other candidate (one unit down or up) is closer
    unit = np.spacing(np.abs(rounded)).astype(np.float64) * 2**11  # one unit of the last kept bit
    for neighbour in (np.abs(rounded) - unit, np.abs(rounded) + unit):
        assert (error <= np.abs(neighbour - np.abs(values)) + 1e-300).all()
    np.testing.assert_array_equal(round_significand(values, 23, "x"), values)


def test_rounded_storage_refuses_non_finite_maps_and_overflow():
    with pytest.raises(AvlocError, match="clip 7: maps hold NaN or infinite values"):
        round_significand(np.array([1.0, np.nan], np.float32), 12, "clip 7")
    with pytest.raises(AvlocError, match="rounds beyond float32's range.*--storage float32"):
        round_significand(np.array([np.finfo(np.float32).max], np.float32), 12, "clip 7")


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
    # and it converts: every clip, in the default storage, the other metadata kept
    new = FeatureCache(convert_cache(path, tmp_path / "new.h5"))
    assert new.meta.storage == "rounded" and new.meta.differences(cache.meta) == []
    np.testing.assert_allclose(new.read("clip_0").visual, visual, rtol=2**-13, atol=0)


def test_float16_refuses_maps_beyond_its_range_and_unknown_storage(tmp_path):
    store = PartsStore(tmp_path / "f.h5", CacheMeta(**{**META.__dict__, "storage": "float16"}))
    big = ClipFeatures(visual=np.full((2, 4, 2, 2), 70000.0, np.float32), audio=np.zeros((2, 4, 1, 1), np.float32),
                       times=np.array([0.125, 0.375]))
    with pytest.raises(AvlocError, match="beyond float16.*--storage rounded or float32"):
        store.write("clip", big)
    PartsStore(tmp_path / "g.h5", META).write("clip", big)  # float32 keeps them
    PartsStore(tmp_path / "r.h5", CacheMeta(**{**META.__dict__, "storage": "rounded"})).write("clip", big)  # so does rounded
    with pytest.raises(AvlocError, match="unknown feature storage"):
        PartsStore(tmp_path / "h.h5", CacheMeta(**{**META.__dict__, "storage": "int8"}))


def test_extract_records_the_storage_and_both_read_alike(tiny_dataset, tmp_path):
    settings = dict(visual="small-visual", audio="small-audio", fps=4.0, size=64, progress=False)
    rounded = FeatureCache(extract_features(tiny_dataset, tmp_path / "rounded.h5", **settings).out)
    assert main(["extract", str(tiny_dataset), "--out", str(tmp_path / "full.h5"), "--size", "64",
                 "--storage", "float32", "-q"]) == 0
    full = FeatureCache(tmp_path / "full.h5")
    assert (rounded.meta.storage, full.meta.storage) == ("rounded", "float32")  # rounded: the default
    assert rounded.meta.differences(full.meta) == []  # the same features: a model trained on one reads the other
    for clip_id in full.ids:
        a, b = full.read(clip_id), rounded.read(clip_id)
        np.testing.assert_allclose(b.visual, a.visual, rtol=2**-13, atol=0)
        np.testing.assert_allclose(b.audio, a.audio, rtol=2**-13, atol=0)
    assert (tmp_path / "rounded.h5").stat().st_size < 0.6 * (tmp_path / "full.h5").stat().st_size
    dataset = load_manifest(tiny_dataset)
    windows = FeatureWindows(rounded, dataset.records, dataset.classes, steps=4)
    assert windows[0]["visual"].dtype == windows[0]["audio"].dtype == torch.float32


def test_eval_metrics_are_unchanged_on_rounded_and_float16_caches(tmp_path):
    """Train a tiny STM on a float32 cache; evaluate it on that cache and on its rounded and float16 copies."""
    dataset = generate_dataset(tmp_path / "data", clips=20, seed=1, size=64, seconds=2.0, workers=1, progress=False)
    full = extract_features(dataset, tmp_path / "full.h5", size=64, progress=False, storage="float32").out
    copies = [convert_cache(full, tmp_path / f"{storage}.h5", storage) for storage in ("rounded", "float16")]
    config = TrainConfig(dataset=str(dataset), features=str(full), out=str(tmp_path / "run"), size=64, epochs=2,
                         batch_size=8, lr=1e-3, model_options={"variant": "c+u", "channels": 32})
    best = fit(config, progress=False)
    reports = [evaluate(best, dataset, split="test", features=str(cache), protocol=Protocol(size=64), progress=False)
               for cache in (full, *copies)]
    before = _numbers(reports[0]["rows"])
    assert any(key.endswith("ciou_at") for key in before)
    for report in reports[1:]:
        after = _numbers(report["rows"])
        assert before.keys() == after.keys()
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
