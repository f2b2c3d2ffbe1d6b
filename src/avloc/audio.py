"""Log-mel front end: audio segments ``(..., L)`` -> log-mel spectrograms ``(..., 1, M, N)``.

The STM paper (Data Preprocessing) specifies 16 kHz mono and an STFT with a 25 ms Hann
window and a 10 ms hop; the rest follows VGGish (Hershey et al. 2017,
``audioset/vggish_params.py``): FFT size 512 (the next power of two of the 400-sample
window), periodic Hann window, magnitude (not power) spectrogram, 64 mel bins over
125-7500 Hz on the HTK mel scale ``2595 * log10(1 + f / 700)`` with unnormalised
triangles (librosa ``htk=True, norm=None``), then ``log(mel + log_offset)``.

Framing is VGGish's: frame ``j`` holds samples ``[j * hop, j * hop + win)`` and is
zero-padded at its end to ``n_fft``, so an ``L``-sample segment gives
``N = 1 + (L - win) // hop`` frames (23 for the 0.25 s segments of 4 steps per second).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MelConfig:
    """Log-mel settings (defaults: the VGGish front end at the STM paper's 25 ms / 10 ms).

    Attributes:
        sample_rate: input sample rate in Hz.
        window_ms: STFT window length in milliseconds (400 samples at 16 kHz).
        hop_ms: STFT hop in milliseconds (160 samples at 16 kHz).
        n_fft: FFT size; each windowed frame is zero-padded at its end to this length.
        n_mels: number of mel bins M.
        fmin: lowest filter edge in Hz.
        fmax: highest filter edge in Hz.
        log_offset: added to the mel magnitudes before the log so that silence maps to a
            finite floor, ``log(0.01) = -4.6`` (VGGish's value), instead of ``-inf``.
        center: False (VGGish): frames start at sample 0. True: the segment is reflect-padded
            by half a window on each side so that frame ``j`` is centred on ``j * hop``.
    """

    sample_rate: int = 16000
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    n_mels: int = 64
    fmin: float = 125.0
    fmax: float = 7500.0
    log_offset: float = 0.01
    center: bool = False

    @property
    def win_length(self) -> int:
        """Window length in samples."""
        return round(self.sample_rate * self.window_ms / 1000)

    @property
    def hop_length(self) -> int:
        """Hop in samples."""
        return round(self.sample_rate * self.hop_ms / 1000)

    def __post_init__(self) -> None:
        if self.win_length < 1 or self.hop_length < 1:
            raise ValueError(f"window_ms and hop_ms must give at least one sample, got {self}")
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft ({self.n_fft}) must be >= the window ({self.win_length} samples)")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got {self.fmin}, {self.fmax}")
        if self.log_offset <= 0:
            raise ValueError(f"log_offset must be positive, got {self.log_offset}")


def num_frames(num_samples: int, config: MelConfig = MelConfig()) -> int:
    """Number N of STFT frames :func:`log_mel` gives for a segment of ``num_samples`` samples."""
    if config.center:
        num_samples += 2 * (config.win_length // 2)
    if num_samples < config.win_length:
        return 0
    return 1 + (num_samples - config.win_length) // config.hop_length


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: MelConfig = MelConfig()) -> Tensor:
    """The ``(M, n_fft // 2 + 1)`` float32 HTK mel filterbank (cached per config, CPU).

    librosa's ``filters.mel(htk=True, norm=None)``, step for step (tests/test_audio.py checks
    they are equal), without importing librosa: its first import and first call take seconds.
    """
    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    freqs = np.fft.rfftfreq(n=config.n_fft, d=1.0 / config.sample_rate)  # (n_fft // 2 + 1,) bin centres
    mels = np.linspace(hz_to_mel(np.asarray(config.fmin, dtype=np.float64)),
                       hz_to_mel(np.asarray(config.fmax, dtype=np.float64)), config.n_mels + 2)  # (M + 2,) edges
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)  # (M + 2,) in Hz
    widths = np.diff(edges)  # (M + 1,)
    ramps = np.subtract.outer(edges, freqs)  # (M + 2, n_fft // 2 + 1)
    weights = np.zeros((config.n_mels, len(freqs)), dtype=np.float32)
    for i in range(config.n_mels):  # triangle i rises over edges[i..i+1] and falls over edges[i+1..i+2]
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
    return torch.from_numpy(weights)


@functools.lru_cache(maxsize=8)
def _window(config: MelConfig) -> Tensor:
    """Periodic Hann window of ``win_length`` samples, zero-padded at its end to ``n_fft``."""
    window = torch.hann_window(config.win_length, periodic=True)
    return F.pad(window, (0, config.n_fft - config.win_length))  # (win,) -> (n_fft,)


def log_mel(segments: Tensor, config: MelConfig = MelConfig()) -> Tensor:
    """Log-mel spectrograms of audio segments.

    Args:
        segments: ``(..., L)`` float waveforms at ``config.sample_rate``, e.g. ``(T, L)``.
        config: front-end settings.

    Returns:
        ``(..., 1, M, N)`` float32 (float64 for float64 input): M = ``config.n_mels`` mel
        bins, N = :func:`num_frames` ``(L)`` time frames; float32 under autocast too (the
        front end is never run in reduced precision, :mod:`avloc.accelerate`).
    """
    return _log_mel(segments, config, mel_filterbank(config), _window(config))


def _log_mel(segments: Tensor, config: MelConfig, filterbank: Tensor, window: Tensor) -> Tensor:
    with torch.autocast(device_type=segments.device.type, enabled=False):  # float32 under autocast too
        return _log_mel_float(segments, config, filterbank, window)


def _log_mel_float(segments: Tensor, config: MelConfig, filterbank: Tensor, window: Tensor) -> Tensor:
    if segments.ndim < 1 or not segments.is_floating_point():
        raise ValueError(f"segments must be a float tensor (..., L), got {tuple(segments.shape)} {segments.dtype}")
    length = segments.shape[-1]
    count = num_frames(length, config)
    if count < 1:
        raise ValueError(f"segments of {length} samples are shorter than one {config.win_length}-sample window")
    dtype = torch.float64 if segments.dtype == torch.float64 else torch.float32
    leading = segments.shape[:-1]
    x = segments.reshape(-1, length).to(dtype)  # (..., L) -> (B, L)
    if x.shape[0] == 0:
        return x.new_zeros(*leading, 1, config.n_mels, count)
    if config.center:
        half = config.win_length // 2
        x = F.pad(x[:, None], (half, half), mode="reflect")[:, 0]  # (B, L) -> (B, L + 2 * half)
    # The window sits at the start of each n_fft frame (VGGish framing); padding the end by
    # n_fft - win lets the last full window fit, so N = 1 + (L - win) // hop.
    x = F.pad(x, (0, config.n_fft - config.win_length))  # (B, L) -> (B, L + n_fft - win)
    spectrum = torch.stft(
        x,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.n_fft,
        window=window.to(x.device, dtype),
        center=False,
        return_complex=True,
    )  # (B, n_fft // 2 + 1, N) complex
    magnitude = spectrum.abs()
    mel = torch.matmul(filterbank.to(x.device, dtype), magnitude)  # (M, F) @ (B, F, N) -> (B, M, N)
    out = torch.log(mel + config.log_offset)
    return out.reshape(*leading, 1, config.n_mels, count)  # (B, M, N) -> (..., 1, M, N)


class LogMel(nn.Module):
    """:func:`log_mel` as a module; the filterbank and window are (non-persistent) buffers.

    Buffers follow ``.to(device)``; they are rebuilt from ``config`` rather than saved in
    checkpoints.
    """

    def __init__(self, config: MelConfig = MelConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("filterbank", mel_filterbank(config).clone(), persistent=False)
        self.register_buffer("window", _window(config).clone(), persistent=False)

    def forward(self, segments: Tensor) -> Tensor:
        """``(..., L)`` -> ``(..., 1, M, N)``."""
        return _log_mel(segments, self.config, self.filterbank, self.window)

    def extra_repr(self) -> str:
        return repr(self.config)
