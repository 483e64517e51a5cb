"""DeviceReplayBuffer with its frames on a GPU; every test is marked ``cuda`` and skips
without one (``bench/gpu_check.sh`` runs them). The NumPy ReplayBuffer is the reference:
the same seed and stream must give the same batches bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastdqn import MLP, Learner, ReplayBuffer
from fastdqn.replay import DeviceReplayBuffer
from fastdqn.errors import DeviceMemoryError
from fastdqn.pipeline.feeder import Feeder
from test_device_replay import assert_identical, stream
from test_replay import FakeEnvs

pytestmark = pytest.mark.cuda


def cuda_pair(capacity, shape, num_envs, **kw):
    return (ReplayBuffer(capacity, shape, num_envs, seed=5, **kw),
            DeviceReplayBuffer(capacity, shape, num_envs, device="cuda", seed=5, **kw))


def assert_on_gpu(batch) -> None:
    for name in ("obs", "next_obs", "action", "reward", "terminated", "discount"):
        assert getattr(batch, name).device.type == "cuda", name
    assert isinstance(batch.index, np.ndarray)


@pytest.mark.parametrize("n_step", [1, 3])
def test_stacked_stream_gives_the_numpy_buffers_batches(n_step):
    ref, dev = cuda_pair(60, (4, 3, 4), 3, frame_stack=4, n_step=n_step, gamma=0.9)
    outs = [dev.make_batch(8), dev.make_batch(8)]
    window = (ref.make_batch(8, window=True), dev.make_batch(8, window=True)) if n_step == 1 else None
    for t, kwargs in enumerate(stream(120)):
        ref.add(**kwargs)
        dev.add(**kwargs)
        assert len(dev) == len(ref)
        if len(ref) < 8:
            continue
        got = dev.sample(8, out=outs[t % 2])
        assert_on_gpu(got)
        assert_identical(ref.sample(8), got)
        index = ref.sample(8).index
        dev.sample(8)  # keeps the generators in step
        assert_identical(ref.gather(index), dev.gather(index))
        if window is not None:
            assert_identical(ref.sample(8, out=window[0]), dev.sample(8, out=window[1]))
    torch.cuda.synchronize()


def test_single_float_frames_give_the_numpy_buffers_batches():
    ref, dev = cuda_pair(40, (4,), 2, obs_dtype=np.float32, n_step=2)
    envs = FakeEnvs(2, 1, np.float32)
    rng = np.random.default_rng(4)
    for t in range(60):
        rows = [envs.step(e, ("step", "over", "step", "life", "trunc", "skip")[(t + e) % 6], t % 5 == 0, 0)
                for e in range(2)]
        obs, nxt, term, trunc, valid = (np.array(c) for c in zip(*rows))
        kwargs = dict(obs=obs, next_obs=nxt, action=rng.integers(0, 3, 2), reward=rng.random(2).astype(np.float32),
                      terminated=term, truncated=trunc, valid=valid)
        ref.add(**kwargs)
        dev.add(**kwargs)
        if len(ref) >= 4:
            assert_identical(ref.sample(4), dev.sample(4))


def test_save_load_between_host_and_gpu(tmp_path):
    ref, dev = cuda_pair(60, (4, 3, 4), 3, frame_stack=4)
    for kwargs in stream(70):
        ref.add(**kwargs)
        dev.add(**kwargs)
    ref.save(tmp_path / "host.bin")
    dev.save(tmp_path / "gpu.bin")
    assert (tmp_path / "host.bin").read_bytes() == (tmp_path / "gpu.bin").read_bytes()
    on_gpu = DeviceReplayBuffer.load(tmp_path / "host.bin", device="cuda")
    on_host = ReplayBuffer.load(tmp_path / "gpu.bin")
    for _ in range(3):
        expected = ref.sample(8)
        assert_identical(expected, on_gpu.sample(8))
        assert_identical(expected, on_host.sample(8))


def test_preflight_refuses_frames_larger_than_free_memory():
    free = torch.cuda.mem_get_info()[0]
    capacity = 2 * free // (84 * 84)
    before = torch.cuda.memory_allocated()
    with pytest.raises(DeviceMemoryError, match="--replay-device cpu"):
        DeviceReplayBuffer(capacity, (4, 84, 84), 8, frame_stack=4, device="cuda")
    assert torch.cuda.memory_allocated() == before


@pytest.mark.parametrize("compile", [False, True])
def test_learner_fed_from_gpu_frames_matches_the_cpu_reference(compile):
    """A CUDA learner fed by a Feeder over GPU frames takes the steps a CPU learner takes on
    the same transitions gathered from the NumPy buffer (float tolerance: different kernels).
    Compiled, its CUDA graph reads the feeder's two alternating batches update after update."""
    ref, dev = cuda_pair(400, (4,), 2, obs_dtype=np.float32)
    data = np.random.default_rng(3)
    obs = data.standard_normal((2, 4)).astype(np.float32)
    for _ in range(60):
        nxt = data.standard_normal((2, 4)).astype(np.float32)
        kwargs = dict(obs=obs, next_obs=nxt, action=data.integers(0, 2, 2),
                      reward=data.random(2).astype(np.float32), terminated=data.random(2) < 0.1,
                      truncated=np.zeros(2, bool))
        ref.add(**kwargs)
        dev.add(**kwargs)
        obs = nxt
    learners = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        learners.append(Learner(MLP(4, 2), compile=compile and device == "cuda", device=device,
                                target_update_interval=3, lr=1e-2))
    cpu, gpu = learners
    with Feeder(dev, 16, device="cuda") as feeder:
        for _ in range(8):
            batch = feeder.next()
            assert_on_gpu(batch)
            want = float(cpu.update(ref.gather(batch.index))["td_loss"])
            assert float(gpu.update(batch)["td_loss"]) == pytest.approx(want, rel=1e-4, abs=1e-5)
    for p, q in zip(gpu.online.parameters(), cpu.online.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-4, atol=1e-5)


def test_training_with_gpu_frames_through_the_command_line(tmp_path):
    """auto puts CartPole's frames on the GPU; a resumed run loads its saved buffer there."""
    run = tmp_path / "run"
    common = [sys.executable, "-m", "fastdqn", "train", "--env-id", "CartPole-v1", "--cuda", "--no-compile",
              "--learning-starts", "500", "--log-every", "500", "--eval-episodes", "0", "--no-progress",
              "--save-buffer"]
    first = subprocess.run(common + ["--total-timesteps", "1500", "--run-dir", str(run)],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "frames on the GPU" in first.stdout
    assert json.loads((run / "config.json").read_text())["replay_device"] == "cuda"
    resumed = subprocess.run(common + ["--total-timesteps", "2500", "--resume", str(run),
                                       "--replay-device", "cuda"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "with the saved replay buffer" in resumed.stdout and "frames on the GPU" in resumed.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["td_loss"] for r in records if "td_loss" in r]
    assert len(losses) >= 3 and all(np.isfinite(losses))
