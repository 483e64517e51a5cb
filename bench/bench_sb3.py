"""fastdqn's buffer inside Stable-Baselines3 against SB3's own ``ReplayBuffer``.

``python bench/bench_sb3.py`` (needs ``pip install -e ".[sb3]"``) prints three tables:

- memory: bytes per stored transition of ``SB3ReplayBuffer`` and of SB3's ``ReplayBuffer``
  with and without ``optimize_memory_usage``, for 84x84x4 Atari stacks and 8 envs;
- exactness: a recorded Breakout stream (SB3's ``make_atari_env`` + ``VecFrameStack``, random
  actions, episodes capped so that truncations happen) goes into each buffer; every stored
  transition of SB3's buffers (read at its row and env) and a large sample of ours is
  compared with what was added;
- speed: SB3's ``DQN("CnnPolicy")`` on Breakout, 8 envs, CPU, the same settings with either
  buffer, runs alternated (ours, SB3's, ours, ...) so both see the same machine load; env
  steps/s of ``learn()`` and the time spent inside the buffer's ``add`` and ``sample``.

Under pytest (CI runs bench/ with ``--benchmark-disable``) one small test runs every
measurement at a tiny size so this file cannot rot.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time

import numpy as np
import pytest

ENV_ID = "BreakoutNoFrameskip-v4"
STACK = (4, 84, 84)
# CleanRL's dqn_atari.py: optimize_memory_usage=True, and done = terminated (truncated steps
# bootstrap, from the next row of SB3's array, which holds the reset observation).
CLEANRL = "sb3 optimize_memory_usage=True, CleanRL's dones"


def buffers(capacity: int, n_envs: int) -> dict:
    """The three buffers of the comparison, by name, built as SB3's DQN builds them."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    from fastdqn.integrations.sb3 import SB3ReplayBuffer

    space, actions = spaces.Box(0, 255, STACK, np.uint8), spaces.Discrete(4)
    return {
        "fastdqn SB3ReplayBuffer": SB3ReplayBuffer(capacity, space, actions, "cpu", n_envs, seed=0, frame_stack=4),
        "sb3 optimize_memory_usage=False": ReplayBuffer(capacity, space, actions, "cpu", n_envs),
        "sb3 optimize_memory_usage=True": ReplayBuffer(capacity, space, actions, "cpu", n_envs,
                                                       optimize_memory_usage=True,
                                                       handle_timeout_termination=False),
        CLEANRL: ReplayBuffer(capacity, space, actions, "cpu", n_envs, optimize_memory_usage=True,
                              handle_timeout_termination=False),
    }


def sb3_nbytes(buf) -> int:
    names = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
    return sum(getattr(buf, n).nbytes for n in names if hasattr(buf, n))


def memory_table(capacity: int, n_envs: int) -> list[tuple[str, float]]:
    rows = []
    for name, buf in buffers(capacity, n_envs).items():
        if name == CLEANRL:
            continue
        nbytes = buf.nbytes if hasattr(buf, "nbytes") else sb3_nbytes(buf)
        rows.append((name, nbytes / capacity))
    return rows


# ---- exactness ---------------------------------------------------------------------------------

def _key(obs, action) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(obs).tobytes() + int(action).to_bytes(8, "little"),
                           digest_size=16).digest()


def _row(step, e: int, timeouts: bool) -> tuple:
    done = bool(step["done"][e])
    if timeouts:
        done = done and not step["infos"][e].get("TimeLimit.truncated", False)
    return step["obs"][e], int(step["action"][e]), step["next_obs"][e], float(done), float(step["reward"][e])


