"""Pickling a ``fastdqn.ReplayBuffer`` without a second copy of its frames in memory.

``Streamed(buffer)`` pickles as the bytes of ``ReplayBuffer.save``, written to an unlinked
scratch file that is memory-mapped and handed to the pickler as a ``PickleBuffer``: protocol 5
(what SB3 uses) writes it straight into the output, so the frames never pass through anonymous
memory. Unpickling writes the one ``bytearray`` it gets to a scratch file, frees it and loads
from that file, so the peak is one buffer's worth of memory. Scratch files live in
``scratch_dir`` (default: ``tempfile.gettempdir()``); protocols below 5 get a plain ``bytes`` copy.

A buffer whose rings have not wrapped yet pickles only the slots written so far: each env's
row of every per-slot array up to the largest write count, as views of the live arrays (no
copy, no scratch file); unpickling writes them into a scratch replay file with the unwritten
slots left as holes (zeros), so 5,000 transitions in a 1M-capacity buffer pickle as 5,000.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import pickle
import tempfile

import numpy as np

from fastdqn.replay import ReplayBuffer
from fastdqn.replay.file import MAGIC, write_all

_PREFIX = "fastdqn-replay-"


class Streamed:
    """Pickles as ``buffer``; unpickles as a ``ReplayBuffer`` equal to it."""

    def __init__(self, buffer: ReplayBuffer, scratch_dir: str | None = None):
        self.buffer = buffer
        self.scratch_dir = scratch_dir

    def __reduce_ex__(self, protocol):
        header, arrays = self.buffer.file_parts()
        if all(isinstance(a, np.ndarray) for a in arrays):
            parts = _filled_parts(header, arrays)
            if protocol >= 5:
                return _load_filled, (json.dumps(header).encode(), *map(pickle.PickleBuffer, parts))
            return _load_filled, (json.dumps(header).encode(), *(p.tobytes() for p in parts))
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



def _per_slot(header: dict, shape) -> bool:
    return len(shape) >= 2 and shape[:2] == [header["num_envs"], header["slots_per_env"]]


def _filled_parts(header: dict, arrays: list) -> list:
    """Contiguous views of what the file holds, per-slot arrays cut to the slots written (one
    view per env); sets ``header["filled"]`` to that number of slots."""
    count = arrays[[name for name, _, _ in header["arrays"]].index("count")]
    filled = min(header["slots_per_env"], int(count.max()))
    header["filled"] = filled
    parts = []
    for (_, _, shape), arr in zip(header["arrays"], arrays):
        if _per_slot(header, shape):
            parts += [arr[e, :filled] for e in range(header["num_envs"])]
        else:
            parts.append(arr)
    return parts


def _load_filled(header_blob: bytes, *parts) -> ReplayBuffer:
    header = json.loads(header_blob)
    filled = header.pop("filled")
    blob = json.dumps(header).encode()
    fd, path = tempfile.mkstemp(prefix=_PREFIX, suffix=".bin")
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            write_all(f, MAGIC + len(blob).to_bytes(8, "little") + blob)
            chunks = iter(parts)
            for _, dtype, shape in header["arrays"]:
                per_slot = _per_slot(header, shape)
                for _ in range(header["num_envs"] if per_slot else 1):
                    chunk = next(chunks)
                    write_all(f, chunk)
                    if isinstance(chunk, bytearray):
                        chunk.clear()  # free the unpickler's copy as soon as it is on disk
                    if per_slot:  # the slots never written: a hole, read back as zeros
                        f.seek((shape[1] - filled) * math.prod(shape[2:]) * np.dtype(dtype).itemsize, os.SEEK_CUR)
            f.truncate(f.tell())
        return ReplayBuffer.load(path)
    finally:
        os.unlink(path)
