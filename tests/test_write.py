"""avloc.io.write.VideoWriter: x264's thread count is a choice of speed only."""

import numpy as np
import pytest

from avloc.io.decode import iter_frames
from avloc.io.write import VideoWriter


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    frames = np.empty((6, 48, 64, 3), np.uint8)  # (T, H, W, 3): smooth ramps, moving, x264 keeps them closely
    for t in range(6):
        frames[t] = np.clip(ramp[None, :, None] + 8 * t + rng.normal(scale=1.0, size=(48, 64, 3)), 0, 255)
    return frames


@pytest.mark.parametrize("threads", [0, 1])
def test_every_thread_count_writes_the_frames(tmp_path, threads):
    frames = _frames()
    with VideoWriter(tmp_path / "v.mp4", 8, 64, 48, threads=threads) as writer:
        for frame in frames:
            writer.write_frame(frame)
    decoded = np.stack([frame for _, frame in iter_frames(tmp_path / "v.mp4")])
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 3  # crf 18 of smooth ramps


def test_a_negative_thread_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="threads must be >= 0"):
        VideoWriter(tmp_path / "v.mp4", 8, 64, 48, threads=-1)
    assert not (tmp_path / "v.mp4").exists()
