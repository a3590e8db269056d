"""Generated music clips with known tempo and timbre, for the demo and the music tests (no recordings ship here).

Each clip is built from plain numpy: notes and drum hits placed on a beat grid at a known tempo, in one
of five timbres. ``acoustic`` timbres (plucked strings, a struck piano-like tone) decay after each note;
``electronic`` ones (sawtooth bass, square lead, a synthetic kick) hold a steady level; ``vocal`` adds a
sung line (a glottal sawtooth through vowel formants, with vibrato and syllables at ~4 per second).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 22_050
TIMBRES = ("clicks", "drums", "pluck", "synth", "vocal")
# a rock beat: kick and snare on the beats, a hi-hat on every eighth note (an ambiguous tempo: see make_rock_beat)
ROCK = "rock"
# A minor pentatonic-ish line, so consecutive notes differ
_SCALE = (220.0, 261.63, 293.66, 329.63, 392.0, 440.0)


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray
    tempo_bpm: float
    timbre: str
    electronic: bool
    vocal: bool


def _pluck(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string: a noise burst in a damped delay line (decays like a guitar string)."""
    period = max(2, round(SR / freq))
    buf = rng.uniform(-1, 1, period)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = buf[i % period]
        buf[i % period] = 0.996 * 0.5 * (buf[i % period] + buf[(i + 1) % period])
    return out


def _saw(freq: float, t: np.ndarray) -> np.ndarray:
    return 2.0 * ((freq * t) % 1.0) - 1.0


def _square(freq: float, t: np.ndarray) -> np.ndarray:
    return np.sign(np.sin(2 * np.pi * freq * t))


def _kick(n: int) -> np.ndarray:
    t = np.arange(n) / SR
    freq = 50 + 100 * np.exp(-t * 30)
    return np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t * 12)


def _noise_hit(n: int, rng: np.random.Generator, decay: float) -> np.ndarray:
    t = np.arange(n) / SR
    return rng.normal(0, 0.5, n) * np.exp(-t * decay)


def _formant_voice(f0: float, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sung vowel: sawtooth with 5.5 Hz vibrato, shaped by resonances at 700/1200/2600 Hz (an "a")."""
    vib = f0 * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    src = 2.0 * ((np.cumsum(vib) / SR) % 1.0) - 1.0
    spec = np.fft.rfft(src)
    freqs = np.fft.rfftfreq(src.size, 1 / SR)
    shape = sum(a / (1 + ((freqs - f) / bw) ** 2) for f, bw, a in ((700, 110, 1.0), (1200, 120, 0.6), (2600, 160, 0.3)))
    return np.fft.irfft(spec * shape, n=src.size) + 0.02 * rng.normal(size=src.size)


def make_clip(tempo_bpm: float, timbre: str, seconds: float = 20.0, seed: int = 0) -> Clip:
    """A clip whose every beat carries a note or hit, at ``tempo_bpm``, in one timbre (see module doc)."""
    if timbre not in TIMBRES:
        raise ValueError(f"unknown timbre {timbre!r}")
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n)
    beat = 60.0 / tempo_bpm
    onsets = np.arange(0.0, seconds - 0.05, beat)
    t_all = np.arange(n) / SR
    for k, start in enumerate(onsets):
        i = round(start * SR)
        m = min(n - i, int(beat * SR))
        note = _SCALE[(k * 2 + k // 4) % len(_SCALE)]
        if timbre == "clicks":
            tt = np.arange(m) / SR
            out[i : i + m] += np.sin(2 * np.pi * (1500 if k % 4 else 2000) * tt) * np.exp(-tt * 60)
        elif timbre == "drums":
            out[i : i + m] += _kick(m) if k % 2 == 0 else 0.6 * _noise_hit(m, rng, 25)
        elif timbre == "pluck":
            out[i : i + m] += 0.8 * _pluck(note, m, rng) + (0.5 * _pluck(note / 2, m, rng) if k % 2 == 0 else 0)
        elif timbre == "synth":
            tt = t_all[i : i + m]
            gate = (np.arange(m) < int(0.9 * m)).astype(float)
            out[i : i + m] += 0.25 * _saw(note / 2, tt) * gate + 0.15 * _square(note, tt) * gate + 0.8 * _kick(m)
        elif timbre == "vocal":
            tt = t_all[i : i + m]
            syll = np.clip(np.sin(np.pi * np.arange(m) / m), 0, 1) ** 0.5
            out[i : i + m] += 0.6 * _formant_voice(note, tt, rng) * syll + 0.3 * _pluck(note / 2, m, rng)
    peak = float(np.max(np.abs(out))) or 1.0
    return Clip(
        audio=(0.7 * out / peak).astype(np.float32),
        tempo_bpm=tempo_bpm,
        timbre=timbre,
        electronic=timbre in ("synth", "clicks"),
        vocal=timbre == "vocal",
    )


def make_rock_beat(tempo_bpm: float, seconds: float = 12.0, seed: int = 0, hat: float = 0.15) -> Clip:
    """Kick, snare, kick, snare on the beats and a hi-hat (``hat`` of full level) between them too.

    Half the hits fall between beats, so the felt tempo is ambiguous: slow ones are often heard, and
    tracked, at double tempo. Used to measure that octave error apart from plain misses.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n)
    half = 30.0 / tempo_bpm
    for k, start in enumerate(np.arange(0.0, seconds - 0.05, half)):
        i = round(start * SR)
        m = min(n - i, int(half * SR))
        if k % 2 == 0:
            out[i : i + m] += _kick(m) if (k // 2) % 2 == 0 else 0.6 * _noise_hit(m, rng, 25)
        out[i : i + m] += hat * 3 * np.diff(np.r_[0.0, _noise_hit(m, rng, 80)])
    return Clip((0.7 * out / max(float(np.max(np.abs(out))), 1e-9)).astype(np.float32), tempo_bpm, ROCK, False, False)


def write_wav(clip: Clip, path: Path) -> Path:
    """16-bit PCM WAV (what a producer would upload; PyAV decodes it in the worker)."""
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, SR, (np.clip(clip.audio, -1, 1) * 32767).astype(np.int16))
    return path
