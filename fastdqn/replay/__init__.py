"""The replay layer: the frame ring and its ``add``, frame stores on the host or a device,
uniform and prioritized samplers, the batch's fields, the file format and byte counts.

Imports NumPy, Numba, ``fastdqn.kernels`` and ``fastdqn.util`` only: torch is imported
when frames are kept on a device, never at import. Nothing here imports the learning,
pipeline, running or tools layers.
"""

from fastdqn.replay.batch import PrioritizedBatch, ReplayBatch
from fastdqn.replay.buffer import ReplayBuffer
from fastdqn.replay.prioritized import PrioritizedReplayBuffer

__all__ = ["ReplayBuffer", "ReplayBatch", "PrioritizedBatch", "PrioritizedReplayBuffer",
           "DeviceReplayBuffer", "DevicePrioritizedReplayBuffer"]


def __getattr__(name: str):
    # The device buffers import torch: only when asked for.
    if name == "DeviceReplayBuffer":
        from fastdqn.replay.device import DeviceReplayBuffer as value
    elif name == "DevicePrioritizedReplayBuffer":
        from fastdqn.replay.device_prioritized import DevicePrioritizedReplayBuffer as value
    else:
        raise AttributeError(f"module 'fastdqn.replay' has no attribute {name!r}")
    globals()[name] = value
    return value
