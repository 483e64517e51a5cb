"""EnvPool stepping: the ceiling of every loop that fastdqn runs.

Group ``env.step``: random-action steps of 8 Breakout-v5 envs, through ``envpool.make`` with
EnvPool's own defaults (the plain baseline), through ``fastdqn.run.envs.make_envs`` (the
settings the trainer uses) in sync mode, and in async mode (batches of 4).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn.run.envs import make_envs
from benchutil import record_rate

NUM_ENVS = 8


@pytest.fixture(scope="module")
def steps(full_size) -> int:
    return 200 if full_size else 3


@pytest.fixture(scope="module")
def actions(steps) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4, size=(steps, NUM_ENVS))


def run_sync(benchmark, envs, actions) -> None:
    obs, _ = envs.reset()

    def run():
        for a in actions:
            envs.step(a)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    record_rate(benchmark, actions.size, "env_steps_per_s", nbytes=len(actions) * obs.nbytes)
    assert obs.shape == (NUM_ENVS, 4, 84, 84) and obs.dtype == np.uint8


@pytest.mark.benchmark(group="env.step")
def test_envpool_defaults_sync(benchmark, actions):
    import envpool

    envs = envpool.make("Breakout-v5", env_type="gymnasium", num_envs=NUM_ENVS, batch_size=NUM_ENVS, seed=0)
    run_sync(benchmark, envs, actions)


@pytest.mark.benchmark(group="env.step")
def test_make_envs_sync(benchmark, actions):
    run_sync(benchmark, make_envs("Breakout-v5", NUM_ENVS, seed=0), actions)


@pytest.mark.benchmark(group="env.step")
def test_make_envs_async(benchmark, actions):
    batch = NUM_ENVS // 2
    envs = make_envs("Breakout-v5", NUM_ENVS, seed=0, async_envs=True, batch_size=batch)
    envs.async_reset()
    seen = set()

    def run():
        for a in actions:
            info = envs.recv()[-1]
            ids = info["env_id"].tolist()
            assert len(set(ids)) == len(ids) == batch  # one row per env, batch rows per recv
            seen.update(ids)
            envs.send(a[:batch], info["env_id"])

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    record_rate(benchmark, len(actions) * batch, "env_steps_per_s")
    # Every env gets stepped. Async mode hands back whichever envs finish first, so on a
    # loaded machine a short timed run can miss one; step on (a bounded number of times)
    # until each has come back.
    for _ in range(100 * NUM_ENVS):
        if seen == set(range(NUM_ENVS)):
            break
        info = envs.recv()[-1]
        seen.update(info["env_id"].tolist())
        envs.send(actions[0][:batch], info["env_id"])
    assert seen == set(range(NUM_ENVS))
