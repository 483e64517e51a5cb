"""Helpers for tests that drive real ``fastdqn`` processes."""

from __future__ import annotations

import subprocess
import sys
import time


def fastdqn(*args) -> list[str]:
    return [sys.executable, "-m", "fastdqn", *map(str, args)]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(fastdqn(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """Read ``proc``'s stdout until a line containing ``text``; fail if it exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return line
        if not line and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {text!r}: {proc.stderr.read()}")
    raise AssertionError(f"no {text!r} within {timeout} s")


def signal_when_ready(proc: subprocess.Popen, ready, sig: int) -> subprocess.CompletedProcess:
    """Call ``ready(proc)`` (it returns at the chosen moment), send ``sig``, wait for the end."""
    try:
        ready(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
