"""The AVE authors' precomputed-feature layout: reading, training on it, and `avloc extract --format ave`."""

import json
import math
import re
import shutil

import h5py
import numpy as np
import pytest

import avloc.extract
from avloc.audio import MelConfig
from avloc.cli import main
from avloc.data.formats.ave import read_annotations, sample_id, segment_labels
from avloc.data.formats.ave_features import AUTHORS_META, AVEFeatures
from avloc.data.cache import FeatureCache
from avloc.data.sources import load_dataset, open_features
from avloc.data.benchmarks.synth import generate_dataset
from avloc.extract import encode_seconds, extract_ave_features, extract_features
from avloc.models.encoders import create_encoder
from avloc.types import AvlocError
from conftest import SHARED_DATA, interrupt_after

# Real lines of AVE's Annotations.txt: an empty event (row 1), a two-event video (rows 3, 4).
LINES = [
    "Church bell&Xq5oTX4-Hnc&good&0&10",
    "Church bell&VWi2ENBuTbw&good&0&0",
    "Bark&3jS8tWfLJxI&good&7&9",
    "Male speech, man speaking&-9R4WPSKE3Q&good&0&10",
    "Female speech, woman speaking&-9R4WPSKE3Q&good&0&10",
    "Church bell&K5AE5C5FUQk&good&5&10",
]
SPLIT = {"train": [3, 0, 2], "val": [4], "test": [5, 1]}  # unsorted, as the authors' files
N, M, K = len(LINES), 3, 5  # rows, weak negatives, classes (4 + background)
def _authors_flags(folder):
    """Train on the authors' features: encoders and fps come from the features (vgg19, vggish-embed, 1)."""
    return ["--features", str(folder)]


SMALL = {"visual": "small-visual", "audio": "small-audio", "size": 64, "frames_per_second": 2, "progress": False}


def _write(path, key, data):
    with h5py.File(path, "w") as h5:
        h5.create_dataset(key, data=data)


def _features(rows, offset=0.0):
    """Distinct values everywhere: (rows, 10, 7, 7, 512) channels last and (rows, 10, 128)."""
    visual = np.arange(rows * 10 * 7 * 7 * 512, dtype=np.float32).reshape(rows, 10, 7, 7, 512) / 1e6 + offset
    audio = np.arange(rows * 10 * 128, dtype=np.float32).reshape(rows, 10, 128) / 1e3 + offset
    return visual, audio


