"""The training configuration: one frozen dataclass, presets by kind of environment.

Flag names and units follow CleanRL's ``dqn_atari.py``: ``target_network_frequency`` and
``train_frequency`` count env steps. The learner counts updates, so its target-copy
interval is ``target_network_frequency // train_frequency`` updates (the two must divide).

Every field's metadata holds its one-line help; ``cli.py`` turns the fields into flags.
The dataclass holds concrete values only: the command line resolves "not given" to the
preset of the environment's kind before building it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fastdqn.errors import ConfigError
from fastdqn.util.checks import check_flag, check_int, check_number, fail, is_int

ATARI = "atari"
VECTOR = "vector"

CLEANRL = "cleanrl"
MACHADO = "machado"
EVAL_PROTOCOLS = (CLEANRL, MACHADO)
"""Evaluation protocols (``fastdqn.run.protocols`` says what each one sets)."""

SEED_LIMIT = 2**31
"""Seeds are ints in [0, SEED_LIMIT): EnvPool takes int32 seeds only."""


def _f(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults are CleanRL's dqn_atari.py."""

    env_id: str = _f("Breakout-v5", "EnvPool task id, e.g. Breakout-v5 or CartPole-v1")
    seed: int = _f(1, "seed of the envs, the replay sampler, exploration and the network init")
    total_timesteps: int = _f(10_000_000, "env steps to train for (summed over all envs)")
    learning_rate: float = _f(1e-4, "Adam learning rate")
    anneal_lr: bool = _f(False, "decay the learning rate linearly to 0 over total-timesteps")
    num_envs: int = _f(8, "parallel EnvPool envs")
    buffer_size: int = _f(1_000_000, "replay capacity in transitions")
    gamma: float = _f(0.99, "discount factor")
    target_network_frequency: int = _f(
        1000, "env steps between target-network copies (learner copies every this/train-frequency updates)"
    )
    batch_size: int = _f(32, "transitions per gradient update")
    start_e: float = _f(1.0, "exploration epsilon at the start")
    end_e: float = _f(0.01, "exploration epsilon at the end of the decay")
    exploration_fraction: float = _f(0.10, "fraction of total-timesteps over which epsilon decays linearly")
    learning_starts: int = _f(80_000, "env steps of experience before learning starts")
    train_frequency: int = _f(4, "env steps per gradient update (any num-envs: updates per env step stay 1/this)")
    cuda: bool = _f(False, "train on the GPU (default: if one is available)")
    replay_device: str = _f(
        "auto", "where the replay frames live: cuda (GPU memory), cpu (host RAM) or auto (the GPU when "
        "training on CUDA and they fit with room for the networks, else the host)",
        choices=("auto", "cpu", "cuda"),
    )
    compile: bool = _f(True, "torch.compile the update step")
    prefetch: bool = _f(True, "sample the next batch in a background thread while the learner updates")
    torch_threads: int = _f(0, "CPU threads for torch (0: torch's default)")
    loss: str = _f("mse", "TD loss: mse (CleanRL) or huber", choices=("mse", "huber"))
    double_dqn: bool = _f(True, "use Double DQN targets (--no-double-dqn: Nature DQN's max target, as CleanRL)")
    dueling: bool = _f(False, "dueling network: value and advantage streams, Q = V + A - mean A (Wang et al. 2016)")
    n_step: int = _f(1, "n-step targets: bootstrap after n steps from the discounted sum of their rewards "
                        "(1: one-step; Rainbow 3)")
    prioritized: bool = _f(False, "prioritized replay: draw transitions in proportion to (|TD error| + per-eps) "
                                  "** per-alpha, with importance weights (Schaul et al. 2016)")
    per_alpha: float = _f(0.5, "prioritized replay's priority exponent alpha (0: uniform draws)")
    per_beta_start: float = _f(0.4, "prioritized replay's importance-weight exponent beta at step 0; it moves "
                                    "linearly to per-beta-end over total-timesteps")
    per_beta_end: float = _f(1.0, "beta at total-timesteps (1: the weights fully correct the sampling bias)")
    per_eps: float = _f(1e-6, "added to |TD error| before the exponent, so every transition keeps a chance")
    adam_eps: float = _f(1e-8, "Adam's epsilon (torch's default; Rainbow 1.5e-4)")
    max_grad_norm: float = _f(0.0, "clip the gradient norm to this (0: no clipping)")
    hidden: tuple[int, ...] = _f((120, 84), "MLP hidden widths for vector-observation envs, e.g. 120,84")
    sticky_actions: float = _f(0.0, "EnvPool repeat_action_probability (Atari only; 0.25 for the v5 protocol)")
    env_threads: int = _f(0, "EnvPool worker threads (0: EnvPool's choice, one per env up to the CPU count)")
    async_envs: bool = _f(False, "EnvPool async mode: step the first env-batch-size envs that are ready")
    env_batch_size: int = _f(0, "envs per async batch (0: num-envs / 2); ignored without --async-envs")
    max_episode_steps: int = _f(
        27_000, "agent steps after which an episode is truncated (default: the env's own limit, Atari 27000)"
    )
    eval_every: int = _f(0, "env steps between evaluations on separate envs (0: only at the end)")
    eval_episodes: int = _f(10, "full games per evaluation (0: no evaluation)")
    eval_epsilon: float = _f(0.05, "epsilon during evaluation (cleanrl protocol; machado plays at 0.01)")
    eval_protocol: str = _f(
        CLEANRL, "evaluation protocol: cleanrl (the run's own env settings, --eval-epsilon) or machado "
        "(Machado et al. 2018, Atari only: sticky actions 0.25, no no-op starts, games capped at 108,000 "
        "frames, epsilon 0.01; docs/evaluation.md)", choices=EVAL_PROTOCOLS,
    )
    noop_starts: int = _f(30, "up to this many random no-op actions at the start of each Atari game, in "
                              "training and cleanrl evaluation (Nature DQN: 30; 0: none)")
    capture_video: bool = _f(False, "record each evaluation's first env as RUN_DIR/videos/eval-STEP.mp4 "
                                    "(needs pip install 'fastdqn[video]')")
    checkpoint_every: int = _f(500_000, "env steps between checkpoints (0: only at the end and on a signal)")
    save_buffer: bool = _f(False, "also save the replay buffer with each checkpoint (large for Atari)")
    log_every: int = _f(10_000, "env steps between td_loss / q_values / SPS records")
    run_dir: str = _f("", "output folder (default: runs/<env>__<seed>__<unix time>)")
    progress: bool = _f(True, "show a progress bar (only on a terminal)")
    track: bool = _f(False, "also log the scalars to Weights & Biases, under the TensorBoard tags "
                            "(pip install 'fastdqn[track]'; WANDB_MODE=offline writes the run locally)")
    wandb_project_name: str = _f("fastdqn", "Weights & Biases project of --track")
    wandb_entity: str = _f("", "Weights & Biases user or team of --track (default: your default entity)")
    actors: int = _f(0, "Ray actors that step envs (--num-envs each) and act with a CPU copy of the network, "
                        "feeding one learner (0: one process, no Ray; docs/actors.md)")
    address: str = _f("", "Ray cluster the actors run on: HOST:PORT of its head or auto (default: a local Ray "
                          "instance on this machine); with --actors only")
    weight_sync_every: int = _f(100, "learner updates between sending the network's weights to the actors")
    actor_chunk_steps: int = _f(16, "vector steps an actor sends per chunk (rows: this x env batch)")
    apex_epsilon: float = _f(0.4, "with --actors N > 1, actor i explores with apex-epsilon ** (1 + apex-alpha * "
                                  "i / (N - 1)) (Ape-X); --actors 1 uses the run's epsilon schedule")
    apex_alpha: float = _f(7.0, "the exponent's spread across actors in the Ape-X epsilons")
    ratio_tolerance: float = _f(0.1, "with --actors: updates per env step held at 1/train-frequency within "
                                     "this fraction, the faster side waiting for the slower")
    free_running: bool = _f(False, "with --actors: no rate limit; actors step and the learner updates as "
                                   "fast as each can (Ape-X's original)")
    actor_priorities: bool = _f(False, "with --actors and --prioritized: actors compute each new transition's "
                                       "initial priority |TD| with their network copy (Ape-X) instead of the "
                                       "buffer's running maximum")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                check_flag(f"--{_flag(f.name)}", value)
            if f.type == "str" and not isinstance(value, str):
                raise ConfigError(f"--{_flag(f.name)}: expected a string, got {value!r}")
            if value not in f.metadata.get("choices", (value,)):
                fail(f"--{_flag(f.name)}", f"one of {', '.join(f.metadata['choices'])}", value)
        positive_ints = ("total_timesteps", "num_envs", "buffer_size", "target_network_frequency",
                         "batch_size", "train_frequency", "max_episode_steps", "log_every")
        for name in positive_ints:
            check_int(f"--{_flag(name)}", getattr(self, name), minimum=1)
        check_int("--weight-sync-every", self.weight_sync_every, minimum=1)
        check_int("--actor-chunk-steps", self.actor_chunk_steps, minimum=1)
        for name in ("torch_threads", "env_threads", "learning_starts", "env_batch_size", "eval_every", "eval_episodes",
                     "checkpoint_every", "noop_starts", "actors"):
            check_int(f"--{_flag(name)}", getattr(self, name), minimum=0)
        check_seed("--seed", self.seed)
        check_number("--learning-rate", self.learning_rate, 0, low_open=True)
        for name in ("gamma", "start_e", "end_e", "eval_epsilon", "sticky_actions"):
            check_number(f"--{_flag(name)}", getattr(self, name), 0, 1)
        check_number("--exploration-fraction", self.exploration_fraction, 0, 1, low_open=True)
        if self.exploration_steps < 1:
            raise ConfigError(f"--exploration-fraction {self.exploration_fraction!r}: epsilon would decay over "
                              f"{self.exploration_steps!r} of {self.total_timesteps} steps; expected at least 1 "
                              f"step, so at least {1 / self.total_timesteps!r}")
        check_number("--max-grad-norm", self.max_grad_norm, 0)
        check_number("--apex-epsilon", self.apex_epsilon, 0, 1)
        check_number("--apex-alpha", self.apex_alpha, 0)
        check_number("--ratio-tolerance", self.ratio_tolerance, 0, 1, low_open=True)
        if self.address and not self.actors:
            raise ConfigError(f"--address {self.address}: only actors run on a Ray cluster; pass --actors N "
                              "or drop --address")
        if self.actor_priorities and not (self.actors and self.prioritized and self.n_step == 1):
            raise ConfigError("--actor-priorities: needs --actors N, --prioritized and --n-step 1 (actors "
                              "compute one-step TD errors); add them or drop --actor-priorities")
        check_int("--n-step", self.n_step, minimum=1)
        check_number("--per-alpha", self.per_alpha, 0)
        for name in ("per_beta_start", "per_beta_end"):
            check_number(f"--{_flag(name)}", getattr(self, name), 0, 1)
        for name in ("per_eps", "adam_eps"):
            check_number(f"--{_flag(name)}", getattr(self, name), 0, low_open=True)
        if self.capture_video and not self.eval_episodes:
            raise ConfigError("--capture-video: it records the evaluation games, and --eval-episodes is 0; "
                              "set --eval-episodes to at least 1 or drop --capture-video")
        if self.track and not self.wandb_project_name:
            raise ConfigError("--wandb-project-name: --track needs a project name, got ''; pass a name or drop it "
                              "for the default 'fastdqn'")
        if self.replay_device == "cuda" and not self.cuda:
            raise ConfigError("--replay-device cuda: the learner runs on the CPU; pass --cuda, or "
                              "--replay-device cpu")
        if not isinstance(self.hidden, tuple) or not self.hidden or any(not is_int(w) or w < 1 for w in self.hidden):
            raise ConfigError(f"--hidden: expected positive layer widths like 120,84, got {self.hidden!r}")
        if self.batch_size > self.buffer_size:
            raise ConfigError(f"--batch-size {self.batch_size} is larger than --buffer-size {self.buffer_size}; "
                              "lower the batch size or raise the buffer size")
        if self.learning_starts < self.batch_size:
            raise ConfigError(f"--learning-starts {self.learning_starts} is smaller than --batch-size "
                              f"{self.batch_size}; set --learning-starts to at least {self.batch_size}")
        if self.target_network_frequency % self.train_frequency:
            raise ConfigError(f"--target-network-frequency {self.target_network_frequency} is not a multiple of "
                              f"--train-frequency {self.train_frequency} (the target is copied every "
                              "target-network-frequency / train-frequency updates); pick a multiple")
        if self.async_envs and not 1 <= self.env_batch_size < self.num_envs:
            raise ConfigError(f"--env-batch-size: async mode needs 1 <= env-batch-size < num-envs "
                              f"({self.num_envs}), got {self.env_batch_size}; raise --num-envs or lower "
                              "--env-batch-size")

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    @property
    def replay_envs(self) -> int:
        """Envs the replay buffer holds: every actor's (env ids [i * num_envs, (i + 1) * num_envs)
        are actor i's), or the one loop's."""
        return self.num_envs * max(self.actors, 1)

    @property
    def target_update_interval(self) -> int:
        """Learner updates between target copies (CleanRL's env-step unit converted)."""
        return self.target_network_frequency // self.train_frequency

    @property
    def env_batch(self) -> int:
        """Envs returned by one EnvPool recv(): all of them unless async."""
        return self.env_batch_size if self.async_envs else self.num_envs

    @property
    def exploration_steps(self) -> float:
        return self.exploration_fraction * self.total_timesteps

    def per_beta(self, global_step: int) -> float:
        """Prioritized replay's beta at ``global_step``: linear from per-beta-start at step 0 to
        per-beta-end at total-timesteps (Schaul et al. 2016 anneal it over the whole run), then flat."""
        return linear_schedule(self.per_beta_start, self.per_beta_end, self.total_timesteps, global_step)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The config ``to_dict`` returned (e.g. read back from a file), checked like any other:
        every value's type and range. Fields it lacks take their defaults."""
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ConfigError(f"expected a dict of field names to values, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown fields {unknown}; was it written by another fastdqn version?")
        data = dict(data)
        if "hidden" in data:
            if not isinstance(data["hidden"], (list, tuple)):
                raise ConfigError(f"--hidden: expected a list of positive layer widths, got {data['hidden']!r}")
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)


