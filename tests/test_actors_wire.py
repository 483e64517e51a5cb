"""The actors' wire format: real EnvPool steps packed on the actor side, pickled as Ray
sends them, and stored on the learner side: the buffer then holds exactly the transitions
read straight from EnvPool (a reference kept in the test: each env's previous observation
and action)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fastdqn.replay import ReplayBuffer
from fastdqn.run.actors.wire import ChunkWriter, StackRebuilder
from fastdqn.run.envpool_rows import EnvPoolRows
from fastdqn.run.envs import env_info, make_envs


def _stream(env_id: str, num_envs: int, steps: int, *, async_envs: bool, seed: int, max_episode_steps: int):
    """(recv results, actions sent) of ``steps`` calls with random actions."""
    task = env_info(env_id)
    batch = num_envs // 2 if async_envs else num_envs
    envs = make_envs(env_id, num_envs, seed=seed, async_envs=async_envs, batch_size=batch,
                     max_episode_steps=max_episode_steps)
    rng = np.random.default_rng(seed)
    envs.async_reset()
    out = []
    for _ in range(steps):
        obs, reward, term, trunc, info = envs.recv()
        ids = info["env_id"].copy()
        actions = rng.integers(task.num_actions, size=len(ids))
        envs.send(actions, ids)
        out.append((obs.copy(), reward.copy(), term.copy(), trunc.copy(),
                    {"env_id": ids, "elapsed_step": info["elapsed_step"].copy()}, actions))
    envs.close()
    return task, batch, out


def _buffer(task, num_envs: int) -> ReplayBuffer:
    return ReplayBuffer(20_000, task.obs_shape, num_envs, obs_dtype=task.obs_dtype, frame_stack=task.frame_stack,
                        seed=0)


def _stored(buf: ReplayBuffer, draws: int = 40) -> set:
    """Every transition in ``buf`` by content and env (draws with replacement of len(buf)
    rows each: one is missed with probability about exp(-draws))."""
    out = set()
    for _ in range(draws):
        b = buf.sample(len(buf))
        for i in range(len(buf)):
            out.add((int(b.index[i] % buf.num_envs), b.obs[i].tobytes(), b.next_obs[i].tobytes(),
                     int(b.action[i]), float(b.reward[i]), bool(b.terminated[i])))
    return out


@pytest.mark.parametrize("env_id,num_envs,async_envs,offset", [
    ("CartPole-v1", 4, False, 0), ("CartPole-v1", 4, True, 8), ("Pong-v5", 2, False, 6)])
def test_rebuilt_rows_equal_envpool_transitions(env_id, num_envs, async_envs, offset):
    # Short episodes, so resets land inside the stream.
    task, batch, stream = _stream(env_id, num_envs, 90, async_envs=async_envs, seed=3, max_episode_steps=20)
    rows = EnvPoolRows(num_envs, batch, task.obs_shape, task.obs_dtype)
    writer = ChunkWriter(1, 30, batch, task.obs_shape, task.obs_dtype, task.frame_stack, task.num_actions, offset)
    rebuilder = StackRebuilder(offset + num_envs, task.obs_shape, task.obs_dtype, task.frame_stack, batch)
    buf = _buffer(task, offset + num_envs)
    prev_obs, prev_action = {}, {}
    expected, resets = set(), 0
    for start in range(0, len(stream), 30):
        writer.clear()
        for obs, reward, term, trunc, info, actions in stream[start:start + 30]:
            writer.append(rows.received(obs, reward, term, trunc, info))
            rows.sent(actions, info["env_id"])
            for r, e in enumerate(info["env_id"]):
                if info["elapsed_step"][r] != 0:
                    expected.add((offset + int(e), prev_obs[e].tobytes(), obs[r].tobytes(), int(prev_action[e]),
                                  float(np.sign(reward[r])), bool(term[r])))
                else:
                    resets += 1
                prev_obs[e], prev_action[e] = obs[r], actions[r]
        chunk = pickle.loads(pickle.dumps(writer.chunk(episode_returns=[], episode_lengths=[], epsilon=0.1),
                                          protocol=5))
        rebuilder.store(buf, chunk)
    assert resets > num_envs  # the stream crossed episode ends
    assert len(buf) == len(stream) * batch - resets
    assert _stored(buf) == expected


def test_an_atari_step_costs_one_frame_on_the_wire():
    task, batch, stream = _stream("Pong-v5", 2, 40, async_envs=False, seed=1, max_episode_steps=1000)
    rows = EnvPoolRows(2, batch, task.obs_shape, task.obs_dtype)
    writer = ChunkWriter(0, 40, batch, task.obs_shape, task.obs_dtype, task.frame_stack, task.num_actions, 0)
    for obs, reward, term, trunc, info, actions in stream:
        writer.append(rows.received(obs, reward, term, trunc, info))
        rows.sent(actions, info["env_id"])
    wire = len(pickle.dumps(writer.chunk(episode_returns=[], episode_lengths=[], epsilon=0.1), protocol=5))
    resets_bytes = 2 * 4 * 84 * 84  # the first recv is both envs' reset rows, whole stacks
    per_step = (wire - resets_bytes) / (40 * 2)
    assert 84 * 84 <= per_step <= 84 * 84 + 100


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pong-v5"])
def test_merged_chunks_of_two_actors_rebuild_both_streams(env_id):
    from fastdqn.run.actors.wire import merge

    n, T = 2, 15
    streams = [_stream(env_id, n, 3 * T, async_envs=False, seed=s, max_episode_steps=12) for s in (4, 5)]
    task = streams[0][0]
    rebuilder = StackRebuilder(2 * n, task.obs_shape, task.obs_dtype, task.frame_stack, 2 * n)
    buf, steps = _buffer(task, 2 * n), []
    parts = [(EnvPoolRows(n, n, task.obs_shape, task.obs_dtype),
              ChunkWriter(a, T, n, task.obs_shape, task.obs_dtype, task.frame_stack, task.num_actions, a * n))
             for a in range(2)]
    expected, got = set(), set()
    prev = {}
    for start in range(0, 3 * T, T):
        chunks = []
        for a, (rows, writer) in enumerate(parts):
            writer.clear()
            for obs, reward, term, trunc, info, actions in streams[a][2][start:start + T]:
                writer.append(rows.received(obs, reward, term, trunc, info))
                rows.sent(actions, info["env_id"])
                for r, e in enumerate(info["env_id"]):
                    g = a * n + e
                    if info["elapsed_step"][r] != 0:
                        expected.add((g, prev[g][0].tobytes(), obs[r].tobytes(), int(prev[g][1]),
                                      float(np.sign(reward[r])), bool(term[r])))
                    prev[g] = (obs[r], actions[r])
            chunks.append(pickle.loads(pickle.dumps(
                writer.chunk(episode_returns=[], episode_lengths=[], epsilon=0.1), protocol=5)))
        rebuilder.store(buf, merge(chunks), lambda step, ids, valid: steps.append(ids.tolist()))
    assert all(len(set(ids)) == len(ids) == 2 * n for ids in steps)  # one row per env per add
    assert len(expected) > 3 * T
    assert _stored(buf) == expected
