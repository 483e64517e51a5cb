"""One run of a sweep: the body of a Ray task that runs ``fastdqn train`` as a child process,
starting the run or resuming it from its checkpoint. A child killed by a signal raises
``RunKilled``, which Ray retries; the stop file is forwarded to the child as SIGINT, which
saves a checkpoint and exits 130. Imports nothing heavy: Ray workers import it to run the task.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fastdqn.util.atomic import atomic_write
from fastdqn.errors import RunError

# fastdqn.run.checkpoint.CHECKPOINT_NAME, named here so that the Ray worker does not import
# torch (seconds on a small machine) only to look for a file.
CHECKPOINT_FILE = "checkpoint.pt"
# Run states, as sweep.json records them.
QUEUED, RUNNING, FINISHED, FAILED, STOPPED = "queued", "running", "finished", "failed", "stopped"


class RunKilled(RunError):
    """The child ``fastdqn train`` died from a signal: Ray retries the task, which resumes it."""


def run_training(run_dir: str, log_path: str, status_path: str, stop_path: str,
                 start_argv: Sequence[str], threads: int) -> str:
    """Train one run to its end in a child ``fastdqn train``; runs inside a Ray task.

    Starts the run, or resumes it when its folder holds a checkpoint. Returns FINISHED, or
    STOPPED after the stop file appeared (the child saved a checkpoint). Raises ``RunKilled``
    when the child died from a signal (Ray retries), ``RunError`` for any other failure.
    """
    run = Path(run_dir)
    if os.path.exists(stop_path):  # the sweep was stopped while this run waited for CPUs
        return STOPPED
    if (run / CHECKPOINT_FILE).exists():
        argv = ["train", "--resume", str(run)]
    else:
        # A start that died before its first checkpoint left nothing to resume; its
        # partial logs would be counted again, so the run starts over in a clean folder.
        shutil.rmtree(run, ignore_errors=True)
        argv = [*start_argv, "--run-dir", str(run)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Ray sets OMP_NUM_THREADS to the task's CPUs only when it is unset; torch, Numba and
    # BLAS read their own variables. Each run gets exactly the CPUs it reserved.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    previous = read_status(status_path)
    attempt = int(previous.get("attempt", 0)) + 1
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"== attempt {attempt} on {socket.gethostname()} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"fastdqn {shlex.join(argv)}\n")
        log.flush()
        child = subprocess.Popen([sys.executable, "-m", "fastdqn", *argv], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                 preexec_fn=_child_setup)
        _write_json(status_path, {"attempt": attempt, "pid": child.pid, "host": socket.gethostname()})
        stopping = False
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if not stopping and os.path.exists(stop_path):
                    child.send_signal(signal.SIGINT)  # the child checkpoints and exits 130
                    stopping = True
            except KeyboardInterrupt:  # ray.cancel of this task
                if not stopping:
                    child.send_signal(signal.SIGINT)
                    stopping = True
    if code == 0:
        return FINISHED
    # 130/143: stopped with a checkpoint; 3: stopped before there was anything to save.
    if stopping and code in (130, 143, 3):
        return STOPPED
    if code < 0:
        raise RunKilled(f"{run.name}: fastdqn train was killed by {signal.Signals(-code).name} "
                        f"(attempt {attempt}); see {log_path}")
    raise RunError(f"{run.name}: fastdqn train exited with status {code} (attempt {attempt}); "
                   f"last line of {log_path}: {_last_line(log_path)}")


def _child_setup() -> None:
    """In the child, before exec: take back SIGINT, and die with the Ray worker (Linux).

    Ray workers block SIGINT, and a child inherits the blocked mask: ``fastdqn train`` would
    never see the stop request. The parent-death signal keeps a dead worker's child from
    training on beside the retried task, two processes writing one run folder.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def read_status(path) -> dict:
    """The status file of a run's latest attempt: attempt number, child pid and host."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data) + "\n"))


def _last_line(path) -> str:
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
