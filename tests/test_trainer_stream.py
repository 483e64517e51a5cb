"""What the trainer stores, held to what EnvPool returned.

The envs are wrapped in a recorder that keeps every ``recv()`` (observations, rewards,
terminations, truncations, env ids, elapsed steps) and every ``send()``; after a short
CartPole run every stored transition must be one reconstructed from that record by the plain
NumPy below, and every reconstructed one must be stored. Async EnvPool returns envs in any
order, so a trainer that maps rows to the wrong envs fails here (shown on a mis-mapped copy).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn.learn.learner import Learner
from fastdqn.learn.networks import MLP
from fastdqn.replay import ReplayBuffer
from fastdqn.run import trainer as trainer_module
from fastdqn.run.config import TrainConfig
from fastdqn.run.envs import env_info, make_envs
from fastdqn.run.envpool_rows import EnvPoolRows
from fastdqn.run.trainer import Trainer

TOTAL = 300


class Recorder:
    """EnvPool envs that keep a copy of what ``recv()`` returned and what ``send()`` got."""

    def __init__(self, envs):
        self.envs, self.events = envs, []

    def async_reset(self):
        self.envs.async_reset()

    def recv(self):
        obs, reward, terminated, truncated, info = self.envs.recv()
        self.events.append(("recv", obs.copy(), reward.copy(), terminated.copy(), truncated.copy(),
                            info["env_id"].copy(), info["elapsed_step"].copy()))
        return obs, reward, terminated, truncated, info

    def send(self, actions, env_ids):
        self.events.append(("send", np.array(actions).copy(), np.array(env_ids).copy()))
        self.envs.send(actions, env_ids)

    def __getattr__(self, name):
        return getattr(self.envs, name)


def reconstruct(events, num_envs: int) -> list[tuple]:
    """Transitions from the record: a row of env e at elapsed step > 0 goes from e's previous
    observation, under the action e was sent last, to the row's observation; rewards as signs."""
    last_obs, last_action = [None] * num_envs, [None] * num_envs
    out = []
    for event in events:
        if event[0] == "send":
            for a, e in zip(event[1], event[2]):
                last_action[int(e)] = int(a)
            continue
        _, obs, reward, terminated, truncated, ids, elapsed = event
        for j, e in enumerate(ids.tolist()):
            if elapsed[j] != 0:
                out.append((last_obs[e].tobytes(), last_action[e], obs[j].tobytes(),
                            float(np.sign(reward[j])), bool(terminated[j])))
            last_obs[e] = obs[j]
    return out


def stored(buffer) -> set:
    """Every transition the buffer holds, found by sampling it 20 times over (a given one is
    missed with probability e**-20)."""
    seen = set()
    for _ in range(20):
        batch = buffer.sample(len(buffer))
        for i in range(len(buffer)):
            seen.add((batch.obs[i].tobytes(), int(batch.action[i]), batch.next_obs[i].tobytes(),
                      float(batch.reward[i]), bool(batch.terminated[i])))
    return seen


def run(async_envs: bool, num_envs: int = 6, env_batch: int = 3):
    info = env_info("CartPole-v1")
    config = TrainConfig(env_id="CartPole-v1", total_timesteps=TOTAL, num_envs=num_envs, buffer_size=4 * TOTAL,
                         batch_size=16, learning_starts=100, train_frequency=4, target_network_frequency=8,
                         compile=False, prefetch=False, eval_episodes=0, async_envs=async_envs,
                         env_batch_size=env_batch if async_envs else 0)
    envs = Recorder(make_envs("CartPole-v1", num_envs, seed=0, async_envs=async_envs, batch_size=env_batch))
    buffer = ReplayBuffer(4 * TOTAL, info.obs_shape, num_envs, obs_dtype=info.obs_dtype, seed=0)
    learner = Learner(MLP(4, 2), compile=False, target_update_interval=config.target_update_interval)
    Trainer(envs, buffer, learner, config).train()
    return envs.events, buffer, num_envs


def check(events, buffer, num_envs) -> tuple[set, set]:
    """(stored but not in the record, in the record but not stored)."""
    expected = reconstruct(events, num_envs)
    assert len(expected) == len(set(expected))  # CartPole's float observations never repeat
    got = stored(buffer)
    return got - set(expected), set(expected) - got


@pytest.mark.parametrize("async_envs", [False, True], ids=["sync", "async"])
def test_every_stored_transition_is_one_envpool_returned(async_envs):
    events, buffer, num_envs = run(async_envs)
    recv_ids = [e[5] for e in events if e[0] == "recv"]
    if async_envs:  # the record really has partial batches of varying envs
        assert all(len(ids) == 3 for ids in recv_ids)
        assert len({tuple(ids) for ids in recv_ids}) > 1
    assert any(e[3].any() for e in events if e[0] == "recv")  # episodes ended in the run
    extra, missing = check(events, buffer, num_envs)
    assert not extra and not missing
    assert len(buffer) == len(reconstruct(events, num_envs))


class PositionalRows(EnvPoolRows):
    """A mis-mapped copy: takes row j for env j, as if ``recv()`` always returned every env in
    order (true in sync mode only)."""

    def received(self, next_obs, reward, terminated, truncated, info):
        return super().received(next_obs, reward, terminated, truncated,
                                dict(info, env_id=np.arange(len(info["env_id"]))))


@pytest.mark.slow  # two more training runs
def test_rows_mapped_to_the_wrong_envs_are_caught(monkeypatch):
    monkeypatch.setattr(trainer_module, "EnvPoolRows", PositionalRows)
    extra, missing = check(*run(async_envs=True))
    assert extra and missing
    extra, missing = check(*run(async_envs=False))  # the same bug is invisible in sync mode
    assert not extra and not missing
