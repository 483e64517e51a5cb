"""The ``fastdqn`` command: ``train``, ``eval``, ``bench``, ``sweep`` and ``plot``.

Flags are generated from ``TrainConfig``'s fields (CleanRL's names and units). They
default to None here; ``make_config`` fills in the preset of the environment's kind, so
the frozen config only ever holds concrete values.

Exit statuses (README, "Exit statuses"): every failure is one line ``fastdqn: error: ...``
or ``fastdqn: stopped ...`` on stderr. Bad input is found before any env, buffer or file is
made (status 2); a run that has to stop after it started says which checkpoint it kept
(status 1); a signal either lets the trainer write a checkpoint (130 SIGINT, 143 SIGTERM)
or, when there is nothing to save yet, stops at once (status 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
import warnings
from pathlib import Path

from fastdqn.run.config import (ATARI, DOUBLE_DQN, NAMED_PRESETS, PRESETS, VECTOR, TrainConfig, check_seed,
                            derive_seed, make_config)
from fastdqn.errors import CheckpointError, ConfigError, FastDQNError, TrainingError
from fastdqn.run.signals import Interrupted, StopSignals

EXIT_FAILED = 1
"""Training started and had to stop; the message names the checkpoint that was kept."""
EXIT_USAGE = 2
"""Bad input, found before anything was allocated or written."""
EXIT_INTERRUPTED = 3
"""A signal stopped the command at once; no checkpoint was written by it."""

# On resume these must match the checkpoint: they decide the network and its inputs.
_FIXED_ON_RESUME = ("env_id", "hidden", "dueling")
# With a saved replay buffer these must match it too.
_FIXED_WITH_BUFFER = ("buffer_size", "num_envs", "n_step", "prioritized", "per_alpha", "per_eps")
# Copies of each network parameter that training holds: online and target weights, gradients, Adam's two moments.
_COPIES_PER_PARAMETER = 5


class UsageError(FastDQNError):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line (the usage stays under ``--help``)."""

    def error(self, message: str):
        raise UsageError(f"{message}; see {self.prog} --help")


