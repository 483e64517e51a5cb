"""PrioritizedReplayBuffer: draws, weights and updates against plain NumPy and the n-step reference."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

from fastdqn import (CheckpointError, PrioritizedBatch, PrioritizedReplayBuffer, ReplayBuffer,
                     ReplayError, ReplayStateError)
from fastdqn.pipeline.feeder import Feeder
from fastdqn.kernels import priority as kp
from reference_nstep import NStepReference
from test_replay import EVENTS, FakeEnvs, obs_shape

NO_JIT = numba.config.DISABLE_JIT
K = 2


def stream_into(buf, refs, steps: int, seed: int = 0, events=EVENTS) -> None:
    """Feed ``steps`` vector steps of FakeEnvs (every event kind) to ``buf`` and ``refs``."""
    E = buf.num_envs
    envs = FakeEnvs(E, buf.frame_stack, np.uint8)
    rng = np.random.default_rng(seed)
    for t in range(steps):
        rows = [envs.step(e, events[rng.integers(len(events))], rng.random() < 0.05, 0)
                for e in range(E)]
        obs, nxt, term, trunc, valid = (np.array(col) for col in zip(*rows))
        action = rng.integers(0, 6, E)
        reward = rng.normal(size=E).astype(np.float32)
        buf.add(obs, nxt, action, reward, term, trunc, valid=valid)
        for ref in refs:
            for e in range(E):
                ref.add(e, obs[e], nxt[e], action[e], reward[e], term[e], trunc[e], valid[e])


def all_ids(buf) -> np.ndarray:
    """Every sampleable transition id: with equal priorities a stratified draw of len(buf)
    takes each exactly once."""
    ids = buf.sample(len(buf)).index
    assert len(np.unique(ids)) == len(buf)
    return np.sort(ids)


def make(capacity=64, num_envs=2, n_step=1, **kw):
    return PrioritizedReplayBuffer(capacity, obs_shape(K, np.uint8), num_envs, frame_stack=K,
                                   n_step=n_step, seed=0, **kw)


@pytest.mark.parametrize("n_step", [1, 3])
def test_draws_only_real_closed_transitions_through_wraparound(n_step):
    buf = make(capacity=24, num_envs=3, n_step=n_step, gamma=0.9)
    ref = NStepReference(24, 3, K, n_step, 0.9)
    rng = np.random.default_rng(0)
    for chunk in range(6):
        stream_into(buf, [ref], 10, seed=chunk)
        expected = ref.stored()
        assert len(buf) == len(expected)
        assert buf.total_priority() > 0
        batch = buf.sample(len(buf), beta=0.5)
        for b, g in enumerate(batch.index):
            obs, nxt, action, reward, term, disc = expected[int(g)]
            assert batch.obs[b].tobytes() == obs.tobytes()
            assert batch.next_obs[b].tobytes() == nxt.tobytes()
            assert (batch.action[b], batch.reward[b], batch.terminated[b], batch.discount[b]) == (
                action, reward, term, disc)
        buf.update_priorities(batch.index, rng.uniform(0, 2, len(batch.index)))
        # The trees hold exactly the sampleable transitions: nothing else has priority.
        ids = np.array([slot * buf.num_envs + env for env, slot in ref.closed()], np.int64)
        np.testing.assert_allclose(buf.total_priority(), buf.priorities(ids).sum(), rtol=1e-12)


def test_draw_frequencies_match_priorities_chi_square():
    buf = make(capacity=64, num_envs=2, alpha=0.7, eps=0.01)
    stream_into(buf, [], 40, events=("step",))
    ids = all_ids(buf)
    rng = np.random.default_rng(3)
    td = rng.uniform(0, 3, len(ids))
    td[::7] = 0.0  # eps keeps them drawable
    assert buf.update_priorities(ids, td) == len(ids)
    p = (td + 0.01) ** 0.7
    np.testing.assert_allclose(buf.priorities(ids), p, rtol=1e-12)
    np.testing.assert_allclose(buf.total_priority(), p.sum(), rtol=1e-12)
    draws = 3000 if NO_JIT else 20000
    counts = np.zeros(len(ids))
    for _ in range(draws // 40):
        counts += np.bincount(np.searchsorted(ids, buf.sample(40).index), minlength=len(ids))
    expected = counts.sum() * p / p.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = len(ids) - 1
    # Far beyond the 99.9999th percentile of chi-square(dof); stratified draws only lower it.
    assert chi2 < dof + 8 * np.sqrt(dof) + 30, chi2
    # And it is not uniform: a wrong sampler would fail by a wide margin.
    uniform = counts.sum() / len(ids)
    assert ((counts - uniform) ** 2 / uniform).sum() > 4 * (dof + 8 * np.sqrt(dof) + 30)


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_weights_are_normalised_over_the_whole_buffer(beta):
    buf = make(capacity=48, num_envs=2)
    stream_into(buf, [], 30, events=("step",))
    ids = all_ids(buf)
    td = np.random.default_rng(4).exponential(size=len(ids))
    buf.update_priorities(ids, td)
    p = (td + buf.eps) ** buf.alpha
    N, P = len(ids), p / p.sum()
    w_all = (N * P) ** -beta
    batch = buf.sample(8, beta=beta)
    expected = w_all[np.searchsorted(ids, batch.index)] / w_all.max()
    np.testing.assert_allclose(batch.weight, expected.astype(np.float32), rtol=1e-6)
    assert batch.weight.dtype == np.float32 and isinstance(batch, PrioritizedBatch)


def test_new_transitions_get_the_largest_priority_so_far():
    buf = make(capacity=200, num_envs=2)
    stream_into(buf, [], 10, events=("step",))
    assert buf.max_priority == 1.0
    ids = all_ids(buf)
    buf.update_priorities(ids, np.linspace(0, 9, len(ids)))
    top = (9 + buf.eps) ** buf.alpha
    assert buf.max_priority == pytest.approx(top, rel=1e-12)
    buf.update_priorities(ids[:1], np.zeros(1))  # lowering one does not lower the maximum
    before, size = buf.total_priority(), len(buf)
    stream_into(buf, [], 5, seed=1, events=("step",))
    assert len(buf) > size
    assert buf.total_priority() - before == pytest.approx((len(buf) - size) * top, rel=1e-9)


def test_updates_for_overwritten_transitions_are_ignored():
    buf = make(capacity=16, num_envs=2)
    stream_into(buf, [], 12, events=("step",))
    old = buf.sample(8).index.copy()
    stream_into(buf, [], 20, seed=1, events=("step",))  # the ring turns over entirely
    total, top = buf.total_priority(), buf.max_priority
    assert buf.update_priorities(old, np.full(8, 100.0)) == 0
    assert (buf.total_priority(), buf.max_priority) == (total, top)
    # Mixed: only the live ids are written.
    live = buf.sample(4).index
    assert buf.update_priorities(np.concatenate([old[:3], live]), np.full(7, 5.0)) == len(np.unique(live))
    np.testing.assert_allclose(buf.priorities(live), (5 + buf.eps) ** buf.alpha)
    with pytest.raises(ReplayError, match="index"):
        buf.gather(old[:1])


def test_repeated_ids_later_wins():
    buf = make()
    stream_into(buf, [], 10, events=("step",))
    g = all_ids(buf)[:1]
    buf.update_priorities(np.concatenate([g, g]), np.array([4.0, 1.0]))
    np.testing.assert_allclose(buf.priorities(g), (1 + buf.eps) ** buf.alpha)


@pytest.mark.parametrize("index,priorities", [
    ("live", [np.nan]), ("live", [-1.0]), ("live", [np.inf]), ("live", [1e308]),
    ([-1], [1.0]), ("future", [1.0]), ("live", [1.0, 2.0]), ("live", ["a"]), ([[0]], [1.0]),
], ids=["nan", "negative", "inf", "overflow", "negative-id", "future-id", "shape", "dtype", "2d"])
def test_bad_update_raises_and_changes_nothing(index, priorities, tmp_path):
    buf = make(alpha=2.0)
    stream_into(buf, [], 10)
    g = int(buf.sample(1).index[0])
    index = {"live": [g], "future": [g + 10 ** 6 * buf.num_envs]}.get(str(index), index)
    buf.save(tmp_path / "before.bin")
    with pytest.raises(ReplayError):
        buf.update_priorities(np.array(index), np.array(priorities))
    buf.save(tmp_path / "after.bin")
    assert (tmp_path / "before.bin").read_bytes() == (tmp_path / "after.bin").read_bytes()


def test_save_load_keeps_priorities_and_maximum(tmp_path):
    buf = make(capacity=40, num_envs=2, n_step=2, alpha=0.5, eps=0.1, gamma=0.7)
    stream_into(buf, [], 25)
    buf.update_priorities(buf.sample(10).index, np.arange(10.0) * 3)
    buf.save(tmp_path / "per.bin")
    loaded = PrioritizedReplayBuffer.load(tmp_path / "per.bin")
    assert (loaded.alpha, loaded.eps, loaded.n_step, loaded.gamma) == (0.5, 0.1, 2, 0.7)
    assert (loaded.max_priority, loaded.total_priority(), len(loaded)) == (
        buf.max_priority, buf.total_priority(), len(buf))
    for a, b in zip(buf.sample(16, beta=0.6), loaded.sample(16, beta=0.6)):
        np.testing.assert_array_equal(a, b)
    # One class reads every variant's file; a thin constructor refuses the other sampler's.
    assert ReplayBuffer.load(tmp_path / "per.bin").prioritized
    uniform = ReplayBuffer(40, buf.obs_shape, 2, frame_stack=K)
    uniform.save(tmp_path / "uniform.bin")
    with pytest.raises(CheckpointError, match="holds a 'ReplayBuffer'"):
        PrioritizedReplayBuffer.load(tmp_path / "uniform.bin")


def test_memory_is_the_uniform_buffer_plus_two_trees():
    args = (2000, (4, 84, 84), 8)
    uniform = ReplayBuffer.required_bytes(*args, frame_stack=4)
    per = PrioritizedReplayBuffer.required_bytes(*args, frame_stack=4)
    slots = 8 * (2000 // 8 + 4 + 4 + 1)  # sampleable slots, then one add's guard slots, per env
    assert per - uniform == 2 * 2 * 8 * (1 << (slots - 1).bit_length())


@pytest.mark.parametrize("kwargs,name", [
    (dict(alpha=-0.1), "alpha"), (dict(alpha=float("nan")), "alpha"), (dict(eps=0.0), "eps"),
    (dict(eps="1"), "eps")])
def test_bad_options_are_refused(kwargs, name):
    with pytest.raises(ReplayError, match=name):
        make(**kwargs)


def test_bad_beta_is_refused():
    buf = make()
    stream_into(buf, [], 5)
    for beta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ReplayError, match="beta"):
            buf.sample(1, beta=beta)


@pytest.mark.parametrize("n_step", [1, 3])
def test_priorities_follow_transitions_through_wraparound(n_step):
    """Each id keeps the priority it was given until it is overwritten; ids that appear
    (new steps, closing windows, overwritten slots reused) start at the maximum."""
    buf = make(capacity=20, num_envs=2, n_step=n_step)
    ref = NStepReference(20, 2, K, n_step, 0.99)
    given = {}
    rng = np.random.default_rng(5)
    for chunk in range(8):
        stream_into(buf, [ref], 4, seed=chunk)
        ids = [slot * buf.num_envs + env for env, slot in ref.closed()]
        expected = np.array([given.get(g, buf.max_priority) for g in ids])
        np.testing.assert_allclose(buf.priorities(np.array(ids, np.int64)), expected, rtol=1e-12)
        td = rng.uniform(0, 0.5 if chunk % 2 else 3.0, len(ids))
        buf.update_priorities(np.array(ids, np.int64), td)
        given = dict(zip(ids, (td + buf.eps) ** buf.alpha))


@pytest.mark.parametrize("where,value", [("max", np.nan), ("max", 0.0), ("leaf", -1.0),
                                         ("leaf", np.inf), ("empty-leaf", 1.0)])
def test_load_refuses_tampered_priorities(where, value, tmp_path):
    buf = make(capacity=20, num_envs=2)
    stream_into(buf, [], 3, events=("step",))  # a few transitions: most slot ids hold none
    buf.save(tmp_path / "per.bin")
    data = bytearray((tmp_path / "per.bin").read_bytes())
    ids = buf.num_envs * buf.slots_per_env
    leaves = np.frombuffer(data, np.float64, count=2 * ids, offset=len(data) - 8 - 16 * ids).reshape(ids, 2)
    live = int(np.flatnonzero(leaves[:, 0] > 0)[0])
    empty = int(np.flatnonzero(leaves[:, 0] == 0)[0])
    offset = {"max": len(data) - 8, "leaf": len(data) - 8 - 16 * ids + 16 * live,
              "empty-leaf": len(data) - 8 - 16 * ids + 16 * empty}[where]
    data[offset:offset + 8] = np.float64(value).tobytes()
    (tmp_path / "per.bin").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        PrioritizedReplayBuffer.load(tmp_path / "per.bin")


def test_feeder_hands_out_prioritized_batches():
    buf = make()
    stream_into(buf, [], 20)
    with Feeder(buf, 4) as feeder:
        for _ in range(3):
            batch = feeder.next()
            feeder.wait_for_prefetch()
            assert isinstance(batch, PrioritizedBatch) and batch.frames is not None
            np.testing.assert_array_equal(batch.weight, buf.gather(batch.index).weight)
            np.testing.assert_array_equal(batch.obs, buf.gather(batch.index).obs)
            stream_into(buf, [], 1, seed=len(buf))
