"""The ``fastdqn`` command: ``train``, ``eval``, ``bench``, ``sweep`` and ``plot``.

Flags are generated from ``TrainConfig``'s fields (CleanRL's names and units). They
default to None here; ``make_config`` fills in the preset of the environment's kind, so
the frozen config only ever holds concrete values. Every bad input is reported as one
line ``fastdqn: error: ...`` with exit status 2, before any file or env is created.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from fastdqn.config import ATARI, PRESETS, VECTOR, TrainConfig, make_config
from fastdqn.errors import CheckpointError, ConfigError, FastDQNError

# On resume these must match the checkpoint: they decide the network and its inputs.
_FIXED_ON_RESUME = ("env_id", "hidden")
# With a saved replay buffer these must match it too.
_FIXED_WITH_BUFFER = ("buffer_size", "num_envs")


class UsageError(FastDQNError):
    """Bad command-line input: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # EnvPool's classic-control specs declare float64 bounds that gymnasium warns about on
    # every env creation; the observations themselves are float32 and exact.
    warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32",
                            category=UserWarning)
    try:
        return args.handler(args)
    except (FastDQNError, MemoryError) as exc:
        print(f"fastdqn: error: {exc}", file=sys.stderr)
        return 2


# ---- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    train.set_defaults(handler=_train)

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
        import fastdqn.bench as bench_module
    except ImportError:
        bench.set_defaults(handler=_bench_missing)
    else:
        bench_module.add_arguments(bench)
        bench.set_defaults(handler=bench_module.run)

    import fastdqn.plot as plot_module
    import fastdqn.sweep as sweep_module

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


def _train(args: argparse.Namespace) -> int:
    import torch

    from fastdqn.checkpoint import CHECKPOINT_NAME, buffer_path, load_checkpoint
    from fastdqn.envs import env_info

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    cuda_available = torch.cuda.is_available()
    state = None
    if args.resume:
        state = load_checkpoint(args.resume)
        config = _resume_config(state, overrides, cuda_available)
        info = env_info(config.env_id)
        if tuple(state["obs_shape"]) != info.obs_shape:
            raise ConfigError(f"--resume: the checkpoint was trained on observations {tuple(state['obs_shape'])}, "
                              f"{config.env_id} gives {info.obs_shape}")
        run_dir = Path(state["path"]).parent
    else:
        info = env_info(overrides["env_id"] or TrainConfig.env_id)
        config = make_config(info.kind, overrides, cuda_available=cuda_available,
                             max_episode_steps=info.max_episode_steps)
        run_dir = Path(config.run_dir or f"runs/{config.env_id}__{config.seed}__{int(time.time())}")
        if (run_dir / CHECKPOINT_NAME).exists():
            raise ConfigError(f"--run-dir: {str(run_dir)!r} already holds a run; pass --resume {run_dir} "
                              "to continue it or choose another --run-dir")
    config = dataclasses.replace(config, run_dir=str(run_dir))
    if config.cuda and not cuda_available:
        raise ConfigError("--cuda: no CUDA device is available; drop --cuda or pass --no-cuda")
    from fastdqn.replay import available_memory

    replay_bytes = _replay_bytes(config, info)
    free = available_memory()
    if replay_bytes > free:
        raise ConfigError(
            f"--buffer-size {config.buffer_size}: the replay buffer would need {replay_bytes / 1e9:.2f} GB "
            f"but only {free / 1e9:.2f} GB of RAM is free; lower --buffer-size"
        )
    saved_buffer = buffer_path(state) if state is not None else None

    # Validation is over: from here on files and envs are created.
    from fastdqn.atomic import atomic_write
    from fastdqn.envs import make_envs
    from fastdqn.logger import RunLogger
    from fastdqn.replay import ReplayBuffer
    from fastdqn.trainer import Trainer

    torch.manual_seed(config.seed)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    resume_step = int(state["trainer"]["global_step"]) if state is not None else None
    learner = _make_learner(config, info)
    if state is not None:
        learner.load_state_dict(state["learner"])
    if saved_buffer is not None:
        buffer = ReplayBuffer.load(saved_buffer)
    else:
        buffer = ReplayBuffer(config.buffer_size, info.obs_shape, config.num_envs, obs_dtype=info.obs_dtype,
                              frame_stack=info.frame_stack, seed=config.seed + (resume_step or 0))
    # New env seeds on resume: EnvPool state cannot be saved, so do not replay the same games.
    envs = make_envs(config.env_id, config.num_envs, seed=config.seed + (resume_step or 0),
                     async_envs=config.async_envs, batch_size=config.env_batch,
                     episodic_life=True, sticky_actions=config.sticky_actions,
                     max_episode_steps=config.max_episode_steps, num_threads=config.env_threads)
    _print_summary(config, info, learner, replay_bytes, free, resume_step, saved_buffer is not None)

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(config.to_dict(), indent=2) + "\n"))
    logger = RunLogger(run_dir, total_timesteps=config.total_timesteps, resume_step=resume_step,
                       progress=config.progress)
    trainer = Trainer(envs, buffer, learner, config, logger, evaluator=_evaluator(learner, config))
    if state is not None:
        trainer.load_state_dict(state["trainer"], buffer_restored=saved_buffer is not None)
    previous = {sig: signal.signal(sig, _stop_handler(trainer)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = trainer.train()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.close()
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
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"--resume: the checkpoint's config is unusable: {exc}") from None
    fixed = _FIXED_ON_RESUME + (_FIXED_WITH_BUFFER if state.get("buffer_file") else ())
    for name in fixed:
        given = overrides.get(name)
        if given is not None and given != getattr(saved, name):
            raise ConfigError(
                f"--{name.replace('_', '-')}: the checkpoint was trained with {getattr(saved, name)!r}, "
                f"got {given!r}; drop the flag or start a new run"
            )
    if overrides.get("run_dir"):
        raise ConfigError("--run-dir: a resumed run continues in its own folder; drop --run-dir")
    values = saved.to_dict()
    values["hidden"] = saved.hidden
    values["cuda"] = cuda_available
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def _make_learner(config: TrainConfig, info, *, compile: bool | None = None):
    from fastdqn.learner import Learner
    from fastdqn.networks import MLP, NatureCNN

    if info.kind == ATARI:
        network = NatureCNN(info.num_actions, frame_stack=info.frame_stack)
    else:
        network = MLP(math.prod(info.obs_shape), info.num_actions, hidden=config.hidden)
    return Learner(
        network, lr=config.learning_rate, gamma=config.gamma,
        target_update_interval=config.target_update_interval, loss=config.loss,
        max_grad_norm=config.max_grad_norm or None, double_dqn=config.double_dqn,
        compile=config.compile if compile is None else compile, device=config.device,
        batch_size=config.batch_size, seed=config.seed,
    )


def _evaluator(learner, config: TrainConfig):
    """Scores of ``eval_episodes`` full games on separate envs, made on first use."""
    from fastdqn.envs import make_envs
    from fastdqn.evaluate import evaluate

    envs = []
    eval_seed = config.seed + 1_000_003
    rng = np.random.default_rng(eval_seed)

    def run():
        if not envs:
            envs.append(make_envs(config.env_id, min(config.eval_episodes, 16), seed=eval_seed,
                                  episodic_life=False, sticky_actions=config.sticky_actions,
                                  max_episode_steps=config.max_episode_steps, num_threads=config.env_threads))
        return evaluate(learner, envs[0], config.eval_episodes, config.eval_epsilon, rng)

    return run


def _stop_handler(trainer):
    def handler(signum, frame):
        trainer.request_stop(signum)
        # A second signal stops at once.
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)

    return handler


