"""The `livelens` command line: run the worker, the embedded broker, a Milvus server, replays, tails and the demo."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console

from streams.settings import Settings

if TYPE_CHECKING:
    from ranking.feed_matrix import SearchTierParams

cli = typer.Typer(
    help="LiveLens: real-time recommendations for short-video and live-stream feeds. "
    "Configure with LIVELENS_* env vars (see README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
ab = typer.Typer(help="A/B arms: compare the online metric of the model configurations a worker serves.")
cli.add_typer(ab, name="ab")


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
    from streams.app import build_app, start_loading
    from streams.faust_internals import faust_worker
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
    start_loading(app)  # models and the trainer's snapshot load while the consumer group forms
    faust_worker(app, s.log_level).execute_from_commandline()


@cli.command()
def trainer(
    log_level: Annotated[str | None, typer.Option(help="crit|error|warn|info|debug")] = None,
) -> None:
    """Run the trainer: learn the shared models from livelens.training, publish them to livelens.models."""
    import logging

    from streams.topics import ensure_topics
    from streams.trainer import run_trainer

    s = _settings()
    if not s.kafka_broker:
        console.print("[red]LIVELENS_KAFKA_BROKER is not set.[/] Start one with `livelens broker`.")
        raise typer.Exit(2)
    levels = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG"}
    logging.basicConfig(level=levels[log_level or s.log_level], format="%(asctime)s %(levelname)s %(name)s %(message)s")
    ensure_topics(s)
    status = run_trainer(s)
    console.print(f"trainer stopped at version {status['version']} ({status['snapshots']} snapshots)")


def _wait_in_foreground(is_running: Callable[[], bool]) -> bool:
    """Block until Ctrl-C or SIGTERM (True) or until the child process ends by itself (False)."""
    stopped = False

    def _stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopped and is_running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopped = True
    return stopped


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
        _wait_in_foreground(b.is_running)


@cli.command()
def milvus(
    port: Annotated[int | None, typer.Option(help="gRPC port; default LIVELENS_MILVUS_SERVER_PORT (19530)")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="binaries, data and logs; default LIVELENS_MILVUS_SERVER_DIR (DATA_DIR/milvus-server)"),
    ] = None,
) -> None:
    """Run a real Milvus server (standalone, from the `milvus` package) in the foreground until Ctrl-C."""
    from streams.milvus_server import MilvusServer

    s = _settings()
    server = MilvusServer(data_dir or s.resolved_milvus_server_dir(), port or s.milvus_server_port)
    console.print(f"starting Milvus in {server.base_dir} (~10-30 s; the first start unpacks ~250 MB)…")
    try:
        server.start()
    except RuntimeError as exc:
        console.print(f"[red]Milvus did not start:[/] {exc}")
        raise typer.Exit(1) from exc
    try:
        console.print(f"Milvus listening on [bold]{server.uri}[/] (logs {server.log_dir}); Ctrl-C stops it")
        console.print(f"  export LIVELENS_MILVUS_URI={server.uri}")
        stopped = _wait_in_foreground(server.is_running)
    finally:
        code = server.stop()
    if not stopped:  # the server ended by itself
        console.print(f"[red]Milvus exited ({code})[/]; see {server.log_dir}")
        raise typer.Exit(1)


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
    feed: Annotated[str, typer.Option(help="short_video | live | music | creators | dead-letter")] = "short_video",
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
    music: Annotated[bool, typer.Option(help="then index generated music tracks and print a playlist")] = True,
) -> None:
    """Start everything locally, replay MicroLens-50K, print recommendations and latency, a playlist, stop."""
    from ranking.datasets import DatasetNotFound
    from streams.demo import run_demo

    s = _settings()
    try:
        run_demo(s, users=limit, show=show, work_dir=work_dir, console=console, rate=rate, music=music)
    except DatasetNotFound as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@cli.command()
def search(
    query: Annotated[str, typer.Argument(help="words to look for in titles, captions and media")],
    feed: Annotated[
        str,
        typer.Option(help="short_video | live | music (words like slow, 120 bpm) | creators (by their vectors)"),
    ] = "short_video",
    limit: Annotated[int, typer.Option(help="results, 1-100")] = 10,
    worker_url: Annotated[str | None, typer.Option(help="default: http://WEB_HOST:WEB_PORT")] = None,
) -> None:
    """Search the index for a text query through a running worker (same index as recommendations)."""
    import urllib.parse

    s = _settings()
    base = worker_url or f"http://{s.web_host}:{s.web_port}"
    url = f"{base}/search?" + urllib.parse.urlencode({"q": query, "feed": feed, "limit": limit})
    data = json.loads(_ask_worker(url, base, "search"))
    for n, hit in enumerate(data["results"], 1):
        matched = hit.get("matched", "text")
        line = f"{n:>2}. [bold]{hit['score']:.3f}[/] {hit['item_id']}  {hit['title']}"
        console.print(f"{line}  [dim](matched: {matched})[/]")


def _ask_worker(url: str, base: str, what: str) -> bytes:
    """GET ``url`` from a running worker; a refusal or no worker at ``base`` exits 2 with the reason."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        console.print(f"[red]{what} failed ({exc.code}):[/] {exc.read().decode(errors='replace')}")
        raise typer.Exit(2) from exc
    except urllib.error.URLError as exc:
        console.print(f"[red]no worker at {base}[/] ({exc.reason}); start `livelens worker` or pass --worker-url")
        raise typer.Exit(2) from exc


