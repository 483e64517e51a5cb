"""fastdqn: a fast Deep Q-Network trainer and a lean replay buffer.

Imports are lazy so that ``from fastdqn import ReplayBuffer`` pulls in NumPy and Numba
only, not torch or envpool.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(["ReplayBuffer", "ReplayBatch", "PrioritizedBatch", "ReplaySpec", "replay_bytes",
                     "PrioritizedReplayBuffer", "DeviceReplayBuffer", "DevicePrioritizedReplayBuffer"],
                    "fastdqn.replay"),
    "Learner": "fastdqn.learn.learner",
    "NatureCNN": "fastdqn.learn.networks",
    "MLP": "fastdqn.learn.networks",
    **dict.fromkeys(["FastDQNError", "ConfigError", "ReplayError", "ReplayStateError", "CheckpointError",
                     "BatchError", "DeviceMemoryError"], "fastdqn.errors"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastdqn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