def main(argv: list[str] | None = None) -> int:
    # First of all, so that a signal during the imports below is reported in one line too.
    with StopSignals() as signals:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.command is None:
                raise UsageError("expected a command: train, eval, bench, sweep or plot; see fastdqn --help")
            # EnvPool's classic-control specs declare float64 bounds that gymnasium warns about on
            # every env creation; the observations themselves are float32 and exact.
            warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32",
                                    category=UserWarning)
            if args.command == "train":
                return _train(args, signals)
            return args.handler(args)
        except Interrupted as exc:
            print(f"fastdqn: stopped by {signal.Signals(exc.signum).name}{signals.note}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except TrainingError as exc:
            print(f"fastdqn: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except (FastDQNError, MemoryError) as exc:
            print(f"fastdqn: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"fastdqn: error: {exc}; fix the cause and run again (--resume continues from the last "
                  "checkpoint written)", file=sys.stderr)
            return EXIT_FAILED


# ---- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastdqn", description="Fast DQN on batched EnvPool environments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,bench,sweep,plot}")

    train = sub.add_parser(
        "train", help="train a DQN agent",
        description="Train a DQN agent. Defaults depend on the task: Atari ids get CleanRL dqn_atari.py's "
                    "hyperparameters and NatureCNN; vector-observation ids (CartPole-v1, ...) an MLP "
                    "preset that learns in about a minute on a CPU. Any flag overrides.",
    )
    for f in dataclasses.fields(TrainConfig):
        _add_field(train, f)
    train.add_argument("--resume", metavar="PATH", default=None,
                       help="continue a run from its checkpoint file or run folder")
    train.add_argument("--preset", choices=sorted(NAMED_PRESETS), default=None, help=_preset_help())

    ev = sub.add_parser("eval", help="play full games with a trained checkpoint")
    ev.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR", help="checkpoint file or run folder")
    ev.add_argument("--episodes", type=int, default=10, help="full games to play (default: 10)")
    ev.add_argument("--epsilon", type=float, default=0.05, help="probability of a random action (default: 0.05, as CleanRL)")
    ev.add_argument("--seed", type=int, default=12345, help="seed of the evaluation envs (default: 12345)")
    ev.add_argument("--num-envs", type=int, default=None, help="parallel envs (default: min(episodes, 16))")
    ev.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=None,
                    help="run the network on the GPU (default: if one is available)")
    ev.add_argument("--json", action="store_true", help="print the statistics as one JSON object (default: off)")
    ev.set_defaults(handler=_eval)

    bench = sub.add_parser("bench", help="measure throughput of fastdqn's components")
    try:
        import fastdqn.tools.bench.sections as bench_module
    except ImportError:
        bench.set_defaults(handler=_bench_missing)
    else:
        bench_module.add_arguments(bench)
        bench.set_defaults(handler=bench_module.run)

    import fastdqn.tools.plot as plot_module
    import fastdqn.tools.sweep as sweep_module

    sweep = sub.add_parser(
        "sweep", help="train every (env, seed) pair as its own run, on Ray",
        description="Run fastdqn train once per (env, seed) pair, each run a Ray task that reserves "
                    "--cpus-per-run CPUs and --gpus-per-run GPUs, on a local Ray instance or a cluster "
                    "(--address). Train flags given here apply to every run. Needs pip install 'fastdqn[ray]'.",
    )
    sweep_module.add_arguments(sweep)
    forwarded = sweep.add_argument_group("train flags", "given to every run's fastdqn train")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in sweep_module.PER_RUN_FIELDS:
            _add_field(forwarded, f)
    sweep.set_defaults(handler=sweep_module.run)

    plot = sub.add_parser("plot", help="draw learning curves and aggregate scores of runs or sweeps",
                          description=plot_module.DESCRIPTION)
    plot_module.add_arguments(plot)
    plot.set_defaults(handler=plot_module.run)
    return parser


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    flag = "--" + f.name.replace("_", "-")
    help_text = f.metadata["help"] + _default_text(f)
    if f.type in ("bool", bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        return
    kwargs: dict = {"default": None, "help": help_text}
    if f.name == "hidden":
        kwargs.update(type=_int_tuple, metavar="W1,W2")
    elif f.type in ("int", int):
        kwargs.update(type=int)
    elif f.type in ("float", float):
        kwargs.update(type=float)
    if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
    parser.add_argument(flag, **kwargs)


def _preset_help() -> str:
    """What each named preset sets, from ``NAMED_PRESETS`` itself."""
    def flags(values: dict) -> str:
        return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v:g}" if isinstance(v, float) else f" {v}")
                        for k, v in values.items())

    parts = []
    for name, by_kind in NAMED_PRESETS.items():
        atari, vector = by_kind[ATARI], by_kind[VECTOR]
        if not atari and not vector:
            parts.append(f"{name}: the defaults")
            continue
        common = {k: v for k, v in vector.items() if atari.get(k) == v}
        only = [(kind, {k: v for k, v in values.items() if k not in common})
                for kind, values in (("Atari", atari), ("vector envs", vector))]
        parts.append(f"{name}: {flags(common)}"
                     + "".join(f", on {kind} also {flags(extra)}" for kind, extra in only if extra))
    return ("named hyperparameters on top of the task's defaults, overridden by any flag given; "
            + "; ".join(parts) + " (README, \"Presets\")")


def _default_text(f: dataclasses.Field) -> str:
    """'(default: X)', or per kind of env when the presets differ."""
    if f.name in ("cuda", "run_dir", "env_batch_size", "max_episode_steps"):
        return ""  # their help says how they default
    atari = PRESETS[ATARI].get(f.name, f.default)
    vector = PRESETS[VECTOR].get(f.name, f.default)
    fmt = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731
    if atari == vector:
        return f" (default: {fmt(atari)})"
    return f" (default: Atari {fmt(atari)}, vector {fmt(vector)})"


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 120,84, got {text!r}") from None


# ---- train -------------------------------------------------------------------------------


def _train(args: argparse.Namespace, signals: StopSignals) -> int:
    signals.note = " before training started; no checkpoint was written"
    import torch

    from fastdqn.run.checkpoint import CHECKPOINT_NAME, buffer_path, resolve_checkpoint
    from fastdqn.run.envs import env_info
    from fastdqn.run.rundir import RunDirLock, check_no_run, check_run_dir

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    cuda_available = torch.cuda.is_available()
    state = lock = run_dir = None
    try:
        if args.resume:
            if args.preset is not None:
                raise ConfigError(f"--preset: a resumed run keeps its checkpoint's hyperparameters, got "
                                  f"--preset {args.preset}; drop --preset (single flags still apply)")
            run_dir = resolve_checkpoint(args.resume).parent
            if overrides["run_dir"] and Path(overrides["run_dir"]).resolve() != run_dir.resolve():
                raise ConfigError(f"--run-dir: a resumed run continues in its own folder {str(run_dir)!r}, "
                                  f"got {overrides['run_dir']!r}; drop --run-dir")
            state, config, info = _load_resume(args.resume, overrides, cuda_available)
        else:
            info = env_info(overrides["env_id"] if overrides["env_id"] is not None else TrainConfig.env_id)
            config = make_config(info.kind, overrides, cuda_available=cuda_available,
                                 max_episode_steps=info.max_episode_steps, preset=args.preset or DOUBLE_DQN)
            run_dir = Path(config.run_dir or f"runs/{config.env_id}__{config.seed}__{int(time.time())}")
            check_run_dir(run_dir)
        config = dataclasses.replace(config, run_dir=str(run_dir))
        if config.cuda and not cuda_available:
            raise ConfigError("--cuda: no CUDA device is available; drop --cuda or pass --no-cuda")
        replay_device = _replay_device(config, info)
        config = dataclasses.replace(config, replay_device=replay_device)
        replay_bytes, free = _check_memory(config, info)
        lock = RunDirLock(run_dir)
        # Under the lock, so that no other process can start a run here or write a newer checkpoint.
        if state is None:
            check_no_run(run_dir)
        else:
            state, config, info = _load_resume(args.resume, overrides, cuda_available)
            config = dataclasses.replace(config, run_dir=str(run_dir), replay_device=replay_device)
        saved_buffer = buffer_path(state) if state is not None else None
        # Validation is over: from here on envs, buffers and files are created.
        signals.note = " before training started; no checkpoint was written" + (
            f" (the one in {run_dir} is unchanged)" if state is not None else "")
        return _run(config, info, state, saved_buffer, run_dir, replay_bytes, free, signals)
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


def _load_resume(path: str, overrides: dict, cuda_available: bool):
    """The checkpoint at ``path``, the config to resume it with and its env's info."""
    from fastdqn.run.checkpoint import load_checkpoint
    from fastdqn.run.envs import env_info

    state = load_checkpoint(path)
    config = _resume_config(state, overrides, cuda_available)
    info = env_info(config.env_id)
    if tuple(state["obs_shape"]) != info.obs_shape:
        raise ConfigError(f"--resume: the checkpoint was trained on observations "
                          f"{tuple(state['obs_shape'])}, {config.env_id} gives {info.obs_shape}")
    return state, config, info


def _run(config: TrainConfig, info, state, saved_buffer, run_dir: Path, replay_bytes: int, free: int,
         signals: StopSignals) -> int:
    import torch

    from fastdqn.util.atomic import atomic_write
    from fastdqn.run.envs import make_envs
    from fastdqn.run.logger import RunLogger
    from fastdqn.run.trainer import Trainer

    torch.manual_seed(config.seed)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    resume_step = int(state["trainer"]["global_step"]) if state is not None else None
    # New seeds on resume: EnvPool state cannot be saved, so do not replay the same games.
    seed = derive_seed(config.seed, resume_step or 0)
    learner = _make_learner(config, info)
    if state is not None:
        _load_learner_state(learner, state)
    replay, frames_on = _replay_type(config)
    if saved_buffer is not None:
        buffer = replay.load(saved_buffer, **frames_on)
        _check_saved_buffer(buffer, config, info, saved_buffer)
    else:
        per = dict(alpha=config.per_alpha, eps=config.per_eps) if config.prioritized else {}
        buffer = replay(config.buffer_size, info.obs_shape, config.num_envs, obs_dtype=info.obs_dtype,
                        frame_stack=info.frame_stack, n_step=config.n_step, gamma=config.gamma, seed=seed,
                        **frames_on, **per)
    envs = make_envs(config.env_id, config.num_envs, seed=seed,
                     async_envs=config.async_envs, batch_size=config.env_batch,
                     episodic_life=True, sticky_actions=config.sticky_actions,
                     max_episode_steps=config.max_episode_steps, num_threads=config.env_threads)
    # From here a first signal is recorded and the trainer ends with a checkpoint, even one
    # that arrives before its loop starts.
    signals.hold()
    _print_summary(config, info, learner, replay_bytes, free, resume_step, saved_buffer is not None)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(config.to_dict(), indent=2) + "\n"))
        logger = RunLogger(run_dir, total_timesteps=config.total_timesteps, resume_step=resume_step,
                           progress=config.progress)
        try:
            trainer = Trainer(envs, buffer, learner, config, logger, evaluator=_evaluator(learner, config))
            if state is not None:
                trainer.load_state_dict(state["trainer"], buffer_restored=saved_buffer is not None)
            signals.forward_to(trainer.request_stop)
            status = trainer.train()
        finally:
            logger.close()
    finally:
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