@cli.command()
def playlist(
    user: Annotated[str, typer.Argument(help="the listener's user id")],
    length: Annotated[int, typer.Option(help="tracks, 1-200")] = 20,
    seed_item: Annotated[str | None, typer.Option(help="a music track to start from")] = None,
    worker_url: Annotated[str | None, typer.Option(help="default: http://WEB_HOST:WEB_PORT")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the worker's JSON answer")] = False,
) -> None:
    """An ordered playlist for USER from a running worker: relevant, smooth in tempo, artists spaced apart."""
    import urllib.parse

    s = _settings()
    base = worker_url or f"http://{s.web_host}:{s.web_port}"
    params = {"length": length, **({"seed_item": seed_item} if seed_item else {})}
    url = f"{base}/playlist/{urllib.parse.quote(user, safe='')}?" + urllib.parse.urlencode(params)
    raw = _ask_worker(url, base, "playlist")
    if as_json:
        sys.stdout.write(raw.decode() + "\n")
        return
    data = json.loads(raw)
    for n, item in enumerate(data["items"], 1):
        tempo = f"{item['tempo_bpm']:.0f} bpm" if item["tempo_bpm"] else "live" if item["is_live"] else "? bpm"
        console.print(
            f"{n:>3}. {item['item_id']}  {item['title']} — {item['creator_id']} [dim]({tempo}; {item['reason']})[/]"
        )
    share = data["smooth_share"]
    smooth = "n/a" if share is None else f"{share:.0%}"
    console.print(
        f"smooth transitions (tempo within {data['max_tempo_step']:.0%}): {data['smooth_transitions']}/"
        f"{data['judged_transitions']} = {smooth}; no artist twice within {data['artist_spacing']} tracks"
    )
    if data.get("note"):
        console.print(f"[yellow]{data['note']}[/]")


@cli.command(name="eval")
def evaluate(
    dataset: Annotated[str | None, typer.Option(help="microlens-50k | movielens-latest-small")] = None,
    interactions: Annotated[
        Path | None, typer.Option(help="CSV user_id,item_id[,timestamp][,event_type][,value]")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="CSV item_id,title[,description][,tags][,kind]")] = None,
    output: Annotated[Path, typer.Option(help="directory for results.json and metrics.png")] = Path("eval-results"),
    users: Annotated[int | None, typer.Option(help="evaluate only the first N users")] = None,
    variant: Annotated[str, typer.Option(help="strict (headline) | streaming")] = "strict",
    target: Annotated[str, typer.Option(help="test (report) | valid (tune)")] = "test",
    through_kafka: Annotated[
        bool, typer.Option(help="replay the users through the broker and a real worker; compare with in-process")
    ] = False,
    all_items: Annotated[
        bool, typer.Option(help="--through-kafka: index the whole catalogue, not just the users' items")
    ] = False,
    ranking_workers: Annotated[
        int, typer.Option(min=1, help="--through-kafka: ranking workers beside the trainer (= partitions)")
    ] = 1,
    pace: Annotated[
        int | None,
        typer.Option(min=1, help="--through-kafka: stream events per step (default: the micro-batch size)"),
    ] = None,
    compare_rankers: Annotated[
        bool,
        typer.Option(
            help="also teach the alternative rankers of ranking.evaluation.RANKER_ALTERNATIVES the same steps and "
            "report each as ranker:NAME (paired with livelens:no_mmr; for choosing on --target valid)"
        ),
    ] = False,
    search_tier: Annotated[
        Literal["worker", "exact", "ann"],
        typer.Option(
            help="worker: search as a worker's tier does (LIVELENS_LOCAL_SEARCH_*: IVF from "
            "LOCAL_SEARCH_EXACT_BELOW items, exact below); exact: exact at any size; ann: the IVF at any size"
        ),
    ] = "worker",
    feed: Annotated[
        Literal["items", "creators"],
        typer.Option(
            help="creators: the creators feed on pseudo-creators and derived follows, leave-one-out on follows, "
            "beside popularity, co-follow and the most-engaged creator (docs/creators.md); --users N evaluates "
            "the first N users with a follow"
        ),
    ] = "items",
) -> None:
    """Offline evaluation (MicroLens paper protocol): LiveLens vs popularity and co-occurrence."""

    from rich.table import Table

    from ranking.datasets import DatasetNotFound, load_csv_dataset, load_dataset
    from ranking.evaluation import KS, Protocol, eval_ranking, run_evaluation, write_outputs
    from streams.demo import progress_bar
    from streams.params import (
        online_models_from_settings,
        ranking_params_from_settings,
        search_tier_params_from_settings,
        user_model_params_from_settings,
    )

    s = _settings()
    if variant not in ("strict", "streaming") or target not in ("test", "valid"):
        console.print("[red]--variant is strict|streaming and --target is test|valid[/]")
        raise typer.Exit(2)
    try:
        if dataset:
            data = load_dataset(dataset, s.datasets_dir)
        elif interactions and items:
            data = load_csv_dataset(interactions, items)
        else:
            console.print("[red]give --dataset NAME, or --interactions FILE and --items FILE[/]")
            raise typer.Exit(2)
    except (DatasetNotFound, FileNotFoundError, KeyError, ValueError) as exc:
        console.print(f"[red]cannot load the dataset: {exc}[/]")
        raise typer.Exit(2) from exc
    if feed == "creators":
        _eval_creators(s, data, users, output)
        return
    data = data.head(users)
    if through_kafka:
        _eval_through_kafka(s, data, Protocol(variant=variant, target=target), output, all_items, ranking_workers, pace)
        return
    encoder = _cached_encoder(s, data.name)
    with progress_bar(console) as bar:
        tasks: dict[str, int] = {}

        def tick(name: str, n: int, total: int) -> None:
            if name not in tasks:
                label = "learn the training stream" if name == "train" else "rank every user"
                tasks[name] = bar.add_task(label, total=total)
            bar.advance(tasks[name], n)

        result = run_evaluation(
            data,
            encoder,
            user_model_params_from_settings(s),
            Protocol(variant=variant, target=target),
            s.text_encoder,
            tick,
            models=online_models_from_settings(s, ranking=eval_ranking(ranking_params_from_settings(s), max(KS))),
            stream_batch=s.interaction_batch_size,
            compare_rankers=compare_rankers,
            search=_eval_search(search_tier_params_from_settings(s), search_tier),
        )
    results_path, plot_path = write_outputs(result, output)
    table = Table(title=f"{data.name}: {result.dataset['users']} users, {result.dataset['items']} items ({variant})")
    table.add_column("method")
    metrics = list(next(iter(result.methods.values())))
    for m in metrics:
        table.add_column(m, justify="right")
    for name, values in result.methods.items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in metrics))
    for name in result.not_exercised:
        table.add_row(name, *("n/a" for _ in metrics))
    console.print(table)
    for name, why in result.not_exercised.items():
        console.print(f"[dim]{name}: n/a, {why}[/]")
    c = result.candidates
    console.print(
        f"candidate recall: {c['target_in_candidates']:.1%} of targets among {c['mean_candidates']:.0f} candidates "
        f"per user; by source: "
        + ", ".join(
            f"{k} {v['target_in_candidates']:.1%} ({v['mean_candidates']:.0f})" for k, v in c["by_source"].items()
        )
    )
    console.print(f"wrote {results_path} and {plot_path}")


