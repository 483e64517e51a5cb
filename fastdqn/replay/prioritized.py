"""``PrioritizedSampler``: proportional prioritized replay (Schaul et al. 2016).

A float64 sum tree and min tree with one leaf per slot id (``kernels/sumtree.py``), positive
exactly while its slot holds a sampleable transition, so a draw needs no rejection. A draw
takes one transition from each of ``B`` equal segments of the total; its ``weight``
``(p_i / min_j p_j) ** -beta`` equals the paper's ``(N P(i))^-beta / max_j (N P(j))^-beta``.
"""

from __future__ import annotations

import math

import numpy as np

from fastdqn.errors import CheckpointError, ReplayError
from fastdqn.kernels import priority as kp
from fastdqn.kernels import sumtree as ks
from fastdqn.replay.batch import PrioritizedBatch
from fastdqn.replay.ring import Ring
from fastdqn.util.checks import check_number


MAX_ALPHA = 10.0
"""The sharpest prioritization allowed: past it ``p ** alpha`` overflows float64 for ordinary
TD errors, and draws are greedy in practice."""


def check_options(alpha, eps) -> tuple[float, float]:
    """``(alpha, eps)`` as floats, refused (``ReplayError``) unless ``alpha`` is in
    ``[0, MAX_ALPHA]`` and ``eps`` positive with ``eps ** alpha`` a positive float64 (the
    priority of a zero TD error)."""
    alpha = check_number("alpha", alpha, 0.0, MAX_ALPHA, fix="pass e.g. alpha=0.6", error=ReplayError)
    eps = check_number("eps", eps, 0.0, low_open=True, fix="pass e.g. eps=1e-6", error=ReplayError)
    if not eps ** alpha > 0:
        raise ReplayError(f"eps: eps ** alpha = {eps} ** {alpha} underflows to 0, the priority a zero "
                          f"TD error would get; raise eps or lower alpha")
    return alpha, eps


