"""``ReplayPipeline``: everything between the replay buffer and the learner's update, so the
training loop never asks which kind of replay it runs: the ``Feeder``, the importance-weight
exponent β (asked once per draw), the write-back of TD errors as priorities
(``PriorityFeedback``) and the drawn batch not yet used, which a checkpoint carries so that a
resumed run hands out the batch the interrupted one had drawn.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fastdqn.errors import ReplayError
from fastdqn.pipeline.feeder import Feeder
from fastdqn.pipeline.priority_feedback import PriorityFeedback
from fastdqn.util.checks import check_int
from fastdqn.util.phases import PhaseTimer

PHASES = ("store", "sample", "wait", "priorities")
"""What ``ReplayPipeline.timer`` times: ``wait`` is the wait for a background copy."""


class ReplayPipeline:
    """Batches of ``batch_size`` from ``buffer`` for a learner on ``device``, and its TD errors back.

    ``beta``: the importance-weight exponent now, asked once per draw (prioritized replay
    only); ``prefetch``: sample the next batch in a background thread while the learner
    updates; ``window``: as ``Feeder``'s (None: window batches where the buffer allows them).

    ``close()`` (or leaving a ``with`` block) stops the background thread and keeps the drawn
    batch; the next call starts a new thread and hands that batch out first. ``timer`` holds
    the seconds spent per phase (``PHASES``).
    """

    def __init__(self, buffer, batch_size: int, *, device="cpu", beta: Callable[[], float] | None = None,
                 prefetch: bool = True, window: bool | None = None) -> None:
        self.buffer, self.batch_size = buffer, check_int("batch_size", batch_size)
        self.timer = PhaseTimer(PHASES)
        prioritized = buffer.prioritized
        self._feeder_args = dict(device=device, prefetch=prefetch, window=window,
                                 beta=beta if prioritized else None)
        self._feedback = PriorityFeedback.for_device(buffer, self.batch_size, device) if prioritized else None
        self._feeder: Feeder | None = Feeder(buffer, self.batch_size, **self._feeder_args)
        self._drawn: tuple[np.ndarray, np.ndarray | None] | None = None  # while no feeder holds it

    def __enter__(self) -> "ReplayPipeline":
        self._live()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _live(self) -> Feeder:
        """The feeder, started again after ``close()`` with the drawn batch handed back to it."""
        if self._feeder is None:
            self._feeder = Feeder(self.buffer, self.batch_size, **self._feeder_args)
            drawn, self._drawn = self._drawn, None
            if drawn is not None:
                try:
                    self._feeder.restore_draw(*drawn)
                except ReplayError:
                    # A transition of it was overwritten after the draw (a vector step without
                    # an update came between the draw and the checkpoint): the feeder draws anew.
                    pass
        return self._feeder

    def store(self, obs, next_obs, action, reward, terminated, truncated, env_ids=None, valid=None) -> None:
        """``buffer.add``, once no batch is being sampled in the background: the buffer stays
        still under a copy, so a seed gives the same run with prefetch on or off."""
        feeder = self._live()
        with self.timer("wait"):
            feeder.wait_for_prefetch()
        with self.timer("store"):
            self.buffer.add(obs, next_obs, action, reward, terminated, truncated, env_ids, valid)

    def next_batch(self):
        """The batch for the next update, on the learner's device."""
        feeder = self._live()
        with self.timer("sample"):
            return feeder.next()

    def report(self, batch, td_error: torch.Tensor) -> None:
        """Hand back the ``(B,)`` ``|target - Q|`` of ``batch``'s update (just launched): it
        becomes the priorities of ``batch.index`` at the next report. Nothing for uniform replay."""
        if self._feedback is None:
            return
        feeder = self._live()
        with self.timer("wait"):
            feeder.wait_for_prefetch()  # the buffer takes one call at a time
        with self.timer("priorities"):
            self._feedback.push(batch.index, td_error)

    def state_dict(self) -> dict:
        """The drawn batch's ids and weights and the TD errors not yet written, as tensors (or
        None), under the checkpoint's keys ``next_batch`` and ``pending_priorities``."""
        drawn = self._feeder.drawn() if self._feeder is not None else self._drawn
        next_batch = None if drawn is None else {
            "index": torch.from_numpy(drawn[0].copy()),
            "weight": None if drawn[1] is None else torch.from_numpy(drawn[1].copy())}
        return {"next_batch": next_batch,
                "pending_priorities": None if self._feedback is None else self._feedback.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``'s keys (a missing one reads as None). Only valid with the
        buffer saved beside it; a drawn batch of another batch size is dropped."""
        self.close()
        drawn = state.get("next_batch")
        self._drawn = None
        if drawn is not None and tuple(drawn["index"].shape) == (self.batch_size,):
            index = drawn["index"].numpy()
            if drawn.get("slot_ids"):  # an older checkpoint's uniform batch
                index = self.buffer.transition_ids(index)
            self._drawn = (index, None if drawn["weight"] is None else drawn["weight"].numpy())
        if self._feedback is not None:
            self._feedback.load_state_dict(state.get("pending_priorities"))

    def close(self) -> None:
        """Stop the background thread (raising what it raised); the drawn batch is kept."""
        feeder, self._feeder = self._feeder, None
        if feeder is None:
            return
        try:
            self._drawn = feeder.drawn()
        finally:
            feeder.close()
