"""`avloc datasets check` opens every video of a native dataset and lists every bad line."""

import json

from avloc.cli import main
from avloc.data.formats.check import check_dataset, inspect_dataset
from avloc.data.manifest import scan_manifest
from broken_videos import CLIPS, make_broken_dataset
from conftest import make_tone_video


def test_every_bad_video_is_reported_with_its_line_and_the_exit_status_is_1(tmp_path, capsys):
    root = make_broken_dataset(tmp_path / "ds", seconds=1.0)
    # two more lines: a good video too short for its annotated frame, and a line that is not JSON
    make_tone_video(root / "videos" / "short.mp4", seconds=1.0, size=32)
    with open(root / "manifest.jsonl", "a") as manifest:
        manifest.write(json.dumps({"id": "i-short", "video": "videos/short.mp4", "split": "test", "label": "bell",
                                   "frames": [{"t": 3.5, "boxes": [], "scenario": "off-screen"}]}) + "\n")
        manifest.write("{not json\n")
    assert main(["datasets", "check", str(root)]) == 1
    captured = capsys.readouterr()
    out, error = captured.out, captured.err.strip()
    lines = out.splitlines()
    assert "bad manifest lines: 1" in lines
    assert any(line.startswith("  ") and "manifest.jsonl:10: not valid JSON" in line for line in lines)
    assert "clips whose video is unusable: 5" in lines
    reasons = {number: line for line in lines for number in range(1, 10) if f"manifest.jsonl:{number}: clip" in line}
    assert set(reasons) == {2, 4, 6, 8, 9}  # text, silent, empty, missing, too short; the good ones pass
    assert "b.mp4: not a readable video file" in reasons[2]
    assert "d.mp4: no audio stream" in reasons[4]
    assert "f.mp4: an empty file (0 bytes), not a video" in reasons[6]
    assert "h.mp4: no such file" in reasons[8]
    assert "short.mp4: 1 s long, but 1 annotated frame(s) lie at or after its end (the first at 3.5 s)" in reasons[9]
    assert "4 of 9 videos usable (readable, with sound, long enough for their annotations)" in lines
    assert "videos: 1 missing: videos/h.mp4" in lines
    assert error == f"avloc: error: {root.resolve() / 'manifest.jsonl'}: 6 problems, listed above: a run on this " \
        "dataset stops at the first (--skip-broken on extract, train and eval leaves the broken clips out)"
    report = inspect_dataset(root)
    assert report.problems == 6 and report.lines == check_dataset(root)


def test_a_clean_dataset_passes_and_segments_may_end_a_little_after_the_video(tmp_path, capsys):
    root = tmp_path / "ok"
    make_tone_video(root / "v.mp4", seconds=1.0, size=32)
    line = {"id": "x", "video": "v.mp4", "split": "test", "label": "bell",
            "segments": [{"start": 0.0, "end": 1.4, "label": "bell"}]}  # 0.4 s past the end: within the slack
    (root / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    assert main(["datasets", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "videos: none missing" in out and "1 of 1 videos usable" in out
    line["segments"][0]["end"] = 2.0
    (root / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    assert main(["datasets", "check", str(root)]) == 1
    assert "v.mp4: 1 s long, but its segments run to 2 s" in capsys.readouterr().out


def test_scan_manifest_goes_on_past_bad_lines(tmp_path):
    root = make_broken_dataset(tmp_path, seconds=0.5)
    text = (root / "manifest.jsonl").read_text().splitlines()
    text.insert(1, json.dumps({"id": "a-good", "video": "videos/a.mp4", "split": "train", "label": "x"}))
    text.insert(3, "[1, 2]")
    (root / "manifest.jsonl").write_text("\n".join(text) + "\n")
    scan = scan_manifest(root)
    assert [number for number, _ in scan.lines] == [1, 3, 5, 6, 7, 8, 9, 10]
    assert len(scan.lines) == len(CLIPS)
    assert scan.errors[0].endswith("manifest.jsonl:2: duplicate id 'a-good' (first on line 1)")
    assert scan.errors[1].endswith("manifest.jsonl:4: expected a JSON object")
