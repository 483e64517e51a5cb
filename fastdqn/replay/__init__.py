"""The replay layer: the frame rings and their ``add`` (``ring``), frame stores on the host
(``frames``) or a device (``device``), uniform and prioritized samplers (``uniform``,
``prioritized``), the batch's fields (``batch``), the file format (``file``) and the byte
counts of a configuration (``spec``), composed by one ``ReplayBuffer`` (``buffer``).

Imports NumPy, Numba, ``fastdqn.kernels`` and ``fastdqn.util`` only: torch is imported
when frames are kept on a device, never at import. Nothing here imports the learning,
pipeline, running or tools layers.
"""

from fastdqn.replay.batch import PrioritizedBatch, ReplayBatch
from fastdqn.replay.buffer import ReplayBuffer
from fastdqn.replay.spec import ReplaySpec, replay_bytes
from fastdqn.replay.variants import DevicePrioritizedReplayBuffer, DeviceReplayBuffer, PrioritizedReplayBuffer

__all__ = ["ReplayBuffer", "ReplayBatch", "PrioritizedBatch", "ReplaySpec", "replay_bytes",
           "PrioritizedReplayBuffer", "DeviceReplayBuffer", "DevicePrioritizedReplayBuffer"]