def make_ave_folder(root, noisy=True):
    """An AVE feature folder laid out as the authors ship it (shapes included), N = 6 rows."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Annotations.txt").write_text("\n".join(LINES) + "\n\n")  # a trailing blank line, as editors leave
    visual, audio = _features(N)
    _write(root / "visual_feature.h5", "avadataset", visual)
    _write(root / "audio_feature.h5", "avadataset", audio)
    samples = read_annotations(root / "Annotations.txt")
    _write(root / "labels.h5", "avadataset", segment_labels(samples, [*dict.fromkeys(s.category for s in samples),
                                                                       "background"]))
    for name, rows in SPLIT.items():
        _write(root / f"{name}_order.h5", "order", np.array(rows, dtype=np.int64))
    if noisy:
        noisy_visual, noisy_audio = _features(M, offset=1000.0)
        _write(root / "visual_feature_noisy.h5", "avadataset", noisy_visual)
        _write(root / "audio_feature_noisy.h5", "avadataset", noisy_audio)
        _write(root / "labels_noisy.h5", "avadataset", np.eye(K, dtype=np.float32)[[K - 1] * M])
    return root


@pytest.fixture
def ave_folder(tmp_path):
    return make_ave_folder(tmp_path / "ave")


def test_reader_transposes_channels_last_and_follows_annotation_rows(ave_folder):
    features = open_features(ave_folder)
    assert isinstance(features, AVEFeatures) and features.meta == AUTHORS_META and features.frames_per_second == 16
    assert features.ids[:N] == ("0000-Xq5oTX4-Hnc", "0001-VWi2ENBuTbw", "0002-3jS8tWfLJxI", "0003--9R4WPSKE3Q",
                                "0004--9R4WPSKE3Q", "0005-K5AE5C5FUQk")
    visual, audio = _features(N)
    clip = features.read("0004--9R4WPSKE3Q")
    assert clip.visual.shape == (10, 512, 7, 7) and clip.audio.shape == (10, 128, 1, 1)
    assert clip.visual.dtype == np.float32 and clip.visual.flags["C_CONTIGUOUS"]
    # a known value at [row, sec, y, x, c] appears at visual[sec, c, y, x]
    assert clip.visual[6, 300, 2, 5] == visual[4, 6, 2, 5, 300] != visual[4, 6, 5, 2, 300]
    np.testing.assert_array_equal(clip.visual, visual[4].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(clip.audio[:, :, 0, 0], audio[4])
    np.testing.assert_array_equal(clip.times, np.arange(10) + 0.5)
    window = features.read("0004--9R4WPSKE3Q", start=7, length=3)
    np.testing.assert_array_equal(window.visual, clip.visual[7:])
    np.testing.assert_array_equal(window.times, [7.5, 8.5, 9.5])
    assert features.num_steps("0000-Xq5oTX4-Hnc") == 10 and "0006-K5AE5C5FUQk" not in features
    assert isinstance(open_features(ave_folder / "visual_feature.h5"), AVEFeatures)
    with pytest.raises(AvlocError, match="no features for clip 'nope'"):
        features.read("nope")


def test_ave_folder_as_dataset_rows_splits_classes_and_videos(ave_folder):
    (ave_folder / "AVE").mkdir()
    (ave_folder / "AVE" / "3jS8tWfLJxI.mkv").write_bytes(b"")
    dataset = load_dataset(ave_folder, require_videos=False)
    real = [r for r in dataset.records if not r.id.startswith("noisy-")]
    samples = read_annotations(ave_folder / "Annotations.txt")
    assert [r.id for r in real] == [sample_id(i, s) for i, s in enumerate(samples)]
    assert [r.split for r in real] == ["train", "test", "train", "train", "val", "test"]
    assert dataset.classes == ("Church bell", "Bark", "Male speech, man speaking", "Female speech, woman speaking",
                               "background")  # first appearance, not sorted
    assert real[2].video == ave_folder / "AVE" / "3jS8tWfLJxI.mkv"
    assert real[0].video == ave_folder / "videos" / "Xq5oTX4-Hnc.mp4"
    per_second = [[dataset.class_index(r.label_at(s + 0.5)) for s in range(10)] for r in real]
    np.testing.assert_array_equal(per_second, h5py.File(ave_folder / "labels.h5")["avadataset"][()].argmax(-1))
    assert per_second[1] == [4] * 10 and per_second[2] == [4] * 7 + [1, 1, 4]  # the empty event; Bark [7, 9)
    with pytest.raises(AvlocError, match=r"5 of 6 videos not found below it, e\.g\. Xq5oTX4-Hnc"):
        load_dataset(ave_folder)


def test_weak_negatives_are_background_train_records_read_from_the_noisy_files(ave_folder):
    dataset, features = load_dataset(ave_folder, require_videos=False), AVEFeatures(ave_folder)
    noisy = [r for r in dataset.records if r.id.startswith("noisy-")]
    assert [r.id for r in noisy] == ["noisy-000", "noisy-001", "noisy-002"] == list(features.ids[N:])
    assert all(r.split == "train" and r.label_at(t) == "background" for r in noisy for t in (0.5, 9.5))
    noisy_visual, _ = _features(M, offset=1000.0)
    np.testing.assert_array_equal(features.read("noisy-002").visual, noisy_visual[2].transpose(0, 3, 1, 2))
    (ave_folder / "audio_feature_noisy.h5").unlink()  # off when any of the three files is absent
    assert len(AVEFeatures(ave_folder)) == N and len(load_dataset(ave_folder, require_videos=False).records) == N


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("visual_feature.h5", np.zeros((N, 10, 49, 512), np.float32), r"expected \(N, 10, h, w, C\) features, got shape"),
    ("audio_feature.h5", np.zeros((N - 1, 10, 128), np.float32), "5 rows, but Annotations.txt has 6 samples"),
    ("audio_feature.h5", np.zeros((N, 9, 128), np.float32), r"expected \(N, 10, C\) or \(N, 10, m, n, C\)"),
    ("visual_feature_noisy.h5", np.zeros((M, 10, 7, 7, 256), np.float32), "does not match the main features'"),
    ("audio_feature_noisy.h5", np.zeros((M + 1, 10, 128), np.float32), "4 rows, but labels_noisy.h5 has 3 rows"),
    ("labels_noisy.h5", np.eye(K, dtype=np.float32)[[0, 4, 4]], "every weak negative must be labelled background"),
])
def test_malformed_feature_files_are_refused_with_file_and_reason(ave_folder, name, data, reason):
    _write(ave_folder / name, "avadataset", data)
    with pytest.raises(AvlocError, match=f"{re.escape(name)}: .*{reason}"):
        AVEFeatures(ave_folder)


def test_missing_files_and_keys_are_refused(ave_folder, capsys):
    _write(ave_folder / "audio_feature.h5", "features", np.zeros((N, 10, 128), np.float32))
    with pytest.raises(AvlocError, match=r"audio_feature\.h5: no dataset 'avadataset' \(has features\)"):
        AVEFeatures(ave_folder)
    (ave_folder / "visual_feature.h5").unlink()
    with pytest.raises(AvlocError, match=r"visual_feature\.h5: no such file"):
        open_features(ave_folder)
    (ave_folder / "val_order.h5").unlink()
    with pytest.raises(AvlocError, match="needs the split files .* missing val_order.h5"):
        load_dataset(ave_folder, require_videos=False)
    assert main(["datasets", "check", str(ave_folder)]) == 0
    assert "features: refused:" not in capsys.readouterr().out  # no visual_feature.h5: nothing to report


def test_datasets_check_reports_the_feature_files(ave_folder, capsys):
    assert main(["datasets", "check", str(ave_folder)]) == 0
    printed = capsys.readouterr().out
    assert "labels.h5: matches the labels recomputed" in printed
    assert "features: visual_feature.h5 (6, 10, 7, 7, 512), audio_feature.h5 (6, 10, 128)" in printed
    assert "weak negatives: 3" in printed
    _write(ave_folder / "visual_feature.h5", "avadataset", np.zeros((2, 10, 7, 7, 512), np.float32))
    assert main(["datasets", "check", str(ave_folder)]) == 0
    assert "features: refused: " in capsys.readouterr().out


@pytest.mark.parametrize(("model", "supervision"), [("ave", "segment"), ("dmrfe", "video"), ("stm", "segment")])
def test_cli_trains_and_evaluates_on_the_authors_features(ave_folder, tmp_path, capsys, model, supervision):
    out = tmp_path / model
    assert main(["train", str(ave_folder), "--model", model, "--supervision", supervision, *_authors_flags(ave_folder),
                 "--steps", "10", "--epochs", "2", "--batch-size", "4", "--out", str(out), "-q"]) == 0
    assert len((out / "log.csv").read_text().splitlines()) == 3
    assert main(["eval", str(out / "best.pt"), str(ave_folder), "--features", str(ave_folder),
                 "--out", str(tmp_path / "r.json"), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "on test (2 clips)" in printed and "no annotated frames in this split" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    accuracy = report["segment_accuracy"]
    assert report["rows"] == {} and round(accuracy * 20, 6).is_integer()  # 2 clips x 10 seconds
    assert f"segment accuracy: {accuracy:.3f}" in printed and "cIoU@0.5" not in printed


def test_cli_trains_avdln_on_the_authors_features_and_scores_cross_modal(ave_folder, tmp_path, capsys):
    out = tmp_path / "avdln"
    assert main(["train", str(ave_folder), "--model", "avdln", "--supervision", "segment", *_authors_flags(ave_folder),
                 "--steps", "10", "--epochs", "1", "--batch-size", "4", "--out", str(out), "-q"]) == 0
    assert main(["eval", str(out / "best.pt"), str(ave_folder), "--task", "cross-modal", "--split", "train",
                 "--features", str(ave_folder), "--out", str(tmp_path / "x.json"), "-q"]) == 0
    scores = json.loads((tmp_path / "x.json").read_text())
    assert scores["clips"] == 1 and scores["skipped"] == 5  # only Bark [7, 9) is shorter than the clip


def test_cli_train_on_authors_features_names_what_differs(ave_folder, tmp_path, capsys):
    assert main(["train", str(ave_folder), "--model", "ave", "--features", str(ave_folder), "--visual", "resnet18",
                 "--out", str(tmp_path / "r"), "-q"]) == 2
    assert "holds vgg19 + vggish-embed features" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "ave").is_dir(), reason="../shared/data/ave is not available")
def test_the_real_annotations_and_split_as_a_dataset():
    dataset = load_dataset(SHARED_DATA / "ave", require_videos=False)  # labels_noisy.h5 alone: no negatives
    assert len(dataset.records) == 4143 and dataset.classes[0] == "Church bell" and len(dataset.classes) == 29
    assert [len(dataset.split(name)) for name in ("train", "val", "test")] == [3339, 402, 402]
    empty = dataset.records[26]
    assert empty.id == "0026-VWi2ENBuTbw" and {empty.label_at(s + 0.5) for s in range(10)} == {"background"}
    closs = h5py.File(SHARED_DATA / "ave" / "labels_closs.h5")["avadataset"][()]
    events = np.array([[r.label_at(s + 0.5) != "background" for s in range(10)] for r in dataset.records])
    np.testing.assert_array_equal(events, closs == 1)


# --- avloc extract --format ave -------------------------------------------------------------


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """Three 10-s synthetic clips (two train, one test) and their AVE-layout features."""
    root = tmp_path_factory.mktemp("native")
    dataset = generate_dataset(root / "data", clips=3, seed=0, size=64, seconds=10.0, workers=1, progress=False)
    result = extract_ave_features(dataset, root / "ave", **SMALL)
    assert (result.extracted, result.skipped, result.remaining) == (3, 0, 0)
    return dataset, root / "ave"


def test_extract_writes_the_layout_and_reads_back_the_same_arrays(native, capsys):
    dataset, out = native
    records = load_dataset(dataset).records
    features = AVEFeatures(out)
    assert features.source_ids == tuple(r.id for r in records)
    assert features.ids == tuple(f"{i:04d}-{r.video.stem}" for i, r in enumerate(records))
    with h5py.File(out / "visual_feature.h5") as visual, h5py.File(out / "audio_feature.h5") as audio:
        assert visual["avadataset"].shape == (3, 10, 4, 4, 128) and audio["avadataset"].shape == (3, 10, 4, 7, 128)
    assert features.meta.visual_encoder == "small-visual" and features.meta.fps == 1.0
    assert features.frames_per_second == 2 and features.meta.audio_window == 1.0
    encoders = create_encoder("small-visual", "stamps").eval(), create_encoder("small-audio").eval()  # the defaults
    direct = encode_seconds(records[1].video, *encoders, MelConfig(), 64, 2, 16, "cpu")
    for clip_id in (records[1].id, features.ids[1]):  # the source id and the AVE id name the same row
        clip = features.read(clip_id)
        np.testing.assert_allclose(clip.visual, direct.visual, atol=1e-6)
        np.testing.assert_allclose(clip.audio, direct.audio, atol=1e-6)
    lines = (out / "Annotations.txt").read_text().splitlines()
    spans = []  # each record's label over the whole seconds its segments of that label span
    for record in records:
        own = [segment for segment in record.segments if segment.label == record.label]
        spans.append((math.floor(min(s.start for s in own)), math.ceil(max(s.end for s in own))))
    assert lines == [f"{r.label}&{r.video.stem}&good&{a}&{b}" for r, (a, b) in zip(records, spans)]
    orders = {name: h5py.File(out / f"{name}_order.h5")["order"][()] for name in ("train", "val", "test")}
    assert orders["train"].tolist() == [0, 1] and orders["val"].tolist() == [] and orders["test"].tolist() == [2]
    labels = h5py.File(out / "labels.h5")["avadataset"][()]
    (start, end), background = spans[0], labels.shape[-1] - 1  # the first record's class is class 0
    assert labels.shape[:2] == (3, 10) and labels[0].argmax(-1).tolist() == (
        [background] * start + [0] * (end - start) + [background] * (10 - end))
    assert not any(out.glob("*.parts")) and not any(out.glob(".*"))
    assert main(["datasets", "check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AVE layout, 3 samples" in printed and "labels.h5: matches" in printed


def test_extract_resumes_after_a_kill_and_rewrites_deleted_files(native, tmp_path, monkeypatch):
    dataset, full = native
    out = tmp_path / "ave"
    real = interrupt_after(monkeypatch, avloc.extract, "encode_seconds", 2)
    with pytest.raises(KeyboardInterrupt):
        extract_ave_features(dataset, out, **SMALL)
    assert not (out / "visual_feature.h5").exists()
    assert len(list((out / "extract-2-frames-per-second.parts").glob("*.npz"))) == 2
    monkeypatch.setattr(avloc.extract, "encode_seconds", real)
    result = extract_ave_features(dataset, out, **SMALL)
    assert (result.extracted, result.skipped) == (1, 2)
    for name in ("visual_feature.h5", "audio_feature.h5"):
        np.testing.assert_array_equal(h5py.File(out / name)["avadataset"][()], h5py.File(full / name)["avadataset"][()])
    (out / "labels.h5").unlink()
    (out / "test_order.h5").unlink()
    again = extract_ave_features(dataset, out, **SMALL)
    assert (again.extracted, again.skipped) == (0, 3)
    assert (out / "labels.h5").read_bytes() and h5py.File(out / "test_order.h5")["order"][()].tolist() == [2]
    with pytest.raises(AvlocError, match=r"different settings \(frames_per_second\)"):
        extract_ave_features(dataset, out, **{**SMALL, "frames_per_second": 3})


def test_extract_from_an_ave_folder_with_videos_keeps_its_rows(native, tmp_path):
    dataset, first = native
    source = tmp_path / "source"
    shutil.copytree(first, source)
    shutil.copytree(dataset / "videos", source / "AVE")  # named by "YouTube id", as the authors ship them
    records = load_dataset(source).records
    assert [r.id for r in records] == ["0000-clip_00000", "0001-clip_00001", "0002-clip_00002"]
    extract_ave_features(source, tmp_path / "again", **SMALL)
    assert (tmp_path / "again" / "Annotations.txt").read_text() == (first / "Annotations.txt").read_text()
    np.testing.assert_array_equal(h5py.File(tmp_path / "again" / "visual_feature.h5")["avadataset"][()],
                                  h5py.File(first / "visual_feature.h5")["avadataset"][()])
    cache = tmp_path / "f.h5"  # the avloc format reads an AVE folder too
    extract_features(source, cache, visual="small-visual", audio="small-audio", fps=1.0, size=64, progress=False)
    assert FeatureCache(cache).ids == ("0000-clip_00000", "0001-clip_00001", "0002-clip_00002")
    with pytest.raises(AvlocError, match="is the dataset folder"):
        extract_ave_features(source, source, **SMALL)


def test_cli_extract_format_ave_and_its_refusals(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "ave"
    assert main(["extract", str(tiny_dataset), "--format", "ave", "--out", str(out), "--visual", "small-visual",
                 "--audio", "small-audio", "--size", "64", "--frames-per-second", "1", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert re.fullmatch(r"avloc: error: \S+/videos/0\.mp4: 2 s long; an AVE row holds 10 one-second segments", error)
    assert not out.exists()
    assert main(["extract", str(tiny_dataset), "--format", "ave", "--fps", "2", "--out", str(out), "-q"]) == 2
    assert "--fps and --audio-window do not apply to --format ave" in capsys.readouterr().err
    assert main(["extract", str(tiny_dataset), "--frames-per-second", "2", "--out", str(tmp_path / "f.h5"), "-q"]) == 2
    assert "--frames-per-second applies to --format ave only" in capsys.readouterr().err
    assert main(["extract", str(tiny_dataset), "--format", "ave", "--workers", "2", "--out", str(out), "-q"]) == 2
    assert "--workers applies to --format avloc only" in capsys.readouterr().err
    assert main(["extract", str(tiny_dataset), "--workers", "-1", "--out", str(tmp_path / "f.h5"), "-q"]) == 2
    assert capsys.readouterr().err.strip() == "avloc: error: workers must be >= 0, got -1"
    assert not (tmp_path / "f.h5").exists() and not out.exists()


def test_cli_extract_format_ave_defaults_give_the_authors_shapes(tmp_path, capsys):
    dataset = generate_dataset(tmp_path / "data", clips=1, seed=3, size=64, seconds=10.0, workers=1, progress=False)
    out = tmp_path / "ave"
    assert main(["extract", str(dataset), "--format", "ave", "--frames-per-second", "1", "--out", str(out), "-q"]) == 0
    assert f"features in {out}" in capsys.readouterr().out
    with h5py.File(out / "visual_feature.h5") as visual, h5py.File(out / "audio_feature.h5") as audio:
        assert visual["avadataset"].shape == (1, 10, 7, 7, 512) and audio["avadataset"].shape == (1, 10, 128)
        assert visual["avadataset"].dtype == np.float32
    features = AVEFeatures(out)
    assert (features.meta.visual_encoder, features.meta.audio_encoder, features.meta.size) == (
        "vgg19", "vggish-embed", 224)
    assert features.read(features.ids[0]).audio.shape == (10, 128, 1, 1)
