"""DeviceReplayBuffer with device="cpu": every batch field bit for bit equal to ReplayBuffer's
for the same seed and stream, one file format, the planning kernels against plain Python,
the memory preflight, and the Feeder/Learner taking its batches as they are."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdqn import MLP, Learner, ReplayBatch, ReplayBuffer, ReplayError
from fastdqn.replay import DeviceReplayBuffer, ReplaySpec, replay_bytes
from fastdqn.replay.device import check_device_memory
from fastdqn.errors import ConfigError, DeviceMemoryError, FastDQNError
from fastdqn.pipeline.feeder import Feeder
from fastdqn.kernels import device as kd
from test_replay import FakeEnvs, draw_step, obs_shape

NO_JIT = numba.config.DISABLE_JIT


def host(batch) -> ReplayBatch:
    """A batch's fields as NumPy arrays (device tensors copied to the host), same batch type."""
    return type(batch)(*(x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in batch))


def assert_identical(a, b) -> None:
    """Same batch type, fields, dtypes, shapes and bytes (NaN frames compare as bytes)."""
    a, b = host(a), host(b)
    assert type(a) is type(b)
    for name in type(a)._fields:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name


def pair(capacity, shape, num_envs, **kw):
    return (ReplayBuffer(capacity, shape, num_envs, seed=5, **kw),
            DeviceReplayBuffer(capacity, shape, num_envs, device="cpu", seed=5, **kw))


def compare(ref: ReplayBuffer, dev: DeviceReplayBuffer, B: int) -> None:
    assert len(dev) == len(ref)
    if len(ref) < B:
        return
    assert_identical(ref.sample(B), dev.sample(B))
    assert_identical(ref.sample(B, out=ref.make_batch(B)), dev.sample(B, out=dev.make_batch(B)))
    index = ref.sample(B).index
    dev.sample(B)  # keeps the two generators in step
    assert_identical(ref.gather(index), dev.gather(index))
    if ref.window_batches:
        got = dev.sample(B, out=dev.make_batch(B, window=True))
        assert_identical(ref.sample(B, out=ref.make_batch(B, window=True)), got)
        assert got.obs.data_ptr() + got.obs[0, 0].numel() == got.next_obs.data_ptr()  # one window


@settings(max_examples=8 if NO_JIT else 60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), k=st.integers(1, 4), n=st.integers(1, 4),
       dtype=st.sampled_from([np.uint8, np.float32]))
def test_streams_give_the_numpy_buffers_batches(data, k, n, dtype):
    geometry, dtype, B, adds = drawn_stream(data, k, dtype)
    ref, dev = pair(*geometry, obs_dtype=dtype, frame_stack=k, n_step=n, gamma=0.9)
    for kwargs in adds:
        ref.add(**kwargs)
        dev.add(**kwargs)
        compare(ref, dev, B)


def drawn_stream(data, k: int, dtype):
    """A stream drawn by hypothesis: the buffer's (capacity, obs_shape, num_envs), its obs
    dtype, a batch size, and the add arguments of each step (drawn as the steps are taken)."""
    if k > 1:
        dtype = np.uint8
    num_envs = data.draw(st.integers(1, 3), label="num_envs")
    capacity = data.draw(st.integers(num_envs * k, num_envs * (k + 8)), label="capacity")
    async_mode = data.draw(st.booleans(), label="async")
    B = data.draw(st.integers(1, 6), label="batch")

    def adds():
        envs = FakeEnvs(num_envs, k, dtype)
        rng = np.random.default_rng(0)
        for _ in range(data.draw(st.integers(1, 30), label="steps")):
            ids, obs, nxt, term, trunc, valid = draw_step(data, envs, num_envs, k, async_mode)
            valid = valid & np.array([data.draw(st.integers(0, 11), label="drop") != 0 for _ in ids])
            yield dict(obs=obs, next_obs=nxt, action=rng.integers(0, 6, len(ids)),
                       reward=rng.normal(size=len(ids)).astype(np.float32), terminated=term,
                       truncated=trunc, env_ids=np.array(ids) if async_mode else None, valid=valid)

    return (capacity, obs_shape(k, dtype), num_envs), dtype, B, adds()


