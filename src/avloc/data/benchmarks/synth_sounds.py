"""Sounds of the synthetic benchmark: one timbre per class, each with its spectral peak in its own band.

Every generator returns ``(S,)`` float64 with unit RMS; :mod:`avloc.data.benchmarks.synth` scales, gates
and mixes them. Small per-clip variations (pitch, rates, phases) come from the caller's
generator and never move the peak out of the class's band.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SAMPLE_RATE = 16000


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


def _noise_band(n: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """White noise band-limited to ``[low, high]`` Hz with 50 Hz cosine skirts (FFT filter)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    skirt = 50.0
    gain = np.clip(np.minimum(freqs - (low - skirt), (high + skirt) - freqs) / skirt, 0, 1)
    return np.fft.irfft(spectrum * np.sin(0.5 * np.pi * gain) ** 2, n)


def _pulses(t: np.ndarray, rate: float, duty: float, rng: np.random.Generator) -> np.ndarray:
    """A 0..1 on/off train at ``rate`` Hz with soft (raised-cosine) edges."""
    phase = (t * rate + rng.uniform()) % 1.0
    edge = min(0.15, duty / 2)
    rise = np.clip(phase / edge, 0, 1)
    fall = np.clip((duty - phase) / edge, 0, 1)
    return np.sin(0.5 * np.pi * np.minimum(rise, fall)) ** 2


def harmonic_tone(t, rng):  # circle: warm tone, fundamental ~220 Hz, two weak overtones
    f0 = 220.0 * rng.uniform(0.97, 1.03)
    overtones = ((1, 1.0), (2, 0.3), (3, 0.12))
    return sum(a * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k, a in overtones)


def square_buzz(t, rng):  # square: square wave ~350 Hz (odd harmonics 1/n)
    f0 = 350.0 * rng.uniform(0.97, 1.03)
    return sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 3, 5, 7))


def tremolo_tone(t, rng):  # triangle: ~560 Hz triangle-like wave with a 6 Hz tremolo
    f0 = 560.0 * rng.uniform(0.97, 1.03)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k**2 for k in (1, 3, 5))
    return tone * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(5, 7) * t + rng.uniform(0, 2 * np.pi)))


def chirps(t, rng):  # star: repeated upward sweeps 820 -> 1130 Hz, 0.2 s each
    period = 0.2 * rng.uniform(0.9, 1.1)
    u = (t / period + rng.uniform()) % 1.0
    f_lo, f_hi = 820.0, 1130.0
    # The instantaneous frequency rises linearly within each sweep; integrate it piecewise.
    phase = 2 * np.pi * period * (f_lo * u + 0.5 * (f_hi - f_lo) * u**2)
    return np.sin(phase) * np.sin(np.pi * u) ** 0.5


def pulsed_tone(t, rng):  # ring: ~1400 Hz tone switched on and off ten times a second
    f0 = 1400.0 * rng.uniform(0.98, 1.02)
    return np.sin(2 * np.pi * f0 * t) * _pulses(t, rng.uniform(8, 11), 0.5, rng)


def hiss_band(t, rng):  # cross: steady noise band 1800-2300 Hz
    return _noise_band(len(t), 1800.0, 2300.0, rng)


def vibrato_tone(t, rng):  # diamond: ~2900 Hz tone with a 5 Hz, +-70 Hz vibrato
    f0 = 2900.0 * rng.uniform(0.98, 1.02)
    rate = rng.uniform(4, 6)
    return np.sin(2 * np.pi * f0 * t + (70.0 / rate) * np.sin(2 * np.pi * rate * t))


def noise_bursts(t, rng):  # hexagon: noise band 3700-4500 Hz in bursts four times a second
    return _noise_band(len(t), 3700.0, 4500.0, rng) * _pulses(t, rng.uniform(3.5, 4.5), 0.4, rng)


def rough_tone(t, rng):  # pentagon: ~5400 Hz tone with a rough 30 Hz amplitude modulation
    f0 = 5400.0 * rng.uniform(0.99, 1.01)
    return np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(25, 35) * t))


def swelling_hiss(t, rng):  # crescent: noise band 6300-7300 Hz that swells at ~0.7 Hz
    swell = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.5, 0.9) * t + rng.uniform(0, 2 * np.pi))
    return _noise_band(len(t), 6300.0, 7300.0, rng) * swell


SOUNDS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "harmonic-tone": harmonic_tone,
    "square-buzz": square_buzz,
    "tremolo-tone": tremolo_tone,
    "chirps": chirps,
    "pulsed-tone": pulsed_tone,
    "hiss-band": hiss_band,
    "vibrato-tone": vibrato_tone,
    "noise-bursts": noise_bursts,
    "rough-tone": rough_tone,
    "swelling-hiss": swelling_hiss,
}


def class_sound(kind: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` unit-RMS waveform of sound ``kind`` (a key of :data:`SOUNDS`) at 16 kHz."""
    t = np.arange(num_samples) / SAMPLE_RATE
    return _unit_rms(SOUNDS[kind](t, rng))


def gate(num_samples: int, start: float, end: float, ramp: float = 0.01) -> np.ndarray:
    """``(S,)`` 0..1 window that is 1 on ``[start, end)`` seconds, with raised-cosine ramps inside it."""
    t = (np.arange(num_samples) + 0.5) / SAMPLE_RATE
    edge = np.clip(np.minimum(t - start, end - t) / ramp, 0, 1)
    return np.sin(0.5 * np.pi * edge) ** 2


def smooth(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    """Moving average over ``seconds`` (removes clicks from on/off envelopes)."""
    width = max(1, round(seconds * SAMPLE_RATE))
    return np.convolve(x, np.ones(width) / width, mode="same")
