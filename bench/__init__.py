"""Benchmarks: ``livelens bench NAME`` runs ``bench/NAME.py`` and writes ``bench/results/NAME.json``.

Each benchmark module exposes ``run(options, console) -> dict``: it measures LiveLens *and* the
reference the performance issue names in the same run (so figures come as ratios on a noisy box),
prints its figures, and returns them. This package adds the machine description and writes the file.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> module under bench/ (each documented in README "Benchmarks")
BENCHES: dict[str, str] = {
    "encoders": "bench.encoders",
    "retrieval": "bench.retrieval",
    "load": "bench.load",
    "freshness": "bench.freshness",
    "throughput": "bench.throughput",
    "scaling": "bench.scaling",
    "model-freshness": "bench.model_freshness",
}


@dataclass
class BenchOptions:
    """The knobs every benchmark understands (each uses those that apply; defaults are the full run)."""

    duration: float | None = None  # seconds of sustained load
    rate: float | None = None  # events per second offered
    items: int | None = None  # items in the index
    batch_sizes: list[int] = field(default_factory=list)
    quick: bool = False  # a short smoke run (CI, first try); figures then are not the README's
    output_dir: Path = RESULTS_DIR
    extra: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


class UnknownBench(KeyError):
    pass


def run_bench(name: str, options: BenchOptions, console: Console) -> tuple[dict[str, Any], Path]:
    """Run one benchmark, add the machine and the options, write ``<output_dir>/<name>.json``."""
    if name not in BENCHES:
        raise UnknownBench(name)
    module = importlib.import_module(BENCHES[name])
    host = machine()
    console.print(
        f"[bold]bench {name}[/] on {host['cpu']} ({host['cores']} cores, {host['memory_gib']} GiB)"
        f", GPU: {host.get('cuda') or 'none'}"
    )
    started = time.time()
    figures = module.run(options, console)
    options_json = {k: _shown(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
    result = {
        "bench": name,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "machine": host,
        "options": options_json,
        **figures,
    }
    options.output_dir.mkdir(parents=True, exist_ok=True)
    path = options.output_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    console.print(f"wrote {path}")
    return result, path


def _shown(path: Path) -> str:
    """A path as recorded in a results file: relative to the repository when inside it (no home dirs)."""
    try:
        return str(path.resolve().relative_to(RESULTS_DIR.parent.parent))
    except ValueError:
        return str(path)


def percentiles(values: list[float], points: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """p50/p90/p99 (nearest-rank) of a list of values; empty input gives an empty dict."""
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for p in points:
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        out[f"p{p:g}"] = ordered[rank]
    return out