def _eval_search(params: SearchTierParams, tier: str) -> SearchTierParams | None:
    """``--search-tier``: the worker's tier as configured, exact search, or the IVF at any size."""
    if tier == "exact":
        return None
    return replace(params, exact_below=0) if tier == "ann" else params


def _eval_through_kafka(
    s: Settings, data: Any, protocol: Any, output: Path, all_items: bool, ranking_workers: int, pace: int | None
) -> None:
    """Both figures for the same users: through the broker, the trainer and the ranking workers, and
    in-process on the same vectors; with their agreement (same-rank share, difference vs one SE)."""
    from rich.table import Table

    from streams.kafka_eval import UnsupportedProtocol, evaluate_through_kafka

    with tempfile.TemporaryDirectory(prefix="livelens-eval-kafka-") as tmp:
        try:
            started = time.perf_counter()
            result = evaluate_through_kafka(
                s,
                data,
                protocol,
                Path(tmp),
                whole_catalogue=all_items,
                say=lambda m: console.print(m),
                ranking_workers=ranking_workers,
                pace=pace or s.interaction_batch_size,
            )
            result.seconds["total"] = round(time.perf_counter() - started, 1)
        except UnsupportedProtocol as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
    title = f"{data.name} through Kafka, trainer + {result.ranking_workers} ranking worker(s)"
    table = Table(title=f"{title}: {result.users} users, {result.items} items ({protocol.variant}, {protocol.target})")
    table.add_column("mode")
    metrics = list(result.in_process)
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_row("in-process", *(f"{result.in_process[m]:.4f}" for m in metrics))
    table.add_row("through Kafka", *(f"{result.through_kafka[m]:.4f}" for m in metrics))
    agreement = result.agreement()
    table.add_row("difference", *(f"{agreement[m]['difference']:+.4f}" for m in metrics))
    table.add_row("one standard error", *(f"{agreement[m]['standard_error']:.4f}" for m in metrics))
    table.add_row("within one SE", *("yes" if agreement[m]["within_one_se"] else "NO" for m in metrics))
    console.print(table)
    console.print(
        f"users with the same target rank in both modes: {result.same_rank_users}/{result.users} "
        f"({agreement['same_rank_share']:.1%}); trainer v{result.trainer_version}, {result.pace} events per step; "
        f"{result.seconds}"
    )
    first = sum(a == b for a, b in zip(result.ranks_in_process, result.ranks_kafka_first, strict=True))
    console.print(f"(lists emitted before later users were learned agree for {first}/{result.users})")
    output.mkdir(parents=True, exist_ok=True)
    path = output / "results-through-kafka.json"
    path.write_text(json.dumps({"agreement": agreement, **asdict(result)}, indent=2) + "\n")
    console.print(f"wrote {path}")


