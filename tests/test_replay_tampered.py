"""A saved replay file edited by hand is refused at load, and no draw loops for ever.

The file's arrays (``tests/replay_files.py`` opens them) hold each env's write count, the
slot flags (transition starts, window ends, stack depths) and per-env tallies; a file whose
parts contradict each other used to load and then make ``sample()`` reject every draw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastdqn import CheckpointError, ReplayBuffer, ReplayStateError
from tests.replay_files import file_arrays

OPTIONS = {
    "flat": dict(capacity=64, obs_shape=(3,), num_envs=2, obs_dtype=np.float32),
    "stacked": dict(capacity=64, obs_shape=(4, 2, 2), num_envs=2, frame_stack=4),
    "nstep": dict(capacity=64, obs_shape=(4, 2, 2), num_envs=2, frame_stack=4, n_step=3),
    "prioritized": dict(capacity=64, obs_shape=(4, 2, 2), num_envs=2, frame_stack=4, prioritized=True),
}


def filled(options, steps=40, seed=0):
    buf = ReplayBuffer(**options, seed=seed)
    rng = np.random.default_rng(seed)
    E, shape, k = buf.num_envs, buf.obs_shape, buf.frame_stack
    t = np.zeros(E, np.int64)
    for _ in range(steps):
        frames = (t[:, None] + np.arange(k)[None, :]).astype(np.int64)
        if k > 1:
            obs = np.broadcast_to(frames[:, :, None, None] % 251, (E,) + shape).astype(buf.obs_dtype)
            nxt = np.broadcast_to((frames[:, :, None, None] + 1) % 251, (E,) + shape).astype(buf.obs_dtype)
        else:
            obs = np.broadcast_to(frames[:, :1] % 251, (E,) + shape).astype(buf.obs_dtype)
            nxt = (obs + 1) % 251
        term = rng.random(E) < 0.1
        buf.add(obs, nxt, rng.integers(0, 4, E), rng.random(E).astype(np.float32), term, np.zeros(E, bool))
        t = np.where(term, t + 1000, t + 1)
    return buf


@pytest.fixture(params=sorted(OPTIONS))
def saved(request, tmp_path):
    path = tmp_path / "replay.bin"
    filled(OPTIONS[request.param]).save(path)
    return path


def tamper(path, edit):
    data = bytearray(path.read_bytes())
    edit(file_arrays(data))
    path.write_bytes(bytes(data))


EDITS = {
    "zeroed slot flags": (lambda a: a["info"].fill(0), "tally"),
    "negative count": (lambda a: a["count"].__setitem__(0, -5), "write count"),
    "huge count": (lambda a: a["count"].__setitem__(1, 2**63 - 1), "write count"),
    "depth out of range": (lambda a: a["info"].__setitem__((0, 3), a["info"][0, 3] | 0x3F), "depth"),
    "flag on the newest slot": (lambda a: a["info"].__setitem__(
        (0, (a["count"][0] - 1) % a["info"].shape[1]), a["info"][0, (a["count"][0] - 1) % a["info"].shape[1]] | 0x80),
        "newest slot"),
    "tally raised": (lambda a: a["nvalid"].__setitem__(0, a["nvalid"][0] + 3), "tally"),
    "flag tally lowered": (lambda a: a["flagged"].__setitem__(1, a["flagged"][1] - 1), "tally"),
    "bool byte of 7": (lambda a: a["terminated"].view(np.uint8).__setitem__((1, 2), 7), "terminated"),
    "pending on an empty env": (lambda a: (a["count"].__setitem__(0, 0), a["pending"].__setitem__(0, True)),
                                "corrupt"),
    "nan reward": (lambda a: a["reward"].__setitem__((0, 2), np.nan), "reward"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_file_whose_bookkeeping_contradicts_itself_is_refused_at_load(saved, edit):
    change, match = EDITS[edit]
    tamper(saved, change)
    with pytest.raises(CheckpointError, match=match):
        ReplayBuffer.load(saved)


def test_an_episode_start_moved_is_refused(tmp_path):
    path = tmp_path / "replay.bin"
    filled(OPTIONS["stacked"]).save(path)

    def move(a):
        info = a["info"]
        written = np.flatnonzero((info[0] & 0x3F) == 2)
        info[0, written[0]] = (info[0, written[0]] & 0xC0) | 1

    tamper(path, move)
    with pytest.raises(CheckpointError, match="episode start"):
        ReplayBuffer.load(path)


@pytest.mark.parametrize("n_step", [1, 3])
def test_a_draw_that_keeps_being_rejected_raises_instead_of_looping(n_step):
    buf = filled(dict(OPTIONS["stacked"], n_step=n_step))
    buf._ring.arrays["slot_flags"][:] = 0  # what a tampered file did before loads were checked
    with pytest.raises(ReplayStateError, match="contradicts itself"):
        buf.sample(8)


def test_a_sparse_but_sound_buffer_still_fills_its_draws():
    # One transition among many rejected slots: rare acceptance is not mistaken for corruption.
    buf = ReplayBuffer(4096, (4, 1, 1), 64, frame_stack=4, n_step=8, seed=0)
    E = buf.num_envs
    obs = np.broadcast_to(np.arange(4, dtype=np.uint8)[None, :, None, None], (E, 4, 1, 1)).copy()
    nxt = obs + 1
    for step in range(6):
        term = np.zeros(E, bool)
        term[0] = step == 5
        buf.add(obs + step, nxt + step, np.zeros(E, np.int64), np.zeros(E, np.float32), term, np.zeros(E, bool))
    assert len(buf) == 6
    assert buf.sample(6).index.shape == (6,)


def test_the_valid_file_still_loads_and_samples_the_same(saved):
    a, b = ReplayBuffer.load(saved), ReplayBuffer.load(saved)
    np.testing.assert_array_equal(a.sample(16).index, b.sample(16).index)


CORRUPTIONS = textwrap.dedent("""
    import json, signal, sys
    import numpy as np
    from fastdqn import FastDQNError, ReplayBuffer
    from tests.replay_files import body_start

    path, cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    valid = open(path, "rb").read()
    header, start = body_start(valid)
    rng = np.random.default_rng(seed)

    def alarm(*_):
        raise TimeoutError

    signal.signal(signal.SIGALRM, alarm)
    outcomes = {}
    for case in range(cases):
        data = bytearray(valid)
        kind = ("flip", "flip body", "truncate", "extend", "header")[case % 5]
        if kind == "flip":
            for at in rng.integers(0, len(data), rng.integers(1, 8)):
                data[at] ^= 1 << int(rng.integers(8))
        elif kind == "flip body":
            for at in rng.integers(start, len(data), rng.integers(1, 4)):
                data[at] = int(rng.integers(256))
        elif kind == "truncate":
            data = data[:int(rng.integers(0, len(data)))]
        elif kind == "extend":
            data += bytes(int(rng.integers(1, 64)))
        else:
            h = json.loads(json.dumps(header))
            field = ["capacity", "num_envs", "len", "slots_per_env", "frame_stack"][case % 5]
            h[field] = int(rng.integers(-3, 200))
            blob = json.dumps(h).encode()
            data = data[:16] + len(blob).to_bytes(8, "little") + blob + data[start:]
        open(path + ".bad", "wb").write(bytes(data))
        signal.setitimer(signal.ITIMER_REAL, 10)
        try:
            buf = ReplayBuffer.load(path + ".bad")
            if len(buf):
                buf.sample(min(len(buf), 32))
            outcome = "loaded"
        except FastDQNError as exc:
            outcome = type(exc).__name__
        except TimeoutError:
            outcome = "timeout"
        except BaseException as exc:
            outcome = f"other {type(exc).__name__}: {exc}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(json.dumps(outcomes))
""")


@pytest.mark.parametrize("kind", ["stacked", "nstep", "prioritized"])
def test_random_corruptions_load_cleanly_or_raise_a_replay_error_never_hang(tmp_path, kind):
    path = tmp_path / "replay.bin"
    filled(OPTIONS[kind]).save(path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", CORRUPTIONS, str(path), "150", "1"], capture_output=True,
                         text=True, timeout=180, cwd=root)
    assert out.returncode == 0, out.stderr
    outcomes = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(outcomes) <= {"loaded", "CheckpointError", "ReplayError"}, outcomes
    assert outcomes.get("CheckpointError", 0) > 0


def test_loading_onto_a_missing_gpu_blames_the_device_not_the_file(tmp_path):
    import torch

    from fastdqn import DeviceReplayBuffer, ReplayError

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    path = tmp_path / "replay.bin"
    filled(OPTIONS["flat"]).save(path)
    for load in (DeviceReplayBuffer.load, ReplayBuffer.load):
        with pytest.raises(ReplayError, match="^device: 'cuda' was asked for but torch sees no CUDA device"):
            load(path, device="cuda")
    assert DeviceReplayBuffer.load(path, device="cpu").sample(4).index.shape == (4,)
