"""`avloc datasets convert`: each layout -> native manifest, boxes in video pixels, videos linked."""

import json
import logging
import math
import wave

import numpy as np
import pytest

from avloc.cli import main
from avloc.data.formats.cvat import read_cvat
from avloc.data.formats.flickr import read_flickr_xml
from avloc.data.manifest import load_manifest
from avloc.protocols import AnnotatedMap, pixel_ground_truth
from avloc.io.write import write_video
from avloc.types import AvlocError
from conftest import SHARED_DATA, make_tone_video

STM = SHARED_DATA / "stm-annotations"
AVE = SHARED_DATA / "ave"


def _flickr_xml(path, boxes, named=True):
    if named:
        items = "".join(f"<object><bbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bbox>"
                        "</object>" for a, b, c, d in boxes)
    else:  # the spelling LVS's script reads: the first child skipped, then the four numbers
        items = "".join(f"<object><bbox><annotator>{n}</annotator><x>{a}</x><y>{b}</y><x>{c}</x><y>{d}</y>"
                        "</bbox></object>" for n, (a, b, c, d) in enumerate(boxes))
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{items}</annotation>")
    return path


def test_flickr_reader_reads_both_spellings_and_refuses_bad_boxes(tmp_path):
    boxes = [(10, 20, 100, 200), (0, 0, 256, 128)]
    for named in (True, False):
        annotation = read_flickr_xml(_flickr_xml(tmp_path / f"a{named}.xml", boxes, named))
        np.testing.assert_array_equal(annotation.boxes, boxes)
        # What LVS / EZ-VSL read: int() of the children after the first, or nothing when that is not 4 numbers
        assert annotation.source_boxes == (None if named else tuple(boxes))
    np.testing.assert_allclose(annotation.boxes_in(512, 128)[0], [20, 10, 200, 100])
    with pytest.raises(AvlocError, match=r"bad\.xml: bbox 1: .* not a box"):
        read_flickr_xml(_flickr_xml(tmp_path / "bad.xml", [(1, 1, 5, 5), (50, 10, 40, 20)]))
    (tmp_path / "none.xml").write_text("<annotation></annotation>")
    with pytest.raises(AvlocError, match=r"none\.xml: no <bbox>"):
        read_flickr_xml(tmp_path / "none.xml")
    (tmp_path / "cut.xml").write_text("<annotation><bbox>")
    with pytest.raises(AvlocError, match=r"cut\.xml: not a readable XML"):
        read_flickr_xml(tmp_path / "cut.xml")


def _wav(path, seconds, rate=16000):
    samples = (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * rate)) / rate) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(samples.tobytes())


def test_flickr_image_and_audio_become_a_still_video_with_a_consensus_frame(tmp_path):
    import cv2

    media = tmp_path / "flickr"
    media.mkdir()
    _flickr_xml(media / "123.xml", [(0, 0, 128, 128), (64, 64, 192, 192)])
    cv2.imwrite(str(media / "123.jpg"), np.full((60, 80, 3), 200, np.uint8))
    _wav(media / "123.wav", 2.0)
    assert main(["datasets", "convert", "flickr", str(media), "--out", str(tmp_path / "native"), "-q"]) == 0
    (record,) = load_manifest(tmp_path / "native").records
    assert record.id == "123" and record.split == "test" and record.label == "unlabelled"
    (frame,) = record.frames
    assert frame.ground_truth == "consensus" and frame.t == pytest.approx(1.0, abs=0.15)
    assert frame.source_format is None  # the named spelling: the evaluators' reading gives 3 numbers per box
    _flickr_xml(media / "123.xml", [(0, 0, 128, 128), (64, 64, 192, 192)], named=False)
    assert main(["datasets", "convert", "flickr", str(media), "--out", str(tmp_path / "native"), "-q"]) == 0
    (record,) = load_manifest(tmp_path / "native").records
    assert record.frames[0].source_format == "flickr"
    assert record.frames[0].source_boxes == ((0, 0, 128, 128), (64, 64, 192, 192))
    np.testing.assert_allclose(frame.boxes[0], [0, 0, 40, 30])  # 256-px grid -> 80 x 60 video
    gt = pixel_ground_truth(AnnotatedMap(None, frame, (60, 80), "all"), (8, 8), "auto")
    assert set(np.unique(gt)) == {0.0, 0.5, 1.0} and gt[3, 3] == 1.0 and gt[0, 0] == 0.5
    assert pixel_ground_truth(AnnotatedMap(None, frame, (60, 80), "all"), (8, 8), "union").max() == 1.0


