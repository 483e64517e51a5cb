"""``ReplayBuffer``: a preallocated replay memory for vector environments.

Each env owns a ring of frame slots. With ``frame_stack=k`` every frame is stored once
and stacks are rebuilt at sample time, bit for bit equal to the ``obs``/``next_obs``
that were added (reset stacks, life losses, truncations, skipped steps, wraparound).
With ``frame_stack=1`` whole observations of any dtype and shape are stored the same way.

Capacity: each env keeps its newest ``keep = ceil(capacity / num_envs) + k`` frames
sampleable. A step that continues the env's previous ``next_obs`` costs one slot; a step
that starts a new stack (reset, or a row that does not continue the previous one) costs
``2 + (k - 1 - m)`` slots, where ``m + 1`` is the number of equal leading frames of its
``obs`` (2 for a reset stack). A transition can be sampled while every frame it reads is
among those newest slots, so a long episode keeps exactly ``ceil(capacity / num_envs)``
transitions per env and each episode boundary in the window costs about one more slot.

With ``n_step=n`` a sampled transition carries the discounted sum of up to ``n`` rewards,
the stack up to ``n`` steps later and the discount to apply there; see ``ReplayBuffer``.

Sampling beside ``add``: one thread may ``sample`` (or ``fill``) while another calls
``add``. Behind the ``keep`` slots each ring holds ``k + 1`` guard slots, as many as one
add writes per env. After copying, ``sample`` reads each env's write count again and draws
anew (and copies again) every row that is no longer sampleable; a row that still is was
never written meanwhile, since a running add writes only into the guard slots, and every
frame and step its stacks and n-step window read is newer than its oldest frame and
older than the count it was drawn against. So every
returned row is exactly a transition that was added and is still in the buffer when
``sample`` returns. This relies on the CPU keeping stores in order (x86-64) and on the
adding thread writing frames before it advances the env's count, as the kernel does.

Importing this module pulls in NumPy and Numba only.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Iterable

import numpy as np

from fastdqn.util.atomic import atomic_write
from fastdqn.replay.batch import ReplayBatch, allocate_batch, check_batch
from fastdqn.errors import CheckpointError, ReplayError, ReplayStateError
from fastdqn.kernels import nstep as kn
from fastdqn.kernels import replay as kr
from fastdqn.util.rngstate import pcg64_state

_MAGIC = b"FASTDQN-REPLAY\x00\x01"
_VERSION = 1
_MAX_HEADER = 1 << 20
_NO_NEXT = np.empty((0, 1, 1), np.uint8)  # a window batch's copy has no separate next_obs
_CHECKED_BATCHES = 8  # out= batches remembered as checked
_STATE_ARRAYS = ("frames", "action", "reward", "terminated", "info", "count", "pending",
                 "flagged", "nvalid")


def available_memory() -> int:
    """Bytes of memory the machine can still hand out (what buffers are checked against)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _positive_int(name: str, value, minimum: int = 1, why: str = "") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ReplayError(f"{name}: expected an int >= {minimum}{why}, got {value!r}")
    if value < minimum:
        raise ReplayError(f"{name}: expected an int >= {minimum}{why}, got {value}")
    return int(value)


