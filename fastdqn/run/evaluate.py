"""Evaluation: full games (no life-loss episodes, unclipped rewards) with a fixed epsilon."""

from __future__ import annotations

import numpy as np

from fastdqn.util.checks import check_int


def evaluate(learner, envs, episodes: int, epsilon: float, rng: np.random.Generator, video=None) -> np.ndarray:
    """Play ``episodes`` full games on ``envs`` and return their scores (float64, (episodes,)).

    Exploration draws come from ``rng``, not the learner's generator, so evaluating during
    training leaves the training run exactly as it would have been.

    ``envs`` must be synchronous EnvPool envs made with ``episodic_life=False``, so every
    ``terminated`` or ``truncated`` is the end of a game. Each env plays a fixed quota of
    games (``episodes`` split as evenly as possible), so short games are not over-counted.

    With ``video`` (anything with ``add(frame)``), env 0's screen is added after the reset and
    after every step until env 0 has played its quota of games; ``envs`` must then be made with
    ``render=True``. Rendering only reads the envs, so the scores are the same either way.
    """
    check_int("episodes", episodes, error=ValueError)
    obs, _ = envs.reset()
    num_envs = obs.shape[0]
    quota = np.full(num_envs, episodes // num_envs, dtype=np.int64)
    quota[: episodes % num_envs] += 1
    done = np.zeros(num_envs, dtype=np.int64)
    score = np.zeros(num_envs, dtype=np.float64)
    scores: list[float] = []
    first_env = np.zeros(1, dtype=np.int32)
    if video is not None:
        video.add(envs.render(first_env)[0])
    while len(scores) < episodes:
        actions = learner.act(obs, epsilon, rng=rng)
        obs, reward, terminated, truncated, info = envs.step(actions)
        ids = info["env_id"]
        score[ids] += reward
        ended = terminated | truncated
        if ended.any():
            ended_ids = ids[ended]
            counted = ended_ids[done[ended_ids] < quota[ended_ids]]
            scores.extend(score[counted].tolist())
            done[ended_ids] += 1
            score[ended_ids] = 0.0
        if video is not None:
            video.add(envs.render(first_env)[0])
            if done[0] >= quota[0]:
                video = None  # env 0's last counted game has ended, with its final frame
    return np.asarray(scores, dtype=np.float64)


def score_stats(scores: np.ndarray) -> dict:
    """Mean, std, min, max and median of the scores, a 95% percentile-bootstrap interval of
    the mean (10,000 resamples, fixed seed: the same scores give the same interval) and the
    scores themselves, as plain numbers."""
    scores = np.asarray(scores, dtype=np.float64)
    means = np.random.default_rng(0).choice(scores, (10_000, scores.size)).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"episodes": int(scores.size), "mean": float(np.mean(scores)), "std": float(np.std(scores)),
            "min": float(np.min(scores)), "max": float(np.max(scores)), "median": float(np.median(scores)),
            "mean_ci95": [float(low), float(high)], "scores": scores.tolist()}
