"""``ReplayBuffer.add_next_frames``: rows that continue their env's stored stack, given only
each next_obs's newest frame, store exactly the transitions of the stream.

The stream is EnvPool-shaped (reset rows carry a new stack and are not transitions; a life
loss ends an episode but the stack goes on) and built here in NumPy; the reference is the
list of its transitions, and the buffer fed with full stacks through ``add`` only."""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn import ReplayBuffer
from fastdqn.errors import ReplayError

K, H, W = 4, 3, 5


def stream(num_envs: int, steps: int, seed: int, k: int = K):
    """Vector steps of every env: dicts of ``add`` arguments, as EnvPool's rows give them."""
    rng = np.random.default_rng(seed)
    stack = np.repeat(rng.integers(0, 256, (num_envs, 1, H, W), np.uint8), k, axis=1)
    reset_next = np.zeros(num_envs, bool)
    out = []
    for _ in range(steps):
        frame = rng.integers(0, 256, (num_envs, H, W), np.uint8)
        nxt = np.concatenate([stack[:, 1:], frame[:, None]], axis=1)
        valid = ~reset_next
        # A reset row's next_obs is a new stack: its first frame repeated (EnvPool's padding).
        nxt[~valid] = np.repeat(frame[~valid, None], k, axis=1)
        end = rng.random(num_envs)
        terminated = valid & (end < 0.08)
        truncated = valid & ~terminated & (end > 0.96)
        life_lost = valid & (end >= 0.08) & (end < 0.15)  # terminated, but the game and stack go on
        terminated |= life_lost
        out.append(dict(obs=stack.copy(), next_obs=nxt, action=rng.integers(0, 6, num_envs),
                        reward=rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), num_envs),
                        terminated=terminated, truncated=truncated, env_ids=np.arange(num_envs), valid=valid))
        reset_next = (terminated & ~life_lost) | truncated
        stack = nxt
    return out


def feed_split(buf: ReplayBuffer, steps) -> None:
    """Rows whose env's last row was a valid transition through ``add_next_frames``, the rest
    (reset rows, first steps after them) through ``add`` with their stacks."""
    continues = np.zeros(buf.num_envs, bool)
    for s in steps:
        ids, valid = s["env_ids"], s["valid"]
        fast = valid & continues[ids]
        if fast.any():
            buf.add_next_frames(s["next_obs"][fast, -1], s["action"][fast], s["reward"][fast],
                                s["terminated"][fast], s["truncated"][fast], ids[fast])
        if (~fast).any():
            rest = ~fast
            buf.add(*(s[n][rest] for n in ("obs", "next_obs", "action", "reward", "terminated", "truncated",
                                           "env_ids", "valid")))
        continues[ids] = valid


def reference(steps) -> set:
    """Every transition of the stream, by content."""
    out = set()
    for s in steps:
        for i in np.flatnonzero(s["valid"]):
            out.add((s["obs"][i].tobytes(), s["next_obs"][i].tobytes(), int(s["action"][i]),
                     float(s["reward"][i]), bool(s["terminated"][i])))
    return out


@pytest.mark.parametrize("prioritized", [False, True])
def test_split_stream_stores_exactly_the_streams_transitions(prioritized):
    steps = stream(num_envs=5, steps=300, seed=1)
    want = reference(steps)
    buf = ReplayBuffer(10_000, (K, H, W), 5, frame_stack=K, prioritized=prioritized, seed=3)
    feed_split(buf, steps)
    assert len(buf) == len(want)
    batch = buf.sample(len(want))
    got = {(batch.obs[i].tobytes(), batch.next_obs[i].tobytes(), int(batch.action[i]), float(batch.reward[i]),
            bool(batch.terminated[i])) for i in range(len(want))}
    assert got <= want
    # Drawing with replacement reaches most of them; the rest are checked the same way below.
    for _ in range(20):
        batch = buf.sample(len(want))
        for i in range(len(want)):
            key = (batch.obs[i].tobytes(), batch.next_obs[i].tobytes(), int(batch.action[i]),
                   float(batch.reward[i]), bool(batch.terminated[i]))
            assert key in want
            got.add(key)
    assert len(got) > 0.99 * len(want)


