"""Prioritized replay against the prioritized buffers of other libraries, and n-step sampling.

The prioritized section of the peer comparison (``bench_peers.py`` holds the uniform one),
on the same recorded Breakout-v5 stream (8 envs, ``episodic_life=True``):

- fastdqn ``PrioritizedReplayBuffer(frame_stack=4)``;
- cpprb ``PrioritizedReplayBuffer`` holding ``obs`` and ``next_obs`` stacks (its frame
  compression, ``next_of``/``stack_compress``, needs one env's steps in order, i.e. one
  buffer per env, and separate buffers cannot share one priority distribution);
- TorchRL ``ReplayBuffer(LazyTensorStorage, PrioritizedSampler)``;
- Tianshou ``PrioritizedVectorReplayBuffer(stack_num=4, ignore_obs_next=True,
  save_only_last_obs=True)``.

All use alpha 0.6, beta 0.4 and (where settable) eps 1e-6. The timed operation is one
training step's worth of replay: ``sample(32)`` then ``update_priorities`` of those 32
with new |TD errors|. Correctness: the fraction of sampled transitions equal to one that
was added, and a chi-square test of draw frequencies against ``p^alpha / sum p^alpha``
after random priorities are set on a small buffer. Also here: a sum-tree draw + update
of 32 ids at capacity 1M, and ``sample(32, out=)`` with ``n_step=3`` beside ``n_step=1``.

``python bench/bench_peers_prioritized.py`` prints every figure, measured side by side
(repeats taken in turn; medians, and medians of per-repeat ratios).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pytest

# The fixtures ``sizes``, ``stream`` and ``truth`` are the uniform suite's: the same stream
# and capacity.
from bench_peers import (NUM_ENVS, OBS_SHAPE, FastDQN, Tianshou, TorchRL, Truth, record_stream,
                         sizes, stream, truth)
from benchutil import record_rate

ALPHA, BETA, EPS = 0.6, 0.4, 1e-6
BATCH = 32


class FastDQNPrioritized(FastDQN):
    """``add`` and ``nbytes`` as the uniform fastdqn adapter."""

    name = "fastdqn PrioritizedReplayBuffer"
    note = "frames stored once per env; float64 trees"

    def __init__(self, capacity: int, seed: int = 0):
        from fastdqn import PrioritizedReplayBuffer

        self.buf = PrioritizedReplayBuffer(capacity, OBS_SHAPE, NUM_ENVS, frame_stack=4,
                                           alpha=ALPHA, eps=EPS, seed=seed)
        self.eps = EPS
        self.out = {}

    def sample(self, batch_size):
        if batch_size not in self.out:
            self.out[batch_size] = self.buf.make_batch(batch_size)
        b = self.buf.sample(batch_size, out=self.out[batch_size], beta=BETA)
        return (b.obs, b.next_obs, b.action, b.reward, b.terminated), b.index

    def update(self, ids, td):
        self.buf.update_priorities(ids, td)

    def all_ids(self):
        # Before any update every priority is equal: a stratified draw of len() takes each once.
        return np.unique(self.buf.sample(len(self.buf)).index)


class CPPRBPrioritized:
    name = "cpprb PrioritizedReplayBuffer"
    note = "obs and next_obs stacks per transition"

    def __init__(self, capacity: int, seed: int = 0):
        import cpprb

        stack = {"shape": OBS_SHAPE, "dtype": np.uint8}
        env_dict = {"obs": stack, "next_obs": stack, "act": {"dtype": np.int64},
                    "rew": {"dtype": np.float32}, "done": {"dtype": np.bool_}}
        np.random.seed(seed)  # cpprb draws from NumPy's global generator
        self.buf = cpprb.PrioritizedReplayBuffer(capacity, env_dict, alpha=ALPHA, eps=EPS)
        self.eps = EPS
        self.nbytes = capacity * (2 * int(np.prod(OBS_SHAPE)) + 8 + 4 + 1)

    def add(self, step):
        v = step["valid"]
        self.buf.add(obs=step["obs"][v], next_obs=step["next_obs"][v], act=step["action"][v],
                     rew=step["reward"][v], done=step["terminated"][v])

    def sample(self, batch_size):
        s = self.buf.sample(batch_size, beta=BETA)
        return (s["obs"], s["next_obs"], s["act"][:, 0], s["rew"][:, 0], s["done"][:, 0]), s["indexes"]

    def update(self, ids, td):
        self.buf.update_priorities(ids, td)

    def all_ids(self):
        return np.arange(self.buf.get_stored_size())


class TorchRLPrioritized(TorchRL):
    """``add`` and ``nbytes`` as the uniform TorchRL adapter."""

    name = "torchrl PrioritizedSampler"
    note = "LazyTensorStorage: obs and next_obs stacks, torch tensors"

    def __init__(self, capacity: int, seed: int = 0):
        import torch
        from torchrl.data import LazyTensorStorage, PrioritizedSampler, ReplayBuffer

        torch.manual_seed(seed)
        self.storage = LazyTensorStorage(capacity)
        self.buf = ReplayBuffer(storage=self.storage, sampler=PrioritizedSampler(
            capacity, alpha=ALPHA, beta=BETA, eps=EPS))
        self.eps = EPS

    def sample(self, batch_size):
        s, info = self.buf.sample(batch_size, return_info=True)
        fields = tuple(s[k].numpy() for k in ("obs", "next_obs", "action", "reward", "terminated"))
        return fields, info["index"]

    def update(self, ids, td):
        import torch

        self.buf.update_priority(torch.as_tensor(ids), torch.as_tensor(td, dtype=torch.float32))

    def all_ids(self):
        return np.arange(len(self.buf))


class TianshouPrioritized(Tianshou):
    """``add`` as the uniform Tianshou adapter."""

    name = "tianshou PrioritizedVectorReplayBuffer"
    note = "stack_num=4, last frames only; eps fixed at float32 eps"

    def __init__(self, capacity: int, seed: int = 0):
        from tianshou.data import PrioritizedVectorReplayBuffer

        np.random.seed(seed)  # Tianshou's prioritized draw uses NumPy's global generator
        self.buf = PrioritizedVectorReplayBuffer(capacity, NUM_ENVS, alpha=ALPHA, beta=BETA,
                                                 stack_num=4, ignore_obs_next=True,
                                                 save_only_last_obs=True)
        self.eps = float(np.finfo(np.float32).eps)

    def sample(self, batch_size):
        b, idx = self.buf.sample(batch_size)
        return (b.obs, b.obs_next, b.act, b.rew, b.terminated), idx

    def update(self, ids, td):
        self.buf.update_weight(ids, td)

    def all_ids(self):
        return np.unique(self.buf.sample_indices(0))

    @property
    def nbytes(self):
        return super().nbytes + self.buf.weight._value.nbytes


PEERS = {
    "fastdqn": (None, FastDQNPrioritized),
    "cpprb": ("cpprb", CPPRBPrioritized),
    "torchrl": ("torchrl", TorchRLPrioritized),
    "tianshou": ("tianshou", TianshouPrioritized),
}


def unavailable(key: str) -> str | None:
    """Why the peer cannot run here (not installed, or its compiled part does not load), or None."""
    module, factory = PEERS[key]
    try:
        factory(64)
    except ImportError:
        return f"{module} is not installed"
    except RuntimeError as exc:  # TorchRL's sum tree lives in a C++ extension built per torch version
        return f"{module} does not work with this install: {exc}"
    return None


def filled(key: str, capacity: int, stream, seed: int = 0):
    adapter = PEERS[key][1](capacity, seed)
    for step in stream:
        adapter.add(step)
    return adapter


def sample_update(adapter, td: np.ndarray) -> None:
    _, ids = adapter.sample(len(td))
    adapter.update(ids, td)


def draw_frequency_chi2(adapter, draws: int, seed: int = 0) -> tuple[float, int]:
    """Set random priorities on every stored transition, draw ``draws`` batches of 32 and
    return (chi-square of the draw counts against p^alpha / sum, degrees of freedom)."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(adapter.all_ids())
    td = rng.uniform(0.0, 3.0, len(ids))
    adapter.update(ids, td)
    position = {int(g): i for i, g in enumerate(ids)}
    counts = np.zeros(len(ids))
    for _ in range(draws):
        _, drawn = adapter.sample(BATCH)
        for g in np.asarray(drawn).reshape(-1):
            counts[position[int(g)]] += 1
    p = (td + adapter.eps) ** ALPHA
    expected = counts.sum() * p / p.sum()
    return float(((counts - expected) ** 2 / expected).sum()), len(ids) - 1