def _replay_bytes(config: TrainConfig, info) -> int:
    """Memory the ReplayBuffer for this run will allocate."""
    from fastdqn.replay import ReplayBuffer

    return ReplayBuffer.required_bytes(config.buffer_size, info.obs_shape, config.num_envs,
                                       obs_dtype=info.obs_dtype, frame_stack=info.frame_stack)


def _print_summary(config, info, learner, replay_bytes, free, resume_step, buffer_restored) -> None:
    params = sum(p.numel() for p in learner.online.parameters())
    network = type(learner.online).__name__
    mode = f"async, batches of {config.env_batch}" if config.async_envs else "sync"
    lines = [
        f"fastdqn train: {config.env_id} ({info.kind}: obs {info.obs_shape} {info.obs_dtype}, "
        f"{info.num_actions} actions)",
        f"  device {config.device} | num_envs {config.num_envs} ({mode}) | {network} {params:,} params "
        f"| compile {'on' if config.compile else 'off'}",
        f"  replay {config.buffer_size:,} transitions: {replay_bytes / 1e9:.2f} GB of {free / 1e9:.1f} GB free RAM",
        f"  {config.total_timesteps:,} steps into {config.run_dir}",
    ]
    if resume_step is not None:
        lines.append(f"  resuming at step {resume_step:,}" + (
            " with the saved replay buffer" if buffer_restored else
            f"; replay buffer refills for {config.learning_starts:,} steps before learning resumes"))
    print("\n".join(lines), flush=True)


# ---- eval and bench ------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    import torch

    from fastdqn.checkpoint import load_checkpoint
    from fastdqn.envs import env_info, make_envs
    from fastdqn.evaluate import evaluate, summarize

    if args.episodes < 1:
        raise ConfigError(f"--episodes: expected a positive int, got {args.episodes}")
    if not 0 <= args.epsilon <= 1:
        raise ConfigError(f"--epsilon: expected a number in [0, 1], got {args.epsilon}")
    if args.num_envs is not None and args.num_envs < 1:
        raise ConfigError(f"--num-envs: expected a positive int, got {args.num_envs}")
    if args.cuda and not torch.cuda.is_available():
        raise ConfigError("--cuda: no CUDA device is available; drop --cuda or pass --no-cuda")
    state = load_checkpoint(args.checkpoint)
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint: its config is unusable: {exc}") from None
    cuda = torch.cuda.is_available() if args.cuda is None else args.cuda
    config = dataclasses.replace(saved, cuda=cuda, compile=False, anneal_lr=False)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    info = env_info(config.env_id)
    learner = _make_learner(config, info, compile=False)
    learner.load_state_dict(state["learner"])
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
    raise UsageError("bench: fastdqn.bench is not available in this installation")


if __name__ == "__main__":
    sys.exit(main())
