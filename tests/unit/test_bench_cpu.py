"""The CPU split of ``livelens bench throughput``: a process's CPU seconds include its descendants',
and its peak RSS is sampled throughout."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.load import rss_mib
from bench.stack import RssPeak, tree_cpu_seconds

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


PEAK = "import time\nx = bytearray(300 << 20)\ntime.sleep(1.5)\ndel x\nprint('freed', flush=True)\ntime.sleep(30)"


def test_the_rss_peak_is_the_largest_sample_not_the_last() -> None:
    # a child that holds 300 MiB for 1.5 s, then frees it: the peak keeps it, a reading now does not
    child = subprocess.Popen([sys.executable, "-c", PEAK], stdout=subprocess.PIPE, text=True)
    try:
        sampler = RssPeak({"child": child.pid, "gone": 2**22 + 12345}, every_s=0.1)
        assert child.stdout is not None and child.stdout.readline().strip() == "freed"
        time.sleep(0.3)
        peak = sampler.stop()
        now = rss_mib(child.pid)
        assert now is not None and peak["child"] >= 300 > now, (peak, now)
        assert "gone" not in peak  # a process that is not there is left out
    finally:
        child.kill()
