"""The replay pipeline: uniform and prioritized replay behind the same calls, TD errors
written back one update late, and its state carrying the drawn batch over a save and load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdqn import PrioritizedReplayBuffer, ReplayBuffer
from fastdqn.errors import ConfigError
from fastdqn.pipeline.replay_pipeline import ReplayPipeline
from test_replay_window import FRAME, K, stamped_stream

E, B = 2, 6


def buffer(prioritized: bool, seed: int = 1):
    kind = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    return kind(E * 40, (K, *FRAME), E, frame_stack=K, seed=seed)


def td_error(batch) -> torch.Tensor:
    """A stand-in |TD error| that differs per transition: its id."""
    return torch.from_numpy(np.asarray(batch.index, np.float32) % 7 + 0.5)


def run(pipe: ReplayPipeline, stream: list[dict], *, report: bool = True) -> list[np.ndarray]:
    """Store the stream, taking a batch (and reporting its errors) every other step; the ids taken."""
    taken = []
    for t, kwargs in enumerate(stream):
        pipe.store(**kwargs)
        if t % 2 and len(pipe.buffer) >= B:
            batch = pipe.next_batch()
            taken.append(np.array(batch.index))
            if report:
                pipe.report(batch, td_error(batch))
    return taken


def test_uniform_report_changes_nothing_and_never_asks_beta():
    stream, _ = stamped_stream(E, 60, seed=3)

    def beta():
        raise AssertionError("uniform replay has no importance weights")

    with ReplayPipeline(buffer(False), B, beta=beta) as pipe:
        reported = run(pipe, stream)
    with ReplayPipeline(buffer(False), B) as pipe:
        plain = run(pipe, stream, report=False)
    assert len(plain) > 20
    for a, b in zip(reported, plain):
        np.testing.assert_array_equal(a, b)
    assert pipe.state_dict()["pending_priorities"] is None


def test_prioritized_report_writes_each_batch_errors_at_the_next_report():
    stream, _ = stamped_stream(E, 60, seed=4)
    buf = buffer(True)
    written = []
    update = buf.update_priorities

    def recorded(index, priorities):
        written.append((np.array(index), np.array(priorities)))
        return update(index, priorities)

    buf.update_priorities = recorded
    betas = []
    with ReplayPipeline(buf, B, beta=lambda: betas.append(0.5) or 0.5) as pipe:
        batches, errors = [], []
        for t, kwargs in enumerate(stream):
            pipe.store(**kwargs)
            if t % 2 and len(buf) >= B:
                batch = pipe.next_batch()
                batches.append(np.array(batch.index))
                errors.append(td_error(batch).numpy())
                pipe.report(batch, td_error(batch))
                assert len(written) == len(batches) - 1  # the errors of this batch are held
        held = pipe.state_dict()["pending_priorities"]
    assert len(betas) == len(batches) + 1  # one draw per batch, and the one drawn ahead
    for (index, priorities), want_index, want in zip(written, batches, errors):
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_array_equal(priorities, want)
    np.testing.assert_array_equal(held["index"].numpy(), batches[-1])
    np.testing.assert_array_equal(held["td_error"].numpy(), errors[-1])


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("prefetch", [False, True])
def test_state_dict_round_trip_continues_as_an_uninterrupted_run(prioritized, prefetch, tmp_path):
    stream, _ = stamped_stream(E, 120, seed=5)
    first, rest = stream[:60], stream[60:]
    args = dict(prefetch=prefetch, beta=(lambda: 0.6) if prioritized else None)

    with ReplayPipeline(buffer(prioritized), B, **args) as pipe:
        run(pipe, first)
        uninterrupted = run(pipe, rest)

    buf = buffer(prioritized)
    with ReplayPipeline(buf, B, **args) as pipe:
        run(pipe, first)
        state = pipe.state_dict()
        buf.save(tmp_path / "replay.bin")  # as a checkpoint does: after the state (no fill running)
    assert state["next_batch"]["index"].shape == (B,)
    assert (state["next_batch"]["weight"] is not None) == prioritized
    assert (state["pending_priorities"] is not None) == prioritized

    kind = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    resumed = ReplayPipeline(kind.load(tmp_path / "replay.bin"), B, **args)
    resumed.load_state_dict(state)
    with resumed:
        continued = run(resumed, rest)
    assert len(continued) == len(uninterrupted) > 20
    for a, b in zip(continued, uninterrupted):
        np.testing.assert_array_equal(a, b)


def test_close_keeps_the_drawn_batch_for_the_next_use():
    stream, _ = stamped_stream(E, 80, seed=6)
    with ReplayPipeline(buffer(False), B) as straight:
        run(straight, stream[:40])
        want = [np.array(straight.next_batch().index) for _ in range(3)]
    with ReplayPipeline(buffer(False), B) as pipe:
        run(pipe, stream[:40])
    drawn = pipe.state_dict()["next_batch"]["index"].numpy()  # kept after close
    np.testing.assert_array_equal(drawn, want[0])
    with pipe:
        got = [np.array(pipe.next_batch().index) for _ in range(3)]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_a_drawn_batch_of_another_size_is_dropped():
    stream, _ = stamped_stream(E, 40, seed=7)
    buf = buffer(False)
    with ReplayPipeline(buf, B) as pipe:
        run(pipe, stream)
        state = pipe.state_dict()
    other = ReplayPipeline(buf, B + 1)
    other.load_state_dict(state)
    assert other.state_dict()["next_batch"] is None
    other.close()


def test_bad_batch_size_is_refused():
    with pytest.raises(ConfigError, match="batch_size: expected an int >= 1"):
        ReplayPipeline(buffer(False), 0)


def test_a_trainer_handed_a_pipeline_trains_as_with_its_own():
    from fastdqn import MLP, Learner
    from fastdqn.run.config import TrainConfig
    from fastdqn.run.envs import env_info, make_envs
    from fastdqn.run.trainer import Trainer

    info = env_info("CartPole-v1")
    config = TrainConfig(env_id="CartPole-v1", total_timesteps=400, num_envs=4, buffer_size=1000, batch_size=16,
                         learning_starts=64, train_frequency=2, compile=False, target_network_frequency=8,
                         eval_episodes=0, seed=3)

    def train(handed: bool) -> Learner:
        torch.manual_seed(0)
        buf = ReplayBuffer(1000, info.obs_shape, 4, obs_dtype=info.obs_dtype, seed=3)
        learner = Learner(MLP(4, 2), compile=False, target_update_interval=4, seed=3)
        pipeline = ReplayPipeline(buf, 16) if handed else None
        Trainer(make_envs("CartPole-v1", 4, seed=3), buf, learner, config, pipeline=pipeline).train()
        return learner

    own, handed = train(False), train(True)
    assert own.num_updates == handed.num_updates > 100
    for a, b in zip(own.online.parameters(), handed.online.parameters()):
        assert torch.equal(a, b)
