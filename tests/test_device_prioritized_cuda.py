"""DevicePrioritizedReplayBuffer with its frames on a GPU; every test is marked ``cuda``
and skips without one (``bench/gpu_check.sh`` runs them). The host PrioritizedReplayBuffer
is the reference: the same seed, stream and priority updates must give the same batches
bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastdqn.replay import DevicePrioritizedReplayBuffer
from fastdqn.replay import PrioritizedReplayBuffer
from test_device_prioritized import assert_identical
from test_device_replay import stream

pytestmark = pytest.mark.cuda


def cuda_pair(**kw):
    return (PrioritizedReplayBuffer(60, (4, 3, 4), 3, frame_stack=4, seed=5, **kw),
            DevicePrioritizedReplayBuffer(60, (4, 3, 4), 3, frame_stack=4, seed=5, device="cuda", **kw))


@pytest.mark.parametrize("n_step", [1, 3])
def test_stacked_stream_gives_the_host_buffers_batches(tmp_path, n_step):
    ref, dev = cuda_pair(n_step=n_step, gamma=0.9, alpha=0.6)
    outs = [dev.make_batch(8), dev.make_batch(8)]
    rng = np.random.default_rng(0)
    for t, kwargs in enumerate(stream(120)):
        ref.add(**kwargs)
        dev.add(**kwargs)
        if len(ref) < 8:
            continue
        got = dev.sample(8, out=outs[t % 2], beta=0.5)
        assert got.weight.device.type == got.obs.device.type == "cuda"
        assert isinstance(got.index, np.ndarray)
        expected = ref.sample(8, beta=0.5)
        assert_identical(expected, got)
        assert_identical(ref.gather(expected.index), dev.gather(expected.index))
        priorities = rng.exponential(size=8)
        ref.update_priorities(expected.index, priorities)
        dev.update_priorities(got.index, priorities)
    dev.save(tmp_path / "dev.bin")
    loaded = PrioritizedReplayBuffer.load(tmp_path / "dev.bin")
    back = DevicePrioritizedReplayBuffer.load(tmp_path / "dev.bin", device="cuda")
    for _ in range(3):
        expected = ref.sample(8, beta=0.9)
        assert_identical(expected, loaded.sample(8, beta=0.9))
        assert_identical(expected, back.sample(8, beta=0.9))
    torch.cuda.synchronize()


def test_prioritized_training_with_gpu_frames_through_the_command_line(tmp_path):
    """--replay-device cuda with --prioritized trains end to end (one short run: the
    save/load paths are checked above, and gpu_check.sh gives all CUDA tests one budget)."""
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "fastdqn", "train", "--env-id", "CartPole-v1", "--cuda",
                           "--no-compile", "--prioritized", "--n-step", "3", "--replay-device", "cuda",
                           "--learning-starts", "500", "--log-every", "250", "--eval-episodes", "0",
                           "--no-progress", "--total-timesteps", "1000", "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "frames on the GPU" in done.stdout
    assert json.loads((run / "config.json").read_text())["replay_device"] == "cuda"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["td_loss"] for r in records if "td_loss" in r]
    assert len(losses) >= 2 and all(np.isfinite(losses))