def _resume_config(state: dict, overrides: dict, cuda_available: bool) -> TrainConfig:
    """The saved config with the given flags applied.

    A new ``--total-timesteps`` without ``--exploration-fraction`` keeps the epsilon decay's
    length in steps (the fraction is rescaled, at most to 1), so epsilon does not jump.
    """
    saved = TrainConfig.from_dict(state["config"])  # load_checkpoint has checked it
    fixed = _FIXED_ON_RESUME + (_FIXED_WITH_BUFFER if state.get("buffer_file") else ())
    for name in fixed:
        given = overrides.get(name)
        if given is not None and given != getattr(saved, name):
            raise ConfigError(
                f"--{name.replace('_', '-')}: the checkpoint was trained with {getattr(saved, name)!r}, "
                f"got {given!r}; drop the flag or start a new run"
            )
    values = saved.to_dict()
    values["hidden"] = saved.hidden
    values["cuda"] = cuda_available
    values["replay_device"] = "auto"  # chosen again for this machine, like cuda
    values.update({k: v for k, v in overrides.items() if v is not None and k != "run_dir"})
    total = values["total_timesteps"]
    if overrides.get("exploration_fraction") is None and isinstance(total, int) and total > 0 \
            and total != saved.total_timesteps:
        values["exploration_fraction"] = min(1.0, saved.exploration_steps / total)
    return TrainConfig(**values)


