"""The bodies of the commands that run a network: ``fastdqn train`` (a new or resumed run: config,
memory plan, run-folder lock, components, summary, trainer) and ``fastdqn eval`` (a checkpoint's
network playing full games). Every check of the input comes before any env, buffer or file is
made; what a signal leaves behind is said through ``StopSignals.note``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from pathlib import Path

from fastdqn.errors import ConfigError
from fastdqn.run import memory
from fastdqn.run.actors.session import actor_fleet, check_actors
from fastdqn.run.build import build_buffer, build_envs, build_eval_envs, build_evaluator, build_learner
from fastdqn.run.config import ATARI, CLEANRL, DOUBLE_DQN, MACHADO, TrainConfig, check_seed, derive_seed, make_config
from fastdqn.run.envs import EnvInfo, env_info
from fastdqn.run.resume import check_saved_buffer, load_learner_state, load_resume
from fastdqn.run.signals import Interrupted, StopSignals
from fastdqn.run.tracking import WandbTracker, check_tracking


def train(overrides: dict, *, resume: str | None, preset: str | None, signals: StopSignals) -> int:
    """``fastdqn train``: ``overrides`` holds every ``TrainConfig`` field, None where no flag was given."""
    signals.note = " before training started; no checkpoint was written"
    import torch

    from fastdqn.replay.file import read_tag
    from fastdqn.run.checkpoint import CHECKPOINT_NAME, buffer_path, check_buffer_tag, resolve_checkpoint
    from fastdqn.run.rundir import RunDirLock, check_no_run, check_run_dir

    cuda_available = torch.cuda.is_available()
    state = lock = run_dir = None
    try:
        if resume:
            if preset is not None:
                raise ConfigError(f"--preset: a resumed run keeps its checkpoint's hyperparameters, got "
                                  f"--preset {preset}; drop --preset (single flags still apply)")
            run_dir = resolve_checkpoint(resume).parent
            if overrides["run_dir"] and Path(overrides["run_dir"]).resolve() != run_dir.resolve():
                raise ConfigError(f"--run-dir: a resumed run continues in its own folder {str(run_dir)!r}, "
                                  f"got {overrides['run_dir']!r}; drop --run-dir")
            state, config, task = load_resume(resume, overrides, cuda_available)
        else:
            task = env_info(overrides["env_id"] if overrides["env_id"] is not None else TrainConfig.env_id)
            config = make_config(task.kind, overrides, cuda_available=cuda_available,
                                 max_episode_steps=task.max_episode_steps, preset=preset or DOUBLE_DQN)
            run_dir = Path(config.run_dir or f"runs/{config.env_id}__{config.seed}__{int(time.time())}")
            check_run_dir(run_dir)
        config = dataclasses.replace(config, run_dir=str(run_dir))
        if config.cuda and not cuda_available:
            raise ConfigError("--cuda: no CUDA device is available; drop --cuda or pass --no-cuda")
        if config.capture_video:
            from fastdqn.run.video import check_video

            check_video("--capture-video")
        memory.replay_spec(config, task)
        memory.check_threads(config)
        check_tracking(config)
        memory.check_envs("--num-envs", task, config.num_envs)
        replay_device = memory.choose_replay_device(config, task)
        config = dataclasses.replace(config, replay_device=replay_device)
        replay_bytes, free_ram = memory.check_memory(config, task)
        check_actors(config)
        lock = RunDirLock(run_dir)
        # Under the lock, so that no other process can start a run here or write a newer checkpoint.
        if state is None:
            check_no_run(run_dir)
        else:
            state, config, task = load_resume(resume, overrides, cuda_available)
            config = dataclasses.replace(config, run_dir=str(run_dir), replay_device=replay_device)
        saved_buffer = buffer_path(state) if state is not None else None
        if saved_buffer is not None:
            check_buffer_tag(state, read_tag(saved_buffer), saved_buffer)
        # Validation is over: from here on envs, buffers and files are created.
        signals.note = " before training started; no checkpoint was written" + (
            f" (the one in {run_dir} is unchanged)" if state is not None else "")
        return _run_training(config, task, state, saved_buffer, run_dir, replay_bytes, free_ram, signals)
    except Interrupted:
        if signals.received is not None:
            kept = run_dir is not None and (run_dir / CHECKPOINT_NAME).exists()
            signals.note = " a second time, at once; " + (
                f"no new checkpoint was written (the last one in {run_dir} is kept)" if kept
                else "no checkpoint was written")
        raise
    finally:
        if lock is not None:
            lock.release()


def _run_training(config: TrainConfig, task: EnvInfo, state, saved_buffer, run_dir: Path, replay_bytes: int,
                  free_ram: int, signals: StopSignals) -> int:
    """Build the components (in a fixed order: the seeds depend on it), write config.json, train."""
    import torch

    from fastdqn.run.actors.learner_loop import ActorTrainer
    from fastdqn.run.logger import RunLogger
    from fastdqn.run.trainer import Trainer
    from fastdqn.util.atomic import atomic_write

    torch.manual_seed(config.seed)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    resume_step = int(state["trainer"]["global_step"]) if state is not None else None
    # New seeds on resume: EnvPool state cannot be saved, so do not replay the same games.
    seed = derive_seed(config.seed, resume_step or 0)
    learner = build_learner(config, task)
    if state is not None:
        load_learner_state(learner, state)
    buffer = build_buffer(config, task, seed=seed, path=saved_buffer)
    if saved_buffer is not None:
        check_saved_buffer(buffer, config, task, saved_buffer)
    envs = None if config.actors else build_envs(config, seed=seed)
    # From here a first signal is recorded and the trainer ends with a checkpoint, even one
    # that arrives before its loop starts.
    signals.hold()
    print_summary(config, task, learner, replay_bytes, free_ram, resume_step, saved_buffer is not None)
    try:
        # Before the first file: a W&B that cannot start leaves the folder as it was.
        tracker = WandbTracker.start(config, run_dir, resume_step) if config.track else None
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(config.to_dict(), indent=2) + "\n"))
        logger = RunLogger(run_dir, total_timesteps=config.total_timesteps, resume_step=resume_step,
                           progress=config.progress, tracker=tracker)
        try:
            with contextlib.ExitStack() as stack:
                evaluator = build_evaluator(learner, config, task)
                if config.actors:
                    fleet = stack.enter_context(actor_fleet(config, task, buffer, seed=seed))
                    trainer = ActorTrainer(fleet, buffer, learner, config, logger, evaluator=evaluator)
                else:
                    trainer = Trainer(envs, buffer, learner, config, logger, evaluator=evaluator)
                if state is not None:
                    trainer.load_state_dict(state["trainer"], buffer_restored=saved_buffer is not None)
                signals.forward_to(trainer.request_stop)
                status = trainer.train()
        finally:
            logger.close()
    finally:
        if envs is not None:
            envs.close()
    if status:
        print(f"stopped by {signal.Signals(trainer.stop_signal).name} at step {trainer.global_step:,}; "
              f"checkpoint saved. Continue with: fastdqn train --resume {run_dir}")
    else:
        line = f"done: {trainer.global_step:,} steps, {trainer.episodes:,} episodes"
        if trainer.last_eval is not None:
            line += f", eval return {trainer.last_eval['mean']:.1f} ± {trainer.last_eval['std']:.1f}"
        print(f"{line}; outputs in {run_dir}")
    return status


def print_summary(config: TrainConfig, task: EnvInfo, learner, replay_bytes: int, free_ram: int,
                  resume_step: int | None, buffer_restored: bool) -> None:
    """The start-up summary: the task, device, envs, network, replay memory and where outputs go."""
    params = sum(p.numel() for p in learner.online.parameters())
    network = type(learner.online).__name__
    mode = f"async, batches of {config.env_batch}" if config.async_envs else "sync"
    if config.actors:
        mode += (f"; per actor, {config.actors} Ray actor{'s' if config.actors > 1 else ''} on "
                 f"{config.address or 'a local Ray instance'}, "
                 + ("free-running" if config.free_running else
                    f"updates per env step held at 1/{config.train_frequency} ± {config.ratio_tolerance:.0%}"))
    lines = [
        f"fastdqn train: {config.env_id} ({task.kind}: obs {task.obs_shape} {task.obs_dtype}, "
        f"{task.num_actions} actions)",
        f"  device {config.device} | num_envs {config.num_envs} ({mode}) | {network} {params:,} params "
        f"| compile {'on' if config.compile else 'off'}",
        f"  replay {config.buffer_size:,} transitions: {replay_bytes / 1e9:.2f} GB of {free_ram / 1e9:.1f} GB free RAM"
        + (f" | {config.n_step}-step" if config.n_step > 1 else "")
        + (f" | prioritized (alpha {config.per_alpha:g}, beta {config.per_beta_start:g} -> "
           f"{config.per_beta_end:g})" if config.prioritized else "")
        + (" | frames on the GPU" if config.replay_device == "cuda" else " | frames in host RAM"),
        f"  {config.total_timesteps:,} steps into {config.run_dir}",
    ]
    if resume_step is not None:
        lines.append(f"  resuming at step {resume_step:,}" + (
            " with the saved replay buffer" if buffer_restored else
            f"; replay buffer refills for {config.learning_starts:,} steps before learning resumes"))
    print("\n".join(lines), flush=True)


def evaluate_checkpoint(path: str, *, episodes: int, epsilon: float | None, seed: int, num_envs: int | None,
                        cuda: bool | None, as_json: bool, protocol: str = CLEANRL, noop_starts: int | None = None,
                        video: str | None = None) -> int:
    """``fastdqn eval``: play ``episodes`` full games with the network saved at ``path`` (a
    checkpoint, a run folder or a model folder) under the evaluation ``protocol`` and print
    their score statistics; with ``video``, env 0's games are also written there."""
    stats = score_checkpoint(path, episodes=episodes, epsilon=epsilon, seed=seed, num_envs=num_envs, cuda=cuda,
                             protocol=protocol, noop_starts=noop_starts, video=video)
    if as_json:
        print(json.dumps(stats))
        return 0
    step, atari = stats["global_step"], stats["frames"] is not None
    trained = f"{step:,} steps" + (f" ({stats['frames']:,} frames)" if atari else "")
    print(f"{stats['env_id']} after {trained}: {stats['episodes']} games, {stats['protocol']} protocol "
          f"(epsilon {stats['epsilon']:g}" + (f", sticky actions {stats['sticky_actions']:g}, no-op starts up to "
                                              f"{stats['noop_starts']}" if atari else "") + ")")
    print(f"  mean {stats['mean']:.2f}  std {stats['std']:.2f}  min {stats['min']:.2f}  "
          f"max {stats['max']:.2f}  median {stats['median']:.2f}  "
          f"mean's 95% CI [{stats['mean_ci95'][0]:.2f}, {stats['mean_ci95'][1]:.2f}]")
    if video is not None:
        print(f"  video of env 0's games: {video} ({stats['video']['frames']} frames)")
    return 0


