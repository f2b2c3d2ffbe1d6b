"""Decoding: frame choice by timestamp, audio placement by timestamp, streaming, errors."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avloc.io.decode import AVStep, frame_times, iter_frames, iter_steps, probe, read_audio, read_clip
from avloc.io.write import write_video
from avloc.types import AvlocError

FPS = 8  # frame rate of the generated videos
SECONDS = 4.0
SR = 16000
BURST_AT = 2.1  # seconds: onset of the tone burst in the generated audio
TOL = round(0.003 * SR)  # 3 ms: AAC smears an onset by a sample or two


def level(index: int) -> int:
    """The flat grey level of frame ``index`` (distinct levels 7 apart)."""
    return 10 + 7 * index


def index_of(frame: torch.Tensor) -> int:
    """Decode the frame index from a ``(3, H, W)`` flat grey frame."""
    return round((frame.mean().item() * 255 - 10) / 7)


def burst(seconds: float, sample_rate: int, at: float, length: float = 0.02, amplitude: float = 0.5) -> np.ndarray:
    """Silence with a 1 kHz tone burst of ``length`` seconds starting at ``at``."""
    audio = np.zeros(round(seconds * sample_rate), np.float32)
    first, count = round(at * sample_rate), round(length * sample_rate)
    audio[first : first + count] = amplitude * np.sin(2 * np.pi * 1000 * np.arange(count) / sample_rate)
    return audio


def onset(audio: np.ndarray, threshold: float = 0.1) -> int:
    return int(np.argmax(np.abs(audio) > threshold))


def grey_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    values = np.array([level(i) for i in range(count)], np.uint8)
    return np.broadcast_to(values[:, None, None, None], (count, height, width, 3)).copy()  # (T,) -> (T, H, W, 3)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """4 s, 8 fps, 64x48 grey frames (level encodes the index), 16 kHz mono with a burst at 2.1 s."""
    path = tmp_path_factory.mktemp("decode") / "grey.mp4"
    write_video(path, grey_frames(round(SECONDS * FPS)), FPS, burst(SECONDS, SR, BURST_AT), SR)
    return path


def test_probe(video):
    info = probe(video)
    assert (info.width, info.height) == (64, 48)
    assert info.duration == pytest.approx(SECONDS, abs=1e-3)
    assert info.frame_rate == pytest.approx(FPS)
    assert (info.has_audio, info.sample_rate, info.channels) == (True, SR, 1)
    assert info.path == video


def test_frame_times():
    np.testing.assert_allclose(frame_times(1.0, 2.2, 4), [1.125, 1.375, 1.625, 1.875])
    assert frame_times(1.0, 2.2, 4).dtype == np.float64
    assert len(frame_times(0.0, 0.3, 10)) == 3  # 0.3 * 10 = 2.9999999999999996
    assert len(frame_times(0.0, 0.2, 4)) == 0
    with pytest.raises(AvlocError):
        frame_times(0.0, 1.0, 0)


@pytest.mark.parametrize("fps", [5.0, 20.0])  # slower and faster than the video's 8 fps
def test_each_step_shows_the_frame_displayed_at_its_time(video, fps):
    clip = read_clip(video, fps=fps, size=None)
    expected_times = (np.arange(round(SECONDS * fps)) + 0.5) / fps
    np.testing.assert_allclose(clip.times.numpy(), expected_times)
    assert clip.frames.shape == (len(expected_times), 3, 48, 64)
    assert clip.frames.dtype == torch.float32 and 0 <= clip.frames.min() and clip.frames.max() <= 1
    got = [index_of(frame) for frame in clip.frames]
    assert got == [int(np.floor(t * FPS)) for t in expected_times]


def test_audio_length_tiling_and_tone_alignment(video):
    clip = read_clip(video, fps=4, size=16)
    assert clip.waveform.shape == (round(SECONDS * SR),) and clip.waveform.dtype == torch.float32
    assert clip.segments.shape == (16, SR // 4) and clip.segments.dtype == torch.float32
    # Default window = 1 / fps: the segments tile the waveform exactly.
    torch.testing.assert_close(clip.segments.reshape(-1), clip.waveform)
    assert abs(onset(clip.waveform.numpy()) - round(BURST_AT * SR)) <= TOL
    energy = clip.segments.square().sum(dim=1)  # (T, L) -> (T,)
    assert energy.argmax().item() == int(BURST_AT * 4)  # step 8 covers [2.0, 2.25)
    assert energy[8] > 100 * (energy.sum() - energy[8])


def test_longer_audio_window_is_centred_on_the_step(video):
    clip = read_clip(video, fps=4, size=16, audio_window=0.5)
    assert clip.segments.shape == (16, SR // 2)
    for k in (7, 8):  # steps at 1.875, 2.125 s: windows [t - 0.25, t + 0.25) hold the burst
        window_start = clip.times[k].item() - 0.25
        assert abs(onset(clip.segments[k].numpy()) - (BURST_AT - window_start) * SR) <= TOL
    for k in (6, 9):  # [1.375, 1.875) and [2.125, 2.625): before and after the 20 ms burst
        assert clip.segments[k].abs().max() < 0.05


def test_start_end_seek_forward(video):
    full = read_clip(video, fps=4, size=16)
    part = read_clip(video, fps=4, size=16, start=2.0, end=3.0)  # seeks (start > 0.5 s)
    np.testing.assert_allclose(part.times.numpy(), [2.125, 2.375, 2.625, 2.875])
    assert [index_of(f) for f in part.frames] == [17, 19, 21, 23]
    assert part.start == 2.0 and part.waveform.shape == (SR,)
    assert part.segments[0].abs().max() > 0.4  # the burst at 2.1 s
    torch.testing.assert_close(part.segments, full.segments[8:12], atol=1e-4, rtol=0)
    torch.testing.assert_close(part.waveform, full.waveform[2 * SR : 3 * SR], atol=1e-4, rtol=0)


def test_start_before_the_burst_keeps_alignment(video):
    audio = read_audio(video, start=1.3, end=2.3)  # seek with preroll
    assert audio.shape == (SR,)
    assert abs(onset(audio.numpy()) - round((BURST_AT - 1.3) * SR)) <= TOL


def test_iter_steps_streams_the_same_steps(video):
    steps = iter_steps(video, fps=4, size=(24, 40), start=1.0, end=2.0)
    first = next(steps)
    assert isinstance(first, AVStep) and first.index == 0 and first.time == pytest.approx(1.125)
    assert first.frame.shape == (3, 24, 40) and first.segment.shape == (SR // 4,)
    rest = list(steps)
    assert [s.index for s in rest] == [1, 2, 3]
    clip = read_clip(video, fps=4, size=(24, 40), start=1.0, end=2.0)
    torch.testing.assert_close(torch.stack([first.frame] + [s.frame for s in rest]), clip.frames)


@pytest.mark.parametrize(("start", "end"), [(None, None), (0.3, 2.3), (1.06, 3.5)])
def test_one_pass_hands_every_original_frame_over_with_the_steps(video, start, end):
    """iter_steps(frames_to=...) gives the same steps and, in order, every frame iter_frames gives
    (same times, same pixels), each by the time the first step after it is yielded."""
    handed = []
    steps = []
    for step in iter_steps(video, fps=4, size=16, start=start, end=end,
                           frames_to=lambda moment, frame: handed.append((moment, frame.to_ndarray(format="rgb24")))):
        assert handed[-1][0] >= step.time - 1e-6  # the frames up to its time are handed over
        steps.append(step)
    clip = read_clip(video, fps=4, size=16, start=start, end=end)
    torch.testing.assert_close(torch.stack([s.frame for s in steps]), clip.frames)
    torch.testing.assert_close(torch.stack([s.segment for s in steps]), clip.segments)
    expected = list(iter_frames(video, start, end))
    assert [t for t, _ in handed] == pytest.approx([t for t, _ in expected]) and len(expected) > 8
    assert all((a == b).all() for (_, a), (_, b) in zip(handed, expected))


def photo(height: int, width: int) -> np.ndarray:
    """A real photograph (matplotlib's sample Grace Hopper portrait, 600x512) at ``height x width``, RGB uint8."""
    import cv2
    from matplotlib import cbook

    image = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))[:, :, ::-1]  # BGR -> RGB
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    shrink = height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def zone_plate(height: int, width: int) -> np.ndarray:
    """A synthetic worst case for resizing: a zone plate (every frequency up to aliasing), 8-px stripes, 8-px checks."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rings = 0.5 + 0.5 * np.cos(2 * np.pi * 60 * ((x - width / 2) ** 2 + (y - height / 2) ** 2)
                              / max(height, width) ** 2)
    image = np.stack([rings, (x % 16 < 8), (x // 8 + y // 8) % 2], axis=-1)  # (H, W, 3) in [0, 1]
    return np.round(255 * image).astype(np.uint8)


# Resizing is swscale's antialiased bilinear on uint8 (decode.py), the reference is the former
# F.interpolate(antialias=True) on the float frame. Tolerances, in units of 1/255:
# - away from the edge: the uint8 rounding of the output (0.5) plus swscale's 14-bit fixed-point
#   weights (measured max 0.69), so 1;
# - everywhere: swscale repeats the edge pixel where torch renormalises the cut filter, which moves
#   the outermost one or two rows and columns (measured max 10.7 on a 1080p zone plate), so 16;
# - on average: rounding only (measured 0.22-0.28), so 0.35.
INNER_MAX, EDGE_MAX, MEAN = 1.0 / 255, 16.0 / 255, 0.35 / 255
EDGE = 2  # rows / columns counted as "the edge"


@pytest.mark.parametrize("image, size", [
    (photo(600, 512), (256, 256)),   # the photo as it is: downscale 2.3 x 2
    (photo(240, 320), (256, 256)),   # the 240x320 -> 256: up in height, down in width
    (photo(1080, 1920), (224, 300)),  # 1080p, a non-square output
    (photo(96, 128), (256, 256)),    # a small video: upscaling
    (zone_plate(240, 320), (256, 256)),
    (zone_plate(1080, 1920), (256, 256)),
    (zone_plate(96, 128), (200, 256)),
], ids=["photo-600x512", "photo-240x320", "photo-1080p", "photo-96x128-up", "zone-240x320", "zone-1080p",
        "zone-96x128-up"])
def test_resize_matches_antialiased_bilinear(tmp_path, image, size):
    path = tmp_path / "still.mp4"
    write_video(path, np.stack([image, image]), 2)
    original = read_clip(path, fps=2, size=None)
    resized = read_clip(path, fps=2, size=size)
    assert resized.frames.shape == (2, 3, *size) and resized.frames.dtype == torch.float32
    assert 0 <= resized.frames.min() and resized.frames.max() <= 1
    expected = F.interpolate(original.frames, size=size, mode="bilinear", antialias=True, align_corners=False)
    difference = (resized.frames - expected.clamp(0, 1)).abs()  # (T, 3, H, W)
    assert difference[..., EDGE:-EDGE, EDGE:-EDGE].max() <= INNER_MAX
    assert difference.max() <= EDGE_MAX
    assert difference.mean() <= MEAN


def test_resize_is_antialiased_deterministic_and_ignores_torch_threads(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "noise.mp4"
    write_video(path, frames, 2)
    original = read_clip(path, fps=2, size=None)
    resized = read_clip(path, fps=2, size=16)
    assert original.original_size == resized.original_size == (48, 64)
    # Antialiasing averages the noise: far smaller spread than sampling single pixels.
    assert resized.frames.std() < 0.5 * original.frames.std()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = read_clip(path, fps=2, size=16).frames
        torch.set_num_threads(2)
        two = read_clip(path, fps=2, size=16).frames
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, resized.frames) and torch.equal(two, resized.frames)


def write_vfr(path: Path, pts_ms: list[int]) -> None:
    """A variable-frame-rate MP4: frame i has grey level(i) and pts pts_ms[i] milliseconds."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"bf": "0", "crf": "10"}
        for index, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), level(index), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize("width", [120, 426])  # not multiples of 16 (426: 240p at 16:9)
