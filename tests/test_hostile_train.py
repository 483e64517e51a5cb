"""Hostile flags to ``fastdqn train``: each refused with one line naming the flag, exit 2,
before the run folder, its lock or any file is created, and resume differences refused
before the run is touched."""

from __future__ import annotations

import pytest

from fastdqn.tools.cli import main

from cli_errors import fails

CARTPOLE = ["train", "--env-id", "CartPole-v1", "--no-progress", "--run-dir", "run"]
QUICK = ["--num-envs", "4", "--learning-starts", "200", "--batch-size", "32", "--no-cuda", "--torch-threads", "1",
         "--eval-episodes", "0"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv, expected", [
    (["--n-step", str(2**70)], ["--n-step", "at most 65536"]),
    (["--n-step", str(2**63)], ["--n-step", "at most 65536"]),
    (["--prioritized", "--per-alpha", "1e308"], ["--per-alpha", "[0.0, 10.0]"]),
    (["--prioritized", "--per-eps", "1e-300", "--per-alpha", "5"], ["--per-eps", "underflows"]),
    (["--num-envs", "5000", "--buffer-size", "1000", "--batch-size", "32"], ["--buffer-size", ">= 5000", "1000"]),
])
def test_a_replay_flag_the_buffer_would_refuse_is_refused_before_the_run_folder(argv, expected, capsys, workdir):
    fails(CARTPOLE + argv, capsys, workdir, *expected)
    assert not (workdir / "run").exists()


@pytest.fixture
def saved_run(workdir):
    run = workdir / "saved"
    assert main(["train", "--env-id", "CartPole-v1", "--no-progress", *QUICK, "--buffer-size", "500",
                 "--total-timesteps", "400", "--save-buffer", "--run-dir", str(run)]) == 0
    return run


@pytest.mark.parametrize("flag, value", [("--gamma", "0.9"), ("--n-step", "3"), ("--per-alpha", "0.7")])
def test_resume_with_a_saved_buffer_refuses_a_changed_replay_flag_first(saved_run, capsys, flag, value):
    files = {p.name: p.read_bytes() for p in saved_run.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(saved_run), flag, value, "--total-timesteps", "800", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fastdqn: error: {flag}: the checkpoint was trained with"), err
    assert {p.name: p.read_bytes() for p in saved_run.iterdir()} == files


@pytest.mark.parametrize("flag", ["--env-threads", "--torch-threads"])
def test_a_thread_count_beyond_the_cores_is_refused_first(flag, capsys, workdir):
    fails(CARTPOLE + [flag, "100000"], capsys, workdir, flag, "CPU cores", "got 100000")
    assert not (workdir / "run").exists()


def test_envs_that_would_not_fit_in_memory_are_refused_first(capsys, workdir):
    fails(CARTPOLE + ["--num-envs", str(10**9), "--buffer-size", str(10**9)], capsys, workdir,
          "--num-envs 1000000000", "GB", "free")


def test_eval_refuses_envs_that_would_not_fit_in_memory(saved_run, capsys, workdir, monkeypatch):
    import fastdqn.replay.spec

    capsys.readouterr()
    fails(["eval", "saved", "--num-envs", str(10**9)], capsys, workdir, "--num-envs 1000000000", "GB")
    monkeypatch.setattr(fastdqn.replay.spec, "available_memory", lambda: 10**8)
    fails(["eval", "saved", "--num-envs", "100000"], capsys, workdir, "--num-envs 100000", "0.10 GB")


def test_eval_of_a_checkpoint_from_a_machine_with_more_cores_runs(saved_run, capsys):
    from fastdqn.run.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(saved_run)
    state["config"]["torch_threads"] = 100000
    save_checkpoint(saved_run, {k: state[k] for k in ("config", "learner", "trainer", "obs_shape")})
    assert main(["eval", str(saved_run), "--episodes", "1", "--num-envs", "1", "--no-cuda", "--json"]) == 0


@pytest.mark.parametrize("where", [("online", None), ("optimizer", "exp_avg")])
@pytest.mark.parametrize("command", ["resume", "eval"])
def test_a_checkpoint_with_nan_weights_is_blamed_on_the_file(saved_run, capsys, workdir, where, command):
    import torch

    from fastdqn.run.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(saved_run)
    part, key = where
    if part == "online":
        tensor = next(iter(state["learner"]["online"].values()))
    else:
        tensor = next(iter(state["learner"]["optimizer"]["state"].values()))[key]
    tensor.view(-1)[0] = torch.nan
    save_checkpoint(saved_run, {k: state[k] for k in ("config", "learner", "trainer", "obs_shape")})
    capsys.readouterr()
    argv = (["train", "--resume", "saved", "--total-timesteps", "800", "--no-progress"] if command == "resume"
            else ["eval", "saved", "--episodes", "1", "--num-envs", "1", "--no-cuda"])
    line = fails(argv, capsys, workdir, "NaN or inf", "damaged or was edited")
    assert "learning rate" not in line and f"['{part}']" in line
