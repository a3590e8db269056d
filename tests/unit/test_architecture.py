"""The layout rules: ``encoders/`` and ``ranking/`` are the pure core; they never import the shell or its drivers.
And Faust's private API is touched in one module only, ``streams/faust_internals.py``.

The shell (``streams``: Faust app, wire schemas, settings, CLI; ``storage``: Milvus) imports the core, never
the other way round. Every import counts, at module level or inside a function, under ``TYPE_CHECKING`` or
not, and so does ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ("encoders", "ranking")
FORBIDDEN = frozenset(
    {"streams", "storage", "faust", "pymilvus", "aiokafka", "confluent_kafka", "pydantic", "pydantic_settings"}
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``source``; relative imports resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # ``from . import streams`` names a module too
                yield node.lineno, f"{target}.{alias.name}" if target else alias.name
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            yield node.lineno, node.args[0].value


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: imports name`` for each line of ``path`` that imports a forbidden package."""
    module = module_name(path, root)
    by_line: dict[int, str] = {}
    for line, name in imports(path.read_text(), module, is_package=path.name == "__init__.py"):
        if name.split(".")[0] in FORBIDDEN:
            by_line.setdefault(line, name)
    return [f"{path.relative_to(root)}:{line}: imports {name}" for line, name in sorted(by_line.items())]


def core_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for package in CORE for p in (root / package).rglob("*.py"))


def test_the_core_imports_neither_the_shell_nor_its_drivers() -> None:
    files = core_files()
    assert len(files) >= 20, f"found only {len(files)} core files under {ROOT}: is the layout still {CORE}?"
    found = [v for path in files for v in violations(path)]
    assert not found, (
        f"encoders/ and ranking/ must not import {sorted(FORBIDDEN)}; take plain types or parameters from the "
        "shell instead (ranking.domain, ranking.index, streams.params):\n  " + "\n  ".join(found)
    )


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    """The rule above is only as good as this walker: each form below must be reported, with its line."""
    pkg = tmp_path / "ranking"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import storage\n")  # ranking.storage: not the shell's package
    bad = pkg / "bad.py"
    bad.write_text(
        "from __future__ import annotations\n"  # 1
        "import numpy as np\n"  # 2: fine
        "import pymilvus.exceptions\n"  # 3
        "from streams.schemas import Feed\n"  # 4
        "from typing import TYPE_CHECKING\n"  # 5
        "if TYPE_CHECKING:\n"  # 6
        "    from pydantic_settings import BaseSettings\n"  # 7
        "def f():\n"  # 8
        "    import faust, json\n"  # 9
        "    from ..storage.milvus import MilvusIndex\n"  # 10
        "    import importlib\n"  # 11
        "    return importlib.import_module('confluent_kafka')\n"  # 12
        "class C:\n"  # 13
        "    def g(self):\n"  # 14
        "        from aiokafka import AIOKafkaProducer\n"  # 15
        "        import pydantic as pd\n"  # 16
        "from ranking.domain import Feed as F\n"  # 17: fine
    )
    lines = [int(v.split(":")[1]) for v in violations(bad, tmp_path)]
    assert lines == [3, 4, 7, 9, 10, 12, 15, 16]
    assert violations(bad, tmp_path)[0] == "ranking/bad.py:3: imports pymilvus.exceptions"
    # relative imports resolve against the package: ``ranking.storage`` would be the core's own module
    assert violations(pkg / "__init__.py", tmp_path) == []


# --- Faust's private API: one module ---------------------------------------------------------------------

FAUST_INTERNALS = Path("streams/faust_internals.py")
# Faust's driver module that the fetch-wait patch replaces ``aiokafka`` in: internal too, though not ``_``-named
FAUST_DRIVER_MODULES = ("faust.transport",)
PYTHON_ROOTS = ("streams", "storage", "encoders", "ranking", "bench", "tests")


def private_faust_uses(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: uses name`` for each import of a private ``faust`` name (a dotted part starting with ``_``,
    dunders aside), of Faust's transport drivers, or a ``faust....._name`` attribute read."""

    def private(name: str) -> bool:
        parts = name.split(".")
        return parts[0] == "faust" and (
            any(p.startswith("_") and not p.endswith("__") for p in parts[1:]) or name.startswith(FAUST_DRIVER_MODULES)
        )

    source = path.read_text()
    found = {line: name for line, name in imports(source, module_name(path, root)) if private(name)}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            parts, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and private(".".join([value.id, *reversed(parts)])):
                found.setdefault(node.lineno, ".".join([value.id, *reversed(parts)]))
    return [f"{path.relative_to(root)}:{line}: uses {name}" for line, name in sorted(found.items())]


def test_only_faust_internals_touches_faust_private_api() -> None:
    files = sorted(p for top in PYTHON_ROOTS for p in (ROOT / top).rglob("*.py"))
    assert (ROOT / FAUST_INTERNALS) in files
    found = [v for path in files if path != ROOT / FAUST_INTERNALS for v in private_faust_uses(path)]
    assert not found, (
        f"Faust's private API is used only in {FAUST_INTERNALS}; add a function there instead:\n  " + "\n  ".join(found)
    )
    # and the check sees the uses that are there, or the rule above would pass for nothing
    used = {v.split(" uses ")[1] for v in private_faust_uses(ROOT / FAUST_INTERNALS)}
    assert "faust.streams._current_event" in used and "faust.transport.drivers.aiokafka" in used, used


def test_the_faust_check_sees_private_names(tmp_path: Path) -> None:
    pkg = tmp_path / "streams"
    pkg.mkdir()
    bad = pkg / "bad.py"
    bad.write_text(
        "import faust\n"  # 1: fine
        "from faust.streams import _current_event\n"  # 2
        "from faust.types import EventT\n"  # 3: fine
        "import faust.tables._private\n"  # 4
        "def f(t):\n"  # 5
        "    return faust.streams._current_event.get()\n"  # 6
        "def g():\n"  # 7
        "    from faust.transport.drivers import aiokafka\n"  # 8
        "x = faust.__version__\n"  # 9: fine
    )
    assert [int(v.split(":")[1]) for v in private_faust_uses(bad, tmp_path)] == [2, 4, 6, 8]
