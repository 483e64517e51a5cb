"""The replay file: a magic string, a JSON header, then the buffer's arrays as raw bytes.

The header names the geometry, the variant (``kind``: ``ReplayBuffer`` or
``PrioritizedReplayBuffer``), its options, the RNG state and every array's name, dtype and
shape. Where the frames live is not part of the file: host and device buffers write and
read the same bytes. Every header field is checked, and the file's size compared with the
size the header implies, before anything is allocated: a small file cannot make the
loader allocate a large buffer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

import numpy as np

from fastdqn.errors import CheckpointError
from fastdqn.kernels.replay import MAX_FRAME_STACK
from fastdqn.replay.spec import ReplaySpec, _layout_bytes
from fastdqn.util.atomic import atomic_write
from fastdqn.util.rngstate import pcg64_state

MAGIC = b"FASTDQN-REPLAY\x00\x01"
VERSION = 1
_MAX_HEADER = 1 << 20
FILE_NAMES = {"slot_flags": "info"}  # the array names files have used since version 1
KINDS = {False: "ReplayBuffer", True: "PrioritizedReplayBuffer"}
OPTIONS = {False: ("n_step", "gamma"), True: ("n_step", "gamma", "alpha", "eps")}


def file_layout(spec: ReplaySpec, extra: dict) -> list:
    """``[name, dtype, shape]`` of every array in file order, as the header lists them."""
    arrays = list(spec.ring_layout().items()) + list(extra.items())
    return [[FILE_NAMES.get(name, name), np.dtype(dt).str, list(shape)] for name, (shape, dt) in arrays]


def write(path, header: dict, arrays: list) -> None:
    """Write ``header`` and ``arrays`` (NumPy arrays, or objects with ``parts()`` yielding
    host chunks) to ``path`` atomically."""
    blob = json.dumps(header).encode()

    def body(tmp):
        with open(tmp, "wb", buffering=0) as f:
            write_all(f, MAGIC + len(blob).to_bytes(8, "little") + blob)
            for arr in arrays:
                for part in (arr,) if isinstance(arr, np.ndarray) else arr.parts():
                    write_all(f, memoryview(part).cast("B"))

    atomic_write(os.fspath(path), body)


def read_header(f, path: str, size: int) -> tuple[dict, int]:
    """The checked header of the open file ``f`` and the byte count of header and magic."""
    head = f.read(len(MAGIC) + 8)
    if head[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"path: {path!r} is not a fastdqn replay buffer file "
                              f"(expected magic {MAGIC!r}, got {head[:len(MAGIC)]!r})")
    if len(head) < len(MAGIC) + 8:
        raise CheckpointError(f"path: {path!r} is truncated (ended inside the header)")
    n = int.from_bytes(head[len(MAGIC):], "little")
    if n > _MAX_HEADER:
        raise CheckpointError(f"path: {path!r} has a corrupt header (length {n})")
    data = bytearray(n)
    read_into(f, memoryview(data), path)
    try:
        header = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"path: {path!r} has a corrupt header: {exc}") from None
    return header, len(MAGIC) + 8 + n


def read_tag(path) -> dict | None:
    """The ``tag`` a file was saved with (``ReplayBuffer.save(tag=)``), reading only its header;
    None when it has none."""
    path = os.fspath(path)
    try:
        with open(path, "rb", buffering=0) as f:
            header, _ = read_header(f, path, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise CheckpointError(f"path: cannot open replay buffer file {path!r}: {exc}") from exc
    tag = header.get("tag") if isinstance(header, dict) else None
    return tag if isinstance(tag, dict) else None


def header_args(header, path: str) -> dict:
    """The constructor arguments in a replay file's header, each checked (allocates nothing):
    the geometry, ``prioritized`` and the variant's options."""
    def bad(field: str, expected: str, got) -> None:
        raise CheckpointError(f"path: {path!r} has a corrupt header: {field}: expected {expected}, got {got!r}")

    def count(value, minimum: int) -> bool:
        return type(value) is int and value >= minimum

    if not isinstance(header, dict):
        bad("header", "a JSON object", type(header).__name__)
    missing = {"version", "capacity", "obs_shape", "num_envs", "obs_dtype", "frame_stack", "slots_per_env",
               "len", "rng", "arrays"} - set(header)
    if missing:
        bad("header", "every field of the format", f"no {sorted(missing)}")
    if header["version"] != VERSION:
        raise CheckpointError(f"path: {path!r} has format version {header['version']!r}, expected {VERSION}")
    for name in ("capacity", "num_envs", "frame_stack"):
        if not count(header[name], 1):
            bad(name, "an int >= 1", header[name])
    if not count(header["len"], 0):
        bad("len", "an int >= 0", header["len"])
    pcg64_state(header["rng"], f"path: {path!r}: rng")
    if header["frame_stack"] > MAX_FRAME_STACK:
        bad("frame_stack", f"at most {MAX_FRAME_STACK}", header["frame_stack"])
    shape = header["obs_shape"]
    if not (isinstance(shape, list) and shape and all(count(x, 1) for x in shape)):
        bad("obs_shape", "a non-empty list of positive ints", shape)
    dtype = header["obs_dtype"]
    if not (isinstance(dtype, str) and re.fullmatch(r"[<>|][biuf][1248]", dtype) and np.dtype(dtype).str == dtype):
        bad("obs_dtype", "a plain numeric NumPy dtype like '<f4' or '|u1'", dtype)
    kind = header.get("kind", KINDS[False])
    if kind not in KINDS.values():
        bad("kind", f"one of {list(KINDS.values())}", kind)
    prioritized = kind == KINDS[True]
    # A file from before n-step returns has no options: it was written with the defaults.
    options = header.get("options", {})
    if not isinstance(options, dict) or ("options" in header and set(options) != set(OPTIONS[prioritized])):
        bad("options", f"a JSON object with the keys {list(OPTIONS[prioritized])}", options)
    return {"capacity": header["capacity"], "obs_shape": tuple(shape), "num_envs": header["num_envs"],
            "obs_dtype": np.dtype(dtype), "frame_stack": header["frame_stack"], "prioritized": prioritized,
            **options}


def check_size(header: dict, spec: ReplaySpec, extra: dict, start: int, size: int, path: str) -> None:
    """Refuse a file whose arrays or size differ from what its own header implies."""
    specs = file_layout(spec, extra)
    if header["arrays"] != specs or header["slots_per_env"] != spec.slots:
        raise CheckpointError(f"path: {path!r} holds arrays {header['arrays']}, expected {specs}")
    expected = start + _layout_bytes(spec.ring_layout()) + _layout_bytes(extra)
    if size != expected:
        raise CheckpointError(f"path: {path!r} is truncated or corrupt: its header describes "
                              f"{expected} bytes (capacity {spec.capacity}), the file has {size}")


def read_arrays(f, arrays: Iterable, path: str) -> None:
    """Read the file's arrays into place: NumPy arrays, or objects whose ``receive()``
    yields host chunks to fill (and sends each on when the next is asked for)."""
    for arr in arrays:
        for part in (arr,) if isinstance(arr, np.ndarray) else arr.receive():
            read_into(f, memoryview(part).cast("B"), path)


def write_all(f, data) -> None:
    """Write every byte of ``data`` (any buffer) to the unbuffered file ``f``."""
    with memoryview(data) as whole:
        view = whole.cast("B")
        while view.nbytes:
            view = view[f.write(view):]
        view.release()


def read_into(f, view: memoryview, path: str) -> None:
    while view.nbytes:
        got = f.readinto(view)
        if not got:
            raise CheckpointError(f"path: {path!r} is truncated (ended early)")
        view = view[got:]
