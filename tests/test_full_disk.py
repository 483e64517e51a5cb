"""A full disk while a run writes: one line naming the file and the free space, the previous
file intact, and a sweep that records the failed run and goes on."""

from __future__ import annotations

import errno
import json
import os
from types import SimpleNamespace

import pytest
import torch

import fastdqn.util.atomic as atomic
from fastdqn.run.checkpoint import CHECKPOINT_NAME, load_checkpoint
from fastdqn.tools.cli import main

QUICK = ["--env-id", "CartPole-v1", "--num-envs", "4", "--learning-starts", "200", "--batch-size", "32",
         "--no-progress", "--no-cuda", "--torch-threads", "1", "--eval-episodes", "0"]


def full_disk(monkeypatch, free=4096):
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: free)


@pytest.mark.parametrize("error", [RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_a_write_that_fails_on_a_full_disk_names_the_file_and_the_free_space(tmp_path, monkeypatch, error):
    target = tmp_path / "checkpoint.pt"
    target.write_text("previous")
    full_disk(monkeypatch)

    def write(tmp):
        open(tmp, "w").write("partial")
        raise error

    with pytest.raises(OSError) as caught:
        atomic.atomic_write(target, write)
    assert caught.value.errno == errno.ENOSPC
    message = str(caught.value)
    assert str(target) in message and "0.0 MB free" in message and "unchanged" in message
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_a_failed_write_with_room_on_the_disk_keeps_its_own_error(tmp_path, monkeypatch):
    full_disk(monkeypatch, free=10**12)

    def write(tmp):
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        atomic.atomic_write(tmp_path / "x", write)


def test_train_on_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import fastdqn.run.checkpoint as checkpoint

    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(obj["trainer"]["global_step"])
        if len(calls) > 1:  # the disk fills up after the first checkpoint, as torch's writer reports it
            full_disk(monkeypatch)
            raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing "
                               "file data/3: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    run = tmp_path / "run"
    assert main(["train", *QUICK, "--total-timesteps", "800", "--checkpoint-every", "400", "--save-buffer",
                 "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(run / CHECKPOINT_NAME) in err[0] and "MB free" in err[0] and "--resume" in err[0]
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert load_checkpoint(run)["trainer"]["global_step"] == 400
    assert sorted(p.name for p in run.glob("replay-*.bin")) == ["replay-400.bin"]  # the new one given back


def test_a_sweep_whose_state_file_cannot_be_written_records_the_failed_run_and_goes_on(tmp_path, monkeypatch,
                                                                                       capsys):
    ray = pytest.importorskip("ray")
    import fastdqn.tools.sweep as sweep_module
    from fastdqn.tools.sweep import SweepSettings, _Driver

    settings = SweepSettings(("CartPole-v1",), (1, 2), (), 1.0, 0.0, 0)
    runs = {name: {"env_id": e, "seed": s, "run_dir": f"runs/{name}", "state": "running", "attempts": 1,
                   "error": None} for name, e, s in settings.run_names()}
    (tmp_path / "logs").mkdir()
    writes = []

    def write_sweep_json(folder, settings, runs):
        writes.append(json.loads(json.dumps(runs)))
        if len(writes) == 1:
            raise OSError(errno.ENOSPC, "no space left to write 'sweep.json' (0.0 MB free)")

    monkeypatch.setattr(sweep_module, "write_sweep_json", write_sweep_json)

    class Failed(ray.exceptions.RayError):
        cause = RuntimeError("CartPole-v1__1: fastdqn train exited with status 1: no space left")

    def get(ref):
        if ref == "a":
            raise Failed()
        return "finished"

    fake = SimpleNamespace(exceptions=ray.exceptions, get=get)
    driver = _Driver(fake, settings, tmp_path, runs, {})
    driver._finish("CartPole-v1__1", "a")  # the write fails: reported, not raised
    driver._finish("CartPole-v1__2", "b")
    assert runs["CartPole-v1__1"]["state"] == "failed" and runs["CartPole-v1__2"]["state"] == "finished"
    assert writes[-1]["CartPole-v1__1"]["state"] == "failed"
    assert "could not update sweep.json" in capsys.readouterr().err
