"""Learner updates per second: compiled against the eager reference, side by side.

Full size is the Nature setting (NatureCNN, uint8 84x84x4 frames, batch 32). Under
``--benchmark-disable`` every case runs once on a small MLP so CI stays fast.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fastdqn import MLP, Learner, NatureCNN

UPDATES_PER_ROUND = 10
NUM_ACTIONS = 6


def _setup(full_size: bool):
    rng = np.random.default_rng(0)
    if full_size:
        size, shape, dtype = 32, (4, 84, 84), np.uint8
        obs = rng.integers(0, 256, (size, *shape), dtype=dtype)
        next_obs = rng.integers(0, 256, (size, *shape), dtype=dtype)
        make = lambda: NatureCNN(NUM_ACTIONS)  # noqa: E731
    else:
        size = 8
        obs = rng.standard_normal((size, 4)).astype(np.float32)
        next_obs = rng.standard_normal((size, 4)).astype(np.float32)
        make = lambda: MLP(4, NUM_ACTIONS, hidden=(16,))  # noqa: E731
    batch = SimpleNamespace(
        obs=obs, next_obs=next_obs,
        action=rng.integers(0, NUM_ACTIONS, size), reward=rng.standard_normal(size).astype(np.float32),
        terminated=rng.random(size) < 0.1,
    )
    return make, batch


def _learner(make, batch, compiled: bool, device: str) -> tuple[Learner, float]:
    torch.manual_seed(0)
    learner = Learner(make(), compile=compiled, device=device, batch_size=len(batch.action),
                      target_update_interval=1000)
    start = time.perf_counter()
    for _ in range(3):  # compiles (and captures the CUDA graph) on the first calls
        learner.update(batch)
    float(learner.update(batch)["td_loss"])
    return learner, time.perf_counter() - start


def _round(learner: Learner, batch) -> None:
    for _ in range(UPDATES_PER_ROUND):
        metrics = learner.update(batch)
    float(metrics["td_loss"])  # waits for the device, so each round times finished work


@pytest.fixture(scope="module")
def cpu_learners(full_size):
    make, batch = _setup(full_size)
    eager, _ = _learner(make, batch, compiled=False, device="cpu")
    compiled, compile_s = _learner(make, batch, compiled=True, device="cpu")
    return SimpleNamespace(eager=eager, compiled=compiled, compile_s=compile_s, batch=batch,
                           full_size=full_size)


def _record(benchmark, network: str, size: int, device: str) -> None:
    benchmark.extra_info.update(network=network, batch_size=size, device=device,
                                updates_per_round=UPDATES_PER_ROUND)
    if benchmark.stats is not None:
        benchmark.extra_info["updates_per_s"] = UPDATES_PER_ROUND / benchmark.stats.stats.median


@pytest.mark.benchmark(group="learner.update")
@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_update_cpu(benchmark, cpu_learners, mode):
    learner = getattr(cpu_learners, mode)
    rounds = []

    def counted_round():
        rounds.append(1)
        _round(learner, cpu_learners.batch)

    before = learner.num_updates
    benchmark.pedantic(counted_round, rounds=8, warmup_rounds=1)
    assert learner.num_updates == before + UPDATES_PER_ROUND * len(rounds) > before
    network = "NatureCNN" if cpu_learners.full_size else "MLP"
    _record(benchmark, network, len(cpu_learners.batch.action), "cpu")
    if mode == "compiled":
        benchmark.extra_info["compile_and_warmup_s"] = cpu_learners.compile_s


@pytest.mark.benchmark(group="learner.update.ratio")
def test_update_cpu_compiled_over_eager(benchmark, cpu_learners):
    """Both learners alternate round by round, so machine noise hits them alike."""
    rates = {"eager": [], "compiled": []}

    def both():
        for mode in ("eager", "compiled"):
            start = time.perf_counter()
            _round(getattr(cpu_learners, mode), cpu_learners.batch)
            rates[mode].append(UPDATES_PER_ROUND / (time.perf_counter() - start))

    benchmark.pedantic(both, rounds=8, warmup_rounds=0)
    eager, compiled = np.median(rates["eager"]), np.median(rates["compiled"])
    # The two learners started alike and made the same updates on the same batch, so the
    # ratio compares equal work: the compiled network is the eager one, to float tolerance
    # (checked on the small MLP; the NatureCNN's reordered float sums drift further over the
    # hundreds of timed Adam steps).
    assert cpu_learners.compiled.num_updates == cpu_learners.eager.num_updates
    assert compiled > 0 and eager > 0
    for a, b in zip(cpu_learners.eager.online.parameters(), cpu_learners.compiled.online.parameters()):
        if not cpu_learners.full_size:
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    benchmark.extra_info.update(eager_updates_per_s=eager, compiled_updates_per_s=compiled,
                                compiled_over_eager=compiled / eager)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.benchmark(group="learner.update.cuda")
@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_update_cuda(benchmark, full_size, mode):
    make, batch = _setup(full_size)
    learner, compile_s = _learner(make, batch, compiled=mode == "compiled", device="cuda")
    benchmark.pedantic(_round, args=(learner, batch), rounds=20, warmup_rounds=2)
    _record(benchmark, "NatureCNN" if full_size else "MLP", len(batch.action), "cuda")
    benchmark.extra_info.update(gpu=torch.cuda.get_device_name(), compile_and_warmup_s=compile_s)
