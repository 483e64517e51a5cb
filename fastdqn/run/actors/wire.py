"""What an actor sends the learner: a ``Chunk`` of rows, each the newest frame of one env
step (not the stack), its action, its clipped reward, the buffer's flags and its global env
id, plus the full stacks of reset rows and the games that ended (raw scores, for logging).

``ChunkWriter`` packs the ``ReplayBuffer.add`` arguments of ``EnvPoolRows`` on the actor;
``StackRebuilder`` on the learner stores a chunk in the buffer, one vector step at a time,
most rows as their new frame alone (``ReplayBuffer.add_next_frames``). A valid row's ``obs``
is the env's previous stack and its ``next_obs`` that stack shifted by the new frame, exactly
as EnvPool returns it (``docs/envpool.md``); a reset row (``valid=False``) carries its whole
stack, so a stream that restarts (a new actor process) needs nothing the learner does not get.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TERMINATED, TRUNCATED, VALID = 1, 2, 4
"""Bits of ``Chunk.flags``."""


@dataclass
class Chunk:
    """``steps`` vector steps of ``step_rows`` rows each, rows in step order."""

    actor: int
    step_rows: int
    env_ids: np.ndarray  # (n,) int32, global: actor i owns [i * num_envs, (i + 1) * num_envs)
    frames: np.ndarray  # (n, *frame_shape): the newest frame of each row's next_obs
    action: np.ndarray  # (n,) uint8 (int32 past 256 actions): the action the transition took
    reward: np.ndarray  # (n,) int8: the reward's sign
    flags: np.ndarray  # (n,) uint8: TERMINATED | TRUNCATED | VALID
    resets: np.ndarray  # (m, *obs_shape): the whole next_obs of each reset row, in row order
    episode_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))  # games ended: raw score
    episode_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    epsilon: float = 0.0
    priorities: np.ndarray | None = None  # (n,) float32 |TD| from the actor's network, or None
    pid: int = 0  # the actor's process: a new one means Ray restarted it

    @property
    def rows(self) -> int:
        return int(self.env_ids.shape[0])

    @property
    def steps(self) -> int:
        return self.rows // self.step_rows


def frame_shape(obs_shape, frame_stack: int) -> tuple[int, ...]:
    """One frame of an observation: a stack's last plane, or the whole vector (no stack)."""
    return tuple(obs_shape[1:]) if frame_stack > 1 else tuple(obs_shape)


class ChunkWriter:
    """Packs up to ``max_steps`` vector steps of ``step_rows`` rows into a ``Chunk``.

    ``env_offset`` turns the actor's env ids into the learner's global ones. Arrays are
    allocated once; ``chunk()`` returns views of them, valid until the next ``clear()``
    (Ray copies a call's result when it returns).
    """

    def __init__(self, actor: int, max_steps: int, step_rows: int, obs_shape, obs_dtype, frame_stack: int,
                 num_actions: int, env_offset: int) -> None:
        n = max_steps * step_rows
        self.actor, self.step_rows, self.frame_stack, self.env_offset = actor, step_rows, frame_stack, env_offset
        self._env_ids = np.zeros(n, np.int32)
        self._frames = np.zeros((n, *frame_shape(obs_shape, frame_stack)), obs_dtype)
        self._action = np.zeros(n, np.uint8 if num_actions <= 256 else np.int32)
        self._reward = np.zeros(n, np.int8)
        self._flags = np.zeros(n, np.uint8)
        self._priorities = np.zeros(n, np.float32)
        self._resets: list[np.ndarray] = []
        self._obs_shape, self._obs_dtype = tuple(obs_shape), np.dtype(obs_dtype)
        self._rows = 0

    def clear(self) -> None:
        self._rows = 0
        self._resets.clear()

    def append(self, add: dict, priorities: np.ndarray | None = None) -> None:
        """One vector step: the ``add`` keyword arguments ``EnvPoolRows.received`` returned."""
        a, b = self._rows, self._rows + self.step_rows
        next_obs, valid = add["next_obs"], add["valid"]
        np.add(add["env_ids"], self.env_offset, out=self._env_ids[a:b], casting="unsafe")
        self._frames[a:b] = next_obs[:, -1] if self.frame_stack > 1 else next_obs
        self._action[a:b] = add["action"]
        self._reward[a:b] = add["reward"]  # already its sign
        flags = self._flags[a:b]
        np.copyto(flags, valid.astype(np.uint8) * VALID)
        flags |= add["terminated"].astype(np.uint8) * TERMINATED
        flags |= add["truncated"].astype(np.uint8) * TRUNCATED
        if self.frame_stack > 1 and not valid.all():
            self._resets.append(next_obs[~valid].copy())
        if priorities is not None:
            self._priorities[a:b] = priorities
        self._rows = b

    def chunk(self, *, episode_returns, episode_lengths, epsilon: float, priorities: bool = False) -> Chunk:
        n = self._rows
        resets = (np.concatenate(self._resets) if self._resets
                  else np.zeros((0, *self._obs_shape), self._obs_dtype))
        return Chunk(self.actor, self.step_rows, self._env_ids[:n], self._frames[:n], self._action[:n],
                     self._reward[:n], self._flags[:n], resets, np.asarray(episode_returns, np.float64),
                     np.asarray(episode_lengths, np.int32), float(epsilon),
                     self._priorities[:n] if priorities else None)