def _geometry(capacity: int, obs_shape: tuple, num_envs: int, obs_dtype: np.dtype,
              frame_stack: int) -> tuple[int, int, int]:
    """Bytes of one stored frame, sampleable slots per env (room for one stack more), and
    slots in each env's ring (those plus one add's worth of guard slots)."""
    frame_bytes = obs_dtype.itemsize * math.prod(obs_shape) // frame_stack
    keep = -(-capacity // num_envs) + frame_stack
    return frame_bytes, keep, keep + frame_stack + 1


def _layout(num_envs: int, slots: int, frame_bytes: int) -> dict:
    """Name -> (shape, dtype) of every array the buffer holds."""
    E, L, F = num_envs, slots, frame_bytes
    return {
        "frames": ((E, L, F), np.uint8), "action": ((E, L), np.int32),
        "reward": ((E, L), np.float32), "terminated": ((E, L), np.bool_),
        "info": ((E, L), np.uint8), "count": ((E,), np.int64), "pending": ((E,), np.bool_),
        "flagged": ((E,), np.int64), "nvalid": ((E,), np.int64),
    }


def _layout_bytes(layout: dict) -> int:
    return sum(math.prod(shape) * np.dtype(dt).itemsize for shape, dt in layout.values())


class ReplayBuffer:
    """Uniform replay memory for ``num_envs`` envs, allocated once at construction.

    ``n_step=n`` samples n-step transitions: from step t of an env, ``reward`` is
    ``sum(gamma**i * r[t+i] for i < m)``, ``next_obs`` the stack ``m`` steps on and
    ``discount`` ``gamma**m``, where ``m = n`` unless the window ends early:

    - at a termination (``terminated=True``: a game over, or a lost life with
      ``episodic_life``): ``discount`` is 0 and ``terminated`` True;
    - at a truncation, bootstrapping from that step's real final ``next_obs``;
    - where the env's next stored step does not continue it (its ``obs`` differs from
      ``next_obs``, or a row of the env came with ``valid=False`` in between, as
      EnvPool's reset rows do): windows never cross into another episode or env.

    A window still open at the env's newest step is not sampled (nor counted in
    ``len``) until the env's next step closes it. With ``n_step=1`` (the default)
    ``discount`` is ``gamma``, or 0 after a termination, so a learner can use one target
    ``reward + discount * Q(next_obs)`` for every n. Window batches
    (``make_batch(window=True)``) need ``n_step=1``: their ``next_obs`` is ``obs`` one
    frame on.

    One thread may sample while another adds (see the module doc); calls of the same kind
    (two adds, or two samples) must not overlap.
    """

    _batch_type = ReplayBatch

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8,
                 frame_stack: int = 1, n_step: int = 1, gamma: float = 0.99, seed=None):
        num_envs = _positive_int("num_envs", num_envs)
        n_step = _positive_int("n_step", n_step)
        if isinstance(gamma, (bool, np.bool_)) or not isinstance(gamma, (int, float, np.number)) \
                or not 0.0 <= float(gamma) <= 1.0:
            raise ReplayError(f"gamma: expected a number in [0, 1], got {gamma!r}; pass e.g. gamma=0.99")
        frame_stack = _positive_int("frame_stack", frame_stack)
        if frame_stack > kr.MAX_FRAME_STACK:
            raise ReplayError(f"frame_stack: expected at most {kr.MAX_FRAME_STACK}, got {frame_stack}")
        try:
            obs_shape = tuple(int(x) for x in obs_shape)
        except TypeError:
            raise ReplayError(f"obs_shape: expected a tuple of ints, got {obs_shape!r}") from None
        if not obs_shape or min(obs_shape) < 1:
            raise ReplayError(f"obs_shape: expected a non-empty tuple of positive ints, got {obs_shape}")
        try:
            obs_dtype = np.dtype(obs_dtype)
        except TypeError:
            raise ReplayError(f"obs_dtype: expected a NumPy dtype, got {obs_dtype!r}") from None
        if obs_dtype.hasobject or obs_dtype.itemsize == 0:
            raise ReplayError(f"obs_dtype: expected a plain numeric dtype, got {obs_dtype}")
        if frame_stack > 1:
            if obs_dtype != np.uint8:
                raise ReplayError(f"obs_dtype: frame_stack={frame_stack} stores uint8 frames, "
                                  f"got {obs_dtype}; use frame_stack=1 for other dtypes")
            if len(obs_shape) < 2 or obs_shape[0] != frame_stack:
                raise ReplayError(f"obs_shape: frame_stack={frame_stack} expects the stacked shape "
                                  f"({frame_stack}, H, W), got {obs_shape}")
        capacity = _positive_int("capacity", capacity, num_envs * frame_stack,
                                 f" (one stack of {frame_stack} frames for each of {num_envs} envs)")

        self._capacity = capacity
        self._num_envs = num_envs
        self._obs_shape = obs_shape
        self._obs_dtype = obs_dtype
        self._k = frame_stack
        self._n = n_step
        self._gamma = float(gamma)
        self._frame_bytes, self._keep, self._L = _geometry(capacity, obs_shape, num_envs, obs_dtype,
                                                           frame_stack)
        self._rng = np.random.default_rng(seed)
        self._len = 0
        self._allocate()
        self._uniform = np.empty(0, np.float64)
        self._snapshot = np.zeros(num_envs, np.int64)
        self._oldest = np.empty(0, np.int64)
        self._checked: dict[int, tuple] = {}
        self._seen = np.zeros(num_envs, bool)
        self._err = np.zeros(2, np.int64)
        self._all_valid = np.ones(num_envs, bool)
        self._env_range = np.arange(num_envs, dtype=np.int64)
        self._open = np.zeros(num_envs, np.int64)  # per env: transitions whose window is open
        self._warm_up()

    def _allocate(self) -> None:
        layout = self._host_layout()
        needed = _layout_bytes(layout)
        available = available_memory()
        figures = (f"ReplayBuffer(capacity={self._capacity}, obs_shape={self._obs_shape}, "
                   f"num_envs={self._num_envs}) needs {needed / 1e9:.2f} GB ({needed} bytes)")
        if needed > available:
            raise MemoryError(f"{figures} but only {available / 1e9:.2f} GB of memory is available; "
                              f"lower capacity")
        try:
            self._state = {name: np.empty(shape, dt) for name, (shape, dt) in layout.items()}
            # Touch every page now: a machine that cannot hold the buffer fails here, not
            # hours into training, and the first pass over the ring takes no page faults.
            for arr in self._state.values():
                arr.fill(0)
        except MemoryError:
            raise MemoryError(f"{figures} and allocating it failed; lower capacity") from None
        self._nbytes = needed

    def _host_layout(self) -> dict:
        """Name -> (shape, dtype) of the arrays held in host memory (``_state``)."""
        return _layout(self._num_envs, self._L, self._frame_bytes)

    @staticmethod
    def required_bytes(capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8,
                       frame_stack: int = 1) -> int:
        """Bytes a buffer built with these arguments allocates (its ``nbytes``), without
        allocating: lets a caller check free memory before building one."""
        frame_bytes, _, slots = _geometry(capacity, obs_shape, num_envs, np.dtype(obs_dtype), frame_stack)
        return _layout_bytes(_layout(num_envs, slots, frame_bytes))

    def _warm_up(self) -> None:
        """Compile (or load from cache) every kernel now, on scratch arrays."""
        scratch = ReplayBuffer.__new__(ReplayBuffer)
        scratch.__dict__.update(self.__dict__)
        scratch._keep = self._k + 1
        scratch._L = scratch._keep + self._k + 1
        scratch._capacity = 1
        scratch._state = {name: (np.zeros((self._num_envs, scratch._L) + arr.shape[2:], arr.dtype)
                                 if arr.ndim > 1 else np.zeros_like(arr))
                          for name, arr in self._state.items()}
        scratch._rng = np.random.default_rng(0)
        scratch._uniform = np.empty(0, np.float64)
        scratch._checked = {}
        scratch._open = np.zeros_like(self._open)
        obs = np.zeros((self._num_envs,) + self._obs_shape, self._obs_dtype)
        zeros = np.zeros(self._num_envs)
        # Terminated rows close their windows at once, so every n can sample them.
        scratch.add(obs, obs, zeros.astype(np.int64), zeros.astype(np.float32),
                    np.ones(self._num_envs, bool), zeros.astype(bool))
        scratch.gather(scratch.sample(1).index)
        if self.window_batches:
            scratch.sample(1, out=scratch.make_batch(1, window=True))

    # -- properties ---------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def num_envs(self) -> int:
        return self._num_envs

    @property
    def obs_shape(self) -> tuple:
        return self._obs_shape

    @property
    def obs_dtype(self) -> np.dtype:
        return self._obs_dtype

    @property
    def frame_stack(self) -> int:
        return self._k

    @property
    def n_step(self) -> int:
        return self._n

    @property
    def gamma(self) -> float:
        return self._gamma

    @property
    def prioritized(self) -> bool:
        """Whether draws follow priorities (and ``update_priorities`` takes TD errors)."""
        return self._batch_type is not ReplayBatch

    @property
    def batch_device(self):
        """The ``torch.device`` of this buffer's own batches when its frames live in a torch
        tensor, else None (NumPy batches in host RAM)."""
        return getattr(self, "_device", None)

    @property
    def batch_type(self) -> type:
        """The type of this buffer's batches (``ReplayBatch``); its ``FIELDS`` declare them."""
        return self._batch_type

    @property
    def slots_per_env(self) -> int:
        """Frame slots in each env's ring; ``index = env * slots_per_env + slot``."""
        return self._L

    @property
    def nbytes(self) -> int:
        """Bytes of storage held (frames and per-slot metadata)."""
        return self._nbytes

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return (f"ReplayBuffer(capacity={self._capacity}, obs_shape={self._obs_shape}, "
                f"num_envs={self._num_envs}, obs_dtype={self._obs_dtype}, "
                f"frame_stack={self._k}, n_step={self._n}, gamma={self._gamma}, len={self._len})")

    # -- adding -------------------------------------------------------------------------

    def _check_obs(self, name: str, value, n: int | None) -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype != self._obs_dtype:
            raise ReplayError(f"{name}: expected dtype {self._obs_dtype}, got {arr.dtype}")
        if arr.ndim != len(self._obs_shape) + 1 or arr.shape[1:] != self._obs_shape or (
                n is not None and arr.shape[0] != n):
            rows = "n" if n is None else n
            raise ReplayError(f"{name}: expected shape ({rows}, {', '.join(map(str, self._obs_shape))}), "
                              f"got {arr.shape}")
        arr = np.ascontiguousarray(arr)
        return arr.view(np.uint8).reshape(arr.shape[0], self._k, self._frame_bytes)

    @staticmethod
    def _check_rows(name: str, value, n: int, kinds: str, dtype, what: str) -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype.kind not in kinds:
            raise ReplayError(f"{name}: expected {what}, got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ReplayError(f"{name}: expected shape ({n},) (one per row of obs), got {arr.shape}")
        return arr.astype(dtype, copy=False)

    def add(self, obs, next_obs, action, reward, terminated, truncated, env_ids=None, valid=None):
        """Store one transition per row (rows with ``valid=False`` are skipped).

        ``next_obs`` must be ``obs`` shifted by one frame (checked on valid rows);
        ``env_ids`` must be distinct and in range on every row. A truncated step is stored
        with its ``terminated`` flag (False), so targets bootstrap from its real final
        ``next_obs``; with ``n_step > 1`` it also ends the n-step window.
        """
        obs_b = self._check_obs("obs", obs, None)
        n = obs_b.shape[0]
        next_b = self._check_obs("next_obs", next_obs, n)
        action = self._check_rows("action", action, n, "iu", np.int64, "an integer array")
        reward = self._check_rows("reward", reward, n, "f", np.float32, "a float array")
        terminated = self._check_rows("terminated", terminated, n, "b", np.bool_, "a bool array")
        truncated = self._check_rows("truncated", truncated, n, "b", np.bool_, "a bool array")
        if env_ids is None:
            if n != self._num_envs:
                raise ReplayError(f"env_ids: required when obs has a number of rows other than "
                                  f"num_envs={self._num_envs}; got {n} rows and env_ids=None")
            env_ids = self._env_range
        else:
            env_ids = self._check_rows("env_ids", env_ids, n, "iu", np.int64, "an integer array")
        if valid is None:
            valid = self._all_valid[:n] if n <= self._num_envs else np.ones(n, bool)
        else:
            valid = self._check_rows("valid", valid, n, "b", np.bool_, "a bool mask")
        st = self._state
        total = kr.add_rows(st["frames"], st["action"], st["reward"], st["terminated"], st["info"],
                            st["count"], st["pending"], st["flagged"], st["nvalid"],
                            obs_b, next_b, action, reward, terminated, env_ids, valid,
                            self._seen, self._err, self._keep)
        if total < 0:
            self._raise_add_error(int(self._err[0]), int(self._err[1]), env_ids, action)
        if self._n > 1:
            total -= kn.end_windows(st["info"], st["terminated"], st["count"], self._open, self._keep,
                                    self._n, env_ids, valid, truncated)
        self._len = int(total)

    def _raise_add_error(self, code: int, row: int, env_ids, action) -> None:
        if code == kr.ENV_ID_RANGE:
            raise ReplayError(f"env_ids: expected ids in [0, {self._num_envs}), "
                              f"got env_ids[{row}] = {env_ids[row]}")
        if code == kr.ENV_ID_REPEATED:
            raise ReplayError(f"env_ids: expected each env at most once per add, "
                              f"got env_ids[{row}] = {env_ids[row]} repeated")
        if code == kr.ACTION_RANGE:
            raise ReplayError(f"action: expected values that fit int32, got action[{row}] = {action[row]}")
        if code == kr.NEXT_OBS_NOT_SHIFTED:
            raise ReplayError(f"next_obs: expected obs shifted by one frame (next_obs[i, :-1] == "
                              f"obs[i, 1:]), got a different stack in row {row}; pass "
                              f"valid=False for env reset steps")
        raise AssertionError(f"unknown add status {code}")

    # -- sampling -----------------------------------------------------------------------

    def make_batch(self, batch_size: int, *, window: bool = False) -> ReplayBatch:
        """Freshly allocated arrays to pass as ``out=`` to ``sample``/``gather``.

        ``window=True`` (stacked frames only) stores each transition's ``k + 1`` frames once
        in ``frames``; ``obs`` and ``next_obs`` are views of it (see ``fastdqn.replay.batch``).
        """
        B = _positive_int("batch_size", batch_size)
        self._check_window(window)
        return allocate_batch(B, self._obs_shape, self._obs_dtype, window=window,
                              batch_type=self._batch_type)

    @property
    def window_batches(self) -> bool:
        """Whether ``make_batch(window=True)`` is allowed: stacked frames and ``n_step=1``."""
        return self._k > 1 and self._n == 1

    def _check_window(self, window: bool) -> None:
        if window and self._k == 1:
            raise ReplayError("window: expected window=False for frame_stack=1 (obs and next_obs "
                              "share no frames), got window=True")
        if window and self._n > 1:
            raise ReplayError(f"window: expected window=False for n_step={self._n} (a window batch's "
                              f"next_obs is obs one frame on; an n-step next_obs is up to n frames "
                              f"on), got window=True; use window=False or n_step=1")

    def _check_out(self, out, B: int) -> tuple[ReplayBatch, tuple]:
        """``out`` checked, and its frame arrays as the kernels' byte views; a batch object
        passed again (the usual case: a few batches reused in turn) is not checked again."""
        if out is None:
            out = self.make_batch(B)
        cached = self._checked.get(id(out))
        if cached is not None and cached[0] is out and cached[1] == B:
            return cached[2], cached[3]
        obs_shape, obs_dtype, F = self._batch_spec()
        batch = check_batch(out, B, obs_shape, obs_dtype, self._batch_type)
        frames = batch.frames
        self._check_window(frames is not None)
        if frames is not None:
            views = (frames.reshape(B, self._k + 1, F), _NO_NEXT)
        else:
            views = (batch.obs.view(np.uint8).reshape(B, self._k, F),
                     batch.next_obs.view(np.uint8).reshape(B, self._k, F))
        if len(self._checked) >= _CHECKED_BATCHES:
            self._checked.clear()
        self._checked[id(out)] = (out, B, batch, views)  # keeps out alive: its id stays its own
        return batch, views

    def _batch_spec(self) -> tuple[tuple, np.dtype, int]:
        """Observation shape and dtype of the host batches the copy kernels fill, and the
        bytes of one of their frames."""
        return self._obs_shape, self._obs_dtype, self._frame_bytes

    def _frame_source(self) -> np.ndarray:
        """The ``(E, L, F)`` array the copy kernels read frames from."""
        return self._state["frames"]

    def _scratch(self, B: int) -> None:
        """Per-batch-size scratch of the sampler, allocated when the batch size changes."""
        if self._oldest.shape[0] != B:
            self._oldest = np.empty(B, np.int64)
            self._all_rows = np.arange(B, dtype=np.int64)
            self._spare = (np.empty(B, np.int64), np.empty(B, np.int64))
            self._redraw = np.empty(B, np.int64)
            self._uniform = np.empty(2 * B + 16, np.float64)

    def _copy(self, out: ReplayBatch, views: tuple, index: np.ndarray, rows: np.ndarray,
              count: np.ndarray) -> None:
        """Copy the slot ids at ``index[rows]`` into those rows of ``out`` (``views``: from
        ``_check_out``; ``count``: the snapshot they were drawn against)."""
        stack, next_ = views
        st = self._state
        frames = self._frame_source()
        if self._n > 1:
            kn.copy_rows_n(frames, st["action"], st["reward"], st["terminated"], st["info"],
                           count, index, rows, self._n, self._gamma, stack, next_, out.action,
                           out.reward, out.terminated, out.discount, self._oldest)
            return
        kr.copy_rows(frames, st["action"], st["reward"], st["terminated"], st["info"], count,
                     index, rows, self._k, stack, next_, out.action, out.reward,
                     out.terminated, self._oldest)

    def _draw_into(self, index: np.ndarray) -> None:
        """Fill ``index`` with uniform ids of sampleable transitions, against a fresh count snapshot."""
        st = self._state
        np.copyto(self._snapshot, st["count"])
        filled = 0
        uniform = self._uniform
        while filled < index.shape[0]:
            self._rng.random(out=uniform)
            drawn = kr.draw_indices(st["info"], self._snapshot, self._keep, uniform, index, filled)
            if self._n > 1:  # drop transitions whose window is still open
                drawn = kn.keep_closed(st["info"], st["terminated"], self._snapshot, self._n, index,
                                       filled, drawn)
            filled = drawn

    def draw(self, batch_size: int, out: ReplayBatch | None = None) -> ReplayBatch:
        """Draw ``batch_size`` ids uniformly (with replacement) into ``out.index``; ``fill``
        copies them. ``sample`` is the two in one; split, the draw (microseconds) can happen
        where the buffer is still, and the copy in another thread beside ``add``."""
        out = self._prepare_draw(batch_size, out)
        self._draw_into(out.index)
        return out

    def _prepare_draw(self, batch_size: int, out: ReplayBatch | None) -> ReplayBatch:
        """``out`` checked for a draw of ``batch_size`` (allocated when None), scratch sized."""
        B = _positive_int("batch_size", batch_size)
        if self._len == 0:
            raise ReplayStateError("sample: the buffer is empty; add transitions before sampling")
        if B > self._len:
            raise ReplayError(f"batch_size: expected at most len(buffer) = {self._len}, got {B}; "
                              f"add more transitions first")
        out, _ = self._check_out(out, B)
        self._scratch(B)
        return out

    def fill(self, out: ReplayBatch) -> ReplayBatch:
        """Copy the transitions drawn into ``out.index`` by the latest ``draw``; rows that an
        ``add`` running meanwhile pushed out of the buffer are drawn again and copied."""
        out, views = self._check_out(out, out.index.shape[0])
        st = self._state
        rows = self._all_rows
        for turn in itertools.count():
            self._copy(out, views, out.index, rows, self._snapshot)
            spare = self._spare[turn % 2]
            n = kr.stale_rows(st["count"], self._keep, self._L, out.index, self._oldest, rows, spare)
            if n == 0:
                break
            rows = spare[:n]
            redraw = self._redraw[:n]
            self._draw_into(redraw)
            out.index[rows] = redraw
        self._one_step_discount(out)
        return out

    def _one_step_discount(self, out: ReplayBatch) -> None:
        # n-step copies write the discount themselves.
        if self._n == 1:
            kn.fill_discount(out.terminated, self._gamma, out.discount)

    def sample(self, batch_size: int, out: ReplayBatch | None = None) -> ReplayBatch:
        """Draw ``batch_size`` transitions uniformly (with replacement) from the valid ones.

        May run in one thread while another calls ``add`` (see the module doc)."""
        return self.fill(self.draw(batch_size, out))

    def gather(self, index, out: ReplayBatch | None = None) -> ReplayBatch:
        """The transitions at ``index`` (ids from ``ReplayBatch.index``); not for use beside ``add``."""
        idx = _index_array(index)
        out, views = self._check_out(out, idx.shape[0])
        st = self._state
        if self._n > 1:
            bad = kn.first_unsampleable(st["info"], st["terminated"], st["count"], self._keep,
                                        self._n, idx)
        else:
            bad = kr.first_invalid(st["info"], st["count"], self._keep, idx)
        if bad >= 0:
            raise ReplayError(f"index: index[{bad}] = {idx[bad]} is not a stored transition "
                              f"(out of range [0, {self._num_envs * self._L}), overwritten, not a "
                              f"transition slot, or its n-step window still open); use ids from "
                              f"sample().index")
        if out.index is not idx:
            out.index[:] = idx
        self._scratch(idx.shape[0])
        self._copy(out, views, out.index, self._all_rows, st["count"])
        self._one_step_discount(out)
        return out

    # -- persistence --------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the buffer to ``path`` atomically (temp file in the same folder, then rename)."""
        path = os.fspath(path)
        arrays = self._saved_arrays()
        header = {
            "version": _VERSION, "capacity": self._capacity, "obs_shape": list(self._obs_shape),
            "num_envs": self._num_envs, "obs_dtype": self._obs_dtype.str, "frame_stack": self._k,
            "slots_per_env": self._L, "len": self._len, "rng": self._rng.bit_generator.state,
            "arrays": [[name, arr.dtype.str, list(arr.shape)] for name, arr in arrays],
            "kind": self._file_kind(), "options": self._options(),
        }
        blob = json.dumps(header).encode()

        def write(tmp):
            with open(tmp, "wb", buffering=0) as f:
                _write_all(f, _MAGIC + len(blob).to_bytes(8, "little") + blob)
                for _, arr in arrays:
                    for part in _parts(arr):
                        _write_all(f, memoryview(part).cast("B"))

        atomic_write(path, write)

    @classmethod
    def load(cls, path, **build) -> "ReplayBuffer":
        """Read a buffer written by ``save``; sampling continues as it would have.

        ``build``: constructor keywords that are not part of the file (a subclass's
        ``load`` names them, e.g. ``DeviceReplayBuffer.load(path, device=...)``).

        The header is plain JSON. Its every field is checked, and the file's size compared
        with the size the header implies, before anything is allocated: a small file cannot
        make the loader allocate a large buffer.
        """
        path = os.fspath(path)
        try:
            f = open(path, "rb", buffering=0)
        except OSError as exc:
            raise CheckpointError(f"path: cannot open replay buffer file {path!r}: {exc}") from exc
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(len(_MAGIC) + 8)
            if head[:len(_MAGIC)] != _MAGIC:
                raise CheckpointError(f"path: {path!r} is not a fastdqn replay buffer file "
                                      f"(expected magic {_MAGIC!r}, got {head[:len(_MAGIC)]!r})")
            if len(head) < len(_MAGIC) + 8:
                raise CheckpointError(f"path: {path!r} is truncated (ended inside the header)")
            n = int.from_bytes(head[len(_MAGIC):], "little")
            if n > _MAX_HEADER:
                raise CheckpointError(f"path: {path!r} has a corrupt header (length {n})")
            try:
                header = json.loads(_read_exact(f, n, path))
            except (ValueError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"path: {path!r} has a corrupt header: {exc}") from None
            args = _header_args(header, path)
            kind = header.get("kind", ReplayBuffer.__name__)
            if kind != cls._file_kind():
                raise CheckpointError(f"path: {path!r} holds a {kind!r}, not a {cls._file_kind()}; "
                                      f"load it with that class's load")
            # A file from before n-step returns has no options: it was written with the defaults.
            options = header.get("options", {})
            if not isinstance(options, dict) or ("options" in header and set(options) != set(cls._OPTIONS)):
                raise CheckpointError(f"path: {path!r} has a corrupt header: options: expected a "
                                      f"JSON object with the keys {list(cls._OPTIONS)}, got {options!r}")
            frame_bytes, _, slots = _geometry(**args)
            layout = _layout(args["num_envs"], slots, frame_bytes)
            extra = cls._extra_layout(args["num_envs"], slots)
            specs = [[name, np.dtype(dt).str, list(shape)]
                     for name, (shape, dt) in [(nm, layout[nm]) for nm in _STATE_ARRAYS] + list(extra.items())]
            if header["arrays"] != specs or header["slots_per_env"] != slots:
                raise CheckpointError(f"path: {path!r} holds arrays {header['arrays']}, expected {specs}")
            expected = len(_MAGIC) + 8 + n + _layout_bytes(layout) + _layout_bytes(extra)
            if size != expected:
                raise CheckpointError(f"path: {path!r} is truncated or corrupt: its header describes "
                                      f"{expected} bytes (capacity {args['capacity']}), the file has {size}")
            try:
                buf = cls(args["capacity"], args["obs_shape"], args["num_envs"], obs_dtype=args["obs_dtype"],
                          frame_stack=args["frame_stack"], **options, **build)
            except ReplayError as exc:
                raise CheckpointError(f"path: {path!r} has a corrupt header: {exc}") from None
            for _, arr in buf._saved_arrays():
                for part in (arr,) if isinstance(arr, np.ndarray) else arr.receive():
                    _read_into(f, memoryview(part).cast("B"), path)
        buf._rng.bit_generator.state = header["rng"]
        buf._len = buf._loaded_len(path)
        if buf._len != header["len"]:
            raise CheckpointError(f"path: {path!r} is corrupt: header says {header['len']} "
                                  f"transitions, the data holds {buf._len}")
        return buf

    # -- what subclasses add to a saved file -----------------------------------------------

    _OPTIONS = ("n_step", "gamma")

    @classmethod
    def _file_kind(cls) -> str:
        """The ``kind`` a saved file names: the class that loads it."""
        return cls.__name__

    def _saved_arrays(self) -> list:
        """(name, array) in file order: NumPy arrays, or device arrays with ``parts()`` (host
        chunks to write) and ``receive()`` (host chunks to read into, sent on as filled)."""
        return [(name, self._state[name]) for name in _STATE_ARRAYS] + self._extra_arrays()

    def _options(self) -> dict:
        """Constructor keywords beyond the storage geometry (``_OPTIONS``), saved in the header."""
        return {"n_step": self._n, "gamma": self._gamma}

    @classmethod
    def _extra_layout(cls, num_envs: int, slots: int) -> dict:
        """Name -> (shape, dtype) of the arrays saved after the state arrays (none here)."""
        return {}

    def _extra_arrays(self) -> list:
        """(name, array) of ``_extra_layout``, read back into place by ``load``."""
        return []

    def _loaded_len(self, path: str) -> int:
        """Rebuild derived state after ``load`` has read the arrays; returns ``len``."""
        st = self._state
        open_total = 0
        if self._n > 1:
            open_total = kn.count_open(st["info"], st["terminated"], st["count"], self._open, self._keep,
                                       self._n)
        return int(st["nvalid"].sum()) - int(open_total)


def _index_array(index) -> np.ndarray:
    idx = np.asarray(index)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ReplayError(f"index: expected a 1-D integer array, got {idx.dtype} {idx.shape}")
    return np.ascontiguousarray(idx, dtype=np.int64)


def _header_args(header, path: str) -> dict:
    """The constructor arguments in a replay file's header, each checked (allocates nothing)."""
    def bad(field: str, expected: str, got) -> None:
        raise CheckpointError(f"path: {path!r} has a corrupt header: {field}: expected {expected}, got {got!r}")

    def count(value, minimum: int) -> bool:
        return type(value) is int and value >= minimum

    if not isinstance(header, dict):
        bad("header", "a JSON object", type(header).__name__)
    missing = {"version", "capacity", "obs_shape", "num_envs", "obs_dtype", "frame_stack", "slots_per_env",
               "len", "rng", "arrays"} - set(header)
    if missing:
        bad("header", "every field of the format", f"no {sorted(missing)}")
    if header["version"] != _VERSION:
        raise CheckpointError(f"path: {path!r} has format version {header['version']!r}, expected {_VERSION}")
    for name in ("capacity", "num_envs", "frame_stack"):
        if not count(header[name], 1):
            bad(name, "an int >= 1", header[name])
    if not count(header["len"], 0):
        bad("len", "an int >= 0", header["len"])
    pcg64_state(header["rng"], f"path: {path!r}: rng")
    if header["frame_stack"] > kr.MAX_FRAME_STACK:
        bad("frame_stack", f"at most {kr.MAX_FRAME_STACK}", header["frame_stack"])
    shape = header["obs_shape"]
    if not (isinstance(shape, list) and shape and all(count(x, 1) for x in shape)):
        bad("obs_shape", "a non-empty list of positive ints", shape)
    dtype = header["obs_dtype"]
    if not (isinstance(dtype, str) and re.fullmatch(r"[<>|][biuf][1248]", dtype) and np.dtype(dtype).str == dtype):
        bad("obs_dtype", "a plain numeric NumPy dtype like '<f4' or '|u1'", dtype)
    return {"capacity": header["capacity"], "obs_shape": tuple(shape), "num_envs": header["num_envs"],
            "obs_dtype": np.dtype(dtype), "frame_stack": header["frame_stack"]}

def _parts(arr) -> Iterable[np.ndarray]:
    """``arr``'s bytes in file order: a NumPy array whole, a device array in host chunks."""
    return (arr,) if isinstance(arr, np.ndarray) else arr.parts()


def _write_all(f, data) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        view = view[f.write(view):]


def _read_exact(f, n: int, path: str) -> bytes:
    data = bytearray(n)
    _read_into(f, memoryview(data), path)
    return bytes(data)


def _read_into(f, view: memoryview, path: str) -> None:
    while view.nbytes:
        got = f.readinto(view)
        if not got:
            raise CheckpointError(f"path: {path!r} is truncated (ended early)")
        view = view[got:]
