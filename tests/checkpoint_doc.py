"""A minimal well-formed checkpoint document, for tests that write checkpoints by hand."""

from __future__ import annotations

import torch

from fastdqn.run.config import TrainConfig


def trainer_state(step: int) -> dict:
    return {"global_step": step, "pending": 0, "learn_after": 0, "episodes": 0, "last_eval": None,
            "torch_rng": torch.get_rng_state(), "cuda_rng": None}


def document(step: int, learner: dict | None = None, **config) -> dict:
    """What ``Trainer.checkpoint`` hands to ``save_checkpoint``, for a CartPole run at ``step``."""
    return {"config": TrainConfig(env_id="CartPole-v1", **config).to_dict(),
            "learner": {} if learner is None else learner, "trainer": trainer_state(step), "obs_shape": (4,)}
