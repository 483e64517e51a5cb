"""Window batches, and sampling in one thread while another thread adds."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fastdqn import (DevicePrioritizedReplayBuffer, DeviceReplayBuffer, ReplayBatch, ReplayBuffer,
                     ReplayError)
from fastdqn.replay.batch import FIELDS
from fastdqn.pipeline.feeder import Feeder
from reference_nstep import NStepReference
from test_replay import gathers

K = 4
FRAME = (6, 6)


def stamped_stream(num_envs: int, steps: int, seed: int = 0) -> tuple[list[dict], dict]:
    """``add`` kwargs for ``steps`` vector steps whose frames encode (env, frame id), with
    EnvPool's episode rules (reset rows invalid, reset stacks repeat their frame, life
    losses terminate, truncations do not); and key -> step of every valid transition."""
    rng = np.random.default_rng(seed)
    next_id = [1]

    def frame(env):
        fid, next_id[0] = next_id[0], next_id[0] + 1
        f = np.full(FRAME, 7, np.uint8)
        f[0, :4] = env, fid & 255, (fid >> 8) & 255, (fid >> 16) & 255
        return f

    def reset(env):
        return np.stack([frame(env)] * K)

    cur = [reset(e) for e in range(num_envs)]
    ended = [False] * num_envs
    stream, keys = [], {}
    for t in range(steps):
        obs = np.stack(cur)
        nxt, term, trunc, valid = obs.copy(), np.zeros(num_envs, bool), np.zeros(num_envs, bool), \
            np.ones(num_envs, bool)
        for e in range(num_envs):
            if ended[e]:
                ended[e], valid[e] = False, False
                nxt[e] = reset(e)
            else:
                nxt[e] = np.concatenate([obs[e, 1:], frame(e)[None]])
                u = rng.random()
                term[e], trunc[e] = u < 0.08, 0.08 <= u < 0.1
                ended[e] = u < 0.04 or trunc[e]  # a game over or a truncation; else a life loss
            cur[e] = nxt[e]
        action = rng.integers(0, 6, num_envs)
        reward = rng.integers(-1, 2, num_envs).astype(np.float32)
        stream.append(dict(obs=obs, next_obs=nxt, action=action, reward=reward, terminated=term,
                           truncated=trunc, valid=valid))
        for e in np.flatnonzero(valid):
            keys[key(obs[e], nxt[e], action[e], reward[e], term[e])] = t
    return stream, keys


def key(obs, next_obs, action, reward, terminated) -> tuple:
    return hash(obs.tobytes()), hash(next_obs.tobytes()), int(action), float(reward), bool(terminated)


# Every variant keeps the same thread contract: (prioritized, frames in a torch tensor).
VARIANTS = [(False, False), (True, False), (False, True), (True, True)]
VARIANT_IDS = ["uniform", "prioritized", "uniform-tensor", "prioritized-tensor"]


def build(variant, *args, **kwargs) -> ReplayBuffer:
    prioritized, tensor = variant
    if tensor:
        pytest.importorskip("torch")
        cls = DevicePrioritizedReplayBuffer if prioritized else DeviceReplayBuffer
        return cls(*args, device="cpu", **kwargs)
    return ReplayBuffer(*args, prioritized=prioritized, **kwargs)


def host(batch: ReplayBatch) -> ReplayBatch:
    """A batch's fields as NumPy arrays (device buffers hand out torch tensors)."""
    return batch._replace(**{name: value.numpy() for name, value in batch._asdict().items()
                             if hasattr(value, "numpy") and not isinstance(value, np.ndarray)})


def rows(batch: ReplayBatch):
    batch = host(batch)
    for b in range(batch.index.shape[0]):
        yield key(batch.obs[b], batch.next_obs[b], batch.action[b], batch.reward[b],
                  batch.terminated[b])


def nstep_rows(batch: ReplayBatch):
    batch = host(batch)
    for b, k in enumerate(rows(batch)):
        yield k + (float(batch.discount[b]),)


def nstep_keys(steps: list[dict], n: int, gamma: float) -> set:
    """Keys of every n-step transition of ``steps`` added in order, from the hand-built
    windows of reference_nstep (its ring large enough to keep them all)."""
    num_envs = steps[0]["obs"].shape[0]
    ref = NStepReference(10 * len(steps) * num_envs, num_envs, K, n, gamma)
    for kwargs in steps:
        for e in range(num_envs):
            ref.add(e, *(kwargs[name][e] for name in ("obs", "next_obs", "action", "reward",
                                                      "terminated", "truncated", "valid")))
    return {key(*w[:5]) + (float(w[5]),) for w in ref.closed().values()}