def _eval_creators(s: Settings, data: Any, users: int | None, output: Path) -> None:
    """``livelens eval --feed creators``: the creators feed's replay (``ranking.creator_eval``)."""
    import json

    from rich.table import Table

    from ranking.creator_eval import CreatorProtocol, evaluate_creators
    from streams.demo import progress_bar
    from streams.params import user_model_params_from_settings

    encode = _cached_encoder(s, data.name)
    vectors = encode([data.items[i].title for i in sorted(data.items)])  # the item evaluation's order (cache)
    results = {}
    for cutoff in ("trigger", "discovery"):
        with progress_bar(console) as bar:
            task = bar.add_task(f"rank every user's creators ({cutoff})", total=None)

            def tick(n: int, total: int, task: Any = task, bar: Any = bar) -> None:
                bar.update(task, total=total, advance=n)

            results[cutoff] = evaluate_creators(
                data,
                vectors,
                user_model_params_from_settings(s),
                users=users,
                protocol=CreatorProtocol(cutoff=cutoff),
                tick=tick,
            )
    output.mkdir(parents=True, exist_ok=True)
    path = output / "creators.json"
    path.write_text(json.dumps({c: r.to_json() for c, r in results.items()}, indent=2) + "\n")
    for cutoff, result in results.items():
        d = result.dataset
        table = Table(
            title=f"{d['name']} creators feed, cutoff {cutoff}: {d['users_evaluated']} of {d['users_with_a_follow']} "
            f"users with a follow, {d['pseudo_creators']} pseudo-creators"
        )
        metrics = list(next(iter(result.methods.values())))
        table.add_column("method")
        for m in metrics:
            table.add_column(m, justify="right")
        for name, values in result.methods.items():
            table.add_row(name, *(f"{values[m]:.4f}" for m in metrics))
        console.print(table)
    console.print(f"written: {path}")


def _cached_encoder(s: Settings, dataset_name: str) -> Any:
    """Encode titles once per dataset and encoder; later runs read the vectors from data_dir/cache."""
    import hashlib

    import numpy as np

    from encoders.text import build_text_encoder
    from streams.params import encoder_params_from_settings

    cache_dir = s.data_dir / "cache"

    def encode(texts: list[str]) -> Any:
        digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:12]
        path = cache_dir / f"{dataset_name}-{s.text_encoder}-{len(texts)}-{digest}.npy"
        if path.is_file():
            return np.load(path)
        with console.status(f"encoding {len(texts)} item titles with {s.text_encoder} (cached afterwards)…"):
            vectors = build_text_encoder(encoder_params_from_settings(s)).encode(texts)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
        return vectors

    return encode


