"""The command line: help, defaults by kind of env, and every bad input.

Each bad input must end in exit status 2 with one line ``fastdqn: error: ...`` on stderr,
before any file is created.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastdqn.run.checkpoint import save_checkpoint
from fastdqn.tools.cli import build_parser, main
from fastdqn.run.config import TrainConfig

from checkpoint_doc import document
from cli_errors import fails

TRAIN_FLAGS = ["--env-id", "--seed", "--total-timesteps", "--learning-rate", "--num-envs",
               "--buffer-size", "--gamma", "--target-network-frequency", "--batch-size", "--start-e",
               "--end-e", "--exploration-fraction", "--learning-starts", "--train-frequency", "--cuda",
               "--no-cuda", "--run-dir", "--compile", "--no-compile", "--loss", "--eval-every",
               "--eval-episodes", "--checkpoint-every", "--resume", "--save-buffer", "--async-envs",
               "--sticky-actions"]


def test_help_lists_every_flag_with_its_default():
    result = subprocess.run([sys.executable, "-m", "fastdqn", "train", "--help"],
                            capture_output=True, text=True, check=True)
    text = " ".join(result.stdout.split())
    for flag in TRAIN_FLAGS:
        assert flag in text, flag
    assert "(default: Atari 0.0001, vector 0.001)" in text  # --learning-rate, per kind of env
    assert "(default: Atari 80000, vector 1000)" in text  # --learning-starts
    top = subprocess.run([sys.executable, "-m", "fastdqn", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "eval", "bench"):
        assert command in top.stdout


def test_flags_parse_to_config_fields():
    args = build_parser().parse_args(["train", "--no-compile", "--hidden", "64,32", "--learning-rate", "3e-4"])
    assert args.compile is False and args.hidden == (64, 32) and args.learning_rate == 3e-4
    assert args.cuda is None and args.total_timesteps is None  # resolved later from the preset


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


CARTPOLE = ["train", "--env-id", "CartPole-v1", "--no-progress"]


@pytest.mark.parametrize("argv, expected", [
    (["--env-id", "CartPole-v9"], ["CartPole-v9", "CartPole-v1"]),
    (["--batch-size", "64", "--buffer-size", "32", "--learning-starts", "64"], ["--batch-size 64", "--buffer-size 32"]),
    (["--learning-starts", "10", "--batch-size", "32"], ["--learning-starts 10", "32"]),
    (["--total-timesteps", "0"], ["--total-timesteps", "0"]),
    (["--total-timesteps", "-5"], ["--total-timesteps", "-5"]),
    (["--learning-rate", "0"], ["--learning-rate", "0"]),
    (["--learning-rate=-1e-3"], ["--learning-rate"]),
    (["--num-envs", "0"], ["--num-envs"]),
    (["--train-frequency", "0"], ["--train-frequency"]),
    (["--exploration-fraction", "0"], ["--exploration-fraction"]),
    (["--gamma", "1.5"], ["--gamma"]),
    (["--target-network-frequency", "1001", "--train-frequency", "4"], ["--target-network-frequency 1001"]),
    (["--buffer-size", str(10**12)], ["--buffer-size", "GB", "free"]),
    (["--n-step", "0"], ["--n-step", "int >= 1", "got 0"]),
    (["--per-alpha", "-0.5"], ["--per-alpha", ">= 0", "-0.5"]),
    (["--per-beta-start", "1.5"], ["--per-beta-start", "[0, 1]", "1.5"]),
    (["--per-beta-end", "nan"], ["--per-beta-end", "[0, 1]", "nan"]),
    (["--per-eps", "0"], ["--per-eps", "> 0", "got 0.0"]),
    (["--adam-eps=-1e-8"], ["--adam-eps", "> 0"]),
    (["--preset", "rainbow"], ["--preset", "'rainbow'", "rainbow-lite"]),
])
def test_bad_train_input(argv, expected, capsys, workdir):
    env = [] if "--env-id" in argv else ["--env-id", "CartPole-v1"]
    fails(["train", "--no-progress", *env, *argv], capsys, workdir, *expected)
    assert not (workdir / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(capsys, workdir):
    fails(CARTPOLE + ["--cuda"], capsys, workdir, "--cuda", "no CUDA device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_eval_cuda_without_gpu(capsys, workdir):
    _write_checkpoint(workdir / "run")
    fails(["eval", "run", "--cuda"], capsys, workdir, "--cuda", "no CUDA device", "--no-cuda")


def test_eval_num_envs_zero(capsys, workdir):
    _write_checkpoint(workdir / "run")  # a loadable checkpoint: the flag alone is refused
    fails(["eval", "run", "--num-envs", "0"], capsys, workdir, "--num-envs", "int >= 1", "got 0")


def test_missing_checkpoint(capsys, workdir):
    fails(CARTPOLE + ["--resume", "nowhere"], capsys, workdir, "nowhere")
    fails(["eval", "nowhere/checkpoint.pt"], capsys, workdir, "nowhere")


def _write_checkpoint(run_dir, **config):
    run_dir.mkdir()
    return save_checkpoint(run_dir, document(100, **config))


def test_corrupt_and_truncated_checkpoints(tmp_path, capsys, workdir):
    run = tmp_path / "run"
    path = _write_checkpoint(run, batch_size=32, learning_starts=32)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fails(CARTPOLE + ["--resume", str(run)], capsys, workdir, "truncated or corrupt")
    fails(["eval", str(run)], capsys, workdir, "truncated or corrupt")
    path.write_bytes(b"not a checkpoint at all")
    fails(CARTPOLE + ["--resume", str(path)], capsys, workdir, "truncated or corrupt")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]


def test_resume_with_contradicting_config_is_refused(tmp_path, capsys, workdir):
    run = tmp_path / "run"
    _write_checkpoint(run)
    fails(["train", "--resume", str(run), "--env-id", "Acrobot-v1"], capsys, workdir,
          "--env-id", "CartPole-v1", "Acrobot-v1")
    fails(["train", "--resume", str(run), "--hidden", "32,32"], capsys, workdir, "--hidden")
    fails(["train", "--resume", str(run), "--preset", "rainbow-lite"], capsys, workdir,
          "--preset", "drop --preset")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys, workdir):
    run = tmp_path / "run"
    path = _write_checkpoint(run)
    before = path.read_bytes()
    fails(CARTPOLE + ["--run-dir", str(run)], capsys, workdir, "--resume")
    assert path.read_bytes() == before


def test_bad_eval_input(tmp_path, capsys, workdir):
    run = tmp_path / "run"
    _write_checkpoint(run)
    fails(["eval", str(run), "--episodes", "0"], capsys, workdir, "--episodes")
    fails(["eval", str(run), "--epsilon", "2"], capsys, workdir, "--epsilon")


def test_bench_is_registered():
    args = build_parser().parse_args(["bench"])
    assert args.command == "bench" and callable(args.handler)


def test_config_json_is_the_resolved_config(tmp_path):
    run = tmp_path / "run"
    rc = main(["train", "--env-id", "CartPole-v1", "--total-timesteps", "400", "--learning-starts", "200",
               "--batch-size", "32", "--eval-episodes", "0", "--run-dir", str(run), "--no-progress",
               "--no-cuda"])
    assert rc == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["total_timesteps"] == 400 and saved["learning_rate"] == 1e-3  # the vector preset
    assert saved["run_dir"] == str(run) and saved["cuda"] is False
    assert TrainConfig.from_dict(saved).hidden == (120, 84)


def test_replay_estimate_matches_the_buffer():
    from fastdqn.run.memory import replay_bytes
    from fastdqn.run.envs import env_info
    from fastdqn.replay import ReplayBuffer

    for env_id, capacity, num_envs in [("Pong-v5", 3000, 8), ("CartPole-v1", 1000, 3)]:
        info = env_info(env_id)
        config = TrainConfig(env_id=env_id, buffer_size=capacity, num_envs=num_envs, batch_size=32,
                             learning_starts=32)
        k = info.frame_stack
        # The README's layout: each env's ring holds its newest ceil(capacity / num_envs) + k
        # sampleable frames plus k + 1 guard slots; a slot stores one frame (a k-stack's
        # observation holds k frames) and its transition's metadata: action int32 (4 bytes),
        # clipped reward float32 (4), terminated bool (1) and an info byte (1). Each env adds
        # its write count (int64), a pending flag (bool), a flagged position (int64) and its
        # number of valid rows (int64).
        slots = math.ceil(capacity / num_envs) + k + (k + 1)
        frame_bytes = math.prod(info.obs_shape) // k * np.dtype(info.obs_dtype).itemsize
        expected = num_envs * (slots * (frame_bytes + 4 + 4 + 1 + 1) + 8 + 1 + 8 + 8)
        assert replay_bytes(config, info) == expected
        buffer = ReplayBuffer(capacity, info.obs_shape, num_envs, obs_dtype=info.obs_dtype, frame_stack=k)
        assert buffer.nbytes == expected


# ---- every command: one line and status 2, before anything is made --------------------------


@pytest.mark.parametrize("argv, expected", [
    (["train", "--learning-rate", "abc"], ["--learning-rate", "'abc'", "fastdqn train --help"]),
    (["train", "--buffer-size", "1e5"], ["--buffer-size", "'1e5'"]),
    (["train", "--loss", "foo"], ["--loss", "'foo'", "mse"]),
    (["train", "--resume"], ["--resume", "expected one argument"]),
    (["train", "--no-such-flag"], ["--no-such-flag"]),
    (["eval"], ["CHECKPOINT_OR_RUN_DIR", "fastdqn eval --help"]),
    (["eval", "run", "--episodes", "ten"], ["--episodes", "'ten'"]),
    (["bench", "--num-envs", "abc"], ["--num-envs", "'abc'", "fastdqn bench --help"]),
    (["bench", "--quick", "extra"], ["extra"]),
    (["tarin"], ["'tarin'", "train"]),
    ([], ["expected a command", "fastdqn --help"]),
])
def test_argparse_errors_are_one_line(argv, expected, capsys, workdir):
    fails(argv, capsys, workdir, *expected)
    assert capsys.readouterr().out == ""  # no usage block either


def test_argparse_error_is_one_line_through_the_real_command(workdir):
    result = subprocess.run([sys.executable, "-m", "fastdqn", "bench", "--num-envs", "abc"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "fastdqn: error: argument --num-envs: invalid int value: 'abc'; see fastdqn bench --help"]


@pytest.mark.parametrize("argv", [
    ["train", "--env-id", "CartPole-v1", "--seed", "-1"],
    ["train", "--env-id", "CartPole-v1", "--seed", str(2**31)],
    ["eval", "run", "--seed", "-1"],
    ["eval", "run", "--seed", "99999999999"],
    ["bench", "--seed", "-1"],
    ["bench", "--seed", str(2**31)],
])
def test_seeds_are_checked_at_the_edge(argv, capsys, workdir):
    fails(argv, capsys, workdir, "--seed", "[0, 2147483647]")


def test_derived_seeds_stay_in_envpool_range():
    from fastdqn.run.config import SEED_LIMIT, derive_seed

    assert SEED_LIMIT == 2**31  # EnvPool asserts "Seed should be in range of int32"
    assert derive_seed(5, 1_000_003) == 1_000_008  # no wrap: plain addition
    top = 2**31 - 1
    for seed, offset in [(top, 1_000_003), (top, 10**12), (2_147_000_000, 1_000_003), (0, 0)]:
        value = derive_seed(seed, offset)
        assert 0 <= value <= top
        assert value == seed + offset - (2**31) * ((seed + offset) // 2**31)


def test_empty_env_id_is_unknown_not_the_default(capsys, workdir):
    fails(["train", "--env-id", ""], capsys, workdir, "--env-id", "unknown EnvPool task ''")


@pytest.mark.parametrize("env_id, expected", [
    ("Highway-v0", "float32 observations of shape (5, 5)"),
    ("gfootball/11_vs_11_competition-v1", "uint8 observations of shape (72, 96, 4)"),
    ("Backgammon-v1", "int32 observations"),
    ("CarRacing-v3", "discrete actions"),
])
def test_unsupported_observation_spaces_are_refused_up_front(env_id, expected, capsys, workdir):
    fails(["train", "--env-id", env_id, "--no-progress"], capsys, workdir, env_id, expected)


def test_network_memory_is_checked_before_allocation(capsys, workdir):
    line = fails(CARTPOLE + ["--hidden", "200000,200000"], capsys, workdir, "--hidden 200000,200000", "GB")
    # 4*200000 + 200000*200000 + 200000*2 weights and 200000*2 + 2 biases, float32, 5 copies.
    params = 4 * 200_000 + 200_000 + 200_000 * 200_000 + 200_000 + 200_000 * 2 + 2
    assert f"{5 * 4 * params / 1e9:.2f} GB" in line


def test_exploration_fraction_underflow_is_refused(capsys, workdir):
    fails(CARTPOLE + ["--exploration-fraction", "1e-320"], capsys, workdir, "--exploration-fraction", "1 step")
    with pytest.raises(Exception, match="at least 1 step"):
        TrainConfig(total_timesteps=1000, exploration_fraction=0.0009)
    assert TrainConfig(total_timesteps=1000, exploration_fraction=0.001).exploration_steps == 1.0


def test_bad_run_dirs_are_refused_before_anything_is_built(tmp_path, capsys, workdir):
    (workdir / "a_file").write_text("x")
    fails(CARTPOLE + ["--run-dir", "a_file"], capsys, workdir, "a_file", "is a file")
    fails(CARTPOLE + ["--run-dir", "a_file/run"], capsys, workdir, "a_file", "a file")
    fails(CARTPOLE + ["--run-dir", "x" * 300], capsys, workdir, "300 bytes", "shorter --run-dir")
    fails(CARTPOLE + ["--run-dir", "x/" * 3000], capsys, workdir, "longer than this system allows")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_run_dir_is_refused(tmp_path, capsys, workdir):
    locked = workdir / "locked"
    locked.mkdir(mode=0o500)
    try:
        fails(CARTPOLE + ["--run-dir", "locked/run"], capsys, workdir, "no permission", "locked")
    finally:
        locked.chmod(0o700)


def test_bench_json_path_is_checked_before_measuring(capsys, workdir):
    fails(["bench", "--quick", "--json", "/nonexistent/dir/out.json"], capsys, workdir,
          "--json", "'/nonexistent/dir' does not exist")
    (workdir / "out").mkdir()
    fails(["bench", "--quick", "--json", "out"], capsys, workdir, "--json", "is a folder")


def test_folder_of_a_run_without_checkpoint_is_refused(tmp_path, capsys, workdir):
    run = workdir / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"global_step": 4}\n')
    line = fails(CARTPOLE + ["--run-dir", "run"], capsys, workdir, "metrics.jsonl", "no checkpoint")
    assert "delete them or choose another --run-dir" in line
    assert (run / "metrics.jsonl").read_text() == '{"global_step": 4}\n'


def test_dueling_run_trains_resumes_and_evaluates_a_dueling_network(tmp_path, capsys, workdir):
    from fastdqn.run.checkpoint import load_checkpoint

    run = tmp_path / "dueling"
    common = ["--no-progress", "--no-cuda", "--torch-threads", "1"]
    assert main([*CARTPOLE, "--dueling", "--total-timesteps", "1200", "--learning-starts", "400",
                 "--eval-episodes", "0", "--run-dir", str(run), *common[1:]]) == 0
    online = load_checkpoint(run)["learner"]["online"]
    # MLP 120-84, dueling: the 120-unit torso, then value and advantage streams of 84 units.
    assert {k: tuple(v.shape) for k, v in online.items()} == {
        "net.0.weight": (120, 4), "net.0.bias": (120,),
        "net.2.value.0.weight": (84, 120), "net.2.value.0.bias": (84,),
        "net.2.value.2.weight": (1, 84), "net.2.value.2.bias": (1,),
        "net.2.advantage.0.weight": (84, 120), "net.2.advantage.0.bias": (84,),
        "net.2.advantage.2.weight": (2, 84), "net.2.advantage.2.bias": (2,),
    }
    capsys.readouterr()
    fails(["train", "--resume", str(run), "--no-dueling"], capsys, workdir, "--dueling", "True")
    assert main(["eval", str(run), "--episodes", "2", "--num-envs", "2", "--no-cuda", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    assert main(["train", "--resume", str(run), "--total-timesteps", "1600", *common]) == 0
    assert load_checkpoint(run)["trainer"]["global_step"] == 1600
