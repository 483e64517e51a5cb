"""The rules of resuming a run from its checkpoint: which flags may change and which must
match what it was trained with, the config a resumed run gets, and the checks that the
saved replay buffer and learner state are the ones this run would build.
"""

from __future__ import annotations

from pathlib import Path

from fastdqn.errors import CheckpointError, ConfigError
from fastdqn.run.config import TrainConfig, check_kind, check_protocol_flags
from fastdqn.run.envs import EnvInfo, env_info

# On resume these must match the checkpoint: they decide the network and its inputs.
FIXED_ON_RESUME = ("env_id", "hidden", "dueling")
# With a saved replay buffer these must match it too.
# (gamma: n-step rewards are stored already discounted, and the file records it.)
FIXED_WITH_BUFFER = ("buffer_size", "num_envs", "actors", "n_step", "gamma", "prioritized", "per_alpha", "per_eps")


def load_resume(path: str, overrides: dict, cuda_available: bool) -> tuple[dict, TrainConfig, EnvInfo]:
    """The checkpoint at ``path``, the config to resume it with and its task's description."""
    from fastdqn.run.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    config = resume_config(state, overrides, cuda_available)
    task = env_info(config.env_id)
    check_kind(config, task.kind)
    if tuple(state["obs_shape"]) != task.obs_shape:
        raise ConfigError(f"--resume: the checkpoint was trained on observations "
                          f"{tuple(state['obs_shape'])}, {config.env_id} gives {task.obs_shape}")
    return state, config, task


def resume_config(state: dict, overrides: dict, cuda_available: bool) -> TrainConfig:
    """The saved config with the given flags applied.

    A new ``--total-timesteps`` without ``--exploration-fraction`` keeps the epsilon decay's
    length in steps (the fraction is rescaled, at most to 1), so epsilon does not jump.
    """
    saved = TrainConfig.from_dict(state["config"])  # load_checkpoint has checked it
    fixed = FIXED_ON_RESUME + (FIXED_WITH_BUFFER if state.get("buffer_file") else ())
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
    check_protocol_flags(values["eval_protocol"], overrides)
    total = values["total_timesteps"]
    if overrides.get("exploration_fraction") is None and isinstance(total, int) and total > 0 \
            and total != saved.total_timesteps:
        values["exploration_fraction"] = min(1.0, saved.exploration_steps / total)
    return TrainConfig(**values)


def check_saved_buffer(buffer, config: TrainConfig, task: EnvInfo, path: Path) -> None:
    """The replay file must be the buffer this run would build."""
    expected = (config.buffer_size, config.replay_envs, task.obs_shape, task.obs_dtype, task.frame_stack,
                config.n_step, config.gamma, (config.per_alpha, config.per_eps) if config.prioritized else None)
    got = (buffer.capacity, buffer.num_envs, buffer.obs_shape, buffer.obs_dtype, buffer.frame_stack,
           buffer.n_step, buffer.gamma, (buffer.alpha, buffer.eps) if buffer.prioritized else None)
    if got != expected:
        raise CheckpointError(
            f"checkpoint: its replay buffer file {str(path)!r} holds (capacity, num_envs, obs_shape, "
            f"obs_dtype, frame_stack, n_step, gamma, (per_alpha, per_eps)) {got}, the run needs {expected}; "
            "the file is damaged or was replaced: use an older copy of the run folder"
        )


def load_learner_state(learner, state: dict) -> None:
    """The checkpoint's learner state into ``learner``; a bad one names the checkpoint."""
    try:
        learner.load_state_dict(state["learner"])
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {state['path']!r}: {exc}") from None
