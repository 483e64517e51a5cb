"""``fastdqn train --actors N``: bad input refused before anything starts; two Ray actors
(one SIGKILLed mid-run and restarted) feeding one learner, with every transition the learner
samples equal to one an actor recorded on its side (compared by content, keyed by the env id
the actor's range gives it); Ctrl-C leaves one checkpoint, exit 130 and no Ray process.

The Ray tests start a local instance on the loopback address and skip without Ray.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cli_errors import fails
import processes
from processes import start, wait_for_line

TRAIN = ["train", "--env-id", "CartPole-v1", "--total-timesteps", "3000", "--no-progress"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def needs_ray():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")


@pytest.mark.parametrize("extra,expected", [
    (["--actors", "-1"], ["--actors", "-1"]),
    (["--actors", "2", "--weight-sync-every", "0"], ["--weight-sync-every", "0"]),
    (["--actors", "2", "--ratio-tolerance", "0"], ["--ratio-tolerance"]),
    (["--address", "127.0.0.1:6379"], ["--address", "--actors N"]),
    (["--actor-priorities", "--actors", "2"], ["--actor-priorities", "--prioritized"]),
])
def test_bad_actor_input(extra, expected, capsys, workdir):
    fails(TRAIN + extra, capsys, workdir, *expected)


def test_missing_ray_is_one_clear_line(capsys, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    fails(TRAIN + ["--actors", "2"], capsys, workdir, "Ray is not installed", "fastdqn[ray]")


def test_unreachable_address_is_refused_within_seconds(capsys, workdir):
    needs_ray()
    start_time = time.monotonic()
    fails(TRAIN + ["--actors", "2", "--address", "10.255.255.1:1"], capsys, workdir, "--address", "10.255.255.1:1")
    assert time.monotonic() - start_time < 15


def _recorded(record_dir: Path) -> tuple[set, dict]:
    """Every valid transition the actors recorded, keyed by (global env id, content); and the
    processes (pids) each actor ran in."""
    keys, pids = set(), {}
    for path in record_dir.glob("actor*.npz"):
        actor, pid = (int(x) for x in path.name.removeprefix("actor").split("-")[:2])
        pids.setdefault(actor, set()).add(pid)
        with np.load(path) as f:
            offset = int(f["env_offset"])
            i = 0
            while f"valid_{i}" in f:
                for r in np.flatnonzero(f[f"valid_{i}"]):
                    keys.add((offset + int(f[f"env_ids_{i}"][r]), f[f"obs_{i}"][r].tobytes(),
                              f[f"next_obs_{i}"][r].tobytes(), int(f[f"action_{i}"][r]),
                              float(np.sign(f[f"reward_{i}"][r])), bool(f[f"terminated_{i}"][r])))
                i += 1
    return keys, pids


@pytest.mark.slow
def test_two_actors_one_killed_feed_exact_transitions(tmp_path):
    needs_ray()
    from fastdqn.run.actors.learner_loop import ActorTrainer
    from fastdqn.run.actors.session import actor_fleet
    from fastdqn.run.build import build_buffer, build_learner
    from fastdqn.run.config import VECTOR, make_config
    from fastdqn.run.envs import env_info

    task = env_info("CartPole-v1")
    config = make_config(VECTOR, dict(env_id="CartPole-v1", actors=2, num_envs=2, total_timesteps=1_000_000,
                                      learning_starts=300, actor_chunk_steps=8, eval_episodes=0, batch_size=32,
                                      weight_sync_every=20), cuda_available=False, max_episode_steps=500)
    buffer = build_buffer(config, task, seed=1)
    learner = build_learner(config, task)
    record = tmp_path / "record"
    record.mkdir()
    with actor_fleet(config, task, buffer, seed=1, record_dir=str(record)) as fleet:
        first = fleet.ray.get([a.pid.remote() for a in fleet.actors])
        trainer = ActorTrainer(fleet, buffer, learner, config)

        def kill_then_stop():
            # Kill actor 0 once learning runs; stop the run once its new process has sent
            # 200 more env steps (or after two minutes, and the checks below fail).
            deadline = time.monotonic() + 120
            while fleet.limiter.steps < 800 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(first[0], signal.SIGKILL)
            while fleet.restarts[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            back = int(fleet.actor_steps[0])
            while fleet.actor_steps[0] < back + 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            trainer.request_stop(signal.SIGINT)

        stopper = threading.Thread(target=kill_then_stop)
        stopper.start()
        assert trainer.train() == 130  # stopped as asked, nothing raised
        stopper.join()
        assert fleet.restarts.tolist() == [1, 0]
    keys, pids = _recorded(record)
    assert len(pids[0]) >= 2 and first[0] in pids[0]  # actor 0 ran again in a new process
    E = config.replay_envs
    assert {k[0] for k in keys} == set(range(E))  # actor i's rows only on env ids [2i, 2i + 2)
    sampled = 0
    for _ in range(20):
        batch = buffer.sample(128)
        for r in range(128):
            key = (int(batch.index[r]) % E, batch.obs[r].tobytes(), batch.next_obs[r].tobytes(),
                   int(batch.action[r]), float(batch.reward[r]), bool(batch.terminated[r]))
            assert key in keys, f"sampled row {r} (env {key[0]}) is no transition an actor produced"
            sampled += 1
    assert sampled == 20 * 128
    # Updates per env step held at 1/train_frequency within the tolerance (and the request slack).
    learned = fleet.limiter.steps - config.learning_starts
    ratio = trainer.updates * config.train_frequency / learned
    assert 1 - config.ratio_tolerance - fleet.limiter.slack / learned <= ratio <= 1 + config.ratio_tolerance


@pytest.mark.slow
def test_ctrl_c_then_a_killed_learner_each_resume(tmp_path):
    """Ctrl-C: one checkpoint, exit 130, no actor or Ray process left. The resumed run is then
    killed with SIGKILL: its actors go with it, and --resume continues from its last periodic
    checkpoint with new actors."""
    needs_ray()
    import psutil

    run_dir = tmp_path / "run"
    proc = start(*TRAIN, "--actors", "2", "--num-envs", "2", "--total-timesteps", "1000000", "--log-every", "500",
                 "--checkpoint-every", "1000", "--run-dir", run_dir, "--eval-episodes", "0")
    try:
        wait_for_line(proc, "steps into", timeout=120)
        deadline = time.time() + 120
        while time.time() < deadline and not (run_dir / "metrics.jsonl").exists():
            time.sleep(0.2)
        while time.time() < deadline and "sps" not in (run_dir / "metrics.jsonl").read_text():
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(p.name() + " " + " ".join(p.cmdline()[:1]) for p in children if p.is_running())
        assert "EnvActor" in names  # ps shows each actor by its class
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "checkpoint saved" in out
    assert (run_dir / "checkpoint.pt").exists()
    time.sleep(2)
    left = [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes left behind: {left}"

    stopped_ckpt = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    proc = start("train", "--resume", run_dir, "--total-timesteps", "1000000", "--no-progress")
    try:
        first = wait_for_line(proc, "resuming at step", timeout=120)
        deadline = time.time() + 120
        while time.time() < deadline and (run_dir / "checkpoint.pt").stat().st_mtime_ns == stopped_ckpt:
            time.sleep(0.2)  # until the resumed run writes its first periodic checkpoint
        actors = [p for p in psutil.Process(proc.pid).children(recursive=True) if "EnvActor" in p.name()]
        assert len(actors) == 2
    finally:
        proc.kill()
        proc.wait()
    gone, alive = psutil.wait_procs(actors, timeout=60)
    assert alive == [], f"actors left behind by the killed learner: {[p.pid for p in alive]}"
    logged = max(json.loads(line)["global_step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    done = subprocess.run(processes.fastdqn("train", "--resume", run_dir, "--total-timesteps", logged + 600,
                                            "--no-progress"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    def step(line: str) -> int:
        return int(line.split("resuming at step")[1].split(";")[0].replace(",", ""))

    resumed_at = step(next(x for x in done.stdout.splitlines() if "resuming at step" in x))
    assert step(first) < resumed_at <= logged  # the killed run's periodic checkpoint, not Ctrl-C's
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["global_step"] >= logged + 600 and "actor1_sps" in records[-1]