def score_checkpoint(path: str, *, episodes: int, epsilon: float | None, seed: int, num_envs: int | None,
                     cuda: bool | None, protocol: str = CLEANRL, noop_starts: int | None = None,
                     video: str | None = None) -> dict:
    """The score statistics (``score_stats``) of ``episodes`` full games played by the network at
    ``path`` under ``protocol``, with its env id, step, frames trained, the protocol's settings
    and the seed. ``epsilon``, ``noop_starts``, ``num_envs`` and ``cuda`` default when None."""
    import numpy as np
    import torch

    from fastdqn.run.checkpoint import load_checkpoint
    from fastdqn.run.evaluate import evaluate, score_stats
    from fastdqn.run.model_folder import is_model_folder, load_model_folder
    from fastdqn.run.protocols import NOOP_STARTS, frames_trained, make_protocol
    from fastdqn.run.video import VideoWriter, check_video, video_fps
    from fastdqn.util.checks import check_int, check_number

    check_int("--episodes", episodes)
    if epsilon is not None:
        check_number("--epsilon", epsilon, 0, 1)
    if noop_starts is not None:
        check_int("--noop-starts", noop_starts, minimum=0)
    if num_envs is not None:
        check_int("--num-envs", num_envs)
    check_seed("--seed", seed)
    if protocol == MACHADO:
        for flag, value in (("--epsilon", epsilon), ("--noop-starts", noop_starts)):
            if value is not None:
                raise ConfigError(f"{flag}: the machado protocol fixes it (docs/evaluation.md); drop {flag} "
                                  "or use --eval-protocol cleanrl")
    if video is not None:
        check_video("--video", video)
    if cuda and not torch.cuda.is_available():
        raise ConfigError("--cuda: no CUDA device is available; drop --cuda or pass --no-cuda")
    # fastdqn export's folder holds the online network's weights only.
    model = load_model_folder(path) if is_model_folder(path) else None
    if model is not None:
        saved, step = model.config, model.global_step
    else:
        state = load_checkpoint(path)
        saved = TrainConfig.from_dict(state["config"])  # load_checkpoint has checked it
        step = int(state["trainer"]["global_step"])
    cuda = torch.cuda.is_available() if cuda is None else cuda
    # The saved thread count was the training machine's choice: no more than this one's cores.
    config = dataclasses.replace(saved, cuda=cuda, compile=False, anneal_lr=False,
                                 torch_threads=min(saved.torch_threads, memory.cores()))
    task = env_info(config.env_id)
    if task.kind != ATARI and noop_starts is not None:
        raise ConfigError(f"--noop-starts: only Atari tasks take it, {config.env_id!r} is {task.kind}; drop the flag")
    rules = make_protocol(protocol, task.kind, config.env_id, epsilon=0.05 if epsilon is None else epsilon,
                          sticky_actions=config.sticky_actions,
                          noop_starts=NOOP_STARTS if noop_starts is None else noop_starts,
                          max_episode_steps=config.max_episode_steps)
    memory.check_envs("--num-envs", task, num_envs or min(episodes, 16))
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    learner = build_learner(config, task)
    if model is not None:
        with torch.no_grad():
            learner.online.load_state_dict(model.online)
    else:
        load_learner_state(learner, state)
    envs = build_eval_envs(config.env_id, rules, num_envs or min(episodes, 16), seed=seed, render=video is not None)
    rng = np.random.default_rng(seed)
    try:
        if video is None:
            scores = evaluate(learner, envs, episodes, rules.epsilon, rng)
        else:
            with VideoWriter(video, video_fps(task.kind)) as writer:
                scores = evaluate(learner, envs, episodes, rules.epsilon, rng, video=writer)
    finally:
        envs.close()
    stats = score_stats(scores)
    stats.update(env_id=config.env_id, global_step=step, frames=frames_trained(task.kind, step), **rules.settings(),
                 seed=seed)
    if video is not None:
        stats["video"] = {"path": str(video), "frames": writer.frames, "env": 0}
    return stats