def test_window_batches_need_one_step():
    buf = ReplayBuffer(64, (K, *FRAME), 2, frame_stack=K, n_step=3, seed=0)
    assert not buf.window_batches
    with pytest.raises(ReplayError, match="window: expected window=False for n_step=3.*n_step=1"):
        buf.make_batch(4, window=True)
    for kwargs in stamped_stream(2, 30)[0]:
        buf.add(**kwargs)
    with Feeder(buf, 4) as feeder:  # picks stacked batches for this buffer
        batch = feeder.next()
        feeder.wait_for_prefetch()
        assert not feeder.window and batch.frames is None
        same = buf.gather(batch.index)
        for name in ReplayBatch._fields:
            np.testing.assert_array_equal(getattr(batch, name), getattr(same, name))


def test_window_batch_is_views_of_one_frames_array():
    buf = ReplayBuffer(64, (K, *FRAME), 2, frame_stack=K, seed=0)
    batch = buf.make_batch(5, window=True)
    assert batch.frames.shape == (5, K + 1, *FRAME) and batch.frames.flags.c_contiguous
    assert np.shares_memory(batch.obs, batch.frames) and np.shares_memory(batch.next_obs, batch.frames)
    batch.frames[...] = np.arange(K + 1, dtype=np.uint8)[None, :, None, None]
    assert (batch.obs[:, 0] == 0).all() and (batch.next_obs[:, 0] == 1).all()
    assert (batch.next_obs[:, -1] == K).all()
    # Field shapes and dtypes are those of a stacked batch.
    stacked = buf.make_batch(5)
    assert [(x.dtype, x.shape) for x in batch] == [(x.dtype, x.shape) for x in stacked]
    assert stacked.frames is None and [f.name for f in FIELDS] == list(ReplayBatch._fields)


def test_window_batches_equal_stacked_batches_on_every_row():
    stream, keys = stamped_stream(3, 120)
    buf = ReplayBuffer(90, (K, *FRAME), 3, frame_stack=K, seed=1)
    for t, kwargs in enumerate(stream):
        buf.add(**kwargs)
        if t % 7 or len(buf) == 0:
            continue
        index = np.array([g for g in buf.transition_ids(np.arange(buf.num_envs * buf.slots_per_env))
                          if gathers(buf, g)], np.int64)
        assert len(index) == len(buf)
        stacked = buf.gather(index)
        window = buf.gather(index, out=buf.make_batch(len(index), window=True))
        for name in ReplayBatch._fields:
            np.testing.assert_array_equal(getattr(window, name), getattr(stacked, name))
        assert all(k in keys for k in rows(window))


def test_window_errors_name_the_fix():
    buf = ReplayBuffer(64, (K, *FRAME), 2, frame_stack=K, seed=0)
    flat = ReplayBuffer(16, (4,), 2, obs_dtype=np.float32, seed=0)
    with pytest.raises(ReplayError, match="window: expected window=False for frame_stack=1"):
        flat.make_batch(4, window=True)
    for kwargs in stamped_stream(2, 10)[0]:
        buf.add(**kwargs)
    window = buf.make_batch(4, window=True)
    mixed = window._replace(next_obs=np.ascontiguousarray(window.next_obs))
    with pytest.raises(ReplayError, match="out.obs: expected a writeable C-contiguous"):
        buf.sample(4, out=mixed)
    with pytest.raises(ReplayError, match=r"out.frames: expected uint8 array of shape \(3, 5"):
        buf.sample(3, out=window)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("n_step", [1, 3])
