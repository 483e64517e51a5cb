"""``PrioritizedReplayBuffer``: proportional prioritized replay (Schaul et al. 2016).

The frame rings, n-step windows and batches are ``ReplayBuffer``'s; this module adds a
float64 sum tree and min tree with one leaf per slot id (``kernels/sumtree.py``). A leaf
is positive exactly while its slot holds a transition that can be sampled, so a draw
never returns an overwritten, open or zero-priority transition and needs no rejection.

Unlike ``ReplayBuffer``, its calls must not overlap: a draw reads the trees that ``add``
and ``update_priorities`` rewrite, so sampling beside ``add`` is refused with
``ReplayStateError`` (a ``Feeder`` keeps to this when ``settle()`` runs before each add,
as the trainer does).

Importing this module pulls in NumPy and Numba only.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from fastdqn.replay.batch import PrioritizedBatch
from fastdqn.errors import CheckpointError, ReplayError, ReplayStateError
from fastdqn.kernels import priority as kp
from fastdqn.kernels import sumtree as ks
from fastdqn.replay.buffer import ReplayBuffer, _geometry, _index_array


def _number(name: str, value, low: float, high: float, low_open: bool, hint: str) -> float:
    bad = isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number))
    if not bad:
        value = float(value)
        bad = not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high)
    if bad:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ReplayError(f"{name}: expected a number in {interval}, got {value!r}; {hint}")
    return value


class PrioritizedReplayBuffer(ReplayBuffer):
    """Replay drawing transition i with probability p_i / sum_j p_j, p_i = (|delta_i| + eps)^alpha.

    Everything ``ReplayBuffer`` has (frame stacking, n-step windows, save/load) plus:

    - new transitions get the largest priority set so far (1 before any update);
    - ``sample(B, beta=...)`` draws one transition from each of ``B`` equal segments of
      the total priority and returns a ``PrioritizedBatch`` whose ``weight`` is normalised
      by the largest weight over the whole buffer, as in the paper;
    - ``update_priorities(batch.index, td_errors)`` ignores transitions overwritten since
      they were sampled; ``index`` holds transition ids, which never repeat;
    - one call at a time: a call made while another thread is inside ``add``, ``draw``,
      ``fill``, ``sample``, ``gather`` or ``update_priorities`` raises ``ReplayStateError``.
    """

    _batch_type = PrioritizedBatch

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, alpha: float = 0.6,
                 eps: float = 1e-6, obs_dtype=np.uint8, frame_stack: int = 1, n_step: int = 1,
                 gamma: float = 0.99, seed=None):
        self._alpha = _number("alpha", alpha, 0.0, math.inf, False, "pass e.g. alpha=0.6")
        self._eps = _number("eps", eps, 0.0, math.inf, True, "pass e.g. eps=1e-6")
        super().__init__(capacity, obs_shape, num_envs, obs_dtype=obs_dtype,
                         frame_stack=frame_stack, n_step=n_step, gamma=gamma, seed=seed)
        E = self._num_envs
        self._busy = threading.Lock()
        self._before = np.zeros(E, np.int64)
        self._max_priority = np.ones(1, np.float64)
        self._slots = np.empty(0, np.int64)  # slot ids of the latest draw, for fill
        self._written = np.empty(0, np.int64)  # update_priorities' scratch
        self._prio_err = np.zeros(2, np.int64)
        self._warm_up_priority()

    def _allocate(self) -> None:
        ids = self._num_envs * self._L
        super()._allocate()
        try:
            self._tree = ks.empty_tree(ids)
        except MemoryError:
            raise MemoryError(f"PrioritizedReplayBuffer(capacity={self._capacity}): allocating "
                              f"its priority trees ({32 * ks.leaves_for(ids)} bytes) failed; "
                              f"lower capacity") from None
        self._nbytes += self._tree.nbytes

    @staticmethod
    def required_bytes(capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8,
                       frame_stack: int = 1) -> int:
        """Bytes a buffer built with these arguments allocates (its ``nbytes``), without allocating."""
        _, _, slots = _geometry(capacity, obs_shape, num_envs, np.dtype(obs_dtype), frame_stack)
        return (ReplayBuffer.required_bytes(capacity, obs_shape, num_envs, obs_dtype=obs_dtype,
                                            frame_stack=frame_stack)
                + 32 * ks.leaves_for(num_envs * slots))

    def _warm_up_priority(self) -> None:
        """Compile the tree kernels now, on scratch trees and the (empty) rings."""
        st = self._state
        tree = ks.empty_tree(2)
        one = np.zeros(1, np.int64)
        ks.set_leaves(tree, one, np.ones(1))
        kp.refresh(st["info"], st["terminated"], st["count"], st["count"], one, self._keep, self._n,
                   self._k, tree, np.ones(1))
        kp.sample(tree, st["count"], self._L, np.zeros(1), 1.0, one.copy(),
                  np.empty(1, np.float32), one.copy())
        kp.update(st["info"], st["terminated"], st["count"], self._keep, self._n, one, np.ones(1),
                  self._alpha, self._eps, tree, np.ones(1), one.copy(), np.zeros(2, np.int64))
        kp.ids_to_slots(st["info"], st["terminated"], st["count"], self._keep, self._n, one, one.copy())
        kp.check_leaves(st["info"], st["terminated"], st["count"], self._keep, self._n, tree)
        ks.rebuild(tree)

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def max_priority(self) -> float:
        """The priority new transitions get: the largest set so far (1 before any update)."""
        return float(self._max_priority[0])

    def total_priority(self) -> float:
        """Sum of p_i over the transitions that can be sampled."""
        return float(self._tree[1, 0])

    def priorities(self, index) -> np.ndarray:
        """p_i of the transition ids ``index`` (as ``sample`` draws them), float64."""
        slots = self._slots_of(index)
        return self._tree[self._tree.shape[0] // 2 + slots, 0]

    def __repr__(self) -> str:
        return (f"PrioritizedReplayBuffer(capacity={self._capacity}, obs_shape={self._obs_shape}, "
                f"num_envs={self._num_envs}, obs_dtype={self._obs_dtype}, frame_stack={self._k}, "
                f"n_step={self._n}, gamma={self._gamma}, alpha={self._alpha}, eps={self._eps}, "
                f"len={self._len})")

    # -- adding -------------------------------------------------------------------------

    def _enter(self, call: str) -> None:
        """Start ``call``, refusing it while another thread is inside one (end with ``_busy.release()``)."""
        if not self._busy.acquire(blocking=False):
            raise ReplayStateError(f"{call}: another thread is inside a call of this "
                                   f"PrioritizedReplayBuffer (add, draw, fill, sample, gather or "
                                   f"update_priorities); run them one at a time (with a Feeder, "
                                   f"call its settle() before add)")

    def add(self, obs, next_obs, action, reward, terminated, truncated, env_ids=None, valid=None):
        st = self._state
        self._enter("add")
        try:
            np.copyto(self._before, st["count"])
            super().add(obs, next_obs, action, reward, terminated, truncated, env_ids, valid)
            rows = self._env_range if env_ids is None else np.asarray(env_ids, np.int64)
            kp.refresh(st["info"], st["terminated"], st["count"], self._before, rows, self._keep,
                       self._n, self._k, self._tree, self._max_priority)
        finally:
            self._busy.release()

    add.__doc__ = ReplayBuffer.add.__doc__

    # -- sampling -----------------------------------------------------------------------

    def draw(self, batch_size: int, out: PrioritizedBatch | None = None, *,
             beta: float = 1.0) -> PrioritizedBatch:
        """Draw ``batch_size`` transitions, one per equal segment of the total priority, into
        ``out.index`` (transition ids) and ``out.weight``; ``fill`` copies them.

        ``weight`` is ``(p_i / min_j p_j) ** -beta``, which equals the paper's
        ``(N P(i))^-beta / max_j (N P(j))^-beta`` over the whole buffer; ``beta`` in [0, 1]
        (anneal it towards 1).
        """
        beta = _number("beta", beta, 0.0, 1.0, False, "pass e.g. beta=0.4, annealed to 1")
        self._enter("draw")
        try:
            out = self._prepare_draw(batch_size, out)
            B = out.index.shape[0]
            if self._slots.shape[0] != B:
                self._slots = np.empty(B, np.int64)
            uniform = self._uniform[:B]
            self._rng.random(out=uniform)
            kp.sample(self._tree, self._state["count"], self._L, uniform, beta,
                      self._slots, out.weight, out.index)
        finally:
            self._busy.release()
        return out

    def fill(self, out: PrioritizedBatch) -> PrioritizedBatch:
        """Copy the transitions drawn into ``out`` by the latest ``draw``."""
        self._enter("fill")
        try:
            out, views = self._check_out(out, out.index.shape[0])
            self._copy(out, views, self._slots, self._all_rows, self._state["count"])
            self._one_step_discount(out)
        finally:
            self._busy.release()
        return out

    def sample(self, batch_size: int, out: PrioritizedBatch | None = None, *,
               beta: float = 1.0) -> PrioritizedBatch:
        """``draw`` then ``fill``: ``batch_size`` transitions drawn by priority, with weights."""
        return self.fill(self.draw(batch_size, out, beta=beta))

    def _slots_of(self, index) -> np.ndarray:
        idx = _index_array(index)
        slots = np.empty(idx.shape[0], np.int64)
        st = self._state
        bad = kp.ids_to_slots(st["info"], st["terminated"], st["count"], self._keep, self._n, idx, slots)
        if bad >= 0:
            raise ReplayError(f"index: index[{bad}] = {idx[bad]} is not a transition id that can "
                              f"be sampled now (overwritten, never stored, or its n-step window "
                              f"still open); use ids from sample().index")
        return slots

    def gather(self, index, out: PrioritizedBatch | None = None) -> PrioritizedBatch:
        """The transitions with transition ids ``index`` (from ``PrioritizedBatch.index``),
        each with its current weight at ``beta=1``."""
        self._enter("gather")
        try:
            slots = self._slots_of(index)
            out, views = self._check_out(out, slots.shape[0])
            self._scratch(slots.shape[0])
            self._copy(out, views, slots, self._all_rows, self._state["count"])
            self._one_step_discount(out)
            P = self._tree.shape[0] // 2
            np.divide(self._tree[1, 1], self._tree[P + slots, 0], out=out.weight, casting="same_kind")
            out.index[:] = np.asarray(index)
        finally:
            self._busy.release()
        return out

    # -- priorities ---------------------------------------------------------------------

    def update_priorities(self, index, priorities) -> int:
        """Set p_i = (priorities + eps) ** alpha for the transition ids ``index``.

        ``priorities`` are non-negative finite numbers (e.g. ``|td_error|``), one per id;
        where an id repeats, the later one wins. Ids overwritten since they were sampled are
        skipped. Bad input raises and changes nothing. Returns how many were written.
        """
        idx = _index_array(index)
        prio = np.asarray(priorities)
        if prio.dtype.kind not in "fiu" or prio.shape != idx.shape:
            raise ReplayError(f"priorities: expected a float array of shape {idx.shape} (one per "
                              f"index), got {prio.dtype} {prio.shape}")
        prio = np.ascontiguousarray(prio, dtype=np.float64)
        if self._written.shape[0] < idx.shape[0]:
            self._written = np.empty(idx.shape[0], np.int64)
        st = self._state
        self._enter("update_priorities")
        try:
            written = kp.update(st["info"], st["terminated"], st["count"], self._keep, self._n, idx,
                                prio, self._alpha, self._eps, self._tree, self._max_priority,
                                self._written, self._prio_err)
        finally:
            self._busy.release()
        if written < 0:
            code, row = int(self._prio_err[0]), int(self._prio_err[1])
            if code == kp.PRIORITY_VALUE:
                raise ReplayError(f"priorities: expected finite values >= 0 (e.g. |td_error|), got "
                                  f"priorities[{row}] = {prio[row]}")
            if code == kp.PRIORITY_RANGE:
                raise ReplayError(f"priorities: (priorities[{row}] + eps) ** alpha = "
                                  f"({prio[row]} + {self._eps}) ** {self._alpha} is not a positive "
                                  f"finite float64; scale the priorities or raise eps")
            raise ReplayError(f"index: index[{row}] = {idx[row]} was never a transition id of this "
                              f"buffer; use ids from sample().index")
        return int(written)

    # -- persistence --------------------------------------------------------------------

    _OPTIONS = ReplayBuffer._OPTIONS + ("alpha", "eps")

    def _options(self) -> dict:
        return {**super()._options(), "alpha": self._alpha, "eps": self._eps}

    @classmethod
    def _extra_layout(cls, num_envs: int, slots: int) -> dict:
        # Each slot id's leaf of both trees; the parents are rebuilt on load.
        return {"priority": ((num_envs * slots, 2), np.float64), "max_priority": ((1,), np.float64)}

    def _extra_arrays(self) -> list:
        P = self._tree.shape[0] // 2
        return [("priority", self._tree[P:P + self._num_envs * self._L]),
                ("max_priority", self._max_priority)]

    def _loaded_len(self, path: str) -> int:
        size = super()._loaded_len(path)
        if not (math.isfinite(self._max_priority[0]) and self._max_priority[0] > 0):
            raise CheckpointError(f"path: {path!r} is corrupt: max_priority is {self._max_priority[0]}, "
                                  f"expected a positive finite number")
        st = self._state
        bad = kp.check_leaves(st["info"], st["terminated"], st["count"], self._keep, self._n, self._tree)
        if bad >= 0:
            raise CheckpointError(f"path: {path!r} is corrupt: the priority of slot id {bad} is "
                                  f"{self._tree[self._tree.shape[0] // 2 + bad, 0]}, expected a positive "
                                  f"finite number exactly where a transition can be sampled, else 0")
        ks.rebuild(self._tree)
        return size
