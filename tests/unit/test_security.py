"""Security by inspection: Kafka credentials reach every client, event data never meets a code-executing
decoder, and secrets stay out of reprs.

Kafka clients are replaced by recorders that keep the config they were given (no broker needed); the
source checks parse the product code with ``ast``, so a new client or a new decoder call is caught too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import certifi
import pytest

from streams.settings import Settings, project_root

PASSWORD = "pw-Zq8!never-log-me"
PRODUCT_DIRS = ("streams", "encoders", "ranking", "bench")
CLIENT_CLASSES = {"Producer", "Consumer", "AdminClient", "AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaClient"}


def secure_settings(tmp_path: Path, protocol: str = "SASL_SSL") -> Settings:
    return Settings(
        kafka_broker="127.0.0.1:1,127.0.0.1:2",
        kafka_security_protocol=protocol,  # type: ignore[arg-type]
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="livelens-svc",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=certifi.where(),
        milvus_token="milvus-Tok3n-secret",
        data_dir=tmp_path,
    )


EXPECTED_CONF = {
    "bootstrap.servers": "127.0.0.1:1,127.0.0.1:2",
    "security.protocol": "sasl_ssl",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "livelens-svc",
    "sasl.password": PASSWORD,
    "ssl.ca.location": certifi.where(),
}


class Built(Exception):
    """Raised by a recorder once it has the client's config: nothing beyond construction runs."""


class Recorder:
    configs: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, conf: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        Recorder.configs.append((type(self).__name__, dict(conf)))
        raise Built


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    import streams.consumer
    import streams.metrics
    import streams.replay
    import streams.topics

    Recorder.configs = []
    monkeypatch.setattr(streams.replay, "Producer", type("Producer", (Recorder,), {}))
    monkeypatch.setattr(streams.consumer, "Consumer", type("Consumer", (Recorder,), {}))
    monkeypatch.setattr(streams.topics, "AdminClient", type("AdminClient", (Recorder,), {}))
    import confluent_kafka.admin

    # streams.metrics imports AdminClient inside the function, from confluent_kafka.admin
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", type("AdminClient", (Recorder,), {}))
    monkeypatch.setattr(streams.metrics, "_admin_clients", {})
    yield Recorder.configs


def test_every_confluent_client_gets_the_security_settings(tmp_path: Path, recorded: list) -> None:
    from streams.consumer import TopicReader
    from streams.metrics import _broker_topics
    from streams.replay import make_producer
    from streams.topics import ensure_topics

    s = secure_settings(tmp_path)
    for build in (
        lambda: make_producer(s),
        lambda: TopicReader(s, ["t"]),
        lambda: ensure_topics(s),
        lambda: _broker_topics(s.confluent_config(), 1.0),  # the /ready probe
    ):
        with pytest.raises(Built):
            build()
    assert [name for name, _ in recorded] == ["Producer", "Consumer", "AdminClient", "AdminClient"]
    for name, conf in recorded:
        assert {k: conf.get(k) for k in EXPECTED_CONF} == EXPECTED_CONF, name


def test_plaintext_sends_no_credentials(tmp_path: Path) -> None:
    conf = Settings(kafka_broker="127.0.0.1:1", data_dir=tmp_path).confluent_config()
    assert conf == {"bootstrap.servers": "127.0.0.1:1", "security.protocol": "plaintext"}


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT", "SSL"])
def test_the_faust_app_gets_the_security_settings(tmp_path: Path, protocol: str) -> None:
    import faust

    from streams.app import build_app

    app = build_app(secure_settings(tmp_path, protocol))
    creds = app.conf.broker_credentials
    assert [f"{u.host}:{u.port}" for u in app.conf.broker] == ["127.0.0.1:1", "127.0.0.1:2"]
    if protocol == "SSL":
        assert isinstance(creds, faust.SSLCredentials) and creds.context is not None
        return
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("livelens-svc", PASSWORD, "SCRAM-SHA-512")
    assert (creds.ssl_context is not None) == (protocol == "SASL_SSL")


