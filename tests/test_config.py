"""TrainConfig: presets by kind of env, validation, the epsilon schedule and unit conversion."""

from __future__ import annotations

import dataclasses

import pytest

from fastdqn.run.config import ATARI, RAINBOW_LITE, VECTOR, TrainConfig, linear_schedule, make_config
from fastdqn.errors import ConfigError


def test_atari_preset_is_cleanrl_dqn_atari():
    c = make_config(ATARI, {}, cuda_available=False, max_episode_steps=27_000)
    assert (c.env_id, c.total_timesteps, c.buffer_size, c.learning_rate, c.batch_size) == \
        ("Breakout-v5", 10_000_000, 1_000_000, 1e-4, 32)
    assert (c.learning_starts, c.train_frequency, c.target_network_frequency) == (80_000, 4, 1000)
    assert (c.start_e, c.end_e, c.exploration_fraction, c.gamma) == (1.0, 0.01, 0.10, 0.99)
    assert c.target_update_interval == 250  # 1,000 env steps / 4 env steps per update
    assert c.max_episode_steps == 27_000 and c.cuda is False


def test_vector_preset_and_overrides():
    c = make_config(VECTOR, {"learning_rate": 5e-4, "seed": None, "cuda": None}, cuda_available=True,
                    max_episode_steps=500)
    assert c.learning_rate == 5e-4 and c.seed == 1  # None means "not given"
    assert c.cuda is True and c.device == "cuda"
    assert c.compile is False and c.total_timesteps <= 100_000
    assert c.max_episode_steps == 500


def test_async_batch_defaults_to_half_the_envs():
    c = make_config(VECTOR, {"async_envs": True, "num_envs": 8}, cuda_available=False, max_episode_steps=500)
    assert c.env_batch == 4
    assert make_config(VECTOR, {"num_envs": 8}, cuda_available=False, max_episode_steps=500).env_batch == 8


def test_frozen_and_roundtrip():
    c = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 3
    d = dataclasses.replace(c, hidden=(32, 16)).to_dict()
    assert TrainConfig.from_dict(d) == dataclasses.replace(c, hidden=(32, 16))
    with pytest.raises(ConfigError, match="unknown fields"):
        TrainConfig.from_dict({**d, "colour": "red"})


@pytest.mark.parametrize("field, value", [
    ("total_timesteps", 0), ("num_envs", -1), ("buffer_size", 0), ("batch_size", 0),
    ("train_frequency", 0), ("learning_rate", 0.0), ("learning_rate", float("nan")),
    ("gamma", 1.01), ("start_e", -0.1), ("exploration_fraction", 0.0), ("sticky_actions", 1.5),
    ("loss", "l1"), ("hidden", ()), ("learning_starts", -1), ("seed", -1), ("total_timesteps", 1.5),
])
def test_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        TrainConfig(**{field: value})


def test_rejects_contradictions():
    with pytest.raises(ConfigError, match="--batch-size"):
        TrainConfig(batch_size=64, buffer_size=32, learning_starts=64)
    with pytest.raises(ConfigError, match="--learning-starts"):
        TrainConfig(batch_size=64, learning_starts=63)
    with pytest.raises(ConfigError, match="multiple"):
        TrainConfig(target_network_frequency=1002, train_frequency=4)
    with pytest.raises(ConfigError, match="--env-batch-size"):
        TrainConfig(async_envs=True, num_envs=4, env_batch_size=4)


def test_linear_schedule_matches_cleanrl():
    # CleanRL: slope = (end - start) / duration; max(slope * t + start, end)
    for t, expected in [(0, 1.0), (500, 0.505), (1000, 0.01), (5000, 0.01)]:
        assert linear_schedule(1.0, 0.01, 1000, t) == pytest.approx(expected)
    assert linear_schedule(1.0, 1.0, 1000, 10) == 1.0


def test_rainbow_lite_preset_on_top_of_each_kind_and_flags_win():
    atari = make_config(ATARI, {}, cuda_available=False, max_episode_steps=27_000, preset=RAINBOW_LITE)
    assert (atari.n_step, atari.prioritized, atari.dueling) == (3, True, True)
    assert (atari.per_alpha, atari.per_beta_start, atari.per_beta_end) == (0.5, 0.4, 1.0)
    assert (atari.learning_rate, atari.adam_eps) == (6.25e-5, 1.5e-4)
    assert (atari.buffer_size, atari.target_network_frequency) == (1_000_000, 1000)  # CleanRL's stay
    vector = make_config(VECTOR, {"n_step": 5}, cuda_available=False, max_episode_steps=500, preset=RAINBOW_LITE)
    plain = make_config(VECTOR, {}, cuda_available=False, max_episode_steps=500)
    assert (vector.n_step, vector.prioritized, vector.dueling) == (5, True, True)
    assert (vector.learning_rate, vector.adam_eps) == (plain.learning_rate, plain.adam_eps)
    assert (plain.n_step, plain.prioritized, plain.dueling, plain.adam_eps) == (1, False, False, 1e-8)
    with pytest.raises(ConfigError, match="--preset: expected one of"):
        make_config(VECTOR, {}, cuda_available=False, max_episode_steps=500, preset="rainbow")


def test_prioritized_frames_may_live_on_the_gpu():
    assert TrainConfig(cuda=True, replay_device="cuda", prioritized=True).replay_device == "cuda"
    assert TrainConfig(cuda=True, replay_device="auto", prioritized=True).prioritized
    with pytest.raises(ConfigError, match="--replay-device cuda: the learner runs on the CPU"):
        TrainConfig(cuda=False, replay_device="cuda", prioritized=True)


@pytest.mark.parametrize("field, value, message", [
    ("n_step", 0, "--n-step: expected an int >= 1, got 0"),
    ("n_step", 2.0, "--n-step: expected an int >= 1, got 2.0"),
    ("per_alpha", float("inf"), "--per-alpha: expected a finite number >= 0, got inf"),
    ("per_beta_start", -0.1, "--per-beta-start: expected a finite number in [0, 1], got -0.1"),
    ("per_beta_end", True, "--per-beta-end: expected a finite number in [0, 1], got True"),
    ("per_eps", 0.0, "--per-eps: expected a finite number > 0, got 0.0"),
    ("adam_eps", "1e-8", "--adam-eps: expected a finite number > 0, got '1e-8'"),
    ("prioritized", 1, "--prioritized: expected True or False, got 1"),
])
def test_replay_option_errors_name_the_flag(field, value, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value})
    assert str(err.value) == message
