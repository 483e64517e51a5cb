"""End to end: the update rate, CartPole learning, and an Atari run that is killed, resumed,
interrupted and evaluated through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fastdqn.run.checkpoint import load_checkpoint
from fastdqn.run.config import TrainConfig, linear_schedule
from fastdqn.run.envs import env_info, make_envs
from fastdqn.errors import ConfigError
from fastdqn.learn.learner import Learner
from fastdqn.learn.networks import MLP
from fastdqn.replay import ReplayBuffer
from fastdqn.run.trainer import Trainer

CARTPOLE_SEED = 1


def fastdqn(*args):
    return [sys.executable, "-m", "fastdqn", *map(str, args)]


def records(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_buffer_and_learner_must_share_gamma():
    """The learner bootstraps with the batch's discount, which the buffer computes from its gamma."""
    info = env_info("CartPole-v1")
    buffer = ReplayBuffer(100, info.obs_shape, 2, obs_dtype=info.obs_dtype, gamma=0.9, seed=0)
    learner = Learner(MLP(4, 2), compile=False, gamma=0.99)
    with pytest.raises(ConfigError, match=r"buffer: expected gamma 0.99 .* got 0.9; build the buffer with gamma=0.99"):
        Trainer(make_envs("CartPole-v1", 2, seed=0), buffer, learner, TrainConfig(env_id="CartPole-v1", num_envs=2))


