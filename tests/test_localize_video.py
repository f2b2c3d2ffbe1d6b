"""`avloc localize`, the streaming Localizer, the built-in default model and `avloc demo`."""

import json

import numpy as np
import pytest
import torch

from avloc.checkpoint import load_checkpoint, save_checkpoint
from avloc.cli import main
from avloc.data.cache import FeatureCache
from avloc.data.benchmarks.synth import generate_dataset
from avloc.data.benchmarks.synth_scenes import RECIPES
from avloc.demo import DEMO_CLIPS, run_demo
from avloc.extract import extract_features
from avloc.trained import DEFAULT_MODEL, load_trained
from avloc.io.decode import iter_frames, probe, read_clip
from avloc.data.manifest import load_manifest
from avloc.io.write import VideoWriter, write_video
from avloc.map_geometry import is_flat, upsample
from avloc.localize_video import OUTPUTS, localize_video
from avloc.localizer import Localizer
from avloc.render import TRUTH_COLOUR
from avloc.config import TrainConfig
from avloc.train import fit
from avloc.types import AvlocError


def _coloured(image: np.ndarray, colour) -> np.ndarray:
    """``(H, W)`` bool: pixels exactly of ``colour``."""
    return (image == np.asarray(colour, np.uint8)).all(axis=-1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny causal c+u STM trained for one epoch on 64 px features, and a clip to localise."""
    root = tmp_path_factory.mktemp("localize")
    dataset = generate_dataset(root / "data", clips=10, seed=2, size=64, seconds=2.0, workers=1, progress=False)
    features = root / "features.h5"
    extract_features(dataset, features, size=64, progress=False)
    config = TrainConfig(dataset=str(dataset), features=str(features), out=str(root / "run"), size=64, epochs=1,
                         batch_size=8, lr=1e-3, model_options={"variant": "c+u", "channels": 32})
    return fit(config, progress=False), dataset / "videos" / "clip_00000.mp4"


def test_localize_writes_four_consistent_outputs(trained, tmp_path):
    checkpoint, video = trained
    result = localize_video(video, tmp_path / "out", model=checkpoint, progress=False)
    assert all((tmp_path / "out" / name).is_file() for name in OUTPUTS)
    boxes = json.loads((tmp_path / "out" / "boxes.json").read_text())
    maps = np.load(tmp_path / "out" / "heatmaps.npz")
    assert len(boxes["frames"]) == len(maps["times"]) == maps["heatmaps"].shape[0] == 8  # 2 s at 4 fps
    np.testing.assert_allclose([f["time"] for f in boxes["frames"]], (np.arange(8) + 0.5) / 4)
    np.testing.assert_allclose(maps["times"], (np.arange(8) + 0.5) / 4)
    assert list(maps["classes"]) == boxes["classes"] and maps["probabilities"].shape == (8, len(boxes["classes"]))
    assert {s["start"] for s in boxes["seconds"]} == {0, 1}
    info = probe(video)
    for frame, heatmap in zip(boxes["frames"], maps["heatmaps"]):
        assert frame["class"] in boxes["classes"] and len(frame["boxes"]) == len(frame["scores"])
        # a flat map (this 1-epoch model's are uniform softmaxes, 1/16 +- 3e-8) detects nothing
        assert (len(frame["boxes"]) == 0) == bool(is_flat(upsample(torch.from_numpy(heatmap), (64, 64))))
        for x1, y1, x2, y2 in frame["boxes"]:
            assert 0 <= x1 < x2 <= info.width and 0 <= y1 < y2 <= info.height
        assert all(0.0 <= s <= 1.0 for s in frame["scores"])
    overlay = probe(tmp_path / "out" / "overlay.mp4")
    assert overlay.has_audio and (overlay.width, overlay.height) == (info.width, info.height)
    assert result.frames_written == sum(1 for _ in iter_frames(tmp_path / "out" / "overlay.mp4")) == 32
    assert abs(overlay.duration - info.duration) < 0.1
    assert (tmp_path / "out" / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("stream", [False, True])
def test_decoding_ahead_on_a_thread_changes_nothing_it_writes(trained, tmp_path, stream):
    """On CUDA the next steps are decoded on a thread (decode_ahead); forced here on the CPU."""
    checkpoint, video = trained
    runs = {ahead: localize_video(video, tmp_path / str(ahead), model=checkpoint, progress=False, stream=stream,
                                  batch_size=3, decode_ahead=ahead) for ahead in (False, True)}
    assert runs[True].frames_written == runs[False].frames_written == 32
    for name in ("boxes.json", "heatmaps.npz", "contact_sheet.png"):
        assert (tmp_path / "True" / name).read_bytes() == (tmp_path / "False" / name).read_bytes(), name
    overlays = [np.stack([frame for _, frame in iter_frames(tmp_path / str(ahead) / "overlay.mp4")])
                for ahead in (False, True)]
    assert np.array_equal(*overlays)


@pytest.mark.parametrize("model", ["stm", "ave"])  # streams; runs over the whole clip (its frames decoded again)
def test_no_overlay_writes_the_same_results_and_sheet_without_the_video(trained, tmp_path, capsys, model):
    checkpoint, video = trained
    if model == "ave":
        dataset = video.parent.parent
        checkpoint = fit(TrainConfig(dataset=str(dataset), features=str(dataset.parent / "features.h5"), model="ave",
                                     out=str(tmp_path / "run"), size=64, epochs=1, batch_size=8), progress=False)
    full = localize_video(video, tmp_path / "full", model=checkpoint, progress=False)
    assert main(["localize", str(video), "--model", str(checkpoint), "--out", str(tmp_path / "lean"), "--no-overlay",
                 "-q"]) == 0
    printed = capsys.readouterr().out
    assert "8 steps, 0 frames (no overlay)" in printed and "overlay.mp4" not in printed
    assert sorted(path.name for path in (tmp_path / "lean").iterdir()) == sorted(OUTPUTS[1:])
    for name in ("boxes.json", "heatmaps.npz", "contact_sheet.png"):  # the video is the only difference
        assert (tmp_path / "lean" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    assert set(full.files()) == set(OUTPUTS)
    localize_video(video, tmp_path / "full", model=checkpoint, progress=False, overlay=False)
    assert not (tmp_path / "full" / "overlay.mp4").exists()  # an earlier run's video would not match


@pytest.mark.parametrize(("name", "streams"), [("ezvsl", True), ("ave", False)])
def test_every_model_localises_a_video_streaming_or_offline(trained, tmp_path, capsys, name, streams):
    """EZ-VSL (no classifier, independent steps) streams; AVE runs over the whole clip at once.
    Either way the maps are the model's on the clip's cached features; --stream is refused in one
    line with the reason for the model that cannot stream."""
    _, video = trained
    dataset = video.parent.parent
    features = dataset.parent / "features.h5"
    config = TrainConfig(dataset=str(dataset), features=str(features), out=str(tmp_path / "run"), model=name,
                         size=64, epochs=1, batch_size=8)
    best = fit(config, progress=False)
    assert main(["localize", str(video), "--model", str(best), "--out", str(tmp_path / "out"), "-q"]) == 0
    boxes = json.loads((tmp_path / "out" / "boxes.json").read_text())
    maps = np.load(tmp_path / "out" / "heatmaps.npz")
    head = load_trained(best).head.eval()
    cached = FeatureCache(features).read("clip_00000")
    with torch.no_grad():
        output = head(visual=torch.from_numpy(cached.visual)[None], audio=torch.from_numpy(cached.audio)[None])
    np.testing.assert_allclose(maps["heatmaps"], output.heatmap[0].numpy(), rtol=0, atol=1e-4)
    if output.logits is None:
        assert maps["probabilities"].shape == (8, 0) and boxes["seconds"] == []
        assert all(frame["class"] is None and frame["class_probability"] is None for frame in boxes["frames"])
    else:
        np.testing.assert_allclose(maps["probabilities"], output.logits[0].softmax(-1).numpy(), rtol=0, atol=1e-4)
        assert all(frame["class"] in boxes["classes"] for frame in boxes["frames"])
    assert (tmp_path / "out" / "overlay.mp4").is_file()
    stream_run = main(["localize", str(video), "--model", str(best), "--out", str(tmp_path / "again"), "--stream", "-q"])
    error = capsys.readouterr().err
    if streams:
        assert stream_run == 0 and not error
        return
    assert stream_run == 2 and "model ave cannot stream: it has no step-by-step form" in error
    assert error.count("\n") == 1
    with pytest.raises(AvlocError, match="stream=False"):
        Localizer(load_trained(best), stream=False).advance(torch.from_numpy(cached.visual[:1]),
                                                           torch.from_numpy(cached.audio[:1]))


def test_start_and_end_select_a_part(trained, tmp_path):
    checkpoint, video = trained
    result = localize_video(video, tmp_path, model=checkpoint, start=0.5, end=1.5, progress=False)
    np.testing.assert_allclose(result.times, 0.5 + (np.arange(4) + 0.5) / 4)
    assert result.frames_written == 16


def test_streaming_equals_the_offline_causal_model(trained, tmp_path):
    checkpoint, video = trained
    model = load_trained(checkpoint)
    localizer = Localizer(model)
    clip = read_clip(video, fps=4, size=64, sample_rate=localizer.mel.sample_rate)
    visual, audio = localizer.encode(clip.frames, clip.segments)
    offline = model.head(visual=visual[None], audio=audio[None])  # the whole clip at once
    streamed = [localizer(frame, segment) for frame, segment in zip(clip.frames, clip.segments)]
    torch.testing.assert_close(torch.stack([s.heatmap for s in streamed]), offline.heatmap[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack([s.probabilities for s in streamed]), offline.logits[0].softmax(-1),
                               atol=1e-5, rtol=0)
    batched = localize_video(video, tmp_path / "a", model=checkpoint, progress=False)
    live = localize_video(video, tmp_path / "b", model=checkpoint, stream=True, progress=False)
    chunked = localize_video(video, tmp_path / "c", model=checkpoint, batch_size=3, progress=False)  # 3 + 3 + 2
    np.testing.assert_allclose(live.heatmaps, batched.heatmaps, atol=1e-5)
    np.testing.assert_allclose(chunked.heatmaps, batched.heatmaps, atol=1e-5)
    np.testing.assert_allclose(chunked.probabilities, offline.logits[0].softmax(-1).detach().numpy(), atol=1e-5)
    assert live.latencies.shape == (8,) and (live.latencies > 0).all() and batched.latencies is None


def test_bad_models_and_videos_give_one_line_errors(trained, tmp_path, capsys):
    checkpoint, video = trained
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    other = load_checkpoint(checkpoint)
    other["config"]["model_options"] = {**other["config"]["model_options"], "channels": 16}
    mismatched = tmp_path / "other.pt"
    save_checkpoint(mismatched, other)
    future = load_checkpoint(checkpoint)
    future["config"]["model_options"] = {**future["config"]["model_options"], "causal": False}
    symmetric = tmp_path / "symmetric.pt"
    save_checkpoint(symmetric, future)
    silent = tmp_path / "silent.mp4"
    write_video(silent, np.zeros((8, 32, 32, 3), np.uint8), 8.0)
    cases = [(["localize", str(video), "--model", str(corrupt)], "not a readable checkpoint"),
             (["localize", str(video), "--model", str(mismatched)], "does not fit a stm model"),
             (["localize", str(video), "--model", str(symmetric), "--stream"], "cannot stream"),
             (["localize", str(silent), "--model", str(checkpoint)], "no audio stream"),
             (["localize", str(tmp_path / "missing.mp4")], "no such file"),
             (["localize", str(video), "--model", str(checkpoint), "--start", "5"], "beyond the duration")]
    for argv, reason in cases:
        assert main([*argv, "--out", str(tmp_path / "out"), "-q"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("avloc: error: ") and reason in error and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.mp4"))


def test_cli_localize_stream_reports_latency(trained, tmp_path, capsys):
    checkpoint, video = trained
    assert main(["localize", str(video), "--model", str(checkpoint), "--stream", "--out", str(tmp_path), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "streaming latency per step: mean" in printed and "overlay.mp4" in printed


def test_demo_scores_a_clip_of_its_scenario_and_draws_its_ground_truth(trained, tmp_path, monkeypatch):
    checkpoint, video = trained
    clips = video.parent.parent  # the fixture's dataset stands in for the bundled demo clips
    written = []
    write_frame = VideoWriter.write_frame
    monkeypatch.setattr(VideoWriter, "write_frame", lambda self, frame: (written.append(frame.copy()),
                                                                         write_frame(self, frame))[1])
    result, report = run_demo(tmp_path, seed=5, model=str(checkpoint), progress=False, clips=clips)
    singles = [record for record in load_manifest(clips).records if "single" in record.tags]
    record = singles[5 % len(singles)]
    assert (tmp_path / "clips" / record.video.name).read_bytes() == record.video.read_bytes()
    assert f"demo clip {record.id}" in report["source"]
    assert "single" in report["rows"] and report["rows"]["single"]["n_frames"] > 0
    assert 0.0 <= report["segment_accuracy"] <= 1.0 and all(path.is_file() for path in result.files().values())
    overlay = written[-result.frames_written:]
    assert result.frames_written == 32  # 2 s at 16 fps
    height, width = overlay[0].shape[:2]
    drawn = 0
    for annotation in record.frames:  # at (k + 0.5) / 4 s: video frame 4k + 2
        truth = _coloured(overlay[round(annotation.t * 16)], TRUTH_COLOUR)
        for x1, y1, x2, y2 in np.asarray(annotation.boxes, dtype=int):
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width) - 1, min(y2, height) - 1
            edges = np.concatenate([truth[y1, x1:x2 + 1], truth[y2, x1:x2 + 1], truth[y1:y2 + 1, x1],
                                    truth[y1:y2 + 1, x2]])
            assert edges.mean() > 0.2, annotation  # dashed, partly under the caption or the legend
            drawn += 1
        assert truth[-height // 5:].any()  # the legend
    assert drawn >= 4
    with pytest.raises(AvlocError, match="unknown scenario"):
        run_demo(tmp_path, seed=5, scenario="nonsense", model=str(checkpoint), clips=clips)


def test_the_bundled_demo_clips_hold_every_scenario_the_default_model_knows():
    dataset = load_manifest(DEMO_CLIPS)
    assert {tag for record in dataset.records for tag in record.tags} >= set(RECIPES)
    assert set(dataset.classes) <= set(load_trained("default").classes)
    assert "GPL" in (DEMO_CLIPS / "LICENSE").read_text()
    assert all(record.split == "test" and record.video.stat().st_size < 400_000 for record in dataset.records)


def test_the_default_model_is_built_in_small_and_streams(tmp_path):
    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size <= 20e6
    assert (DEFAULT_MODEL.parent / "MODEL_CARD.md").is_file()
    model = load_trained("default")
    assert model.config.model == "stm" and model.classes[-1] == "background"
    assert {k.split(".")[0] for k in model.state} >= {"visual_encoder", "audio_encoder"}
    video = tmp_path / "clip.mp4"
    write_video(video, np.full((16, 64, 64, 3), 90, np.uint8), 16.0,
                np.sin(np.linspace(0, 400, 16000)).astype(np.float32) * 0.3, 16000)
    result = localize_video(video, tmp_path / "out", progress=False)
    assert result.heatmaps.shape == (4, 16, 16) and np.isfinite(result.heatmaps).all()


@pytest.mark.parametrize(("edit", "reason"), [
    (("config", "fps", 0.0), "fps must be a finite number > 0, got 0.0"),
    (("config", "size", 10**6), "frame size 1000000"),
    (("config", "visual", "nope"), "names the encoders 'nope'"),
    (("config", "model_options", {"variant": "none", "channels": -8}), "does not build a stm model"),
    (("config", "model_options", {"variant": "none", "bogus": 1}), "unexpected keyword argument 'bogus'"),
    (("classes", 5), "classes must be a non-empty list"),
    (("features_meta", "{"), "feature metadata is broken"),
])
def test_load_trained_refuses_a_broken_checkpoint_naming_it(tmp_path, edit, reason):
    from hostile_files import checkpoint, nan_weights, setter

    for name, content in (("edited.pt", checkpoint(setter(*edit))()), ("nan.pt", checkpoint(nan_weights)())):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AvlocError) as error:
            load_trained(tmp_path / name)
        assert str(error.value).startswith(f"{tmp_path / name}: ")
        assert (reason if name == "edited.pt" else "NaN or infinite") in str(error.value)


def test_demo_refuses_a_bad_model_before_writing_anything(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AvlocError, match="not a readable checkpoint"):
        run_demo(tmp_path / "demo", seed=0, model=str(tmp_path / "bad.pt"), progress=False)
    assert not (tmp_path / "demo").exists()
