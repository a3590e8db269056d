"""Text encoders with the weights that really ship in installed packages: behaviour, not just shapes.

The semantic checks use clearly separated topics and assert nearest-neighbour structure rather than exact
scores, so they hold across library versions and CPU/GPU numerics.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders.base import Encoder, l2_normalize, resolve_device
from encoders.params import EncoderParams
from encoders.text import HashTextEncoder, MiniLMTextEncoder, MultilingualTextEncoder, build_text_encoder

TOPICS: dict[str, list[str]] = {
    "cooking": [
        "How to make fluffy pancakes for breakfast",
        "Easy homemade pasta sauce recipe with fresh tomatoes",
        "Chef shows the secret to a perfect roast chicken",
    ],
    "football": [
        "Last-minute goal wins the championship final",
        "Striker scores a hat-trick in the derby match",
        "Goalkeeper saves a penalty in extra time",
    ],
    "pets": [
        "My cat knocks everything off the table",
        "Puppy sees snow for the first time",
        "Funny dog tries to catch its own tail",
    ],
}


def _labelled() -> tuple[list[str], np.ndarray]:
    texts = [t for titles in TOPICS.values() for t in titles]
    labels = np.array([i for i, titles in enumerate(TOPICS.values()) for _ in titles])
    return texts, labels


def assert_topic_structure(enc: Encoder, margin: float) -> None:
    """Every title's nearest other title shares its topic, and same-topic pairs beat cross-topic ones on average."""
    texts, labels = _labelled()
    v = enc.encode(texts)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    assert (labels[nearest] == labels).all(), f"nearest neighbours cross topics: {nearest} vs {labels}"
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(texts), dtype=bool)
    within = sim[same & off_diag].mean()
    across = sim[~same].mean()
    assert within - across > margin, (within, across)


def assert_unit_rows(v: np.ndarray, n: int, dim: int) -> None:
    assert v.shape == (n, dim)
    assert v.dtype == np.float32
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


# --- MiniLM ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    # Built through the factory so the settings path is exercised with the real, shipped weights.
    enc = build_text_encoder(EncoderParams(media_roots=(), text_encoder="minilm", device="cpu", encoder_batch_size=4))
    assert isinstance(enc, MiniLMTextEncoder)
    return enc


def test_minilm_contract(minilm: MiniLMTextEncoder) -> None:
    assert isinstance(minilm, Encoder)
    assert minilm.dim == 384
    assert minilm.device == "cpu"
    assert minilm.name == "minilm-l6-v2"
    texts, _ = _labelled()
    assert_unit_rows(minilm.encode([*texts, ""]), len(texts) + 1, 384)
    assert minilm.encode([]).shape == (0, 384)