def merge(chunks: list[Chunk]) -> Chunk:
    """One chunk whose step ``j`` holds step ``j`` of every chunk in ``chunks`` (chunks of
    different actors, so of disjoint envs, with equal ``steps`` and ``step_rows``): the
    learner then adds one vector step of all of them per ``ReplayBuffer.add``."""
    if len(chunks) == 1:
        return chunks[0]
    T, B, m = chunks[0].steps, chunks[0].step_rows, len(chunks)
    if any(c.steps != T or c.step_rows != B for c in chunks):
        raise ValueError("merge: expected chunks of equal steps and step_rows")

    def weave(name):
        arrays = [getattr(c, name) for c in chunks]
        stacked = np.stack([a.reshape(T, B, *a.shape[1:]) for a in arrays], axis=1)  # (T, m, B, ...)
        return stacked.reshape(T * m * B, *arrays[0].shape[1:])

    resets = []
    starts = [np.concatenate([[0], np.cumsum(((c.flags.reshape(T, B) & VALID) == 0).sum(1))]) for c in chunks]
    for j in range(T):
        for c, start in zip(chunks, starts):
            if start[j + 1] > start[j]:
                resets.append(c.resets[start[j]:start[j + 1]])
    resets = np.concatenate(resets) if resets else chunks[0].resets[:0]
    priorities = weave("priorities") if chunks[0].priorities is not None else None
    return Chunk(-1, m * B, weave("env_ids"), weave("frames"), weave("action"), weave("reward"), weave("flags"),
                 resets, priorities=priorities)


