"""Evaluation protocols: the named sets of env and exploration settings a score is measured under.

``cleanrl`` is the run's own settings (CleanRL's evaluation: epsilon 0.05 unless set, full
games with no life-loss signal, the run's no-op starts, sticky-action probability and step
limit). ``machado`` follows Machado et al. 2018, "Revisiting the Arcade Learning Environment"
(JAIR 61), as Dopamine implements it and DreamerV2 (Hafner et al. 2021, appendix) states it:
sticky actions with probability 0.25, no random no-op starts (the sticky actions are the
stochasticity), full games with no life-loss signal, each game capped at 108,000 frames
(27,000 agent steps at frame skip 4), and scores reported beside the frames trained. Machado
et al. report the mean of the last 100 training games; a separate evaluation here plays at
epsilon 0.01, the final training epsilon of DQN in Dopamine's configuration of that setting
(``epsilon_train = 0.01`` in ``dqn.gin``). fastdqn keeps the minimal action set the network
was trained with (the paper also discusses the full 18-action set).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastdqn.run.config import ATARI, CLEANRL, MACHADO, TrainConfig, check_eval_protocol

FRAME_SKIP = 4
"""Emulator frames per agent step in fastdqn's Atari envs (``make_envs``)."""

MACHADO_STICKY = 0.25
MACHADO_MAX_FRAMES = 108_000
MACHADO_EPSILON = 0.01
NOOP_STARTS = 30
"""Nature DQN's random no-op starts: up to 30 no-op actions at the start of each game."""


@dataclass(frozen=True)
class EvalProtocol:
    """What an evaluation game is played under; ``settings()`` goes into every evaluation record."""

    name: str
    epsilon: float
    sticky_actions: float
    noop_starts: int
    max_episode_steps: int

    def settings(self) -> dict:
        return {"protocol": self.name, "epsilon": self.epsilon, "sticky_actions": self.sticky_actions,
                "noop_starts": self.noop_starts, "max_episode_steps": self.max_episode_steps}


def make_protocol(name: str, kind: str, env_id: str, *, epsilon: float, sticky_actions: float, noop_starts: int,
                  max_episode_steps: int) -> EvalProtocol:
    """The protocol ``name``: ``cleanrl`` takes the given settings, ``machado`` its own fixed ones."""
    check_eval_protocol(name, kind, env_id)
    if name == MACHADO:
        return EvalProtocol(MACHADO, MACHADO_EPSILON, MACHADO_STICKY, 0, MACHADO_MAX_FRAMES // FRAME_SKIP)
    if kind != ATARI:
        sticky_actions, noop_starts = 0.0, 0
    return EvalProtocol(CLEANRL, float(epsilon), float(sticky_actions), int(noop_starts), int(max_episode_steps))


def run_protocol(config: TrainConfig, kind: str) -> EvalProtocol:
    """The protocol a run's periodic evaluation plays under (``config.eval_protocol``)."""
    return make_protocol(config.eval_protocol, kind, config.env_id, epsilon=config.eval_epsilon,
                         sticky_actions=config.sticky_actions, noop_starts=config.noop_starts,
                         max_episode_steps=config.max_episode_steps)


def frames_trained(kind: str, global_step: int) -> int | None:
    """Emulator frames behind ``global_step`` agent steps (Atari), None for other tasks."""
    return global_step * FRAME_SKIP if kind == ATARI else None
