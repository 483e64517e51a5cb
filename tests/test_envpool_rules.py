"""The trainer's EnvPool rules, checked on real EnvPool streams against what the buffer stored.

A recording proxy keeps a copy of every ``recv()`` and ``send()`` the trainer makes. The
expected transitions are rebuilt from that raw stream with plain Python (per env: the
observation an action was sent for, and the next observation that env returned), then
compared with every transition the replay buffer holds (gathered one id at a time).
The EnvPool behaviour these rules answer to is written down in docs/envpool.md.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from fastdqn.run.config import TrainConfig
from fastdqn.run.envs import env_info, make_envs
from fastdqn.errors import ReplayError
from fastdqn.learn.learner import Learner
from fastdqn.run.build import build_network
from fastdqn.replay.buffer import ReplayBuffer
from fastdqn.run.trainer import Trainer


class Recorder:
    """Passes calls through to EnvPool and keeps copies of what went in and out."""

    def __init__(self, envs):
        self.envs = envs
        self.received = []  # (obs, reward, terminated, truncated, env_id, elapsed_step, lives or None)
        self.sent = []  # (actions, env_ids)

    def async_reset(self):
        self.envs.async_reset()

    def recv(self):
        obs, reward, terminated, truncated, info = self.envs.recv()
        lives = info["lives"].copy() if "lives" in info else None
        self.received.append((obs.copy(), reward.copy(), terminated.copy(), truncated.copy(),
                              info["env_id"].copy(), info["elapsed_step"].copy(), lives))
        return obs, reward, terminated, truncated, info

    def send(self, actions, env_ids):
        self.sent.append((np.array(actions, copy=True), np.array(env_ids, copy=True)))
        self.envs.send(actions, env_ids)


class EpisodeLog:
    """Stands in for RunLogger: keeps the finished games the trainer reports, writes nothing."""

    def __init__(self):
        self.returns, self.lengths = [], []

    def episodes(self, global_step, returns, lengths, epsilon):
        self.returns += returns.tolist()
        self.lengths += lengths.tolist()

    def log(self, global_step, **scalars):
        pass

    def progress(self, global_step, **kwargs):
        pass


def run_random(env_id, steps, *, num_envs=4, async_envs=False, max_episode_steps=None, logger=None):
    """Drive the real trainer with random actions (epsilon fixed at 1, no learning)."""
    info = env_info(env_id)
    config = TrainConfig(
        env_id=env_id, total_timesteps=steps, num_envs=num_envs, buffer_size=4 * steps,
        batch_size=32, learning_starts=10 * steps, start_e=1.0, end_e=1.0, compile=False,
        async_envs=async_envs, env_batch_size=num_envs // 2 if async_envs else 0,
        max_episode_steps=max_episode_steps or info.max_episode_steps, eval_episodes=0,
    )
    envs = Recorder(make_envs(env_id, num_envs, seed=3, async_envs=async_envs,
                              batch_size=config.env_batch, max_episode_steps=config.max_episode_steps))
    buffer = ReplayBuffer(config.buffer_size, info.obs_shape, num_envs, obs_dtype=info.obs_dtype,
                          frame_stack=info.frame_stack, seed=0)
    learner = Learner(build_network(info), compile=False, seed=0)
    trainer = Trainer(envs, buffer, learner, config, logger)
    trainer.checkpoint = lambda: None
    trainer.train()
    return envs, buffer


def expected_transitions(envs):
    """Per env: (obs an action was sent for, action, sign(reward), terminated, next obs),
    skipping pairs whose next row is a reset (elapsed_step == 0)."""
    last_obs, last_act = {}, {}
    out = []
    sends = iter(envs.sent)
    for obs, reward, terminated, truncated, ids, elapsed, _ in envs.received:
        for row, env in enumerate(ids.tolist()):
            if elapsed[row] != 0:
                out.append((key(last_obs[env]), int(last_act[env]), float(np.sign(reward[row])),
                            bool(terminated[row]), key(obs[row])))
        actions, sent_ids = next(sends, (None, None))
        if actions is None:
            break
        assert sent_ids.tolist() == ids.tolist()
        for row, env in enumerate(ids.tolist()):
            last_obs[env] = obs[row]
            last_act[env] = actions[row]
    return out


def stored_transitions(buffer):
    out = []
    slots = buffer.num_envs * buffer.slots_per_env
    for i in range(slots):
        try:
            b = buffer.gather(np.array([i]))
        except ReplayError:
            continue
        out.append((key(b.obs[0]), int(b.action[0]), float(b.reward[0]), bool(b.terminated[0]),
                    key(b.next_obs[0])))
    assert len(out) == len(buffer)
    return out


def key(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_reset_steps_are_never_stored_and_rewards_are_sign_clipped():
    envs, buffer = run_random("SpaceInvaders-v5", 3000)
    resets = sum(int((r[5] == 0).sum()) for r in envs.received[1:])
    assert resets > 0, "no game ended in the stream; the test would prove nothing"
    raw_rewards = np.concatenate([r[1] for r in envs.received])
    assert raw_rewards.max() > 1, "no reward above 1 in the stream; clipping would go untested"
    expected = expected_transitions(envs)
    assert Counter(stored_transitions(buffer)) == Counter(expected)
    for obs, _, _, _, _, elapsed, _ in envs.received[1:]:
        for stack in obs[elapsed == 0]:  # a reset stack repeats its first frame (EnvPool fact)
            assert all(np.array_equal(stack[0], frame) for frame in stack)


def test_life_loss_stops_bootstrapping_but_continues_the_stack():
    log = EpisodeLog()
    envs, buffer = run_random("Breakout-v5", 2000, logger=log)
    # Life losses: terminated rows whose env does not reset on its next row.
    next_row = {}
    life_losses = 0
    for obs, _, terminated, _, ids, elapsed, lives in reversed(envs.received):
        for row, env in enumerate(ids.tolist()):
            if terminated[row] and env in next_row:
                nxt_obs, nxt_elapsed = next_row[env]
                if nxt_elapsed != 0:
                    life_losses += 1
                    assert lives[row] > 0
                    assert np.array_equal(nxt_obs[:-1], obs[row][1:])  # the stack goes on
            next_row[env] = (obs[row], elapsed[row])
    assert life_losses > 0
    stored = stored_transitions(buffer)
    assert Counter(stored) == Counter(expected_transitions(envs))
    assert sum(t[3] for t in stored) >= life_losses
    # Game scores: raw rewards summed over all lives, from one reset to the next.
    score, length, games = {}, {}, []
    for _, reward, _, _, ids, elapsed, _ in envs.received:
        for row, env in enumerate(ids.tolist()):
            if elapsed[row] == 0:
                if length.get(env):
                    games.append((score[env], length[env]))
                score[env], length[env] = 0.0, 0
            else:
                score[env] += float(reward[row])
                length[env] += 1
    assert games and sorted(games) == sorted(zip(log.returns, log.lengths))
    assert max(log.lengths) > max_life_length(envs)


def max_life_length(envs):
    """Longest run of steps between two terminated rows of one env (one life at most)."""
    since, longest = {}, 0
    for _, _, terminated, _, ids, elapsed, _ in envs.received:
        for row, env in enumerate(ids.tolist()):
            since[env] = 0 if elapsed[row] == 0 or terminated[row] else since.get(env, 0) + 1
            longest = max(longest, since[env])
    return longest


@pytest.mark.parametrize("async_envs", [False, True], ids=["sync", "async"])
def test_truncation_is_stored_and_bootstraps(async_envs):
    envs, buffer = run_random("CartPole-v1", 2000, async_envs=async_envs, num_envs=4, max_episode_steps=8)
    truncated_rows = [(key(obs[row]), bool(term[row]))
                      for obs, _, term, trunc, _, _, _ in envs.received for row in np.flatnonzero(trunc)]
    assert truncated_rows, "no truncation in the stream"
    stored = stored_transitions(buffer)
    assert Counter(stored) == Counter(expected_transitions(envs))
    by_next_obs = {t[4]: t for t in stored}
    for next_key, terminated in truncated_rows:
        assert not terminated
        assert by_next_obs[next_key][3] is False  # stored, and the target bootstraps there