def _check_saved_buffer(buffer, config: TrainConfig, info, path: Path) -> None:
    """The replay file must be the buffer this run would build."""
    expected = (config.buffer_size, config.num_envs, info.obs_shape, info.obs_dtype, info.frame_stack,
                config.n_step, config.gamma, (config.per_alpha, config.per_eps) if config.prioritized else None)
    got = (buffer.capacity, buffer.num_envs, buffer.obs_shape, buffer.obs_dtype, buffer.frame_stack,
           buffer.n_step, buffer.gamma,
           (buffer.alpha, buffer.eps) if buffer.prioritized else None)
    if got != expected:
        raise CheckpointError(
            f"checkpoint: its replay buffer file {str(path)!r} holds (capacity, num_envs, obs_shape, "
            f"obs_dtype, frame_stack, n_step, gamma, (per_alpha, per_eps)) {got}, the run needs {expected}; "
            "the file is damaged or was replaced: use an older copy of the run folder"
        )


def _load_learner_state(learner, state: dict) -> None:
    try:
        learner.load_state_dict(state["learner"])
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {state['path']!r}: {exc}") from None


def _make_learner(config: TrainConfig, info, *, compile: bool | None = None):
    from fastdqn.learn.learner import Learner
    from fastdqn.learn.networks import q_network_for

    return Learner(
        q_network_for(info, config.hidden, config.dueling), lr=config.learning_rate, gamma=config.gamma,
        target_update_interval=config.target_update_interval, loss=config.loss,
        max_grad_norm=config.max_grad_norm or None, double_dqn=config.double_dqn, adam_eps=config.adam_eps,
        compile=config.compile if compile is None else compile, device=config.device,
        batch_size=config.batch_size, seed=config.seed,
    )