@cli.command()
def bench(
    name: Annotated[str, typer.Argument(help='benchmark name (see README "Benchmarks")')],
    duration: Annotated[float | None, typer.Option(help="seconds of sustained load")] = None,
    rate: Annotated[float | None, typer.Option(help="events per second offered")] = None,
    items: Annotated[int | None, typer.Option(help="items in the index")] = None,
    batch_size: Annotated[list[int] | None, typer.Option(help="batch size (repeatable)")] = None,
    backlog: Annotated[
        int | None, typer.Option(min=100, help="throughput/scaling: events published before the worker drains them")
    ] = None,
    only: Annotated[
        Literal["rates", "items", "tier", "milvus"] | None,
        typer.Option(help="scaling: rates|items, retrieval: tier|milvus; measure only this part"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="model-freshness (default 2), throughput (default 1): ranking workers beside the trainer"
        ),
    ] = None,
    milvus_uri: Annotated[
        str | None,
        typer.Option(help="retrieval: measure this Milvus server (start one with `livelens milvus`), not Milvus Lite"),
    ] = None,
    quick: Annotated[bool, typer.Option(help="short smoke run; figures are not the README's")] = False,
    output_dir: Annotated[Path | None, typer.Option(help="default: bench/results")] = None,
) -> None:
    """Run a benchmark beside its reference; print the figures and write bench/results/NAME.json."""
    from bench import BENCHES, RESULTS_DIR, BenchOptions, UnknownBench, run_bench

    options = BenchOptions(
        duration=duration,
        rate=rate,
        items=items,
        batch_sizes=list(batch_size or []),
        quick=quick,
        output_dir=output_dir or RESULTS_DIR,
        extra={
            k: v
            for k, v in (("backlog", backlog), ("only", only), ("workers", workers), ("milvus_uri", milvus_uri))
            if v
        },
    )
    try:
        run_bench(name, options, console)
    except UnknownBench as exc:
        console.print(f"[red]unknown benchmark {name!r}[/]; choose one of: {', '.join(sorted(BENCHES))}")
        raise typer.Exit(2) from exc


@ab.command("report")
def ab_report(
    url: Annotated[
        str | None, typer.Option(help="a worker's metrics page; default: http://WEB_HOST:WEB_PORT/metrics")
    ] = None,
    feed: Annotated[str | None, typer.Option(help="only this feed (short_video | live); default: both")] = None,
) -> None:
    """Per arm: scored interactions, online HR@K and NDCG@K with 95% intervals, and b - a."""
    from rich.table import Table

    from streams.ab_report import WorkerUnreachable, differences, fetch_metrics, fmt, parse_arms

    s = _settings()
    url = url or f"http://{s.web_host}:{s.web_port}/metrics"
    if feed is not None and feed not in ("short_video", "live", "creators"):
        console.print(f"[red]unknown feed {feed!r}[/]; choose short_video, live or creators")
        raise typer.Exit(2)
    try:
        arms = parse_arms(fetch_metrics(url), feed)
    except WorkerUnreachable as exc:
        console.print(f"[red]{exc}[/]; start `livelens worker` or pass --url")
        raise typer.Exit(2) from exc
    if not arms:
        console.print(f"[red]{url} has no online metric[/] (a worker of this version, after its models loaded?)")
        raise typer.Exit(2)
    table = Table(title=f"online metric per arm ({feed or 'all feeds'}), 95% intervals; K = each list's length")
    for column in ("arm", "config", "events learned", "interactions", "HR@K", "NDCG@K (mean)", "unscored"):
        table.add_column(column, justify="left" if column in ("arm", "config") else "right")
    for arm in arms.values():
        learned = "?" if arm.events_learned is None else str(arm.events_learned)
        table.add_row(
            arm.arm,
            arm.config,
            learned,
            str(arm.tally.interactions),
            fmt(arm.hit_rate),
            fmt(arm.ndcg),
            str(arm.unscored),
        )
    if "a" in arms and "b" in arms:
        hr, ndcg = differences(arms["a"], arms["b"])
        table.add_row("b - a", "", "", "", fmt(hr, signed=True), fmt(ndcg, signed=True), "")
    console.print(table)
    if len(arms) == 1:
        console.print("[dim]one arm: A/B is off (set LIVELENS_AB_VARIANT to serve a second configuration)[/]")


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
