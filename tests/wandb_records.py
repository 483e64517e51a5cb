"""Reading a W&B offline run file (``run-<id>.wandb``) back, for the tracking tests.

The file is a 7-byte header (``:W&B``, a 2-byte magic, a version byte) then the records in the
LevelDB log format: 32 KiB blocks of chunks, each chunk a CRC-32C (4 bytes), a length (2
bytes, little-endian) and a type (1: a whole record; 2, 3, 4: its first, middle, last part);
a block's tail shorter than a chunk header is zero padding. Each record is a protobuf
``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

HEADER = 7
BLOCK = 32768
CHUNK = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", data[:7]
    out, parts, pos = [], [], HEADER
    while pos + CHUNK <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK])
        body = data[pos + CHUNK:pos + CHUNK + length]
        pos += CHUNK + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        parts.append(body)
        if kind in (FULL, LAST):
            out.append(b"".join(parts))
            parts = []
    return out


def history(path: Path) -> list[dict]:
    """Every ``run.log`` row of the run, as {key: value}."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for raw in records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
