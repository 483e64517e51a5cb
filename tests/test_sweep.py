"""``fastdqn sweep``: its command lines, every bad input, and real sweeps on a local Ray
instance (finishing, a killed run retried from its checkpoint, a stopped sweep resumed).

The Ray tests skip when Ray is not installed (``pip install -e ".[ray]"``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from fastdqn.run.checkpoint import load_checkpoint
from fastdqn.tools.cli import build_parser
from fastdqn.tools.sweep import SweepSettings, settings_from_args, start_commands, train_flags

from cli_errors import fails

# Tiny runs: learning starts early, two evaluation games, a checkpoint every 500 steps.
SHORT = ["--learning-starts", "500", "--eval-episodes", "2", "--checkpoint-every", "500", "--log-every", "500"]


def fastdqn(*args):
    return [sys.executable, "-m", "fastdqn", *map(str, args)]


# ---- without Ray -------------------------------------------------------------------------------


def test_sweep_and_plot_are_registered():
    result = subprocess.run(fastdqn("--help"), capture_output=True, text=True, check=True)
    assert "sweep" in result.stdout and "plot" in result.stdout
    text = " ".join(subprocess.run(fastdqn("sweep", "--help"), capture_output=True, text=True, check=True).stdout.split())
    for flag in ("--env-ids", "--games", "--seeds", "--sweep-dir", "--resume", "--address", "--cpus-per-run", "--gpus-per-run",
                 "--max-retries", "--total-timesteps", "--learning-rate", "--env-threads"):
        assert flag in text, flag
    assert "--run-dir" not in text and "--env-id " not in text  # set per run


def test_train_flags_parse_back_to_the_same_values():
    overrides = {"total_timesteps": 5000, "learning_rate": 3e-4, "compile": False, "double_dqn": True,
                 "hidden": (64, 32), "loss": "huber", "sticky_actions": 0.25}
    args = build_parser().parse_args(["train", *train_flags(overrides)])
    assert {name: getattr(args, name) for name in overrides} == overrides


def test_the_task_looks_for_the_checkpoint_file_train_writes():
    from fastdqn.run.checkpoint import CHECKPOINT_NAME
    from fastdqn.tools.sweep_task import CHECKPOINT_FILE

    assert CHECKPOINT_FILE == CHECKPOINT_NAME


def test_games_expand_to_the_suites_envpool_tasks(workdir):
    args = build_parser().parse_args(SWEEP + ["--games", "atari5", "--seeds", "1,2"])
    settings, _, _ = settings_from_args(args)
    # Aitchison et al. 2023's five games, as EnvPool tasks.
    assert settings.env_ids == ("BattleZone-v5", "DoubleDunk-v5", "NameThisGame-v5", "Phoenix-v5", "Qbert-v5")
    starts = start_commands(settings)
    assert len(starts) == 10 and starts["Qbert-v5__2"][:5] == ["train", "--env-id", "Qbert-v5", "--seed", "2"]
    assert not any(workdir.iterdir())


def test_threads_follow_the_cpus_reserved():
    settings = SweepSettings(("CartPole-v1", "Breakout-v5"), (1, 2), ("--total-timesteps", "100"), 3.5, 0.0, 3)
    starts = start_commands(settings)
    assert set(starts) == {"CartPole-v1__1", "CartPole-v1__2", "Breakout-v5__1", "Breakout-v5__2"}

    def flag(argv, name):
        return argv[argv.index(name) + 1]

    cartpole, breakout = starts["CartPole-v1__2"], starts["Breakout-v5__1"]
    assert cartpole[:5] == ["train", "--env-id", "CartPole-v1", "--seed", "2"]
    assert flag(cartpole, "--torch-threads") == "1"  # the MLP preset's one thread, below the 3 CPUs
    assert flag(breakout, "--torch-threads") == "3" and flag(breakout, "--env-threads") == "3"
    assert "--no-cuda" in breakout  # no GPU reserved: train on the CPU even where one exists
    given = SweepSettings(("Breakout-v5",), (1,), ("--torch-threads", "2"), 4.0, 0.5, 3)
    argv = start_commands(given)["Breakout-v5__1"]
    assert argv.count("--torch-threads") == 1 and flag(argv, "--torch-threads") == "2"
    assert "--no-cuda" not in argv


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SWEEP = ["sweep", "--sweep-dir", "sw", "--total-timesteps", "1000"]


@pytest.mark.parametrize("extra, expected", [
    (["--env-ids", "CartPole-v1,CartPole-v9"], ["CartPole-v9", "CartPole-v1"]),
    (["--env-ids", "CartPole-v1", "--seeds", "1,1"], ["--seeds", "'1,1'"]),
    (["--env-ids", "CartPole-v1", "--seeds", "one"], ["--seeds"]),
    (["--env-ids", "CartPole-v1", "--batch-size", "64", "--buffer-size", "32", "--learning-starts", "64"],
     ["--batch-size 64", "CartPole-v1"]),
    (["--env-ids", "CartPole-v1", "--cuda"], ["--cuda", "--gpus-per-run"]),
    (["--env-ids", "CartPole-v1", "--cpus-per-run", "0"], ["--cpus-per-run"]),
    (["--env-ids", "CartPole-v1", "--gpus-per-run", "-1"], ["--gpus-per-run"]),
    (["--env-ids", "CartPole-v1", "--max-retries", "-1"], ["--max-retries"]),
    (["--env-ids", "CartPole-v1", "--address", "localhost"], ["--address", "HOST:PORT"]),
    ([], ["--env-ids", "--games"]),
    (["--games", "atari6"], ["--games", "atari5, atari10, atari57", "'atari6'"]),
    (["--games", "atari5", "--env-ids", "Pong-v5"], ["--games", "--env-ids", "not both"]),
])
def test_bad_sweep_input(extra, expected, capsys, workdir):
    fails(SWEEP + extra, capsys, workdir, *expected)


def test_unreachable_address_is_refused_at_once(capsys, workdir):
    start = time.monotonic()
    port = free_port()
    fails(SWEEP + ["--env-ids", "CartPole-v1", "--address", f"127.0.0.1:{port}"], capsys, workdir,
          "--address", f"127.0.0.1:{port}")
    assert time.monotonic() - start < 30


def test_sweep_folder_and_resume_rules(capsys, workdir):
    (workdir / "sw").mkdir()
    (workdir / "sw" / "something").write_text("x")
    fails(SWEEP + ["--env-ids", "CartPole-v1"], capsys, workdir, "--sweep-dir", "--resume")
    fails(["sweep", "--resume", "sw"], capsys, workdir, "--resume", "sweep.json")
    fails(["sweep", "--resume", "sw", "--seeds", "3"], capsys, workdir, "--seeds", "sweep.json")
    fails(["sweep", "--resume", "sw", "--learning-rate", "0.1"], capsys, workdir, "--learning-rate")
    fails(["sweep", "--resume", "sw", "--games", "atari5"], capsys, workdir, "--games", "sweep.json")
    fails(["sweep"], capsys, workdir, "--sweep-dir")
    assert [p.name for p in (workdir / "sw").iterdir()] == ["something"]


def test_missing_ray_is_one_clear_line(capsys, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    fails(SWEEP + ["--env-ids", "CartPole-v1"], capsys, workdir, "Ray is not installed", "fastdqn[ray]")


# ---- on a local Ray instance ---------------------------------------------------------------------


def needs_ray():
    # Only look: importing Ray here would fix its settings before fastdqn sweep sets them.
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")


def records(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def attempts(log_path):
    return [line for line in log_path.read_text().splitlines() if line.startswith("== attempt")]


def sweep_runs(sweep_dir):
    return json.loads((sweep_dir / "sweep.json").read_text())["runs"]


def test_more_gpus_than_the_cluster_has(capsys, workdir):
    needs_ray()
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    fails(SWEEP + ["--env-ids", "CartPole-v1", "--gpus-per-run", "1"], capsys, workdir,
          "--gpus-per-run 1", "0 GPUs")


@pytest.mark.slow
def test_sweep_runs_every_pair_and_writes_its_summary(tmp_path):
    needs_ray()
    sweep = tmp_path / "sw"
    argv = fastdqn("sweep", "--env-ids", "CartPole-v1,Acrobot-v1", "--seeds", "1,2", "--sweep-dir", sweep,
                   "--total-timesteps", 1000, *SHORT)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    runs = sweep_runs(sweep)
    assert sorted(runs) == ["Acrobot-v1__1", "Acrobot-v1__2", "CartPole-v1__1", "CartPole-v1__2"]
    expected = {}
    for name, r in runs.items():
        assert r["state"] == "finished" and r["attempts"] == 1, r
        run_dir = sweep / r["run_dir"]
        assert load_checkpoint(run_dir)["trainer"]["global_step"] == 1000
        assert json.loads((run_dir / "config.json").read_text())["seed"] == r["seed"]
        final = [x["eval_return_mean"] for x in records(run_dir) if "eval_return_mean" in x][-1]
        expected.setdefault(r["env_id"], {})[str(r["seed"])] = final

    summary = {row["env_id"]: row for row in json.loads((sweep / "summary.json").read_text())["envs"]}
    csv_lines = (sweep / "summary.csv").read_text().splitlines()
    assert csv_lines[0] == "env_id,runs,evaluated,eval_mean,eval_std,eval_per_seed" and len(csv_lines) == 3
    for env_id, per_seed in expected.items():
        values = list(per_seed.values())
        row = summary[env_id]
        assert row["eval_per_seed"] == per_seed and row["runs"] == row["evaluated"] == 2
        assert row["eval_mean"] == pytest.approx(sum(values) / 2)
        assert row["eval_std"] == pytest.approx(abs(values[0] - values[1]) / 2)
        assert f"{row['eval_mean']:.2f} ± {row['eval_std']:.2f}" in result.stdout


def wait_for(condition, timeout, proc, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the sweep ended (status {proc.returncode}) before {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoint_step(run_dir) -> int:
    try:
        return int(load_checkpoint(run_dir)["trainer"]["global_step"])
    except Exception:
        return 0


def status(sweep, name) -> dict:
    try:
        return json.loads((sweep / "logs" / f"{name}.status.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_killed_run_and_dead_worker_are_retried_from_the_checkpoint(tmp_path):
    """SIGKILL the training process, then its Ray worker: each time Ray retries the task,
    which resumes from the last checkpoint; no step is logged twice."""
    needs_ray()
    import psutil

    sweep, name, total = tmp_path / "sw", "CartPole-v1__1", 6000
    run_dir = sweep / "runs" / name
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen(fastdqn("sweep", "--env-ids", "CartPole-v1", "--seeds", 1, "--sweep-dir", sweep,
                                        "--total-timesteps", total, *SHORT), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: checkpoint_step(run_dir) >= 1000, 300, proc, "a first checkpoint")
            child = status(sweep, name)["pid"]
            os.kill(child, signal.SIGKILL)
            first = checkpoint_step(run_dir)
            assert first < total, "the run finished before it could be killed; make it longer"
            wait_for(lambda: status(sweep, name).get("attempt") == 2, 120, proc, "the retry")
            wait_for(lambda: checkpoint_step(run_dir) >= first + 1000, 300, proc, "the retry's checkpoint")
            child = status(sweep, name)["pid"]
            worker = psutil.Process(child).ppid()
            second = checkpoint_step(run_dir)
            assert second < total, "the run finished before its worker could be killed; make it longer"
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie",
                     30, proc, "the training process to die with its worker")
            assert proc.wait(timeout=600) == 0, (tmp_path / "out.txt").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    run = sweep_runs(sweep)[name]
    assert run["state"] == "finished" and run["attempts"] == 3, run
    lines = attempts(sweep / "logs" / f"{name}.log")
    assert len(lines) == 3 and "--resume" not in lines[0] and all("--resume" in x for x in lines[1:])
    assert load_checkpoint(run_dir)["trainer"]["global_step"] == total
    logged = records(run_dir)
    train_steps = [r["global_step"] for r in logged if "sps" in r]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == total, "a step was logged twice"
    assert first in train_steps and second in train_steps
    episode_steps = [r["global_step"] for r in logged if "episodic_return" in r]
    assert episode_steps == sorted(episode_steps)


@pytest.mark.slow
def test_stopped_sweep_resumes_and_skips_finished_runs(tmp_path):
    """Two runs one after the other (each reserves both CPUs): SIGINT once the first has
    finished and the second has a checkpoint; --resume skips the first, resumes the second."""
    needs_ray()
    sweep, total = tmp_path / "sw", 4000
    first, second = "CartPole-v1__1", "CartPole-v1__2"
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen(fastdqn("sweep", "--env-ids", "CartPole-v1", "--seeds", "1,2", "--sweep-dir", sweep,
                                        "--cpus-per-run", os.cpu_count(), "--total-timesteps", total, *SHORT),
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            def running_second():
                runs = sweep_runs(sweep) if (sweep / "sweep.json").exists() else {}
                done = [n for n, r in runs.items() if r["state"] == "finished"]
                other = {first: second, second: first}
                return done and checkpoint_step(sweep / "runs" / other[done[0]]) >= 500 and done[0]

            finished = wait_for(running_second, 300, proc, "one run finished and the other checkpointed")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 130, (tmp_path / "out.txt").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    stopped = {first: second, second: first}[finished]
    runs = sweep_runs(sweep)
    assert runs[finished]["state"] == "finished" and runs[stopped]["state"] == "stopped"
    saved = checkpoint_step(sweep / "runs" / stopped)
    assert 500 <= saved < total
    assert f"fastdqn sweep --resume {sweep}" in (tmp_path / "out.txt").read_text()
    assert not (sweep / "STOP").exists()

    result = subprocess.run(fastdqn("sweep", "--resume", sweep), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "1 finished before" in result.stdout
    runs = sweep_runs(sweep)
    assert all(r["state"] == "finished" for r in runs.values())
    assert len(attempts(sweep / "logs" / f"{finished}.log")) == 1
    lines = attempts(sweep / "logs" / f"{stopped}.log")
    assert len(lines) == 2 and "--resume" in lines[1]
    assert checkpoint_step(sweep / "runs" / stopped) == total
    train_steps = [r["global_step"] for r in records(sweep / "runs" / stopped) if "sps" in r]
    assert train_steps == sorted(set(train_steps)) and saved in train_steps
    assert np.isfinite(json.loads((sweep / "summary.json").read_text())["envs"][0]["eval_mean"])


def test_a_run_that_fails_is_reported_not_retried(tmp_path):
    """A run that fastdqn train refuses (exit 2: a buffer larger than RAM) fails once, and
    the sweep says why and exits 1."""
    needs_ray()
    sweep = tmp_path / "sw"
    result = subprocess.run(fastdqn("sweep", "--env-ids", "CartPole-v1", "--seeds", 1, "--sweep-dir", sweep,
                                    "--buffer-size", 10**13, "--max-retries", 2),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr + result.stdout
    run = sweep_runs(sweep)["CartPole-v1__1"]
    assert run["state"] == "failed" and run["attempts"] == 1, run
    assert "exited with status 2" in run["error"] and "--buffer-size" in run["error"]
    assert f"failed: CartPole-v1__1: {run['error']}" in result.stderr
    assert len(attempts(sweep / "logs" / "CartPole-v1__1.log")) == 1


def test_the_live_step_count_never_goes_backward(tmp_path):
    """A retried run rewrites its metrics from its checkpoint's step: the live total keeps the
    most each run reached (one line per record, as the trainer writes them)."""
    from fastdqn.tools.sweep import _Driver

    driver = _Driver.__new__(_Driver)
    driver.folder, driver.runs, driver._steps = tmp_path, {"a": {"run_dir": "runs/a"}}, {}
    metrics = tmp_path / "runs" / "a" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"global_step": 500, "epsilon": 0.5}\n')
    driver._note_steps("a")
    metrics.write_text('{"global_step": 300, "epsilon": 0.5}\n')  # restarted from step 300
    driver._note_steps("a")
    assert driver._steps["a"] == 500


def test_counts_are_singular_for_one():
    from fastdqn.tools.sweep import _count

    assert (_count(1, "CPU"), _count(2, "CPU"), _count(0.5, "GPU"), _count(0, "GPU")) == (
        "1 CPU", "2 CPUs", "0.5 GPUs", "0 GPUs")


@pytest.mark.parametrize("extra, expected", [
    (["--seeds", str(2**31)], ["--seeds", str(2**31)]),
    (["--seeds", "1," + str(2**40)], ["--seeds", str(2**40)]),
    (["--seeds", ""], ["--seeds", "''"]),
    (["--seeds", " , "], ["--seeds"]),
    (["--sticky-actions", "0.25"], ["--sticky-actions", "Atari"]),
    (["--hidden", "100000000,100000000"], ["--hidden", "GB"]),
    (["--n-step", str(2**70)], ["--n-step", "65536"]),
    (["--prioritized", "--per-alpha", "1e308"], ["--per-alpha"]),
])
def test_sweep_input_every_run_would_refuse_is_refused_first(extra, expected, capsys, workdir):
    fails(SWEEP + ["--env-ids", "CartPole-v1", *extra], capsys, workdir, *expected)


def test_a_signal_after_the_runs_ended_still_writes_and_prints_the_summary(tmp_path, monkeypatch, capsys):
    """The driver has returned: a Ctrl-C while Ray shuts down is noted, the summary written."""
    import fastdqn.tools.sweep as sweep_module

    class FakeRay:
        def shutdown(self):
            os.kill(os.getpid(), signal.SIGINT)

        def cluster_resources(self):
            return {"CPU": 2.0, "GPU": 0.0}

    class FakeDriver:
        def __init__(self, ray, settings, folder, runs, starts):
            self.runs = runs

        def run(self):
            for r in self.runs.values():
                r["state"] = "finished"
            return 0

    monkeypatch.setattr(sweep_module, "_import_ray", lambda local: FakeRay())
    monkeypatch.setattr(sweep_module, "_start_ray", lambda ray, address: None)
    monkeypatch.setattr(sweep_module, "_Driver", FakeDriver)
    from fastdqn.tools.cli import main

    assert main(["sweep", "--env-ids", "CartPole-v1", "--sweep-dir", str(tmp_path / "sw"),
                 "--total-timesteps", "1000"]) == 0
    out, err = capsys.readouterr()
    assert "final eval" in out and "SIGINT after the runs had ended" in err and "nothing was written" not in err
    assert (tmp_path / "sw" / "summary.json").exists()
