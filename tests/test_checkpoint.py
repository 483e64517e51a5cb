"""Atomic checkpoint files: a failed or interrupted write leaves the previous one loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fastdqn.atomic import atomic_write
from fastdqn.checkpoint import CHECKPOINT_NAME, buffer_path, load_checkpoint, save_checkpoint
from fastdqn.errors import CheckpointError
from fastdqn.replay import ReplayBuffer

from checkpoint_doc import document


def state(step):
    return document(step, learner={"w": torch.arange(4.0) + step})


def test_roundtrip(tmp_path):
    save_checkpoint(tmp_path, state(7))
    loaded = load_checkpoint(tmp_path)  # a run folder resolves to its checkpoint.pt
    assert loaded["trainer"]["global_step"] == 7
    assert torch.equal(loaded["learner"]["w"], torch.tensor([7.0, 8.0, 9.0, 10.0]))
    assert buffer_path(loaded) is None
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_failed_write_keeps_previous_and_leaves_no_temp_file(tmp_path):
    save_checkpoint(tmp_path, state(1))

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / CHECKPOINT_NAME, broken)
    assert load_checkpoint(tmp_path)["trainer"]["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_kill_during_writes_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process that rewrites a large checkpoint in a loop; the file must load."""
    code = (
        "import sys, torch; from fastdqn.checkpoint import save_checkpoint\n"
        "from checkpoint_doc import document\n"
        "step = 0\n"
        "while True:\n"
        "    step += 1\n"
        "    save_checkpoint(sys.argv[1], document(step, {'w': torch.full((2_000_000,), float(step))}))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env)
    try:
        deadline = time.time() + 60
        while not (tmp_path / CHECKPOINT_NAME).exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    loaded = load_checkpoint(tmp_path)
    step = loaded["trainer"]["global_step"]
    assert step >= 1 and torch.all(loaded["learner"]["w"] == step)
    save_checkpoint(tmp_path, state(step + 1))  # the next save clears a torn temporary file
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_ours"])
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    path = save_checkpoint(tmp_path, state(3))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(os.urandom(1000))
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no file"):
        load_checkpoint(tmp_path)


def test_buffer_file_is_written_first_and_old_ones_removed(tmp_path):
    buf = ReplayBuffer(64, (3,), 2, obs_dtype=np.float32, seed=0)
    obs = np.arange(6, dtype=np.float32).reshape(2, 3)
    buf.add(obs=obs, next_obs=obs + 1, action=np.array([0, 1]), reward=np.array([1.0, -1.0], np.float32),
            terminated=np.zeros(2, bool), truncated=np.zeros(2, bool))
    save_checkpoint(tmp_path, state(10), buffer=buf)
    save_checkpoint(tmp_path, state(20), buffer=buf)
    loaded = load_checkpoint(tmp_path)
    path = buffer_path(loaded)
    assert path.name == "replay-20.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, "replay-20.bin"]
    restored = ReplayBuffer.load(path)
    assert len(restored) == 2
    pairs = set()
    for _ in range(50):
        got = restored.sample(1)
        pairs.add((got.obs[0, 0].item(), got.next_obs[0, 0].item(), got.reward[0].item()))
    assert pairs == {(0.0, 1.0, 1.0), (3.0, 4.0, -1.0)}
    path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        buffer_path(load_checkpoint(tmp_path))
