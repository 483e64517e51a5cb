"""fastdqn: a fast Deep Q-Network trainer and a lean replay buffer.

Imports are lazy so that ``from fastdqn import ReplayBuffer`` pulls in NumPy and Numba
only, not torch or envpool.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ReplayBuffer": "fastdqn.replay.buffer",
    "ReplayBatch": "fastdqn.replay.buffer",
    "PrioritizedReplayBuffer": "fastdqn.replay.prioritized",
    "PrioritizedBatch": "fastdqn.replay.prioritized",
    "Learner": "fastdqn.learn.learner",
    "NatureCNN": "fastdqn.learn.networks",
    "MLP": "fastdqn.learn.networks",
    "FastDQNError": "fastdqn.errors",
    "ConfigError": "fastdqn.errors",
    "ReplayError": "fastdqn.errors",
    "ReplayStateError": "fastdqn.errors",
    "CheckpointError": "fastdqn.errors",
    "BatchError": "fastdqn.errors",
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
