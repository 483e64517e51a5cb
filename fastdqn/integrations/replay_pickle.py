"""Pickling a ``fastdqn.ReplayBuffer`` without a second copy of its frames in memory.

Stable-Baselines3 saves a replay buffer by pickling it (protocol 5). ``Streamed(buffer)``
pickles as the bytes of ``ReplayBuffer.save``: the buffer is saved to an unlinked scratch
file, which is memory-mapped and handed to the pickler as a ``PickleBuffer``; protocol 5
writes such a buffer straight into the output file, so the frames go disk -> page cache ->
pickle file and never through a copy in anonymous memory. Unpickling gets the frames as one
``bytearray`` (the unpickler's own), writes it to a scratch file, frees it, and loads the
buffer from that file: the peak is one buffer's worth of memory, not two.

The scratch files live in ``scratch_dir`` (default: ``tempfile.gettempdir()``, which follows
``TMPDIR``); on a RAM-backed ``/tmp`` point it at a disk folder. Protocols below 5 cannot
stream and get a plain ``bytes`` copy.
"""

from __future__ import annotations

import mmap
import os
import pickle
import tempfile

from fastdqn.replay import ReplayBuffer
from fastdqn.replay.file import write_all

_PREFIX = "fastdqn-replay-"


class Streamed:
    """Pickles as ``buffer``; unpickles as a ``ReplayBuffer`` equal to it."""

    def __init__(self, buffer: ReplayBuffer, scratch_dir: str | None = None):
        self.buffer = buffer
        self.scratch_dir = scratch_dir

    def __reduce_ex__(self, protocol):
        fd, path = tempfile.mkstemp(prefix=_PREFIX, suffix=".bin", dir=self.scratch_dir)
        os.close(fd)
        try:
            self.buffer.save(path)
            with open(path, "rb") as f:
                # ACCESS_COPY makes the map writable (private pages, never written), so the
                # pickler stores it as a bytearray that the loader can free early.
                frames = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        finally:
            os.unlink(path)  # the map keeps the data alive until the pickler lets go of it
        if protocol >= 5:
            return _load, (pickle.PickleBuffer(frames),)
        return _load, (frames[:],)


def _load(blob) -> ReplayBuffer:
    fd, path = tempfile.mkstemp(prefix=_PREFIX, suffix=".bin")
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            write_all(f, blob)
        if isinstance(blob, bytearray):
            blob.clear()  # free the unpickler's copy before the buffer allocates its own
        return ReplayBuffer.load(path)
    finally:
        os.unlink(path)

