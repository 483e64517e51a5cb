"""DevicePrioritizedReplayBuffer with its frames in a torch CPU tensor. The host
PrioritizedReplayBuffer is the reference: the same seed, stream and priority updates must
give the same batches bit for bit, the same files, and the same training run."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdqn.replay import DevicePrioritizedReplayBuffer
from fastdqn.pipeline.feeder import Feeder
from fastdqn.replay import PrioritizedReplayBuffer
from test_device_replay import assert_identical, drawn_stream, loaded_both_ways, stream

NO_JIT = numba.config.DISABLE_JIT


def pair(capacity, shape, num_envs, **kw):
    return (PrioritizedReplayBuffer(capacity, shape, num_envs, seed=5, **kw),
            DevicePrioritizedReplayBuffer(capacity, shape, num_envs, device="cpu", seed=5, **kw))


def compare(ref, dev, B: int, beta: float, priorities: np.ndarray) -> None:
    """Draws, gathers and window batches of both buffers agree, then both get the same
    priority update for the ids drawn."""
    assert len(dev) == len(ref)
    assert dev.total_priority() == ref.total_priority()
    if len(ref) < B:
        return
    got = dev.sample(B, beta=beta)
    expected = ref.sample(B, beta=beta)
    assert isinstance(got.weight, torch.Tensor) and isinstance(got.index, np.ndarray)
    assert_identical(expected, got)
    assert_identical(ref.sample(B, out=ref.make_batch(B), beta=beta),
                     dev.sample(B, out=dev.make_batch(B), beta=beta))
    assert_identical(ref.gather(expected.index), dev.gather(expected.index))
    if ref.window_batches:
        assert_identical(ref.sample(B, out=ref.make_batch(B, window=True), beta=beta),
                         dev.sample(B, out=dev.make_batch(B, window=True), beta=beta))
    assert ref.update_priorities(expected.index, priorities[:B]) == \
        dev.update_priorities(got.index, priorities[:B])


@settings(max_examples=6 if NO_JIT else 40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), k=st.integers(1, 4), n=st.integers(1, 4),
       dtype=st.sampled_from([np.uint8, np.float32]))
def test_streams_give_the_host_buffers_batches(data, k, n, dtype):
    geometry, dtype, B, adds = drawn_stream(data, k, dtype)
    ref, dev = pair(*geometry, obs_dtype=dtype, frame_stack=k, n_step=n, gamma=0.9, alpha=0.7)
    rng = np.random.default_rng(1)
    for kwargs in adds:
        ref.add(**kwargs)
        dev.add(**kwargs)
        compare(ref, dev, B, beta=float(rng.random()), priorities=rng.exponential(size=B))


def stream_pair(n_step=1, steps=60):
    ref, dev = pair(60, (4, 3, 4), 3, frame_stack=4, n_step=n_step, alpha=0.6)
    rng = np.random.default_rng(2)
    for t, kwargs in enumerate(stream(steps)):
        ref.add(**kwargs)
        dev.add(**kwargs)
        if len(ref) >= 8 and t % 3 == 0:
            compare(ref, dev, 8, beta=0.5, priorities=rng.exponential(size=8))
    return ref, dev


@pytest.mark.parametrize("n_step", [1, 3])
def test_one_file_format_whatever_the_device(tmp_path, n_step):
    ref, dev = stream_pair(n_step=n_step)
    # Each file loads onto either side; draws, priorities and later adds continue exactly.
    as_host, as_dev = loaded_both_ways(ref, dev, tmp_path)
    assert (as_dev.alpha, as_dev.eps, as_dev.max_priority) == (ref.alpha, ref.eps, ref.max_priority)
    rng = np.random.default_rng(4)
    for t, kwargs in enumerate(stream(90)):
        if t < 60:
            continue
        for buf in (ref, as_host, as_dev):
            buf.add(**kwargs)
        expected = ref.sample(8, beta=0.8)
        assert_identical(expected, host_batch_of(as_host.sample(8, beta=0.8)))
        assert_identical(expected, as_dev.sample(8, beta=0.8))
        priorities = rng.exponential(size=8)
        for buf in (ref, as_host, as_dev):
            buf.update_priorities(expected.index, priorities)
    np.testing.assert_array_equal(as_dev.priorities(expected.index), ref.priorities(expected.index))


def host_batch_of(batch):
    assert all(isinstance(x, np.ndarray) for x in batch)  # the host buffer's batch stays NumPy
    return batch


def test_repr_names_the_class_and_device():
    _, dev = pair(20, (4,), 1, obs_dtype=np.float32)
    assert repr(dev).startswith("DevicePrioritizedReplayBuffer(capacity=20,")
    assert repr(dev).endswith("alpha=0.6, eps=1e-06, len=0, device='cpu')")


def test_feeder_carries_the_drawn_batch_over_a_checkpoint():
    """drawn() hands back host arrays; restore_draw puts the weights on the device batch."""
    ref, dev = stream_pair()
    with Feeder(ref, 8, beta=lambda: 0.3) as a, Feeder(dev, 8, beta=lambda: 0.3) as b:
        assert_identical(a.next(), b.next())
        (ia, wa), (ib, wb) = a.drawn(), b.drawn()
        assert isinstance(wb, np.ndarray)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(wa, wb)
    with Feeder(dev, 8, beta=lambda: 0.3) as resumed:
        resumed.restore_draw(ib, wb)
        batch = resumed.next()
        np.testing.assert_array_equal(batch.index, ia)
        np.testing.assert_array_equal(batch.weight.numpy(), wa)


def test_training_run_is_the_host_buffers_run():
    """The trainer (Feeder draws with beta, priority write-back) with the frames in a torch
    tensor makes exactly the host prioritized buffer's run."""
    from test_prioritized_training import ClockEnvs, E, config, learner_for

    from fastdqn.run.trainer import Trainer

    c = config(checkpoint_every=0)

    def run(kind, **frames_on):
        torch.manual_seed(0)
        learner = learner_for(c)
        buffer = kind(c.buffer_size, (4,), E, obs_dtype=np.float32, n_step=c.n_step, alpha=c.per_alpha,
                      eps=c.per_eps, gamma=c.gamma, seed=c.seed, **frames_on)
        Trainer(ClockEnvs(), buffer, learner, c).train()
        return learner, buffer

    (host_learner, host_buf), (dev_learner, dev_buf) = run(PrioritizedReplayBuffer), \
        run(DevicePrioritizedReplayBuffer, device="cpu")
    assert host_learner.num_updates == dev_learner.num_updates > 300
    assert host_buf.max_priority == dev_buf.max_priority != 1.0  # priorities were written back
    assert host_buf.total_priority() == dev_buf.total_priority()
    for (name, a), b in zip(host_learner.online.state_dict().items(), dev_learner.online.state_dict().values()):
        assert torch.equal(a, b), name
