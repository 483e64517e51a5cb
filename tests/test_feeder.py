"""The feeder: same batches with prefetch on or off, device slots guarded by events (checked
with stand-in events on the CPU), background errors surfaced, and a clean shutdown."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fastdqn import ReplayBatch, ReplayBuffer
from fastdqn.replay.batch import allocate_batch
from fastdqn.run.config import TrainConfig
from fastdqn.run.envs import env_info, make_envs
from fastdqn.errors import ConfigError
from fastdqn.pipeline.feeder import Feeder
from fastdqn.learn.learner import Learner
from fastdqn.learn.networks import MLP
from fastdqn.run.trainer import Trainer
from fastdqn.util.transfer import BlockLayout, StagedTransfer, numpy_view
from test_replay_window import FRAME, K, rows, stamped_stream


def feeder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fastdqn-feeder")]


def run_feeder(prefetch: bool, window: bool, steps: int = 150) -> list[ReplayBatch]:
    """Adds a stamped stream and takes one batch every other step (copies of them)."""
    stream, keys = stamped_stream(3, steps, seed=2)
    buf = ReplayBuffer(3 * 20, (K, *FRAME), 3, frame_stack=K, seed=9)
    out = []
    with Feeder(buf, 8, prefetch=prefetch, window=window) as feeder:
        for t, kwargs in enumerate(stream):
            feeder.wait_for_prefetch()
            buf.add(**kwargs)
            if t % 2 and len(buf) >= 8:
                batch = feeder.next()
                assert (batch.frames is not None) == window
                assert all(k in keys for k in rows(batch))
                out.append(ReplayBatch(*(np.array(x) for x in batch)))
    return out


def test_prefetch_on_and_off_give_the_same_batches():
    plain = run_feeder(prefetch=False, window=False)
    assert len(plain) > 50
    for prefetch, window in ((True, False), (True, True), (False, True)):
        other = run_feeder(prefetch, window)
        assert len(other) == len(plain)
        for a, b in zip(plain, other):
            for name in ReplayBatch._fields:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


class DeviceQueue:
    """Stand-in for a CUDA stream: copies run only when an event after them is waited on,
    and each records the bytes it delivered."""

    def __init__(self):
        self.ops, self.done, self.delivered = [], 0, []

    def copy(self, dst, src):
        self.ops.append((dst, src))

    def run_until(self, n):
        while self.done < n:
            dst, src = self.ops[self.done]
            dst[...] = src
            self.delivered.append(src.copy())
            self.done += 1

    def event(self):
        queue = self

        class Event:
            def record(self):
                self.mark = len(queue.ops)

            def synchronize(self):
                queue.run_until(self.mark)

        return Event()


def fake_transfer(buf, batch_size, queue, slots):
    def make(empty):
        return allocate_batch(batch_size, buf.obs_shape, buf.obs_dtype, window=True, empty=empty)

    return StagedTransfer(make, slots, pinned=lambda n: np.zeros(n, np.uint8),
                          device_block=lambda n: np.zeros(n, np.uint8), as_numpy=lambda b: b,
                          device_view=numpy_view, copy=queue.copy, event=queue.event), make


@pytest.mark.parametrize("slots", [2, 3])
def test_a_host_slot_is_refilled_only_after_its_copy_finished(slots, monkeypatch):
    stream, keys = stamped_stream(2, 60, seed=4)
    buf = ReplayBuffer(2 * 40, (K, *FRAME), 2, frame_stack=K, seed=1)
    for kwargs in stream:
        buf.add(**kwargs)

    def delivered_batches(skip_wait: bool):
        queue = DeviceQueue()
        transfer, make = fake_transfer(buf, 6, queue, slots)
        if skip_wait:
            monkeypatch.setattr(transfer, "ready", lambda slot: None)
        layout = BlockLayout()
        make(layout.take)
        with Feeder(buf, 6, transfer=transfer, prefetch=True) as feeder:
            expected = []
            for _ in range(10):
                batch = feeder.next()
                assert batch.obs.base is transfer.device.obs.base  # the one device batch
                feeder.wait_for_prefetch()  # no other sampling call beside the background copy
                expected.append(buf.gather(batch.index))  # the buffer is still: ground truth
        queue.run_until(len(queue.ops))
        got = [make(layout.carve(block, numpy_view)) for block in queue.delivered]
        return expected, got

    expected, got = delivered_batches(skip_wait=False)
    assert len(got) == 10
    for want, have in zip(expected, got):
        for name in ("obs", "next_obs", "action", "reward", "terminated", "index"):
            np.testing.assert_array_equal(getattr(have, name), getattr(want, name))
    # Without the wait, sampling overwrites blocks whose copy has not run: the check sees it.
    expected, got = delivered_batches(skip_wait=True)
    assert any(not np.array_equal(w.obs, h.obs) for w, h in zip(expected, got))


def test_a_fresh_send_lands_in_device_memory_that_later_sends_leave_alone():
    stream, _ = stamped_stream(2, 60, seed=3)
    buf = ReplayBuffer(2 * 40, (K, *FRAME), 2, frame_stack=K, seed=2)
    for kwargs in stream:
        buf.add(**kwargs)
    queue = DeviceQueue()
    transfer, _ = fake_transfer(buf, 6, queue, slots=1)
    buf.sample(6, out=transfer.host[0])
    fresh = transfer.send(0, fresh=True)
    want = buf.gather(fresh.index)
    for _ in range(2):
        transfer.ready(0)  # runs the queued copies
        buf.sample(6, out=transfer.host[0])
        transfer.send(0)
        transfer.send(0, fresh=True)
    queue.run_until(len(queue.ops))
    assert fresh.obs.base is not transfer.device.obs.base
    for name in ("obs", "next_obs", "action", "reward", "terminated"):
        np.testing.assert_array_equal(getattr(fresh, name), getattr(want, name))


def test_background_error_is_raised_in_the_caller_and_the_thread_stops(monkeypatch):
    stream, _ = stamped_stream(2, 40)
    buf = ReplayBuffer(80, (K, *FRAME), 2, frame_stack=K, seed=0)
    for kwargs in stream:
        buf.add(**kwargs)
    feeder = Feeder(buf, 4, prefetch=True)
    feeder.next()
    feeder.next()

    def broken(out):
        raise RuntimeError("sampler broke")

    monkeypatch.setattr(buf, "fill", broken)
    feeder.next()  # hands out the batch filled before; starts the broken fill
    with pytest.raises(RuntimeError, match="sampler broke"):
        feeder.next()
    feeder.close()
    assert not feeder_threads()


def test_trainer_stops_the_sampler_thread_on_error_and_at_the_end(monkeypatch):
    info = env_info("CartPole-v1")

    def trainer(total, prefetch=True):
        config = TrainConfig(env_id="CartPole-v1", total_timesteps=total, num_envs=4, buffer_size=2000,
                             batch_size=16, learning_starts=64, train_frequency=2, compile=False,
                             target_network_frequency=8, eval_episodes=0, seed=3, prefetch=prefetch)
        torch.manual_seed(0)
        buffer = ReplayBuffer(2000, info.obs_shape, 4, obs_dtype=info.obs_dtype, seed=3)
        learner = Learner(MLP(4, 2), compile=False, target_update_interval=4, seed=3)
        return Trainer(make_envs("CartPole-v1", 4, seed=3), buffer, learner, config)

    t = trainer(400)
    assert t.train() == 0 and not feeder_threads()
    t = trainer(400)
    calls = [0]
    update = t.learner.update

    def failing(batch):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt  # as Ctrl-C without the CLI's handler would
        return update(batch)

    monkeypatch.setattr(t.learner, "update", failing)
    with pytest.raises(KeyboardInterrupt):
        t.train()
    assert not feeder_threads()


def test_prefetch_on_and_off_give_the_same_training_run():
    info = env_info("CartPole-v1")

    def run(prefetch):
        config = TrainConfig(env_id="CartPole-v1", total_timesteps=800, num_envs=4, buffer_size=2000,
                             batch_size=16, learning_starts=100, train_frequency=2, compile=False,
                             target_network_frequency=8, eval_episodes=0, seed=3, prefetch=prefetch)
        torch.manual_seed(0)
        buffer = ReplayBuffer(2000, info.obs_shape, 4, obs_dtype=info.obs_dtype, seed=3)
        learner = Learner(MLP(4, 2), compile=False, target_update_interval=4, seed=3)
        Trainer(make_envs("CartPole-v1", 4, seed=3), buffer, learner, config).train()
        return learner

    on, off = run(True), run(False)
    assert on.num_updates == off.num_updates > 300
    for (name, a), b in zip(on.online.state_dict().items(), off.online.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.cuda
def test_cuda_feeder_hands_out_device_batches_equal_to_the_host_batches():
    stream, keys = stamped_stream(2, 80, seed=6)
    buf = ReplayBuffer(2 * 40, (K, *FRAME), 2, frame_stack=K, seed=1)
    for kwargs in stream:
        buf.add(**kwargs)
    with Feeder(buf, 8, device="cuda") as feeder:
        for _ in range(20):
            batch = feeder.next()
            assert batch.obs.is_cuda and batch.next_obs.is_cuda and batch.action.is_cuda
            want = buf.gather(batch.index)
            for name in ("obs", "next_obs", "action", "reward", "terminated"):
                np.testing.assert_array_equal(getattr(batch, name).cpu().numpy(), getattr(want, name))


@pytest.mark.cuda
def test_cuda_graph_learner_fed_by_the_feeder_equals_cpu_eager():
    class Frames(torch.nn.Module):
        num_actions = 3

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(K * FRAME[0] * FRAME[1], 3)

        def forward(self, x):
            return self.fc(x.float().flatten(1) / 255.0)

    stream, _ = stamped_stream(2, 80, seed=7)
    buf = ReplayBuffer(2 * 40, (K, *FRAME), 2, frame_stack=K, seed=2)
    for kwargs in stream:
        buf.add(**kwargs)
    torch.manual_seed(0)
    net = Frames()
    cpu = Learner(net, compile=False, target_update_interval=3)
    gpu = Learner(Frames().requires_grad_(False).requires_grad_(True), compile=True, device="cuda",
                  target_update_interval=3)
    gpu.load_state_dict(cpu.state_dict())
    with Feeder(buf, 8, device="cuda") as feeder:
        for _ in range(8):
            batch = feeder.next()
            want = float(cpu.update(buf.gather(batch.index))["td_loss"])
            assert float(gpu.update(batch)["td_loss"]) == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_prioritized_draws_take_beta_from_the_callable_once_per_draw():
    from fastdqn.replay import PrioritizedReplayBuffer

    stream, _ = stamped_stream(2, 60, seed=5)
    buf = PrioritizedReplayBuffer(2 * 40, (K, *FRAME), 2, frame_stack=K, seed=3)
    for kwargs in stream:
        buf.add(**kwargs)
    buf.update_priorities(buf.sample(16).index, np.linspace(0.1, 5.0, 16))  # unequal priorities
    betas = iter([0.0, 0.5, 1.0, 0.25])
    asked = []

    def beta():
        asked.append(next(betas))
        return asked[-1]

    with Feeder(buf, 8, prefetch=True, beta=beta) as feeder:
        for i in range(3):
            batch = feeder.next()
            feeder.wait_for_prefetch()
            assert len(asked) == i + 2  # one draw ahead: this batch used the beta asked one draw ago
            # gather's weights are those at beta = 1; at beta b they are that to the power b
            want = buf.gather(batch.index).weight.astype(np.float64) ** asked[i]
            np.testing.assert_allclose(batch.weight, want, rtol=1e-5)
    with pytest.raises(ConfigError, match="beta: only a prioritized buffer"):
        Feeder(ReplayBuffer(80, (K, *FRAME), 2, frame_stack=K), 8, beta=lambda: 0.5)


@pytest.mark.parametrize("prefetch", [True, False])
def test_a_restored_draw_is_handed_out_before_the_next_draw(prefetch, tmp_path):
    stream, _ = stamped_stream(2, 60, seed=8)
    buf = ReplayBuffer(2 * 40, (K, *FRAME), 2, frame_stack=K, seed=4)
    for kwargs in stream:
        buf.add(**kwargs)
    with Feeder(buf, 6, prefetch=prefetch) as feeder:
        feeder.next()
        index, weight = feeder.drawn()
        assert weight is None  # uniform replay has no weights
        buf.save(tmp_path / "replay.bin")  # as a checkpoint does: the sampler after the pending draw
        expected = [np.array(feeder.next().index) for _ in range(3)]
    with Feeder(ReplayBuffer.load(tmp_path / "replay.bin"), 6, prefetch=prefetch) as resumed:
        resumed.restore_draw(index)
        got = [np.array(resumed.next().index) for _ in range(3)]
        with pytest.raises(ConfigError, match="restore_draw: a batch is already drawn"):
            resumed.restore_draw(index)
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have, want)
