"""What a music track sounds like, as numbers a person can read: tempo, rhythm, timbre, loudness, voice.

Computed with librosa (onset strength, beat tracking, harmonic/percussive separation, spectral features)
from float32 mono audio. No text-audio model weights exist here, so music search maps words onto these
descriptors (``ranking.music``). Each is a measurement with limits, written down beside it; the two
timbre scores (``electronic``, ``vocal``) are heuristics, calibrated on generated clips (docs/music.md).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["MusicParams", "TrackDescriptors", "analyse_track", "refine_tempo"]

_HOP = 256  # 11.6 ms at 22.05 kHz: beat times precise enough to refine the tempo to well under 1 %
_SILENCE_DB = -60.0


@dataclass(frozen=True)
class MusicParams:
    """How tracks are analysed (``LIVELENS_MUSIC_*`` in the shell)."""

    sample_rate: int = 22_050
    max_seconds: float = 30.0  # analysed per track, from the start
    start_bpm: float = 120.0  # centre of the tempo prior (librosa's default)
    max_doubled_bpm: float = 165.0  # a half-tempo estimate is doubled up to this (see _between_beats)
    double_ratio: float = 0.3  # generated clips: 0.4-0.5 for kick-snare, under 0.1 with notes on the beat only


@dataclass(frozen=True)
class TrackDescriptors:
    """A track's descriptors; every field is a plain float so it can be stored and compared.

    - ``tempo_bpm``: beats per minute from librosa's beat tracker, refined by a line fitted through the
      beat times. Octave errors (half or double the felt tempo) are possible where the beat is ambiguous.
    - ``rhythm_strength`` 0..1: how periodic the onsets are: the autocorrelation of the onset-strength
      envelope at the beat period, over its value at lag 0 (a metronome near 1, a drone near 0).
    - ``brightness_hz``: mean spectral centroid (Hz) of the non-silent frames.
    - ``percussiveness`` 0..1: share of energy in the percussive part of a harmonic/percussive split.
    - ``electronic`` 0..1 (0 acoustic): how steady the pitched part stays through each beat, in level and
      in spectral centroid. Synthesisers hold notes unchanged; plucked and struck instruments decay, high
      partials first. A heuristic: organs, bowed strings and held voices score electronic too; 0.5 when
      there is next to no pitched sound (drums alone).
    - ``loudness_db``: RMS level in dBFS (-120 for digital silence).
    - ``vocal`` 0..1: a heuristic for a singing voice: the pitch wobble (vibrato) of the pitched part.
      Not a trained voice detector: a violin with vibrato reads as vocal, a flat rap as instrumental.
    - ``duration_s``: seconds analysed.
    """

    tempo_bpm: float
    rhythm_strength: float
    brightness_hz: float
    percussiveness: float
    electronic: float
    loudness_db: float
    vocal: float
    duration_s: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackDescriptors:
        return cls(**{f.name: float(data[f.name]) for f in fields(cls)})


def refine_tempo(beat_times: np.ndarray, fallback_bpm: float) -> float:
    """Tempo from the slope of a line through the beat times (sub-frame precise), or ``fallback_bpm``.

    The tracker's own estimate is quantised to whole onset-envelope lags (~2 % apart at 160 bpm); beats
    are placed on onset peaks, so the mean spacing of 8+ consecutive beats is far finer. Intervals more than
    15 % off the median (a skipped or extra beat) are left out.
    """
    if beat_times.size < 8:
        return float(fallback_bpm)
    gaps = np.diff(beat_times)
    median = float(np.median(gaps))
    if median <= 0:
        return float(fallback_bpm)
    steady = np.abs(gaps - median) <= 0.15 * median
    if steady.sum() < 6:
        return float(fallback_bpm)
    return float(60.0 / gaps[steady].mean())


def analyse_track(audio: np.ndarray, params: MusicParams = MusicParams()) -> TrackDescriptors:
    """The descriptors of one clip (float32 mono at ``params.sample_rate``); CPU-bound, ~1.5 s per 20 s."""
    import librosa

    sr = params.sample_rate
    y = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1))[: int(params.max_seconds * sr)]
    duration = y.size / sr
    rms_all = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    loudness = max(-120.0, 20 * np.log10(rms_all)) if rms_all > 0 else -120.0
    if y.size < 2 * sr or loudness < _SILENCE_DB:  # under two seconds, or silence: nothing to measure
        return TrackDescriptors(0.0, 0.0, 0.0, 0.0, 0.5, float(loudness), 0.0, float(duration))

    onset_env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=_HOP)
    tempo, beats = librosa.beat.beat_track(
        onset_envelope=onset_env, sr=sr, hop_length=_HOP, start_bpm=params.start_bpm, units="frames"
    )
    beats = _between_beats(onset_env, np.asarray(beats, dtype=int), float(np.atleast_1d(tempo)[0]), params)
    beat_times = librosa.frames_to_time(beats, sr=sr, hop_length=_HOP)
    tempo_bpm = refine_tempo(np.asarray(beat_times), float(np.atleast_1d(tempo)[0]))
    rhythm = _pulse_clarity(onset_env, sr, tempo_bpm)

    stft = librosa.stft(y, n_fft=2048, hop_length=_HOP)
    harmonic, percussive = librosa.decompose.hpss(stft)
    mag, h_mag = np.abs(stft), np.abs(harmonic)
    h_energy, p_energy = float((h_mag**2).sum()), float((np.abs(percussive) ** 2).sum())
    percussiveness = p_energy / max(h_energy + p_energy, 1e-12)

    frame_db = librosa.amplitude_to_db(np.sqrt((mag**2).sum(axis=0)), ref=1.0)
    loud_frames = frame_db > frame_db.max() - 50
    centroid = librosa.feature.spectral_centroid(S=mag, sr=sr)[0]
    brightness = float(centroid[loud_frames].mean()) if loud_frames.any() else 0.0

    if percussiveness > 0.85:  # next to no pitched sound: neither acoustic nor electronic, and no voice
        electronic, vocal = 0.5, 0.0
    else:
        electronic = _steadiness(h_mag, sr, beats)
        y_harmonic = librosa.istft(harmonic, hop_length=_HOP, length=y.size)
        vocal = _vibrato(y_harmonic, sr, h_mag)
    return TrackDescriptors(
        tempo_bpm=round(tempo_bpm, 3),
        rhythm_strength=rhythm,
        brightness_hz=brightness,
        percussiveness=percussiveness,
        electronic=electronic,
        loudness_db=float(loudness),
        vocal=vocal,
        duration_s=float(duration),
    )


def _between_beats(onset_env: np.ndarray, beats: np.ndarray, tempo: float, params: MusicParams) -> np.ndarray:
    """The beats, with one added halfway between each pair when the track plays there as strongly.

    The tracker's prior favours ~120 bpm, so a fast kick-snare pattern (kick, snare, kick, snare at 150 bpm)
    is often tracked on the kicks alone, at half the tempo. When the onsets halfway between tracked beats are
    at least ``params.double_ratio`` as strong as those on the beats, and twice the tempo stays at most
    ``params.max_doubled_bpm``, those halfway points are beats too. Tracks with notes only on the beat are
    untouched; a hi-hat on every eighth note of a slow song may double it (an octave error of the other kind).
    """
    if beats.size < 8 or 2 * tempo > params.max_doubled_bpm:
        return beats

    def strength(frames: np.ndarray) -> float:
        return float(np.mean([onset_env[max(0, f - 2) : f + 3].max() for f in frames if f < onset_env.size]))

    mids = (beats[:-1] + beats[1:]) // 2
    on, between = strength(beats), strength(mids)
    if on <= 0 or between < params.double_ratio * on:
        return beats
    return np.sort(np.concatenate([beats, mids]))


def _pulse_clarity(onset_env: np.ndarray, sr: int, tempo_bpm: float) -> float:
    """Normalised autocorrelation of the (mean-removed) onset envelope at the beat period, clipped to 0..1."""
    if tempo_bpm <= 0:
        return 0.0
    x = onset_env - onset_env.mean()
    energy = float(np.dot(x, x))
    lag = round(60.0 / tempo_bpm * sr / _HOP)
    if energy <= 0 or lag < 1 or lag >= x.size - 1:
        return 0.0
    # best of the lags around the period (the period is not a whole number of frames)
    best = max(float(np.dot(x[:-k], x[k:])) for k in range(max(1, lag - 1), min(x.size - 1, lag + 2)))
    return float(np.clip(best / energy, 0.0, 1.0))


def _steadiness(h_mag: np.ndarray, sr: int, beats: np.ndarray) -> float:
    """How little the pitched part changes within each beat: 1 held synth notes, 0 plucked or struck ones.

    Per beat: the level drop from its first to its last quarter (12 dB counts fully) and the fall of the
    spectral centroid (high partials of strings and struck bars die first; 0.4 octave counts fully),
    averaged; the median over beats, subtracted from 1. Without beats, half-second windows.
    """
    import librosa

    env = np.sqrt((h_mag**2).sum(axis=0))
    if env.size == 0 or env.max() <= 0:
        return 0.5
    db = 20 * np.log10(env / env.max() + 1e-6)
    centroid = librosa.feature.spectral_centroid(S=h_mag, sr=sr)[0]
    bounds = np.asarray(beats, dtype=int)
    if bounds.size < 3:
        bounds = np.arange(0, env.size, max(4, int(0.5 * sr / _HOP)))
    scores = []
    for a, b in itertools.pairwise(bounds):
        q = (b - a) // 4
        if q < 2 or db[a : a + q].mean() < -40:  # too short, or nothing pitched sounding
            continue
        drop = db[a : a + q].mean() - db[b - q : b].mean()
        fall = np.log2((centroid[a : a + q].mean() + 1.0) / (centroid[b - q : b].mean() + 1.0))
        scores.append(0.5 * np.clip(drop / 12.0, 0, 1) + 0.5 * np.clip(fall / 0.4, 0, 1))
    if not scores:
        return 0.5
    return float(np.clip(1.0 - np.median(scores), 0.0, 1.0))


def _vibrato(y_harmonic: np.ndarray, sr: int, h_mag: np.ndarray) -> float:
    """Pitch wobble of the pitched part: 0 steady (keys, strings, synths), 1 sung with vibrato.

    YIN pitch (150-1000 Hz) of the harmonic part; the wobble is its RMS distance in cents from a 0.25 s
    running median, over loud frames near a steady pitch. 8 cents reads as 0, 20 cents and more as 1.
    Singers' vibrato is 20-60 cents at 5-7 Hz; violins and bent guitar notes wobble too.
    """
    import librosa
    from scipy.ndimage import median_filter

    f0 = librosa.yin(y_harmonic, fmin=150, fmax=1000, sr=sr, frame_length=2048, hop_length=_HOP)
    cents = 1200 * np.log2(np.maximum(f0, 1.0))
    residual = cents - median_filter(cents, size=21, mode="nearest")
    env = np.sqrt((h_mag**2).sum(axis=0))[: residual.size]
    loud = 20 * np.log10(env / max(float(env.max()), 1e-12) + 1e-6) > -25
    steady = loud & (np.abs(residual[: loud.size]) < 150)
    if steady.sum() < 20:
        return 0.0
    wobble = float(np.sqrt(np.mean(residual[: loud.size][steady] ** 2)))
    return float(np.clip((wobble - 8.0) / 12.0, 0.0, 1.0))
