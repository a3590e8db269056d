"""The CPU split of ``livelens bench throughput``: a process's CPU seconds include its descendants'."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.stack import tree_cpu_seconds

BUSY = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)"


def test_a_wrappers_cpu_includes_the_busy_grandchild_it_started() -> None:
    # a wrapper that starts a busy child and waits: its own CPU is near zero, the child's about 0.6 s
    wrapper = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY!r}])"]
    )
    try:
        deadline = time.monotonic() + 30
        spent = 0.0
        while time.monotonic() < deadline and spent < 0.6:
            time.sleep(0.2)
            spent = tree_cpu_seconds(wrapper.pid)
        assert 0.6 <= spent < 5.0, spent
    finally:
        wrapper.kill()
        subprocess.run(["pkill", "-f", "time.process_time() + 0.6"], check=False)
    assert tree_cpu_seconds(2**22 + 12345) == 0.0  # no such process