# The field defaults are CleanRL dqn_atari.py's hyperparameters, except that fastdqn
# trains with Double DQN targets (van Hasselt et al. 2016) unless --no-double-dqn.
ATARI_PRESET: dict = {}

# Learns CartPole-v1 (greedy mean >= 475 over 10 games) within 100k env steps in about a
# minute on a laptop CPU; see tests/test_trainer.py. Without --anneal-lr the greedy policy
# keeps flipping between ~500 and ~100 from one 10k-step evaluation to the next (measured);
# decaying the learning rate to 0 lets it settle on the last good policy. A tiny MLP on CPU gains nothing from
# torch.compile (measured: compile time dominates a 1-minute run), so it is off; and from
# several torch threads it loses (measured on 2 cores: 1.3 ms per update with one thread,
# up to 48 ms with two while EnvPool's threads compete), so it gets one.
VECTOR_PRESET: dict = dict(
    total_timesteps=100_000,
    learning_rate=1e-3,
    anneal_lr=True,
    num_envs=4,
    buffer_size=100_000,
    target_network_frequency=256,
    batch_size=128,
    end_e=0.04,
    exploration_fraction=0.16,
    learning_starts=1000,
    train_frequency=2,
    compile=False,
    torch_threads=1,
    loss="mse",
    max_grad_norm=10.0,
    hidden=(120, 84),
    eval_epsilon=0.0,
    checkpoint_every=50_000,
    log_every=2000,
)

