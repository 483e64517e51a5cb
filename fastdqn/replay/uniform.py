"""``UniformSampler``: draws uniformly, with replacement, among the sampleable transitions.

Draws pick one of each env's newest ``keep`` slots uniformly and reject slots without a
sampleable transition (``kernels/replay.py``), so accepted draws are uniform over the
transitions; with ``n_step > 1`` transitions whose window is still open are rejected too.
Rejection is bounded: as ``len >= B``, at least ``len / total`` of the kept slots are
accepted, and a draw that has not filled after ``FREE_ROUNDS`` rounds and then about 64
times the rounds it should need raises ``ReplayStateError`` instead of looping for ever
(only bookkeeping that contradicts itself gets there).
"""

from __future__ import annotations

import numpy as np

from fastdqn.errors import ReplayStateError
from fastdqn.kernels import nstep as kn
from fastdqn.kernels import replay as kr
from fastdqn.replay.batch import ReplayBatch
from fastdqn.replay.ring import Ring


FREE_ROUNDS = 64
"""Rounds of rejection before a draw starts counting against its bound."""


class UniformSampler:
    """Uniform draws from ``ring`` with ``rng`` (the buffer's seeded generator)."""

    REFRESHES = False  # draws read the ring itself: after_add has nothing to do

    batch_type = ReplayBatch
    prioritized = False

    def __init__(self, ring: Ring, rng: np.random.Generator) -> None:
        self.ring, self.rng = ring, rng
        self.snapshot = np.zeros(ring.spec.num_envs, np.int64)  # the counts the latest draw saw
        self._uniform = np.empty(0, np.float64)
        self._redraw_ids = np.empty(0, np.int64)

    def _size(self, B: int) -> None:
        if self._uniform.shape[0] != 2 * B + 16:
            self._uniform = np.empty(2 * B + 16, np.float64)
            self._redraw_ids = np.empty(B, np.int64)

    def _draw_slots(self, slots: np.ndarray, ids: np.ndarray) -> None:
        """Fill ``slots`` with slot ids of sampleable transitions, against a fresh snapshot,
        and ``ids`` with their transition ids."""
        a, spec = self.ring.arrays, self.ring.spec
        np.copyto(self.snapshot, a["count"])
        filled = rounds = 0
        limit = FREE_ROUNDS
        while filled < slots.shape[0]:
            rounds += 1
            if rounds > limit:
                limit = self._round_limit(limit, rounds, filled, slots.shape[0])
            self.rng.random(out=self._uniform)
            drawn = kr.draw_indices(a["slot_flags"], self.snapshot, spec.keep, self._uniform, slots, ids,
                                    filled)
            if spec.n_step > 1:  # drop transitions whose window is still open
                drawn = kn.keep_closed(a["slot_flags"], a["terminated"], self.snapshot, spec.n_step, slots,
                                       ids, filled, drawn)
            filled = drawn

    def _round_limit(self, limit: int, rounds: int, filled: int, B: int) -> int:
        """The bound on rounds, worked out once the free ones are spent (off the hot path)."""
        if limit == FREE_ROUNDS:
            total = int(np.minimum(self.snapshot, self.ring.spec.keep).sum())
            limit = FREE_ROUNDS + 64 * (total // self._uniform.shape[0] + 1)
            if rounds <= limit:
                return limit
        raise ReplayStateError(f"sample: {rounds - 1} rounds of draws found {filled} of {B} sampleable "
                               f"transitions although len(buffer) = {self.ring.len}; the buffer's "
                               f"bookkeeping contradicts itself (a damaged or altered saved file?)")

    def draw(self, slots: np.ndarray, out, rows: np.ndarray, beta: float) -> None:
        """Draw ``len(slots)`` transitions: slot ids into ``slots``, transition ids into ``out.index``."""
        self._size(slots.shape[0])
        self._draw_slots(slots, out.index)

    def redraw(self, rows: np.ndarray, slots: np.ndarray, out, scratch: np.ndarray) -> None:
        """Draw the rows ``rows`` again (their transitions were pushed out during a copy)."""
        redraw, ids = scratch[:rows.shape[0]], self._redraw_ids[:rows.shape[0]]
        self._draw_slots(redraw, ids)
        slots[rows] = redraw
        out.index[rows] = ids

    def gathered(self, slots: np.ndarray, out) -> None:
        """Fields of a gathered batch beyond the copied transitions: none."""

    def after_add(self, before: np.ndarray, env_ids: np.ndarray) -> None:
        """Nothing to refresh: draws read the rings themselves."""

    def saved_arrays(self) -> dict:
        return {}

    @staticmethod
    def saved_layout(num_envs: int, slots: int) -> dict:
        return {}

    def check_loaded(self, path: str) -> None:
        """Nothing beyond the rings to check after a load."""
