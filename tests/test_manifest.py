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
        (_clip(frames=[{"t": 1.0, "boxes": [[0, 0, 5, 5]], "masks": [[], []]}]), "one entry per box (1)"),
        (_clip(frames=[{"t": 1.0, "boxes": [[0, 0, 5, 5]], "masks": [[[0, 0, 5, 5]]]}]), "bad polygon"),
        (_clip(frames=[{"t": 1.0, "boxes": [], "ground_truth": "mean"}]), "unknown ground_truth 'mean'"),
        (_clip(frames=[{"t": 1.0, "boxes": [], "source_boxes": {"format": "voc", "boxes": []}}]), "source_boxes must"),
        (_clip(frames=[{"t": 1.0, "boxes": [], "source_boxes": [[0, 0, 1, 1]]}]), "source_boxes must"),
        (_clip(frames=[{"t": 1.0, "boxes": [], "source_boxes": {"format": "vggss", "boxes": [[0, 0, 1]]}}]),
         "bad source box"),
        (_clip(frames=[{"t": 1.0, "boxes": [], "source_boxes": {"format": "vggss", "boxes": [[0, 0, 1, None]]}}]),
         "source box value must be a finite number"),
        (_clip(video="videos/../../outside.mp4"), "escapes the dataset folder"),
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


def test_masks_and_ground_truth_round_trip_and_links_inside_the_folder_are_followed(tmp_path):
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"")
    root = tmp_path / "dataset"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "a.mp4").symlink_to(outside)  # what `avloc datasets convert` makes
    frame = FrameAnnotation(0.5, ((0.0, 0.0, 4.0, 4.0), (4.0, 4.0, 8.0, 8.0)), "single",
                            masks=(((0.0, 0.0, 4.0, 0.0, 4.0, 4.0),), ()), ground_truth="consensus")
    record = ClipRecord(id="a", video=root / "videos" / "a.mp4", split="test", label="dog", frames=(frame,))
    write_manifest(root, [record])
    assert load_manifest(root).records == (record,)


@pytest.mark.parametrize(("line", "reason"), [
    (b"\xf8\xff garbage\n", ":1: not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", ":1: not valid JSON .nested too deeply"),
    (b'{"id": "a", "video": "v.mp4", "split": "test", "label": "x", "frames": [{"t": 1' + b"0" * 400 + b"}]}\n",
     ":1: frame 0 t must be a finite number"),  # an integer beyond the float range
], ids=["binary", "deep-nesting", "huge-integer"])
def test_undecodable_lines_are_one_line_errors(tmp_path, line, reason):
    (tmp_path / "manifest.jsonl").write_bytes(line)
    with pytest.raises(ManifestError, match=reason) as error:
        load_manifest(tmp_path, require_videos=False)
    assert "\n" not in str(error.value) and len(str(error.value)) < 300


def test_source_boxes_round_trip_as_written_degenerate_values_included(tmp_path):
    sentinel = -2.8823037615171176e16  # a coordinate of the shipped VGG-SS file: finite, kept
    _write(tmp_path, [_clip("v", frames=[{"t": 5.0, "boxes": [], "source_boxes": {
                          "format": "vggss", "boxes": [[0.396875, 0.6625, sentinel, 0.984375], [0, 1.0, 0.5, 1.0]]}}]),
                      _clip("f", frames=[{"t": 5.0, "boxes": [[0, 0, 8, 8]], "ground_truth": "consensus",
                                          "source_boxes": {"format": "flickr", "boxes": [[1, 2, 30, 40]]}}])])
    vggss, flickr = load_manifest(tmp_path).records
    (frame,) = vggss.frames
    assert frame.source_format == "vggss" and frame.boxes == () and frame.scenario is None
    assert frame.source_boxes == ((0.396875, 0.6625, sentinel, 0.984375), (0.0, 1.0, 0.5, 1.0))
    assert flickr.frames[0].source_boxes == ((1, 2, 30, 40),)
    assert all(type(v) is int for v in flickr.frames[0].source_boxes[0])  # integers stay integers
    before = [json.loads(text) for text in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    write_manifest(tmp_path, load_manifest(tmp_path).records)
    after = [json.loads(text) for text in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [a["frames"][0]["source_boxes"] for a in after] == [b["frames"][0]["source_boxes"] for b in before]
    assert after[0]["frames"][0]["source_boxes"]["boxes"][0][2] == sentinel
    assert "source_boxes" not in ClipRecord("a", vggss.video, "test", "dog", frames=(FrameAnnotation(1.0, ()),)
                                            ).to_json(tmp_path.resolve())["frames"][0]
