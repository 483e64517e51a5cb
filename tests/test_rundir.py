"""Run folders: one owner at a time (two real processes), a killed owner's lock does not
block --resume, and --resume accepts --run-dir naming the same folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from processes import fastdqn, start, wait_for_line

from fastdqn.run.checkpoint import load_checkpoint
from fastdqn.run.rundir import LOCK_NAME, RunDirLock, run_files

QUICK = ["--env-id", "CartPole-v1", "--num-envs", 4, "--learning-starts", 200, "--batch-size", 32,
         "--eval-episodes", 0, "--no-progress", "--no-cuda", "--torch-threads", 1]


def wait_for_checkpoint(run, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return load_checkpoint(run)["trainer"]["global_step"]
        except Exception:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
    raise AssertionError("no checkpoint")


def test_second_process_is_refused_and_a_killed_owner_does_not_block_resume(tmp_path):
    run = tmp_path / "run"
    first = start("train", *QUICK, "--total-timesteps", 10**7, "--checkpoint-every", 400, "--run-dir", run)
    try:
        wait_for_line(first, "steps into")  # the folder is locked before the summary is printed
        for argv in (["train", *QUICK, "--total-timesteps", 1000, "--run-dir", run],):
            second = subprocess.run(fastdqn(*argv), capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert second.stderr.splitlines() == [
                f"fastdqn: error: --run-dir: {str(run)!r} is in use by another fastdqn process; wait for it "
                "to finish or stop it, or choose another --run-dir"]
            assert "done" not in second.stdout
        step = wait_for_checkpoint(run, first)
        busy = subprocess.run(fastdqn("train", "--resume", run, "--no-progress"), capture_output=True,
                              text=True, timeout=120)
        assert busy.returncode == 2 and "in use by another fastdqn process" in busy.stderr
        assert len(busy.stderr.splitlines()) == 1
    finally:
        first.kill()  # SIGKILL: the lock goes with the process
        first.wait()
    assert step > 0
    saved = load_checkpoint(run)["trainer"]["global_step"]
    resumed = subprocess.run(fastdqn("train", "--resume", run, "--total-timesteps", saved + 400, "--no-progress",
                                     "--run-dir", run),  # the same folder: accepted
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {saved:,}" in resumed.stdout
    assert load_checkpoint(run)["trainer"]["global_step"] == saved + 400


def test_lock_is_exclusive_and_released(tmp_path):
    run = tmp_path / "run"
    lock = RunDirLock(run)
    other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from fastdqn.run.rundir import RunDirLock; RunDirLock(Path(sys.argv[1]))", str(run)],
                           capture_output=True, text=True)
    assert other.returncode != 0 and "in use by another fastdqn process" in other.stderr
    lock.release()
    again = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from fastdqn.run.rundir import RunDirLock; RunDirLock(Path(sys.argv[1]))", str(run)],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (run / LOCK_NAME).exists() and run_files(run) == []  # the lock file is not a run file


def test_resume_into_another_run_dir_is_refused(tmp_path):
    from fastdqn.tools.cli import main

    run = tmp_path / "run"
    assert main([str(a) for a in ["train", *QUICK, "--total-timesteps", 400, "--run-dir", run]]) == 0
    assert main(["train", "--resume", str(run), "--run-dir", str(tmp_path / "elsewhere")]) == 2
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "events.out.tfevents.1.host.2.0", "replay-8.bin"])
def test_run_files_are_recognised(tmp_path, name):
    (tmp_path / name).write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert run_files(tmp_path) == [name]


def test_two_runs_started_together_into_one_folder(tmp_path):
    run = tmp_path / "run"
    procs = [start("train", *QUICK, "--total-timesteps", 600, "--seed", seed, "--run-dir", run) for seed in (1, 2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    (winner_out,) = [out for rc, out, _ in results if rc == 0]
    (loser_err,) = [err for rc, _, err in results if rc == 2]
    assert "done: 600 steps" in winner_out and len(loser_err.splitlines()) == 1
    seed = 1 if results[0][0] == 0 else 2
    assert load_checkpoint(run)["config"]["seed"] == seed
    assert json.loads((run / "config.json").read_text())["seed"] == seed
    steps = [json.loads(line)["global_step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 600  # one run's records, in order
