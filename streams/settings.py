"""The one typed settings object: every knob of LiveLens, read from ``LIVELENS_*`` env vars.

Everything that differs between a laptop demo and a production cluster is a URL or a number here,
so the same code runs on the embedded broker and Milvus Lite file or on real clusters. The core never
sees this object: ``streams.params`` turns it into the core's parameter dataclasses, and a knob those
dataclasses also carry takes its default from them (each default is written once).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from encoders.fusion import DEFAULT_WEIGHTS as DEFAULT_FUSION_WEIGHTS
from encoders.music import MusicParams
from encoders.params import AudioEncoderKind, Device, EncoderParams, ImageEncoderKind, TextEncoderKind
from ranking.domain import InteractionType
from ranking.feed_matrix import Codes, SearchKind, SearchTierParams
from ranking.playlist import PlaylistParams
from ranking.ranker import RankerParams
from ranking.recommender import RankingParams
from ranking.training import ScheduleParams
from ranking.trending import LiveVelocityParams, TrendingParams
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, DEFAULT_LEARNING_RATE, UserModelParams

# Build / search parameters each Milvus index type understands (milvus-lite 3.2.2 names; Milvus uses the same).
INDEX_PARAM_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "FLAT": (frozenset(), frozenset()),
    "IVF_FLAT": (frozenset({"nlist"}), frozenset({"nprobe"})),
    "HNSW": (frozenset({"M", "efConstruction"}), frozenset({"ef"})),
}


# The settings an A/B variant may override: only what ranks (streams.params maps them onto RankingParams,
# RankerParams, ScheduleParams and the signals' parameters), never the user model or the infrastructure.
AB_SETTINGS = frozenset(
    {
        "top_k",
        "candidates",
        "freshness_weight",
        "trending_weight",
        "trending_half_life_s",
        "trending_window_s",
        "live_boost_weight",
        "live_window_s",
        "mmr_lambda",
        "explore_slots",
        "next_item_model",
        "seq_weight",
        "seq_candidates",
        "co_weight",
        "knn_weight",
        "ranker_hidden",
        "ranker_learning_rate",
        "label_one_in",
        "rehearse_ratio",
        "ranker_rehearse",
    }
)


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_datasets_dir() -> Path:
    """../shared/datasets beside the checkout: read-only real data, never copied into the repo."""
    return project_root().parent / "shared" / "datasets"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVELENS_", env_nested_delimiter="__")

    # --- Kafka -------------------------------------------------------------------------------
    kafka_broker: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port[,host:port]). Unset: start the embedded broker.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    partitions: int = Field(default=4, ge=1, description="Partition count for topics LiveLens creates.")
    replication_factor: int = Field(default=1, ge=1)
    topic_content: str = "livelens.content"
    topic_live_status: str = "livelens.live-status"
    topic_interactions: str = "livelens.interactions"
    topic_live_segments: str = "livelens.live-segments"
    topic_recs_short_video: str = "livelens.recs.short-video"
    topic_recs_live: str = "livelens.recs.live"
    topic_recs_creators: str = Field(
        default="livelens.recs.creators", description="Creators and streamers to follow, per user (docs/creators.md)."
    )
    topic_fanout: str = Field(
        default="livelens.fanout",
        description="A followed creator's new upload or stream going live, one record per follower (keyed by user).",
    )
    topic_recs_music: str = "livelens.recs.music"
    topic_dead_letter: str = "livelens.dead-letter"
    topic_training: str = Field(
        default="livelens.training", description="Training records ranking workers log for the trainer."
    )
    topic_models: str = Field(
        default="livelens.models", description="The trainer's versioned model snapshots, chunked (compacted)."
    )
    topic_model_deltas: str = Field(
        default="livelens.model-deltas", description="The trainer's count updates between snapshots (not compacted)."
    )
    # The embedded broker (tansu 0.6) reports ListOffsets "latest" as the last batch's base offset + 1,
    # and Faust's table recovery reads it: exact_end_offsets keeps it exact where it is read, so the
    # producer batches normally (docs/embedded-broker.md). 1: every batch one record (the old workaround).
    producer_max_batch_bytes: int = Field(
        default=262_144, ge=1, description="aiokafka max_batch_size of Faust's producer (bytes per partition)."
    )
    exact_end_offsets: bool = Field(
        default=True,
        description="End each micro-batch's writes to the user_state changelog and the training topic with a "
        "one-record batch per partition, sent once the others are acknowledged, so a broker that reports the last "
        "batch's base offset + 1 as the end (the embedded tansu) reports the true end at every commit. Off against "
        "real Kafka saves one round trip per micro-batch.",
    )
    recs_producer: Literal["confluent", "faust"] = Field(
        default="confluent",
        description="confluent: recommendations go out through a confluent-kafka producer (its own batching and "
        "thread); faust: through Faust's producer, beside the changelog and training records.",
    )
    recs_linger_ms: float = Field(default=1.0, ge=0.0, description="linger.ms of the recommendation producer.")
    consumer_fetch_wait_ms: int | None = Field(
        default=10,
        ge=1,
        description="Longest wait of the worker's fetch requests (Faust fixes 1,500 ms; the embedded broker "
        "holds a fetch that long even when records arrive). Unset: Faust's value.",
    )
    broker_session_timeout_s: float = 6.0
    broker_heartbeat_interval_s: float = 1.0

    # --- Faust worker --------------------------------------------------------------------------
    app_id: str = "livelens"
    worker_role: Literal["all", "encoder", "ranking"] = Field(
        default="all", description="encoder: content agent only (GPU nodes); ranking: live status + interactions"
    )
    data_dir: Path = Field(default_factory=lambda: project_root() / ".livelens")
    table_store: str = Field(default="rocksdb://", description="rocksdb:// in production, memory:// for tests")
    rocksdb_block_cache_mib: int = Field(
        default=64, ge=1, description="RocksDB read cache per table partition (Faust's default is 2 GiB)."
    )
    rocksdb_write_buffer_mib: int = Field(
        default=16, ge=1, description="RocksDB memtable size per table partition, two of them at most (Faust: 3 x 64)."
    )
    table_consistency_check: bool = Field(
        default=True,
        description="Stop the worker when its local table store is ahead of the changelog (Faust's check). The "
        "local stack turns it off: its in-memory broker loses the changelog on restart and the worker keeps its "
        "local state instead of crashing.",
    )
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "warn"

    # --- Trainer ---------------------------------------------------------------------------------
    trainer: bool = Field(
        default=True,
        description="true (default): a `livelens trainer` process trains the shared models from the workers' "
        "training records and ranking workers serve its snapshots (train nothing shared); false: each worker "
        "trains its own copy from its own partitions.",
    )
    snapshot_interval_s: float = Field(
        default=30.0, gt=0, description="The trainer publishes a snapshot of every model at least this often."
    )
    delta_interval_s: float = Field(
        default=0.25,
        gt=0,
        description=(
            "The trainer publishes count deltas (applied observations) this often, and ranking workers look "
            "for new ones as often (0.25 s halved the median model freshness of 1 s, at no drain-rate cost)."
        ),
    )
    trainer_batch_size: int = Field(default=512, ge=1, description="Training records the trainer learns per step.")
    trainer_torch_threads: int = Field(
        default=1, ge=1, description="torch (and BLAS) threads of the trainer: its CPU share is about this many cores."
    )

    # --- Milvus ---------------------------------------------------------------------------------
    milvus_uri: str | None = Field(
        default=None, description="Milvus URI (http://host:19530) or a Milvus Lite file path; unset: under data_dir."
    )
    milvus_token: str | None = Field(default=None, repr=False)
    embedded_milvus: Literal["lite", "server"] = Field(
        default="lite",
        description="What the local stack (demo, tests, benches) starts when milvus_uri is unset. lite: Milvus "
        "Lite's gRPC server (starts in ~1 s; scans every row per search); server: the Milvus standalone server "
        "of the `milvus` package (`livelens milvus`; ~10-30 s to start, real ANN indexes).",
    )
    milvus_server_dir: Path | None = Field(
        default=None,
        description="`livelens milvus`: the server's binaries (~250 MB unpacked), data and logs; unset: "
        "data_dir/milvus-server.",
    )
    milvus_server_port: int = Field(
        default=19530, ge=1, le=65535, description="`livelens milvus`: the gRPC port it listens on (Milvus's own)."
    )
    milvus_collection: str = "livelens_items"
    milvus_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest wait for one Milvus call; a hung server then shows in /health"
    )
    milvus_index_type: Literal["FLAT", "IVF_FLAT", "HNSW"] = Field(
        default="FLAT",
        description="Vector index of a new collection. FLAT: exact, and exact under the live-feed filter; "
        "IVF_FLAT/HNSW: approximate (see README bench retrieval)",
    )
    milvus_index_params: dict[str, int] = Field(
        default_factory=dict, description='Index build params, e.g. {"nlist": 1024} or {"M": 16, "efConstruction": 64}'
    )
    milvus_search_params: dict[str, int] = Field(
        default_factory=dict, description='Search params, e.g. {"nprobe": 32} (IVF_FLAT) or {"ef": 128} (HNSW)'
    )
    local_search: bool = Field(
        default=True,
        description="Serve candidate search and item lookups from an in-process copy of the index "
        "(ranking.local_tier; searched as LOCAL_SEARCH_TIER says), kept in sync with Milvus; false: every search "
        "goes to Milvus.",
    )
    blas_threads: int | None = Field(
        default=1,
        ge=1,
        description="BLAS threads in the worker (the local tier's matrix products); 1 avoids spinning threads "
        "fighting the event loop on small busy hosts; unset: the library default (all cores).",
    )
    local_search_refresh_s: float = Field(
        default=1.0,
        ge=0.0,
        description=(
            "How often the in-process copy polls Milvus for other workers' writes (longer where a poll is "
            "dear: polls take at most a fifth of the time)."
        ),
    )
    local_search_lookback_s: float = Field(
        default=2.0,
        ge=0.0,
        description="Each poll re-reads items written this long before the newest write stamp seen (clock skew "
        "between writers, writes that commit out of order); items it misses are still found by the count "
        "check of the next quiet poll, just more slowly.",
    )
    local_search_tier: SearchKind = Field(
        default=SearchTierParams.kind,
        description="How the in-process copy searches a feed: ann (an IVF index with float16 codes, recall@100 "
        "~0.999 on clustered vectors, bench/README.md) or exact (a matrix product over every item, O(items) per "
        "query). The live feed and feeds under LOCAL_SEARCH_EXACT_BELOW items are searched exactly either way.",
    )
    local_search_nlist: int = Field(
        default=SearchTierParams.nlist, ge=1, description="IVF lists per feed (fewer while the feed is small)."
    )
    local_search_nprobe: int = Field(
        default=SearchTierParams.nprobe, ge=1, description="IVF lists searched per query: recall against speed."
    )
    local_search_exact_below: int = Field(
        default=SearchTierParams.exact_below,
        ge=0,
        description="A feed with fewer searchable items is searched exactly; its IVF is trained at this size.",
    )
    local_search_codes: Codes = Field(
        default=SearchTierParams.codes,
        description="How the IVF stores vectors: fp16 (half the memory of float32), sq8 (a quarter) or flat "
        "(float32); found items are rescored on their float32 vectors either way.",
    )
    local_search_retrain_growth: float = Field(
        default=SearchTierParams.retrain_growth,
        gt=1.0,
        description="Retrain a feed's IVF from scratch once it holds this many times the items it was trained on.",
    )

    # --- Encoders -------------------------------------------------------------------------------
    text_encoder: TextEncoderKind = Field(
        default=EncoderParams.text_encoder,
        description="minilm: shipped all-MiniLM-L6-v2 (English); use-m3: shipped multilingual USE (incl. Chinese); "
        "hash: deterministic, no model",
    )
    torch_threads: int | None = Field(
        default=EncoderParams.torch_threads,
        ge=1,
        description="torch intra-op threads; 1 avoids oversubscription on busy small hosts",
    )
    text_model_path: Path | None = Field(
        default=EncoderParams.text_model_path, description="Local BERT checkpoint; default: shipped MiniLM"
    )
    encoder_batch_size: int = Field(default=EncoderParams.encoder_batch_size, ge=1)
    encoder_batch_wait_s: float = Field(default=0.05, ge=0.0)
    device: Device = EncoderParams.device
    image_encoder: ImageEncoderKind = Field(
        default=EncoderParams.image_encoder,
        description="efficientnet: shipped ImageNet EfficientNet-Lite0 (1280-d, visual only); clip: open_clip from "
        "clip_checkpoint (text-aligned); none: frames not encoded",
    )
    image_model_path: Path | None = Field(
        default=EncoderParams.image_model_path, description="EfficientNet-Lite0 .pth; default: shipped"
    )
    clip_model: str = Field(default=EncoderParams.clip_model, description="open_clip model name")
    clip_checkpoint: str | None = Field(
        default=EncoderParams.clip_checkpoint,
        description="Local CLIP weights file, or a pretrained tag already in the local cache",
    )
    audio_encoder: AudioEncoderKind = Field(
        default=EncoderParams.audio_encoder,
        description="features: log-mel statistics + descriptors (no weights); wav2vec2: audio_model_path; none",
    )
    audio_model_path: Path | None = Field(
        default=EncoderParams.audio_model_path, description="Local wav2vec2-style checkpoint directory"
    )
    audio_sample_rate: int = Field(default=EncoderParams.audio_sample_rate, ge=8_000, le=48_000)
    audio_max_seconds: float = Field(
        default=EncoderParams.audio_max_seconds, gt=0, description="Audio decoded per item, at most."
    )
    music_max_seconds: float = Field(
        default=MusicParams.max_seconds,
        gt=0,
        le=600,
        description="Seconds of a music track analysed for tempo, timbre and voice (from its start).",
    )
    music_tracks_scanned: int = Field(
        default=16_384,
        ge=1,
        le=16_384,
        description="Tracks read per music search or playlist (the whole catalogue up to this; Milvus caps one query "
        "at 16,384 rows).",
    )
    playlist_artist_spacing: int = Field(
        default=PlaylistParams.artist_spacing,
        ge=1,
        le=50,
        description="No artist twice within this many consecutive playlist tracks.",
    )
    playlist_max_tempo_step: float = Field(
        default=PlaylistParams.max_tempo_step,
        gt=0,
        le=1,
        description="A playlist transition is smooth when the tempo changes by at most this fraction.",
    )
    playlist_live_slots: int = Field(
        default=PlaylistParams.live_slots, ge=0, le=10, description="Live music streams a playlist may end with."
    )
    keyframes: int = Field(
        default=EncoderParams.keyframes, ge=1, le=64, description="Frames per item: cover/keyframes/video keyframes."
    )
    media_roots: list[Path] = Field(
        default_factory=lambda: [default_datasets_dir()],
        description="Media paths in content events must resolve inside one of these (JSON list); empty: none allowed",
    )
    fusion_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_FUSION_WEIGHTS),
        description="Relative modality weights, renormalised over the modalities an item has.",
    )
    live_refresh_alpha: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Weight of a live stream's recent window when its vector refreshes."
    )
    live_refresh_interval_s: float = Field(
        default=5.0, gt=0, description="A live stream's vector refreshes at most this often (its window accumulates)."
    )
    live_comment_window: int = Field(default=50, ge=1, le=1_000, description="Recent comments kept per live stream.")
    live_streams_tracked: int = Field(
        default=10_000, ge=1, description="Live streams with a pending window per worker, at most (oldest dropped)."
    )
    interaction_batch_size: int = Field(default=64, ge=1, description="Interactions per micro-batch, at most.")
    interaction_batch_wait_s: float = Field(default=0.01, ge=0.0, description="Longest wait to fill a batch.")

    # --- Ranking --------------------------------------------------------------------------------
    event_weights: dict[InteractionType, float] = Field(
        default_factory=lambda: {InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
    )
    watch_seconds_full: float = Field(
        default=UserModelParams.watch_seconds_full, gt=0, description="A view this long counts fully."
    )
    taste_half_life_s: float = Field(
        default=UserModelParams.half_life_s, gt=0, description="Old taste halves after this."
    )
    learning_rate: float = Field(
        default=DEFAULT_LEARNING_RATE, gt=0, le=1, description="The session vector keeps 1 - this per event."
    )
    recent_items: int = Field(
        default=UserModelParams.recent_items, ge=1, description="Items remembered per user (seen filter, reasons)."
    )
    dedupe_window: int = Field(
        default=UserModelParams.dedupe_window, ge=1, description="Event ids remembered per user for idempotence."
    )
    top_k: int = Field(default=RankingParams.top_k, ge=1)
    candidates: int = Field(
        default=RankingParams.content_candidates,
        ge=1,
        description="Candidates from the taste search (half as many from the last item's).",
    )
    freshness_weight: float = Field(
        default=RankingParams.freshness_weight, ge=0, description="Score bonus for a just-uploaded item."
    )
    trending_weight: float = Field(
        default=RankingParams.trending_weight, ge=0, description="Score bonus x trending in the feed (0-1)."
    )
    trending_half_life_s: float = Field(
        default=TrendingParams.half_life_s, gt=0, description="Trending engagement halves after this."
    )
    trending_window_s: float = Field(
        default=TrendingParams.window_s, gt=0, description="Idle this long: no longer trending."
    )
    live_boost_weight: float = Field(
        default=RankingParams.live_boost_weight,
        ge=0,
        description="Live feed: score bonus x log1p(gifts x 3 + comments in the window).",
    )
    live_window_s: float = Field(
        default=LiveVelocityParams.window_s, gt=0, description="Window of the live gift/comment velocity."
    )
    mmr_lambda: float = Field(
        default=RankingParams.mmr_lambda,
        ge=0,
        le=1,
        description="MMR diversity re-ranking: 1 = relevance only, lower = more diverse.",
    )
    explore_slots: int = Field(
        default=RankingParams.explore_slots, ge=0, description="Last places given to the newest unseen items."
    )
    next_item_model: Literal["embedding", "transformer"] = Field(
        default="transformer",
        description="Online next-item model: item-embedding average (ranking/next_item.py) or a small "
        "self-attentive encoder (ranking/next_item_transformer.py).",
    )
    seq_weight: float = Field(
        default=RankingParams.seq_weight, ge=0, description="Score bonus x the next-item model's z-score; 0 = off."
    )
    seq_candidates: int = Field(
        default=RankingParams.seq_candidates, ge=0, description="Candidates taken from the next-item model's top items."
    )
    co_weight: float = Field(
        default=RankingParams.co_weight,
        ge=0,
        description="Score bonus x co-engagement with the user's recent items (tuned on validation)",
    )
    knn_weight: float = Field(
        default=RankingParams.knn_weight,
        ge=0,
        description="Score bonus x sequence-neighbour (session-kNN) score in [0, 1]; 0 = off.",
    )
    ranker_hidden: int = Field(
        default=RankerParams.hidden, ge=0, description="Learned ranker: width of its MLP's hidden layers; 0 = linear."
    )
    ranker_learning_rate: float = Field(
        default=RankerParams.learning_rate,
        ge=0,
        description="Learned ranker's Adam step; 0 = serve the hand blend it starts from.",
    )
    label_one_in: int = Field(
        default=ScheduleParams.label_one_in,
        ge=1,
        description="One in N interactions (by event-id hash) labels ranker training examples.",
    )
    rehearse_ratio: float = Field(
        default=ScheduleParams.rehearse_ratio,
        ge=0,
        description="Next-item examples rehearsed from its bounded buffer per applied event (in bursts; "
        "least-rehearsed examples first).",
    )
    ranker_rehearse: int = Field(
        default=ScheduleParams.ranker_rehearse,
        ge=0,
        description="Past labelled examples the ranker rehearses (from its bounded buffer) with each step.",
    )

    # --- A/B and the online metric ---------------------------------------------------------------
    ab_variant: dict[str, Any] = Field(
        default_factory=dict,
        description='Arm "b": ranking settings that differ from the rest, as a JSON object of setting names '
        '(e.g. {"mmr_lambda": 1.0}); empty: no A/B, every user in arm "a".',
    )
    ab_share: float = Field(
        default=0.5, ge=0, le=1, description="With ab_variant set: the share of users (by crc32 of user_id) in arm b."
    )
    online_metric_lists: int = Field(
        default=100_000,
        ge=1,
        description="Last lists kept (per user and feed, least recently emitted dropped) to score the online hit rate.",
    )
    fanout_max_followers: int = Field(
        default=1_000,
        ge=0,
        description="Followers whose lists a new upload or a stream going live refreshes at once (most recent "
        "followers first); the others see it first on their next request or event (docs/creators.md).",
    )

    # --- Data -----------------------------------------------------------------------------------
    datasets_dir: Path = Field(default_factory=default_datasets_dir)

    @model_validator(mode="after")
    def _ab_variant_names_ranking_settings(self) -> Settings:
        """Arm b may change only how lists are ranked: user state is one per user, shared by both arms, and
        the infrastructure is one. Values are checked as if set directly (types and bounds)."""
        unknown = set(self.ab_variant) - AB_SETTINGS
        if unknown:
            raise ValueError(f"ab_variant {sorted(unknown)} cannot differ between arms; allowed: {sorted(AB_SETTINGS)}")
        self.ab_variant = _validated_overrides(self.ab_variant)
        return self

    def variant(self) -> Settings:
        """Arm b's settings: these with ``ab_variant`` applied (values validated like the settings')."""
        return self.model_copy(update={**_validated_overrides(self.ab_variant), "ab_variant": {}})

    @model_validator(mode="after")
    def _index_params_fit_type(self) -> Settings:
        """A typo'd or mismatched index param would be silently ignored by Milvus Lite: refuse it here."""
        build_keys, search_keys = INDEX_PARAM_KEYS[self.milvus_index_type]
        for given, allowed, what in (
            (self.milvus_index_params, build_keys, "milvus_index_params"),
            (self.milvus_search_params, search_keys, "milvus_search_params"),
        ):
            unknown = set(given) - allowed
            if unknown:
                raise ValueError(
                    f"{what} {sorted(unknown)} do not apply to {self.milvus_index_type}; allowed: {sorted(allowed)}"
                )
            if any(v < 1 for v in given.values()):
                raise ValueError(f"{what} values must be >= 1")
        return self

    def broker_url(self) -> str:
        if not self.kafka_broker:
            raise RuntimeError("no broker configured: set LIVELENS_KAFKA_BROKER or start the embedded broker")
        return self.kafka_broker

    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    def resolved_milvus_server_dir(self) -> Path:
        return self.milvus_server_dir or self.data_dir / "milvus-server"

    def confluent_config(self) -> dict[str, str]:
        """librdkafka settings shared by every confluent-kafka client (security passes through)."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.broker_url(),
            "security.protocol": self.kafka_security_protocol.lower(),
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = self.kafka_ssl_cafile
        return conf

    def feed_topics(self) -> dict[str, str]:
        return {
            "short_video": self.topic_recs_short_video,
            "live": self.topic_recs_live,
            "creators": self.topic_recs_creators,
            "music": self.topic_recs_music,
        }


def _validated_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Each override through its setting's own type and bounds (``"1.0"`` becomes 1.0; 3 for mmr_lambda fails)."""
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        info = Settings.model_fields[name]
        out[name] = TypeAdapter(Annotated[info.annotation, info]).validate_python(value)
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
