"""``Feeder``: the one owner of batches on their way from the replay buffer to the learner.

It allocates the host batches once, has the buffer sample into them and hands the learner a
batch already where the update reads it: NumPy batches read in place by a CPU learner; for a
CUDA learner one pinned block per host batch, sent as one ``non_blocking`` copy and an event
(``fastdqn.util.transfer.StagedTransfer``), sampled into again only after that event; for a
buffer whose frames are on the device, that buffer's own device batches, sampled in the
calling thread (the work is queued on the device, so there is nothing to prefetch).
Window batches (the default where the buffer allows them) move ``(k + 1) / 2k`` of the bytes.

Timing: the batch for update ``i + 1`` is drawn when batch ``i`` is handed out, with
``prefetch`` on or off; with ``prefetch`` its copy runs in a background thread (the kernels
release the GIL) during update ``i``. Calling ``wait_for_prefetch()`` before each ``add``
keeps the buffer still under the copy, so a seed gives the same run with ``prefetch`` on or
off (the buffer stays correct without it; see ``fastdqn.replay.buffer``).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np

from fastdqn.errors import ConfigError
from fastdqn.replay.batch import ReplayBatch, allocate_batch
from fastdqn.util.checks import check_int
from fastdqn.util.transfer import StagedTransfer, staged_transfer


def _check_resident(resident, device) -> None:
    """The learner must run where a device-resident buffer's frames are."""
    import torch

    learner = torch.device(device)
    if learner.type != resident.type or (learner.index is not None and learner.index != resident.index):
        raise ConfigError(f"device: expected the device of the buffer's frames ({resident}), got "
                          f"{device!r}; build the buffer on the learner's device or use ReplayBuffer")


class Feeder:
    """Samples batches of ``batch_size`` from ``buffer`` for a learner on ``device``.

    ``next()`` returns the batch for the next update; ``wait_for_prefetch()`` waits for a
    background copy (call it before ``buffer.add``); ``close()`` stops the background
    thread. Use as a context manager, or call ``close()``: an exception raised in the
    background thread is raised again by the next call of any of the three. Until
    ``wait_for_prefetch()`` the buffer is sampling in that thread: call its
    ``sample``/``gather`` only after it.

    ``beta``: for a prioritized buffer, a callable giving the importance-weight exponent,
    called once per draw (so a schedule moves with the run); None draws with the buffer's
    default. ``drawn``/``restore_draw`` carry the drawn batch over a checkpoint.
    """

    def __init__(self, buffer, batch_size: int, *, device="cpu", window: bool | None = None,
                 prefetch: bool = True, transfer: StagedTransfer | None = None,
                 beta: Callable[[], float] | None = None) -> None:
        batch_size = check_int("batch_size", batch_size)
        if beta is not None and not buffer.prioritized:
            raise ConfigError(f"beta: only a prioritized buffer draws with beta, got {type(buffer).__name__}; "
                              "pass beta=None or a PrioritizedReplayBuffer")
        self._beta = beta
        window = buffer.window_batches if window is None else bool(window)
        self.buffer, self.batch_size, self.window, self.prefetch = buffer, batch_size, window, prefetch

        def make(empty=np.empty) -> ReplayBatch:
            return allocate_batch(batch_size, buffer.obs_shape, buffer.obs_dtype, window=window,
                                  empty=empty, batch_type=buffer.batch_type)

        resident = buffer.batch_device
        if resident is not None:
            _check_resident(resident, device)
            self.prefetch = prefetch = False
            self._host = [buffer.make_batch(batch_size, window=window) for _ in range(2)]
            transfer = None
        else:
            buffer.make_batch(batch_size, window=window)  # checks window against the buffer
            if transfer is None and str(device).startswith("cuda"):
                transfer = staged_transfer(make, device, slots=3)
            self._host = transfer.host if transfer is not None else [make(), make()]
        self._transfer = transfer
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fastdqn-feeder") if prefetch else None
        self._next_slot = 0
        # The drawn batch not yet handed out: its slot, and the background fill while one runs.
        self._in_flight: tuple[int, Future | None] | None = None

    def __enter__(self) -> "Feeder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def host_batches(self) -> list[ReplayBatch]:
        """The host batches sampled into, in turn."""
        return list(self._host)

    def next(self):
        """The batch for the next update (on the learner's device); starts sampling the one after."""
        if self._in_flight is None:
            self._start(background=False)
        slot, _ = self._in_flight
        self.wait_for_prefetch()
        batch = self._host[slot] if self._transfer is None else self._transfer.send(slot)
        self._start(background=self.prefetch)
        return batch

    def _take_slot(self) -> int:
        """The next host batch in turn, once the copy out of it (if any) has finished."""
        slot = self._next_slot
        self._next_slot = (slot + 1) % len(self._host)
        if self._transfer is not None:
            self._transfer.ready(slot)
        return slot

    def _start(self, background: bool) -> None:
        slot = self._take_slot()
        if self._beta is None:
            out = self.buffer.draw(self.batch_size, self._host[slot])
        else:
            out = self.buffer.draw(self.batch_size, self._host[slot], beta=self._beta())
        if background:
            self._in_flight = (slot, self._executor.submit(self.buffer.fill, out))
        else:
            self.buffer.fill(out)
            self._in_flight = (slot, None)

    def drawn(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Copies of the ids (and importance weights) of the batch drawn but not yet handed
        out, or None: what a checkpoint needs to hand out the same batch after a resume."""
        self.wait_for_prefetch()
        if self._in_flight is None:
            return None
        batch = self._host[self._in_flight[0]]
        if not hasattr(batch, "weight"):
            return batch.index.copy(), None
        weight = batch.weight  # a device tensor when the buffer's frames live on a device
        return batch.index.copy(), (weight.copy() if isinstance(weight, np.ndarray) else weight.cpu().numpy())

    def restore_draw(self, index: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Make the transitions ``index`` (with importance ``weight``, as ``drawn`` returned
        them) the next batch handed out, instead of drawing one: a resumed run then
        continues with the batch the interrupted one had drawn. Call it before ``next()``."""
        if self._in_flight is not None:
            raise ConfigError("restore_draw: a batch is already drawn; call it before the first next()")
        slot = self._take_slot()
        out = self.buffer.gather(index, self._host[slot])
        if weight is not None and isinstance(out.weight, np.ndarray):
            np.copyto(out.weight, weight)
        elif weight is not None:
            import torch

            out.weight.copy_(torch.from_numpy(np.asarray(weight, np.float32)))
        self._in_flight = (slot, None)

    def wait_for_prefetch(self) -> None:
        """Wait for the batch being sampled in the background, raising what the thread raised."""
        if self._in_flight is not None and self._in_flight[1] is not None:
            slot, future = self._in_flight
            self._in_flight = (slot, None)
            future.result()

    def close(self) -> None:
        """Wait for the background copy and stop the thread; the drawn batch is dropped."""
        try:
            self.wait_for_prefetch()
        finally:
            self._in_flight = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
