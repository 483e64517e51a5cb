"""make_envs passes every option to EnvPool explicitly; env_info reads the registry."""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn.run.config import ATARI, VECTOR
from fastdqn.run.envs import env_info, make_envs
from fastdqn.errors import ConfigError


def test_env_info_by_kind():
    pong = env_info("Pong-v5")
    assert (pong.kind, pong.obs_shape, pong.obs_dtype, pong.num_actions, pong.frame_stack) == \
        (ATARI, (4, 84, 84), np.uint8, 6, 4)
    cart = env_info("CartPole-v1")
    assert (cart.kind, cart.obs_shape, cart.obs_dtype, cart.num_actions, cart.max_episode_steps) == \
        (VECTOR, (4,), np.float32, 2, 500)


def test_unknown_id_suggests_close_ones():
    with pytest.raises(ConfigError, match="Breakout-v5"):
        env_info("Breakout-v4x")
    with pytest.raises(ConfigError, match="discrete actions"):
        env_info("Pendulum-v1")


def test_atari_options_are_explicit():
    envs = make_envs("Pong-v5", 2, seed=5, episodic_life=False, sticky_actions=0.25, max_episode_steps=100)
    c = envs.config
    assert (c["num_envs"], c["batch_size"], c["seed"]) == (2, 2, 5)
    assert (c["episodic_life"], c["reward_clip"], c["repeat_action_probability"]) == (False, False, 0.25)
    assert (c["max_episode_steps"], c["stack_num"], c["frame_skip"], c["noop_max"]) == (100, 4, 4, 30)
    train = make_envs("Pong-v5", 4, seed=5, async_envs=True, batch_size=2).config
    assert (train["episodic_life"], train["num_envs"], train["batch_size"]) == (True, 4, 2)
    envs.close()


def test_classic_control_takes_no_atari_options():
    envs = make_envs("CartPole-v1", 3, seed=0)
    assert envs.config["max_episode_steps"] == 500
    obs, info = envs.reset()
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    with pytest.raises(ConfigError, match="--sticky-actions"):
        make_envs("CartPole-v1", 3, seed=0, sticky_actions=0.25)


def test_task_envpool_cannot_load_is_a_config_error(monkeypatch):
    import envpool

    def make_spec(env_id, **kwargs):
        raise ImportError("EnvPool Procgen requires the system Qt 5 runtime on Linux")

    monkeypatch.setattr(envpool, "make_spec", make_spec)
    with pytest.raises(ConfigError, match="EnvPool cannot load 'CartPole-v1' on this machine: .*Qt 5"):
        env_info("CartPole-v1")


def test_derived_env_seed_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match=r"seed: expected an int in \[0, 2147483647\], got 2147483648"):
        make_envs("CartPole-v1", 2, seed=2**31)