def test_vggss_boxes_scale_to_the_video_and_names_are_matched_with_padding(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_tone_video(videos / "abc_000030.mp4", seconds=2.0, size=64)
    entries = [{"file": "abc_30", "class": "dog barking", "bbox": [[0.25, 0.5, 0.75, 1.0]]},
               {"file": "gone_000000", "class": "cat", "bbox": [[0, 0, 1, 1]]}]
    (tmp_path / "vggss.json").write_text(json.dumps(entries))
    assert main(["datasets", "convert", "vggss", str(tmp_path / "vggss.json"), "--videos", str(videos),
                 "--out", str(tmp_path / "native"), "--frame-time", "0.5", "-q"]) == 0
    dataset = load_manifest(tmp_path / "native")
    (record,) = dataset.records
    assert record.video.is_symlink() and record.video.resolve() == (videos / "abc_000030.mp4").resolve()
    assert record.label == "dog barking" and record.frames[0].t == 0.5
    np.testing.assert_allclose(record.frames[0].boxes[0], [16, 32, 48, 64])


def test_avatar_frames_become_times_scenarios_and_masks(tmp_path):
    source = tmp_path / "avatar"
    (source / "vid1").mkdir(parents=True)
    make_tone_video(tmp_path / "vid1.mp4", seconds=2.0, size=64, fps=8)
    guitar = {"bbox": [8, 8, 16, 16], "segmentation": [[8, 8, 24, 8, 24, 24]], "audio_visual_category": "guitar",
              "task": "Single-sound"}
    frames = {"4": [guitar], "12": [{**guitar, "segmentation": []}], "1.25": []}
    for name, annotations in frames.items():
        (source / "vid1" / f"{name}.json").write_text(json.dumps(
            {"original_width": 64, "original_height": 64, "annotations": annotations}))
    assert main(["datasets", "convert", "avatar", str(source), "--videos", str(tmp_path),
                 "--out", str(tmp_path / "native"), "-q"]) == 0
    (record,) = load_manifest(tmp_path / "native").records
    assert record.label == "guitar" and record.split == "test"
    assert [f.t for f in record.frames] == [0.5, 1.25, 1.5]  # frame 4 and 12 at 8 fps, then seconds
    first, empty, no_polygon = record.frames
    assert first.scenario == "single" and empty.scenario == "off-screen" and empty.boxes == ()
    assert first.boxes == ((8.0, 8.0, 24.0, 24.0),) and first.masks == (((8.0, 8.0, 24.0, 8.0, 24.0, 24.0),),)
    assert no_polygon.masks == ()
    triangle = pixel_ground_truth(AnnotatedMap(None, first, (64, 64), "single"), (64, 64), "auto")
    assert 0.4 < triangle.sum() / (16 * 16) < 0.6  # the triangle, not its box
    (source / "vid1" / "x.json").write_text(json.dumps({"original_width": 64, "original_height": 64}))
    with pytest.raises(AvlocError, match=r"x\.json: the file name must be a frame index"):
        from avloc.data.formats.convert import convert_dataset

        convert_dataset("avatar", source, tmp_path / "again", videos=tmp_path, progress=False)


@pytest.mark.skipif(not STM.is_dir(), reason="../shared/data/stm-annotations is not available")
def test_audioset_instrument_real_csvs_with_cvat_boxes_rescaled_to_the_video(tmp_path, capsys):
    cvat_root = STM / "annotations" / "AudioSet_Instrument"
    video_id = next(p.parent.name for p in sorted(cvat_root.glob("*/annotations.xml"))
                    if read_cvat(p).has_track and (p.parent.name + ",") in (STM / "splits/AudioSet_Instrument/test.csv")
                    .read_text())
    videos = tmp_path / "videos"
    videos.mkdir()
    make_tone_video(videos / f"{video_id}.mp4", seconds=2.0, size=64)
    assert main(["datasets", "convert", "audioset-instrument", str(STM / "splits" / "AudioSet_Instrument"),
                 "--videos", str(videos), "--boxes", str(cvat_root), "--out", str(tmp_path / "native"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 clips" in out and "911 clips left out" in out
    (record,) = load_manifest(tmp_path / "native").records
    annotation = read_cvat(cvat_root / video_id / "annotations.xml")
    assert record.split == "test" and len(record.frames) == annotation.frame_count
    n = next(i for i, b in enumerate(annotation.boxes) if len(b))
    frame = record.frames[n]
    assert frame.t == pytest.approx(n * 10 / annotation.frame_count)
    scale = np.array([64 / annotation.width, 64 / annotation.height] * 2)
    np.testing.assert_allclose(frame.boxes, np.clip(annotation.boxes[n] * scale, 0, 64), atol=1e-9)


@pytest.mark.skipif(not (STM.is_dir() and AVE.is_dir()), reason="../shared/data is not available")
def test_ave_official_split_segments_and_stm_boxes(tmp_path, caplog):
    from avloc.data.formats.ave import read_annotations, read_split

    samples = read_annotations(AVE / "Annotations.txt")
    split = read_split(AVE, len(samples))
    test_row = int(next(r for r in split["test"] if (samples[r].start, samples[r].end) != (0, 10)
                        and read_cvat(STM / "annotations/AVE" / samples[r].video_id / "annotations.xml").has_track))
    train_row = int(split["train"][0])
    source = tmp_path / "ave"
    source.mkdir()
    for name in ("Annotations.txt", "train_order.h5", "val_order.h5", "test_order.h5"):
        (source / name).symlink_to(AVE / name)
    two_events = [row for row, sample in enumerate(samples) if sample.video_id == "7iIBkME4bSM"]  # test + train
    for row in (test_row, train_row, two_events[0]):
        make_tone_video(source / f"{samples[row].video_id}.mp4", seconds=10.0, size=32, fps=4)
    with caplog.at_level(logging.WARNING, logger="avloc"):
        result_code = main(["datasets", "convert", "ave", str(source), "--boxes", str(STM / "annotations/AVE"),
                            "--out", str(tmp_path / "native"), "--link", "copy", "-q"])
    assert result_code == 0
    records = {r.id: r for r in load_manifest(tmp_path / "native").records}
    test = records[f"{test_row:04d}-{samples[test_row].video_id}"]
    train = records[f"{train_row:04d}-{samples[train_row].video_id}"]
    assert test.split == "test" and train.split == "train" and not train.video.is_symlink()
    assert test.label == samples[test_row].category and train.frames == ()
    start, end = samples[test_row].start, samples[test_row].end
    assert [(s.start, s.end) for s in test.segments] == [(start, end)]
    annotation = read_cvat(STM / "annotations/AVE" / samples[test_row].video_id / "annotations.xml")
    inside = [n for n in range(annotation.frame_count) if start <= n * 10 / annotation.frame_count < end]
    assert [f.t for f in test.frames] == pytest.approx([n * 10 / annotation.frame_count for n in inside])
    assert any(f.boxes for f in test.frames)
    for frame in test.frames:  # the scenario says what the boxes say
        assert frame.scenario == {0: "off-screen", 1: "single"}.get(len(frame.boxes), "multi-entity")
    assert f"{STM / 'annotations/AVE'}: 402 CVAT box files match a clip, 0 do not" in caplog.messages
    # Two-event videos (7iIBkME4bSM among them): the boxes go to the test sample, never to the other one.
    plane, helicopter = (records[f"{row:04d}-7iIBkME4bSM"] for row in two_events)
    assert (plane.split, helicopter.split) == ("test", "train") and plane.frames and helicopter.frames == ()
    assert any("9 samples of videos with several events get no CVAT frames" in m for m in caplog.messages)
    assert f"annotated frames per split: train 0, val 0, test {len(inside) + len(plane.frames)}" in caplog.messages
    # Every annotated frame is scored (by the map of the 4-fps step whose interval holds it), not one per step.
    report = tmp_path / "centre.json"
    assert main(["eval", "baseline:centre", str(tmp_path / "native"), "--out", str(report), "-q"]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert rows["all"]["n_annotated"] == rows["all"]["n_frames"] == len(inside) + len(plane.frames)
    assert rows["all"]["n_frames"] > 2 * 40  # two 10-s test videos, 40 steps each: denser than the steps


def test_convert_refuses_unknown_layouts_and_no_videos(tmp_path, capsys):
    assert main(["datasets", "convert", "vggss", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    (tmp_path / "v.json").write_text(json.dumps([{"file": "a", "class": "c", "bbox": [[0, 0, 1, 1]]}]))
    assert main(["datasets", "convert", "vggss", str(tmp_path / "v.json"), "--out", str(tmp_path / "o")]) == 2
    assert "none of the 1 clips' videos was found" in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


def test_converted_dataset_trains_and_evaluates_with_its_own_ground_truth(tmp_path):
    """A converted Flickr-like set: eval --gt auto uses the consensus map, union is higher."""
    videos = tmp_path / "media"
    videos.mkdir()
    for index in range(2):
        frames = np.zeros((8, 64, 64, 3), np.uint8)
        audio = np.zeros(16000 * 2, np.float32)
        write_video(videos / f"{index}.mp4", frames, 4, audio, 16000)
        _flickr_xml(videos / f"{index}.xml", [(0, 0, 128, 256), (0, 0, 128, 128)])  # left half, top-left
    assert main(["datasets", "convert", "flickr", str(videos), "--out", str(tmp_path / "native"), "-q"]) == 0
    reports = {}
    for gt in ("auto", "union"):
        out = tmp_path / f"{gt}.json"
        assert main(["eval", "baseline:centre", str(tmp_path / "native"), "--protocol", "lvs", "--gt", gt,
                     "--out", str(out), "-q"]) == 0
        reports[gt] = json.loads(out.read_text())
    auto, union = (reports[g]["rows"]["all"]["ciou_at"] for g in ("auto", "union"))
    assert reports["auto"]["protocol"]["gt_convention"] == "auto"
    # Consensus: 1 on the top-left quarter, 0.5 on the bottom-left one; union: 1 on the left half.
    # The centre map's pixels above its median, a share a of the N pixels, cover every quarter
    # alike: union cIoU = (a/2) / (1/2 + a/2), consensus (3a/8) / (3/8 + a/2).
    a = union / (1 - union)
    assert auto == pytest.approx((3 * a / 8) / (3 / 8 + a / 2), rel=1e-3)
    assert not math.isclose(auto, union)


# ---------------------------------------------------------------------------------------
# AVE's native layout (Annotations.txt + *_order.h5 + 10-s videos) with CVAT boxes


def _ave_folder(root, rows, split, header=False):
    """An AVE folder: ``rows`` as Annotations.txt lines, ``split`` = {name: row indices}."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{row}\n" for row in rows)
    (root / "Annotations.txt").write_text(("Category&VideoID&Quality&StartTime&EndTime\n" if header else "") + text)
    for name in ("train", "val", "test"):
        with h5py.File(root / f"{name}_order.h5", "w") as out:
            out["order"] = np.asarray(split.get(name, []), np.int64)
    return root


def _cvat_file(folder, frames, size=10, width=64, height=64):
    """A CVAT dump of ``size`` frames; ``frames`` = {frame: [(x1, y1, x2, y2), ...]}, one track per box slot."""
    slots = max((len(b) for b in frames.values()), default=0)
    tracks = ""
    for slot in range(slots):
        boxes = "".join(f'<box frame="{n}" outside="0" xtl="{b[slot][0]}" ytl="{b[slot][1]}" xbr="{b[slot][2]}" '
                        f'ybr="{b[slot][3]}"/>' if len(b) > slot else f'<box frame="{n}" outside="1" xtl="0" ytl="0" '
                        'xbr="1" ybr="1"/>' for n, b in sorted(frames.items()))
        tracks += f'<track id="{slot}" label="sounding object">{boxes}</track>'
    folder.mkdir(parents=True)
    (folder / "annotations.xml").write_text(
        f"<annotations><meta><task><size>{size}</size><original_size><width>{width}</width><height>{height}</height>"
        f"</original_size></task><source>{folder.name}.mp4</source></meta>{tracks}</annotations>")


def _convert_ave(source, boxes, out, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="avloc"):
        code = main(["datasets", "convert", "ave", str(source), "--boxes", str(boxes), "--out", str(out), "-q"])
    return code, caplog.messages


def test_ave_scenarios_come_from_the_boxes_inside_the_event(tmp_path, caplog):
    """One box = single, several = multi-entity, none inside the event = off-screen; outside it: not scored."""
    source = _ave_folder(tmp_path / "AVE", ["Dog&aaa&good&2&6", "Cat&bbb&good&0&10", "Cat&ccc&good&0&10"],
                         {"test": [0, 1], "train": [2]})
    for name in ("aaa", "bbb", "ccc"):
        make_tone_video(source / f"{name}.mp4", seconds=10.0, size=32, fps=2)
    one, two = [(8, 8, 40, 40)], [(8, 8, 20, 20), (30, 30, 60, 60)]
    _cvat_file(tmp_path / "boxes" / "aaa", {0: one, 3: one, 4: two, 8: two})  # frame n at n s
    _cvat_file(tmp_path / "boxes" / "bbb", {})  # no track: no visible sounding object
    code, notes = _convert_ave(source, tmp_path / "boxes", tmp_path / "native", caplog)
    assert code == 0
    records = {r.id: r for r in load_manifest(tmp_path / "native").records}
    aaa, bbb = records["0000-aaa"], records["0001-bbb"]
    assert [(f.t, f.scenario) for f in aaa.frames] == [(2.0, "off-screen"), (3.0, "single"), (4.0, "multi-entity"),
                                                      (5.0, "off-screen")]
    np.testing.assert_allclose(aaa.frames[1].boxes, [[4, 4, 20, 20]])  # 64-px task -> 32-px video
    assert len(bbb.frames) == 10 and {f.scenario for f in bbb.frames} == {"off-screen"}
    assert records["0002-ccc"].frames == ()
    assert any("6 CVAT frames outside their sample's event" in n and "2 of them had boxes" in n for n in notes)
    assert "annotated frames per split: train 0, val 0, test 14" in notes


def test_ave_boxes_folder_one_level_too_high_is_refused_naming_the_right_one(tmp_path, caplog, capsys):
    source = _ave_folder(tmp_path / "AVE", ["Dog&aaa&good&0&10", "Dog&zzz&good&0&10"], {"test": [0, 1]})
    make_tone_video(source / "aaa.mp4", seconds=10.0, size=32, fps=1)
    annotations = tmp_path / "annotations"
    _cvat_file(annotations / "AVE" / "aaa", {0: [(1, 1, 9, 9)]})
    _cvat_file(annotations / "AVE" / "unknown", {})
    _cvat_file(annotations / "AudioSet_Instrument" / "other", {})
    code, _ = _convert_ave(source, annotations, tmp_path / "native", caplog)
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and not (tmp_path / "native" / "manifest.jsonl").exists()
    assert f"{annotations}: it holds no <video id>/annotations.xml file for a clip" in error
    assert f"{annotations / 'AVE'} holds 1 that do: pass --boxes {annotations / 'AVE'}" in error
    code, notes = _convert_ave(source, annotations / "AVE", tmp_path / "native", caplog)
    assert code == 0
    assert f"{annotations / 'AVE'}: 1 CVAT box files match a clip, 1 do not (unknown)" in notes
    assert any("1 test clips have no CVAT file" in n and "0001-zzz" in n for n in notes)
    with pytest.raises(AvlocError, match="none of its 1 <video id>/annotations.xml files names a clip.*no subfolder"):
        from avloc.data.formats.convert import convert_dataset

        convert_dataset("ave", source, tmp_path / "o", boxes=annotations / "AudioSet_Instrument", progress=False)


def test_ave_header_line_is_skipped_and_the_split_rows_stay_the_same(tmp_path, caplog):
    from avloc.data.formats.ave import read_annotations
    from avloc.data.formats.check import check_dataset
    from avloc.data.sources import load_dataset

    rows = ["Dog&aaa&good&0&10", "Cat&bbb&good&2&5", "Dog&ccc&good&1&3"]
    split = {"train": [2], "val": [1], "test": [0]}
    plain = _ave_folder(tmp_path / "plain", rows, split)
    headed = _ave_folder(tmp_path / "headed", rows, split, header=True)
    assert read_annotations(headed / "Annotations.txt") == read_annotations(plain / "Annotations.txt")
    with_header, without = (load_dataset(f, require_videos=False) for f in (headed, plain))
    assert [(r.id, r.split, r.label, r.segments) for r in with_header.records] == \
        [(r.id, r.split, r.label, r.segments) for r in without.records]
    assert [r.id for r in with_header.split("val")] == ["0001-bbb"]
    assert ("Annotations.txt: header line 'Category&VideoID&Quality&StartTime&EndTime' skipped (row 0 is the first "
            "data line)") in check_dataset(headed)
    make_tone_video(headed / "aaa.mp4", seconds=10.0, size=32, fps=1)
    _cvat_file(tmp_path / "boxes" / "aaa", {0: [(1, 1, 9, 9)]})
    code, notes = _convert_ave(headed, tmp_path / "boxes", tmp_path / "native", caplog)
    assert code == 0 and any("header line" in n and "skipped" in n for n in notes)


def test_ave_two_event_video_boxes_go_to_its_test_sample_only(tmp_path, caplog):
    source = _ave_folder(tmp_path / "AVE", ["Fixed-wing aircraft&vvv&good&0&10", "Helicopter&vvv&good&0&10",
                                            "Dog&www&good&0&10", "Cat&www&good&0&10"],
                         {"test": [0], "train": [1, 2, 3]})
    for name in ("vvv", "www"):
        make_tone_video(source / f"{name}.mp4", seconds=10.0, size=32, fps=1)
    _cvat_file(tmp_path / "boxes" / "vvv", {n: [(1, 1, 9, 9)] for n in range(10)})
    _cvat_file(tmp_path / "boxes" / "www", {n: [(1, 1, 9, 9)] for n in range(10)})
    code, notes = _convert_ave(source, tmp_path / "boxes", tmp_path / "native", caplog)
    assert code == 0
    records = {r.id: r for r in load_manifest(tmp_path / "native").records}
    assert len(records["0000-vvv"].frames) == 10 and records["0001-vvv"].frames == ()
    assert records["0002-www"].frames == records["0003-www"].frames == ()  # two train samples: whose? neither
    assert any("3 samples of videos with several events get no CVAT frames" in n and "0001-vvv" in n for n in notes)
    assert any("1 CVAT files not used" in n and "www" in n for n in notes)
    assert "annotated frames per split: train 0, val 0, test 10" in notes
