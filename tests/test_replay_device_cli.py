"""``fastdqn train --replay-device``: the choice of where the frames live, its errors, the
start-up summary and resume (GPU memory injected, so this runs without a GPU)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fastdqn.run.build import build_buffer
from fastdqn.run.config import TrainConfig
from fastdqn.run.memory import choose_replay_device, replay_bytes
from fastdqn.run.resume import resume_config
from fastdqn.tools.cli import main
from fastdqn.replay import ReplaySpec
from fastdqn.replay import replay_bytes as buffer_bytes
from fastdqn.replay.device import DEFAULT_HEADROOM
from fastdqn.run.envs import env_info
from fastdqn.errors import ConfigError, DeviceMemoryError
from fastdqn.replay import PrioritizedReplayBuffer
from fastdqn.replay import ReplayBuffer

from cli_errors import fails

CARTPOLE = ["train", "--env-id", "CartPole-v1", "--no-progress"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cuda_frames_need_a_cuda_learner(capsys, workdir):
    fails(CARTPOLE + ["--no-cuda", "--replay-device", "cuda"], capsys, workdir, "--replay-device cuda",
          "--cuda")
    fails(CARTPOLE + ["--replay-device", "gpu"], capsys, workdir, "--replay-device")
    with pytest.raises(ConfigError, match="--replay-device"):
        TrainConfig(replay_device="host")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_frames_without_a_gpu(capsys, workdir):
    fails(CARTPOLE + ["--cuda", "--replay-device", "cuda"], capsys, workdir, "--cuda", "no CUDA device")


def breakout(replay_device: str, cuda: bool = True, prioritized: bool = False) -> TrainConfig:
    return TrainConfig(env_id="Breakout-v5", buffer_size=100_000, cuda=cuda, replay_device=replay_device,
                       prioritized=prioritized)


def test_auto_puts_the_frames_on_the_gpu_only_when_they_fit(monkeypatch):
    info = env_info("Breakout-v5")
    frames = buffer_bytes(ReplaySpec(100_000, info.obs_shape, 8, frame_stack=4), on_device=True)[1]
    assert 0.7e9 < frames < 0.8e9  # 100k transitions of 84x84 frames
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free["bytes"], 80 << 30))
    free["bytes"] = frames + DEFAULT_HEADROOM + (200 << 20)  # room for the network's 5 copies (~34 MB)
    assert choose_replay_device(breakout("auto"), info) == "cuda"
    assert choose_replay_device(breakout("cuda"), info) == "cuda"
    assert choose_replay_device(breakout("cpu"), info) == "cpu"
    assert choose_replay_device(breakout("auto", cuda=False), info) == "cpu"
    assert choose_replay_device(breakout("auto", prioritized=True), info) == "cuda"  # trees stay on the host
    free["bytes"] = frames + DEFAULT_HEADROOM  # no room left for the networks
    assert choose_replay_device(breakout("auto"), info) == "cpu"
    assert choose_replay_device(breakout("auto", prioritized=True), info) == "cpu"
    with pytest.raises(DeviceMemoryError) as err:
        choose_replay_device(breakout("cuda"), info)
    assert str(err.value).startswith("--replay-device cuda: the replay frames need 0.7")
    assert "--replay-device cpu" in str(err.value) and "--buffer-size" in str(err.value)


def test_the_buffer_type_follows_the_choice():
    info = env_info("CartPole-v1")
    for prioritized in (False, True):
        config = TrainConfig(env_id="CartPole-v1", buffer_size=64, batch_size=32, learning_starts=32,
                             prioritized=prioritized)
        host = build_buffer(config, info, seed=0)
        assert host.prioritized == prioritized and host.batch_device is None
        on_device = build_buffer(config, info, seed=0, frames_device="cpu")  # a torch CPU tensor
        assert on_device.prioritized == prioritized and on_device.batch_device == torch.device("cpu")


def test_host_memory_counts_the_priority_trees_wherever_the_frames_are():
    info = env_info("Breakout-v5")
    args = (100_000, info.obs_shape, 8)
    trees = PrioritizedReplayBuffer.required_bytes(*args, frame_stack=4) - \
        ReplayBuffer.required_bytes(*args, frame_stack=4)
    assert trees > 0
    assert replay_bytes(breakout("cpu", prioritized=True), info) == ReplayBuffer.required_bytes(*args, frame_stack=4) + trees
    host_bytes = buffer_bytes(ReplaySpec(*args, frame_stack=4), on_device=True)[0]
    assert replay_bytes(breakout("cuda", prioritized=True), info) == host_bytes + trees
    assert replay_bytes(breakout("cuda"), info) == host_bytes


def test_summary_and_config_name_where_the_frames_are(capsys, workdir):
    run = workdir / "run"
    assert main(CARTPOLE + ["--no-cuda", "--total-timesteps", "300", "--learning-starts", "200",
                            "--eval-episodes", "0", "--run-dir", str(run)]) == 0
    assert "| frames in host RAM" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["replay_device"] == "cpu"  # auto, resolved


def test_resume_chooses_the_replay_device_again():
    saved = dataclasses.replace(breakout("cuda"), cuda=True)
    overrides = {f.name: None for f in dataclasses.fields(TrainConfig)}
    resumed = resume_config({"config": saved.to_dict()}, overrides, cuda_available=False)
    assert (resumed.cuda, resumed.replay_device) == (False, "auto")
    overrides["replay_device"] = "cpu"
    assert resume_config({"config": saved.to_dict()}, overrides, cuda_available=True).replay_device == "cpu"
