"""The actor without Ray: its Ape-X epsilons, the chunks it returns (against the transitions
it recorded) and the initial priorities it computes with its network (against a TD error
written here in PyTorch); and ``ReplayBuffer.latest_ids``, which puts them on the right rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdqn.replay import ReplayBuffer
from fastdqn.run.actors.env_actor import EnvActor, apex_epsilon
from fastdqn.run.actors.wire import VALID
from fastdqn.run.config import VECTOR, make_config


def test_apex_epsilons_follow_the_paper():
    assert [round(apex_epsilon(i, 3, 0.4, 7), 6) for i in range(3)] == [0.4, round(0.4 ** 4.5, 6), round(0.4 ** 8, 6)]
    assert apex_epsilon(0, 1, 0.3, 7) == 0.3


def test_actor_priorities_are_one_step_td_errors_of_its_network(tmp_path):
    config = make_config(VECTOR, dict(env_id="CartPole-v1", actors=2, num_envs=3, prioritized=True,
                                      actor_priorities=True, actor_chunk_steps=20),
                         cuda_available=False, max_episode_steps=500)
    actor = EnvActor(config.to_dict(), 1, seed=3, record_dir=str(tmp_path))
    chunk = actor.collect([None], -1, 0.5)  # version -1: the actor's own initial weights
    assert chunk.actor == 1 and set(chunk.env_ids.tolist()) == {3, 4, 5}
    with np.load(next(tmp_path.glob("actor1-*.npz"))) as f:
        steps = [{k: f[f"{k}_{i}"] for k in ("obs", "next_obs", "action", "reward", "terminated", "valid")}
                 for i in range(20)]
    obs = torch.from_numpy(np.concatenate([s["obs"] for s in steps]))
    next_obs = torch.from_numpy(np.concatenate([s["next_obs"] for s in steps]))
    action = torch.from_numpy(np.concatenate([s["action"] for s in steps]))
    reward = torch.from_numpy(np.concatenate([s["reward"] for s in steps]))
    done = torch.from_numpy(np.concatenate([s["terminated"] for s in steps])).float()
    valid = np.concatenate([s["valid"] for s in steps])
    with torch.no_grad():
        q = actor.net(obs).gather(1, action[:, None])[:, 0]
        target = reward + config.gamma * actor.net(next_obs).max(1).values * (1 - done)
    expected = (target - q).abs().numpy()
    assert valid.sum() > 50
    np.testing.assert_array_equal((chunk.flags & VALID) != 0, valid)
    np.testing.assert_allclose(chunk.priorities[valid], expected[valid], rtol=1e-5, atol=1e-6)
    actor.envs.close()


def test_latest_ids_name_the_transitions_just_added():
    buffer = ReplayBuffer(64, (2,), 3, obs_dtype=np.float32, prioritized=True, seed=0)
    rng = np.random.default_rng(0)
    for step in range(5):
        obs, nxt = rng.random((3, 2), np.float32), rng.random((3, 2), np.float32)
        action = np.array([step, step + 1, step + 2])
        buffer.add(obs, nxt, action, np.zeros(3, np.float32), np.zeros(3, bool), np.zeros(3, bool))
        got = buffer.gather(buffer.latest_ids([2, 0]))
        np.testing.assert_array_equal(got.obs, obs[[2, 0]])
        np.testing.assert_array_equal(got.action, action[[2, 0]])
    with pytest.raises(ValueError, match="env_ids"):
        buffer.latest_ids([3])
