"""The `livelens` command line: run the worker, the embedded broker, replays, tails and the demo."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streams.settings import Settings

cli = typer.Typer(
    help="LiveLens: real-time recommendations for short-video and live-stream feeds. "
    "Configure with LIVELENS_* env vars (see README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # a bad LIVELENS_* value: say which, without a traceback
        console.print(f"[red]invalid configuration:[/] {exc}")
        raise typer.Exit(2) from exc


@cli.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="HTTP port for /health, /metrics, /stats")] = None,
    log_level: Annotated[str | None, typer.Option(help="crit|error|warn|info|debug")] = None,
) -> None:
    """Run a stream worker (content, live-status and interaction agents) until stopped."""
    import faust

    from streams.app import build_app
    from streams.topics import ensure_topics

    s = _settings()
    updates = {k: v for k, v in {"web_port": web_port, "log_level": log_level}.items() if v is not None}
    s = s.model_copy(update=updates)
    if not s.kafka_broker:
        console.print(
            "[red]LIVELENS_KAFKA_BROKER is not set.[/] Start one with `livelens broker` or use `livelens demo`."
        )
        raise typer.Exit(2)
    ensure_topics(s)
    app = build_app(s)
    faust.Worker(app, loglevel=s.log_level).execute_from_commandline()


@cli.command()
def broker(
    port: Annotated[int, typer.Option(help="0 picks a free port")] = 0,
    create_topics: Annotated[bool, typer.Option(help="create LiveLens topics once up")] = True,
) -> None:
    """Run the embedded Kafka-protocol broker (tansu, memory storage) in the foreground."""
    from streams.broker import EmbeddedBroker
    from streams.topics import ensure_topics

    log = Path(tempfile.gettempdir()) / "livelens-broker.log"
    with EmbeddedBroker(port=port or None, log_path=log) as b:
        if create_topics:
            ensure_topics(_settings().model_copy(update={"kafka_broker": b.bootstrap}))
        console.print(f"broker listening on [bold]{b.bootstrap}[/] (log {log}); Ctrl-C stops it")
        console.print(f"  export LIVELENS_KAFKA_BROKER={b.bootstrap}")
        stopped = False

        def _stop(*_: object) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stopped and b.is_running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@cli.command()
def replay(
    dataset: Annotated[str, typer.Argument(help="microlens-50k | movielens-latest-small")],
    limit: Annotated[int | None, typer.Option(help="replay only the first N users")] = None,
    rate: Annotated[float | None, typer.Option(help="interactions per second (default: as fast as possible)")] = None,
    content: Annotated[bool, typer.Option(help="publish the users' items as content first")] = True,
    wait_indexed: Annotated[float, typer.Option(help="seconds to wait for a local worker to index content")] = 300,
) -> None:
    """Publish a real dataset as content and interaction events, with a progress bar."""
    from ranking.datasets import DatasetNotFound, load_dataset
    from streams.demo import progress_bar
    from streams.local import WorkerProcess
    from streams.replay import publish_content, publish_interactions
    from streams.topics import ensure_topics

    s = _settings()
    if not s.kafka_broker:
        console.print("[red]LIVELENS_KAFKA_BROKER is not set[/] (start `livelens broker` first).")
        raise typer.Exit(2)
    try:
        data = load_dataset(dataset, s.datasets_dir).head(limit)
    except DatasetNotFound as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    ensure_topics(s)
    items = data.touched_items()
    with progress_bar(console) as bar:
        if content:
            task = bar.add_task("videos", total=len(items))
            publish_content(s, data, items, progress=lambda n: bar.advance(task, n))
            worker_view = WorkerProcess(s, Path(os.devnull))
            try:
                worker_view.wait_for("livelens_items_indexed", len(items), timeout=wait_indexed)
            except TimeoutError as exc:
                console.print(f"[yellow]not confirmed indexed ({exc}); interactions on unknown items go to DLQ[/]")
        task = bar.add_task("interactions", total=data.n_interactions)
        stats = publish_interactions(s, data, rate=rate, progress=lambda n: bar.advance(task, n))
    console.print(f"published {len(items) if content else 0} videos and {stats.interactions} interactions")


@cli.command()
def tail(
    feed: Annotated[str, typer.Option(help="short_video | live | dead-letter")] = "short_video",
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest message")] = False,
    seconds: Annotated[float | None, typer.Option(help="stop after this long")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print raw JSON lines")] = False,
) -> None:
    """Print recommendations (or dead letters) as they arrive."""
    from streams.consumer import TopicReader

    s = _settings()
    if not s.kafka_broker:
        console.print("[red]LIVELENS_KAFKA_BROKER is not set.[/]")
        raise typer.Exit(2)
    topics = {**s.feed_topics(), "dead-letter": s.topic_dead_letter}
    if feed not in topics:
        console.print(f"[red]unknown feed {feed!r}[/]; choose one of {', '.join(topics)}")
        raise typer.Exit(2)
    reader = TopicReader(s, [topics[feed]], from_beginning=from_beginning)
    try:
        for got in reader.iterate(seconds):
            if as_json:
                sys.stdout.write(got.value.decode(errors="replace") + "\n")
                sys.stdout.flush()
                continue
            data = json.loads(got.value)
            if feed == "dead-letter":
                console.print(f"[red]{data['reason']}[/] from {data['source_topic']}: {data['error']}")
            else:
                items = ", ".join(f"{i['item_id']} ({i['score']:.2f})" for i in data["items"][:5])
                console.print(f"[bold]{data['user_id']}[/] ← {items}")
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()


@cli.command()
def demo(
    limit: Annotated[int, typer.Option(help="MicroLens users to replay")] = 300,
    show: Annotated[int, typer.Option(help="users to print")] = 3,
    rate: Annotated[float | None, typer.Option(help="pace interactions (ev/s); default: one burst")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="keep logs and data here (default: a temp dir)")] = None,
) -> None:
    """Start everything locally, replay MicroLens-50K, print recommendations and latency, stop."""
    from ranking.datasets import DatasetNotFound
    from streams.demo import run_demo

    s = _settings()
    try:
        run_demo(s, users=limit, show=show, work_dir=work_dir, console=console, rate=rate)
    except DatasetNotFound as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@cli.command()
def schemas(
    out: Annotated[Path | None, typer.Option(help="directory (default: streams/jsonschema)")] = None,
) -> None:
    """Write the event JSON Schema files for producers."""
    from streams.schemas import JSONSCHEMA_DIR, write_json_schemas

    for path in write_json_schemas(out or JSONSCHEMA_DIR):
        console.print(str(path))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
