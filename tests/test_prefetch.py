"""avloc.io.prefetch: decoding ahead of the encoders gives exactly what decoding in line gives."""

import threading

import pytest
import torch

from avloc.io.decode import iter_steps
from avloc.io.prefetch import DecodeJob, decoded_chunks, prefetched

OPTIONS = {"fps": 4.0, "size": 32, "sample_rate": 16000}


def _jobs(dataset):
    return [DecodeJob(f"clip/{index}", dataset / "videos" / f"{index}.mp4", OPTIONS) for index in range(3)]


def _gathered(chunks):
    """Per key: the chunks' sizes and lasts, and their frames, segments and times joined."""
    found = {}
    for chunk in chunks:
        assert chunk.error is None, chunk.error
        entry = found.setdefault(chunk.key, {"sizes": [], "lasts": [], "frames": [], "segments": [], "times": []})
        entry["sizes"].append(len(chunk.times))
        entry["lasts"].append(chunk.last)
        for name in ("frames", "segments", "times"):
            entry[name].append(getattr(chunk, name))
    return found


@pytest.mark.parametrize("workers", [0, 2])
def test_chunks_hold_every_step_in_order_whoever_decodes(tiny_dataset, workers):
    found = _gathered(decoded_chunks(_jobs(tiny_dataset), chunk=3, workers=workers))
    assert sorted(found) == ["clip/0", "clip/1", "clip/2"]
    for index, (key, entry) in enumerate(sorted(found.items())):
        assert entry["sizes"] == [3, 3, 2] and entry["lasts"] == [False, False, True]  # 2 s at 4 fps: 8 steps
        steps = list(iter_steps(tiny_dataset / "videos" / f"{index}.mp4", **OPTIONS))
        assert torch.equal(torch.cat(entry["frames"]), torch.stack([step.frame for step in steps])), key
        assert torch.equal(torch.cat(entry["segments"]), torch.stack([step.segment for step in steps])), key
        assert torch.cat(entry["times"]).tolist() == [step.time for step in steps]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_video_that_cannot_be_decoded_is_one_error_chunk(tiny_dataset, tmp_path, workers):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    jobs = [*_jobs(tiny_dataset)[:2], DecodeJob("broken", broken, OPTIONS)]
    chunks = list(decoded_chunks(jobs, chunk=4, workers=workers))
    (failed,) = [chunk for chunk in chunks if chunk.key == "broken"]
    assert failed.last and str(broken) in failed.error and "\n" not in failed.error
    assert sum(chunk.last for chunk in chunks if chunk.key != "broken") == 2  # the others decoded in full


def test_prefetched_keeps_order_raises_where_the_error_was_and_stops_when_closed():
    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield from (1, 2)
        raise ValueError("third item")

    seen = []
    with pytest.raises(ValueError, match="third item"):
        for item in prefetched(failing()):
            seen.append(item)
    assert seen == [1, 2]
    made = []

    def endless():
        while True:
            made.append(1)
            yield len(made)

    stream = prefetched(endless(), depth=2)
    assert next(stream) == 1
    stream.close()  # the thread stops: it made at most depth + 2 items
    assert len(made) <= 4 and not any(t.name == "avloc-prefetch" for t in threading.enumerate())