def test_frames_of_any_width_decode_exactly_and_deterministically(tmp_path, width):
    # swscale's direct YUV -> planar RGB conversion garbled the last width % 16 columns, differently each run.
    rng = np.random.default_rng(0)
    path = tmp_path / "odd.mp4"
    write_video(path, rng.integers(0, 256, (4, 90, width, 3), dtype=np.uint8), 4.0, np.zeros(16000, np.float32), 16000)
    with av.open(str(path)) as container:
        reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    full = [(step.frame.permute(1, 2, 0).numpy() * 255).round() for step in iter_steps(path, fps=4.0, size=None)]
    assert len(full) == len(reference)
    assert all(np.array_equal(ours, theirs) for ours, theirs in zip(full, reference))
    resized = [torch.stack([step.frame for step in iter_steps(path, fps=4.0, size=64)]) for _ in range(3)]
    assert torch.equal(resized[0], resized[1]) and torch.equal(resized[0], resized[2])


def test_variable_frame_rate_uses_timestamps(tmp_path):
    pts_ms = [0, 100, 130, 400, 410, 800, 1000, 1300, 1450]
    path = tmp_path / "vfr.mp4"
    write_vfr(path, pts_ms)
    clip = read_clip(path, fps=10, size=None, end=1.4)
    expected = [int(np.searchsorted(pts_ms, t * 1000, side="right")) - 1 for t in clip.times.numpy()]
    assert expected != list(range(len(expected)))  # a frame-count rule would fail here
    assert [index_of(f) for f in clip.frames] == expected
    assert not probe(path).has_audio


