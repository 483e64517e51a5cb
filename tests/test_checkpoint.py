"""Checkpoint files: a failed or interrupted write leaves the previous one loadable; loading one
runs no code from it and refuses any field that is not what fastdqn wrote."""

from __future__ import annotations

import collections
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastdqn.util.atomic import atomic_write
from fastdqn.run.checkpoint import CHECKPOINT_NAME, buffer_path, load_checkpoint, save_checkpoint
from fastdqn.tools.cli import main
from fastdqn.errors import CheckpointError
from fastdqn.replay import ReplayBuffer

from checkpoint_doc import document


def state(step):
    return document(step, learner={"w": torch.arange(4.0) + step})


def test_roundtrip(tmp_path):
    save_checkpoint(tmp_path, state(7))
    loaded = load_checkpoint(tmp_path)  # a run folder resolves to its checkpoint.pt
    assert loaded["trainer"]["global_step"] == 7
    assert torch.equal(loaded["learner"]["w"], torch.tensor([7.0, 8.0, 9.0, 10.0]))
    assert buffer_path(loaded) is None
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_failed_write_keeps_previous_and_leaves_no_temp_file(tmp_path):
    save_checkpoint(tmp_path, state(1))

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / CHECKPOINT_NAME, broken)
    assert load_checkpoint(tmp_path)["trainer"]["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


# Saves checkpoint 1, then starts checkpoint 2 with torch.save replaced by one that writes half of
# the real bytes to the temporary file and SIGKILLs the process: a kill -9 that lands mid-write.
KILLED_MID_WRITE = """
import io, os, signal, sys, torch
import fastdqn.run.checkpoint
from checkpoint_doc import document

run_dir = sys.argv[1]
fastdqn.run.checkpoint.save_checkpoint(run_dir, document(1, {"w": torch.full((100_000,), 1.0)}))
real_save = torch.save

def half_then_die(obj, path):
    data = io.BytesIO()
    real_save(obj, data)
    with open(path, "wb") as f:
        f.write(data.getvalue()[: len(data.getvalue()) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = half_then_die
fastdqn.run.checkpoint.save_checkpoint(run_dir, document(2, {"w": torch.full((100_000,), 2.0)}))
"""


def test_kill_during_a_write_leaves_the_previous_checkpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # The kill left a torn temporary file beside the intact previous checkpoint.
    torn = list(tmp_path.glob(f".{CHECKPOINT_NAME}.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0
    with pytest.raises(CheckpointError):
        load_checkpoint(torn[0])
    loaded = load_checkpoint(tmp_path)
    assert loaded["trainer"]["global_step"] == 1 and torch.all(loaded["learner"]["w"] == 1.0)
    save_checkpoint(tmp_path, state(3))  # the next save clears the torn temporary file
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]
    assert load_checkpoint(tmp_path)["trainer"]["global_step"] == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_ours"])
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    path = save_checkpoint(tmp_path, state(3))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(os.urandom(1000))
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no file"):
        load_checkpoint(tmp_path)


def test_buffer_file_is_written_first_and_old_ones_removed(tmp_path):
    buf = ReplayBuffer(64, (3,), 2, obs_dtype=np.float32, seed=0)
    obs = np.arange(6, dtype=np.float32).reshape(2, 3)
    buf.add(obs=obs, next_obs=obs + 1, action=np.array([0, 1]), reward=np.array([1.0, -1.0], np.float32),
            terminated=np.zeros(2, bool), truncated=np.zeros(2, bool))
    save_checkpoint(tmp_path, state(10), buffer=buf)
    save_checkpoint(tmp_path, state(20), buffer=buf)
    loaded = load_checkpoint(tmp_path)
    path = buffer_path(loaded)
    assert path.name == "replay-20.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, "replay-20.bin"]
    restored = ReplayBuffer.load(path)
    assert len(restored) == 2
    pairs = set()
    for _ in range(50):
        got = restored.sample(1)
        pairs.add((got.obs[0, 0].item(), got.next_obs[0, 0].item(), got.reward[0].item()))
    assert pairs == {(0.0, 1.0, 1.0), (3.0, 4.0, -1.0)}
    path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        buffer_path(load_checkpoint(tmp_path))


# ---- loading runs no code and trusts no field ---------------------------------------------

CARTPOLE_RUN = ["--env-id", "CartPole-v1", "--total-timesteps", "400", "--learning-starts", "200",
                "--batch-size", "32", "--eval-episodes", "0", "--checkpoint-every", "0", "--save-buffer",
                "--no-progress", "--no-cuda"]


class RunsCode:
    """Unpickling this runs ``exec``: it writes ``path``, as a real attack would do worse."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('ran')",)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A CartPole run folder of 400 steps with its replay buffer, made once by ``fastdqn train``."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *CARTPOLE_RUN, "--run-dir", str(run)]) == 0
    return run


def copy_run(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def read_document(run):
    return torch.load(run / CHECKPOINT_NAME, weights_only=True)


def write_document(run, doc):
    torch.save(doc, run / CHECKPOINT_NAME)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv, capsys, run, *expected):
    """``main(argv)`` exits 2 with one line naming ``expected`` and leaves ``run`` as it was."""
    before = snapshot(run)
    assert main(argv) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastdqn: error: "), out.err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert snapshot(run) == before
    return lines[0]


def test_the_payload_runs_code_when_unpickled(tmp_path):
    """The control for the tests below: the payload is live under an unrestricted load."""
    marker = tmp_path / "marker"
    torch.save({"x": RunsCode(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("how", ["python", "eval", "resume"])
@pytest.mark.parametrize("where", ["field", "whole_file", "plain_pickle"])
def test_a_checkpoint_that_would_run_code_is_refused(trained_run, tmp_path, capsys, monkeypatch, how, where):
    monkeypatch.chdir(tmp_path)
    run = copy_run(trained_run, tmp_path)
    marker = tmp_path / "marker"
    if where == "field":  # a real checkpoint with one field swapped for the payload
        doc = read_document(run)
        doc["trainer"]["last_eval"] = RunsCode(marker)
        write_document(run, doc)
    elif where == "whole_file":
        torch.save(RunsCode(marker), run / CHECKPOINT_NAME)
    else:  # a bare pickle, not torch.save's zip archive
        (run / CHECKPOINT_NAME).write_bytes(pickle.dumps(RunsCode(marker)))
    if how == "python":
        with pytest.raises(CheckpointError, match="refused|corrupt"):
            load_checkpoint(run)
    elif how == "eval":
        refused(["eval", str(run)], capsys, run, CHECKPOINT_NAME)
    else:
        refused(["train", "--resume", str(run)], capsys, run, CHECKPOINT_NAME)
    assert not marker.exists()


def test_globals_allowed_elsewhere_in_the_process_do_not_widen_the_loader(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    doc = read_document(run)
    doc["trainer"]["last_eval"] = collections.Counter(a=1)
    write_document(run, doc)
    with torch.serialization.safe_globals([collections.Counter]):
        with pytest.raises(CheckpointError, match=r"refused.*collections\.Counter"):
            load_checkpoint(run)


def _tamper_config(key, value):
    def tamper(doc):
        doc["config"][key] = value
    return tamper


def _tamper(path, value):
    def tamper(doc):
        *parents, last = path
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value(node[last]) if callable(value) else value
    return tamper


TAMPERED = {
    "learning_rate": (_tamper_config("learning_rate", -1.0), "--learning-rate"),
    "seed_type": (_tamper_config("seed", "1"), "--seed"),
    "hidden_type": (_tamper_config("hidden", [120, True]), "--hidden"),
    "save_buffer_type": (_tamper_config("save_buffer", 1), "--save-buffer"),
    "unknown_config": (_tamper_config("shell", "rm -rf /"), "shell"),
    "weight_shape": (_tamper(("learner", "online", "net.0.weight"), torch.zeros(3, 3)), "net.0.weight"),
    "target_dtype": (_tamper(("learner", "target", "net.4.bias"), lambda t: t.double()), "net.4.bias"),
    "adam_shape": (_tamper(("learner", "optimizer", "state", 2, "exp_avg"), torch.zeros(5)), "exp_avg"),
    "adam_missing": (lambda doc: doc["learner"]["optimizer"]["state"][0].pop("exp_avg_sq"), "exp_avg_sq"),
    "adam_lr": (_tamper(("learner", "optimizer", "param_groups", 0, "lr"), -0.5), "lr"),
    "num_updates": (_tamper(("learner", "num_updates"), -1), "num_updates"),
    "learner_rng": (_tamper(("learner", "rng", "bit_generator"), "MT19937"), "rng"),
    "episodes": (_tamper(("trainer", "episodes"), -3), "trainer.episodes"),
    "pending_type": (_tamper(("trainer", "pending"), 1.5), "trainer.pending"),
    "torch_rng": (_tamper(("trainer", "torch_rng"), torch.zeros(7, dtype=torch.uint8)), "trainer.torch_rng"),
    "buffer_up": (_tamper(("buffer_file",), "../replay-400.bin"), "buffer_file"),
    "buffer_far": (_tamper(("buffer_file",), "../../../etc/passwd"), "buffer_file"),
    "buffer_other_step": (_tamper(("buffer_file",), "replay-200.bin"), "buffer_file"),
    "obs_shape": (_tamper(("obs_shape",), (4, -1)), "obs_shape"),
}


@pytest.fixture(scope="module")
def prioritized_run(tmp_path_factory):
    """The same run with --n-step 3 --prioritized: its checkpoint holds a drawn batch with
    weights and TD errors waiting to be written back."""
    run = tmp_path_factory.mktemp("prioritized") / "run"
    assert main(["train", *CARTPOLE_RUN, "--n-step", "3", "--prioritized", "--run-dir", str(run)]) == 0
    return run


TAMPERED_REPLAY_STATE = {
    "next_batch_keys": (_tamper(("trainer", "next_batch"), {"index": torch.zeros(32, dtype=torch.int64)}),
                        "trainer.next_batch"),
    "next_batch_index_dtype": (_tamper(("trainer", "next_batch", "index"), lambda t: t.int()),
                               "trainer.next_batch.index"),
    "next_batch_negative_id": (_tamper(("trainer", "next_batch", "index"), lambda t: t - t.max() - 1),
                               "trainer.next_batch.index"),
    "next_batch_weight_nan": (_tamper(("trainer", "next_batch", "weight"), lambda t: t * float("nan")),
                              "trainer.next_batch.weight"),
    "next_batch_weight_shape": (_tamper(("trainer", "next_batch", "weight"), lambda t: t[:5]),
                                "trainer.next_batch.weight"),
    "pending_td_negative": (_tamper(("trainer", "pending_priorities", "td_error"), lambda t: -1 - t),
                            "trainer.pending_priorities.td_error"),
    "pending_td_inf": (_tamper(("trainer", "pending_priorities", "td_error"), lambda t: t / 0),
                       "trainer.pending_priorities.td_error"),
    "pending_not_a_dict": (_tamper(("trainer", "pending_priorities"), [1, 2]), "trainer.pending_priorities"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED_REPLAY_STATE))
def test_a_tampered_drawn_batch_or_pending_priority_is_refused(prioritized_run, tmp_path, capsys, monkeypatch,
                                                               case):
    monkeypatch.chdir(tmp_path)
    tamper, expected = TAMPERED_REPLAY_STATE[case]
    run = copy_run(prioritized_run, tmp_path)
    doc = read_document(run)
    assert doc["trainer"]["next_batch"]["weight"] is not None and doc["trainer"]["pending_priorities"] is not None
    tamper(doc)
    write_document(run, doc)
    refused(["train", "--resume", str(run)], capsys, run, expected)


def test_a_checkpoint_without_the_replay_state_fields_still_resumes(prioritized_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = copy_run(prioritized_run, tmp_path)
    doc = read_document(run)
    del doc["trainer"]["next_batch"], doc["trainer"]["pending_priorities"]
    write_document(run, doc)
    assert main(["train", "--resume", str(run), "--total-timesteps", "600", "--no-progress"]) == 0
    assert load_checkpoint(run)["trainer"]["global_step"] == 600


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_field_is_one_line_and_exit_2(trained_run, tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    tamper, expected = TAMPERED[case]
    run = copy_run(trained_run, tmp_path)
    doc = read_document(run)
    tamper(doc)
    write_document(run, doc)
    refused(["eval", str(run), "--episodes", "1"], capsys, run, expected)
    refused(["train", "--resume", str(run)], capsys, run, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_replay_file_linking_out_of_the_run_folder_is_refused(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = copy_run(trained_run, tmp_path)
    outside = tmp_path / "elsewhere.bin"
    (run / "replay-400.bin").rename(outside)
    (run / "replay-400.bin").symlink_to(outside)
    refused(["train", "--resume", str(run)], capsys, run, "replay-400.bin", "outside")


def test_a_failed_learner_load_changes_nothing(trained_run):
    from fastdqn.learn.learner import Learner
    from fastdqn.learn.networks import MLP

    doc = read_document(trained_run)
    learner = Learner(MLP(4, 2, hidden=(120, 84)), compile=False, seed=0)
    before = learner.state_dict()
    bad = dict(doc["learner"], num_updates=-1)
    with pytest.raises(CheckpointError, match="num_updates"):
        learner.load_state_dict(bad)
    after = learner.state_dict()
    assert after["num_updates"] == before["num_updates"] and after["rng"] == before["rng"]
    for name in ("online", "target"):
        for key, value in before[name].items():
            assert torch.equal(after[name][key], value)
    assert after["optimizer"]["state"] == {}


# ---- format version 1 ---------------------------------------------------------------------


def with_slot_ids(run, doc) -> None:
    """The uniform drawn batch's index as versions before 3 wrote it: slot ids
    (env * slots_per_env + slot) where transition ids are absolute slot * num_envs + env."""
    buf = ReplayBuffer.load(run / doc["buffer_file"])
    ids = doc["trainer"]["next_batch"]["index"]
    env, absolute = ids % buf.num_envs, ids // buf.num_envs
    doc["trainer"]["next_batch"]["index"] = env * buf.slots_per_env + absolute % buf.slots_per_env


def as_version_1(run):
    """Rewrite a run's checkpoint as format version 1 wrote it: the same document with slot
    ids, plus NumPy's global RNG state (a tuple holding a uint32 array) in the trainer's part."""
    doc = read_document(run)
    with_slot_ids(run, doc)
    doc["trainer"]["numpy_rng"] = np.random.RandomState(7).get_state()
    doc["version"] = 1
    write_document(run, doc)


def test_a_version_1_checkpoint_needs_numpy_globals(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    as_version_1(run)
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(run / CHECKPOINT_NAME, weights_only=True)


def test_a_version_1_checkpoint_loads_as_the_same_state(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    as_version_1(run)
    old, new = load_checkpoint(run), load_checkpoint(trained_run)
    assert "numpy_rng" not in old["trainer"]
    assert old["trainer"]["next_batch"]["slot_ids"]  # turned into transition ids on resume
    assert_same_state(old, new, skip=("path", "next_batch"))


def test_a_version_1_checkpoint_with_anything_else_is_refused(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    as_version_1(run)
    doc = read_document_v1(run)
    doc["trainer"]["last_eval"] = RunsCode(tmp_path / "marker")
    write_document(run, doc)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(run)
    assert not (tmp_path / "marker").exists()
    doc["trainer"]["last_eval"] = None
    doc["version"] = 2  # NumPy objects in a version-2 file
    write_document(run, doc)
    with pytest.raises(CheckpointError, match="NumPy"):
        load_checkpoint(run)


def read_document_v1(run):
    """An unchecked read of a version-1 file, allowing what its NumPy array needs."""
    reconstruct = np.zeros(1).__reduce__()[0]  # where NumPy's arrays are rebuilt from
    with torch.serialization.safe_globals([reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]):
        return torch.load(run / CHECKPOINT_NAME, weights_only=True)


def test_version_1_and_3_checkpoints_resume_identically(trained_run, tmp_path, monkeypatch):
    """Resuming a version-1 file continues exactly as resuming the same state in version 3:
    same step, same weights and optimizer, same learner, replay and torch RNG streams."""
    monkeypatch.chdir(tmp_path)
    runs = {}
    for version in (1, 3):
        run = tmp_path / f"v{version}"
        shutil.copytree(trained_run, run)
        if version == 1:
            as_version_1(run)
        assert main(["train", "--resume", str(run), "--total-timesteps", "600"]) == 0
        runs[version] = load_checkpoint(run)
    assert runs[1]["trainer"]["global_step"] == 600
    assert runs[1]["learner"]["num_updates"] == load_checkpoint(trained_run)["learner"]["num_updates"] + 100
    assert_same_state(runs[1], runs[3], skip=("path", "run_dir"))
    buffers = [ReplayBuffer.load(tmp_path / f"v{v}" / "replay-600.bin") for v in (1, 3)]
    a, b = (buf.sample(64) for buf in buffers)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_a_version_2_uniform_batch_of_slot_ids_resumes_identically(trained_run, tmp_path, monkeypatch):
    """Before version 3 a uniform batch's index held slot ids (env * slots_per_env + slot);
    such a checkpoint resumes exactly as the same state written with transition ids."""
    monkeypatch.chdir(tmp_path)
    runs = {}
    for version in (2, 3):
        run = tmp_path / f"v{version}"
        shutil.copytree(trained_run, run)
        if version == 2:
            doc = read_document(run)
            with_slot_ids(run, doc)
            doc["version"] = 2
            write_document(run, doc)
        assert main(["train", "--resume", str(run), "--total-timesteps", "600"]) == 0
        runs[version] = load_checkpoint(run)
    assert_same_state(runs[2], runs[3], skip=("path", "run_dir"))


def assert_same_state(a, b, skip=()):
    """Equal plain data: same keys, equal tensors (values and dtypes), equal everything else."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            if key not in skip:
                assert_same_state(a[key], b[key], skip)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y, skip)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b and type(a) is type(b)


def test_a_symlinked_checkpoint_is_refused(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = copy_run(trained_run, tmp_path)
    run = tmp_path / "linked"
    run.mkdir()
    (run / CHECKPOINT_NAME).symlink_to(other / CHECKPOINT_NAME)
    before = snapshot(other)
    refused(["train", "--resume", str(run)], capsys, run, "symbolic link", CHECKPOINT_NAME)
    refused(["eval", str(run)], capsys, run, "symbolic link")
    assert snapshot(other) == before


def second_run(tmp_path, name):
    run = tmp_path / name
    assert main(["train", *CARTPOLE_RUN, "--run-dir", str(run)]) == 0
    return run


def test_another_runs_replay_file_beside_this_checkpoint_is_refused(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = copy_run(trained_run, tmp_path)
    other = second_run(tmp_path, "other")  # same settings, same step: the same file name
    shutil.copy(other / "replay-400.bin", run / "replay-400.bin")
    refused(["train", "--resume", str(run)], capsys, run, "replay-400.bin", "was not saved with it")


def test_each_checkpoint_names_its_run_and_the_replay_file_carries_it(trained_run):
    from fastdqn.replay.file import read_tag

    run_id = read_document(trained_run)["trainer"]["run_id"]
    assert len(run_id) == 32
    assert read_tag(trained_run / "replay-400.bin") == {"run_id": run_id, "global_step": 400}


def test_a_checkpoint_from_before_run_ids_still_resumes_with_its_replay_file(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    doc = read_document(run)
    del doc["trainer"]["run_id"]
    doc["version"] = 3
    write_document(run, doc)
    assert main(["train", "--resume", str(run), "--total-timesteps", "600", "--no-progress"]) == 0
    assert len(read_document(run)["trainer"]["run_id"]) == 32


@pytest.mark.parametrize("bad", ["x" * 32, 5, "ABC"])
def test_a_bad_run_id_is_refused(trained_run, tmp_path, capsys, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    run = copy_run(trained_run, tmp_path)
    doc = read_document(run)
    doc["trainer"]["run_id"] = bad
    write_document(run, doc)
    refused(["train", "--resume", str(run)], capsys, run, "trainer.run_id")
