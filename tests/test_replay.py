"""ReplayBuffer against the naive full-copy reference in reference_replay.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdqn import CheckpointError, ReplayBatch, ReplayBuffer, ReplayError, ReplayStateError
from reference_replay import ReferenceReplay

NO_JIT = numba.config.DISABLE_JIT
FRAME = (3, 4)  # 12 bytes: the kernels compare 8-byte words plus a tail

EVENTS = ("step", "step", "step", "life", "over", "trunc", "skip")


class FakeEnvs:
    """Vector env whose frames encode (env, frame id) in their pixels.

    Mimics EnvPool: a game over or truncation is followed by a reset step (final obs ->
    reset obs, passed with valid=False), a reset stack repeats its first frame, a life
    loss ends with terminated=True while the stack goes on. ``skip`` jumps to an
    unrelated stack, as if the caller had dropped steps.
    """

    def __init__(self, num_envs: int, k: int, dtype):
        self.k, self.dtype, self.next_id = k, np.dtype(dtype), 1
        self.cur = [self.reset_stack(e, False) for e in range(num_envs)]
        self.ended = [False] * num_envs

    def frame(self, env: int, plain: bool) -> np.ndarray:
        """A new frame; ``plain`` ones are all equal, so stacks collide on purpose."""
        fid, self.next_id = self.next_id, self.next_id + 1
        if self.dtype == np.uint8:
            if plain:
                return np.zeros(FRAME, np.uint8)
            # Most frames of one env differ only in their last 4 bytes, some in the first 8.
            head = (fid & 255) if fid % 3 == 0 else 0
            return np.array([env, fid >> 8, 0, 0, 0, 0, 0, head,
                             fid & 255, (fid * 37) & 255, 5, 9], np.uint8).reshape(FRAME)
        if plain:
            return np.array([0.0, -0.0, np.nan, 1.0], self.dtype)
        return np.array([env, fid, -fid * 0.5, np.float32(fid) / 3], self.dtype)

    def reset_stack(self, env: int, plain: bool) -> np.ndarray:
        f = self.frame(env, plain)
        return np.stack([f] * self.k) if self.k > 1 else f

    def arbitrary_stack(self, env: int, repeats: int, plain: bool) -> np.ndarray:
        if self.k == 1:
            return self.frame(env, plain)
        first = self.frame(env, plain)
        rest = [self.frame(env, plain) for _ in range(self.k - 1 - min(repeats, self.k - 1))]
        return np.stack([first] * (self.k - len(rest)) + rest)

    def shifted(self, obs: np.ndarray, frame: np.ndarray) -> np.ndarray:
        return np.concatenate([obs[1:], frame[None]]) if self.k > 1 else frame

    def step(self, env: int, event: str, plain: bool, repeats: int):
        """One row (obs, next_obs, terminated, truncated, valid) for ``env``."""
        obs = self.cur[env]
        if self.ended[env]:
            self.ended[env] = False
            self.cur[env] = self.reset_stack(env, plain)
            return obs, self.cur[env], False, False, False
        nxt = self.shifted(obs, self.frame(env, plain))
        self.ended[env] = event in ("over", "trunc")
        self.cur[env] = self.arbitrary_stack(env, repeats, plain) if event == "skip" else nxt
        return obs, nxt, event in ("life", "over"), event == "trunc", True


def obs_shape(k: int, dtype) -> tuple:
    if np.dtype(dtype) != np.uint8:
        return (4,)
    return (k,) + FRAME if k > 1 else FRAME


def assert_same(batch: ReplayBatch, stored: dict) -> None:
    for b, g in enumerate(batch.index):
        assert int(g) in stored, f"index {g} is not stored in the reference"
        obs, nxt, action, reward, term = stored[int(g)]
        assert batch.obs[b].tobytes() == obs.tobytes()
        assert batch.next_obs[b].tobytes() == nxt.tobytes()
        assert (batch.action[b], batch.reward[b], batch.terminated[b]) == (action, reward, term)


def check_against_reference(buf: ReplayBuffer, ref: ReferenceReplay, rng) -> None:
    stored = ref.stored()
    assert len(buf) == len(stored)
    if not stored:
        with pytest.raises(ReplayStateError):
            buf.sample(1)
        return
    index = np.array(sorted(stored), np.int64)
    batch = buf.gather(index)
    assert_same(batch, stored)
    assert batch.index.dtype == np.int64 and batch.action.dtype == np.int64
    assert_same(buf.sample(len(stored)), stored)
    if buf.frame_stack > 1:
        window = buf.make_batch(len(stored), window=True)
        assert_same(buf.gather(index, out=window), stored)
        assert_same(buf.sample(len(stored), out=window), stored)
        np.testing.assert_array_equal(window.frames[:, :-1], window.obs)
        np.testing.assert_array_equal(window.frames[:, 1:], window.next_obs)
    others = np.setdiff1d(np.concatenate([[-1], all_ids(buf), [index.max() + buf.num_envs]]), index)
    bad = rng.choice(others, size=min(3, len(others)), replace=False)
    for g in bad:
        with pytest.raises(ReplayError, match="index"):
            buf.gather(np.array([index[0], g]))


def draw_step(data, envs: FakeEnvs, num_envs: int, k: int, async_mode: bool):
    """One vector step of ``envs`` drawn by hypothesis: the env ids (all of them in order,
    or some in any order when ``async_mode``) and their rows (obs, next_obs, terminated,
    truncated, valid)."""
    if async_mode:
        ids = data.draw(st.permutations(range(num_envs)), label="order")
        ids = ids[:data.draw(st.integers(1, num_envs), label="batch")]
    else:
        ids = list(range(num_envs))
    rows = []
    for e in ids:
        event = data.draw(st.sampled_from(EVENTS), label="event")
        plain = data.draw(st.integers(0, 9), label="plain") == 0
        repeats = data.draw(st.integers(0, k - 1), label="repeats")
        rows.append(envs.step(e, event, plain, repeats))
    return (ids, *(np.array(col) for col in zip(*rows)))


def run_stream(data, k: int, dtype, steps: int) -> None:
    num_envs = data.draw(st.integers(1, 3), label="num_envs")
    capacity = data.draw(st.integers(num_envs * k, num_envs * (k + 6)), label="capacity")
    async_mode = data.draw(st.booleans(), label="async")
    buf = ReplayBuffer(capacity, obs_shape(k, dtype), num_envs, obs_dtype=dtype,
                       frame_stack=k, seed=0)
    ref = ReferenceReplay(capacity, num_envs, k)
    envs = FakeEnvs(num_envs, k, dtype)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        ids, obs, nxt, term, trunc, valid = draw_step(data, envs, num_envs, k, async_mode)
        action = rng.integers(0, 6, len(ids))
        reward = rng.normal(size=len(ids)).astype(np.float32)
        buf.add(obs=obs, next_obs=nxt, action=action, reward=reward, terminated=term,
                truncated=trunc, env_ids=np.array(ids) if async_mode else None, valid=valid)
        for i, e in enumerate(ids):
            if valid[i]:
                ref.add(e, obs[i], nxt[i], action[i], reward[i], term[i])
        check_against_reference(buf, ref, rng)


PROPERTY = settings(max_examples=5 if NO_JIT else 100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=st.data(), k=st.integers(2, 4))
def test_stacks_match_reference(data, k):
    run_stream(data, k, np.uint8, steps=30)


@PROPERTY
@given(data=st.data(), dtype=st.sampled_from([np.uint8, np.float32]))
def test_single_frames_match_reference(data, dtype):
    run_stream(data, 1, dtype, steps=25)


def test_atari_sized_stack_round_trip():
    k, shape = 4, (4, 84, 84)
    buf = ReplayBuffer(64, shape, 2, frame_stack=k, seed=1)
    ref = ReferenceReplay(64, 2, k)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(200, 84, 84), dtype=np.uint8)
    obs = np.stack([frames[[0, 0, 0, 0]], frames[[10, 11, 12, 13]]])
    for t in range(1, 60):
        nxt = np.concatenate([obs[:, 1:], frames[[t + 20, t + 100]][:, None]], axis=1)
        term = np.array([t % 7 == 0, False])
        buf.add(obs, nxt, np.array([t, -t]), np.full(2, t, np.float32), term, np.zeros(2, bool))
        for e in range(2):
            ref.add(e, obs[e], nxt[e], [t, -t][e], t, term[e])
        obs = nxt
    check_against_reference(buf, ref, rng)


def filled_buffer(k=4, capacity=40, num_envs=2, seed=0, steps=25) -> ReplayBuffer:
    buf = ReplayBuffer(capacity, (k,) + FRAME, num_envs, frame_stack=k, seed=seed)
    envs = FakeEnvs(num_envs, k, np.uint8)
    for t in range(steps):
        rows = [envs.step(e, EVENTS[(t + e) % len(EVENTS)], False, t % k) for e in range(num_envs)]
        obs, nxt, term, trunc, valid = (np.array(col) for col in zip(*rows))
        buf.add(obs, nxt, np.arange(num_envs), np.ones(num_envs, np.float32), term, trunc,
                valid=valid)
    return buf


def all_ids(buf: ReplayBuffer) -> np.ndarray:
    """The transition id of every slot's newest write: a superset of the stored transitions."""
    return buf.transition_ids(np.arange(buf.num_envs * buf.slots_per_env))


