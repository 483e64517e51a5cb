"""Pickling a ``fastdqn.ReplayBuffer`` without a second copy of its frames in memory.

``Streamed(buffer)`` pickles as the bytes of ``ReplayBuffer.save``, written to an unlinked
scratch file that is memory-mapped and handed to the pickler as a ``PickleBuffer``: protocol 5
(what SB3 uses) writes it straight into the output, so the frames never pass through anonymous
memory. Unpickling writes the one ``bytearray`` it gets to a scratch file, frees it and loads
from that file, so the peak is one buffer's worth of memory. Scratch files live in
``scratch_dir`` (default: ``tempfile.gettempdir()``); protocols below 5 get a plain ``bytes`` copy.
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

