"""The library API refuses what it used to coerce: one rule for every argument of the replay
buffer, exact types and finite values, a ``ReplayError`` naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn import ReplayBuffer, ReplayError

GOOD = dict(capacity=64, obs_shape=(4,), num_envs=2, obs_dtype=np.float32)


@pytest.mark.parametrize("change, name", [
    (dict(obs_shape="84"), "obs_shape"),
    (dict(obs_shape=(4.7,)), "obs_shape"),
    (dict(obs_shape=("4",)), "obs_shape"),
    (dict(obs_shape=([4],)), "obs_shape"),
    (dict(obs_shape=4), "obs_shape"),
    (dict(obs_shape=(True,)), "obs_shape"),
    (dict(obs_shape=(2**70,)), "obs_shape"),
    (dict(obs_shape=np.array([4])), "obs_shape"),
    (dict(n_step=2**63), "n_step"),
    (dict(n_step=2**70), "n_step"),
    (dict(n_step=3.0), "n_step"),
    (dict(gamma=10**400), "gamma"),
    (dict(gamma=float("nan")), "gamma"),
    (dict(gamma="0.99"), "gamma"),
    (dict(seed="x"), "seed"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(seed=2**64), "seed"),
    (dict(capacity=64.0), "capacity"),
    (dict(num_envs=True), "num_envs"),
    (dict(prioritized=True, alpha=1e308), "alpha"),
    (dict(prioritized=True, eps=10**400), "eps"),
    (dict(prioritized=1), "prioritized"),
])
def test_a_bad_argument_raises_a_replay_error_naming_it(change, name):
    with pytest.raises(ReplayError, match=f"^{name}: "):
        ReplayBuffer(**{**GOOD, **change})


def test_a_numpy_int_and_a_list_shape_are_still_taken():
    buf = ReplayBuffer(np.int64(64), [np.int32(4)], 2, obs_dtype=np.float32, seed=np.uint32(3))
    assert buf.obs_shape == (4,) and buf.capacity == 64
    ReplayBuffer(**GOOD, seed=np.random.SeedSequence(5).spawn(1)[0])


def rows(buf, reward):
    obs = np.zeros((2, 4), np.float32)
    return obs, obs + 1, np.zeros(2, np.int64), np.asarray(reward), np.zeros(2, bool), np.zeros(2, bool)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_add_refuses_rewards_that_are_not_finite_and_changes_nothing(bad):
    buf = ReplayBuffer(**GOOD)
    with pytest.raises(ReplayError, match=r"^reward: expected finite values, got reward\[1\]"):
        buf.add(*rows(buf, np.array([0.5, bad])))
    assert len(buf) == 0
    buf.add(*rows(buf, np.array([0.5, 1.0])))
    assert len(buf) == 2


def test_add_refuses_a_non_finite_reward_on_a_skipped_row_too():
    """The check runs inside the add kernel, before it writes: a row passed with valid=False
    is still refused, and the rows before it are not stored."""
    buf = ReplayBuffer(**GOOD)
    obs, nxt, act, _, term, trunc = rows(buf, np.zeros(2))
    with pytest.raises(ReplayError, match=r"^reward: expected finite values, got reward\[1\] = nan"):
        buf.add(obs, nxt, act, np.array([0.5, np.nan], np.float32), term, trunc, valid=np.array([True, False]))
    assert len(buf) == 0 and int(buf._ring.count.sum()) == 0


def test_make_batch_takes_only_a_bool_window():
    buf = ReplayBuffer(**GOOD)
    with pytest.raises(ReplayError, match="^window: "):
        buf.make_batch(4, window="no")


@pytest.mark.parametrize("value", [1e308, 1e307])
def test_update_priorities_refuses_a_priority_that_would_make_the_total_infinite(value):
    buf = ReplayBuffer(**GOOD, prioritized=True, alpha=1.0, seed=0)
    for _ in range(8):
        buf.add(*rows(buf, np.ones(2)))
    ids = buf.sample(4).index
    with pytest.raises(ReplayError, match=r"^priorities: .* is not in \(0, "):
        buf.update_priorities(ids[:2], np.array([1.0, value]))
    assert np.isfinite(buf.total_priority())
    # A large but summable priority is still taken, and draws keep spreading.
    buf.update_priorities(ids[:1], np.array([1e280]))
    assert np.isfinite(buf.total_priority())


@pytest.mark.parametrize("dtype", ["U5", np.complex64, np.complex128, np.longdouble, "M8[s]", "m8[s]", "V4",
                                   [("a", np.uint8), ("b", np.uint8)], (np.uint8, 2), object])
def test_an_obs_dtype_the_file_cannot_store_is_refused_at_construction(dtype):
    with pytest.raises(ReplayError, match="^obs_dtype: "):
        ReplayBuffer(64, (4,), 2, obs_dtype=dtype)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint16, np.int32, np.int64, np.float16, ">f4", "<f8"])
def test_every_obs_dtype_taken_saves_and_loads(tmp_path, dtype):
    buf = ReplayBuffer(64, (3,), 2, obs_dtype=dtype, seed=0)
    obs = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    buf.add(obs, obs, np.zeros(2, np.int64), np.ones(2, np.float32), np.ones(2, bool), np.zeros(2, bool))
    buf.save(tmp_path / "r.bin")
    back = ReplayBuffer.load(tmp_path / "r.bin")
    assert back.obs_dtype == np.dtype(dtype)
    index = buf.sample(2).index
    np.testing.assert_array_equal(back.gather(index).obs, buf.gather(index).obs)