class StackRebuilder:
    """Stores chunks in a ``ReplayBuffer`` of ``num_envs`` global envs, one vector step at a
    time (a step holds each env at most once, as the buffer requires).

    A valid row whose env's previous row was valid continues the stack the buffer holds, so
    only its new frame goes in (``ReplayBuffer.add_next_frames``): no stack is rebuilt or
    compared. The rest go through ``add`` with whole stacks: reset rows (their stack is in
    ``chunk.resets``) and the first transition after one (its obs is that reset stack, kept
    here per env). ``step_rows``: the most rows a step may have (a merged chunk's).
    """

    def __init__(self, num_envs: int, obs_shape, obs_dtype, frame_stack: int, step_rows: int) -> None:
        shape, dtype = tuple(obs_shape), np.dtype(obs_dtype)
        self.frame_stack = frame_stack
        self._reset = np.zeros((num_envs, *shape), dtype)  # each env's latest reset stack
        self._continues = np.zeros(num_envs, bool)  # its latest row was a stored transition
        self._started = np.zeros(num_envs, bool)  # a reset row of its stream has been seen
        self._obs = np.zeros((step_rows, *shape), dtype)
        self._next = np.zeros((step_rows, *shape), dtype)
        self._step_rows = step_rows
        self._columns(step_rows)
        self._fast = np.zeros(step_rows, bool)

    def _columns(self, rows: int) -> None:
        """Scratch columns of a chunk of ``rows`` rows, decoded once per chunk."""
        self._ids = np.zeros(rows, np.int64)
        self._action = np.zeros(rows, np.int64)
        self._reward = np.zeros(rows, np.float32)
        self._term, self._trunc, self._valid = (np.zeros(rows, bool) for _ in range(3))

    def cut(self, env_ids) -> None:
        """These envs' streams stopped (their actor died): their next rows start new stacks."""
        self._continues[env_ids] = False
        self._started[env_ids] = False

    def store(self, buffer, chunk: Chunk, after_step=None) -> None:
        """Add ``chunk``'s steps to ``buffer``; ``after_step(step, env_ids, valid)`` is called
        after each (arrays valid until the next call)."""
        B, n = chunk.step_rows, chunk.rows
        if B > self._step_rows:
            raise ValueError(f"chunk: expected at most {self._step_rows} rows per step, got {B}")
        if n > self._ids.shape[0]:
            self._columns(n)
        ids, action, reward = self._ids[:n], self._action[:n], self._reward[:n]
        term, trunc, valid = self._term[:n], self._trunc[:n], self._valid[:n]
        np.copyto(ids, chunk.env_ids, casting="unsafe")
        np.copyto(action, chunk.action, casting="unsafe")
        np.copyto(reward, chunk.reward, casting="unsafe")
        np.not_equal(chunk.flags & TERMINATED, 0, out=term)
        np.not_equal(chunk.flags & TRUNCATED, 0, out=trunc)
        np.not_equal(chunk.flags & VALID, 0, out=valid)
        fast = self._fast[:B]
        resets = 0
        for step, a in enumerate(range(0, n, B)):
            b = a + B
            np.take(self._continues, ids[a:b], out=fast)
            fast &= valid[a:b]
            if fast.all():  # the common case: views, no copy
                buffer.add_next_frames(chunk.frames[a:b], action[a:b], reward[a:b], term[a:b], trunc[a:b], ids[a:b])
            else:
                if fast.any():
                    buffer.add_next_frames(chunk.frames[a:b][fast], action[a:b][fast], reward[a:b][fast],
                                           term[a:b][fast], trunc[a:b][fast], ids[a:b][fast])
                resets = self._add_stacks(buffer, chunk, a, b, ~fast, resets)
            self._continues[ids[a:b]] = valid[a:b]
            if after_step is not None:
                after_step(step, ids[a:b], valid[a:b])

    def _add_stacks(self, buffer, chunk: Chunk, a: int, b: int, rows: np.ndarray, resets: int) -> int:
        """``add`` the ``rows`` of step ``a:b`` with whole stacks; returns the resets used."""
        k, n = self.frame_stack, int(np.count_nonzero(rows))
        ids, valid = self._ids[a:b][rows], self._valid[a:b][rows]
        late = valid & ~self._started[ids]
        if late.any():
            raise ValueError(f"chunk: env {ids[late][0]} sent a transition before any reset row of its "
                             f"stream (a stream must start with EnvPool's reset rows)")
        obs, nxt = self._obs[:n], self._next[:n]
        frames = chunk.frames[a:b][rows]
        np.take(self._reset, ids, axis=0, out=obs)  # a valid row here follows its env's reset
        if k > 1:
            nxt[:, :-1] = obs[:, 1:]
            nxt[:, -1] = frames
            m = n - int(np.count_nonzero(valid))
            nxt[~valid] = chunk.resets[resets:resets + m]
            resets += m
        else:
            nxt[:] = frames
        self._reset[ids[~valid]] = nxt[~valid]
        self._started[ids[~valid]] = True
        buffer.add(obs, nxt, self._action[a:b][rows], self._reward[a:b][rows], self._term[a:b][rows],
                   self._trunc[a:b][rows], ids, valid)
        return resets
