"""Staged copies between host and device: the one owner of pinned staging memory and of the
events that say when a copy has finished. ``StagedTransfer`` sends a batch laid out as one block
of bytes (``BlockLayout``) from one of a few pinned host blocks in turn, as one ``non_blocking``
copy and an event, and refills a host block only after its event; ``Readback`` copies device
tensors into one pinned host tensor and waits for its event before it is read. On a CPU
"device" the same code runs on plain memory (``HostEvent``), so the order of operations, and
the run, is the same. torch is imported inside functions only: the replay layer imports this.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Callable

import numpy as np

_ALIGN = 64  # bytes; every field of a block starts on a cache line


class BlockLayout:
    """Where each field of a batch lives in one contiguous block of bytes.

    Measured by passing ``take`` as ``allocate_batch``'s ``empty``; ``carve(block, view)``
    is then an ``empty`` that hands out the same pieces of a real block, in the same order.
    """

    def __init__(self) -> None:
        self.pieces: list[int] = []
        self.nbytes = 0

    def take(self, shape: tuple, dtype) -> np.ndarray:
        self.pieces.append(self.nbytes)
        self.nbytes += -(-math.prod(shape) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN
        return np.empty(shape, dtype)  # only measured

    def carve(self, block, view: Callable) -> Callable:
        """An ``empty(shape, dtype)`` returning ``view(block, offset, shape, dtype)`` piece by piece."""
        offsets = iter(self.pieces)
        return lambda shape, dtype: view(block, next(offsets), tuple(shape), np.dtype(dtype))


class StagedTransfer:
    """Pinned host blocks, one device block, one copy and one event per hand-out.

    ``make_batch(empty)`` builds a batch (a tuple of arrays) from ``empty(shape, dtype)``.
    ``pinned``, ``device_block``, ``copy`` and ``event`` are parameters so that tests can check
    the slot and event logic without a GPU; ``staged_transfer`` builds the real ones.
    """

    def __init__(self, make_batch: Callable, slots: int, *, pinned: Callable[[int], object],
                 device_block: Callable[[int], object], as_numpy: Callable, device_view: Callable,
                 copy: Callable, event: Callable):
        self.layout = layout = BlockLayout()
        make_batch(layout.take)
        self._make, self._device_view, self._new_block = make_batch, device_view, device_block
        self._blocks = [pinned(layout.nbytes) for _ in range(slots)]
        self.host = [make_batch(layout.carve(as_numpy(b), numpy_view)) for b in self._blocks]
        self._copy, self._event = copy, event
        self._events: list = [None] * slots

    @cached_property
    def _device(self):
        return self._new_block(self.layout.nbytes)

    @cached_property
    def device(self):
        """The device batch that ``send`` copies into (allocated at first use)."""
        return self._make(self.layout.carve(self._device, self._device_view))

    def ready(self, slot: int) -> None:
        """Wait until the copy out of ``slot`` (if any) has finished; then it may be refilled."""
        event = self._events[slot]
        if event is not None:
            event.synchronize()
            self._events[slot] = None

    def send(self, slot: int, *, fresh: bool = False):
        """Copy ``slot`` to the device batch and return that batch (``index`` stays on the host).
        ``fresh``: into newly allocated device memory instead, which later hand-outs leave alone."""
        block = self._new_block(self.layout.nbytes) if fresh else None
        self.copy_to(slot, block)
        batch = self.device if block is None else self._make(self.layout.carve(block, self._device_view))
        return batch._replace(index=self.host[slot].index)

    def copy_to(self, slot: int, block=None, nbytes: int | None = None) -> None:
        """Copy the first ``nbytes`` (default: all) of ``slot`` into ``block`` (default: the
        device block; else device memory of the same layout, see ``layout``) and record the
        slot's event."""
        dst, src = (self._device if block is None else block), self._blocks[slot]
        if nbytes is not None:
            dst, src = dst[:nbytes], src[:nbytes]
        self._copy(dst, src)
        event = self._event()
        event.record()
        self._events[slot] = event


class Readback:
    """Device tensors copied into one host tensor without waiting for them: ``start(src)`` queues
    the copy and records an event after it, ``result()`` waits for that event and returns ``host``.
    ``copy`` and ``event`` are parameters so that tests can check the order without a GPU."""

    def __init__(self, host, *, copy: Callable, event: Callable) -> None:
        self.host = host
        self._copy, self._event = copy, event
        self._done = None  # the event after the copy not yet waited for

    def start(self, src) -> None:
        self._copy(self.host, src)
        self._done = self._event()
        self._done.record()

    def result(self):
        """``host``, once the last copy into it has landed."""
        if self._done is not None:
            self._done.synchronize()
            self._done = None
        return self.host


def numpy_view(block: np.ndarray, offset: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """``shape`` elements of ``dtype`` at byte ``offset`` of a uint8 block."""
    n = math.prod(shape) * dtype.itemsize
    return block[offset:offset + n].view(dtype).reshape(shape)


def torch_view(block, offset: int, shape: tuple, dtype: np.dtype):
    """``shape`` elements of ``dtype`` at byte ``offset`` of a uint8 torch block."""
    import torch

    n = math.prod(shape) * dtype.itemsize
    return block[offset:offset + n].view(torch.from_numpy(np.empty(0, dtype)).dtype).view(shape)


class HostEvent:
    """The event of a copy that finished when it returned (a CPU "device"): nothing to wait for."""

    record = synchronize = lambda self: None


def _copy_and_event(device) -> tuple[bool, Callable, Callable]:
    """Whether ``device`` is a CUDA device, its ``non_blocking`` copy and its event class."""
    import torch

    cuda = torch.device(device).type == "cuda"
    return cuda, (lambda dst, src: dst.copy_(src, non_blocking=cuda)), (torch.cuda.Event if cuda else HostEvent)


def staged_transfer(make_batch: Callable, device, slots: int) -> StagedTransfer:
    """A ``StagedTransfer`` to ``device`` with ``slots`` host blocks: pinned memory and CUDA
    events for a CUDA device; for the CPU (a device-resident replay buffer built on the CPU)
    plain memory and copies that finish at once."""
    import torch

    cuda, copy, event = _copy_and_event(device)
    return StagedTransfer(
        make_batch, slots,
        pinned=lambda n: torch.empty(n, dtype=torch.uint8, pin_memory=cuda),
        device_block=lambda n: torch.empty(n, dtype=torch.uint8, device=device),
        as_numpy=lambda t: t.numpy(), device_view=torch_view, copy=copy, event=event,
    )


def readback(shape: tuple, dtype, device) -> Readback:
    """A ``Readback`` of tensors of ``shape`` and (torch) ``dtype`` from ``device``: pinned
    memory and CUDA events for a CUDA device, plain memory otherwise."""
    import torch

    cuda, copy, event = _copy_and_event(device)
    return Readback(torch.empty(shape, dtype=dtype, pin_memory=cuda), copy=copy, event=event)
