"""SIGINT and SIGTERM at chosen moments of a real ``fastdqn train`` process.

Never a traceback: either the trainer writes a checkpoint and the status is 130/143, or
one line says that no checkpoint was written and the status is 3. The moments are made
deterministic: the process signals itself from inside a chosen step (a real signal,
delivered by the OS), or the test waits for something it can see (the handler installed,
the summary printed) before it sends one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from processes import signal_when_ready, start, wait_for_line

from fastdqn.run.checkpoint import load_checkpoint

RUN = ["train", "--env-id", "CartPole-v1", "--num-envs", "4", "--learning-starts", "200", "--batch-size", "32",
       "--eval-episodes", "0", "--no-progress", "--no-cuda", "--torch-threads", "1", "--total-timesteps", "100000000"]


def signal_self_during(run_dir, *hooks: tuple[str, str, int]) -> subprocess.CompletedProcess:
    """Run ``fastdqn train`` in a fresh process that sends itself a signal when a chosen
    function is first called, just before the call goes on. Each hook is (module, attribute
    such as "make_envs" or "Trainer.checkpoint", signal)."""
    code = "import importlib, os, sys\n"
    for i, (module, attribute, signum) in enumerate(hooks):
        *owner, name = attribute.split(".")
        code += (
            f"holder{i} = importlib.import_module({module!r})" + "".join(f".{o}" for o in owner) + "\n"
            f"real{i}, sent{i} = holder{i}.{name}, []\n"
            f"def hooked{i}(*args, **kwargs):\n"
            f"    if not sent{i}:\n"
            f"        sent{i}.append(True)\n"
            f"        os.kill(os.getpid(), {int(signum)})\n"
            f"    return real{i}(*args, **kwargs)\n"
            f"holder{i}.{name} = hooked{i}\n"
        )
    code += f"from fastdqn.tools.cli import main\nsys.exit(main({RUN + ['--run-dir', str(run_dir)]!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def assert_stopped_without_checkpoint(result, sig, run_dir):
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    # Before the command is parsed fastdqn does not know yet that it is a training run.
    assert result.stderr.splitlines()[-1] in (
        f"fastdqn: stopped by {signal.Signals(sig).name} before training started; no checkpoint was written",
        f"fastdqn: stopped by {signal.Signals(sig).name}; nothing was written")
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.parametrize("module, name, sig", [
    ("fastdqn.run.envs", "env_info", signal.SIGINT),       # while looking the env up
    ("fastdqn.run.build", "build_learner", signal.SIGTERM),  # while building the network
    ("fastdqn.run.envs", "make_envs", signal.SIGINT),      # while creating the envs
])
def test_signal_during_start_up_stops_with_one_line(tmp_path, module, name, sig):
    run = tmp_path / "run"
    assert_stopped_without_checkpoint(signal_self_during(run, (module, name, sig)), sig, run)
    # Nothing of a run was written, so the same command starts afresh.
    assert sorted(p.name for p in run.iterdir()) in ([], ["fastdqn.lock"]) if run.exists() else True


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_right_at_the_summary_writes_a_checkpoint(tmp_path, sig, status):
    run = tmp_path / "run"
    result = signal_self_during(run, ("fastdqn.run.launch", "print_summary", sig))
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert f"stopped by {signal.Signals(sig).name} at step 0; checkpoint saved" in result.stdout
    assert load_checkpoint(run)["trainer"]["global_step"] == 0
    resumed = subprocess.run([sys.executable, "-m", "fastdqn", "train", "--resume", str(run), "--total-timesteps",
                              "400", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run)["trainer"]["global_step"] == 400


def test_second_signal_stops_at_once_with_one_line(tmp_path):
    """The first SIGINT asks for a checkpoint; a second one while it is written stops at once."""
    run = tmp_path / "run"
    result = signal_self_during(run, ("fastdqn.run.launch", "print_summary", signal.SIGINT),
                                ("fastdqn.run.trainer", "Trainer.checkpoint", signal.SIGINT))
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        "fastdqn: stopped by SIGINT a second time, at once; no checkpoint was written"]
    assert not (run / "checkpoint.pt").exists()


def _catches(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (sig - 1)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_as_soon_as_the_command_runs(tmp_path, sig):
    """Sent the moment fastdqn has installed its handler (SIGTERM shows up in the process's
    caught signals), long before torch and envpool are imported."""
    run = tmp_path / "run"

    def handler_installed(proc):
        deadline = time.time() + 60
        while not _catches(proc.pid, signal.SIGTERM):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.002)

    result = signal_when_ready(start(*RUN, "--run-dir", run), handler_installed, sig)
    assert_stopped_without_checkpoint(result, sig, run)
    assert not run.exists()  # stopped before the run folder was made


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_after_the_summary_line_writes_a_checkpoint(tmp_path, sig, status):
    run = tmp_path / "run"
    result = signal_when_ready(start(*RUN, "--run-dir", run), lambda proc: wait_for_line(proc, "steps into"), sig)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and "checkpoint saved" in result.stdout
    load_checkpoint(run)  # loadable, so --resume works
