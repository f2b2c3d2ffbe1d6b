"""Localizer as a live API: NumPy or torch frames of any size and mono or multi-channel audio."""

import numpy as np
import pytest
import torch

from avloc.io.decode import iter_steps
from avloc.io.write import write_video
from avloc.localizer import Localizer
from avloc.trained import load_trained
from avloc.types import AvlocError

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def model():
    return load_trained("default")


@pytest.fixture(scope="module")
def localizer(model):
    return Localizer(model)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Steps of a 1 s video of noise frames (96 x 128, a tone) decoded at full size and at the model's size."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("live") / "noise.mp4"
    frames = rng.integers(0, 256, size=(8, 96, 128, 3), dtype=np.uint8)
    t = np.arange(16000) / 16000
    write_video(path, frames, 8.0, (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    size = load_trained("default").config.size
    return list(iter_steps(path, fps=4, size=None)), list(iter_steps(path, fps=4, size=size))


def _uint8(frame: torch.Tensor) -> np.ndarray:
    return (frame.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # (3, H, W) -> (H, W, 3)


def test_frames_of_any_size_reach_the_encoder_as_the_decoder_resizes_them(model, clip):
    full, resized = clip
    localizer = Localizer(model)
    assert full[0].frame.shape == (3, 96, 128) and resized[0].frame.shape == (3, 256, 256)
    for big, small in zip(full, resized):
        torch.testing.assert_close(localizer.prepare_frame(_uint8(big.frame)), small.frame, rtol=0, atol=0)
        torch.testing.assert_close(localizer.prepare_frame(big.frame), small.frame, rtol=0, atol=0)
        assert localizer.prepare_frame(small.frame) is not None
    decoded, numpy, torch_full = Localizer(model), Localizer(model), Localizer(model)
    for big, small in zip(full[:2], resized[:2]):  # two steps: the second one reads the memory
        expected = decoded(small.frame, small.segment)
        for result in (numpy(_uint8(big.frame), small.segment.numpy()), torch_full(big.frame, small.segment)):
            torch.testing.assert_close(result.heatmap, expected.heatmap, rtol=0, atol=1e-6)
            torch.testing.assert_close(result.probabilities, expected.probabilities, rtol=0, atol=1e-6)


def test_a_frame_of_another_size_mid_stream_is_resized_not_a_crash(model, clip):
    full, resized = clip
    localizer = Localizer(model)
    first = localizer(resized[0].frame, resized[0].segment)  # 256 px
    second = localizer(full[1].frame[:, :64, :64].contiguous(), full[1].segment)  # then 64 px: resized
    third = localizer(np.zeros((480, 640, 3), np.uint8), full[2].segment.numpy())  # then 640 x 480
    assert first.heatmap.shape == second.heatmap.shape == third.heatmap.shape
    assert all(torch.isfinite(r.heatmap).all() for r in (first, second, third))


def test_multichannel_audio_is_averaged_samples_by_channels(model, clip):
    _, resized = clip
    step = resized[0]
    mono = step.segment.numpy()
    stereo = np.stack([mono + 0.1, mono - 0.1], axis=1)  # (L, 2); their mean is the mono segment
    results = [Localizer(model)(step.frame, audio) for audio in (mono, stereo, torch.from_numpy(stereo),
                                                                mono.astype(np.float64))]
    for result in results[1:]:
        torch.testing.assert_close(result.heatmap, results[0].heatmap, rtol=0, atol=1e-6)
        torch.testing.assert_close(result.probabilities, results[0].probabilities, rtol=0, atol=1e-6)


def test_reset_starts_a_new_stream(model, clip):
    _, resized = clip
    localizer, fresh = Localizer(model), Localizer(model)
    for step in resized[:3]:
        localizer(step.frame, step.segment)
    remembering = localizer(resized[3].frame, resized[3].segment)
    localizer.reset()
    restarted = localizer(resized[3].frame, resized[3].segment)
    alone = fresh(resized[3].frame, resized[3].segment)
    torch.testing.assert_close(restarted.probabilities, alone.probabilities, rtol=0, atol=1e-6)
    assert not torch.allclose(remembering.probabilities, alone.probabilities, atol=1e-6)  # the memory mattered
    assert len(localizer.classes) == alone.probabilities.shape[0] and localizer.classes[-1] == "background"
    assert localizer.segment_length == 4000  # 1/4 s at 16 kHz


GOOD_FRAME = np.zeros((32, 32, 3), np.uint8)
GOOD_AUDIO = np.zeros(4000, np.float32)


@pytest.mark.parametrize(("frame", "audio", "message"), [
    (np.zeros((32, 32, 3), np.float32), GOOD_AUDIO, "frame: expected an (H, W, 3) uint8 RGB array, got float32"),
    (np.zeros((3, 32, 32), np.uint8), GOOD_AUDIO, "got uint8 of shape (3, 32, 32)"),
    (np.zeros((32, 32), np.uint8), GOOD_AUDIO, "got uint8 of shape (32, 32)"),
    (np.zeros((0, 32, 3), np.uint8), GOOD_AUDIO, "got uint8 of shape (0, 32, 3)"),
    (torch.zeros(3, 32, 32, dtype=torch.uint8), GOOD_AUDIO, "a (3, H, W) float tensor in [0, 1], got torch.uint8"),
    (torch.zeros(32, 32, 3), GOOD_AUDIO, "got torch.float32 of shape (32, 32, 3)"),
    (torch.full((3, 32, 32), 255.0), GOOD_AUDIO, "float frames must lie in [0, 1], got values in [255, 255]"),
    (torch.full((3, 32, 32), float("nan")), GOOD_AUDIO, "float frames must lie in [0, 1]"),
    ([[0, 0, 0]], GOOD_AUDIO, "frame: expected a NumPy array or a torch tensor, got list"),
    (GOOD_FRAME, np.zeros(4000, np.int16), "expected float samples in [-1, 1], got int16 (integer PCM: scale"),
    (GOOD_FRAME, torch.zeros(4000, dtype=torch.int32), "got torch.int32"),
    (GOOD_FRAME, np.zeros((2, 4000), np.float32), "2-D audio is (samples, channels), got shape (2, 4000); transpose"),
    (GOOD_FRAME, np.zeros((4000, 2, 1), np.float32), "expected (L,) mono or (L, C) samples x channels"),
    (GOOD_FRAME, np.zeros(100, np.float32), "100 samples is shorter than one 400-sample analysis window "
                                            "(expected 4000 samples"),
    (GOOD_FRAME, np.full(4000, np.inf, np.float32), "holds NaN or infinite samples"),
    (GOOD_FRAME, "audio", "expected a NumPy array or a torch tensor, got str"),
])
def test_wrong_inputs_are_one_line_errors(localizer, frame, audio, message):
    with pytest.raises(AvlocError) as error:
        localizer(frame, audio)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert localizer(GOOD_FRAME, GOOD_AUDIO).heatmap.ndim == 2  # the stream goes on after a refused step
