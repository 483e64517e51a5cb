"""The CUDA path end to end; every test here is marked ``cuda`` and skips without a GPU.

``bench/gpu_check.sh`` runs them (``pytest -m cuda``) the moment a GPU is lent. The CPU
eager learner (``compile=False``) is the reference for the CUDA-graph learner.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fastdqn import MLP, Learner, NatureCNN
from frame_batches import frame_batch

pytestmark = pytest.mark.cuda

CONFIG = dict(lr=1e-2, gamma=0.9, loss="huber", max_grad_norm=0.5)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return MLP(4, 3, hidden=(16, 16))


def _batch(rng, size=8):
    return SimpleNamespace(
        obs=rng.standard_normal((size, 4)).astype(np.float32),
        next_obs=rng.standard_normal((size, 4)).astype(np.float32),
        action=rng.integers(0, 3, size).astype(np.int64),
        reward=(5.0 * rng.standard_normal(size)).astype(np.float32),
        terminated=rng.random(size) < 0.3,
    )


def test_cuda_graph_copies_the_target_every_c_updates():
    learner = Learner(_mlp(), compile=True, device="cuda", target_update_interval=3, **CONFIG)
    rng = np.random.default_rng(1)
    for n in range(1, 10):
        learner.update(_batch(rng))
        same = all(torch.equal(t, o) for t, o in zip(learner.target.parameters(), learner.online.parameters()))
        assert same == (n % 3 == 0), f"update {n}"


def test_cuda_graph_replays_without_recompiling_across_lr_changes():
    learner = Learner(_mlp(), compile=True, device="cuda", target_update_interval=100, **CONFIG)
    rng = np.random.default_rng(2)
    learner.update(_batch(rng))  # compiles and captures
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(5):
            learner.set_lr(CONFIG["lr"] / (i + 2))
            learner.update(_batch(rng))


def test_cuda_graph_follows_an_lr_change_like_the_cpu_reference():
    rng = np.random.default_rng(3)
    batches = [_batch(rng) for _ in range(4)]
    cpu = Learner(_mlp(), compile=False, target_update_interval=100, **CONFIG)
    gpu = Learner(_mlp(), compile=True, device="cuda", target_update_interval=100, **CONFIG)
    for i, batch in enumerate(batches):
        for learner in (cpu, gpu):
            learner.set_lr(CONFIG["lr"] * (1.0 - 0.2 * i))
            learner.update(batch)
    for p, q in zip(gpu.online.parameters(), cpu.online.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-4, atol=1e-5)


def test_cuda_checkpoint_round_trip_continues_exactly():
    rng = np.random.default_rng(4)
    batches = [_batch(rng) for _ in range(6)]
    first = Learner(_mlp(), compile=True, device="cuda", target_update_interval=2, **CONFIG)
    for batch in batches[:3]:
        first.update(batch)
    resumed = Learner(_mlp(seed=9), compile=True, device="cuda", target_update_interval=2, **CONFIG)
    resumed.load_state_dict(first.state_dict())
    for batch in batches[3:]:
        a, b = first.update(batch), resumed.update(batch)
        assert float(a["td_loss"]) == pytest.approx(float(b["td_loss"]), rel=1e-6, abs=1e-7)
    for p, q in zip(first.online.parameters(), resumed.online.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert resumed.num_updates == first.num_updates == 6


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32 (10-bit mantissa); compare in full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_cuda_graph_nature_cnn_equals_cpu_eager(no_tf32):
    torch.manual_seed(0)
    net = NatureCNN(num_actions=4)
    config = dict(lr=1e-3, adam_eps=3e-4, target_update_interval=2)
    cpu = Learner(NatureCNN(num_actions=4), compile=False, **config)
    cpu.online.load_state_dict(net.state_dict())
    cpu.sync_target()
    gpu = Learner(net, compile=True, device="cuda", **config)
    rng = np.random.default_rng(5)
    for _ in range(4):
        batch = frame_batch(rng, 32, terminated=rng.random(32) < 0.1)
        lc, lg = cpu.update(batch), gpu.update(batch)
        assert float(lg["td_loss"]) == pytest.approx(float(lc["td_loss"]), rel=1e-3, abs=1e-5)
    for p, q in zip(gpu.online.parameters(), cpu.online.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-3, atol=1e-4)


def test_cuda_training_run_through_the_command_line(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "fastdqn", "train", "--env-id", "CartPole-v1", "--cuda", "--compile",
         "--total-timesteps", "4000", "--learning-starts", "1000", "--log-every", "1000",
         "--eval-episodes", "2", "--no-progress", "--run-dir", str(run)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "device cuda" in done.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["td_loss"] for r in records if "td_loss" in r]
    assert losses and all(np.isfinite(losses))
    assert (run / "checkpoint.pt").is_file()
