"""How much each env keeps, stated as a property of the transitions added and checked by
sampling, with no knowledge of the ring's layout.

The README's rule: each env keeps its newest ``ceil(capacity / num_envs) + k`` frames, a
transition stays sampleable while every frame it reads is among them, and an episode start
costs one frame more. With ``k = 1`` that reads: of an env's transitions, the newest ``M`` are
sampleable, where ``M`` is the largest count with ``M + (starts among all but the oldest of
them) <= ceil(capacity / num_envs)``; nothing older is. A long episode with stacks (``k = 4``)
keeps exactly ``ceil(capacity / num_envs)`` transitions per env.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastdqn import ReplayBuffer

DRAWS = 20_000  # rows sampled per check: every stored transition is drawn hundreds of times


def sampled_ids(buf: ReplayBuffer) -> set[tuple[int, int]]:
    """(env, step) of every transition drawn in DRAWS samples; ``next_obs`` carries both."""
    seen = set()
    for _ in range(DRAWS // len(buf)):  # a batch holds at most len(buf) rows
        batch = buf.sample(len(buf))
        last = batch.next_obs.reshape(len(buf), -1)[:, -2:]
        seen |= set(map(tuple, last.astype(np.int64).tolist()))
    return seen


def newest_sampleable(starts: list[bool], per_env: int) -> int:
    """How many of an env's newest transitions the rule keeps (``starts`` oldest first)."""
    kept = 0
    for m in range(1, len(starts) + 1):
        window = starts[len(starts) - m:]
        if m + sum(window[1:]) <= per_env:
            kept = m
    return kept


@pytest.mark.parametrize("capacity, num_envs", [(60, 3), (50, 4)])
def test_each_env_keeps_its_newest_transitions_less_one_per_episode_start(capacity, num_envs):
    rng = np.random.default_rng(capacity)
    buf = ReplayBuffer(capacity, (2,), num_envs, obs_dtype=np.float32, seed=0)
    per_env = math.ceil(capacity / num_envs)
    starts = [[] for _ in range(num_envs)]  # per env, oldest first: did this transition start anew?
    last_next = [None] * num_envs
    step = 0
    for t in range(300):
        # Envs step at different rates, in any order, as async EnvPool's do.
        ids = rng.permutation(num_envs)[: rng.integers(1, num_envs + 1)]
        obs = np.empty((len(ids), 2), np.float32)
        next_obs = np.empty((len(ids), 2), np.float32)
        for row, env in enumerate(ids):
            step += 1
            new = last_next[env] is None or rng.random() < 0.15
            # A start's obs is a frame never seen before; a continuing obs is the previous next_obs.
            obs[row] = (env, -step) if new else last_next[env]
            next_obs[row] = (env, step)
            last_next[env] = next_obs[row].copy()
            starts[env].append((step, new))
        zeros = np.zeros(len(ids))
        buf.add(obs=obs, next_obs=next_obs, action=zeros.astype(np.int64), reward=zeros.astype(np.float32),
                terminated=zeros.astype(bool), truncated=zeros.astype(bool), env_ids=ids)
        if t >= 60 and t % 15 == 0:
            expected = set()
            for env in range(num_envs):
                kept = newest_sampleable([new for _, new in starts[env]], per_env)
                expected |= {(env, s) for s, _ in starts[env][len(starts[env]) - kept:]}
            assert sampled_ids(buf) == expected
            assert len(buf) == len(expected)


@pytest.mark.parametrize("capacity, num_envs", [(40, 2), (45, 4)])
def test_a_long_episode_with_stacks_keeps_ceil_capacity_over_envs_per_env(capacity, num_envs):
    k = 4
    buf = ReplayBuffer(capacity, (k, 2, 1), num_envs, frame_stack=k, seed=0)
    per_env = math.ceil(capacity / num_envs)
    # Frame t of env e is the 2x1 image (e, t % 256); the first stack repeats frame 0.
    frames = lambda t: np.array([[[e], [t % 256]] for e in range(num_envs)], np.uint8)  # noqa: E731
    obs = np.stack([frames(0)] * k, axis=1)
    zeros = np.zeros(num_envs)
    for t in range(1, 150):
        next_obs = np.concatenate([obs[:, 1:], frames(t)[:, None]], axis=1)
        buf.add(obs=obs, next_obs=next_obs, action=zeros.astype(np.int64), reward=zeros.astype(np.float32),
                terminated=zeros.astype(bool), truncated=zeros.astype(bool))
        obs = next_obs
        if t >= per_env + k and t % 11 == 0:  # the episode's start has left the window
            # The newest frame of next_obs names the step; wraps at 256 do not occur before 150.
            expected = {(e, s) for e in range(num_envs) for s in range(t - per_env + 1, t + 1)}
            assert sampled_ids(buf) == expected
            assert len(buf) == len(expected) == num_envs * per_env
