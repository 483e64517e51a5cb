"""SB3 adapter: pickling writes only the filled part of the buffer, and
``optimize_memory_usage=True`` keeps working with SB3's ``DQN`` and CleanRL's call pattern."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402

from fastdqn.integrations.sb3 import SB3ReplayBuffer  # noqa: E402

STACK = (4, 16, 16)


def filled_buffer(capacity, rows, n_envs=2, seed=0):
    buf = SB3ReplayBuffer(capacity, spaces.Box(0, 255, STACK, np.uint8), spaces.Discrete(4), device="cpu",
                          n_envs=n_envs, seed=seed, optimize_memory_usage=True, handle_timeout_termination=False,
                          frame_stack=4)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (rows + 4, n_envs, 16, 16), dtype=np.uint8)
    for t in range(rows):
        obs = frames[t:t + 4].transpose(1, 0, 2, 3)
        nxt = frames[t + 1:t + 5].transpose(1, 0, 2, 3)
        done = rng.random(n_envs) < 0.02
        buf.add(obs, nxt, rng.integers(0, 4, n_envs), rng.random(n_envs).astype(np.float32), done,
                {"episode": None})  # CleanRL hands a dict of infos
    return buf


def samples(buf, n=3):
    return [{k: v.numpy().copy() for k, v in buf.sample(32)._asdict().items() if v is not None} for _ in range(n)]


@pytest.mark.parametrize("protocol", [pickle.HIGHEST_PROTOCOL, 4])
def test_pickling_writes_only_the_filled_part(protocol):
    buf = filled_buffer(100_000, rows=500)
    blob = pickle.dumps(buf, protocol=protocol)
    # 1,000 transitions of 256-byte frames and their slots, not the 100,000-slot rings.
    assert len(blob) < 0.03 * buf.nbytes and len(blob) < 600_000, (len(blob), buf.nbytes)
    loaded = pickle.loads(blob)
    assert (len(loaded), loaded.pos, loaded.full) == (len(buf), buf.pos, buf.full)
    for want, got in zip(samples(buf), samples(loaded)):
        for field in want:
            assert np.array_equal(want[field], got[field]), field


def test_a_wrapped_buffer_still_round_trips_whole():
    buf = filled_buffer(600, rows=700)
    assert buf.full
    loaded = pickle.loads(pickle.dumps(buf, protocol=pickle.HIGHEST_PROTOCOL))
    for want, got in zip(samples(buf), samples(loaded)):
        for field in want:
            assert np.array_equal(want[field], got[field]), field
    loaded.add(*(np.zeros((2,) + STACK, np.uint8),) * 2, np.zeros(2, np.int64), np.zeros(2, np.float32),
               np.zeros(2, bool), {})  # and takes adds on


def test_sb3_dqn_with_optimize_memory_usage_learns_twice():
    env = gym.make("CartPole-v1")
    model = DQN("MlpPolicy", env, buffer_size=2000, learning_starts=100, batch_size=32, train_freq=4,
                replay_buffer_class=SB3ReplayBuffer, optimize_memory_usage=True,
                replay_buffer_kwargs=dict(handle_timeout_termination=False), device="cpu", seed=0)
    model.learn(total_timesteps=300)
    first = len(model.replay_buffer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns that it truncates the last trajectory
        model.learn(total_timesteps=300)  # reset_num_timesteps=True: SB3 writes dones[pos] = True
    assert isinstance(model.replay_buffer, SB3ReplayBuffer)
    assert len(model.replay_buffer) > first >= 300
    env.close()
