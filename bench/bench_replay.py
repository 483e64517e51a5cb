"""Replay buffer speed and memory against a plain NumPy buffer that stores full stacks.

Atari shape (84x84, stack 4), 8 envs, capacity 200k when timed (a tiny capacity under
--benchmark-disable). Sampling is timed into stacked and window batches; each records the
bytes it reads from memory and writes per batch beside this machine's memcpy bandwidth
(a stacked batch reads 5 distinct frames per transition and writes 8, a window batch reads
and writes 5, the NumPy baseline reads and writes 8). The NumPy baseline holds obs and next_obs stacks (about 11 GB at
200k): it is created once for this module, its pages touched, and freed afterwards.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest

from fastdqn import ReplayBuffer
from fastdqn.tools.bench.baselines import NumpyStackBuffer

NUM_ENVS = 8
STACK = 4
FRAME = (84, 84)
BATCH = 32
EPISODE = 1_500  # steps per episode in the synthetic stream; envs reset at staggered times


class FrameStream:
    """An 8-env stream of (obs, next_obs) stacks that continue step to step, with resets."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.pool = rng.integers(0, 256, size=(509,) + FRAME, dtype=np.uint8)
        self.t = 0
        self.age = np.arange(NUM_ENVS) * (EPISODE // NUM_ENVS)
        self.cur = np.stack([self.pool[[e] * STACK] for e in range(NUM_ENVS)])

    def step(self) -> dict:
        self.t += 1
        new = self.pool[(self.t * 7 + np.arange(NUM_ENVS) * 61) % len(self.pool)]
        nxt = np.concatenate([self.cur[:, 1:], new[:, None]], axis=1)
        self.age += 1
        done = self.age >= EPISODE
        row = dict(obs=self.cur, next_obs=nxt, action=np.full(NUM_ENVS, self.t % 4),
                   reward=np.ones(NUM_ENVS, np.float32), terminated=done,
                   truncated=np.zeros(NUM_ENVS, bool))
        self.cur = nxt.copy()
        self.cur[done] = new[done][:, None]  # reset stack: the first frame repeated
        self.age[done] = 0
        return row


class NumpyFullStackReplay(NumpyStackBuffer):
    """The baseline: obs and next_obs stacks in two arrays, sampled by fancy indexing,
    full from the start with every page really allocated."""

    def __init__(self, capacity: int, seed: int = 0):
        super().__init__(capacity, (STACK,) + FRAME, seed=seed)
        self.obs.fill(1)
        self.next_obs.fill(1)
        self.size = capacity

    def add(self, obs, next_obs, action, reward, terminated, truncated) -> None:
        super().add(obs, next_obs, action, reward, terminated)

    def sample_into(self, out) -> None:
        """NumPy's best case: np.take into preallocated arrays (no allocation per call)."""
        i = self.rng.integers(0, self.size, len(out[0]))
        for src, dst in zip((self.obs, self.next_obs, self.action, self.reward,
                             self.terminated), out):
            np.take(src, i, axis=0, out=dst)


@pytest.fixture(scope="module")
def capacity(full_size) -> int:
    return 200_000 if full_size else 2_000


@pytest.fixture(scope="module")
def replay(capacity):
    buf = ReplayBuffer(capacity, (STACK,) + FRAME, NUM_ENVS, frame_stack=STACK, seed=0)
    stream = FrameStream()
    for _ in range(buf.slots_per_env + 100):  # past one full wrap: steady state
        buf.add(**stream.step())
    yield buf, stream
    del buf
    gc.collect()


@pytest.fixture(scope="module")
def baseline(capacity):
    base = NumpyFullStackReplay(capacity)
    yield base
    del base
    gc.collect()


@pytest.fixture(scope="module")
def memcpy_gb_per_s(full_size) -> float:
    """This machine's large-copy bandwidth (bytes copied per second), best of 5."""
    n = (256 if full_size else 4) * 2**20
    src, dst = np.ones(n, np.uint8), np.ones(n, np.uint8)
    best = min(_timed(np.copyto, dst, src) for _ in range(5))
    return n / best / 1e9


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def side_by_side(ours, theirs, setups=(dict, dict), rounds=300) -> float:
    """Median time of ``theirs`` over ``ours`` with calls alternating, so load drift on a
    shared machine hits both alike. ``setups`` make each call's (untimed) kwargs."""
    times = ([], [])
    for _ in range(rounds):
        for fn, setup, acc in zip((ours, theirs), setups, times):
            kwargs = setup()
            t = time.perf_counter()
            fn(**kwargs)
            acc.append(time.perf_counter() - t)
    return round(float(np.median(times[1]) / np.median(times[0])), 2)


def assert_added_rows(stream, obs, next_obs, action, reward) -> None:
    """Sampled rows are transitions the stream added: ``next_obs`` is ``obs`` shifted by one
    frame plus a frame of the stream's pool, the reward is the stream's 1 and the action one of
    its 4."""
    pool = {frame.tobytes() for frame in stream.pool}
    assert np.array_equal(next_obs[:, :-1], obs[:, 1:])
    assert all(frame.tobytes() in pool for frame in next_obs[:, -1])
    assert np.all(reward == 1.0) and set(np.asarray(action).tolist()) <= {0, 1, 2, 3}


def record(benchmark, transitions: int, nbytes: int, **extra) -> None:
    benchmark.extra_info.update(extra)
    if benchmark.stats is None:  # --benchmark-disable
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["transitions_per_s"] = round(transitions / median)
    benchmark.extra_info["gb_per_s"] = round(nbytes / median / 1e9, 3)


FRAME_BYTES = FRAME[0] * FRAME[1]
STEP_BYTES = 2 * NUM_ENVS * STACK * FRAME_BYTES  # obs + next_obs of one 8-env step
SCALAR_BYTES = BATCH * (8 + 4 + 1 + 8)
BATCH_BYTES = 2 * BATCH * STACK * FRAME_BYTES + SCALAR_BYTES  # a stacked batch; NumPy's traffic
WINDOW_BYTES = BATCH * (STACK + 1) * FRAME_BYTES + SCALAR_BYTES  # a window batch; frames read


@pytest.mark.benchmark(group="replay.add")
def test_add_fastdqn(benchmark, replay, baseline, capacity, full_size):
    buf, stream = replay
    benchmark.pedantic(buf.add, setup=lambda: ((), stream.step()), rounds=2_000)
    other = FrameStream(seed=2)
    ratio = (side_by_side(buf.add, baseline.add, (stream.step, other.step))
             if full_size else None)
    record(benchmark, NUM_ENVS, STEP_BYTES, capacity=capacity, speedup_vs_numpy_side_by_side=ratio,
           bytes_per_transition_capacity=round(buf.nbytes / buf.capacity, 1),
           bytes_per_transition_stored=round(buf.nbytes / len(buf), 1))
    if full_size:
        assert buf.nbytes / buf.capacity <= 7_100
    assert len(buf) >= capacity - NUM_ENVS * 2 * STACK  # full, less about a slot per episode start
    batch = buf.sample(BATCH)
    assert_added_rows(stream, batch.obs, batch.next_obs, batch.action, batch.reward)


@pytest.mark.benchmark(group="replay.add")
def test_add_numpy_full_stack(benchmark, baseline, capacity):
    stream = FrameStream(seed=1)
    benchmark.pedantic(baseline.add, setup=lambda: ((), stream.step()), rounds=2_000)
    newest = (baseline.pos - NUM_ENVS) % capacity  # the last add wrote NUM_ENVS rows from here
    assert np.array_equal(baseline.next_obs[newest:newest + NUM_ENVS, :-1], baseline.obs[newest:newest + NUM_ENVS, 1:])
    assert np.all(baseline.reward[newest:newest + NUM_ENVS] == 1.0)
    record(benchmark, NUM_ENVS, STEP_BYTES, capacity=capacity,
           bytes_per_transition_capacity=round(baseline.nbytes / capacity, 1))


@pytest.mark.benchmark(group="replay.sample")
def test_sample_fastdqn(benchmark, replay, baseline, capacity, full_size, memcpy_gb_per_s):
    buf, stream = replay
    out = buf.make_batch(BATCH)
    benchmark(buf.sample, BATCH, out=out)
    assert out.obs.shape == (BATCH, STACK, *FRAME)
    assert_added_rows(stream, out.obs, out.next_obs, out.action, out.reward)

    def ours():
        buf.sample(BATCH, out=out)

    ratios = {}
    if full_size:
        ratios["speedup_vs_numpy_side_by_side"] = side_by_side(ours, lambda: baseline.sample(BATCH))
        numpy_out = buf.make_batch(BATCH)[:5]
        ratios["speedup_vs_numpy_take_out_side_by_side"] = side_by_side(
            ours, lambda: baseline.sample_into(numpy_out))
    record(benchmark, BATCH, BATCH_BYTES, capacity=capacity, batch_size=BATCH, **ratios,
           bytes_read_per_batch=WINDOW_BYTES, bytes_written_per_batch=BATCH_BYTES,
           memcpy_gb_per_s=round(memcpy_gb_per_s, 2))


@pytest.mark.benchmark(group="replay.sample")
def test_sample_fastdqn_window(benchmark, replay, baseline, capacity, full_size, memcpy_gb_per_s):
    buf, stream = replay
    out = buf.make_batch(BATCH, window=True)
    benchmark(buf.sample, BATCH, out=out)
    assert out.frames.shape == (BATCH, STACK + 1, *FRAME)
    assert_added_rows(stream, out.obs, out.next_obs, out.action, out.reward)
    # The window rows are the stacked rows of the same transitions.
    again = buf.gather(out.index)
    assert np.array_equal(again.obs, out.obs) and np.array_equal(again.next_obs, out.next_obs)

    def ours():
        buf.sample(BATCH, out=out)

    ratios = {}
    if full_size:
        numpy_out = buf.make_batch(BATCH)[:5]
        ratios["speedup_vs_numpy_take_out_side_by_side"] = side_by_side(
            ours, lambda: baseline.sample_into(numpy_out))
        stacked = buf.make_batch(BATCH)
        ratios["speedup_vs_stacked_side_by_side"] = side_by_side(
            ours, lambda: buf.sample(BATCH, out=stacked))
    record(benchmark, BATCH, WINDOW_BYTES, capacity=capacity, batch_size=BATCH, **ratios,
           bytes_read_per_batch=WINDOW_BYTES, bytes_written_per_batch=WINDOW_BYTES,
           memcpy_gb_per_s=round(memcpy_gb_per_s, 2))


@pytest.mark.benchmark(group="replay.sample")
def test_sample_numpy_full_stack(benchmark, baseline, capacity, memcpy_gb_per_s):
    obs, next_obs, action, reward, terminated = benchmark(baseline.sample, BATCH)
    assert obs.shape == next_obs.shape == (BATCH, STACK, *FRAME) and obs.dtype == np.uint8
    assert action.shape == reward.shape == terminated.shape == (BATCH,)
    record(benchmark, BATCH, BATCH_BYTES, capacity=capacity, batch_size=BATCH,
           memcpy_gb_per_s=round(memcpy_gb_per_s, 2))


@pytest.mark.benchmark(group="replay.sample")
def test_sample_numpy_full_stack_take_out(benchmark, baseline, capacity, memcpy_gb_per_s):
    out = (np.empty((BATCH, STACK) + FRAME, np.uint8), np.empty((BATCH, STACK) + FRAME, np.uint8),
           np.empty(BATCH, np.int64), np.empty(BATCH, np.float32), np.empty(BATCH, bool))
    benchmark(baseline.sample_into, out)
    # np.take into out= draws the same rows as the allocating sample given the same RNG state.
    state = baseline.rng.bit_generator.state
    baseline.sample_into(out)
    baseline.rng.bit_generator.state = state
    for got, want in zip(out, baseline.sample(BATCH)):
        assert np.array_equal(got, want)
    record(benchmark, BATCH, BATCH_BYTES, capacity=capacity, batch_size=BATCH,
           bytes_read_per_batch=BATCH_BYTES, bytes_written_per_batch=BATCH_BYTES,
           memcpy_gb_per_s=round(memcpy_gb_per_s, 2))
