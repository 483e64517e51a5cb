"""Recorded Atari streams as Stable-Baselines3 feeds them to a replay buffer.

Shared by the integration tests and ``bench/bench_sb3.py``: both compare what buffers return
with what was added, so both need the same stream. Needs the ``sb3`` extra.
"""

from __future__ import annotations

import numpy as np


def atari_vec_env(env_id: str, n_envs: int, seed: int, max_frames: int | None = None):
    """What SB3's DQN steps on Atari: ``make_atari_env`` + ``VecFrameStack(4)``, transposed to
    ``(4, 84, 84)`` as DQN does itself. ``max_frames`` caps an episode in emulator frames
    (4 per agent step), so truncations happen."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)
    env_kwargs = {} if max_frames is None else {"max_episode_steps": max_frames}
    env = make_atari_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    return VecTransposeImage(VecFrameStack(env, n_stack=4))


def record_sb3_stream(env, actions: np.ndarray) -> list[dict]:
    """Step ``env`` with ``actions`` (T, n_envs); one dict of ``add`` arguments per step, as
    SB3's ``_store_transition`` passes them: ``infos[i]["terminal_observation"]`` replaces the
    auto-reset observation in ``next_obs`` for done envs."""
    obs = env.reset()
    stream = []
    for action in actions:
        new_obs, reward, done, infos = env.step(action)
        next_obs = new_obs.copy()
        for i in np.flatnonzero(done):
            next_obs[i] = infos[i]["terminal_observation"]
        stream.append(dict(obs=obs.copy(), next_obs=next_obs, action=action, reward=reward.astype(np.float32),
                           done=done.copy(), infos=[dict(info) for info in infos]))
        obs = new_obs
    return stream
