"""Replay against the buffers people would otherwise pick, on a recorded Breakout-v5 stream.

Same data for everyone: a stream of 8 Breakout-v5 envs under random actions, recorded
once through ``fastdqn.run.envs.make_envs`` (``episodic_life=True``, so it holds life losses
and real resets). Groups ``replay.peers.add``, ``replay.peers.sample.32`` and
``replay.peers.sample.256`` hold fastdqn, the NumPy full-stack baseline and each peer that
is installed (``pip install -e ".[peers]"``; a missing one is skipped):

- Stable-Baselines3 ``ReplayBuffer``, ``optimize_memory_usage`` False and True;
- Tianshou ``VectorReplayBuffer(stack_num=4, ignore_obs_next=True, save_only_last_obs=True)``;
- cpprb ``ReplayBuffer`` with ``next_of="obs"`` and ``stack_compress="obs"``, one per env
  (its compression needs each env's frames in order);
- TorchRL ``ReplayBuffer`` over ``LazyTensorStorage`` and ``LazyMemmapStorage``.

Each adapter feeds its buffer the way that library's user would, skipping EnvPool's reset
rows where the API allows it. ``add`` is timed on a buffer that has already taken the
stream once (steady state: the ring is full and its memory pages are touched).
Correctness is part of the comparison: ``extra_info`` holds the fraction of sampled
transitions equal to one that was added (``correct``) and of sampled observation stacks
that were (``obs_correct``). ``python bench/bench_peers.py`` prints all of it as one table.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from benchutil import record_rate

NUM_ENVS = 8
OBS_SHAPE = (4, 84, 84)
NUM_ACTIONS = 4


def record_stream(vector_steps: int, seed: int = 0) -> list[dict]:
    """Breakout-v5 under random actions, one dict of ``ReplayBuffer.add`` arguments per vector step."""
    from fastdqn.tools.bench.harness import record_envpool_stream
    from fastdqn.run.envs import make_envs

    rng = np.random.default_rng(seed)
    actions = rng.integers(0, NUM_ACTIONS, size=(vector_steps, NUM_ENVS))
    return record_envpool_stream(make_envs("Breakout-v5", NUM_ENVS, seed=seed), actions)


def transition_key(obs, next_obs, action, reward, terminated) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in (obs, next_obs):
        h.update(np.ascontiguousarray(part, dtype=np.uint8).tobytes())
    h.update(np.array([action, reward, terminated], dtype=np.float64).tobytes())
    return h.digest()


def obs_key(obs, action, reward, terminated) -> bytes:
    return transition_key(obs, np.zeros(0, np.uint8), action, reward, terminated)


class Truth:
    """Every transition of the stream that is one (EnvPool's reset rows are not), hashed."""

    def __init__(self, stream: list[dict]):
        self.transitions, self.observations = set(), set()
        for step in stream:
            for i in np.flatnonzero(step["valid"]):
                fields = (step["action"][i], step["reward"][i], step["terminated"][i])
                self.transitions.add(transition_key(step["obs"][i], step["next_obs"][i], *fields))
                self.observations.add(obs_key(step["obs"][i], *fields))

    def check(self, obs, next_obs, action, reward, terminated) -> tuple[float, float]:
        """Fractions of sampled rows equal to an added transition, and with an added obs stack."""
        exact = stack = 0
        for i in range(len(obs)):
            fields = (int(action[i]), float(reward[i]), bool(terminated[i]))
            exact += transition_key(obs[i], next_obs[i], *fields) in self.transitions
            stack += obs_key(obs[i], *fields) in self.observations
        return exact / len(obs), stack / len(obs)


# ---- adapters: add(step) with one vector step of the stream; sample(B) -> NumPy fields ----------

class FastDQN:
    name = "fastdqn"
    note = "frames stored once per env"

    def __init__(self, capacity: int, seed: int = 0):
        from fastdqn.replay import ReplayBuffer

        self.buf = ReplayBuffer(capacity, OBS_SHAPE, NUM_ENVS, frame_stack=4, seed=seed)
        self.out = {}

    def add(self, step):
        self.buf.add(**step)

    def sample(self, batch_size):
        if batch_size not in self.out:
            self.out[batch_size] = self.buf.make_batch(batch_size)
        b = self.buf.sample(batch_size, out=self.out[batch_size])
        return b.obs, b.next_obs, b.action, b.reward, b.terminated

    @property
    def nbytes(self):
        return self.buf.nbytes


class NumpyFullStack:
    name = "numpy full-stack"
    note = "baseline: two full stacks per transition"

    def __init__(self, capacity: int, seed: int = 0):
        from fastdqn.tools.bench.baselines import NumpyStackBuffer

        self.buf = NumpyStackBuffer(capacity, OBS_SHAPE, np.uint8, seed=seed)

    def add(self, step):
        v = step["valid"]
        self.buf.add(step["obs"][v], step["next_obs"][v], step["action"][v], step["reward"][v],
                     step["terminated"][v])

    def sample(self, batch_size):
        return self.buf.sample(batch_size)

    @property
    def nbytes(self):
        return self.buf.nbytes


class SB3:
    note = "no per-row mask: EnvPool reset rows are stored"

    def __init__(self, capacity: int, seed: int = 0, optimize_memory_usage: bool = False):
        from gymnasium import spaces
        from stable_baselines3.common.buffers import ReplayBuffer

        self.name = f"sb3 optimize_memory_usage={optimize_memory_usage}"
        self.buf = ReplayBuffer(capacity, spaces.Box(0, 255, OBS_SHAPE, np.uint8), spaces.Discrete(NUM_ACTIONS),
                                device="cpu", n_envs=NUM_ENVS, optimize_memory_usage=optimize_memory_usage,
                                handle_timeout_termination=False)
        np.random.seed(seed)  # SB3 samples with NumPy's global generator
        self.infos = [{} for _ in range(NUM_ENVS)]

    def add(self, step):
        # done = terminated: truncated rows keep bootstrapping, as they should.
        self.buf.add(step["obs"], step["next_obs"], step["action"], step["reward"], step["terminated"],
                     self.infos)

    def sample(self, batch_size):
        s = self.buf.sample(batch_size)
        return (s.observations.numpy(), s.next_observations.numpy(), s.actions.numpy()[:, 0],
                s.rewards.numpy()[:, 0], s.dones.numpy()[:, 0] > 0)

    @property
    def nbytes(self):
        arrays = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
        return sum(getattr(self.buf, a).nbytes for a in arrays if getattr(self.buf, a, None) is not None)


class Tianshou:
    name = "tianshou stack_num=4"
    note = "stores last frames; stacks restart at every done"

    def __init__(self, capacity: int, seed: int = 0):
        from tianshou.data import VectorReplayBuffer

        self.buf = VectorReplayBuffer(capacity, NUM_ENVS, stack_num=4, ignore_obs_next=True,
                                      save_only_last_obs=True, random_seed=seed)

    def add(self, step):
        from tianshou.data import Batch

        v = step["valid"]
        self.buf.add(Batch(obs=step["obs"][v], act=step["action"][v], rew=step["reward"][v],
                           terminated=step["terminated"][v], truncated=step["truncated"][v],
                           obs_next=step["next_obs"][v]), buffer_ids=np.flatnonzero(v))

    def sample(self, batch_size):
        b, _ = self.buf.sample(batch_size)
        return b.obs, b.obs_next, b.act, b.rew, b.terminated

    @property
    def nbytes(self):
        def walk(batch):
            total = 0
            for key in batch.get_keys():
                value = batch[key]
                total += value.nbytes if isinstance(value, np.ndarray) else walk(value)
            return total

        return walk(self.buf._meta)


class CPPRB:
    name = "cpprb next_of+stack_compress"
    note = "one buffer per env; frames transposed to HWC and back"

    def __init__(self, capacity: int, seed: int = 0):
        import cpprb

        env_dict = {"obs": {"shape": (84, 84, 4), "dtype": np.uint8}, "act": {"dtype": np.int64},
                    "rew": {"dtype": np.float32}, "done": {"dtype": np.bool_}}
        self.per_env = max(1, capacity // NUM_ENVS)
        self.bufs = [cpprb.ReplayBuffer(self.per_env, env_dict, next_of="obs", stack_compress="obs")
                     for _ in range(NUM_ENVS)]
        self.rng = np.random.default_rng(seed)
        self.nbytes = capacity * cpprb_bytes_per_transition()

    def add(self, step):
        obs = step["obs"].transpose(0, 2, 3, 1)
        next_obs = step["next_obs"].transpose(0, 2, 3, 1)
        for i in np.flatnonzero(step["valid"]):
            buf = self.bufs[i]
            buf.add(obs=obs[i], next_obs=next_obs[i], act=step["action"][i], rew=step["reward"][i],
                    done=step["terminated"][i])
            if step["terminated"][i] or step["truncated"][i]:
                buf.on_episode_end()

    def sample(self, batch_size):
        counts = self.rng.multinomial(batch_size, [1 / NUM_ENVS] * NUM_ENVS)
        parts = [buf.sample(int(c)) for buf, c in zip(self.bufs, counts) if c]
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return (np.ascontiguousarray(cat["obs"].transpose(0, 3, 1, 2)),
                np.ascontiguousarray(cat["next_obs"].transpose(0, 3, 1, 2)),
                cat["act"][:, 0], cat["rew"][:, 0], cat["done"][:, 0])


class TorchRL:
    note = "two full stacks per transition, torch tensors"

    def __init__(self, capacity: int, seed: int = 0, memmap_dir: str | None = None):
        import torch
        from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer

        torch.manual_seed(seed)
        if memmap_dir is None:
            self.name, storage = "torchrl LazyTensorStorage", LazyTensorStorage(capacity)
        else:
            self.name = "torchrl LazyMemmapStorage"
            storage = LazyMemmapStorage(capacity, scratch_dir=memmap_dir)
        self.storage = storage
        self.buf = ReplayBuffer(storage=storage)

    def add(self, step):
        import torch
        from tensordict import TensorDict

        v = step["valid"]
        data = {k: torch.from_numpy(np.ascontiguousarray(step[k][v]))
                for k in ("obs", "next_obs", "action", "reward", "terminated")}
        self.buf.extend(TensorDict(data, batch_size=[int(v.sum())]))

    def sample(self, batch_size):
        s = self.buf.sample(batch_size)
        return tuple(s[k].numpy() for k in ("obs", "next_obs", "action", "reward", "terminated"))

    @property
    def nbytes(self):
        td = self.storage._storage
        return sum(t.numel() * t.element_size() for t in td.values(include_nested=True, leaves_only=True))


CPPRB_PROBE = """
import numpy as np, psutil, cpprb
proc = psutil.Process()
before = proc.memory_info().rss
env_dict = {"obs": {"shape": (84, 84, 4), "dtype": np.uint8}, "act": {"dtype": np.int64},
            "rew": {"dtype": np.float32}, "done": {"dtype": np.bool_}}
bufs = [cpprb.ReplayBuffer(%d, env_dict, next_of="obs", stack_compress="obs") for _ in range(8)]
zero = np.zeros((84, 84, 4), np.uint8)
for buf in bufs:
    for _ in range(%d):
        buf.add(obs=zero, next_obs=zero, act=0, rew=0.0, done=False)
print(proc.memory_info().rss - before)
"""


@functools.cache
def cpprb_bytes_per_transition(per_env: int = 4000) -> float:
    """cpprb keeps its arrays in C++: its memory is the resident growth of a fresh process
    that fills 8 per-env buffers of ``per_env`` transitions."""
    out = subprocess.run([sys.executable, "-c", CPPRB_PROBE % (per_env, per_env + 1)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1]) / (8 * per_env)


PEERS = {
    "fastdqn": (None, FastDQN),
    "numpy": (None, NumpyFullStack),
    "sb3": ("stable_baselines3", lambda c, s: SB3(c, s, optimize_memory_usage=False)),
    "sb3_optimized": ("stable_baselines3", lambda c, s: SB3(c, s, optimize_memory_usage=True)),
    "tianshou": ("tianshou", Tianshou),
    "cpprb": ("cpprb", CPPRB),
    "torchrl_tensor": ("torchrl", TorchRL),
    "torchrl_memmap": ("torchrl", "memmap"),
}


def make_adapter(key: str, capacity: int, seed: int = 0, scratch: str | None = None):
    module, factory = PEERS[key]
    if module is not None:
        pytest.importorskip(module)
    if factory == "memmap":
        return TorchRL(capacity, seed, memmap_dir=scratch)
    return factory(capacity, seed)


# ---- pytest-benchmark ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sizes(full_size) -> dict:
    # The stream wraps each buffer (capacity < transitions), so stale frames would show; at
    # full size a full-stack buffer (565 MB) is far larger than the CPU caches.
    return dict(steps=1500, capacity=10_000) if full_size else dict(steps=60, capacity=400)


@pytest.fixture(scope="module")
def stream(sizes) -> list[dict]:
    return record_stream(sizes["steps"])


@pytest.fixture(scope="module")
def truth(stream) -> Truth:
    return Truth(stream)


@pytest.fixture(scope="module")
def filled(sizes, stream, tmp_path_factory):
    """One filled buffer per peer, shared by the sample benchmarks."""
    cache = {}

    def get(key):
        if key not in cache:
            adapter = make_adapter(key, sizes["capacity"], scratch=str(tmp_path_factory.mktemp(key)))
            for step in stream:
                adapter.add(step)
            cache[key] = adapter
        return cache[key]

    return get


@pytest.mark.parametrize("key", list(PEERS))
@pytest.mark.benchmark(group="replay.peers.add")
def test_add(benchmark, key, sizes, stream, truth, tmp_path):
    holder = {}

    def setup():  # a buffer that has been through the stream once: steady state, pages touched
        holder["a"] = make_adapter(key, sizes["capacity"], scratch=str(tmp_path / str(len(holder))))
        for step in stream:
            holder["a"].add(step)

    def run():
        adapter = holder["a"]
        for step in stream:
            adapter.add(step)

    benchmark.pedantic(run, setup=setup, rounds=3)
    adapter = holder["a"]
    benchmark.extra_info["bytes_per_transition"] = adapter.nbytes / sizes["capacity"]
    record_rate(benchmark, len(stream) * NUM_ENVS, "transitions_per_s")
    batch = adapter.sample(32)
    assert batch[0].shape == (32, *OBS_SHAPE) and batch[0].dtype == np.uint8
    if key in ("fastdqn", "numpy"):  # after the timed adds, what was added is what is sampled
        assert truth.check(*batch)[0] == 1.0


@pytest.mark.parametrize("batch_size", [32, 256])
@pytest.mark.parametrize("key", list(PEERS))
def test_sample(benchmark, key, batch_size, filled, truth):
    adapter = filled(key)
    benchmark.group = f"replay.peers.sample.{batch_size}"
    batch = benchmark(adapter.sample, batch_size)
    assert batch[0].shape == (batch_size, *OBS_SHAPE) and batch[0].dtype == np.uint8
    correct, obs_correct = truth.check(*batch)
    benchmark.extra_info.update(correct=correct, obs_correct=obs_correct,
                                bytes_per_batch=sum(np.asarray(x).nbytes for x in batch))
    record_rate(benchmark, 1, "batches_per_s", nbytes=benchmark.extra_info["bytes_per_batch"])
    if key in ("fastdqn", "numpy"):
        assert correct == 1.0  # ours and the baseline must return exactly what was added


# ---- standalone table ------------------------------------------------------------------------------

def timed(fn, repeats: int, setup=None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, ``setup()`` untimed before each."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="vector steps of recorded Breakout-v5")
    parser.add_argument("--capacity", type=int, default=10_000, help="buffer capacity in transitions")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200, help="sample calls per repeat")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastdqn-peers-") as scratch:
        return print_table(args, scratch)


def print_table(args: argparse.Namespace, scratch_root: str) -> int:
    stream = record_stream(args.steps)
    truth = Truth(stream)
    rows = []
    for key in PEERS:
        module = PEERS[key][0]
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                print(f"skipped {key}: {module} is not installed", file=sys.stderr)
                continue
        scratch = os.path.join(scratch_root, key)
        Path(scratch).mkdir()
        adapters = []

        def fresh():  # through the stream once: steady state, pages touched
            adapters.append(make_adapter(key, args.capacity, scratch=os.path.join(scratch, str(len(adapters)))))
            for step in stream:
                adapters[-1].add(step)

        def add_all():
            for step in stream:
                adapters[-1].add(step)

        add_s = timed(add_all, args.repeats, setup=fresh)
        adapter = adapters[-1]
        row = dict(name=adapter.name, add=len(stream) * NUM_ENVS / add_s,
                   bytes=adapter.nbytes / args.capacity, note=adapter.note)
        for b in (32, 256):
            row[f"sample{b}"] = args.samples / timed(lambda: [adapter.sample(b) for _ in range(args.samples)],
                                                     args.repeats)
            checks = [truth.check(*adapter.sample(b)) for _ in range(20)]
            row[f"correct{b}"] = float(np.mean([c[0] for c in checks]))
            row[f"obs{b}"] = float(np.mean([c[1] for c in checks]))
        rows.append(row)
        print(f"done {key}", file=sys.stderr)
    print(f"Recorded Breakout-v5, {NUM_ENVS} envs x {args.steps} steps, capacity {args.capacity:,}; "
          f"median of {args.repeats}")
    print("| buffer | add (transitions/s) | sample B=32 (batches/s) | sample B=256 (batches/s) "
          "| bytes/transition | correct | obs stack correct | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        correct = (r["correct32"] * 32 + r["correct256"] * 256) / 288
        obs_ok = (r["obs32"] * 32 + r["obs256"] * 256) / 288
        print(f"| {r['name']} | {r['add']:,.0f} | {r['sample32']:,.0f} | {r['sample256']:,.0f} "
              f"| {r['bytes']:,.0f} | {correct:.1%} | {obs_ok:.1%} | {r['note']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