def _equal(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def exactness(stream: list[dict], capacity: int, samples: int) -> list[tuple[str, int, int, int]]:
    """(buffer, transitions checked, wrong, wrong and bootstrapped) for each buffer."""
    n_envs = len(stream[0]["action"])
    T, rows = len(stream), capacity // n_envs
    out = []
    for name, buf in buffers(capacity, n_envs).items():
        timeouts = buf.handle_timeout_termination or name == CLEANRL
        for s in stream:
            done = s["done"]
            if name == CLEANRL:
                done = done & ~np.array([i.get("TimeLimit.truncated", False) for i in s["infos"]])
            buf.add(s["obs"], s["next_obs"], s["action"], s["reward"], done, s["infos"])
        wrong = harmful = checked = 0
        if name.startswith("sb3"):
            obs_next = buf.observations if buf.optimize_memory_usage else buf.next_observations
            for p in range(rows):
                if buf.optimize_memory_usage and p == buf.pos:
                    continue  # SB3 never samples its write position
                t = T - 1 - ((T - 1 - p) % rows)
                q = (p + 1) % rows if buf.optimize_memory_usage else p
                for e in range(n_envs):
                    done = buf.dones[p, e] * (1 - buf.timeouts[p, e])
                    got = (buf.observations[p, e], int(buf.actions[p, e, 0]), obs_next[q, e], float(done),
                           float(buf.rewards[p, e]))
                    bad = not _equal(got, _row(stream[t], e, timeouts))
                    checked, wrong, harmful = checked + 1, wrong + bad, harmful + (bad and done == 0)
        else:
            table = {}
            for t in range(T - rows, T):
                for e in range(n_envs):
                    table.setdefault(_key(stream[t]["obs"][e], stream[t]["action"][e]), []).append((t, e))
            for _ in range(samples // 256):
                s = buf.sample(256)
                batch = (s.observations.numpy(), s.actions.numpy()[:, 0], s.next_observations.numpy(),
                         s.dones.numpy()[:, 0], s.rewards.numpy()[:, 0])
                for b in range(256):
                    got = tuple(x[b] for x in batch)
                    places = table.get(_key(got[0], got[1]), [])
                    bad = not any(_equal(got, _row(stream[t], e, timeouts)) for t, e in places)
                    checked, wrong, harmful = checked + 1, wrong + bad, harmful + (bad and got[3] == 0)
        out.append((name, checked, wrong, harmful))
    return out


# ---- DQN speed -----------------------------------------------------------------------------------

class _Timed:
    """Adds the seconds spent in ``add`` and ``sample`` of the buffer class it wraps."""

    spent = 0.0

    def add(self, *args, **kwargs):
        start = time.perf_counter()
        super().add(*args, **kwargs)
        type(self).spent += time.perf_counter() - start

    def sample(self, *args, **kwargs):
        start = time.perf_counter()
        out = super().sample(*args, **kwargs)
        type(self).spent += time.perf_counter() - start
        return out


def dqn_run(buffer_class, env_steps: int, n_envs: int, buffer_size: int, learning_starts: int,
            seed: int = 0) -> tuple[float, float]:
    """(env steps/s of ``learn``, fraction of it inside the buffer's add and sample)."""
    from stable_baselines3 import DQN

    from fastdqn.integrations.sb3 import SB3ReplayBuffer
    from fastdqn.integrations.sb3_stream import atari_vec_env

    timed = type("Timed" + buffer_class.__name__, (_Timed, buffer_class), {"spent": 0.0})
    env = atari_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    model = DQN("CnnPolicy", env, buffer_size=buffer_size, learning_starts=learning_starts, batch_size=32,
                train_freq=4, gradient_steps=1, target_update_interval=1000, exploration_fraction=0.1,
                replay_buffer_class=timed, device="cpu", seed=seed,
                replay_buffer_kwargs=dict(frame_stack=4) if issubclass(buffer_class, SB3ReplayBuffer) else None)
    start = time.perf_counter()
    model.learn(total_timesteps=env_steps)
    seconds = time.perf_counter() - start
    env.close()
    return model.num_timesteps / seconds, timed.spent / seconds


def speed_table(repeats: int, **settings) -> list[tuple[str, float, float]]:
    from stable_baselines3.common.buffers import ReplayBuffer

    from fastdqn.integrations.sb3 import SB3ReplayBuffer

    runs = {"fastdqn SB3ReplayBuffer": [], "sb3 ReplayBuffer": []}
    for _ in range(repeats):  # alternated, so both see the same machine load
        runs["fastdqn SB3ReplayBuffer"].append(dqn_run(SB3ReplayBuffer, **settings))
        runs["sb3 ReplayBuffer"].append(dqn_run(ReplayBuffer, **settings))
    ours, theirs = (np.array(r) for r in runs.values())
    print(f"paired ratios (ours / sb3 steps/s): {np.round(ours[:, 0] / theirs[:, 0], 3).tolist()}",
          file=sys.stderr)
    return [(name, float(np.median(r[:, 0])), float(np.median(r[:, 1]))) for name, r in
            zip(runs, (ours, theirs))] + [("ratio (median of paired)", float(np.median(ours[:, 0] / theirs[:, 0])),
                                           float("nan"))]


def test_bench_sb3_runs_small():
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    import torch

    from fastdqn.integrations.sb3_stream import atari_vec_env, record_sb3_stream

    (_, ours), (_, plain), (_, optimized) = memory_table(2_000, 2)
    assert ours < 7_200 < optimized < plain
    env = atari_vec_env(ENV_ID, n_envs=2, seed=0, max_frames=400)
    stream = record_sb3_stream(env, np.random.default_rng(0).integers(0, 4, (150, 2)))
    env.close()
    results = {name: (checked, wrong) for name, checked, wrong, _ in exactness(stream, 200, 512)}
    assert results[CLEANRL][1] > 0
    assert results["fastdqn SB3ReplayBuffer"] == (512, 0)
    assert results["sb3 optimize_memory_usage=False"][1] == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = speed_table(1, env_steps=128, n_envs=2, buffer_size=500, learning_starts=64)
    finally:
        torch.set_num_threads(threads)
    assert all(sps > 0 for _, sps, _ in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--capacity", type=int, default=100_000, help="buffer size for the memory table")
    parser.add_argument("--stream-steps", type=int, default=1_500, help="vector steps of the recorded stream")
    parser.add_argument("--stream-capacity", type=int, default=8_000)
    parser.add_argument("--max-frames", type=int, default=600,
                        help="episode cap of the recorded stream in emulator frames (4 per step)")
    parser.add_argument("--samples", type=int, default=20_480, help="transitions sampled from ours")
    parser.add_argument("--env-steps", type=int, default=12_000, help="DQN env steps per run")
    parser.add_argument("--learning-starts", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3, help="DQN runs per buffer (0: skip them)")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from fastdqn.integrations.sb3_stream import atari_vec_env, record_sb3_stream
    from fastdqn.tools.bench.measure import cpu_model

    torch.set_num_threads(args.torch_threads)
    print(f"{cpu_model()}, {platform.platform()}, torch threads {args.torch_threads}\n")
    print(f"Memory, 84x84x4 uint8, {args.n_envs} envs, capacity {args.capacity:,}")
    print("| buffer | bytes/transition |\n|---|---:|")
    for name, per in memory_table(args.capacity, args.n_envs):
        print(f"| {name} | {per:,.0f} |")

    env = atari_vec_env(ENV_ID, n_envs=args.n_envs, seed=0, max_frames=args.max_frames)
    stream = record_sb3_stream(env, np.random.default_rng(0).integers(0, 4, (args.stream_steps, args.n_envs)))
    env.close()
    done = sum(int(s["done"].sum()) for s in stream)
    trunc = sum(sum(i.get("TimeLimit.truncated", False) for i in s["infos"]) for s in stream)
    print(f"\nExactness: {ENV_ID}, {args.n_envs} envs x {args.stream_steps} steps, episodes capped at "
          f"{args.max_frames} frames ({done} dones, {trunc} of them truncations), capacity "
          f"{args.stream_capacity:,}")
    print("| buffer | transitions checked | wrong | wrong and bootstrapped |\n|---|---:|---:|---:|")
    for name, checked, wrong, harmful in exactness(stream, args.stream_capacity, args.samples):
        print(f"| {name} | {checked:,} | {wrong:,} ({wrong / checked:.2%}) | {harmful:,} |")

    if args.repeats < 1:
        return 0
    settings = dict(env_steps=args.env_steps, n_envs=args.n_envs, buffer_size=args.capacity,
                    learning_starts=args.learning_starts)
    print(f"\nSB3 DQN CnnPolicy on {ENV_ID}, {settings}, train_freq 4, batch 32; median of {args.repeats}")
    print("| buffer | env steps/s | share of time in add + sample |\n|---|---:|---:|")
    for name, sps, share in speed_table(args.repeats, **settings):
        print(f"| {name} | {sps:,.2f} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
