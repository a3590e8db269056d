from pathlib import Path

import pytest

from ranking.recommender import RankingParams
from streams.kafka import faust_broker_options
from streams.params import ranking_params_from_settings
from streams.schemas import InteractionType
from streams.settings import Settings


def test_env_vars_configure_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVELENS_KAFKA_BROKER", "127.0.0.1:1,127.0.0.1:2")
    monkeypatch.setenv("LIVELENS_PARTITIONS", "8")
    monkeypatch.setenv("LIVELENS_EVENT_WEIGHTS", '{"gift": 5.0, "skip": -1.0}')
    monkeypatch.setenv("LIVELENS_TOP_K", "20")
    monkeypatch.setenv("LIVELENS_CO_WEIGHT", "3.5")
    monkeypatch.setenv("LIVELENS_SEQ_CANDIDATES", "200")
    s = Settings()
    assert s.partitions == 8 and s.top_k == 20
    assert s.event_weights[InteractionType.gift] == 5.0
    assert faust_broker_options(s)["broker"] == "kafka://127.0.0.1:1;kafka://127.0.0.1:2"
    ranking = ranking_params_from_settings(s)
    assert (ranking.top_k, ranking.co_weight, ranking.seq_candidates) == (20, 3.5, 200)


def test_batches_by_default_with_exact_end_offsets() -> None:
    """Faust's producer batches; the embedded broker's end offsets stay exact because each micro-batch's
    changelog and training writes end with one-record batches (README: Embedded broker)."""
    s = Settings(kafka_broker="127.0.0.1:1")
    assert faust_broker_options(s)["producer_max_batch_size"] > 1
    assert s.exact_end_offsets


def test_sasl_settings_reach_every_client() -> None:
    s = Settings(
        kafka_broker="127.0.0.1:1",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="secret",
    )
    conf = s.confluent_config()
    assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.username"] == "svc"
    creds = faust_broker_options(s)["broker_credentials"]
    assert creds.username == "svc" and creds.mechanism.name == "SCRAM_SHA_512"
    assert "secret" not in repr(s)


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVELENS_PARTITIONS", "0")
    with pytest.raises(ValueError, match="partitions"):
        Settings()


def test_index_params_must_fit_the_index_type() -> None:
    s = Settings(milvus_index_type="IVF_FLAT", milvus_index_params={"nlist": 1024}, milvus_search_params={"nprobe": 32})
    assert s.milvus_search_params == {"nprobe": 32}
    assert Settings().milvus_index_type == "FLAT" and Settings().milvus_search_params == {}
    with pytest.raises(ValueError, match="do not apply to HNSW"):
        Settings(milvus_index_type="HNSW", milvus_search_params={"nprobe": 32})
    with pytest.raises(ValueError, match="do not apply to FLAT"):
        Settings(milvus_index_params={"nlist": 8})
    with pytest.raises(ValueError, match=">= 1"):
        Settings(milvus_index_type="HNSW", milvus_search_params={"ef": 0})


def test_the_user_table_bounds_rocksdb_memory(tmp_path: Path) -> None:
    """Faust's RocksDB defaults let each partition cache 2 GiB: the worker's memory must be bounded by settings."""
    from streams.app import build_app

    settings = Settings(
        kafka_broker="127.0.0.1:1", data_dir=tmp_path, rocksdb_block_cache_mib=32, rocksdb_write_buffer_mib=8
    )
    store = build_app(settings).tables["user_state"].data
    assert type(store).__module__ == "faust.stores.rocksdb"
    opts = store.rocksdb_options  # type: ignore[attr-defined]
    assert (opts.block_cache_size, opts.write_buffer_size, opts.max_write_buffer_number) == (32 * 2**20, 8 * 2**20, 2)
    opts.as_options()  # the DB opens with these: building them must not fail
    memory = build_app(Settings(kafka_broker="127.0.0.1:1", data_dir=tmp_path, table_store="memory://"))
    assert type(memory.tables["user_state"].data).__module__ == "faust.stores.memory"  # no RocksDB options there


def test_settings_defaults_are_the_core_defaults() -> None:
    """Each default is written once, in the core's parameter dataclasses; Settings reads it from there."""
    from encoders.params import EncoderParams
    from ranking.feed_matrix import SearchTierParams
    from ranking.ranker import RankerParams
    from ranking.training import ScheduleParams
    from ranking.trending import LiveVelocityParams, TrendingParams
    from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModelParams
    from streams.params import (
        encoder_params_from_settings,
        online_models_from_settings,
        search_tier_params_from_settings,
        user_model_params_from_settings,
    )

    s = Settings()
    assert ranking_params_from_settings(s) == RankingParams()
    weights = {InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
    assert user_model_params_from_settings(s) == UserModelParams(event_weights=weights)
    models = online_models_from_settings(s)
    assert models.signal("trending").model.params == TrendingParams()  # type: ignore[attr-defined]
    assert models.signal("live").model.params == LiveVelocityParams()  # type: ignore[attr-defined]
    assert models.ranker_params == RankerParams() and models.schedule_params == ScheduleParams()
    assert encoder_params_from_settings(s) == EncoderParams(media_roots=tuple(s.media_roots))
    assert search_tier_params_from_settings(s) == SearchTierParams()
    assert search_tier_params_from_settings(
        Settings(local_search_tier="exact", local_search_nprobe=8)
    ) == SearchTierParams(kind="exact", nprobe=8)