def write_with_pyav(path: Path, fmt: str, bframes: int, audio_delay: float = 0.0) -> None:
    """Like the ``video`` fixture (grey levels, burst at 2.1 s), any container, B-frames, audio delayed."""
    with av.open(str(path), mode="w", format=fmt) as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"bf": str(bframes), "g": "8", "crf": "18"}
        audio = container.add_stream("aac", rate=SR, layout="mono")
        for image in grey_frames(round(SECONDS * FPS)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        samples = burst(SECONDS, SR, BURST_AT)
        for offset in range(0, len(samples), 1024):
            block = samples[None, offset : offset + 1024].copy()  # (1, 1024)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            frame.sample_rate, frame.time_base = SR, Fraction(1, SR)
            frame.pts = offset + round(audio_delay * SR)
            container.mux(audio.encode(frame))
        container.mux(audio.encode())


@pytest.mark.parametrize(
    ("name", "fmt", "bframes", "delay"),
    [
        ("b.mkv", "matroska", 3, 0.0),  # no stream durations in the headers
        ("b.ts", "mpegts", 2, 0.0),  # timestamps start near 1.4 s; no edit list for AAC priming
        ("late_audio.mp4", "mp4", 0, 0.5),  # the audio track starts 0.5 s after the video
    ],
)
def test_containers_b_frames_and_offsets(tmp_path, name, fmt, bframes, delay):
    path = tmp_path / name
    write_with_pyav(path, fmt, bframes, delay)
    assert probe(path).duration == pytest.approx(SECONDS + delay, abs=0.1)
    for start in (0.0, 2.0):
        clip = read_clip(path, fps=4, size=None, start=start, end=3.5)
        times = clip.times.numpy()
        assert [index_of(f) for f in clip.frames] == [int(np.floor(t * FPS)) for t in times]
        assert abs(onset(clip.waveform.numpy()) - round((BURST_AT + delay - start) * SR)) <= TOL


def test_stereo_44k_is_resampled_to_mono_16k(tmp_path):
    sr = 44100
    left, right = burst(2.0, sr, at=1.0, length=0.1, amplitude=0.4), burst(2.0, sr, at=1.0, length=0.1, amplitude=0.2)
    path = tmp_path / "stereo.mp4"
    write_video(path, grey_frames(4, 32, 32), 2, np.stack([left, right]), sr)  # (2, S)
    info = probe(path)
    assert (info.sample_rate, info.channels) == (sr, 2)
    clip = read_clip(path, fps=4, size=None, sample_rate=SR)
    assert clip.waveform.shape == (2 * SR,) and clip.segments.shape == (8, SR // 4)
    audio = clip.waveform.numpy()
    assert abs(onset(audio) - SR) <= TOL
    # The mean of the channels: 0.3 (FFmpeg's own downmix would give 0.707 * 0.6 = 0.42).
    assert np.abs(audio[SR + 200 : SR + 1400]).max() == pytest.approx(0.3, rel=0.05)
    # Resampled to 16 kHz: the 1 kHz tone has 16 samples per period.
    spectrum = np.abs(np.fft.rfft(audio[SR + 100 : SR + 1700]))
    assert np.argmax(spectrum) * SR / 1600 == pytest.approx(1000, abs=10)


def test_no_audio_stream_gives_zero_segments(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video(path, grey_frames(8, 32, 32), 4)
    info = probe(path)
    assert not info.has_audio and info.sample_rate is None and info.channels is None
    clip = read_clip(path, fps=4, size=None)
    assert clip.segments.shape == (8, SR // 4) and not clip.segments.any()
    assert clip.waveform.shape == (2 * SR,) and not clip.waveform.any()
    assert [index_of(f) for f in clip.frames] == list(range(8))


def test_iter_steps_memory_is_bounded(tmp_path):
    seconds = 30.0
    path = tmp_path / "long.mp4"
    write_video(path, np.zeros((round(seconds * 2), 16, 16, 3), np.uint8), 2, burst(seconds, SR, at=1.0), SR)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_steps(path, fps=4, size=None))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 120
    assert peak < 0.25 * seconds * SR * 4  # a quarter of the clip's float32 audio


def write_audio_only(path: Path) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SR, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("name", "kwargs", "problem"),
    [
        ("missing.mp4", {}, "no such file"),
        ("text.mp4", {}, "not a readable video"),
        ("audio_only.mp4", {}, "no video stream"),
        ("grey.mp4", {"start": 2.0, "end": 2.0}, "not before end"),
        ("grey.mp4", {"start": 3.0, "end": 1.0}, "not before end"),
        ("grey.mp4", {"start": 9.0}, "beyond the duration"),
        ("grey.mp4", {"end": 9.0}, "beyond the duration"),
        ("grey.mp4", {"start": -1.0}, "negative"),
        ("grey.mp4", {"fps": 0}, "fps"),
        ("grey.mp4", {"fps": -4.0}, "fps"),
        ("grey.mp4", {"size": 0}, "size"),
        ("grey.mp4", {"audio_window": 0.0}, "audio_window"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(video, tmp_path, name, kwargs, problem):
    path = video if name == "grey.mp4" else tmp_path / name
    if name == "text.mp4":
        path.write_text("not a video\n")
    if name == "audio_only.mp4":
        write_audio_only(path)
    for call in (read_clip, iter_steps):  # iter_steps checks eagerly, before the first step
        with pytest.raises(AvlocError) as caught:
            call(path, **kwargs)
        message = str(caught.value)
        assert str(path) in message and problem in message and "\n" not in message
    if not kwargs:
        with pytest.raises(AvlocError, match=problem):
            probe(path)


def test_damaged_files_are_refused_with_the_reason(tmp_path):
    from hostile_files import avi, tone_faststart, video_with_audio

    cases = [(tone_faststart()[:7000], "the video stream ends at 0.625 s, but the file's index says 1.000 s"),
             (tone_faststart()[:4000], "cut short"),
             (video_with_audio(float("nan")), "NaN or infinite samples"),
             (video_with_audio(0.0, samples=0), "the audio stream holds no samples"),
             (avi(16000, 16000)(), "frames of 16000x16000 pixels are beyond the 8192-pixel limit")]
    for index, (data, reason) in enumerate(cases):
        path = tmp_path / f"{index}.mp4"
        path.write_bytes(data)
        with pytest.raises(AvlocError, match=reason):
            read_clip(path, fps=4, size=32)
    complete = tmp_path / "complete.mp4"
    complete.write_bytes(tone_faststart())
    assert len(read_clip(complete, fps=4, size=32).times) == 4  # the same file whole: no complaint
    with pytest.raises(AvlocError, match="beyond the 8192-pixel limit"):
        read_clip(complete, size=9000)
    with pytest.raises(AvlocError, match="holds no audio sample"):
        read_clip(complete, fps=1e9)