class PrioritizedSampler:
    """Draws from ``ring`` by priority ``(|td_error| + eps) ** alpha``, with ``rng``."""

    REFRESHES = True  # after_add sets the new transitions' leaves

    batch_type = PrioritizedBatch
    prioritized = True

    def __init__(self, ring: Ring, rng: np.random.Generator, *, alpha: float, eps: float) -> None:
        self.alpha, self.eps = check_options(alpha, eps)
        self.ring, self.rng = ring, rng
        spec = ring.spec
        try:
            self.tree = ks.empty_tree(spec.num_envs * spec.slots)
        except MemoryError:
            raise MemoryError(f"prioritized replay of capacity {spec.capacity}: allocating its priority "
                              f"trees failed; lower capacity") from None
        self.max_priority = np.ones(1, np.float64)
        # The largest leaf: every leaf at most this keeps the tree's total finite.
        self.limit = float(np.finfo(np.float64).max) / (2 * self._leaves())
        self.snapshot = np.zeros(spec.num_envs, np.int64)
        self.beta = 1.0  # of the latest draw, for its redraws
        self._uniform = np.empty(0, np.float64)
        self._weight = np.empty(0, np.float32)
        self._ids = np.empty(0, np.int64)
        self._written = np.empty(0, np.int64)
        self._err = np.zeros(2, np.int64)

    def _leaves(self) -> int:
        return self.tree.shape[0] // 2

    def _sample(self, slots: np.ndarray, weight: np.ndarray, ids: np.ndarray) -> None:
        B = slots.shape[0]
        if self._uniform.shape[0] < B:
            self._uniform, self._weight, self._ids = np.empty(B), np.empty(B, np.float32), np.empty(B, np.int64)
        uniform = self._uniform[:B]
        self.rng.random(out=uniform)
        kp.sample(self.tree, self.snapshot, self.ring.spec.slots, uniform, self.beta, slots, weight, ids)

    def draw(self, slots: np.ndarray, out, rows: np.ndarray, beta: float) -> None:
        """Draw ``len(slots)`` transitions: slot ids into ``slots``, transition ids and weights into ``out``."""
        self.beta = check_number("beta", beta, 0.0, 1.0, fix="pass e.g. beta=0.4, annealed to 1", error=ReplayError)
        np.copyto(self.snapshot, self.ring.count)
        self._sample(slots, out.weight, out.index)

    def redraw(self, rows: np.ndarray, slots: np.ndarray, out, scratch: np.ndarray) -> None:
        """Draw the rows ``rows`` again, by priority with the latest draw's beta."""
        n = rows.shape[0]
        np.copyto(self.snapshot, self.ring.count)
        redraw = scratch[:n]
        self._sample(redraw, self._weight[:n], self._ids[:n])
        slots[rows], out.weight[rows], out.index[rows] = redraw, self._weight[:n], self._ids[:n]

    def gathered(self, slots: np.ndarray, out) -> None:
        """A gathered batch's weights: each transition's current weight at ``beta=1``."""
        np.divide(self.tree[1, 1], self.tree[self._leaves() + slots, 0], out=out.weight, casting="same_kind")

    def after_add(self, before: np.ndarray, env_ids: np.ndarray) -> None:
        """Make the leaves of ``env_ids`` positive exactly on their sampleable transitions."""
        a, spec = self.ring.arrays, self.ring.spec
        kp.refresh(a["slot_flags"], a["terminated"], a["count"], before, env_ids, spec.keep, spec.n_step,
                   spec.frame_stack, self.tree, self.max_priority)

    def priorities(self, slots: np.ndarray) -> np.ndarray:
        return self.tree[self._leaves() + slots, 0]

    def update_priorities(self, index: np.ndarray, priorities) -> int:
        """Set p_i = (priorities + eps) ** alpha for the transition ids ``index``; see
        ``ReplayBuffer.update_priorities``."""
        prio = np.asarray(priorities)
        if prio.dtype.kind not in "fiu" or prio.shape != index.shape:
            raise ReplayError(f"priorities: expected a float array of shape {index.shape} (one per "
                              f"index), got {prio.dtype} {prio.shape}")
        prio = np.ascontiguousarray(prio, dtype=np.float64)
        if self._written.shape[0] < index.shape[0]:
            self._written = np.empty(index.shape[0], np.int64)
        a, spec = self.ring.arrays, self.ring.spec
        written = kp.update(a["slot_flags"], a["terminated"], a["count"], spec.keep, spec.n_step, index, prio,
                            self.alpha, self.eps, self.limit, self.tree, self.max_priority, self._written, self._err)
        if written < 0:
            code, row = int(self._err[0]), int(self._err[1])
            if code == kp.PRIORITY_VALUE:
                raise ReplayError(f"priorities: expected finite values >= 0 (e.g. |td_error|), got "
                                  f"priorities[{row}] = {prio[row]}")
            if code == kp.PRIORITY_RANGE:
                raise ReplayError(f"priorities: (priorities[{row}] + eps) ** alpha = "
                                  f"({prio[row]} + {self.eps}) ** {self.alpha} is not in (0, "
                                  f"{self.limit:.3g}], the largest priority the tree's total of "
                                  f"{self._leaves()} leaves stays finite with; scale the priorities "
                                  f"or raise eps")
            raise ReplayError(f"index: index[{row}] = {index[row]} was never a transition id of this "
                              f"buffer; use ids from sample().index")
        return int(written)

    # -- persistence: each slot id's leaf of both trees; the parents are rebuilt on load --

    @staticmethod
    def saved_layout(num_envs: int, slots: int) -> dict:
        return {"priority": ((num_envs * slots, 2), np.float64), "max_priority": ((1,), np.float64)}

    def saved_arrays(self) -> dict:
        P = self._leaves()
        return {"priority": self.tree[P:P + self.ring.spec.num_envs * self.ring.spec.slots],
                "max_priority": self.max_priority}

    def check_loaded(self, path: str) -> None:
        if not (0 < self.max_priority[0] <= self.limit):
            raise CheckpointError(f"path: {path!r} is corrupt: max_priority is {self.max_priority[0]}, "
                                  f"expected a positive finite number")
        a, spec = self.ring.arrays, self.ring.spec
        bad = kp.check_leaves(a["slot_flags"], a["terminated"], a["count"], spec.keep, spec.n_step, self.tree)
        over = np.flatnonzero(self.tree[self._leaves():, 0] > self.limit)
        bad = over[0] if bad < 0 and over.size else bad
        if bad >= 0:
            raise CheckpointError(f"path: {path!r} is corrupt: the priority of slot id {bad} is "
                                  f"{self.tree[self._leaves() + bad, 0]}, expected a positive "
                                  f"finite number exactly where a transition can be sampled, else 0")
        ks.rebuild(self.tree)