@pytest.mark.parametrize("num_envs", [3, 8])
def test_updates_per_env_step_stay_one_over_train_frequency(num_envs):
    info = env_info("CartPole-v1")
    config = TrainConfig(env_id="CartPole-v1", total_timesteps=600, num_envs=num_envs, buffer_size=1000,
                         batch_size=16, learning_starts=100, train_frequency=4,
                         target_network_frequency=8, compile=False, eval_episodes=0)
    envs = make_envs("CartPole-v1", num_envs, seed=0)
    buffer = ReplayBuffer(1000, info.obs_shape, num_envs, obs_dtype=info.obs_dtype, seed=0)
    learner = Learner(MLP(4, 2), compile=False, target_update_interval=config.target_update_interval)
    trainer = Trainer(envs, buffer, learner, config)
    trainer.train()
    # Independent count: every vector step after learning_starts adds num_envs env steps;
    # one update per 4 of them, remainders carried.
    steps = np.arange(num_envs, trainer.global_step + 1, num_envs)
    assert learner.num_updates == num_envs * int((steps > 100).sum()) // 4
    assert trainer.global_step == -(-600 // num_envs) * num_envs


LEARNING_RUNS = {
    "vector": [],
    "rainbow-lite": ["--preset", "rainbow-lite"],
}


@pytest.fixture(scope="module")
def cartpole_runs(tmp_path_factory):
    """Both CartPole learning runs, started together: each uses one torch thread and the
    seed fixes its result, so on two cores they take the time of one."""
    root = tmp_path_factory.mktemp("cartpole")
    procs = {}
    for name, extra in LEARNING_RUNS.items():
        with open(root / f"{name}.err", "w") as err:  # files, not pipes: neither run waits on a reader
            procs[name] = subprocess.Popen(fastdqn("train", "--env-id", "CartPole-v1", *extra, "--seed",
                                                   CARTPOLE_SEED, "--run-dir", root / name, "--no-progress"),
                                           stdout=subprocess.DEVNULL, stderr=err)
    try:
        for proc in procs.values():
            proc.wait(timeout=900)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return {name: (proc.returncode, (root / f"{name}.err").read_text(), root / name) for name, proc in procs.items()}


@pytest.mark.slow
def test_cartpole_learns_within_100k_steps(cartpole_runs):
    """The vector preset solves CartPole-v1: greedy mean >= 475 over 10 games after 100k steps."""
    returncode, err, run = cartpole_runs["vector"]
    assert returncode == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["total_timesteps"] <= 100_000 and config["eval_epsilon"] == 0.0
    evals = [r for r in records(run) if "eval_return_mean" in r]
    assert evals[-1]["global_step"] == config["total_timesteps"]
    assert evals[-1]["eval_return_mean"] >= 475, evals


@pytest.mark.slow
def test_cartpole_learns_within_100k_steps_with_n_step_prioritized_dueling(cartpole_runs):
    """--preset rainbow-lite (3-step targets, prioritized replay, dueling MLP on top of the vector
    preset) solves CartPole-v1 too: greedy mean >= 475 over 10 games after 100k steps."""
    returncode, err, run = cartpole_runs["rainbow-lite"]
    assert returncode == 0, err
    config = json.loads((run / "config.json").read_text())
    assert (config["n_step"], config["prioritized"], config["dueling"]) == (3, True, True)
    assert config["total_timesteps"] <= 100_000 and config["eval_epsilon"] == 0.0
    evals = [r for r in records(run) if "eval_return_mean" in r]
    assert evals[-1]["global_step"] == config["total_timesteps"]
    assert evals[-1]["eval_return_mean"] >= 475, evals


PONG = ["train", "--env-id", "Pong-v5", "--num-envs", 4, "--buffer-size", 2000, "--batch-size", 32,
        "--learning-starts", 800, "--train-frequency", 8, "--target-network-frequency", 400,
        "--exploration-fraction", 1.0, "--no-compile", "--torch-threads", 1, "--eval-episodes", 0,
        "--max-episode-steps", 400, "--log-every", 200, "--no-progress", "--no-cuda"]


def wait_for(predicate, timeout, proc):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("timed out")


# Runs ``fastdqn`` with its checkpoint writer wrapped so that the process SIGKILLs itself right
# after the checkpoint of step ``KILL_STEP`` is on disk: the kill lands at a known step, with no
# race against the run, and nothing test-only lives in fastdqn itself.
KILLED_AFTER_CHECKPOINT = """
import os, signal, sys
import fastdqn.run.trainer
from fastdqn.tools.cli import main

kill_step, argv = int(sys.argv[1]), sys.argv[2:]
save = fastdqn.run.trainer.save_checkpoint

def save_then_die(run_dir, state, buffer=None):
    path = save(run_dir, state, buffer)
    if state["trainer"]["global_step"] == kill_step:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

fastdqn.run.trainer.save_checkpoint = save_then_die
sys.exit(main(argv))
"""


def test_atari_run_is_killed_resumed_and_evaluated(tmp_path):
    run, kill_step, total = tmp_path / "pong", 1600, 2400
    argv = [*PONG, "--total-timesteps", total, "--checkpoint-every", 800, "--save-buffer", "--run-dir", run]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_CHECKPOINT, str(kill_step), *map(str, argv)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # What the run left behind before it was killed.
    assert json.loads((run / "config.json").read_text())["env_id"] == "Pong-v5"
    assert list(run.glob("events.out.tfevents.*"))
    saved = load_checkpoint(run)
    assert saved["trainer"]["global_step"] == kill_step and saved["buffer_file"] == f"replay-{kill_step}.bin"
    # Learning starts after step 800 at one update per 8 env steps.
    updates_before = saved["learner"]["num_updates"]
    assert updates_before == (kill_step - 800) // 8
    logged_before = records(run)
    assert max(r["global_step"] for r in logged_before) == kill_step

    result = subprocess.run(fastdqn("train", "--resume", run, "--no-progress", "--torch-threads", 1),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"resuming at step {kill_step:,}" in result.stdout
    final = load_checkpoint(run)
    assert final["trainer"]["global_step"] == total
    # The resumed run did the remaining steps and updated at the same rate (buffer restored).
    assert final["learner"]["num_updates"] == updates_before + (total - kill_step) // 8 > updates_before
    assert not torch_equal_state(saved["learner"]["online"], final["learner"]["online"])

    logged = records(run)
    train_steps = [r["global_step"] for r in logged if "sps" in r]
    assert train_steps == sorted(set(train_steps)), "a step was logged twice"
    assert train_steps[-1] == total and kill_step in train_steps
    assert [s for s in train_steps if kill_step < s < total], "the resumed run logged nothing"
    for r in logged:  # the epsilon schedule went on from the saved position
        if "sps" in r:
            assert r["epsilon"] == pytest.approx(linear_schedule(1.0, 0.01, total, r["global_step"]))
    assert [r for r in logged if "td_loss" in r and r["global_step"] > kill_step]
    assert len(list(run.glob("events.out.tfevents.*"))) == 2

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in run.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"charts/SPS", "charts/epsilon", "losses/td_loss", "losses/q_values"} <= tags

    evals = []
    for _ in range(2):
        result = subprocess.run(fastdqn("eval", run, "--episodes", 2, "--num-envs", 2, "--json", "--no-cuda"),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        evals.append(json.loads(result.stdout))
    stats = evals[0]
    assert evals[1] == stats, "evaluation of one checkpoint is not reproducible"
    assert stats["episodes"] == 2 and stats["global_step"] == total
    # Two Pong games: whole-point scores; mean and median are the midpoint of min and max and
    # the (population) std is half their distance.
    low, high = stats["min"], stats["max"]
    assert low == int(low) and high == int(high) and -21 <= low <= high <= 21
    assert stats["mean"] == stats["median"] == (low + high) / 2
    assert stats["std"] == pytest.approx((high - low) / 2)


def torch_equal_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_loadable_checkpoint(tmp_path, sig, status):
    run = tmp_path / "pong"
    proc = subprocess.Popen(fastdqn(*PONG, "--total-timesteps", 10**6, "--learning-starts", 10**5,
                                    "--checkpoint-every", 0, "--run-dir", run),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "metrics.jsonl").exists() and records(run), 120, proc)
        assert not (run / "checkpoint.pt").exists()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    assert "checkpoint saved" in out
    step = load_checkpoint(run)["trainer"]["global_step"]
    assert step >= max(r["global_step"] for r in records(run)) > 0
    assert os.path.exists(run / "config.json")


def test_resume_without_saved_buffer_refills_before_learning(tmp_path):
    from fastdqn.tools.cli import main

    run = tmp_path / "cartpole"
    common = ["--no-progress", "--no-cuda", "--torch-threads", 1]
    base = ["train", "--env-id", "CartPole-v1", "--num-envs", 4, "--learning-starts", 400, "--batch-size", 32,
            "--train-frequency", 2, "--target-network-frequency", 64, "--eval-episodes", 0, "--run-dir", run]
    assert main([str(a) for a in base + ["--total-timesteps", 1200, *common]]) == 0
    before = load_checkpoint(run)
    assert before["learner"]["num_updates"] == (1200 - 400) // 2
    assert main([str(a) for a in ["train", "--resume", run, "--total-timesteps", 2000, *common]]) == 0
    after = load_checkpoint(run)
    assert after["trainer"]["global_step"] == 2000
    # The empty buffer refills for learning_starts steps (1200 -> 1600), then 1 update per 2 steps.
    assert after["learner"]["num_updates"] == before["learner"]["num_updates"] + (2000 - 1600) // 2
    assert json.loads((run / "config.json").read_text())["total_timesteps"] == 2000


def test_anneal_lr_ends_at_the_fraction_left_before_the_last_update():
    num_envs, total, starts, freq, lr0 = 3, 600, 100, 4, 1e-3
    config = TrainConfig(env_id="CartPole-v1", total_timesteps=total, num_envs=num_envs, buffer_size=1000,
                         batch_size=16, learning_starts=starts, train_frequency=freq, learning_rate=lr0,
                         anneal_lr=True, target_network_frequency=8, compile=False, eval_episodes=0)
    info = env_info("CartPole-v1")
    learner = Learner(MLP(4, 2), lr=lr0, compile=False, target_update_interval=config.target_update_interval)
    buffer = ReplayBuffer(1000, info.obs_shape, num_envs, obs_dtype=info.obs_dtype, seed=0)
    Trainer(make_envs("CartPole-v1", num_envs, seed=0), buffer, learner, config).train()
    # The README's rule: lr = lr0 * (1 - step / total), with step the count of env steps before
    # the vector step whose updates use it. Updates: one per 4 env steps past learning_starts,
    # remainders carried; find the last vector step that made one.
    carried, last_update_from = 0, None
    for step in range(num_envs, total + 1, num_envs):
        if step > starts:
            carried += num_envs
            if carried >= freq:
                carried %= freq
                last_update_from = step - num_envs
    assert last_update_from is not None and last_update_from > total - 2 * freq
    assert float(learner.optimizer.param_groups[0]["lr"]) == pytest.approx(lr0 * (1 - last_update_from / total),
                                                                          rel=1e-12)


def test_periodic_evaluation_does_not_shift_the_training_run(tmp_path):
    from fastdqn.tools.cli import main

    common = ["--env-id", "CartPole-v1", "--num-envs", 4, "--total-timesteps", 1200, "--learning-starts", 400,
              "--batch-size", 32, "--train-frequency", 2, "--eval-episodes", 2, "--save-buffer",
              "--seed", 3, "--no-progress", "--no-cuda", "--torch-threads", 1]
    plain, evaluated = tmp_path / "plain", tmp_path / "evaluated"
    assert main([str(a) for a in ["train", *common, "--eval-every", 0, "--run-dir", plain]]) == 0
    assert main([str(a) for a in ["train", *common, "--eval-every", 300, "--run-dir", evaluated]]) == 0
    # The second run really evaluated along the way (at 300, 600, 900 and the end).
    assert [r["global_step"] for r in records(evaluated) if "eval_return_mean" in r] == [300, 600, 900, 1200]
    a, b = load_checkpoint(plain), load_checkpoint(evaluated)
    for net in ("online", "target"):
        assert a["learner"][net].keys() == b["learner"][net].keys()
        for k in a["learner"][net]:
            assert torch.equal(a["learner"][net][k], b["learner"][net][k]), (net, k)
    assert a["learner"]["rng"] == b["learner"]["rng"] and a["learner"]["num_updates"] == b["learner"]["num_updates"]
    assert torch.equal(a["trainer"]["torch_rng"], b["trainer"]["torch_rng"])
    # Same buffer contents and sampler state: the next batches drawn are equal, field by field.
    buffers = [ReplayBuffer.load(run / checkpoint["buffer_file"]) for run, checkpoint in ((plain, a), (evaluated, b))]
    assert len(buffers[0]) == len(buffers[1]) > 0
    for _ in range(5):
        x, y = (buf.sample(64) for buf in buffers)
        for field in ("obs", "next_obs", "action", "reward", "terminated"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
