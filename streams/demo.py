"""`livelens demo`: the whole product on one machine, on real MicroLens users, in a few minutes."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ranking.datasets import Dataset, load_dataset
from streams.consumer import TopicReader, as_recommendation
from streams.local import LocalStack
from streams.music_clips import make_clip, write_wav
from streams.replay import publish_content, publish_interactions, publish_many, publish_raw
from streams.schemas import ContentEvent, InteractionEvent, Recommendation
from streams.settings import Settings

# the demo's streamers: live streams and videos with creator ids (MicroLens has none); item -> (creator, kind, title)
DEMO_STREAMS = {
    "demo_st_game1": ("gamer_ana", "live_stream", "Live video game speedrun: racing through the boss levels"),
    "demo_st_game2": ("gamer_bo", "live_stream", "Live video game tournament: players battle in the arena"),
    "demo_v_game3": ("gamer_cy", "short_video", "Video game speedrun world record in ten minutes"),
    "demo_st_cook": ("chef_dee", "live_stream", "Live cooking show: frying dumplings and noodles with the chef"),
    "demo_st_ball": ("coach_eli", "live_stream", "Live football match commentary and goals"),
}

# the demo's music: generated tracks (MicroLens has none), one per tempo, timbres and artists in turn
DEMO_TEMPI = (72, 78, 84, 90, 97, 104, 112, 120, 128, 137, 146, 156)
DEMO_TIMBRES = ("pluck", "synth", "vocal", "drums")


@dataclass
class Collected:
    """Recommendations read back from the feed topics, with end-to-end latencies."""

    latest: dict[tuple[str, str], Recommendation] = field(default_factory=dict)
    triggers_seen: set[str] = field(default_factory=set)
    latencies_s: list[float] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None


def collect(reader: TopicReader, out: Collected, stop: threading.Event) -> None:
    while not stop.is_set():
        got = reader.poll(0.1)
        if got is None:
            continue
        rec = as_recommendation(got)
        out.latest[(rec.user_id, rec.feed.value)] = rec
        if rec.trigger_event_id:
            out.triggers_seen.add(rec.trigger_event_id)
        if rec.trigger_ts is not None:
            out.latencies_s.append(got.received_at - rec.trigger_ts)
        out.first_at = out.first_at or got.received_at
        out.last_at = got.received_at


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def run_demo(
    settings: Settings,
    users: int,
    show: int,
    work_dir: Path | None,
    console: Console,
    rate: float | None = None,
    music: bool = True,
) -> dict[str, float]:
    started = time.perf_counter()
    dataset: Dataset = load_dataset("microlens-50k", settings.datasets_dir).head(users)
    items = dataset.touched_items()
    console.print(
        f"[bold]LiveLens demo[/]: MicroLens-50K, {len(dataset.sequences)} users, "
        f"{dataset.n_interactions} interactions, {len(items)} videos"
    )
    tmp = tempfile.TemporaryDirectory(prefix="livelens-demo-") if work_dir is None else None
    root = Path(tmp.name) if tmp else work_dir
    assert root is not None
    if music:  # the generated tracks are written here, so the worker must accept media from it
        settings = settings.model_copy(update={"media_roots": [*settings.media_roots, root / "music"]})
    try:
        with console.status("starting broker, Milvus Lite and a worker (loads MiniLM)…"):
            stack = LocalStack(settings, root).__enter__()
        try:
            figures = _run(stack, dataset, items, show, console, started, rate)
            figures.update(_streamers(stack, console))
            if music:
                figures.update(_music(stack, root / "music", console))
                console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
            return figures
        finally:
            with console.status("stopping…"):
                stack.__exit__(None, None, None)
    finally:
        if tmp:
            tmp.cleanup()


def _run(
    stack: LocalStack, dataset: Dataset, items: dict, show: int, console: Console, started: float, rate: float | None
) -> dict:
    s = stack.settings
    worker = stack.worker
    assert worker is not None
    console.print(f"broker {s.kafka_broker} · Milvus {s.milvus_uri} · worker {worker.url} · logs in {stack.work_dir}")
    with progress_bar(console) as bar:
        task = bar.add_task("publish videos", total=len(items))
        publish_content(s, dataset, items, progress=lambda n: bar.advance(task, n))
        task = bar.add_task("encode + index", total=len(items))
        deadline = time.monotonic() + 240
        while (done := worker.get("/stats").get("livelens_items_indexed", 0)) < len(items):
            bar.update(task, completed=done)
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker indexed only {done}/{len(items)} items; see {worker.log_path}")
            time.sleep(0.2)
        bar.update(task, completed=len(items))

    reader = TopicReader(s, list(s.feed_topics().values()), from_beginning=True)
    reader.wait_assigned()  # join the group first, so latencies measure the pipeline, not our join
    collected, stop = Collected(), threading.Event()
    thread = threading.Thread(target=collect, args=(reader, collected, stop), daemon=True)
    thread.start()
    with progress_bar(console) as bar:
        task = bar.add_task("publish interactions", total=dataset.n_interactions)
        t0 = time.time()
        stats = publish_interactions(s, dataset, rate=rate, progress=lambda n: bar.advance(task, n))
        wanted = set((stats.last_event_of_user or {}).values())
        task = bar.add_task("recommendations for each user's last event", total=len(wanted))
        deadline = time.monotonic() + 180
        while not wanted <= collected.triggers_seen and time.monotonic() < deadline:
            bar.update(task, completed=len(wanted & collected.triggers_seen))
            time.sleep(0.2)
        bar.update(task, completed=len(wanted & collected.triggers_seen))
    stop.set()
    thread.join(5)
    reader.close()

    missing = len(wanted - collected.triggers_seen)
    _print_users(console, dataset, collected, show)
    elapsed = (collected.last_at or time.time()) - t0
    lat = np.asarray(collected.latencies_s or [float("nan")]) * 1000
    figures = {
        "interactions": float(stats.interactions),
        "throughput_events_per_s": stats.interactions / elapsed if elapsed > 0 else float("nan"),
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "recommendation_lists": float(len(collected.latencies_s)),
        "users_missing_final_recommendation": float(missing),
        "total_seconds": time.perf_counter() - started,
    }
    load = f"paced at {rate:.0f} ev/s" if rate else "published as one burst, so queueing is included"
    console.print(
        f"\n[bold]{stats.interactions}[/] interactions ({load}) processed in {elapsed:.1f} s = "
        f"[bold]{figures['throughput_events_per_s']:.0f} ev/s[/] end to end · "
        f"event→recommendation latency p50 [bold]{figures['latency_p50_ms']:.0f} ms[/], "
        f"p99 [bold]{figures['latency_p99_ms']:.0f} ms[/] over {len(collected.latencies_s)} lists"
    )
    if missing:
        console.print(f"[red]{missing} users got no recommendation for their last event[/]")
    console.print(f"recommendations part finished in {figures['total_seconds']:.0f} s")
    return figures


def _streamers(stack: LocalStack, console: Console) -> dict[str, float]:
    """Streamers to follow: a fan gifts one gaming streamer and gets similar streamers, with reasons."""
    s, worker = stack.settings, stack.worker
    assert worker is not None
    events = [
        (item, ContentEvent(item_id=item, kind=kind, title=title, creator_id=creator).model_dump_json())  # type: ignore[arg-type]
        for item, (creator, kind, title) in DEMO_STREAMS.items()
    ]
    before = worker.get("/stats").get("livelens_items_indexed", 0)
    with console.status(f"streamers: {len(events)} streams and videos with creator ids…"):
        publish_many(s, s.topic_content, events)
        worker.wait_for("livelens_items_indexed", before + len(events), timeout=120)
    gift = InteractionEvent(event_id="demo-gift-0", user_id="demo-fan", item_id="demo_st_game1", type="gift", value=10)
    publish_raw(s, s.topic_interactions, gift.user_id, gift.model_dump_json())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if worker.get("/state/demo-fan").get("n_events", 0) >= 1:
                break
        except OSError:
            pass  # 404 until the gift is applied
        time.sleep(0.3)
    rec = worker.get("/recommendations/demo-fan?feed=creators", timeout=30)
    table = Table(title="streamers to follow for demo-fan (gifted gamer_ana's speedrun stream)", show_lines=False)
    for col in ("#", "creator", "score", "why"):
        table.add_column(col)
    for n, item in enumerate(rec["items"][:5], 1):
        table.add_row(str(n), item["item_id"], f"{item['score']:.2f}", item["reason"])
    console.print(table)
    return {"creators_listed": float(len(rec["items"]))}


def _music(stack: LocalStack, media: Path, console: Console) -> dict[str, float]:
    """Generated tracks (no style tags) indexed and analysed by the worker; a music search; a listener's playlist."""
    s, worker = stack.settings, stack.worker
    assert worker is not None
    events = []
    for n, bpm in enumerate(DEMO_TEMPI):
        timbre = DEMO_TIMBRES[n % len(DEMO_TIMBRES)]
        path = write_wav(make_clip(float(bpm), timbre, seconds=8.0, seed=n), media / f"track{n:02d}.wav")
        ev = ContentEvent(
            item_id=f"track{n:02d}",
            kind="music",
            title=f"Demo track {n}",  # no style words: what the track is like comes from its audio
            creator_id=f"artist{n % 5}",
            audio_path=str(path),
            lyrics="la la la" if timbre == "vocal" else "",
        )
        events.append((ev.item_id, ev.model_dump_json()))
    before = worker.get("/stats").get("livelens_items_indexed", 0)
    with console.status(f"music: {len(events)} generated tracks analysed by the worker (librosa; the first warms up)…"):
        publish_many(s, s.topic_content, events)
        worker.wait_for("livelens_items_indexed", before + len(events), timeout=300)
    found = worker.get("/search?q=fast&feed=music&limit=5")["results"]
    console.print(
        '\n[bold]music search "fast"[/] (no tags: the tempo is measured): '
        + ", ".join(f"{r['item_id']} [dim]({r['matched']})[/]" for r in found)
    )
    for n, item in enumerate(["track01", "track05"]):  # two synth tracks
        like = InteractionEvent(event_id=f"demo-music-{n}", user_id="demo-listener", item_id=item, type="like")
        publish_raw(s, s.topic_interactions, like.user_id, like.model_dump_json())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if worker.get("/state/demo-listener").get("n_events", 0) >= 2:
                break
        except OSError:
            pass  # 404 until the first like is applied
        time.sleep(0.3)
    playlist = worker.get("/playlist/demo-listener?length=8", timeout=60)
    table = Table(title="playlist for demo-listener (liked track01 and track05)", show_lines=False)
    for col in ("#", "track", "generated as", "artist", "bpm (measured)", "why"):
        table.add_column(col)
    made_as = {f"track{n:02d}": f"{DEMO_TIMBRES[n % len(DEMO_TIMBRES)]}, {bpm} bpm" for n, bpm in enumerate(DEMO_TEMPI)}
    for n, item in enumerate(playlist["items"], 1):
        bpm = f"{item['tempo_bpm']:.1f}" if item["tempo_bpm"] else "–"
        table.add_row(str(n), item["title"], made_as.get(item["item_id"], "–"), item["creator_id"], bpm, item["reason"])
    console.print(table)
    share = playlist["smooth_share"]
    console.print(
        f"smooth transitions (tempo within {playlist['max_tempo_step']:.0%}): {playlist['smooth_transitions']}/"
        f"{playlist['judged_transitions']}; no artist twice within {playlist['artist_spacing']} tracks"
    )
    return {"playlist_length": float(len(playlist["items"])), "playlist_smooth_share": float(share or 0.0)}


def _print_users(console: Console, dataset: Dataset, collected: Collected, show: int) -> None:
    for user in list(dataset.sequences)[:show]:
        rec = collected.latest.get((user, "short_video"))
        table = Table(title=f"user {user}", show_lines=False, title_justify="left", expand=True)
        table.add_column("last watched", ratio=1)
        table.add_column("recommended (score, reason)", ratio=2)
        watched = [dataset.items[i.item_id].title for i in dataset.sequences[user][-3:]]
        recs = (rec.items if rec else [])[:5]
        for row in range(max(len(watched), len(recs))):
            left = _clip(watched[-1 - row]) if row < len(watched) else ""
            right = ""
            if row < len(recs):
                r = recs[row]
                right = f"{_clip(dataset.items[r.item_id].title)}  [dim]({r.score:.2f}, {r.reason})[/]"
            table.add_row(left, right)
        console.print(table)


def _clip(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