def chi2_passes(chi2: float, dof: int) -> bool:
    """Below a bound past the 99.9999th percentile of chi-square(dof)."""
    return chi2 < dof + 8 * np.sqrt(dof) + 30


# ---- pytest-benchmark ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", list(PEERS))
@pytest.mark.benchmark(group="replay.peers.prioritized.sample_update.32")
def test_sample_update(benchmark, key, sizes, stream, truth):
    reason = unavailable(key)
    if reason:
        pytest.skip(reason)
    adapter = filled(key, sizes["capacity"], stream)
    td = np.random.default_rng(0).uniform(0, 2, BATCH)
    benchmark(sample_update, adapter, td)
    fields, _ = adapter.sample(BATCH)
    correct, _ = truth.check(*fields)
    chi2, dof = draw_frequency_chi2(filled(key, 128, stream[:24]), 50 if sizes["steps"] < 100 else 2000)
    benchmark.extra_info.update(correct=correct, chi2=chi2, dof=dof, chi2_passes=chi2_passes(chi2, dof),
                                bytes_per_transition=adapter.nbytes / sizes["capacity"])
    record_rate(benchmark, 1, "steps_per_s")
    if key == "fastdqn":
        assert correct == 1.0 and chi2_passes(chi2, dof)


@pytest.mark.benchmark(group="replay.sumtree.draw_update.32")
def test_sumtree_draw_update(benchmark, full_size):
    from fastdqn.kernels import sumtree as ks

    tree, ids, prio, uniform = sumtree_at(1_000_000 if full_size else 1000)
    rng = np.random.default_rng(1)

    def run():
        rng.random(out=uniform)
        ks.draw_stratified(tree, uniform, ids)
        ks.set_leaves(tree, ids, prio)

    benchmark(run)
    record_rate(benchmark, BATCH, "ids_per_s")