PRESETS = {ATARI: ATARI_PRESET, VECTOR: VECTOR_PRESET}

# Named combinations (``fastdqn train --preset NAME``), applied on top of the kind's preset;
# flags given on the command line override them. "rainbow-lite" is Rainbow (Hessel et al.
# 2018) without its distributional head and noisy nets: n-step targets, prioritized replay
# and a dueling network with Rainbow's 10M-step hyperparameters for them.
DOUBLE_DQN = "double-dqn"
RAINBOW_LITE = "rainbow-lite"
_RAINBOW_PARTS = dict(n_step=3, prioritized=True, dueling=True, per_alpha=0.5, per_beta_start=0.4,
                      per_beta_end=1.0)
NAMED_PRESETS: dict = {
    DOUBLE_DQN: {ATARI: {}, VECTOR: {}},
    RAINBOW_LITE: {
        ATARI: dict(_RAINBOW_PARTS, learning_rate=6.25e-5, adam_eps=1.5e-4),
        # CartPole keeps its own learning rate and Adam epsilon: Rainbow's are tuned for
        # Atari's 10M steps, not for a 100k-step MLP run. With the vector preset's mse loss and
        # eps 1e-6 the greedy policy at 100k steps scored 346, 500, 500 on seeds 1-3 (measured):
        # importance weights are normalised by the buffer's smallest priority, and near-zero TD
        # errors can make that tiny, so as beta nears 1 most weights, and the effective learning
        # rate, can shrink many times over. eps 0.01 bounds that ratio; the Huber loss keeps the
        # large errors that prioritized replay favours from dominating the gradient. Together:
        # 500 on seeds 1-5 (bench/RESULTS.md).
        VECTOR: dict(_RAINBOW_PARTS, loss="huber", per_eps=0.01),
    },
}


