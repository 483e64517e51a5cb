"""SB3ReplayBuffer's SB3 storage arrays (``observations``, ``next_observations``, ``actions``,
``rewards``, ``dones``, ``timeouts``), held to SB3's own ``ReplayBuffer`` fed the same rows.

Streams have episode ends (terminations and time-limit truncations), and the stacked stream
has stacks that start over (zero-padded, as SB3's ``VecFrameStack`` pads them). Skipped when
the ``sb3`` extra is not installed.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from gymnasium import spaces  # noqa: E402
from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer  # noqa: E402

from fastdqn.integrations.sb3 import SB3ReplayBuffer  # noqa: E402

FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
FRAME = (6, 6)


def vector_stream(space, steps: int, n_envs: int, seed: int) -> list[tuple]:
    """``add`` arguments of ``steps`` steps: episodes end by termination or truncation, and
    the next row starts from a fresh observation, as SB3's vec envs hand them."""
    space.seed(seed)
    rng = np.random.default_rng(seed)
    obs = np.array([space.sample() for _ in range(n_envs)])
    rows = []
    for _ in range(steps):
        final = np.array([space.sample() for _ in range(n_envs)])
        done = rng.random(n_envs) < 0.15
        truncated = done & (rng.random(n_envs) < 0.4)
        infos = [{"TimeLimit.truncated": True} if t else {} for t in truncated]
        rows.append((obs, final, rng.integers(0, 3, n_envs), rng.normal(size=n_envs).astype(np.float32), done,
                     infos))
        obs = np.where(done.reshape((n_envs,) + (1,) * (final.ndim - 1)),
                       np.array([space.sample() for _ in range(n_envs)]), final)
    return rows


def stacked_stream(steps: int, n_envs: int, seed: int) -> list[tuple]:
    """Stacks of 4 frames as ``VecFrameStack`` makes them: a new episode's stack is three zero
    frames and its first frame; the final stack of an episode is its real last one."""
    rng = np.random.default_rng(seed)
    new = lambda: np.concatenate([np.zeros((3, *FRAME), np.uint8),  # noqa: E731
                                  rng.integers(1, 255, (1, *FRAME), dtype=np.uint8)])
    stacks = [new() for _ in range(n_envs)]
    rows = []
    for _ in range(steps):
        nxt = [np.concatenate([s[1:], rng.integers(1, 255, (1, *FRAME), dtype=np.uint8)]) for s in stacks]
        done = rng.random(n_envs) < 0.1
        truncated = done & (rng.random(n_envs) < 0.4)
        infos = [{"TimeLimit.truncated": True} if t else {} for t in truncated]
        rows.append((np.array(stacks), np.array(nxt), rng.integers(0, 3, n_envs),
                     rng.normal(size=n_envs).astype(np.float32), done, infos))
        stacks = [new() if d else s for d, s in zip(done, nxt)]
    return rows


def both(space, capacity: int, n_envs: int, rows, **ours_kwargs):
    theirs = SB3Buffer(capacity, space, spaces.Discrete(3), device="cpu", n_envs=n_envs)
    ours = SB3ReplayBuffer(capacity, space, spaces.Discrete(3), device="cpu", n_envs=n_envs, seed=0,
                           **ours_kwargs)
    for row in rows:
        theirs.add(*row)
        ours.add(*row)
    return theirs, ours


def assert_same_arrays(theirs, ours) -> None:
    for field in FIELDS:
        want, got = getattr(theirs, field), getattr(ours, field)
        assert (got.shape, got.dtype) == (want.shape, want.dtype), field
        assert np.array_equal(got, want), field


@pytest.mark.parametrize("space", [spaces.Box(-3, 3, (3,), np.float32), spaces.Discrete(7),
                                   spaces.MultiBinary(4)], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("n_steps", [1, 3])
def test_arrays_equal_sb3s_before_the_ring_wraps(space, n_steps):
    theirs, ours = both(space, 80, 2, vector_stream(space, 30, 2, seed=1), n_steps=n_steps, gamma=0.9)
    assert not ours.full and ours.dones.sum() >= 4 and ours.timeouts.sum() >= 2
    assert_same_arrays(theirs, ours)


def test_stacked_frames_equal_sb3s_arrays():
    space = spaces.Box(0, 255, (4, *FRAME), np.uint8)
    theirs, ours = both(space, 200, 2, stacked_stream(60, 2, seed=2), frame_stack=4)
    assert ours.dones.sum() >= 5 and ours.frame_stack == 4
    assert_same_arrays(theirs, ours)


def test_a_wrapped_ring_holds_the_newest_rows_exactly():
    """Past ``buffer_size`` rows each episode start cost the ring one slot, so it holds fewer
    rows than SB3: the rows it holds equal SB3's, the older ones read as zeros, and ``dones``
    and ``timeouts`` are SB3's on every row."""
    space = spaces.Box(-3, 3, (3,), np.float32)
    rows = vector_stream(space, 70, 2, seed=3)
    theirs, ours = both(space, 40, 2, rows)  # 20 rows per env
    assert ours.full and ours.pos == theirs.pos == 70 % 20
    for field in ("dones", "timeouts"):
        assert np.array_equal(getattr(ours, field), getattr(theirs, field))
    got, want = ours.observations, theirs.observations
    for e in range(2):
        age = (ours.pos - 1 - np.arange(20)) % 20  # rows newest first
        held = np.array([np.array_equal(got[r, e], want[r, e]) for r in age])
        missing = np.array([not got[r, e].any() for r in age])
        first_missing = int(np.argmin(held)) if not held.all() else 20
        # Held rows are the newest ones, in one run; the rest are zeros.
        assert held[:first_missing].all() and missing[first_missing:].all() and first_missing >= 12
        for field in ("next_observations", "actions", "rewards"):
            a, b = getattr(ours, field), getattr(theirs, field)
            assert all(np.array_equal(a[r, e], b[r, e]) for r in age[:first_missing]), field


def test_arrays_survive_pickling_and_writes_to_them_change_nothing():
    space = spaces.Discrete(7)
    theirs, ours = both(space, 80, 2, vector_stream(space, 25, 2, seed=4))
    loaded = pickle.loads(pickle.dumps(ours, protocol=pickle.HIGHEST_PROTOCOL))
    assert_same_arrays(theirs, loaded)
    loaded.dones[3] = True  # what SB3's learn() writes with optimize_memory_usage=True
    assert np.array_equal(loaded.dones, theirs.dones)