def stream(steps: int):
    """Add arguments of an async 3-env stream with life losses, game overs, truncations,
    reset rows, colliding plain frames and skipped steps."""
    envs = FakeEnvs(3, 4, np.uint8)
    rng = np.random.default_rng(1)
    for t in range(steps):
        ids = [t % 3, (t + 1) % 3]
        rows = [envs.step(e, ("step", "life", "step", "over", "trunc", "skip")[(t + e) % 6], t % 7 == 0, t % 4)
                for e in ids]
        obs, nxt, term, trunc, valid = (np.array(c) for c in zip(*rows))
        yield dict(obs=obs, next_obs=nxt, action=rng.integers(0, 4, 2), reward=rng.random(2).astype(np.float32),
                   terminated=term, truncated=trunc, env_ids=np.array(ids), valid=valid)


def stream_pair(n_step=1, steps=60):
    ref, dev = pair(60, (4, 3, 4), 3, frame_stack=4, n_step=n_step)
    for kwargs in stream(steps):
        ref.add(**kwargs)
        dev.add(**kwargs)
    return ref, dev


@pytest.mark.parametrize("n_step", [1, 3])
def test_one_file_format_whatever_the_device(tmp_path, n_step):
    ref, dev = stream_pair(n_step=n_step)
    # Each file loads onto either side and sampling continues exactly.
    as_host, as_dev = loaded_both_ways(ref, dev, tmp_path)
    for _ in range(3):
        expected = ref.sample(8)
        assert_identical(expected, as_host.sample(8))
        assert_identical(expected, as_dev.sample(8))


def loaded_both_ways(ref, dev, tmp_path) -> tuple:
    """``ref`` (host) and ``dev`` (device="cpu") saved: the two files are the same bytes; the
    device buffer's file loaded by the host class and the host buffer's by the device class."""
    ref.save(tmp_path / "host.bin")
    dev.save(tmp_path / "dev.bin")
    assert (tmp_path / "host.bin").read_bytes() == (tmp_path / "dev.bin").read_bytes()
    as_host = type(ref).load(tmp_path / "dev.bin")
    as_dev = type(dev).load(tmp_path / "host.bin", device="cpu")
    assert type(as_host) is type(ref) and type(as_dev) is type(dev)
    assert as_dev.device == torch.device("cpu")
    return as_host, as_dev


def test_adds_after_load_continue_the_stacks(tmp_path):
    """Load rebuilds the host ring from the device frames, so later steps still continue them."""
    _, dev = stream_pair(steps=60)
    dev.save(tmp_path / "dev.bin")
    loaded = DeviceReplayBuffer.load(tmp_path / "dev.bin", device="cpu")
    ref = ReplayBuffer(60, (4, 3, 4), 3, frame_stack=4, seed=5)
    for t, kwargs in enumerate(stream(80)):
        ref.add(**kwargs)
        if t >= 60:
            loaded.add(**kwargs)
    assert len(loaded) == len(ref)
    for _ in range(3):
        assert_identical(ref.sample(8), loaded.sample(8))


def test_stage_writes_matches_plain_python():
    rng = np.random.default_rng(2)
    E, R, F, L = 4, 5, 6, 11
    ring = rng.integers(0, 255, (E, R, F), dtype=np.uint8)
    before = np.array([0, 7, 30, 12], np.int64)
    count = before + np.array([0, 5, 1, 3])
    rows, frames = np.full(E * R, -1, np.int64), np.zeros((E * R, F), np.uint8)
    n = kd.stage_writes(ring, before, count, L, rows, frames)
    want = [(e * L + a % L, ring[e, a % R]) for e in range(E) for a in range(before[e], count[e])]
    assert n == len(want) == 9
    assert rows[:n].tolist() == [r for r, _ in want]
    assert all(np.array_equal(frames[i], f) for i, (_, f) in enumerate(want))
    assert (rows[n:] == -1).all()


