"""``PriorityFeedback``: each update's TD errors written back as priorities, one update late.

``push(batch.index, td_error)``, right after update ``i`` is launched, writes update ``i - 1``'s
errors (``buffer.update_priorities``, once their copy's event has completed) and starts a
``non_blocking`` copy of update ``i``'s into pinned memory (``fastdqn.util.transfer.Readback``):
on CUDA nothing waits for the update just launched; on the CPU the copy is immediate and the
order, and so the run, is the same.

Staleness: the ``Feeder`` draws batch ``j`` when it hands out batch ``j - 1``, by when ``push``
has written the errors of updates up to ``j - 3``; so a transition sampled for update ``i`` is
drawn with its new priority from batch ``i + 3`` on (its id may be overwritten meanwhile;
``update_priorities`` skips such ids). ``state_dict()`` holds the errors not yet written, so a
resumed run writes them at the same update as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

from fastdqn.util.transfer import Readback, readback


class PriorityFeedback:
    """Writes the TD errors of update ``i`` into ``buffer`` when update ``i + 1`` is launched.

    ``errors`` carries them from the device (a ``Readback`` of ``(batch_size,)`` float32);
    tests pass one with a stand-in stream, ``for_device`` builds the real one.
    """

    def __init__(self, buffer, batch_size: int, errors: Readback) -> None:
        self.buffer = buffer
        self._errors = errors  # the held update's |td_error|, on its way to the host
        self._index = np.zeros(batch_size, np.int64)  # its transition ids
        self._held = False  # whether an update's errors wait to be written

    @classmethod
    def for_device(cls, buffer, batch_size: int, device) -> "PriorityFeedback":
        """Pinned memory and CUDA events for a CUDA learner, plain host memory otherwise."""
        return cls(buffer, batch_size, readback((batch_size,), torch.float32, device))

    def push(self, index: np.ndarray, td_error: torch.Tensor) -> None:
        """Write the held update's priorities, then hold ``td_error`` (``(B,)``, ``|target - Q|``)
        of the transition ids ``index`` until the next ``push``. Call it with no draw or
        fill of ``buffer`` running (after ``Feeder.wait_for_prefetch()``)."""
        self.flush()
        np.copyto(self._index, index)
        self._errors.start(td_error.detach())
        self._held = True

    def flush(self) -> None:
        """Write the held priorities now (waiting for their copy), if any."""
        if not self._held:
            return
        self._held = False
        self.buffer.update_priorities(self._index, self._errors.result().numpy())

    def state_dict(self) -> dict | None:
        """The held ids and TD errors as tensors (waits for their copy), or None."""
        if not self._held:
            return None
        return {"index": torch.from_numpy(self._index.copy()), "td_error": self._errors.result().clone()}

    def load_state_dict(self, state: dict | None) -> None:
        """Make ``state`` (from ``state_dict``) the held priorities; None: nothing held.
        Errors of another batch size (a run resumed with a new ``--batch-size``) are written at once."""
        self._held = False
        if state is None:
            return
        if state["index"].shape != self._index.shape:
            self.buffer.update_priorities(state["index"].numpy(), state["td_error"].numpy())
            return
        np.copyto(self._index, state["index"].numpy())
        self._errors.result().copy_(state["td_error"])
        self._held = True
