from typer.testing import CliRunner

from streams.cli import cli

runner = CliRunner()


def test_stable_command_names_have_help() -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("demo", "worker", "broker", "milvus", "replay", "tail", "schemas"):
        assert name in result.output
        assert runner.invoke(cli, [name, "--help"]).exit_code == 0


def test_worker_without_broker_says_what_to_do(monkeypatch) -> None:
    monkeypatch.delenv("LIVELENS_KAFKA_BROKER", raising=False)
    result = runner.invoke(cli, ["worker"])
    assert result.exit_code == 2
    assert "LIVELENS_KAFKA_BROKER" in result.output


def test_bad_configuration_is_reported_not_a_traceback(monkeypatch) -> None:
    monkeypatch.setenv("LIVELENS_PARTITIONS", "zero")
    result = runner.invoke(cli, ["tail"])
    assert result.exit_code == 2
    assert "invalid configuration" in result.output


def test_unknown_dataset_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LIVELENS_KAFKA_BROKER", "127.0.0.1:1")
    monkeypatch.setenv("LIVELENS_DATASETS_DIR", str(tmp_path))
    result = runner.invoke(cli, ["replay", "microlens-50k"])
    assert result.exit_code == 2
    assert "not found" in result.output


def test_bench_rejects_an_unknown_part_before_running_anything(tmp_path) -> None:
    result = runner.invoke(cli, ["bench", "scaling", "--only", "everything", "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "'everything' is not one of 'rates', 'items', 'tier', 'milvus'" in " ".join(
        result.output.replace("│", " ").split()
    )
    assert not list(tmp_path.iterdir())


def test_playlist_has_help_and_says_when_no_worker_answers() -> None:
    helped = runner.invoke(cli, ["playlist", "--help"])
    assert helped.exit_code == 0 and "--seed-item" in helped.output and "--length" in helped.output
    result = runner.invoke(cli, ["playlist", "someone", "--worker-url", "http://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "no worker at http://127.0.0.1:1" in result.output