def make_config(kind: str, overrides: dict, *, cuda_available: bool, max_episode_steps: int,
                preset: str = DOUBLE_DQN) -> TrainConfig:
    """The preset of ``kind``, then the named ``preset`` (``NAMED_PRESETS``), with every non-None
    override applied.

    ``cuda`` defaults to ``cuda_available``; ``env_batch_size`` to ``num_envs // 2`` in async
    mode; ``max_episode_steps`` to the env's own limit (Atari 27,000, CartPole 500).
    """
    if kind not in PRESETS:
        raise ConfigError(f"kind: expected one of {sorted(PRESETS)}, got {kind!r}")
    if preset not in NAMED_PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(NAMED_PRESETS)}, got {preset!r}")
    values = dict(PRESETS[kind])
    values.update(NAMED_PRESETS[preset][kind])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if kind != ATARI and overrides.get("noop_starts") is not None:
        raise ConfigError(f"--noop-starts: only Atari tasks take it, {values.get('env_id')!r} is {kind}; drop the flag")
    check_protocol_flags(values.get("eval_protocol"), overrides)
    values.setdefault("cuda", cuda_available)
    values.setdefault("max_episode_steps", max_episode_steps)
    if values.get("async_envs") and not values.get("env_batch_size"):
        values["env_batch_size"] = max(1, values.get("num_envs", TrainConfig.num_envs) // 2)
    config = TrainConfig(**values)
    check_kind(config, kind)
    return config


def check_kind(config: TrainConfig, kind: str) -> None:
    """Refuse flags the env's kind does not take (checked before any env is made)."""
    if kind != ATARI and config.sticky_actions:
        raise ConfigError(f"--sticky-actions: only Atari tasks take it, {config.env_id!r} is {kind}; drop the flag")
    check_eval_protocol(config.eval_protocol, kind, config.env_id)


def check_protocol_flags(protocol: str | None, overrides: dict) -> None:
    """Refuse a flag the evaluation ``protocol`` fixes (machado plays at its own epsilon)."""
    if protocol == MACHADO and overrides.get("eval_epsilon") is not None:
        raise ConfigError("--eval-epsilon: the machado protocol plays at epsilon 0.01; drop --eval-epsilon or "
                          "use --eval-protocol cleanrl")


def check_eval_protocol(name: str, kind: str, env_id: str) -> None:
    """``ConfigError`` for an unknown protocol, or for machado on a task that is not Atari."""
    if name not in EVAL_PROTOCOLS:
        fail("--eval-protocol", f"one of {', '.join(EVAL_PROTOCOLS)}", name)
    if name == MACHADO and kind != ATARI:
        raise ConfigError(f"--eval-protocol machado: only Atari tasks take it (sticky actions, frame caps), "
                          f"{env_id!r} is {kind}; use --eval-protocol cleanrl")


def check_seed(flag: str, seed) -> None:
    """``ConfigError`` unless ``seed`` is an int in [0, SEED_LIMIT)."""
    if not is_int(seed) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{flag}: expected an int in [0, {SEED_LIMIT - 1}], got {seed!r}")


def derive_seed(seed: int, offset: int) -> int:
    """The seed ``offset`` places after ``seed``, wrapped into [0, SEED_LIMIT).

    Every seed fastdqn derives (resumed envs and buffer: seed + step; evaluation envs:
    seed + 1,000,003) goes through here, so a run at any valid seed can finish and resume.
    """
    return (seed + offset) % SEED_LIMIT


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """CleanRL's epsilon: linear from start_e to end_e over ``duration`` steps, then flat."""
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e) if end_e <= start_e else min(slope * t + start_e, end_e)


def _flag(name: str) -> str:
    return name.replace("_", "-")