def test_minilm_deterministic_and_batch_invariant(minilm: MiniLMTextEncoder) -> None:
    """Length-sorted batching and padding must not change a text's vector or the output order."""
    texts, _ = _labelled()
    texts = [*texts[:5], "short", "a much longer title " * 8]
    batched = minilm.encode(texts)
    np.testing.assert_array_equal(batched, minilm.encode(texts))
    one_by_one = np.concatenate([minilm.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_minilm_topics(minilm: MiniLMTextEncoder) -> None:
    assert_topic_structure(minilm, margin=0.2)


def test_minilm_paraphrase_beats_unrelated(minilm: MiniLMTextEncoder) -> None:
    v = minilm.encode(
        [
            "A man is playing the guitar on stage",
            "Someone performs a guitar song at a concert",
            "The central bank raised interest rates again",
        ]
    )
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_minilm_truncates_long_input(minilm: MiniLMTextEncoder) -> None:
    v = minilm.encode(["word " * 2000])
    assert_unit_rows(v, 1, 384)


def test_minilm_rejects_bare_string(minilm: MiniLMTextEncoder) -> None:
    with pytest.raises(TypeError):
        minilm.encode("not a list")


def test_minilm_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        MiniLMTextEncoder(tmp_path / "nope", device="cpu")


# --- USE multilingual -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def use_m3() -> MultilingualTextEncoder:
    enc = build_text_encoder(EncoderParams(media_roots=(), text_encoder="use-m3"))
    assert isinstance(enc, MultilingualTextEncoder)
    return enc


def test_use_m3_contract(use_m3: MultilingualTextEncoder) -> None:
    assert isinstance(use_m3, Encoder)
    assert (use_m3.name, use_m3.dim, use_m3.device) == ("use-m3", 512, "cpu")
    v = use_m3.encode(["hello", "", "你好"])
    assert_unit_rows(v, 3, 512)
    np.testing.assert_array_equal(v, use_m3.encode(["hello", "", "你好"]))
    assert use_m3.encode([]).shape == (0, 512)


def test_use_m3_topics(use_m3: MultilingualTextEncoder) -> None:
    assert_topic_structure(use_m3, margin=0.1)


def test_use_m3_cross_lingual(use_m3: MultilingualTextEncoder) -> None:
    """Each Chinese sentence's nearest English sentence is its translation."""
    zh = ["我喜欢吃披萨", "今天股市大幅下跌", "这只小狗在雪地里玩耍"]
    en = ["I love eating pizza", "The stock market fell sharply today", "The puppy is playing in the snow"]
    z, e = use_m3.encode(zh), use_m3.encode(en)
    sim = z @ e.T
    assert (sim.argmax(axis=1) == np.arange(len(zh))).all(), sim
    assert (np.diag(sim) > sim.max(axis=1, initial=-1, where=~np.eye(3, dtype=bool)) + 0.1).all(), sim


# --- Hash fallback ----------------------------------------------------------------------------------------------


def test_hash_contract_and_overlap() -> None:
    enc = build_text_encoder(EncoderParams(media_roots=(), text_encoder="hash"))
    assert isinstance(enc, HashTextEncoder)
    assert isinstance(enc, Encoder)
    assert (enc.dim, enc.device) == (384, "cpu")
    v = enc.encode(["cheap pizza recipe", "pizza recipe for kids", "volcano eruption footage", "", "   "])
    assert_unit_rows(v, 5, 384)
    assert v[0] @ v[1] > 0.3
    assert abs(v[0] @ v[2]) < 0.2
    np.testing.assert_array_equal(v[3], v[4])  # both token-free: the same sentinel vector, not zero


def test_hash_hashtags_and_chinese() -> None:
    enc = HashTextEncoder(dim=1024)
    v = enc.encode(["#Cooking tonight", "cooking class", "上海美食", "#美食 推荐", "Football"])
    assert v[0] @ v[1] > 0.3  # a hashtag also counts as its plain word, case-insensitively
    assert v[2] @ v[3] > 0.3  # CJK characters are tokens, so shared characters overlap
    assert abs(v[0] @ v[4]) < 0.2


def test_hash_stable_across_instances_and_processes(tmp_path: Path) -> None:
    """blake2b, not hash(): a fresh interpreter with a different PYTHONHASHSEED gives identical vectors."""
    texts = ["Same #title here", "另一个标题", ""]
    a = HashTextEncoder(dim=256).encode(texts)
    np.testing.assert_array_equal(a, HashTextEncoder(dim=256).encode(texts))
    out = tmp_path / "v.npy"
    code = (
        "import sys, numpy as np; from encoders.text import HashTextEncoder; "
        "np.save(sys.argv[1], HashTextEncoder(dim=256).encode(sys.argv[2:]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(out), *texts], check=True, env=env, timeout=60)
    np.testing.assert_array_equal(a, np.load(out))


def test_hash_rejects_small_dim() -> None:
    with pytest.raises(ValueError):
        HashTextEncoder(dim=1)


# --- helpers ----------------------------------------------------------------------------------------------------


def test_l2_normalize_keeps_zero_rows_finite() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    assert l2_normalize(x).dtype == np.float32


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu", "cuda"}
