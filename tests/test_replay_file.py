"""The replay file read back: a header that lies is refused, before anything is allocated.

The file is a 16-byte magic, the header's length (8 bytes, little-endian), the header (JSON)
and the arrays' bytes. These tests edit the header by hand.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fastdqn import CheckpointError, ReplayBuffer

MAGIC_LEN = 16


@pytest.fixture
def saved(tmp_path):
    buf = ReplayBuffer(64, (4,), 2, obs_dtype=np.float32, seed=0)
    obs = np.arange(8, dtype=np.float32).reshape(2, 4)
    buf.add(obs, obs + 1, np.array([0, 1]), np.ones(2, np.float32), np.zeros(2, bool), np.zeros(2, bool))
    path = tmp_path / "replay.bin"
    buf.save(path)
    return path


def read_parts(path):
    data = path.read_bytes()
    n = int.from_bytes(data[MAGIC_LEN:MAGIC_LEN + 8], "little")
    return data[:MAGIC_LEN], json.loads(data[MAGIC_LEN + 8:MAGIC_LEN + 8 + n]), data[MAGIC_LEN + 8 + n:]


def write_parts(path, magic, header, body):
    blob = json.dumps(header).encode()
    path.write_bytes(magic + len(blob).to_bytes(8, "little") + blob + body)


def claim_capacity(header, capacity):
    """Make the header describe a buffer of ``capacity``, consistent in every field: each env's
    ring holds ceil(capacity / num_envs) + frame_stack sampleable slots and frame_stack + 1
    guard slots, the second axis of the per-slot arrays."""
    slots = -(-capacity // header["num_envs"]) + 2 * header["frame_stack"] + 1
    header["capacity"], header["slots_per_env"] = capacity, slots
    for _, _, shape in header["arrays"]:
        if len(shape) >= 2:
            shape[1] = slots


def peak_traced_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_tracemalloc_sees_numpy_allocations():
    """The control for the test below: a NumPy allocation shows in the traced peak."""
    assert peak_traced_bytes(lambda: np.zeros(50_000_000, np.uint8)) >= 50_000_000


@pytest.mark.parametrize("capacity", [10**12, 4_000_000])
def test_a_header_claiming_a_large_buffer_is_refused_before_allocating(saved, capacity):
    magic, header, body = read_parts(saved)
    claim_capacity(header, capacity)
    write_parts(saved, magic, header, body)

    def load():
        with pytest.raises(CheckpointError, match=rf"header describes \d+ bytes \(capacity {capacity}\)"):
            ReplayBuffer.load(saved)

    # 4 million CartPole transitions would be about 100 MB; nothing near that is allocated.
    assert peak_traced_bytes(load) < 1_000_000


def test_the_rng_state_never_chooses_what_is_constructed(saved):
    magic, header, body = read_parts(saved)
    header["rng"]["bit_generator"] = "seed"  # np.random.seed: would reseed NumPy's global RNG
    write_parts(saved, magic, header, body)
    before = np.random.get_state()[1].copy()
    with pytest.raises(CheckpointError, match="PCG64"):
        ReplayBuffer.load(saved)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("field, value, match", [
    *[(field, value, field) for field, value in [
        ("capacity", True), ("capacity", -5), ("capacity", 64.0), ("num_envs", "2"),
        ("frame_stack", 1000), ("obs_shape", [4, 0]), ("obs_shape", "4"), ("obs_dtype", "|O"),
        ("obs_dtype", "<U4"), ("obs_dtype", "[('a', '<f4')]"), ("len", -1), ("version", 2)]],
    ("kind", "PrioritizedReplayBuffer", "options: expected a JSON object with the keys \\['n_step', 'gamma', 'alpha'"),
    ("kind", "DeviceReplayBuffer", "kind: expected one of"),
    ("options", "n_step=1", "options: expected a JSON object"),
    ("options", {}, "options: expected a JSON object with the keys"),
    ("options", {"n_step": 1}, "options: expected a JSON object with the keys"),
    ("options", {"n_step": 1, "gamma": 0.99, "alpha": 0.6}, "options: expected a JSON object"),
    ("options", {"n_step": 0, "gamma": 0.99}, "n_step: expected an int >= 1"),
    ("options", {"n_step": 1, "gamma": 1.5}, "gamma: expected a finite number in"),
])
def test_a_bad_header_field_is_refused(saved, field, value, match):
    magic, header, body = read_parts(saved)
    header[field] = value
    write_parts(saved, magic, header, body)
    with pytest.raises(CheckpointError, match=match):
        ReplayBuffer.load(saved)


def test_a_header_that_is_not_an_object_is_refused(saved):
    magic, _, body = read_parts(saved)
    write_parts(saved, magic, [1, 2, 3], body)
    with pytest.raises(CheckpointError, match="header"):
        ReplayBuffer.load(saved)


def test_a_file_from_before_the_options_loads_with_the_defaults(saved):
    magic, header, body = read_parts(saved)
    assert header.pop("options") == {"n_step": 1, "gamma": 0.99} and header.pop("kind") == "ReplayBuffer"
    write_parts(saved, magic, header, body)
    buf = ReplayBuffer.load(saved)
    assert (buf.n_step, buf.gamma, len(buf)) == (1, 0.99, 2)


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
def test_files_of_the_earlier_classes_load_and_sample_as_they_did(kind):
    """Files written by the release's ReplayBuffer and PrioritizedReplayBuffer classes (before
    they became one class), with the batch those classes drew next after loading them."""
    data = Path(__file__).parent / "data"
    expected = json.loads((data / "replay_v1_next_samples.json").read_text())[kind]
    buf = ReplayBuffer.load(data / f"replay_v1_{kind}.bin")
    assert buf.prioritized == (kind == "prioritized")
    batch = buf.sample(8, beta=0.5)
    for name in ("action", "reward", "terminated", "discount") + (("weight",) if buf.prioritized else ()):
        np.testing.assert_array_equal(getattr(batch, name), np.array(expected[name], getattr(batch, name).dtype))
    assert hashlib.sha256(np.ascontiguousarray(batch.obs).tobytes()).hexdigest() == expected["obs_sha256"]
    assert hashlib.sha256(np.ascontiguousarray(batch.next_obs).tobytes()).hexdigest() == expected["next_obs_sha256"]
