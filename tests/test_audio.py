"""Log-mel front end against an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avloc.audio import LogMel, MelConfig, log_mel, mel_filterbank, num_frames

SR = 16000


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def htk_filterbank(n_mels=64, n_fft=512, sr=SR, fmin=125.0, fmax=7500.0) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangles between mel-spaced edges (peak 1, no area norm)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, centre, hi = edges[m : m + 3]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        bank[m] = np.maximum(0.0, np.minimum(rising, falling))
    return bank


def numpy_log_mel(x: np.ndarray) -> np.ndarray:
    """VGGish-style log-mel of one segment: ``(L,)`` -> ``(64, N)``."""
    win, hop, n_fft = 400, 160, 512
    count = 1 + (len(x) - win) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    frames = np.stack([x[j * hop : j * hop + win] for j in range(count)]) * window  # (N, win)
    magnitude = np.abs(np.fft.rfft(frames, n=n_fft, axis=1))  # (N, 257)
    return np.log(htk_filterbank() @ magnitude.T + 0.01)  # (64, 257) @ (257, N) -> (64, N)


def test_defaults_are_the_vggish_front_end():
    config = MelConfig()
    assert (config.sample_rate, config.win_length, config.hop_length, config.n_fft) == (SR, 400, 160, 512)
    assert (config.n_mels, config.fmin, config.fmax) == (64, 125.0, 7500.0)
    assert (config.log_offset, config.center) == (0.01, False)


def test_filterbank_is_htk_without_norm():
    np.testing.assert_allclose(mel_filterbank().numpy(), htk_filterbank(), atol=1e-5)


@pytest.mark.parametrize("config", [MelConfig(), MelConfig(sample_rate=22050, n_fft=1024, window_ms=40.0, n_mels=40,
                                                           fmin=0.0, fmax=11025.0),
                                    MelConfig(n_mels=32, fmin=50.0, fmax=8000.0)])
def test_filterbank_equals_librosa(config):
    """The filterbank is built without librosa (its import takes seconds) and must stay its exact twin."""
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                   fmin=config.fmin, fmax=config.fmax, htk=True, norm=None)
    got = mel_filterbank(config).numpy()
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("length", [4000, 16000, 400, 559, 560])
def test_values_match_numpy(length):
    rng = np.random.default_rng(length)
    x = rng.uniform(-0.5, 0.5, size=(3, length))
    out = log_mel(torch.from_numpy(x).float())
    assert out.shape == (3, 1, 64, num_frames(length)) and out.dtype == torch.float32
    expected = np.stack([numpy_log_mel(segment) for segment in x])[:, None]  # (3, 64, N) -> (3, 1, 64, N)
    # An absolute error on the log is a relative error on mel + offset.
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-4)


def test_num_frames():
    assert num_frames(4000) == 23  # 0.25 s segments of the STM paper's 4 steps per second
    assert num_frames(16000) == 98
    assert num_frames(400) == 1 and num_frames(399) == 0 and num_frames(559) == 1 and num_frames(560) == 2
    assert num_frames(4000, MelConfig(center=True)) == 26
    assert log_mel(torch.zeros(4000), MelConfig(center=True)).shape == (1, 64, 26)


@pytest.mark.parametrize("freq", [1000.0, 3000.0])
def test_sine_peaks_in_its_mel_bin(freq):
    t = np.arange(4000) / SR
    x = torch.from_numpy(0.5 * np.sin(2 * np.pi * freq * t)).float()
    centres = mel_to_hz(np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), 66)[1:-1])
    expected = int(np.argmin(np.abs(centres - freq)))
    out = log_mel(x)  # (L,) -> (1, M, N)
    assert out.shape == (1, 64, 23)
    assert out[0].mean(dim=1).argmax().item() == expected
    assert (out[0].argmax(dim=0) == expected).all()  # in every frame


def test_silence_is_the_log_offset():
    out = log_mel(torch.zeros(2, 4000))
    torch.testing.assert_close(out, torch.full((2, 1, 64, 23), float(np.log(0.01))))


def test_leading_dims_dtype_and_module():
    x = torch.randn(2, 5, 4000)
    out = log_mel(x)
    assert out.shape == (2, 5, 1, 64, 23)
    torch.testing.assert_close(out[1, 3], log_mel(x[1, 3]))
    module = LogMel()
    torch.testing.assert_close(module(x), out)
    assert not module.state_dict()  # buffers are rebuilt from the config, not saved
    assert log_mel(x.double()).dtype == torch.float64
    assert log_mel(torch.zeros(0, 4000)).shape == (0, 1, 64, 23)


def test_other_configs():
    config = MelConfig(sample_rate=8000, n_fft=256, n_mels=32, fmax=3800.0)
    assert (config.win_length, config.hop_length) == (200, 80)
    assert log_mel(torch.randn(4, 2000), config).shape == (4, 1, 32, num_frames(2000, config)) == (4, 1, 32, 23)


def test_bad_input():
    with pytest.raises(ValueError, match="shorter than one"):
        log_mel(torch.randn(2, 399))
    with pytest.raises(ValueError, match="float"):
        log_mel(torch.ones(2, 4000, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_fft"):
        MelConfig(n_fft=256)
    with pytest.raises(ValueError, match="fmax"):
        MelConfig(fmax=9000.0)
