"""EnvPool environments, configured in one explicit ``envpool.make`` call.

EnvPool does frame skip, resize, grayscale, frame stacking, no-op starts and life loss
in C++; there are no Python wrappers. envpool is imported lazily, here only.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from fastdqn.run.config import ATARI, VECTOR, check_seed
from fastdqn.errors import ConfigError


@dataclass(frozen=True)
class EnvInfo:
    """What the rest of fastdqn needs to know about a task before any env exists."""

    env_id: str
    kind: str  # ATARI (uint8 frame stacks) or VECTOR (float observations)
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    num_actions: int
    frame_stack: int
    max_episode_steps: int


def env_info(env_id: str) -> EnvInfo:
    """Look a task up in EnvPool's registry without creating an env.

    Raises ``ConfigError`` naming the closest ids for an unknown id, and for tasks fastdqn
    cannot train (continuous actions; observations other than Atari frame stacks and
    1-D float32 vectors).
    """
    import envpool

    all_ids = envpool.list_all_envs()
    if env_id not in all_ids:
        close = difflib.get_close_matches(env_id, all_ids, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see envpool.list_all_envs()"
        raise ConfigError(f"--env-id: unknown EnvPool task {env_id!r}; {hint}")
    try:
        spec = envpool.make_spec(env_id)
    except ImportError as exc:
        raise ConfigError(f"--env-id: EnvPool cannot load {env_id!r} on this machine: {exc}") from None
    config = spec.config
    action_space = spec.action_space
    obs_space = spec.observation_space
    if not hasattr(action_space, "n") or not hasattr(obs_space, "shape") or obs_space.shape is None:
        raise ConfigError(
            f"--env-id: {env_id!r} needs discrete actions and an array observation for DQN; "
            "pick an Atari task (e.g. Breakout-v5) or a classic-control one (e.g. CartPole-v1)"
        )
    is_atari = hasattr(config, "stack_num") and hasattr(config, "episodic_life")
    obs_dtype = np.dtype(np.uint8) if is_atari else np.dtype(np.float32)
    # The networks take Atari frame stacks (NatureCNN) or flat float32 vectors (MLP) only.
    got_dtype = np.dtype(getattr(obs_space, "dtype", None) or np.float64)
    if got_dtype != obs_dtype or (not is_atari and len(obs_space.shape) != 1):
        raise ConfigError(
            f"--env-id: {env_id!r} gives {got_dtype} observations of shape {tuple(obs_space.shape)}; fastdqn "
            "trains on Atari frame stacks (uint8) and 1-D float32 vectors only; pick an Atari task "
            "(e.g. Breakout-v5) or a vector one (e.g. CartPole-v1)"
        )
    return EnvInfo(env_id=env_id, kind=ATARI if is_atari else VECTOR, obs_shape=tuple(int(d) for d in obs_space.shape),
                   obs_dtype=obs_dtype, num_actions=int(action_space.n),
                   frame_stack=int(config.stack_num) if is_atari else 1,
                   max_episode_steps=int(config.max_episode_steps))


def make_envs(env_id: str, num_envs: int, *, seed: int, async_envs: bool = False, batch_size: int | None = None,
              episodic_life: bool = True, sticky_actions: float = 0.0, max_episode_steps: int | None = None,
              noop_starts: int = 30, render: bool = False, num_threads: int = 0):
    """One ``envpool.make`` call with every option fastdqn relies on spelled out.

    Training envs use ``episodic_life=True`` (a lost life ends bootstrapping); evaluation
    envs ``False`` (a game is one episode). Rewards are never clipped here: the trainer
    clips them on the learning path only, so logged returns are real game scores.
    Classic-control tasks take none of the Atari options. With ``render``, ``envs.render(env_ids)``
    returns the game's own RGB screen (Atari 210x160, CartPole 400x600); it reads the state
    and changes nothing that is played.
    """
    import envpool

    check_seed("seed", seed)
    task = env_info(env_id)
    if batch_size is None or not async_envs:
        batch_size = num_envs
    options = dict(env_type="gymnasium", num_envs=num_envs, batch_size=batch_size, seed=seed, num_threads=num_threads,
                   max_episode_steps=max_episode_steps or task.max_episode_steps)
    if render:
        options.update(render_mode="rgb_array")
    if task.kind == ATARI:
        # EnvPool draws the no-op count from [0, noop_max - 1] (plus one in games without FIRE)
        # and crashes on noop_max 0, so "none" is noop_max 1.
        options.update(episodic_life=episodic_life, reward_clip=False, repeat_action_probability=float(sticky_actions),
                       noop_max=max(int(noop_starts), 1), frame_skip=4, stack_num=4, img_height=84, img_width=84, gray_scale=True,
                       use_fire_reset=True, full_action_space=False, zero_discount_on_life_loss=False)
    elif sticky_actions:
        raise ConfigError(f"--sticky-actions: only Atari tasks take it, {env_id!r} is {VECTOR}; drop the flag")
    return envpool.make(env_id, **options)
