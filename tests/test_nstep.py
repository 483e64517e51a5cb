"""n-step ReplayBuffer batches against the hand-built windows of reference_nstep.py."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdqn import ReplayBuffer, ReplayError
from fastdqn.run.envpool_rows import EnvPoolRows
from reference_nstep import NStepReference
from test_replay import EVENTS, FakeEnvs, draw_step, obs_shape

NO_JIT = numba.config.DISABLE_JIT


def assert_matches(batch, expected: dict) -> None:
    for b, g in enumerate(batch.index):
        assert int(g) in expected, f"index {g} is not a closed window in the reference"
        obs, nxt, action, reward, term, disc = expected[int(g)]
        assert batch.obs[b].tobytes() == obs.tobytes()
        assert batch.next_obs[b].tobytes() == nxt.tobytes(), f"next_obs of index {g}"
        assert (batch.action[b], batch.terminated[b]) == (action, term)
        # Same float64 sum in the same order: equal to the bit.
        assert batch.reward[b].tobytes() == reward.tobytes(), (batch.reward[b], reward)
        assert batch.discount[b].tobytes() == disc.tobytes(), (batch.discount[b], disc)


def check(buf: ReplayBuffer, ref: NStepReference) -> dict:
    expected = ref.stored()
    assert len(buf) == len(expected)
    if expected:
        assert_matches(buf.gather(np.array(sorted(expected), np.int64)), expected)
        assert_matches(buf.sample(len(expected)), expected)
    for g in ref.open_ids()[:2]:
        with pytest.raises(ReplayError, match="window"):
            buf.gather(np.array([g]))
    return expected


@settings(max_examples=15 if NO_JIT else 120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), k=st.integers(1, 4), n=st.integers(1, 5),
       gamma=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
def test_nstep_streams_match_reference(data, k, n, gamma):
    num_envs = data.draw(st.integers(1, 3), label="num_envs")
    # The smallest rings make open windows and lost stacks meet: draw them often.
    capacity = data.draw(st.one_of(st.just(num_envs * k), st.integers(num_envs * k, num_envs * (k + 8))),
                         label="capacity")
    async_mode = data.draw(st.booleans(), label="async")
    buf = ReplayBuffer(capacity, obs_shape(k, np.uint8), num_envs, frame_stack=k, n_step=n,
                       gamma=gamma, seed=0)
    ref = NStepReference(capacity, num_envs, k, n, gamma)
    envs = FakeEnvs(num_envs, k, np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(data.draw(st.integers(1, 30), label="steps")):
        ids, obs, nxt, term, trunc, valid = draw_step(data, envs, num_envs, k, async_mode)
        # A dropped row: the env stepped, the caller did not store it.
        dropped = np.array([data.draw(st.integers(0, 11), label="drop") == 0 for _ in ids])
        valid = valid & ~dropped
        action = rng.integers(0, 6, len(ids))
        reward = rng.normal(size=len(ids)).astype(np.float32)
        buf.add(obs=obs, next_obs=nxt, action=action, reward=reward, terminated=term,
                truncated=trunc, env_ids=np.array(ids) if async_mode else None, valid=valid)
        for i, e in enumerate(ids):
            ref.add(e, obs[i], nxt[i], action[i], reward[i], term[i], trunc[i], valid[i])
        check(buf, ref)


def test_one_step_discount_is_gamma_or_zero():
    buf = ReplayBuffer(40, (2, 3), 2, frame_stack=2, gamma=0.9, seed=0)
    obs = np.zeros((2, 2, 3), np.uint8)
    nxt = obs.copy()
    nxt[:, 1] = [[1, 2, 3], [4, 5, 6]]
    buf.add(obs, nxt, np.array([0, 1]), np.array([1.0, 2.0], np.float32),
            np.array([True, False]), np.array([False, True]))
    batch = buf.gather(np.array([0, 1]))
    np.testing.assert_array_equal(batch.discount, np.array([0.0, 0.9], np.float32))
    np.testing.assert_array_equal(batch.reward, [1.0, 2.0])


def test_open_window_waits_for_its_env():
    """One env, no episode end: the newest n-1 steps are not sampleable until later steps come."""
    n, k = 3, 2
    buf = ReplayBuffer(30, (k, 2), 1, frame_stack=k, n_step=n, gamma=0.5, seed=0)
    frames = [np.full(2, i, np.uint8) for i in range(12)]
    for t in range(6):
        obs = np.stack([frames[max(t - 1, 0)], frames[t]])[None]
        nxt = np.stack([frames[t], frames[t + 1]])[None]
        buf.add(obs, nxt, np.array([t]), np.array([float(t + 1)], np.float32),
                np.array([False]), np.array([False]))
        assert len(buf) == max(0, t + 1 - (n - 1))
    batch = buf.sample(len(buf))
    for b in range(len(batch.index)):
        t = int(batch.action[b])
        assert batch.reward[b] == np.float32((t + 1) + 0.5 * (t + 2) + 0.25 * (t + 3))
        assert batch.discount[b] == np.float32(0.125)
        assert batch.next_obs[b, -1, 0] == t + 3
    # A truncation closes every open window at once, bootstrapping from its final obs.
    obs = np.stack([frames[5], frames[6]])[None]
    nxt = np.stack([frames[6], frames[7]])[None]
    buf.add(obs, nxt, np.array([6]), np.array([7.0], np.float32), np.array([False]), np.array([True]))
    assert len(buf) == 7


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan"), "0.9", True])
def test_bad_gamma_is_refused(gamma):
    with pytest.raises(ReplayError, match="gamma"):
        ReplayBuffer(10, (2,), 1, gamma=gamma)


def test_bad_n_step_is_refused():
    with pytest.raises(ReplayError, match="n_step"):
        ReplayBuffer(10, (2,), 1, n_step=0)


def test_nstep_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(24, obs_shape(2, np.uint8), 2, frame_stack=2, n_step=3, gamma=0.8, seed=1)
    envs = FakeEnvs(2, 2, np.uint8)
    rng = np.random.default_rng(0)
    for t in range(20):
        rows = [envs.step(e, EVENTS[(t * 3 + e) % len(EVENTS)], False, 0) for e in range(2)]
        obs, nxt, term, trunc, valid = (np.array(col) for col in zip(*rows))
        buf.add(obs, nxt, rng.integers(0, 4, 2), rng.normal(size=2).astype(np.float32),
                term, trunc, valid=valid)
    buf.save(tmp_path / "nstep.bin")
    loaded = ReplayBuffer.load(tmp_path / "nstep.bin")
    assert (loaded.n_step, loaded.gamma, len(loaded)) == (3, 0.8, len(buf))
    for a, b in zip(buf.sample(8), loaded.sample(8)):
        np.testing.assert_array_equal(a, b)


def test_breakout_stream_matches_reference():
    """Async EnvPool Breakout: life losses, game-over resets, truncations, ids in any order."""
    envpool = pytest.importorskip("envpool")
    num_envs, batch_size, n, gamma = 6, 3, 3, 0.99
    env = envpool.make("Breakout-v5", env_type="gymnasium", num_envs=num_envs,
                       batch_size=batch_size, seed=3, episodic_life=True, max_episode_steps=60)
    capacity = num_envs * 30
    buf = ReplayBuffer(capacity, (4, 84, 84), num_envs, frame_stack=4, n_step=n, gamma=gamma, seed=0)
    ref = NStepReference(capacity, num_envs, 4, n, gamma)
    rng = np.random.default_rng(0)
    rows = EnvPoolRows(num_envs, batch_size, (4, 84, 84), np.uint8)
    env.async_reset()
    seen = dict(life_loss=0, truncated=0, reset_rows=0)
    discounts = set()
    for step in range(300):
        add = rows.received(*env.recv())
        ids, valid, term, trunc = add["env_ids"], add["valid"], add["terminated"], add["truncated"]
        buf.add(**add)
        for i, e in enumerate(ids):
            ref.add(e, add["obs"][i], add["next_obs"][i], add["action"][i], add["reward"][i], term[i],
                    trunc[i], valid[i])
        seen["life_loss"] += int(term.sum())
        seen["truncated"] += int(trunc.sum())
        seen["reset_rows"] += int((~valid).sum())
        actions = rng.integers(0, 4, len(ids))
        rows.sent(actions, ids)
        env.send(actions, ids)
        if step % 50 == 49:
            discounts |= {float(w[5]) for w in check(buf, ref).values()}
    env.close()
    assert min(seen.values()) > 0, seen
    assert sum(ref.ref.written) > 2 * num_envs * ref.ref.slots, "the ring never wrapped"
    # Full windows, windows cut by a termination and by a truncation were all checked.
    assert {0.0, float(np.float32(gamma ** n))} < discounts, discounts