def test_newest_slots_matches_plain_python():
    E, L, R = 3, 9, 4
    count = np.array([0, 2, 23], np.int64)
    rows, ring = np.full(E * R, -1, np.int64), np.full(E * R, -1, np.int64)
    n = kd.newest_slots(count, L, R, rows, ring)
    want = [(e * L + a % L, e * R + a % R) for e in range(E) for a in range(max(0, count[e] - R), count[e])]
    assert n == len(want) == 6
    assert list(zip(rows[:n].tolist(), ring[:n].tolist())) == want


def test_memory_preflight_with_injected_numbers():
    check_device_memory(7 << 30, free=10 << 30, headroom=2 << 30)
    with pytest.raises(DeviceMemoryError) as err:
        check_device_memory(7 << 30, free=8 << 30, headroom=2 << 30)
    msg = str(err.value)
    assert isinstance(err.value, (FastDQNError, MemoryError))
    assert "7.52 GB" in msg and "2.15 GB" in msg and "8.59 GB" in msg
    assert "--replay-device cpu" in msg and "--buffer-size" in msg


def test_byte_counts():
    args = (1000, (4, 84, 84), 8)
    dev = DeviceReplayBuffer(*args, frame_stack=4, device="cpu")
    ref = ReplayBuffer(*args, frame_stack=4)
    frames = 8 * ref.slots_per_env * 84 * 84
    host, device = replay_bytes(ReplaySpec(*args, frame_stack=4), on_device=True)
    assert device == dev.device_nbytes == frames
    assert host == ref.nbytes - frames + 8 * 5 * 84 * 84 + 8 * ref.slots_per_env * 8
    assert dev.nbytes == host + frames


def test_bad_arguments_are_refused():
    with pytest.raises(ReplayError, match="device: expected 'cpu'"):
        DeviceReplayBuffer(10, (4,), 1, device="meta")
    with pytest.raises(ReplayError, match="device: expected 'cpu'"):
        DeviceReplayBuffer(10, (4,), 1, device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ReplayError, match="no CUDA device"):
            DeviceReplayBuffer(10, (4,), 1, device="cuda")
    with pytest.raises(ReplayError, match="obs_dtype"):
        DeviceReplayBuffer(10, (4,), 1, device="cpu", obs_dtype=">f4")
    _, dev = stream_pair()
    with pytest.raises(ReplayError, match="make_batch"):
        dev.sample(4, out=ReplayBuffer(10, (4,), 1).make_batch(4))
    with pytest.raises(ReplayError, match="make_batch\\(4\\)"):
        dev.sample(4, out=dev.make_batch(5))
    with pytest.raises(ReplayError, match="latest draw"):
        dev.fill(dev.make_batch(4))
    with pytest.raises(ReplayError, match="window"):
        DeviceReplayBuffer(10, (4,), 1, device="cpu").make_batch(2, window=True)


def train_through_feeder(buf, device: str, steps: int, **learner_kw) -> Learner:
    """An MLP learner updated from ``buf`` through a Feeder while a seeded stream is added."""
    torch.manual_seed(0)
    learner = Learner(MLP(4, 2), compile=False, device=device, target_update_interval=3, seed=1, **learner_kw)
    data = np.random.default_rng(3)
    obs = data.standard_normal((buf.num_envs, 4)).astype(np.float32)
    with Feeder(buf, 16, device=device) as feeder:
        for _ in range(steps):
            nxt = data.standard_normal((buf.num_envs, 4)).astype(np.float32)
            feeder.wait_for_prefetch()
            buf.add(obs, nxt, data.integers(0, 2, buf.num_envs), data.random(buf.num_envs).astype(np.float32),
                    data.random(buf.num_envs) < 0.1, np.zeros(buf.num_envs, bool))
            obs = nxt
            if len(buf) >= 16:
                learner.update(feeder.next())
    return learner


