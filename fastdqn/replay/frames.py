"""``HostFrames``: the frame store of a buffer whose frames live in host RAM.

A frame store decides where frames live and where batches go: the copy kernels read
frames from its ``source`` and write into the host batch ``target`` returns; ``finish``
turns that into the batch handed out. Here the frames are the ring's own ``frames``
array and the host batch is the batch handed out, so both steps are direct.
"""

from __future__ import annotations

import numpy as np

from fastdqn.errors import ReplayError
from fastdqn.replay.batch import allocate_batch, check_batch
from fastdqn.replay.ring import Ring

_NO_NEXT = np.empty((0, 1, 1), np.uint8)  # a window batch's copy has no separate next_obs
_CHECKED_BATCHES = 8  # out= batches remembered as checked


def check_window(spec, window: bool) -> None:
    """Refuse window batches where the buffer cannot fill them."""
    if window and spec.frame_stack == 1:
        raise ReplayError("window: expected window=False for frame_stack=1 (obs and next_obs "
                          "share no frames), got window=True")
    if window and spec.n_step > 1:
        raise ReplayError(f"window: expected window=False for n_step={spec.n_step} (a window batch's "
                          f"next_obs is obs one frame on; an n-step next_obs is up to n frames "
                          f"on), got window=True; use window=False or n_step=1")


def kernel_views(batch, k: int, frame_bytes: int) -> tuple:
    """A host batch's frame arrays as the copy kernels' ``(B, k(+1), F)`` byte views."""
    B = batch.index.shape[0]
    if batch.frames is not None:
        return batch.frames.reshape(B, k + 1, frame_bytes), _NO_NEXT
    return (batch.obs.view(np.uint8).reshape(B, k, frame_bytes),
            batch.next_obs.view(np.uint8).reshape(B, k, frame_bytes))


class HostFrames:
    """Frames in the ring's host array; batches are NumPy arrays."""

    REFRESHES = False  # add writes the frames in place: after_add has nothing to do

    batch_device = None

    def __init__(self, ring: Ring, batch_type: type) -> None:
        self.ring, self.batch_type = ring, batch_type
        self.source = ring.arrays["frames"]
        self._checked: dict[int, tuple] = {}

    def make_batch(self, B: int, window: bool):
        spec = self.ring.spec
        check_window(spec, window)
        return allocate_batch(B, spec.obs_shape, spec.obs_dtype, window=window, batch_type=self.batch_type)

    def target(self, out, B: int) -> tuple:
        """(host batch the kernels fill, its kernel views, what ``finish`` needs); ``out`` is
        checked once and remembered (a few batches reused in turn are the usual case)."""
        if out is None:
            out = self.make_batch(B, False)
        cached = self._checked.get(id(out))
        if cached is not None and cached[0] is out and cached[1] == B:
            return cached[2], cached[3], None
        spec = self.ring.spec
        batch = check_batch(out, B, spec.obs_shape, spec.obs_dtype, self.batch_type)
        check_window(spec, batch.frames is not None)
        views = kernel_views(batch, spec.frame_stack, spec.frame_bytes)
        if len(self._checked) >= _CHECKED_BATCHES:
            self._checked.clear()
        self._checked[id(out)] = (out, B, batch, views)  # keeps out alive: its id stays its own
        return batch, views, None

    def finish(self, host, handle):
        return host

    def after_add(self, before: np.ndarray, env_ids: np.ndarray) -> None:
        """Nothing to move: ``add`` wrote the frames in place."""

    def saved_frames(self):
        return self.ring.arrays["frames"]

    def after_load(self) -> None:
        """Nothing to rebuild."""
