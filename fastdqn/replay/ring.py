"""``Ring``: the per-env rings of slots, their ``add`` and their n-step windows.

It owns every host array of the buffer (``ReplaySpec.ring_layout``): the frames kept on
the host, each slot's action, reward, ``terminated`` and ``slot_flags`` (whether a
transition starts there and its stack depth, as ``kernels/replay.py`` describes), and per
env the write count, the number of sampleable transitions and the windows still open. The
samplers and frame stores read these arrays; only ``add`` writes them.
"""

from __future__ import annotations

import numpy as np

from fastdqn.errors import CheckpointError, ReplayError
from fastdqn.kernels import nstep as kn
from fastdqn.kernels import priority as kp
from fastdqn.kernels import replay as kr
from fastdqn.replay.spec import ReplaySpec


MAX_COUNT = 1 << 62
"""The largest write count a loaded file may hold (absolute slot ids stay far from overflow)."""


class Ring:
    """The rings of ``spec``; ``host_frames``: frame slots per env kept on the host (all by
    default; ``k + 1`` when the frames live on a device)."""

    def __init__(self, spec: ReplaySpec, host_frames: int | None = None) -> None:
        self.spec = spec
        self.arrays = {name: np.empty(shape, dt) for name, (shape, dt) in spec.ring_layout(host_frames).items()}
        # Touch every page now: a machine that cannot hold the buffer fails here, not hours
        # into training, and the first pass over the ring takes no page faults.
        for arr in self.arrays.values():
            arr.fill(0)
        E = spec.num_envs
        self.len = 0
        self._seen = np.zeros(E, bool)
        self._err = np.zeros(2, np.int64)
        self._all_valid = np.ones(E, bool)
        self.env_range = np.arange(E, dtype=np.int64)
        self._open = np.zeros(E, np.int64)  # per env: transitions whose n-step window is still open

    @property
    def count(self) -> np.ndarray:
        """Frames written so far, per env."""
        return self.arrays["count"]

    def _obs(self, name: str, value, n: int | None) -> np.ndarray:
        spec = self.spec
        arr = np.asarray(value)
        if arr.dtype != spec.obs_dtype:
            raise ReplayError(f"{name}: expected dtype {spec.obs_dtype}, got {arr.dtype}")
        if arr.ndim != len(spec.obs_shape) + 1 or arr.shape[1:] != spec.obs_shape or (
                n is not None and arr.shape[0] != n):
            rows = "n" if n is None else n
            raise ReplayError(f"{name}: expected shape ({rows}, {', '.join(map(str, spec.obs_shape))}), "
                              f"got {arr.shape}")
        arr = np.ascontiguousarray(arr)
        return arr.view(np.uint8).reshape(arr.shape[0], spec.frame_stack, spec.frame_bytes)

    @staticmethod
    def _rows(name: str, value, n: int, kinds: str, dtype, what: str) -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype.kind not in kinds:
            raise ReplayError(f"{name}: expected {what}, got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ReplayError(f"{name}: expected shape ({n},) (one per row of obs), got {arr.shape}")
        if arr.dtype == dtype:
            return arr
        with np.errstate(over="ignore"):  # a float64 past float32's range becomes inf, refused after
            return arr.astype(dtype)

    def add(self, obs, next_obs, action, reward, terminated, truncated, env_ids, valid) -> np.ndarray:
        """Store the rows (see ``ReplayBuffer.add``); returns the env ids they were for."""
        obs_b = self._obs("obs", obs, None)
        n = obs_b.shape[0]
        next_b = self._obs("next_obs", next_obs, n)
        action, reward, terminated, truncated = self._step_columns(n, action, reward, terminated, truncated)
        E = self.spec.num_envs
        if env_ids is None:
            if n != E:
                raise ReplayError(f"env_ids: required when obs has a number of rows other than "
                                  f"num_envs={E}; got {n} rows and env_ids=None")
            env_ids = self.env_range
        else:
            env_ids = self._rows("env_ids", env_ids, n, "iu", np.int64, "an integer array")
        valid = self._valid(n) if valid is None else self._rows("valid", valid, n, "b", np.bool_, "a bool mask")
        a = self.arrays
        total = kr.add_rows(a["frames"], a["action"], a["reward"], a["terminated"], a["slot_flags"],
                            a["count"], a["pending"], a["flagged"], a["nvalid"],
                            obs_b, next_b, action, reward, terminated, env_ids, valid,
                            self._seen, self._err, self.spec.keep)
        return self._added(total, env_ids, action, reward, valid, truncated)

    def add_next_frames(self, next_frame, action, reward, terminated, truncated, env_ids) -> np.ndarray:
        """Store rows that continue their env's stored stack (see ``ReplayBuffer.add_next_frames``)."""
        spec = self.spec
        arr = np.asarray(next_frame)
        if arr.dtype != spec.obs_dtype:
            raise ReplayError(f"next_frame: expected dtype {spec.obs_dtype}, got {arr.dtype}")
        if arr.ndim != len(spec.frame_shape) + 1 or arr.shape[1:] != spec.frame_shape:
            raise ReplayError(f"next_frame: expected shape (n, {', '.join(map(str, spec.frame_shape))}) "
                              f"(one frame per row), got {arr.shape}")
        n = arr.shape[0]
        frame_b = np.ascontiguousarray(arr).view(np.uint8).reshape(n, spec.frame_bytes)
        action, reward, terminated, truncated = self._step_columns(n, action, reward, terminated, truncated)
        env_ids = self._rows("env_ids", env_ids, n, "iu", np.int64, "an integer array")
        a = self.arrays
        total = kr.append_rows(a["frames"], a["action"], a["reward"], a["terminated"], a["slot_flags"],
                               a["count"], a["pending"], a["flagged"], a["nvalid"],
                               frame_b, action, reward, terminated, env_ids, self._seen, self._err,
                               spec.keep, spec.frame_stack)
        return self._added(total, env_ids, action, reward, self._valid(n), truncated)

    def _step_columns(self, n: int, action, reward, terminated, truncated) -> tuple:
        """The per-row columns of an add, checked and in the kernels' dtypes."""
        return (self._rows("action", action, n, "iu", np.int64, "an integer array"),
                self._rows("reward", reward, n, "f", np.float32, "a float array"),
                self._rows("terminated", terminated, n, "b", np.bool_, "a bool array"),
                self._rows("truncated", truncated, n, "b", np.bool_, "a bool array"))

    def _valid(self, n: int) -> np.ndarray:
        """An all-True mask of ``n`` rows (a preallocated one where it is long enough)."""
        return self._all_valid[:n] if n <= self.spec.num_envs else np.ones(n, bool)

    def _added(self, total: int, env_ids, action, reward, valid, truncated) -> np.ndarray:
        """After an add kernel returned ``total``: its error raised, the n-step windows that
        the rows end closed, ``len`` updated; returns ``env_ids``."""
        if total < 0:
            self._raise_add_error(int(self._err[0]), int(self._err[1]), env_ids, action, reward)
        spec, a = self.spec, self.arrays
        if spec.n_step > 1:
            total -= kn.end_windows(a["slot_flags"], a["terminated"], a["count"], self._open, spec.keep,
                                    spec.n_step, env_ids, valid, truncated)
        self.len = int(total)
        return env_ids

    def _raise_add_error(self, code: int, row: int, env_ids, action, reward) -> None:
        if code == kr.ENV_ID_RANGE:
            raise ReplayError(f"env_ids: expected ids in [0, {self.spec.num_envs}), "
                              f"got env_ids[{row}] = {env_ids[row]}")
        if code == kr.ENV_ID_REPEATED:
            raise ReplayError(f"env_ids: expected each env at most once per add, "
                              f"got env_ids[{row}] = {env_ids[row]} repeated")
        if code == kr.ACTION_RANGE:
            raise ReplayError(f"action: expected values that fit int32, got action[{row}] = {action[row]}")
        if code == kr.REWARD_NOT_FINITE:
            raise ReplayError(f"reward: expected finite values, got reward[{row}] = {reward[row]}")
        if code == kr.NO_OPEN_STACK:
            raise ReplayError(f"env_ids: env {env_ids[row]} (row {row}) has no stored stack to continue; "
                              f"add its first transition with add(obs, next_obs, ...)")
        if code == kr.NEXT_OBS_NOT_SHIFTED:
            raise ReplayError(f"next_obs: expected obs shifted by one frame (next_obs[i, :-1] == "
                              f"obs[i, 1:]), got a different stack in row {row}; pass "
                              f"valid=False for env reset steps")
        raise AssertionError(f"unknown add status {code}")

    def slots_of(self, index: np.ndarray, slots: np.ndarray) -> None:
        """Slot ids of the sampleable transition ids ``index`` (refused otherwise)."""
        a, spec = self.arrays, self.spec
        bad = kp.ids_to_slots(a["slot_flags"], a["terminated"], a["count"], spec.keep, spec.n_step, index, slots)
        if bad >= 0:
            raise ReplayError(f"index: index[{bad}] = {index[bad]} is not a transition id that can "
                              f"be sampled now (overwritten, never stored, or its n-step window "
                              f"still open); use ids from sample().index")

    def check_loaded(self, path: str) -> None:
        """Refuse rings read from a file whose bookkeeping contradicts itself: counts, slot
        flags against their positions, stack depths, episode starts, the per-env tallies and
        the stored rewards (vectorised over the slots; no per-frame work)."""
        a, spec = self.arrays, self.spec
        E, L = a["slot_flags"].shape
        k = spec.frame_stack

        def corrupt(what: str, env) -> None:
            raise CheckpointError(f"path: {path!r} is corrupt: {what} (env {int(env)}); "
                                  f"the file was altered or damaged, delete it or save it again")

        count = a["count"]
        for name in ("pending", "terminated"):
            bad = np.flatnonzero((a[name].view(np.uint8) > 1).reshape(E, -1).any(axis=1))
            if bad.size:
                corrupt(f"{name} holds bytes other than 0 and 1", bad[0])
        bad = np.flatnonzero((count < 0) | (count > MAX_COUNT))
        if bad.size:
            corrupt(f"its write count is {count[bad[0]]}, expected 0..{MAX_COUNT}", bad[0])
        bad = np.flatnonzero(a["pending"] & (count < 2))
        if bad.size:
            corrupt("a continued stack is marked on an env with fewer than 2 frames", bad[0])
        c = count[:, None]
        absolute = c - 1 - ((c - 1 - np.arange(L)[None, :]) % L)  # newest absolute slot at each slot
        info = a["slot_flags"]
        flag = (info & kr.HAS_TRANSITION) != 0
        depth = (info & kr.DEPTH_MASK).astype(np.int64)
        written = absolute >= 0
        checks = (
            (~written & ((info != 0) | a["terminated"]), "a slot never written holds flags"),
            (depth > k - 1, f"a stack depth exceeds frame_stack - 1 = {k - 1}"),
            (flag & (absolute >= c - 1), "a transition is flagged on the newest slot, which has no next frame"),
            ((info & kr.WINDOW_END).astype(bool) & ~flag, "an n-step window ends on a slot without a transition"),
            (flag & ~np.isfinite(a["reward"]), "a stored reward is not finite"),
        )
        for mask, what in checks:
            bad = np.flatnonzero(mask.any(axis=1))
            if bad.size:
                corrupt(what, bad[0])
        # A frame of depth d > 0 continues the stack of the slot before it (depth d - 1, or
        # k - 1 at both once the stack is full); the ring's oldest slot has no earlier one.
        prev_depth = np.roll(depth, 1, axis=1)
        prev_written = (absolute - 1 >= np.maximum(c - L, 0)) & written
        chain = (depth > 0) & prev_written & (prev_depth != depth - 1) & ~((depth == k - 1) & (prev_depth == k - 1))
        first = (depth > 0) & written & (absolute == 0)
        bad = np.flatnonzero((chain | first).any(axis=1))
        if bad.size:
            corrupt("a stack depth does not follow the slot before it (an episode start moved)", bad[0])
        bad = np.flatnonzero(a["flagged"] != flag.sum(axis=1))
        if bad.size:
            corrupt(f"its tally of flagged slots is {a['flagged'][bad[0]]}, the slot flags hold "
                    f"{int(flag[bad[0]].sum())}", bad[0])
        lo = np.maximum(count - spec.keep, 0)[:, None]
        sampleable = (flag & (absolute - depth >= lo)).sum(axis=1)
        bad = np.flatnonzero(a["nvalid"] != sampleable)
        if bad.size:
            corrupt(f"its tally of stored transitions is {a['nvalid'][bad[0]]}, the slot flags "
                    f"hold {int(sampleable[bad[0]])}", bad[0])

    def recount(self) -> int:
        """Rebuild the open-window counts from the arrays (after a load); returns ``len``."""
        a, spec = self.arrays, self.spec
        open_total = 0
        if spec.n_step > 1:
            open_total = kn.count_open(a["slot_flags"], a["terminated"], a["count"], self._open, spec.keep,
                                       spec.n_step)
        self.len = int(a["nvalid"].sum()) - int(open_total)
        return self.len