def gathers(buf: ReplayBuffer, g: int) -> bool:
    try:
        buf.gather(np.array([g]))
    except ReplayError:
        return False
    return True


def test_sampling_is_uniform_over_valid_transitions():
    buf = filled_buffer(capacity=60, steps=40)
    n = len(buf)
    valid = [g for g in all_ids(buf) if gathers(buf, g)]
    assert len(valid) == n
    draws = np.concatenate([buf.sample(n).index for _ in range(20_000 // n)])
    ids, counts = np.unique(draws, return_counts=True)
    assert set(ids.tolist()) == set(valid)
    expected = len(draws) / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 99.9999th percentile of chi-square with n-1 dof is below n + 8 sqrt(n) + 30 for these n.
    assert chi2 < n + 8 * np.sqrt(n) + 30, chi2


def test_seed_makes_sampling_reproducible():
    a, b, c = filled_buffer(seed=5), filled_buffer(seed=5), filled_buffer(seed=6)
    ia, ib, ic = (buf.sample(16).index for buf in (a, b, c))
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(ia, ic)


def test_batch_fields_follow_the_contract():
    buf = filled_buffer()
    batch = buf.sample(4)
    assert ReplayBatch._fields == ("obs", "next_obs", "action", "reward", "terminated", "discount",
                                   "index")
    assert batch.frames is None
    assert [(x.dtype, x.shape) for x in batch] == [
        (np.dtype(np.uint8), (4, 4) + FRAME), (np.dtype(np.uint8), (4, 4) + FRAME),
        (np.dtype(np.int64), (4,)), (np.dtype(np.float32), (4,)), (np.dtype(bool), (4,)),
        (np.dtype(np.float32), (4,)), (np.dtype(np.int64), (4,))]
    assert [(x.dtype, x.shape) for x in buf.make_batch(4)] == [(x.dtype, x.shape) for x in batch]


def test_sample_fills_out_arrays():
    buf = filled_buffer()
    out = buf.make_batch(8)
    batch = buf.sample(8, out=out)
    assert all(x is y for x, y in zip(batch, out))
    again = buf.gather(out.index.copy())
    for x, y in zip(again, out):
        np.testing.assert_array_equal(x, y)
    user = ReplayBatch(*(np.zeros_like(x) for x in out))
    assert buf.gather(out.index, out=user).obs is user.obs
    np.testing.assert_array_equal(user.next_obs, out.next_obs)


def test_save_load_round_trip_continues_sampling(tmp_path):
    buf = filled_buffer(seed=3)
    path = tmp_path / "replay.bin"
    buf.save(path)
    loaded = ReplayBuffer.load(path)
    assert (loaded.capacity, loaded.num_envs, loaded.obs_shape, loaded.frame_stack,
            loaded.obs_dtype, len(loaded), loaded.nbytes) == (
        buf.capacity, buf.num_envs, buf.obs_shape, buf.frame_stack, buf.obs_dtype, len(buf),
        buf.nbytes)
    for _ in range(3):
        x, y = buf.sample(10), loaded.sample(10)
        for a, b in zip(x, y):
            np.testing.assert_array_equal(a, b)
    ReplayBuffer.load(path).save(tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == path.read_bytes()


def test_float_buffer_round_trip(tmp_path):
    buf = ReplayBuffer(10, (4,), 2, obs_dtype=np.float32, seed=0)
    obs = np.array([[np.nan, -0.0, 1, 2], [3, 4, 5, 6]], np.float32)
    buf.add(obs, obs + 1, np.array([0, 1]), np.zeros(2, np.float32), np.zeros(2, bool),
            np.zeros(2, bool))
    buf.save(tmp_path / "f.bin")
    loaded = ReplayBuffer.load(tmp_path / "f.bin")
    assert len(loaded) == 2
    # Each env's first transition has transition id 0 * num_envs + env.
    batch = loaded.gather(np.array([0, 1]))
    assert batch.obs.tobytes() == obs.tobytes()
    assert batch.next_obs.tobytes() == (obs + 1).tobytes()
    np.testing.assert_array_equal(batch.action, [0, 1])


def test_failed_save_keeps_earlier_file(tmp_path, monkeypatch):
    buf = filled_buffer()
    path = tmp_path / "replay.bin"
    buf.save(path)
    before = path.read_bytes()
    buf.add(**add_args(buf))

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        buf.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["replay.bin"]


def test_load_rejects_other_and_truncated_files(tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(b"not a replay buffer at all, just some bytes")
    with pytest.raises(CheckpointError, match="not a fastdqn replay buffer"):
        ReplayBuffer.load(other)
    path = tmp_path / "replay.bin"
    filled_buffer().save(path)
    data = path.read_bytes()
    for cut in (10, 30, len(data) - 1):
        (tmp_path / "cut.bin").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="cut.bin"):
            ReplayBuffer.load(tmp_path / "cut.bin")
    with pytest.raises(CheckpointError, match="missing.bin"):
        ReplayBuffer.load(tmp_path / "missing.bin")


def add_args(buf: ReplayBuffer, n=None):
    n = buf.num_envs if n is None else n
    envs = FakeEnvs(n, buf.frame_stack, np.uint8)
    obs, nxt, term, trunc, _ = (np.array(col) for col in zip(*[envs.step(e, "step", False, 0)
                                                               for e in range(n)]))
    return dict(obs=obs, next_obs=nxt, action=np.arange(n), reward=np.zeros(n, np.float32),
                terminated=term, truncated=trunc)


def bad_adds(buf: ReplayBuffer):
    good = add_args(buf)
    shifted_wrong = good["next_obs"].copy()
    shifted_wrong[1, 0] += 1
    return [
        ("obs", dict(obs=good["obs"].astype(np.int16))),
        ("obs", dict(obs=good["obs"][:, :3])),
        ("next_obs", dict(next_obs=good["next_obs"][:2])),
        ("next_obs", dict(next_obs=shifted_wrong)),
        ("action", dict(action=np.zeros(3, np.float32))),
        ("action", dict(action=np.zeros(2, np.int64))),
        ("action", dict(action=np.array([0, 2**40, 0]))),
        ("reward", dict(reward=np.zeros(3, np.int64))),
        ("reward", dict(reward=np.zeros((3, 1), np.float32))),
        ("terminated", dict(terminated=np.zeros(3, np.int8))),
        ("truncated", dict(truncated=np.zeros(4, bool))),
        ("env_ids", dict(env_ids=np.array([0, 1, 3]))),
        ("env_ids", dict(env_ids=np.array([0, -1, 2]))),
        ("env_ids", dict(env_ids=np.array([2, 0, 2]))),
        ("env_ids", dict(env_ids=np.array([0.0, 1.0, 2.0]))),
        ("env_ids", {k: v[:2] for k, v in good.items()}),
        ("valid", dict(valid=np.ones(3, np.int64))),
    ]


def test_bad_add_raises_and_changes_nothing(tmp_path):
    buf = filled_buffer(num_envs=3, capacity=60)
    buf.save(tmp_path / "before.bin")
    before = (tmp_path / "before.bin").read_bytes()
    for name, change in bad_adds(buf):
        args = {**add_args(buf), **change}
        with pytest.raises(ReplayError, match=name):
            buf.add(**args)
        buf.save(tmp_path / "after.bin")
        assert (tmp_path / "after.bin").read_bytes() == before, name


def test_bad_construction_and_sampling():
    shape = (4,) + FRAME
    cases = [
        ("capacity", lambda: ReplayBuffer(7, shape, 2, frame_stack=4)),
        ("capacity", lambda: ReplayBuffer(2.5, shape, 1, frame_stack=4)),
        ("num_envs", lambda: ReplayBuffer(100, shape, 0, frame_stack=4)),
        ("frame_stack", lambda: ReplayBuffer(100, shape, 1, frame_stack=0)),
        ("obs_shape", lambda: ReplayBuffer(100, (3,) + FRAME, 1, frame_stack=4)),
        ("obs_shape", lambda: ReplayBuffer(100, (4, 0), 1)),
        ("obs_dtype", lambda: ReplayBuffer(100, shape, 1, obs_dtype=np.float32, frame_stack=4)),
    ]
    for name, make in cases:
        with pytest.raises(ReplayError, match=name):
            make()
    empty = ReplayBuffer(100, shape, 2, frame_stack=4)
    with pytest.raises(ReplayStateError, match="empty"):
        empty.sample(1)
    buf = filled_buffer()
    with pytest.raises(ReplayError, match="batch_size"):
        buf.sample(len(buf) + 1)
    with pytest.raises(ReplayError, match="batch_size"):
        buf.sample(0)
    with pytest.raises(ReplayError, match="out.obs"):
        buf.sample(4, out=buf.make_batch(5))
    wrong = buf.make_batch(4)._replace(reward=np.zeros(4, np.float64))
    with pytest.raises(ReplayError, match="out.reward"):
        buf.sample(4, out=wrong)
    with pytest.raises(ReplayError, match="index"):
        buf.gather(np.array([[0]]))


def test_memory_error_names_the_size():
    with pytest.raises(MemoryError, match=r"needs [0-9.]+ GB \(\d+ bytes\)"):
        ReplayBuffer(10**12, (4, 84, 84), 8, frame_stack=4)


def test_nbytes_per_transition_atari():
    buf = ReplayBuffer(200_000, (4, 84, 84), 8, frame_stack=4)
    assert buf.nbytes / buf.capacity <= 7_100


@pytest.mark.skipif(NO_JIT, reason="already running without JIT")
def test_kernels_without_jit():
    """Run the reference tests with the kernels as plain Python (real index errors)."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    here = Path(__file__).resolve()
    tests = [f"{here}::{name}" for name in ("test_stacks_match_reference",
                                            "test_single_frames_match_reference",
                                            "test_bad_add_raises_and_changes_nothing")]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "--benchmark-disable", *tests], env=env, cwd=here.parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