def test_faust_serializers_are_raw_or_json(tmp_path: Path) -> None:
    """Faust ships a pickle codec; no topic, agent or table of ours may resolve to it."""
    from streams.app import build_app

    app = build_app(Settings(kafka_broker="127.0.0.1:1", data_dir=tmp_path))
    assert (app.conf.key_serializer, app.conf.value_serializer) == ("raw", "raw")
    assert (app.serializers.key_serializer, app.serializers.value_serializer) == ("raw", "raw")
    assert len(app.agents) == 5  # content, live segments, live status, interactions, fan-out
    for agent in app.agents.values():
        for serializer in (agent.channel.key_serializer, agent.channel.value_serializer):
            assert serializer in (None, "raw", "json"), agent.name  # None: the app's raw default
    assert app.tables
    for table in app.tables.values():
        topic = table.changelog_topic
        assert {table.key_serializer, table.value_serializer, topic.key_serializer, topic.value_serializer} == {"json"}


def _product_files() -> list[Path]:
    root = project_root()
    return sorted(p for d in PRODUCT_DIRS for p in (root / d).rglob("*.py") if ".venv" not in p.parts)


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        base = f.value.id if isinstance(f.value, ast.Name) else "?"
        return f"{base}.{f.attr}"
    return ""


def _kw(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def dangerous_calls(tree: ast.AST) -> list[str]:
    """Imports and calls that can run code from data: pickle & co, eval/exec, unsafe yaml/torch/numpy loads."""
    found: list[str] = []
    banned_modules = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"import {n}" for n in names if n.split(".")[0] in banned_modules]
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name in ("eval", "exec", "compile", "__import__", "yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(name)
        if name.endswith("read_pickle") or (name.endswith(".loads") and name.split(".")[0] in banned_modules):
            found.append(name)
        if name == "torch.load":
            weights_only = _kw(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append("torch.load without weights_only=True")
        if name in ("np.load", "numpy.load"):
            allow = _kw(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append("np.load with allow_pickle")
    return found


def test_no_code_executing_decoder_anywhere_in_the_product() -> None:
    files = _product_files()
    assert len(files) > 20
    problems = {
        str(p.relative_to(project_root())): bad for p in files if (bad := dangerous_calls(ast.parse(p.read_text())))
    }
    assert problems == {}


def test_the_scan_catches_what_it_claims_to() -> None:
    """A negative control: the scanner flags each banned pattern (so an empty result above means something)."""
    sample = (
        "import pickle\nfrom marshal import loads\nimport yaml, torch, numpy as np\n"
        "eval(x)\nexec(y)\nyaml.load(s)\ntorch.load(p)\nnp.load(f, allow_pickle=True)\npickle.loads(b)\n"
        "yaml.safe_load(s)\ntorch.load(p, weights_only=True)\nnp.load(f)\n"
    )
    assert dangerous_calls(ast.parse(sample)) == [
        "import pickle",
        "import marshal",
        "eval",
        "exec",
        "yaml.load",
        "torch.load without weights_only=True",
        "np.load with allow_pickle",
        "pickle.loads",
    ]


def test_kafka_clients_are_only_built_from_the_shared_config() -> None:
    """Any module that constructs a Kafka client must take its config from Settings.confluent_config
    (confluent-kafka) or streams.kafka.faust_broker_options (Faust), the one place security is applied."""
    offenders = []
    for path in _product_files():
        source = path.read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node).split(".")[-1]
            if name in CLIENT_CLASSES and "confluent_config" not in source:
                offenders.append(f"{path.name}:{node.lineno} {name}")
            if _call_name(node) in ("faust.App", "App") and "faust_broker_options" not in ast.unparse(node):
                offenders.append(f"{path.name}:{node.lineno} faust.App")
    assert offenders == []


def test_secrets_stay_out_of_settings_repr(tmp_path: Path) -> None:
    s = secure_settings(tmp_path)
    for text in (repr(s), str(s)):
        assert PASSWORD not in text and "milvus-Tok3n-secret" not in text
    assert "livelens-svc" in repr(s)  # the repr is not just empty
