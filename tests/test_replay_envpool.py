"""ReplayBuffer on a real EnvPool Atari stream, against the full-copy reference."""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn import ReplayBuffer
from fastdqn.run.envpool_rows import EnvPoolRows
from reference_replay import ReferenceReplay

envpool = pytest.importorskip("envpool")


def check(buf: ReplayBuffer, ref: ReferenceReplay) -> None:
    stored = ref.stored()
    assert len(buf) == len(stored)
    index = np.array(sorted(stored), np.int64)
    B = min(64, len(stored))
    window = buf.make_batch(len(index), window=True)
    for batch in (buf.gather(index), buf.sample(B), buf.gather(index, out=window),
                  buf.sample(B, out=buf.make_batch(B, window=True))):
        for b, g in enumerate(batch.index):
            obs, nxt, action, reward, term = stored[int(g)]
            assert np.array_equal(batch.obs[b], obs) and np.array_equal(batch.next_obs[b], nxt)
            assert (batch.action[b], batch.reward[b], batch.terminated[b]) == (action, reward, term)


@pytest.mark.parametrize("num_envs,batch_size", [(4, 4), (6, 3)], ids=["sync", "async"])
def test_breakout_stream_matches_reference(num_envs, batch_size, tmp_path):
    env = envpool.make("Breakout-v5", env_type="gymnasium", num_envs=num_envs,
                       batch_size=batch_size, seed=7, episodic_life=True, max_episode_steps=90)
    capacity = num_envs * 40
    buf = ReplayBuffer(capacity, (4, 84, 84), num_envs, frame_stack=4, seed=0)
    ref = ReferenceReplay(capacity, num_envs, 4)
    rng = np.random.default_rng(0)
    rows = EnvPoolRows(num_envs, batch_size, (4, 84, 84), np.uint8)
    counts = dict(life_loss=0, game_over=0, truncated=0, reset_rows=0)
    sync = batch_size == num_envs
    if sync:
        rows.reset(*env.reset())
    else:
        env.async_reset()
        for _ in range(num_envs // batch_size):
            ids = rows.received(*env.recv())["env_ids"]
            actions = rng.integers(0, 4, batch_size)
            rows.sent(actions, ids)
            env.send(actions, ids)
    for step in range(400):
        if sync:
            actions = rng.integers(0, 4, num_envs)
            rows.sent(actions, np.arange(num_envs))
            step_rows = env.step(actions)
        else:
            step_rows = env.recv()
        add, info = rows.received(*step_rows), step_rows[-1]
        ids, valid, term, trunc = add["env_ids"], add["valid"], add["terminated"], add["truncated"]
        buf.add(**add)
        for i, e in enumerate(ids):
            if valid[i]:
                ref.add(e, add["obs"][i], add["next_obs"][i], add["action"][i], add["reward"][i], term[i])
        counts["life_loss"] += int((term & (info["lives"] > 0)).sum())
        counts["game_over"] += int((term & (info["lives"] == 0)).sum())
        counts["truncated"] += int(trunc.sum())
        counts["reset_rows"] += int((~valid).sum())
        if not sync:
            actions = rng.integers(0, 4, len(ids))
            rows.sent(actions, ids)
            env.send(actions, ids)
        if step % 50 == 49:
            check(buf, ref)
    check(buf, ref)
    assert counts["life_loss"] > 0 and counts["truncated"] > 0 and counts["reset_rows"] > 0, counts
    assert sum(ref.written) > 2 * num_envs * ref.slots, "the ring never wrapped"

    buf.save(tmp_path / "replay.bin")
    loaded = ReplayBuffer.load(tmp_path / "replay.bin")
    for a, b in zip(buf.sample(32), loaded.sample(32)):
        np.testing.assert_array_equal(a, b)
