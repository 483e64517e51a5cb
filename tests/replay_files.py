"""Helpers that open a saved replay file's arrays for editing, as a tamperer would."""

from __future__ import annotations

import json
import math

import numpy as np

MAGIC_LEN = 16


def body_start(data: bytes) -> tuple[dict, int]:
    n = int.from_bytes(data[MAGIC_LEN:MAGIC_LEN + 8], "little")
    return json.loads(data[MAGIC_LEN + 8:MAGIC_LEN + 8 + n]), MAGIC_LEN + 8 + n


def file_arrays(data: bytearray) -> dict:
    """Name -> writable NumPy view into ``data`` (a replay file's bytes) of each array."""
    header, offset = body_start(bytes(data))
    arrays = {}
    for name, dtype, shape in header["arrays"]:
        dt = np.dtype(dtype)
        n = math.prod(shape) * dt.itemsize
        arrays[name] = np.frombuffer(memoryview(data)[offset:offset + n], dt).reshape(shape)
        offset += n
    return arrays