@pytest.mark.parametrize("n_step,k,capacity", [(1, K, 400), (3, K, 10_000), (3, K, 400), (1, 1, 300)])
def test_split_stream_leaves_the_rings_as_full_stacks_do(n_step, k, capacity):
    """The same stream, all through ``add`` or split: every ring array equal, also when the
    rings wrap (capacity 400 over 1,500 transitions) and with n-step windows and truncation."""
    steps = stream(num_envs=5, steps=300, seed=2, k=k)
    if k == 1:
        for s in steps:  # no stacking: a row's obs is its previous next_obs, whole
            s["obs"], s["next_obs"] = s["obs"][:, 0], s["next_obs"][:, 0]
    shape = (k, H, W) if k > 1 else (H, W)
    full = ReplayBuffer(capacity, shape, 5, frame_stack=k, n_step=n_step, gamma=0.9, seed=4)
    split = ReplayBuffer(capacity, shape, 5, frame_stack=k, n_step=n_step, gamma=0.9, seed=4)
    for s in steps:
        full.add(**s)
    if k == 1:
        continues = np.zeros(5, bool)
        for s in steps:
            fast = s["valid"] & continues
            if fast.any():
                split.add_next_frames(s["next_obs"][fast], s["action"][fast], s["reward"][fast],
                                      s["terminated"][fast], s["truncated"][fast], s["env_ids"][fast])
            if (~fast).any():
                split.add(**{n: v[~fast] for n, v in s.items()})
            continues = s["valid"].copy()
    else:
        feed_split(split, steps)
    assert len(split) == len(full) > 0
    for name, arr in full._ring.arrays.items():
        np.testing.assert_array_equal(split._ring.arrays[name], arr, err_msg=name)
    a, b = full.sample(64), split.sample(64)
    for name in ("obs", "next_obs", "action", "reward", "terminated", "discount", "index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_envs_with_no_stack_stored_are_refused_and_nothing_changes():
    buf = ReplayBuffer(100, (K, H, W), 3, frame_stack=K, seed=0)
    one = dict(action=[0], reward=np.zeros(1, np.float32), terminated=[False], truncated=[False])
    with pytest.raises(ReplayError, match=r"env_ids: env 1 \(row 0\) has no stored stack to continue"):
        buf.add_next_frames(np.zeros((1, H, W), np.uint8), env_ids=[1], **one)
    steps = stream(num_envs=3, steps=2, seed=5)
    buf.add(**{n: v[:2] for n, v in steps[0].items()})  # envs 0 and 1 only
    after = {n: a.copy() for n, a in buf._ring.arrays.items()}
    two = dict(action=[0, 0], reward=np.zeros(2, np.float32), terminated=[False, False], truncated=[False, False])
    with pytest.raises(ReplayError, match=r"env 2 \(row 1\) has no stored stack"):
        buf.add_next_frames(np.zeros((2, H, W), np.uint8), env_ids=[0, 2], **two)
    with pytest.raises(ReplayError, match="repeated"):
        buf.add_next_frames(np.zeros((2, H, W), np.uint8), env_ids=[0, 0], **two)
    with pytest.raises(ReplayError, match="reward: expected finite"):
        buf.add_next_frames(np.zeros((2, H, W), np.uint8), env_ids=[0, 1], **dict(two, reward=[0.0, np.nan]))
    for name, arr in after.items():
        np.testing.assert_array_equal(buf._ring.arrays[name], arr, err_msg=name)
    assert len(buf) == 2


@pytest.mark.parametrize("frame,match", [
    (np.zeros((1, K, H, W), np.uint8), r"next_frame: expected shape \(n, 3, 5\)"),
    (np.zeros((1, H, W), np.float32), "next_frame: expected dtype uint8"),
])
def test_bad_frames_name_the_argument(frame, match):
    buf = ReplayBuffer(100, (K, H, W), 1, frame_stack=K, seed=0)
    with pytest.raises(ReplayError, match=match):
        buf.add_next_frames(frame, [0], np.zeros(1, np.float32), [False], [False], [0])
