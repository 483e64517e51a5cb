"""evaluate(): each env plays a fixed quota of games, counted by hand on scripted envs."""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn.run.evaluate import evaluate, score_stats


class ScriptedEnvs:
    """Sync envs in EnvPool's shape: env i's games last ``lengths[i]`` steps and pay
    ``rewards[i]`` per step; a game's last step is ``terminated`` (EnvPool resets on the next)."""

    def __init__(self, lengths, rewards):
        self.lengths, self.rewards = np.asarray(lengths), np.asarray(rewards, np.float64)
        self.t = np.zeros(len(lengths), np.int64)

    def reset(self):
        self.t[:] = 0
        return np.zeros((len(self.t), 4), np.float32), {}

    def step(self, actions):
        assert len(actions) == len(self.t)
        self.t += 1
        ended = self.t == self.lengths
        reward = self.rewards.copy()
        self.t[ended] = 0
        info = {"env_id": np.arange(len(self.t))}
        return np.zeros((len(self.t), 4), np.float32), reward, ended, np.zeros_like(ended), info


class ZeroActions:
    def act(self, obs, epsilon, rng=None):
        return np.zeros(len(obs), np.int64)


def test_each_env_plays_its_quota_of_games():
    # Env 0: games of 2 steps worth 2; env 1: games of 5 steps worth 50. Five games over two
    # envs: quotas 3 and 2. By hand: env 0 ends games at steps 2, 4, 6 (counted), 8, 10
    # (over quota); env 1 at steps 5, 10 (counted). Taking the first five games to end
    # instead would count four short games and one long one.
    envs = ScriptedEnvs(lengths=[2, 5], rewards=[1.0, 10.0])
    scores = evaluate(ZeroActions(), envs, 5, 0.0, np.random.default_rng(0))
    assert sorted(scores.tolist()) == [2.0, 2.0, 2.0, 50.0, 50.0]
    stats = score_stats(scores)
    assert stats["episodes"] == 5 and stats["mean"] == pytest.approx(106 / 5)
    assert stats["median"] == 2.0 and stats["min"] == 2.0 and stats["max"] == 50.0


def test_fewer_games_than_envs():
    envs = ScriptedEnvs(lengths=[3, 1, 4], rewards=[1.0, 1.0, 1.0])
    scores = evaluate(ZeroActions(), envs, 2, 0.0, np.random.default_rng(0))
    assert sorted(scores.tolist()) == [1.0, 3.0]  # env 2 has quota 0


def test_episodes_must_be_positive():
    with pytest.raises(ValueError, match="episodes"):
        evaluate(ZeroActions(), ScriptedEnvs([1], [1.0]), 0, 0.0, np.random.default_rng(0))


def test_the_mean_interval_matches_the_binomial_reference():
    """Scores of 0 and 10, half each, over 30 games: the bootstrap mean is 10 * Binomial(30, 1/2)
    / 30, whose 2.5% and 97.5% quantiles are 10 * 10 / 30 and 10 * 20 / 30 (scipy-free: the
    binomial quantiles of n = 30 by summing its probabilities)."""
    from math import comb

    scores = np.array([0.0, 10.0] * 15)
    cdf = np.cumsum([comb(30, k) / 2**30 for k in range(31)])
    low_k, high_k = int(np.searchsorted(cdf, 0.025)), int(np.searchsorted(cdf, 0.975))
    stats = score_stats(scores)
    assert stats["scores"] == scores.tolist()
    assert stats["mean_ci95"][0] == pytest.approx(10 * low_k / 30, abs=0.34)
    assert stats["mean_ci95"][1] == pytest.approx(10 * high_k / 30, abs=0.34)
    assert score_stats(np.full(30, 7.0))["mean_ci95"] == [7.0, 7.0]