def test_feeder_hands_the_learner_device_batches_without_a_host_copy():
    """The same MLP trained from both buffers through a Feeder ends with the same weights."""
    ref, dev = pair(200, (4,), 2, obs_dtype=np.float32)
    with Feeder(dev, 16, device="cpu", prefetch=True) as feeder:
        assert not feeder.prefetch
        assert all(isinstance(b.obs, torch.Tensor) for b in feeder.host_batches)
    host, device = train_through_feeder(ref, "cpu", 80), train_through_feeder(dev, "cpu", 80)
    assert host.num_updates == device.num_updates > 50
    for a, b in zip(host.online.parameters(), device.online.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="device of the buffer's frames"):
        Feeder(dev, 4, device="meta")


@pytest.mark.parametrize("num_envs,batch_size", [(4, 4), (6, 3)], ids=["sync", "async"])
def test_breakout_stream_gives_the_numpy_buffers_batches(num_envs, batch_size):
    envpool = pytest.importorskip("envpool")
    env = envpool.make("Breakout-v5", env_type="gymnasium", num_envs=num_envs, batch_size=batch_size,
                       seed=11, episodic_life=True, max_episode_steps=90)
    ref, dev = pair(num_envs * 40, (4, 84, 84), num_envs, frame_stack=4)
    rng = np.random.default_rng(0)
    last = np.zeros((num_envs, 4, 84, 84), np.uint8)
    actions = np.zeros(num_envs, np.int64)
    env.async_reset()
    seen = dict(life_loss=0, truncated=0, reset_rows=0)
    for step in range(300):
        obs, reward, term, trunc, info = env.recv()
        ids = info["env_id"]
        valid = info["elapsed_step"] != 0
        if step >= num_envs // batch_size:  # the first recv of each env is its reset
            kwargs = dict(obs=last[ids], next_obs=obs, action=actions[ids], reward=reward, terminated=term,
                          truncated=trunc, env_ids=ids, valid=valid)
            ref.add(**kwargs)
            dev.add(**kwargs)
            seen["life_loss"] += int((term & (info["lives"] > 0)).sum())
            seen["truncated"] += int(trunc.sum())
            seen["reset_rows"] += int((~valid).sum())
        last[ids] = obs
        actions[ids] = rng.integers(0, 4, len(ids))
        env.send(actions[ids], ids)
        if step % 50 == 49:
            compare(ref, dev, 32)
    env.close()
    assert min(seen.values()) > 0, seen


def test_training_run_is_the_numpy_buffers_run():
    """The trainer with the frames in a torch tensor makes exactly the NumPy buffer's run."""
    from fastdqn.run.config import TrainConfig
    from fastdqn.run.envs import env_info, make_envs
    from fastdqn.run.trainer import Trainer

    info = env_info("CartPole-v1")

    def run(buffer):
        config = TrainConfig(env_id="CartPole-v1", total_timesteps=800, num_envs=4, buffer_size=2000,
                             batch_size=16, learning_starts=100, train_frequency=2, compile=False,
                             target_network_frequency=8, eval_episodes=0, seed=3)
        torch.manual_seed(0)
        learner = Learner(MLP(4, 2), compile=False, target_update_interval=4, seed=3)
        Trainer(make_envs("CartPole-v1", 4, seed=3), buffer, learner, config).train()
        return learner

    args = (2000, info.obs_shape, 4)
    host = run(ReplayBuffer(*args, obs_dtype=info.obs_dtype, seed=3))
    dev = run(DeviceReplayBuffer(*args, obs_dtype=info.obs_dtype, seed=3, device="cpu"))
    assert host.num_updates == dev.num_updates > 300
    for (name, a), b in zip(host.online.state_dict().items(), dev.online.state_dict().values()):
        assert torch.equal(a, b), name


def test_kernels_without_jit():
    """The planning kernels and a few streams once more with the kernels as plain Python."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve()
    tests = [f"{here}::{name}" for name in ("test_stage_writes_matches_plain_python",
                                            "test_newest_slots_matches_plain_python",
                                            "test_streams_give_the_numpy_buffers_batches")]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "--benchmark-disable", *tests], env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
                          cwd=here.parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
