"""Audio encoders: what an item *sounds* like, as unit vectors, plus descriptors a person can read.

- ``AudioFeatureEncoder``: handcrafted, weight-free features (torchaudio transforms only). No audio-embedding
  weights ship in any installed package, so this is the default real signal: log-mel statistics capture timbre
  and dynamics, and four descriptors capture loudness, noisiness and speech-like rhythm.
- ``Wav2Vec2AudioEncoder``: a wav2vec2/HuBERT-style checkpoint from a *local* directory (transformers), mean-
  pooled hidden states. It never downloads; without a path it refuses to start.

Input everywhere is float32 mono in [-1, 1] at the encoder's ``sample_rate`` (``encoders.video.extract_audio``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import l2_normalize, resolve_device
from encoders.params import EncoderParams

__all__ = ["AudioFeatureEncoder", "Wav2Vec2AudioEncoder", "build_audio_encoder"]

_SILENCE_DBFS = -60.0  # frames/clips quieter than this carry no usable timbre
_FLOOR_DBFS = -120.0  # loudness of digital silence, instead of -inf
# Fixed standardisation, set from the MicroLens videos and synthetic tones/noise (see AudioFeatureEncoder).
_DYNAMICS_CENTRE_DB, _DYNAMICS_SCALE_DB = 10.0, 5.0
# loudness dBFS (floored at -60), zero-crossing rate, log10 spectral flatness, 4 Hz modulation share
_DESC_CENTRE = np.array([-15.0, 0.1, -1.5, 0.1], dtype=np.float32)
_DESC_SCALE = np.array([10.0, 0.1, 1.0, 0.1], dtype=np.float32)


def _as_mono(audio: Any) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:  # (channels, n) or (n, channels): down-mix along the short axis
        x = x.mean(axis=0 if x.shape[0] <= x.shape[1] else 1)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio (n,), got shape {x.shape}")
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


class AudioFeatureEncoder:
    """Log-mel statistics + descriptors -> standardised -> L2-normalised (``2 * n_mels + 4`` dims, 132 by default).

    Layout of the vector (before standardisation):

    - ``n_mels`` spectral-shape values: each band's mean log-mel level (dB) minus the clip's mean level, so the
      shape is independent of playback volume (volume is its own descriptor);
    - ``n_mels`` dynamics values: each band's standard deviation of log-mel level over time (dB);
    - 4 descriptors (see ``describe``): loudness (dBFS), zero-crossing rate, spectral flatness, 4 Hz modulation.

    Standardisation: by default fixed affine scales that bring each group to roughly unit range on real videos
    (shape / 10 dB, dynamics (x - 10) / 5 dB, descriptors centred and scaled as in ``_DESC_CENTRE/_SCALE``, with
    loudness floored at -60 dBFS and flatness on a log10 scale), clipped to [-4, 4]; the descriptor block is
    then up-weighted by ``sqrt(n_mels / 4)`` so four numbers are not drowned by 128. ``fit`` replaces the fixed
    scales with per-dimension z-scores learned from a reference corpus.
    """

    def __init__(self, sample_rate: int = 16_000, n_mels: int = 64, win_ms: float = 25.0, hop_ms: float = 10.0) -> None:
        import torch
        import torchaudio

        if sample_rate < 4_000 or n_mels < 8:
            raise ValueError("sample_rate must be >= 4000 and n_mels >= 8")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_fft = round(sample_rate * win_ms / 1000)
        self.hop = round(sample_rate * hop_ms / 1000)
        self._torch = torch
        self._spec = torchaudio.transforms.Spectrogram(n_fft=self.n_fft, hop_length=self.hop, power=2.0)
        self._mel_scale = torchaudio.transforms.MelScale(
            n_mels=n_mels, sample_rate=sample_rate, n_stft=self.n_fft // 2 + 1, f_min=20.0
        )
        # Power of a full-scale sine in one frame's periodogram (Hann window): turns spectra into dBFS.
        window = torch.hann_window(self.n_fft)
        self._full_scale_power = float(window.sum() ** 2 / 4)
        self.dim: int = 2 * n_mels + 4
        self.name: str = f"audio-features-{n_mels}"
        self.device: str = "cpu"
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    # --- raw features -----------------------------------------------------------------------------------

    def _analyse(self, audio: Any) -> tuple[np.ndarray, dict[str, float]]:
        """(raw feature vector, descriptors) of one clip."""
        torch = self._torch
        x = _as_mono(audio)
        duration = x.size / self.sample_rate
        if x.size < self.n_fft:  # too short for one frame: pad with silence so the maths stays defined
            x = np.pad(x, (0, self.n_fft - x.size))
        wave = torch.from_numpy(x)
        with torch.inference_mode():
            power = self._spec(wave)  # (freq, frames)
            mel = self._mel_scale(power)
        power_np = power.numpy().astype(np.float64)
        mel_db = 10.0 * np.log10(mel.numpy().astype(np.float64) / self._full_scale_power + 1e-12)

        frame_power = power_np[1:].sum(axis=0) / self._full_scale_power  # DC excluded; ~1.0 for full-scale sine
        frame_db = 10.0 * np.log10(frame_power + 1e-12)
        voiced = frame_db > _SILENCE_DBFS

        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        loudness = max(_FLOOR_DBFS, 20.0 * np.log10(rms)) if rms > 0 else _FLOOR_DBFS
        signs = np.signbit(x)
        zcr = float(np.mean(signs[1:] != signs[:-1])) if loudness > _SILENCE_DBFS else 0.0
        flatness = self._flatness(power_np[1:, voiced]) if voiced.any() else 0.0
        modulation = self._modulation_4hz(np.sqrt(frame_power)) if voiced.any() else 0.0

        shape = mel_db.mean(axis=1) - mel_db.mean()
        dynamics = mel_db.std(axis=1)
        descriptors = {
            "duration_s": float(duration),
            "loudness_dbfs": float(loudness),
            "zero_crossing_rate": zcr,
            "spectral_flatness": float(flatness),
            "modulation_4hz": float(modulation),
        }
        # Features use loudness floored at the silence threshold and log-flatness: both are heavy-tailed as is.
        tail = [max(loudness, _SILENCE_DBFS), zcr, np.log10(flatness + 1e-4), modulation]
        raw = np.concatenate([shape, dynamics, tail]).astype(np.float32)
        return raw, descriptors

    @staticmethod
    def _flatness(power: np.ndarray) -> float:
        """Wiener entropy per frame (geometric / arithmetic mean of the power spectrum), averaged over frames.

        ~0 for a pure tone, ~0.5-0.6 for white noise (the periodogram of noise is exponentially distributed).
        """
        p = power + 1e-12
        per_frame = np.exp(np.mean(np.log(p), axis=0)) / np.mean(p, axis=0)
        return float(np.mean(per_frame))

    def _modulation_4hz(self, envelope: np.ndarray) -> float:
        """Share of the amplitude envelope's power (mean included) that oscillates at 2-8 Hz.

        Speech opens and closes the mouth at the syllable rate (~3-6 syllables/s), so its loudness envelope has
        strong 4 Hz modulation; steady tones, drones and most sustained music have little. Values: 0 for a
        constant envelope, ~0.33 for 100 % sinusoidal amplitude modulation at 4 Hz, typically 0.1-0.4 for
        speech. A coarse indicator: fast drum patterns or tremolo can look speech-like.
        """
        env_rate = self.sample_rate / self.hop
        if envelope.size < int(env_rate):  # under a second: no room for a 4 Hz cycle to be measured reliably
            return 0.0
        mean = float(envelope.mean())
        if mean <= 0:
            return 0.0
        m = envelope / mean
        spectrum = np.abs(np.fft.rfft(m)) ** 2
        freqs = np.fft.rfftfreq(m.size, d=1.0 / env_rate)
        band = (freqs >= 2.0) & (freqs <= 8.0)
        # Parseval: total power of m including DC; one-sided spectrum counts each non-DC bin twice.
        total = spectrum[0] + 2.0 * spectrum[1:].sum()
        return float(2.0 * spectrum[band].sum() / total) if total > 0 else 0.0

    # --- public API --------------------------------------------------------------------------------------

    def describe(self, audio: Any) -> dict[str, float | bool | str]:
        """Human-readable descriptors of one clip.

        ``loudness_dbfs``: RMS level in dB relative to full scale (a full-scale sine is -3 dBFS; digital silence
        -120). ``zero_crossing_rate``: fraction of sample pairs that change sign (high for noise and hiss).
        ``spectral_flatness``: 0 tonal ... ~0.56 white noise. ``modulation_4hz``: the speech-rhythm indicator of
        ``_modulation_4hz``. ``silent``: below -60 dBFS. ``texture``: a coarse label from those numbers.
        """
        _, d = self._analyse(audio)
        silent = d["loudness_dbfs"] < _SILENCE_DBFS
        if silent:
            texture = "silence"
        elif d["modulation_4hz"] >= 0.1:
            texture = "speech-like"
        elif d["spectral_flatness"] >= 0.3:
            texture = "noise-like"
        else:
            texture = "tonal/music-like"
        return {**d, "silent": bool(silent), "texture": texture}

    def raw_features(self, inputs: Sequence[Any]) -> np.ndarray:
        """Unstandardised features, (n, dim); what ``fit`` learns its statistics from."""
        if not len(inputs):
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([self._analyse(a)[0] for a in inputs])

    def _standardise(self, raw: np.ndarray) -> np.ndarray:
        if self.mean_ is not None and self.scale_ is not None:
            return (raw - self.mean_) / self.scale_
        n = self.n_mels
        out = np.empty_like(raw)
        out[:, :n] = raw[:, :n] / 10.0
        out[:, n : 2 * n] = (raw[:, n : 2 * n] - _DYNAMICS_CENTRE_DB) / _DYNAMICS_SCALE_DB
        out[:, 2 * n :] = (raw[:, 2 * n :] - _DESC_CENTRE) / _DESC_SCALE
        # Clip before weighting so one extreme value (digital silence, pure tones) cannot own the whole vector.
        np.clip(out, -4.0, 4.0, out=out)
        out[:, 2 * n :] *= np.sqrt(n / 4.0)
        return out

    def fit(self, inputs: Sequence[Any]) -> AudioFeatureEncoder:
        """Learn per-dimension mean/std from a reference corpus (at least 2 clips) instead of the fixed scales."""
        raw = self.raw_features(inputs).astype(np.float64)
        if raw.shape[0] < 2:
            raise ValueError("fit needs at least 2 clips")
        self.mean_ = raw.mean(axis=0).astype(np.float32)
        self.scale_ = np.maximum(raw.std(axis=0), 1e-3).astype(np.float32)
        return self

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        """One unit vector per clip; a clip whose standardised features are all zero still gets a fixed unit row."""
        if isinstance(inputs, np.ndarray) and inputs.ndim == 1:
            raise TypeError("encode() takes a sequence of clips; wrap a single clip in a list")
        z = self._standardise(self.raw_features(inputs))
        zero = ~np.any(z, axis=1)
        z[zero, 0] = 1.0
        return l2_normalize(z)


class Wav2Vec2AudioEncoder:
    """A local wav2vec2-style checkpoint (wav2vec2, HuBERT, WavLM, ...) mean-pooled over real frames.

    Loads ``AutoFeatureExtractor`` + ``AutoModel`` from ``model_path`` with the Hub forced offline. Clips are
    sorted by length and padded per batch; pooling uses the model's own output-length arithmetic so padding
    frames never enter the mean. Clips longer than ``max_seconds`` are truncated (attention cost is quadratic).
    """

    def __init__(
        self,
        model_path: Path | str | None,
        device: str = "auto",
        batch_size: int = 8,
        max_seconds: float = 30.0,
        torch_threads: int | None = None,
    ) -> None:
        if model_path is None:
            raise ValueError(
                "Wav2Vec2AudioEncoder needs model_path: a local directory with a wav2vec2-style checkpoint "
                "(config.json, weights, preprocessor_config.json); nothing is downloaded"
            )
        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(f"audio model directory not found: {path}")
        if batch_size < 1 or max_seconds <= 0:
            raise ValueError("batch_size must be >= 1 and max_seconds > 0")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self._torch = torch
        self.device: str = resolve_device(device)
        self.batch_size = batch_size
        self.extractor: Any = AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        self.sample_rate: int = int(self.extractor.sampling_rate)
        self.max_samples = int(max_seconds * self.sample_rate)
        self.dim: int = int(self.model.config.hidden_size)
        self.name: str = path.name
        self._amp_dtype: Any = None
        if self.device.startswith("cuda"):
            self._amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        if isinstance(inputs, np.ndarray) and inputs.ndim == 1:
            raise TypeError("encode() takes a sequence of clips; wrap a single clip in a list")
        clips = [_as_mono(a)[: self.max_samples] for a in inputs]
        # A clip shorter than the conv stack's receptive field (400 samples) yields no frames: pad to 1 s.
        clips = [c if c.size >= self.sample_rate else np.pad(c, (0, self.sample_rate - c.size)) for c in clips]
        out = np.empty((len(clips), self.dim), dtype=np.float32)
        order = np.argsort([c.size for c in clips], kind="stable")
        for start in range(0, len(clips), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._encode_batch([clips[i] for i in idx])
        return l2_normalize(out)

    def _encode_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        torch = self._torch
        feats = self.extractor(
            batch, sampling_rate=self.sample_rate, padding=True, return_attention_mask=True, return_tensors="pt"
        )
        values = feats["input_values"].to(self.device)
        mask = feats["attention_mask"].to(self.device)
        # Models with group-norm feature extractors (wav2vec2-base) were trained without an attention mask and
        # expect zero padding; the extractor's own config says which kind this is.
        kwargs = {"attention_mask": mask} if getattr(self.extractor, "return_attention_mask", False) else {}
        with torch.inference_mode(), torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._amp_dtype is not None):
            hidden = self.model(values, **kwargs).last_hidden_state.float()
            out_lengths = getattr(self.model, "_get_feat_extract_output_lengths", None)
            raw_lengths = mask.sum(-1)
            lengths = out_lengths(raw_lengths) if out_lengths else torch.full_like(raw_lengths, hidden.shape[1])
            lengths = lengths.clamp(min=1, max=hidden.shape[1])
        frames = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        m = frames.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1)
        return pooled.cpu().numpy()


def build_audio_encoder(params: EncoderParams) -> AudioFeatureEncoder | Wav2Vec2AudioEncoder | None:
    """The configured audio encoder (``LIVELENS_AUDIO_ENCODER``), or None when audio is not encoded."""
    kind = params.audio_encoder
    if kind == "none":
        return None
    if kind == "features":
        return AudioFeatureEncoder(params.audio_sample_rate)
    if kind == "wav2vec2":
        return Wav2Vec2AudioEncoder(params.audio_model_path, params.device, torch_threads=params.torch_threads)
    raise ValueError(f"unknown audio encoder: {kind!r}")
