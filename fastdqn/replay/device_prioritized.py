"""``DevicePrioritizedReplayBuffer``: prioritized replay whose frames live on a device.

It is ``DeviceReplayBuffer`` and ``PrioritizedReplayBuffer`` joined by their cooperative
``super()`` calls, with nothing of its own but the constructor's keywords:

- ``add``: the device buffer stages the frames, the prioritized buffer refreshes the trees
  (both against the counts from before the add);
- ``draw``/``gather``: the prioritized buffer draws by priority into the host plan block
  (transition ids and ``weight``), the device buffer sends the block and gathers the
  frames; ``weight`` arrives on the device like the other scalar fields, ``index`` stays a
  host NumPy array for ``update_priorities``;
- priorities, trees and ``update_priorities`` stay on the host.

The same seed and stream therefore give exactly the batches of ``PrioritizedReplayBuffer``.
``save`` writes that class's file, so either class loads what either saved. As with
``PrioritizedReplayBuffer``, calls must not overlap.

Importing this module imports torch.
"""

from __future__ import annotations

import numpy as np

from fastdqn.replay.device import DEFAULT_HEADROOM, DeviceReplayBuffer
from fastdqn.replay.prioritized import PrioritizedReplayBuffer


class DevicePrioritizedReplayBuffer(DeviceReplayBuffer, PrioritizedReplayBuffer):
    """A ``PrioritizedReplayBuffer`` (same arguments, same draws) whose frames live on
    ``device``, as in ``DeviceReplayBuffer``; batches are ``PrioritizedBatch``es of device
    tensors with a host ``index``."""

    def __init__(self, capacity: int, obs_shape, num_envs: int, *, device, alpha: float = 0.6,
                 eps: float = 1e-6, obs_dtype=np.uint8, frame_stack: int = 1, n_step: int = 1,
                 gamma: float = 0.99, seed=None, headroom: int = DEFAULT_HEADROOM):
        super().__init__(capacity, obs_shape, num_envs, device=device, obs_dtype=obs_dtype,
                         frame_stack=frame_stack, n_step=n_step, gamma=gamma, seed=seed,
                         headroom=headroom, alpha=alpha, eps=eps)

    @classmethod
    def _file_kind(cls) -> str:
        return PrioritizedReplayBuffer.__name__
