"""Ending the child processes the shell starts (broker, Milvus, workers): one signal-wait-kill path."""

from __future__ import annotations

import signal
import subprocess


def end_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send ``sig`` if it still runs, wait up to ``timeout`` for its own shutdown, then SIGKILL; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