def sumtree_at(capacity: int):
    from fastdqn.kernels import sumtree as ks

    rng = np.random.default_rng(0)
    tree = ks.empty_tree(capacity)
    ks.set_leaves(tree, np.arange(capacity, dtype=np.int64), rng.uniform(0.1, 2.0, capacity))
    return tree, np.empty(BATCH, np.int64), rng.uniform(0.1, 2.0, BATCH), np.empty(BATCH, np.float64)


@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.benchmark(group="replay.nstep.sample.32")
def test_nstep_sample(benchmark, n_step, sizes, stream):
    from fastdqn import ReplayBuffer

    buf = ReplayBuffer(sizes["capacity"], OBS_SHAPE, NUM_ENVS, frame_stack=4, n_step=n_step, seed=0)
    for step in stream:
        buf.add(**step)
    out = buf.make_batch(BATCH)
    benchmark(buf.sample, BATCH, out=out)
    record_rate(benchmark, 1, "batches_per_s")


# ---- standalone table ------------------------------------------------------------------------------

def in_turn(fns: dict, repeats: int, calls: int) -> dict:
    """Seconds per call of each fn, one repeat of each in turn (same machine load): name ->
    list over repeats."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def paired_ratio(times: dict, slow: str, fast: str) -> float:
    return float(np.median(np.array(times[slow]) / np.array(times[fast])))


def cycled(stream: list[dict], capacity: int) -> list[dict]:
    """The stream repeated until it has passed ``capacity`` transitions through each buffer."""
    per_pass = sum(int(step["valid"].sum()) for step in stream)
    return stream * (capacity // per_pass + 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="vector steps of recorded Breakout-v5")
    parser.add_argument("--capacity", type=int, default=10_000,
                        help="capacity of every buffer in the side-by-side peer table")
    parser.add_argument("--large-capacity", type=int, default=200_000,
                        help="capacity of the fastdqn (and Tianshou) buffers for the large figures")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per repeat")
    args = parser.parse_args(argv)
    stream = record_stream(args.steps)
    truth = Truth(stream)
    td = np.random.default_rng(0).uniform(0, 2, BATCH)

    keys = []
    for k in PEERS:
        reason = unavailable(k)
        if reason:
            print(f"skipped {k}: {reason}", file=sys.stderr)
        else:
            keys.append(k)
    adapters = {k: filled(k, args.capacity, stream) for k in keys}
    fns = {k: (lambda a=a: sample_update(a, td)) for k, a in adapters.items()}
    from fastdqn import ReplayBuffer

    uniform = ReplayBuffer(args.capacity, OBS_SHAPE, NUM_ENVS, frame_stack=4, seed=0)
    for step in stream:
        uniform.add(**step)
    uniform_out = uniform.make_batch(BATCH)
    fns["uniform"] = lambda: uniform.sample(BATCH, out=uniform_out)  # context: no priorities
    times = in_turn(fns, args.repeats, args.calls)
    print(f"Recorded Breakout-v5, {NUM_ENVS} envs x {args.steps} steps, capacity {args.capacity:,}; "
          f"sample({BATCH}) + update_priorities({BATCH}), {args.repeats} repeats taken in turn")
    print("| buffer | sample+update (steps/s, median) | fastdqn speed-up (paired) | bytes/transition "
          "| correct | draw frequencies chi2 / dof | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for k, a in adapters.items():
        correct = float(np.mean([truth.check(*a.sample(BATCH)[0])[0] for _ in range(20)]))
        chi2, dof = draw_frequency_chi2(filled(k, 128, stream[:24]), 2000)
        verdict = "pass" if chi2_passes(chi2, dof) else "FAIL"
        speedup = paired_ratio(times, k, "fastdqn") if "fastdqn" in adapters else float("nan")
        print(f"| {a.name} | {1 / np.median(times[k]):,.0f} | {speedup:.2f}x | {a.nbytes / args.capacity:,.0f} "
              f"| {correct:.1%} | {chi2:.0f} / {dof} ({verdict}) | {a.note} |")
    print(f"\nIn the same turns, fastdqn's uniform ReplayBuffer.sample({BATCH}, out=) alone: "
          f"{1 / np.median(times['uniform']):,.0f} batches/s; prioritized sample+update takes "
          f"{paired_ratio(times, 'fastdqn', 'uniform'):.2f}x its time (paired)")
    del adapters, uniform

    print(f"\nLarge figures, capacity {args.large_capacity:,} (the stream cycled to fill it)")
    big = cycled(stream, args.large_capacity)
    large = {k: filled(k, args.large_capacity, big) for k in ("fastdqn", "tianshou") if k in keys}
    for k, a in large.items():
        print(f"- {a.name}: {a.nbytes / args.large_capacity:,.1f} bytes/transition")
    times = in_turn({k: (lambda a=a: sample_update(a, td)) for k, a in large.items()},
                    args.repeats, args.calls)
    for k in large:
        print(f"- {large[k].name}: sample+update {1 / np.median(times[k]):,.0f} steps/s")
    del large

    bufs = {}
    for n in (1, 3):
        bufs[n] = ReplayBuffer(args.large_capacity, OBS_SHAPE, NUM_ENVS, frame_stack=4, n_step=n, seed=0)
        for step in big:
            bufs[n].add(**step)
    outs = {n: bufs[n].make_batch(BATCH) for n in bufs}
    times = in_turn({n: (lambda n=n: bufs[n].sample(BATCH, out=outs[n])) for n in bufs},
                    args.repeats, args.calls)
    print(f"- sample({BATCH}, out=): n_step=1 {np.median(times[1]) * 1e6:.1f} us, n_step=3 "
          f"{np.median(times[3]) * 1e6:.1f} us, n=3 / n=1 = {paired_ratio(times, 3, 1):.3f} (paired)")
    del bufs, outs, big

    from fastdqn.kernels import sumtree as ks

    rng = np.random.default_rng(1)

    def tree_step(tree, ids, prio, uniform):
        rng.random(out=uniform)
        ks.draw_stratified(tree, uniform, ids)
        ks.set_leaves(tree, ids, prio)

    # Beside a tree small enough to stay in cache: the difference is memory latency.
    trees = {size: sumtree_at(size) for size in (1_000_000, 1_000)}
    times = in_turn({size: (lambda t=t: tree_step(*t)) for size, t in trees.items()},
                    args.repeats, 20 * args.calls)
    for size in trees:
        print(f"- sum tree, capacity {size:,}: draw {BATCH} + update {BATCH} ids "
              f"{np.median(times[size]) * 1e6:.2f} us (median of {args.repeats}; includes drawing "
              f"the {BATCH} uniforms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
