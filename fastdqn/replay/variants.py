"""The replay classes of earlier releases, as thin constructors of ``ReplayBuffer``.

Each fixes the keywords its name says and nothing else: the buffer, its batches and its
files are ``ReplayBuffer``'s. ``load`` of each refuses a file of the other sampler.
"""

from __future__ import annotations

import numpy as np

from fastdqn.replay.buffer import ReplayBuffer


class PrioritizedReplayBuffer(ReplayBuffer):
    """``ReplayBuffer(..., prioritized=True)``."""

    _PRIORITIZED = True

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, alpha: float = 0.6, eps: float = 1e-6,
                 **options):
        super().__init__(capacity, obs_shape, num_envs, prioritized=True, alpha=alpha, eps=eps, **options)

    @staticmethod
    def required_bytes(capacity: int, obs_shape, num_envs: int, *, obs_dtype=np.uint8, frame_stack: int = 1,
                       device="cpu") -> int:
        return ReplayBuffer.required_bytes(capacity, obs_shape, num_envs, obs_dtype=obs_dtype,
                                           frame_stack=frame_stack, prioritized=True, device=device)


class DeviceReplayBuffer(ReplayBuffer):
    """``ReplayBuffer(..., device=device)`` with the frames in a torch tensor on ``device``,
    also when ``device`` is ``"cpu"`` (what tests compare bit for bit with host frames)."""

    _TENSOR_FRAMES = True
    _PRIORITIZED = False

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, device, **options):
        super().__init__(capacity, obs_shape, num_envs, device=device, **options)


class DevicePrioritizedReplayBuffer(ReplayBuffer):
    """``ReplayBuffer(..., prioritized=True, device=device)``, frames in a torch tensor."""

    _TENSOR_FRAMES = True
    _PRIORITIZED = True

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, device, alpha: float = 0.6,
                 eps: float = 1e-6, **options):
        super().__init__(capacity, obs_shape, num_envs, prioritized=True, alpha=alpha, eps=eps, device=device,
                         **options)