def _evaluator(learner, config: TrainConfig):
    """Scores of ``eval_episodes`` full games on separate envs, made on first use."""
    import numpy as np

    from fastdqn.run.envs import make_envs
    from fastdqn.run.evaluate import evaluate

    envs = []
    eval_seed = derive_seed(config.seed, 1_000_003)
    rng = np.random.default_rng(eval_seed)

    def run():
        if not envs:
            envs.append(make_envs(config.env_id, min(config.eval_episodes, 16), seed=eval_seed,
                                  episodic_life=False, sticky_actions=config.sticky_actions,
                                  max_episode_steps=config.max_episode_steps, num_threads=config.env_threads))
        return evaluate(learner, envs[0], config.eval_episodes, config.eval_epsilon, rng)

    return run


def _replay_bytes(config: TrainConfig, info) -> int:
    """Host memory the replay buffer for this run will allocate."""
    from fastdqn.replay.buffer import ReplayBuffer

    args = (config.buffer_size, info.obs_shape, config.num_envs)
    kwargs = dict(obs_dtype=info.obs_dtype, frame_stack=info.frame_stack)
    plain = ReplayBuffer.required_bytes(*args, **kwargs)
    total = plain
    if config.replay_device == "cuda":
        from fastdqn.replay.device import host_bytes

        total = host_bytes(*args, **kwargs)
    if config.prioritized:  # plus the priority trees, on the host wherever the frames are
        from fastdqn.replay.prioritized import PrioritizedReplayBuffer

        total += PrioritizedReplayBuffer.required_bytes(*args, **kwargs) - plain
    return total


def _replay_device(config: TrainConfig, info) -> str:
    """Where this run keeps the replay frames: ``--replay-device``, with ``auto`` resolved to
    cuda when training on CUDA and the frames fit beside the networks, else cpu."""
    if not config.cuda or config.replay_device == "cpu":
        return "cpu"
    import torch

    from fastdqn.replay.device import DEFAULT_HEADROOM, check_device_memory, device_bytes
    from fastdqn.errors import DeviceMemoryError

    needed = device_bytes(config.buffer_size, info.obs_shape, config.num_envs, obs_dtype=info.obs_dtype,
                          frame_stack=info.frame_stack)
    headroom = DEFAULT_HEADROOM + _network_bytes(config, info)
    try:
        check_device_memory(needed, int(torch.cuda.mem_get_info()[0]), headroom, argument="--replay-device cuda")
    except DeviceMemoryError:
        if config.replay_device == "cuda":
            raise
        return "cpu"
    return "cuda"


def _replay_type(config: TrainConfig) -> tuple[type, dict]:
    """The replay buffer class for ``config.replay_device`` (and ``--prioritized``) and the
    keywords that place its frames."""
    if config.replay_device == "cuda":
        if config.prioritized:
            from fastdqn.replay.device_prioritized import DevicePrioritizedReplayBuffer

            return DevicePrioritizedReplayBuffer, {"device": config.device}
        from fastdqn.replay.device import DeviceReplayBuffer

        return DeviceReplayBuffer, {"device": config.device}
    if config.prioritized:
        from fastdqn.replay.prioritized import PrioritizedReplayBuffer

        return PrioritizedReplayBuffer, {}
    from fastdqn.replay.buffer import ReplayBuffer

    return ReplayBuffer, {}


def _network_bytes(config: TrainConfig, info) -> int:
    """Memory training the network takes: its parameters counted on the meta device
    (nothing allocated), times the copies training keeps of each."""
    import torch

    from fastdqn.learn.networks import q_network_for

    with torch.device("meta"):
        network = q_network_for(info, config.hidden, config.dueling)
    return _COPIES_PER_PARAMETER * sum(p.numel() * p.element_size() for p in network.parameters())


