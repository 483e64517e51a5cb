"""The trainer's loop, against the loops it replaces.

Group ``train.collect``: raw EnvPool stepping with random actions (the ceiling) beside the
trainer with learning off and epsilon 1 (the pure cost of the loop and of storing).
Group ``train.loop``: the naive DQN loop (``fastdqn.tools.bench.baselines.NaiveDQNLoop``: per-step
tensor conversion, NumPy full-stack buffer, eager update) beside the trainer with its
compiled learner, both past ``learning_starts`` at CleanRL's replay ratio (one update per
4 env steps), epsilon 0.05.

Timed runs use Breakout-v5 with 8 envs; under ``--benchmark-disable`` CartPole-v1 with
tiny sizes, so CI only checks that the suite runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn.tools.bench.baselines import NaiveDQNLoop
from fastdqn.run.config import TrainConfig
from fastdqn.run.envs import env_info, make_envs
from fastdqn.learn.learner import Learner
from fastdqn.run.build import build_network
from fastdqn.replay.buffer import ReplayBuffer
from fastdqn.run.trainer import Trainer
from benchutil import record_rate

NUM_ENVS = 8
EPSILON = 0.05


@pytest.fixture(scope="module")
def setting(full_size) -> dict:
    if full_size:
        return dict(env_id="Breakout-v5", steps=300, train_steps=25, capacity=20_000, learning_starts=4_000,
                    compile=True)
    return dict(env_id="CartPole-v1", steps=10, train_steps=4, capacity=1_000, learning_starts=200,
                compile=False)


def config(setting, info, **overrides) -> TrainConfig:
    values = dict(env_id=setting["env_id"], num_envs=NUM_ENVS, buffer_size=setting["capacity"], batch_size=32,
                  train_frequency=4, target_network_frequency=1000, double_dqn=True, cuda=False,
                  compile=False, max_episode_steps=info.max_episode_steps, eval_episodes=0,
                  checkpoint_every=0, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def components(setting, compile: bool = False):
    info = env_info(setting["env_id"])
    buffer = ReplayBuffer(setting["capacity"], info.obs_shape, NUM_ENVS, obs_dtype=info.obs_dtype,
                          frame_stack=info.frame_stack, seed=0)
    learner = Learner(build_network(info), compile=compile, batch_size=32, double_dqn=True, seed=0)
    return info, buffer, learner


@pytest.mark.benchmark(group="train.collect")
def test_raw_env_random(benchmark, setting):
    info = env_info(setting["env_id"])
    actions = np.random.default_rng(0).integers(0, info.num_actions, size=(setting["steps"], NUM_ENVS))
    holder = {}

    def setup():
        holder["envs"] = make_envs(setting["env_id"], NUM_ENVS, seed=0)

    def run():
        envs = holder["envs"]
        envs.reset()
        for a in actions:
            envs.step(a)

    benchmark.pedantic(run, setup=setup, rounds=5, warmup_rounds=1)
    record_rate(benchmark, actions.size, "env_steps_per_s")


@pytest.mark.benchmark(group="train.collect")
def test_trainer_collect_random(benchmark, setting):
    info, buffer, learner = components(setting)
    steps = setting["steps"] * NUM_ENVS
    cfg = config(setting, info, total_timesteps=steps, start_e=1.0, end_e=1.0, learning_starts=10 * steps)
    holder = {}

    def setup():
        holder["trainer"] = Trainer(make_envs(setting["env_id"], NUM_ENVS, seed=0), buffer, learner, cfg)

    benchmark.pedantic(lambda: holder["trainer"].train(), setup=setup, rounds=5, warmup_rounds=1)
    record_rate(benchmark, steps, "env_steps_per_s")
    assert holder["trainer"].global_step >= steps and learner.num_updates == 0
    assert len(buffer) > 0


@pytest.mark.benchmark(group="train.loop")
def test_naive_loop(benchmark, setting):
    info = env_info(setting["env_id"])
    loop = NaiveDQNLoop(make_envs(setting["env_id"], NUM_ENVS, seed=0), build_network(info),
                        buffer_size=setting["capacity"], learning_starts=setting["learning_starts"],
                        epsilon=1.0, target_update_interval=250)
    loop.run(-(-setting["learning_starts"] // NUM_ENVS))
    loop.update()
    loop.epsilon = EPSILON
    before = loop.num_updates
    benchmark.pedantic(loop.run, args=(setting["train_steps"],), rounds=3)
    record_rate(benchmark, setting["train_steps"] * NUM_ENVS, "env_steps_per_s")
    assert loop.num_updates > before


@pytest.mark.benchmark(group="train.loop")
def test_trainer_loop(benchmark, setting):
    info, buffer, learner = components(setting, compile=setting["compile"])
    fill = -(-setting["learning_starts"] // NUM_ENVS) * NUM_ENVS
    trainer = Trainer(make_envs(setting["env_id"], NUM_ENVS, seed=0), buffer, learner,
                      config(setting, info, total_timesteps=fill, start_e=1.0, end_e=1.0, learning_starts=fill))
    trainer.train()
    learner.update(buffer.sample(32))  # compiles (untimed) when timed runs use the compiled update
    holder = {"state": trainer.state_dict()}
    before = learner.num_updates

    def setup():
        state = holder["state"]
        cfg = config(setting, info, total_timesteps=state["global_step"] + setting["train_steps"] * NUM_ENVS,
                     start_e=EPSILON, end_e=EPSILON, learning_starts=fill)
        trainer = Trainer(make_envs(setting["env_id"], NUM_ENVS, seed=0), buffer, learner, cfg)
        trainer.load_state_dict(state, buffer_restored=True)
        holder["trainer"] = trainer

    def run():
        holder["trainer"].train()
        holder["state"] = holder["trainer"].state_dict()

    benchmark.pedantic(run, setup=setup, rounds=3)
    record_rate(benchmark, setting["train_steps"] * NUM_ENVS, "env_steps_per_s")
    assert learner.num_updates > before