def test_rows_an_add_overwrote_between_draw_and_fill_are_drawn_again(n_step, variant):
    """``draw``, adds, then ``fill``: what a background copy meets when adds run beside it.
    Every row must be a transition (an n-step one: its whole window) still in the buffer
    after the adds."""
    num_envs, B = 2, 16
    stream, keys = stamped_stream(num_envs, 400)
    row_keys = rows
    if n_step > 1:
        keys, row_keys = nstep_keys(stream, n_step, 0.9), nstep_rows
    buf = build(variant, num_envs * 12, (K, *FRAME), num_envs, frame_stack=K, n_step=n_step, gamma=0.9, seed=3)
    redrawn = 0
    for t, kwargs in enumerate(stream[:60]):
        buf.add(**kwargs)
    for t in range(60, 400, 4):
        size = min(B, len(buf))  # open n-step windows leave fewer sampleable
        out = buf.draw(size, buf.make_batch(size, window=buf.window_batches and t % 8 == 0))
        drawn = out.index.copy()
        for kwargs in stream[t:t + 4]:
            buf.add(**kwargs)
        buf.fill(out)
        redrawn += int((out.index != drawn).sum())
        valid = host(buf.gather(out.index))  # raises unless each row is still a stored transition
        for name in ReplayBatch._fields:
            np.testing.assert_array_equal(getattr(host(out), name), getattr(valid, name))
        assert all(k in keys for k in row_keys(out))
    assert redrawn > 0, "no row was ever overwritten: the test does not exercise the redraw"


def race(buf: ReplayBuffer, stream: list[dict], keys, rounds: int, batch_size: int,
         row_keys=rows) -> int:
    """Add the first quarter of ``stream``, then ``stream`` ``rounds`` times in this thread
    while another samples; check every sampled row's ``row_keys`` in the sampler thread
    against ``keys``. Returns how many batches it took."""
    stop = threading.Event()
    failures: list[str] = []
    batches = [0]

    def sampler():
        outs = [buf.make_batch(batch_size), buf.make_batch(batch_size, window=buf.window_batches)]
        try:
            while not stop.is_set() and not failures:
                out = buf.sample(batch_size, out=outs[batches[0] % 2])
                for b, k in enumerate(row_keys(out)):
                    if k not in keys:
                        failures.append(f"batch {batches[0]} row {b} (id {out.index[b]}) is no "
                                        f"added transition")
                        break
                batches[0] += 1
        except Exception as exc:  # surfaced below, in the test's thread
            failures.append(repr(exc))

    for kwargs in stream[:len(stream) // 4]:
        buf.add(**kwargs)
    thread = threading.Thread(target=sampler)
    thread.start()
    try:
        for _ in range(rounds):
            for kwargs in stream:
                buf.add(**kwargs)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[0]
    return batches[0]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_background_sampling_beside_add_returns_only_added_transitions(variant):
    stream, keys = stamped_stream(4, 500, seed=5)
    buf = build(variant, 4 * 30, (K, *FRAME), 4, frame_stack=K, seed=5)
    batches = race(buf, stream, keys, rounds=30, batch_size=64)  # 15,000 adds of 4 envs
    assert batches > 20, f"the sampler ran only {batches} batches beside the adds"


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_background_nstep_sampling_beside_add_returns_only_whole_windows(variant):
    """Each sampled n-step row (obs, the stack m steps on, the discounted sum, the discount)
    must be a window the stream really holds: no frame or step of it overwritten meanwhile."""
    n, gamma = 3, 0.9
    stream, _ = stamped_stream(4, 500, seed=7)
    buf = build(variant, 4 * 30, (K, *FRAME), 4, frame_stack=K, n_step=n, gamma=gamma, seed=7)
    # What race adds; later rounds repeat the second one's windows.
    steps = stream[:len(stream) // 4] + stream * 2
    batches = race(buf, stream, nstep_keys(steps, n, gamma), rounds=30, batch_size=64,
                   row_keys=nstep_rows)
    assert batches > 20, f"the sampler ran only {batches} batches beside the adds"


def test_background_sampling_beside_add_on_a_breakout_stream():
    envpool = pytest.importorskip("envpool")
    from fastdqn.tools.bench.harness import record_envpool_stream

    num_envs = 4
    envs = envpool.make("Breakout-v5", env_type="gymnasium", num_envs=num_envs, seed=3,
                        episodic_life=True, max_episode_steps=60)
    actions = np.random.default_rng(3).integers(0, 4, size=(250, num_envs))
    stream = record_envpool_stream(envs, actions)
    keys = {key(r["obs"][e], r["next_obs"][e], r["action"][e], r["reward"][e], r["terminated"][e]): t
            for t, r in enumerate(stream) for e in np.flatnonzero(r["valid"])}
    buf = ReplayBuffer(num_envs * 40, (4, 84, 84), num_envs, frame_stack=4, seed=3)
    batches = race(buf, stream, keys, rounds=8, batch_size=32)  # 2,000 adds of 4 envs
    assert batches > 20, f"the sampler ran only {batches} batches beside the adds"
