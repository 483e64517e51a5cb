"""Experiment tracking on Weights & Biases (``fastdqn train --track``, CleanRL's flag): every
scalar the ``RunLogger`` writes to TensorBoard goes to the W&B run too, under the same tag,
against ``global_step`` (W&B's own step counter cannot take several games ending at one
step, so each call is its own row and the charts use ``global_step`` as their x axis).

wandb is imported only when a run is tracked; ``WANDB_MODE=offline`` writes the run into
``WANDB_DIR`` (default ``./wandb``) for a later ``wandb sync``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastdqn.errors import ConfigError, DependencyError
from fastdqn.run.config import TrainConfig


def check_tracking(config: TrainConfig) -> None:
    """Refuse ``--track`` without wandb installed (checked before anything is built)."""
    if config.track and importlib.util.find_spec("wandb") is None:
        raise DependencyError("--track: Weights & Biases (wandb) is not installed; pip install 'fastdqn[track]', "
                              "or drop --track")


class WandbTracker:
    """One W&B run: ``log`` sends tagged scalars at a global step, ``finish`` ends the run."""

    def __init__(self, run) -> None:
        self.run = run

    @classmethod
    def start(cls, config: TrainConfig, run_dir: Path, resume_step: int | None) -> WandbTracker:
        """A W&B run named after the run folder, holding the full config. A resumed run is a new
        W&B run in the same group (its scalars start at the checkpoint's step)."""
        import wandb

        try:
            run = wandb.init(project=config.wandb_project_name, entity=config.wandb_entity or None,
                             name=run_dir.name, group=run_dir.name, config=config.to_dict(),
                             job_type="resume" if resume_step is not None else "train")
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else "no message"
            raise ConfigError(f"--track: Weights & Biases did not start ({type(exc).__name__}: {first}); log in "
                              "with wandb login, or set WANDB_MODE=offline to write the run locally") from None
        run.define_metric("global_step")
        run.define_metric("*", step_metric="global_step")
        return cls(run)

    def log(self, global_step: int, scalars: dict[str, float]) -> None:
        self.run.log({"global_step": global_step, **scalars})

    def finish(self) -> None:
        self.run.finish()
