"""Settings -> the core's typed parameters: the one place the shell maps ``LIVELENS_*`` knobs onto the core.

The core (``ranking``, ``encoders``) never sees ``Settings``: it takes the dataclasses built here. The
worker, the CLI's evaluation and the replay through Kafka all build theirs with these functions, so the
same knobs mean the same thing everywhere.
"""

from __future__ import annotations

from encoders.live import LiveWindows
from encoders.music import MusicParams
from encoders.params import EncoderParams
from ranking.ab import ArmSplit
from ranking.feed_matrix import SearchTierParams
from ranking.next_item import NextItemLearner, NextItemModel
from ranking.online import OnlineModels, default_signals
from ranking.playlist import PlaylistParams
from ranking.ranker import RankerParams
from ranking.recommender import RankingParams
from ranking.training import ScheduleParams
from ranking.trending import LiveVelocityParams, TrendingParams
from ranking.user_state import UserModel, UserModelParams
from streams.settings import Settings

__all__ = [
    "arm_split_from_settings",
    "encoder_params_from_settings",
    "live_windows_from_settings",
    "music_params_from_settings",
    "online_arms_from_settings",
    "online_models_from_settings",
    "playlist_params_from_settings",
    "ranking_params_from_settings",
    "search_tier_params_from_settings",
    "user_model_params_from_settings",
]


def user_model_params_from_settings(s: Settings) -> UserModelParams:
    return UserModelParams(
        event_weights=dict(s.event_weights),
        half_life_s=s.taste_half_life_s,
        session_decay=1.0 - s.learning_rate,
        watch_seconds_full=s.watch_seconds_full,
        recent_items=s.recent_items,
        dedupe_window=s.dedupe_window,
    )


def ranking_params_from_settings(s: Settings) -> RankingParams:
    return RankingParams(
        top_k=s.top_k,
        freshness_weight=s.freshness_weight,
        trending_weight=s.trending_weight,
        live_boost_weight=s.live_boost_weight,
        mmr_lambda=s.mmr_lambda,
        explore_slots=s.explore_slots,
        knn_weight=s.knn_weight,
        seq_weight=s.seq_weight,
        seq_candidates=s.seq_candidates,
        co_weight=s.co_weight,
        content_candidates=s.candidates,
    )


def online_models_from_settings(s: Settings, ranking: RankingParams | None = None, arm: str = "a") -> OnlineModels:
    """The worker's models: the user model, every signal (with the configured next-item model), the
    learned ranker and its training schedule. ``ranking`` overrides the ranking parameters (the
    evaluation's top K without freshness and exploration); ``arm`` names them in their version."""
    if s.torch_threads is None:
        # The online models' matrices are tiny: on a 2-core host one torch thread measured 20x faster
        # than two (thread hand-off dominates). Process-wide; LIVELENS_TORCH_THREADS overrides.
        import torch

        torch.set_num_threads(1)
    params = ranking or ranking_params_from_settings(s)
    next_item: NextItemLearner
    if s.next_item_model == "transformer":
        from ranking.next_item_transformer import TransformerNextItem  # torch: only when asked for

        next_item = TransformerNextItem()
    else:
        next_item = NextItemModel()
    signals = default_signals(
        params,
        next_item,
        TrendingParams(half_life_s=s.trending_half_life_s, window_s=s.trending_window_s),
        LiveVelocityParams(window_s=s.live_window_s),
    )
    return OnlineModels(
        user_model=UserModel(user_model_params_from_settings(s)),
        params=params,
        signals=signals,
        ranker_params=RankerParams(hidden=s.ranker_hidden, learning_rate=s.ranker_learning_rate),
        schedule_params=ScheduleParams(
            label_one_in=s.label_one_in, rehearse_ratio=s.rehearse_ratio, ranker_rehearse=s.ranker_rehearse
        ),
        arm=arm,
        # the vectors every signal works on come from these: part of what a version names
        describes={
            "text_encoder": s.text_encoder,
            "text_model_path": s.text_model_path,
            "image_encoder": s.image_encoder,
            "audio_encoder": s.audio_encoder,
            "fusion_weights": dict(s.fusion_weights),
        },
    )


def online_arms_from_settings(s: Settings) -> dict[str, OnlineModels]:
    """One ``OnlineModels`` per A/B arm: "a" from the settings, and with ``ab_variant`` set, "b" from the
    settings with those overrides. Without a variant there is one arm and nothing else is built."""
    arms = {"a": online_models_from_settings(s, arm="a")}
    if s.ab_variant:
        arms["b"] = online_models_from_settings(s.variant(), arm="b")
    return arms


def arm_split_from_settings(s: Settings) -> ArmSplit:
    """Which users arm b ranks: ``ab_share`` of them by crc32 of the user id; nobody without a variant."""
    return ArmSplit(s.ab_share if s.ab_variant else 0.0)


def encoder_params_from_settings(s: Settings) -> EncoderParams:
    return EncoderParams(
        media_roots=tuple(s.media_roots),
        device=s.device,
        torch_threads=s.torch_threads,
        encoder_batch_size=s.encoder_batch_size,
        text_encoder=s.text_encoder,
        text_model_path=s.text_model_path,
        image_encoder=s.image_encoder,
        image_model_path=s.image_model_path,
        clip_model=s.clip_model,
        clip_checkpoint=s.clip_checkpoint,
        audio_encoder=s.audio_encoder,
        audio_model_path=s.audio_model_path,
        audio_sample_rate=s.audio_sample_rate,
        audio_max_seconds=s.audio_max_seconds,
        keyframes=s.keyframes,
        fusion_weights=dict(s.fusion_weights),
    )


def live_windows_from_settings(s: Settings) -> LiveWindows:
    """Per-stream windows of what is on air, bounded as configured (``encoders.live``)."""
    return LiveWindows(s.live_comment_window, s.live_streams_tracked, s.live_refresh_interval_s)


def search_tier_params_from_settings(s: Settings) -> SearchTierParams:
    """How the worker's in-process tier (and ``livelens eval``'s index) searches a feed."""
    return SearchTierParams(
        kind=s.local_search_tier,
        nlist=s.local_search_nlist,
        nprobe=s.local_search_nprobe,
        exact_below=s.local_search_exact_below,
        codes=s.local_search_codes,
        retrain_growth=s.local_search_retrain_growth,
    )


def music_params_from_settings(s: Settings) -> MusicParams:
    return MusicParams(max_seconds=s.music_max_seconds)


def playlist_params_from_settings(s: Settings) -> PlaylistParams:
    return PlaylistParams(
        artist_spacing=s.playlist_artist_spacing,
        max_tempo_step=s.playlist_max_tempo_step,
        live_slots=s.playlist_live_slots,
    )
