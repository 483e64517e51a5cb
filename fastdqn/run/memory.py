"""Memory planning of a training run, before anything is allocated: the host RAM its replay
buffer will take, the memory training its network takes, where the replay frames go
(``--replay-device auto`` resolved) and the refusal of a run that would not fit.
"""

from __future__ import annotations

import math
import os

from fastdqn.errors import ConfigError, ReplayError
from fastdqn.run.build import build_network
from fastdqn.run.config import ATARI, VECTOR, TrainConfig
from fastdqn.run.envs import EnvInfo

# Host memory one EnvPool env takes, with room: measured about 0.9 MB per Atari env (emulator,
# screens, frame stack, state queue) and 8 KB per classic-control env, doubled.
ENV_BYTES = {ATARI: 2_000_000, VECTOR: 16_000}

# Copies of each network parameter that training holds: online and target weights, gradients, Adam's two moments.
COPIES_PER_PARAMETER = 5


# The replay buffer's argument names and the flags that set them.
REPLAY_FLAGS = {"capacity": "--buffer-size", "num_envs": "--num-envs", "n_step": "--n-step", "gamma": "--gamma",
                "alpha": "--per-alpha", "eps": "--per-eps"}


def replay_spec(config: TrainConfig, task: EnvInfo):
    """The ``ReplaySpec`` this run's buffer will have, with every replay argument checked as
    the buffer will check it (prioritized options too); a refusal names the flag."""
    from fastdqn.replay import ReplaySpec
    from fastdqn.replay.prioritized import check_options

    try:
        spec = ReplaySpec(config.buffer_size, task.obs_shape, config.replay_envs, task.obs_dtype, task.frame_stack,
                          config.n_step, config.gamma)
        if config.prioritized:
            check_options(config.per_alpha, config.per_eps)
    except ReplayError as exc:
        name, _, rest = str(exc).partition(": ")
        if name not in REPLAY_FLAGS:
            raise ConfigError(f"--env-id {config.env_id}: its observations cannot be stored: {exc}") from None
        for arg, flag in REPLAY_FLAGS.items():
            rest = rest.replace(f"{arg}=", f"{flag} ")
        raise ConfigError(f"{REPLAY_FLAGS[name]}: {rest}") from None
    return spec


def replay_bytes(config: TrainConfig, task: EnvInfo) -> int:
    """Host memory the replay buffer for this run will allocate (the priority trees stay on
    the host wherever the frames are)."""
    from fastdqn.replay import replay_bytes as count

    return count(replay_spec(config, task), prioritized=config.prioritized,
                 on_device=config.replay_device == "cuda")[0]


def network_bytes(config: TrainConfig, task: EnvInfo) -> int:
    """Memory training the network takes: its parameters counted on the meta device
    (nothing allocated), times the copies training keeps of each."""
    import torch

    with torch.device("meta"):
        network = build_network(task, config.hidden, config.dueling)
    return COPIES_PER_PARAMETER * sum(p.numel() * p.element_size() for p in network.parameters())


def choose_replay_device(config: TrainConfig, task: EnvInfo) -> str:
    """Where this run keeps the replay frames: ``--replay-device``, with ``auto`` resolved to
    cuda when training on CUDA and the frames fit beside the networks, else cpu."""
    if not config.cuda or config.replay_device == "cpu":
        return "cpu"
    import torch

    from fastdqn.errors import DeviceMemoryError
    from fastdqn.replay import replay_bytes as count
    from fastdqn.replay.device import DEFAULT_HEADROOM, check_device_memory

    needed = count(replay_spec(config, task), on_device=True)[1]
    headroom = DEFAULT_HEADROOM + network_bytes(config, task)
    try:
        check_device_memory(needed, int(torch.cuda.mem_get_info()[0]), headroom, argument="--replay-device cuda")
    except DeviceMemoryError:
        if config.replay_device == "cuda":
            raise
        return "cpu"
    return "cuda"


def check_memory(config: TrainConfig, task: EnvInfo) -> tuple[int, int]:
    """Refuse a replay buffer and network that do not fit; returns (replay bytes, free RAM)."""
    import torch

    from fastdqn.replay.buffer import available_memory

    replay, network = replay_bytes(config, task), network_bytes(config, task)
    free_ram = available_memory()
    if replay > free_ram:
        raise ConfigError(
            f"--buffer-size {config.buffer_size}: the replay buffer would need {replay / 1e9:.2f} GB "
            f"but only {free_ram / 1e9:.2f} GB of RAM is free; lower --buffer-size"
        )
    what = (f"--hidden {','.join(map(str, config.hidden))}" if task.kind == VECTOR
            else f"the NatureCNN of {config.env_id}")
    if config.cuda:
        device_free, where = torch.cuda.mem_get_info()[0], "GPU memory is free"
    else:
        device_free, where = free_ram - replay, "RAM is free beside the replay buffer"
    if network > device_free:
        raise ConfigError(
            f"{what}: training the network would need {network / 1e9:.2f} GB (weights, target, "
            f"gradients, Adam state) but only {device_free / 1e9:.2f} GB of {where}; "
            "use smaller --hidden widths" + ("" if config.cuda else " or a smaller --buffer-size")
        )
    return replay, free_ram


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_threads(config: TrainConfig) -> None:
    """Refuse thread counts beyond the machine's cores (EnvPool aborts, torch fails, far past them)."""
    n = cores()
    for flag, value in (("--env-threads", config.env_threads), ("--torch-threads", config.torch_threads)):
        if value > n:
            raise ConfigError(f"{flag}: expected at most the {n} CPU cores this process may use, got {value}; "
                              f"pass 0 for the default")


def check_envs(flag: str, task: EnvInfo, num_envs: int) -> None:
    """Refuse ``num_envs`` envs (and their batches) whose estimated memory exceeds what is free."""
    from fastdqn.replay.spec import available_memory

    # Each env: its own state, and a few copies of its observation in flight (batches, actions).
    needed = num_envs * (ENV_BYTES[task.kind] + 4 * task.obs_dtype.itemsize * math.prod(task.obs_shape))
    free = available_memory()
    if needed > free:
        raise ConfigError(f"{flag} {num_envs}: the envs would need about {needed / 1e9:.2f} GB but only "
                          f"{free / 1e9:.2f} GB of RAM is free; lower {flag}")



def check_network(config: TrainConfig, task: EnvInfo) -> None:
    """Refuse a network whose training memory exceeds this machine's free RAM."""
    from fastdqn.replay.spec import available_memory

    network, free = network_bytes(config, task), available_memory()
    if network > free:
        raise ConfigError(f"--hidden {','.join(map(str, config.hidden))}: training the network would need "
                          f"{network / 1e9:.2f} GB (weights, target, gradients, Adam state) but only "
                          f"{free / 1e9:.2f} GB of RAM is free; use smaller --hidden widths")
