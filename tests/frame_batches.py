"""A random batch of uint8 NatureCNN inputs, for the learner tests on CPU and CUDA."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def frame_batch(rng: np.random.Generator, size: int, terminated: np.ndarray, num_actions: int = 4,
                frame_stack: int = 4) -> SimpleNamespace:
    shape = (size, frame_stack, 84, 84)
    return SimpleNamespace(
        obs=rng.integers(0, 256, shape, dtype=np.uint8),
        next_obs=rng.integers(0, 256, shape, dtype=np.uint8),
        action=rng.integers(0, num_actions, size), reward=rng.standard_normal(size).astype(np.float32),
        terminated=terminated)
