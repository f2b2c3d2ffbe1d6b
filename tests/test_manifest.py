import json

import pytest

from avloc.data.manifest import (
    BACKGROUND,
    ClipRecord,
    FrameAnnotation,
    ManifestError,
    Segment,
    load_manifest,
    write_manifest,
)


def _write(root, lines):
    (root / "videos").mkdir(exist_ok=True)
    for line in lines:
        if isinstance(line, dict) and isinstance(line.get("video"), str) and line["video"].startswith("videos/"):
            (root / line["video"]).write_bytes(b"")
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (root / "manifest.jsonl").write_text(text + "\n")


def _clip(clip_id="a", **overrides):
    line = {"id": clip_id, "video": f"videos/{clip_id}.mp4", "split": "train", "label": "dog"}
    line.update(overrides)
    return line


def test_loads_records_classes_and_annotations(tmp_path):
    _write(tmp_path, [
        _clip("a", segments=[{"start": 0, "end": 2, "label": "background"}, {"start": 2, "end": 10, "label": "dog"}],
              frames=[{"t": 0.125, "boxes": [], "scenario": "off-screen"},
                      {"t": 2.125, "boxes": [[1, 2, 30, 40]], "scenario": "single"}],
              tags=["cross-event"]),
        _clip("b", split="test", label="cat"),
    ])
    dataset = load_manifest(tmp_path)
    assert [r.id for r in dataset.records] == ["a", "b"]
    assert dataset.classes == ("cat", "dog", BACKGROUND)
    assert dataset.background_index == 2
    a = dataset.records[0]
    assert a.video == (tmp_path / "videos/a.mp4").resolve()
    assert a.tags == ("cross-event",)
    assert a.frames[1] == FrameAnnotation(2.125, ((1.0, 2.0, 30.0, 40.0),), "single")
    assert [r.id for r in dataset.split("test")] == ["b"]
    # Step labels: segments decide; outside every segment is background; no segments -> video label.
    assert a.label_at(1.0) == BACKGROUND and a.label_at(2.0) == "dog" and a.label_at(10.5) == BACKGROUND
    assert dataset.records[1].label_at(3.0) == "cat"
    assert a.annotation_at(2.2, tolerance=0.125).t == 2.125
    assert a.annotation_at(1.0, tolerance=0.125) is None


def test_write_manifest_round_trips(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"")
    record = ClipRecord(id="x/1", video=(tmp_path / "v.mp4").resolve(), split="val", label="bell",
                        segments=(Segment(0.0, 1.5, "bell"),),
                        frames=(FrameAnnotation(0.125, ((0.0, 0.0, 4.0, 4.0),), "single"),), tags=("t",))
    write_manifest(tmp_path, [record])
    assert load_manifest(tmp_path).records == (record,)


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        (_clip(video="videos/missing.mp4"), "does not exist"),
        (_clip(video="../outside.mp4"), "escapes the dataset folder"),
        (_clip(video="/etc/passwd"), "must be relative"),
        (_clip(split="training"), "unknown split 'training'"),
        (_clip(frames=[{"t": 1.0, "boxes": [[10, 0, 5, 8]]}]), "bad box"),
        (_clip(frames=[{"t": 1.0, "boxes": [[0, 0, 5]]}]), "bad box"),
        (_clip(frames=[{"t": 1.0, "boxes": [[0, 0, 5, "x"]]}]), "finite number"),
        (_clip(frames=[{"t": 1.0, "boxes": [], "scenario": "crowd"}]), "unknown scenario"),
        (_clip(segments=[{"start": 3, "end": 1, "label": "dog"}]), "segment 0"),
        ({"id": "c", "video": "videos/c.mp4", "split": "train"}, "missing required key 'label'"),
        ("{not json", "not valid JSON"),
        (_clip("a"), "duplicate id 'a'"),
    ],
)
def test_bad_lines_name_file_line_and_reason(tmp_path, bad_line, reason):
    if isinstance(bad_line, dict) and bad_line.get("video") == "videos/missing.mp4":
        _write(tmp_path, [_clip("a")])
        with open(tmp_path / "manifest.jsonl", "a") as out:
            out.write(json.dumps(bad_line) + "\n")
    else:
        _write(tmp_path, [_clip("a"), bad_line])
    with pytest.raises(ManifestError) as error:
        load_manifest(tmp_path)
    message = str(error.value)
    assert f"{tmp_path.resolve() / 'manifest.jsonl'}:2: " in message
    assert reason in message
    assert "\n" not in message


def test_missing_manifest_and_annotation_only_folder(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(json.dumps(_clip("a", video="videos/absent.mp4")) + "\n")
    assert load_manifest(tmp_path, require_videos=False).records[0].id == "a"
