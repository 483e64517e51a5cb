"""Building a run's components from its frozen ``TrainConfig`` and its task's ``EnvInfo``: the
Q-network (chosen by the kind of env, here only), the learner, the replay buffer, the training
and evaluation envs and the evaluator. ``fastdqn train``, ``fastdqn eval`` and the bench all
build through here, so each component is wired one way; heavy imports happen on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fastdqn.run.config import ATARI, TrainConfig, derive_seed
from fastdqn.run.envs import EnvInfo, make_envs
from fastdqn.run.protocols import EvalProtocol


def build_network(task: EnvInfo, hidden: Sequence[int] = TrainConfig.hidden, dueling: bool = False):
    """NatureCNN for Atari frame stacks, else an MLP over the flattened observation with
    ``hidden`` widths; with ``dueling``, their dueling form."""
    from fastdqn.learn.networks import MLP, NatureCNN

    if task.kind == ATARI:
        return NatureCNN(task.num_actions, frame_stack=task.frame_stack, dueling=dueling)
    return MLP(math.prod(task.obs_shape), task.num_actions, hidden=tuple(hidden), dueling=dueling)


def build_learner(config: TrainConfig, task: EnvInfo):
    """The ``Learner`` of a run: its network, optimizer and update settings from ``config``."""
    from fastdqn.learn.learner import Learner

    return Learner(
        build_network(task, config.hidden, config.dueling), lr=config.learning_rate, gamma=config.gamma,
        target_update_interval=config.target_update_interval, loss=config.loss,
        max_grad_norm=config.max_grad_norm or None, double_dqn=config.double_dqn, adam_eps=config.adam_eps,
        compile=config.compile, device=config.device, batch_size=config.batch_size, seed=config.seed,
    )


def build_buffer(config: TrainConfig, task: EnvInfo, *, seed: int, frames_device: str | None = None,
                 path=None):
    """The replay buffer of a run, empty or loaded from the replay file at ``path``.

    ``--prioritized`` picks prioritized draws; the frames live on ``frames_device`` when it
    is given (a torch device), else on the learner's device when ``config.replay_device`` is
    cuda, else in host RAM.
    """
    from fastdqn.replay import ReplayBuffer

    if frames_device is None and config.replay_device == "cuda":
        frames_device = config.device
    # A torch.device keeps the frames in a tensor there, also on the CPU (the bench compares
    # that with host frames); the string "cpu" keeps them in NumPy arrays.
    if frames_device is None:
        device = "cpu"
    else:
        import torch

        device = torch.device(frames_device)
    if path is not None:
        return ReplayBuffer.load(path, device=device)
    return ReplayBuffer(config.buffer_size, task.obs_shape, config.replay_envs, obs_dtype=task.obs_dtype,
                        frame_stack=task.frame_stack, n_step=config.n_step, gamma=config.gamma, seed=seed,
                        prioritized=config.prioritized, alpha=config.per_alpha, eps=config.per_eps, device=device)


def build_envs(config: TrainConfig, *, seed: int):
    """The training envs: a lost life ends an episode (its game goes on)."""
    return make_envs(config.env_id, config.num_envs, seed=seed, async_envs=config.async_envs,
                     batch_size=config.env_batch, episodic_life=True, sticky_actions=config.sticky_actions,
                     noop_starts=config.noop_starts, max_episode_steps=config.max_episode_steps,
                     num_threads=config.env_threads)


def build_eval_envs(env_id: str, protocol: EvalProtocol, num_envs: int, *, seed: int, render: bool = False,
                    num_threads: int = 0):
    """Envs that play full games (no life-loss episodes) under ``protocol``'s env settings."""
    return make_envs(env_id, num_envs, seed=seed, episodic_life=False, sticky_actions=protocol.sticky_actions,
                     noop_starts=protocol.noop_starts, max_episode_steps=protocol.max_episode_steps,
                     render=render, num_threads=num_threads)


def build_evaluator(learner, config: TrainConfig, task: EnvInfo):
    """``evaluator(global_step)``: scores of ``eval_episodes`` full games under the run's protocol on
    separate envs, made on first use; with ``capture_video``, env 0's games are also written to
    ``RUN_DIR/videos/eval-<global_step>.mp4``."""
    from pathlib import Path

    from fastdqn.run.evaluate import evaluate
    from fastdqn.run.protocols import run_protocol
    from fastdqn.run.video import VideoWriter, video_fps

    protocol = run_protocol(config, task.kind)
    envs = []
    eval_seed = derive_seed(config.seed, 1_000_003)
    rng = np.random.default_rng(eval_seed)

    def run(global_step: int):
        if not envs:
            envs.append(build_eval_envs(config.env_id, protocol, min(config.eval_episodes, 16), seed=eval_seed,
                                        render=config.capture_video, num_threads=config.env_threads))
        if not config.capture_video:
            return evaluate(learner, envs[0], config.eval_episodes, protocol.epsilon, rng)
        folder = Path(config.run_dir) / "videos"
        folder.mkdir(parents=True, exist_ok=True)
        with VideoWriter(folder / f"eval-{global_step}.mp4", video_fps(task.kind)) as video:
            return evaluate(learner, envs[0], config.eval_episodes, protocol.epsilon, rng, video=video)

    return run
