"""Videos of evaluation games: recording changes nothing that is played, and the file read back
holds the game's own colour screen, one frame per env-0 step plus the reset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("imageio")
pytest.importorskip("imageio_ffmpeg")

import imageio.v2 as imageio  # noqa: E402

from fastdqn.learn.learner import Learner  # noqa: E402
from fastdqn.run.build import build_network  # noqa: E402
from fastdqn.run.envs import env_info, make_envs  # noqa: E402
from fastdqn.run.evaluate import evaluate  # noqa: E402
from fastdqn.run.video import VideoWriter  # noqa: E402
from fastdqn.tools.cli import main  # noqa: E402
from tests.cli_errors import fails  # noqa: E402


class Watched:
    """The eval envs, noting every observation, action and env 0's game ends; render passes through."""

    def __init__(self, envs):
        self.envs, self.obs, self.actions, self.first_env_ended = envs, [], [], []

    def reset(self):
        obs, info = self.envs.reset()
        self.obs.append(obs.copy())
        return obs, info

    def step(self, actions):
        self.actions.append(np.array(actions, copy=True))
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        self.obs.append(obs.copy())
        self.first_env_ended.append(bool(terminated[0] or truncated[0]))
        return obs, reward, terminated, truncated, info

    def render(self, env_ids):
        return self.envs.render(env_ids)


class Tee:
    """Keeps a copy of every frame and passes it on to a writer."""

    def __init__(self, writer):
        self.writer, self.frames = writer, []

    def add(self, frame):
        self.frames.append(frame.copy())
        self.writer.add(frame)


def read_mp4(path) -> np.ndarray:
    # Not list(reader): the ffmpeg reader's len() is "unknown" (huge), which list() tries to preallocate.
    return np.stack([frame for frame in imageio.get_reader(path)])


@pytest.fixture
def one_torch_thread():
    # On a 2-core machine, torch's second thread competes with EnvPool's and slows each step many times over.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_learner(env_id: str) -> Learner:
    torch.manual_seed(0)
    return Learner(build_network(env_info(env_id)), compile=False, device="cpu", seed=0)


def play(env_id, learner, *, episodes, epsilon, video=None, **options):
    envs = Watched(make_envs(env_id, 2, seed=7, episodic_life=False, render=video is not None, **options))
    try:
        scores = evaluate(learner, envs, episodes, epsilon, np.random.default_rng(11), video=video)
    finally:
        envs.envs.close()
    return scores, envs


def test_recording_breakout_changes_nothing_and_keeps_the_colour_screen(tmp_path, one_torch_thread):
    # A random network with epsilon 0.05 on Breakout, rarely firing after a lost life: games cut at 100 steps.
    learner = random_learner("Breakout-v5")
    plain_scores, plain = play("Breakout-v5", learner, episodes=2, epsilon=0.05, max_episode_steps=100)
    path = tmp_path / "breakout.mp4"
    with VideoWriter(path, 15) as writer:
        tee = Tee(writer)
        scores, seen = play("Breakout-v5", learner, episodes=2, epsilon=0.05, video=tee, max_episode_steps=100)
    assert scores.tolist() == plain_scores.tolist()
    assert len(seen.actions) == len(plain.actions)
    for a, b in zip(seen.actions, plain.actions):
        assert np.array_equal(a, b)
    for a, b in zip(seen.obs, plain.obs):
        assert np.array_equal(a, b)  # the network saw exactly the 84x84 grey stacks it sees without a video
    # One frame after the reset and after each step up to env 0's game end, inclusive.
    expected = 1 + seen.first_env_ended.index(True) + 1
    assert len(tee.frames) == writer.frames == expected
    kept = np.stack(tee.frames)
    assert kept.shape == (expected, 210, 160, 3) and kept.dtype == np.uint8
    # Colour: Breakout's bricks are red, orange, yellow, green and blue, so channels differ widely.
    assert np.abs(kept[..., 0].astype(int) - kept[..., 2].astype(int)).max() > 100
    read = read_mp4(path)
    assert read.shape == kept.shape
    # H.264 is lossy; the frames read back are the kept ones up to a small mean error.
    assert np.abs(read.astype(float) - kept.astype(float)).mean() < 4.0


def test_cartpole_gif_is_the_rendered_game(tmp_path, one_torch_thread):
    learner = random_learner("CartPole-v1")
    path = tmp_path / "cartpole.gif"
    with VideoWriter(path, 50) as writer:
        tee = Tee(writer)
        scores, seen = play("CartPole-v1", learner, episodes=2, epsilon=0.0, video=tee)
    plain_scores, _ = play("CartPole-v1", learner, episodes=2, epsilon=0.0)
    assert scores.tolist() == plain_scores.tolist()
    kept = np.stack(tee.frames)
    assert len(kept) == 1 + seen.first_env_ended.index(True) + 1
    # A GIF stores a repeated frame once, with the summed duration (CartPole's cart can move less
    # than a pixel in a step): the file holds each run of equal frames once.
    runs = 1 + sum(not np.array_equal(a, b) for a, b in zip(kept[1:], kept[:-1]))
    read = np.stack(imageio.mimread(path))
    assert read.shape == (runs, 400, 600, 3)
    # EnvPool draws CartPole as gymnasium does: white background, a brown pole (202, 152, 101).
    assert (read[0] == 255).all(axis=-1).mean() > 0.8
    pole = np.array([202, 152, 101])
    assert (np.abs(read[0].astype(int) - pole).max(axis=-1) < 12).sum() > 100


def test_eval_video_flag_writes_the_video_and_names_it(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--env-id", "CartPole-v1", "--total-timesteps", "400", "--learning-starts", "200", "--no-progress",
              "--no-cuda", "--eval-episodes", "1", "--run-dir", str(run)]
    assert main(["train", *common, "--eval-every", "200", "--capture-video"]) == 0
    videos = sorted(p.name for p in (run / "videos").iterdir())
    assert videos == ["eval-200.mp4", "eval-400.mp4"]
    assert read_mp4(run / "videos" / "eval-400.mp4").shape[1:] == (400, 600, 3)
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--num-envs", "2", "--json",
                 "--video", str(tmp_path / "eval.mp4")]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["video"]["frames"] == len(read_mp4(tmp_path / "eval.mp4")) > 1 and stats["protocol"] == "cleanrl"


@pytest.mark.parametrize("video, expected", [
    ("x.avi", "--video: expected a file ending in .mp4, .gif"),
    ("missing/x.mp4", "does not exist"),
    ("folder.mp4", "is a folder"),
])
def test_bad_video_paths_are_refused_before_the_checkpoint_is_read(tmp_path, capsys, video, expected):
    (tmp_path / "folder.mp4").mkdir()
    fails(["eval", str(tmp_path / "no-such-run"), "--video", str(tmp_path / video)], capsys, tmp_path, expected)
