"""CPU time of the replay calls the hot loop makes, for comparing two trees side by side.

    python bench/replay_calls.py [--repeats 5]

Prints the median, over repeats, of the calling thread's CPU time (``time.thread_time``) per
call: an 8-env Atari ``add`` (84x84 frames, stacks of 4, capacity 10,000, the ring wrapped
first so no page is touched for the first time while timed), a 32-transition ``sample`` from
it, and a 32-transition ``sample`` of 4-float observations, where the Python around the
kernels dominates. CPU time rather than wall time: on a shared machine another process
taking the core stretches wall time but not this thread's CPU time, so runs of two trees
alternated in one shell can be compared even when the machine is busy (cache sharing still
moves them a few percent). Run it once per tree, alternating, and compare medians.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fastdqn import ReplayBuffer


def per_call_us(fn, calls: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(calls):
            fn()
        times.append((time.thread_time() - start) / calls * 1e6)
    return float(np.median(times))


def atari(repeats: int) -> dict:
    E, k = 8, 4
    buf = ReplayBuffer(10_000, (k, 84, 84), E, frame_stack=k, seed=0)
    frames = np.random.default_rng(0).integers(0, 255, (E, 150, 84, 84), dtype=np.uint8)
    stacks = [np.ascontiguousarray(frames[:, i:i + k]) for i in range(141)]
    act, rew, flags = np.zeros(E, np.int64), np.zeros(E, np.float32), np.zeros(E, bool)
    step = iter(range(1 << 62))

    def add():
        i = next(step) % 140
        buf.add(stacks[i], stacks[i + 1], act, rew, flags, flags)

    for _ in range(140 * 12):  # wrap the ring
        add()
    out = buf.make_batch(32)
    return {"atari_add_us": per_call_us(add, 2800, repeats),
            "atari_sample_us": per_call_us(lambda: buf.sample(32, out), 2000, repeats)}


def small(repeats: int) -> dict:
    E = 8
    buf = ReplayBuffer(10_000, (4,), E, obs_dtype=np.float32, seed=0)
    obs, act = np.zeros((E, 4), np.float32), np.zeros(E, np.int64)
    rew, flags = np.zeros(E, np.float32), np.zeros(E, bool)
    for i in range(2000):
        buf.add(obs + i, obs + i + 1, act, rew, flags, flags)
    out = buf.make_batch(32)
    return {"small_sample_us": per_call_us(lambda: buf.sample(32, out), 3000, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median; default 5)")
    args = parser.parse_args()
    print(json.dumps({**atari(args.repeats), **small(args.repeats)}))


if __name__ == "__main__":
    main()