def _check_memory(config: TrainConfig, info) -> tuple[int, int]:
    """Refuse a replay buffer and network that do not fit; returns (replay bytes, free RAM)."""
    import torch

    from fastdqn.replay.buffer import available_memory

    replay_bytes, network_bytes = _replay_bytes(config, info), _network_bytes(config, info)
    free = available_memory()
    if replay_bytes > free:
        raise ConfigError(
            f"--buffer-size {config.buffer_size}: the replay buffer would need {replay_bytes / 1e9:.2f} GB "
            f"but only {free / 1e9:.2f} GB of RAM is free; lower --buffer-size"
        )
    network = (f"--hidden {','.join(map(str, config.hidden))}" if info.kind == VECTOR
               else f"the NatureCNN of {config.env_id}")
    if config.cuda:
        device_free, where = torch.cuda.mem_get_info()[0], "GPU memory is free"
    else:
        device_free, where = free - replay_bytes, "RAM is free beside the replay buffer"
    if network_bytes > device_free:
        raise ConfigError(
            f"{network}: training the network would need {network_bytes / 1e9:.2f} GB (weights, target, "
            f"gradients, Adam state) but only {device_free / 1e9:.2f} GB of {where}; "
            "use smaller --hidden widths" + ("" if config.cuda else " or a smaller --buffer-size")
        )
    return replay_bytes, free


def _print_summary(config, info, learner, replay_bytes, free, resume_step, buffer_restored) -> None:
    params = sum(p.numel() for p in learner.online.parameters())
    network = type(learner.online).__name__
    mode = f"async, batches of {config.env_batch}" if config.async_envs else "sync"
    lines = [
        f"fastdqn train: {config.env_id} ({info.kind}: obs {info.obs_shape} {info.obs_dtype}, "
        f"{info.num_actions} actions)",
        f"  device {config.device} | num_envs {config.num_envs} ({mode}) | {network} {params:,} params "
        f"| compile {'on' if config.compile else 'off'}",
        f"  replay {config.buffer_size:,} transitions: {replay_bytes / 1e9:.2f} GB of {free / 1e9:.1f} GB free RAM"
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


# ---- eval and bench ------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from fastdqn.run.checkpoint import load_checkpoint
    from fastdqn.run.envs import env_info, make_envs
    from fastdqn.run.evaluate import evaluate, summarize

    if args.episodes < 1:
        raise ConfigError(f"--episodes: expected a positive int, got {args.episodes}")
    if not 0 <= args.epsilon <= 1:
        raise ConfigError(f"--epsilon: expected a number in [0, 1], got {args.epsilon}")
    if args.num_envs is not None and args.num_envs < 1:
        raise ConfigError(f"--num-envs: expected a positive int, got {args.num_envs}")
    check_seed("--seed", args.seed)
    if args.cuda and not torch.cuda.is_available():
        raise ConfigError("--cuda: no CUDA device is available; drop --cuda or pass --no-cuda")
    state = load_checkpoint(args.checkpoint)
    saved = TrainConfig.from_dict(state["config"])  # load_checkpoint has checked it
    cuda = torch.cuda.is_available() if args.cuda is None else args.cuda
    config = dataclasses.replace(saved, cuda=cuda, compile=False, anneal_lr=False)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    info = env_info(config.env_id)
    learner = _make_learner(config, info, compile=False)
    _load_learner_state(learner, state)
    num_envs = args.num_envs or min(args.episodes, 16)
    envs = make_envs(config.env_id, num_envs, seed=args.seed, episodic_life=False,
                     sticky_actions=config.sticky_actions, max_episode_steps=config.max_episode_steps)
    try:
        stats = summarize(evaluate(learner, envs, args.episodes, args.epsilon,
                                   np.random.default_rng(args.seed)))
    finally:
        envs.close()
    stats.update(env_id=config.env_id, global_step=int(state["trainer"]["global_step"]), epsilon=args.epsilon)
    if args.json:
        print(json.dumps(stats))
    else:
        print(f"{config.env_id} at step {stats['global_step']:,}: {stats['episodes']} games, epsilon {args.epsilon}")
        print(f"  mean {stats['mean']:.2f}  std {stats['std']:.2f}  min {stats['min']:.2f}  "
              f"max {stats['max']:.2f}  median {stats['median']:.2f}")
    return 0


def _bench_missing(args: argparse.Namespace) -> int:
    raise UsageError("bench: fastdqn.tools.bench.sections is not available in this installation")


if __name__ == "__main__":
    sys.exit(main())
