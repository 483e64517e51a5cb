"""The EnvPool row rule against a plain per-row reference, on a scripted async stream: envs
in any order, reset rows, rewards of every sign."""

from __future__ import annotations

import numpy as np

from fastdqn.run.envpool_rows import EnvPoolRows

NUM_ENVS, BATCH, OBS = 5, 3, (2, 3)


def reference_rows(last_obs: dict, last_action: dict, next_obs, reward, info) -> list[dict]:
    """One transition per row, written out row by row: from the env's previous observation
    under its last action; a row with elapsed_step 0 (a reset) is not valid; rewards are signs."""
    out = []
    for i, env in enumerate(info["env_id"]):
        out.append(dict(obs=last_obs[env], action=last_action[env], next_obs=next_obs[i],
                        reward=1.0 if reward[i] > 0 else -1.0 if reward[i] < 0 else 0.0,
                        valid=bool(info["elapsed_step"][i] != 0), env_id=int(env)))
        last_obs[env] = next_obs[i].copy()
    return out


def scripted_stream(steps: int, seed: int = 0):
    """recv() results of async envs: BATCH distinct envs per call, any order, reset rows."""
    rng = np.random.default_rng(seed)
    elapsed = np.zeros(NUM_ENVS, np.int32)
    for _ in range(steps):
        ids = rng.choice(NUM_ENVS, BATCH, replace=False).astype(np.int32)
        reset = rng.random(BATCH) < 0.2
        elapsed[ids] = np.where(reset, 0, elapsed[ids] + 1)
        obs = rng.integers(0, 255, (BATCH, *OBS), dtype=np.uint8)
        reward = rng.choice([-2.5, -1.0, 0.0, 0.25, 1.0, 4.0], BATCH).astype(np.float32)
        terminated, truncated = rng.random(BATCH) < 0.1, rng.random(BATCH) < 0.05
        yield obs, reward, terminated, truncated, {"env_id": ids, "elapsed_step": elapsed[ids].copy()}


def test_rows_follow_the_reference_rule():
    rows = EnvPoolRows(NUM_ENVS, BATCH, OBS, np.uint8)
    last_obs = {e: np.zeros(OBS, np.uint8) for e in range(NUM_ENVS)}
    last_action = {e: 0 for e in range(NUM_ENVS)}
    rng = np.random.default_rng(1)
    seen_invalid = 0
    for obs, reward, terminated, truncated, info in scripted_stream(200):
        want = reference_rows(last_obs, last_action, obs, reward, info)
        add = rows.received(obs, reward, terminated, truncated, info)
        assert add["terminated"] is terminated and add["truncated"] is truncated
        np.testing.assert_array_equal(add["env_ids"], info["env_id"])
        for i, row in enumerate(want):
            np.testing.assert_array_equal(add["obs"][i], row["obs"])
            np.testing.assert_array_equal(add["next_obs"][i], row["next_obs"])
            assert add["action"][i] == row["action"]
            assert add["reward"][i] == row["reward"]
            assert add["valid"][i] == row["valid"]
        seen_invalid += int((~add["valid"]).sum())
        actions = rng.integers(0, 4, BATCH)
        rows.sent(actions, info["env_id"])
        for env, action in zip(info["env_id"], actions):
            last_action[int(env)] = int(action)
    assert seen_invalid > 20


def test_rows_reuse_their_arrays():
    rows = EnvPoolRows(NUM_ENVS, BATCH, OBS, np.uint8)
    stream = scripted_stream(3)
    first = rows.received(*next(stream))
    arrays = {name: first[name] for name in ("obs", "action", "reward", "valid")}
    second = rows.received(*next(stream))
    assert second is first
    assert all(second[name] is array for name, array in arrays.items())
    assert (rows.obs, rows.action, rows.reward, rows.valid) == tuple(arrays.values())


def test_reset_observations_start_each_env():
    rows = EnvPoolRows(NUM_ENVS, NUM_ENVS, OBS, np.uint8)
    start = np.arange(NUM_ENVS * 6, dtype=np.uint8).reshape(NUM_ENVS, *OBS)
    rows.reset(start, {"env_id": np.arange(NUM_ENVS)})
    rows.sent(np.full(NUM_ENVS, 3), np.arange(NUM_ENVS))
    info = {"env_id": np.arange(NUM_ENVS)[::-1].copy(), "elapsed_step": np.ones(NUM_ENVS, np.int32)}
    add = rows.received(start + 100, np.ones(NUM_ENVS, np.float32), np.zeros(NUM_ENVS, bool),
                        np.zeros(NUM_ENVS, bool), info)
    np.testing.assert_array_equal(add["obs"], start[::-1])
    assert add["valid"].all() and (add["action"] == 3).all()
