"""What ``fastdqn train --actors N`` costs and carries, on this machine.

    python bench/actors.py wire                 # bytes sent per Atari env step
    python bench/actors.py ingest               # learner-side rows/s: unpickle, merge, store
    python bench/actors.py sps --pairs 3 --steps 20000   # --actors 1 against the one-process loop
    python bench/actors.py sps --pairs 2 --steps 3000 --env-id Breakout-v5
    python bench/actors.py exact --env-id Breakout-v5   # sampled rows vs the actors' records, a kill inside
    python bench/actors.py actor --env-id Breakout-v5   # one actor's env steps/s on its own

``wire`` packs real Breakout-v5 steps (8 envs, 16 steps a chunk, random actions) into chunks
and pickles them as Ray does (protocol 5, buffers out of band): every byte counted, per env
step. ``ingest`` times the learner's side of those chunks for 4 actors x 8 envs (32 env
rings): unpickling, merging a round of one chunk per actor and storing it
(``StackRebuilder.store``: each continuing row's new frame through
``ReplayBuffer.add_next_frames``, reset rows with their stacks through ``add``), one vector
step of every actor per call, as ``ActorFleet`` does; and the same for CartPole-v1 (4
actors x 4 envs). Beside it, alternated, the baseline: every row through ``add`` with its
stacks rebuilt from each env's newest one (what the learner did before ``add_next_frames``). ``sps`` runs
``fastdqn train`` on CartPole-v1 with and without ``--actors 1``, alternating which goes
first, and reports the env steps/s of the last record of each (median over pairs); on an
Atari task with 8 envs, a 20,000-transition buffer, learning from step 1,000, no compile and
one torch thread (a CPU learner). ``exact`` runs two actors on the CPU, SIGKILLs actor 0 at
1,500 env steps, stops once its new process has delivered 1,000 more, and looks up 40 x 128
sampled rows among the transitions the actors recorded on their side: the count of rows found
in none is the figure.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastdqn.replay import ReplayBuffer
from fastdqn.run.actors.wire import TERMINATED, TRUNCATED, VALID, ChunkWriter, StackRebuilder, merge
from fastdqn.run.envpool_rows import EnvPoolRows
from fastdqn.run.envs import env_info, make_envs


def chunks(env_id: str, num_envs: int, steps: int, count: int, actors: int) -> tuple[list[bytes], object]:
    """``count`` pickled chunks of ``steps`` vector steps each, taken in turn from ``actors``
    actors' streams (real env steps; each actor's chunks in order)."""
    task = env_info(env_id)
    rng = np.random.default_rng(0)
    out = []
    streams = []
    for a in range(actors):
        envs = make_envs(env_id, num_envs, seed=a)
        envs.async_reset()
        rows = EnvPoolRows(num_envs, num_envs, task.obs_shape, task.obs_dtype)
        writer = ChunkWriter(a, steps, num_envs, task.obs_shape, task.obs_dtype, task.frame_stack,
                             task.num_actions, a * num_envs)
        streams.append((envs, rows, writer))
    for c in range(count):
        envs, rows, writer = streams[c % actors]
        writer.clear()
        for _ in range(steps):
            obs, reward, term, trunc, info = envs.recv()
            ids = info["env_id"]
            add = rows.received(obs, reward, term, trunc, info)
            actions = rng.integers(task.num_actions, size=len(ids))
            envs.send(actions, ids)
            rows.sent(actions, ids)
            writer.append(add)
        out.append(pickle.dumps(writer.chunk(episode_returns=[], episode_lengths=[], epsilon=0.1), protocol=5))
    for envs, _, _ in streams:
        envs.close()
    return out, task


def wire() -> dict:
    task = env_info("Breakout-v5")
    data, _ = chunks("Breakout-v5", 8, 16, 6, 1)
    sizes = []
    for blob in data[1:]:  # the first holds every env's reset stack
        chunk = pickle.loads(blob)
        buffers: list = []
        inband = pickle.dumps(chunk, protocol=5, buffer_callback=buffers.append)
        sizes.append((len(inband) + sum(memoryview(b.raw()).nbytes for b in buffers)) / chunk.rows)
    return {"env": task.env_id, "bytes_per_env_step": statistics.median(sizes),
            "frame_bytes": int(np.prod(task.obs_shape[1:])), "per_env_step_range": [min(sizes), max(sizes)]}


def _store_stacks(buffer, chunk, last: np.ndarray) -> None:
    """The baseline: every row through ``ReplayBuffer.add`` with whole stacks, rebuilt from
    each env's newest stack ``last`` (which the buffer then compares with the frames it holds)."""
    B, k = chunk.step_rows, buffer.frame_stack
    resets = 0
    for a in range(0, chunk.rows, B):
        ids = chunk.env_ids[a:a + B].astype(np.int64)
        obs = last[ids]
        nxt = np.concatenate([obs[:, 1:], chunk.frames[a:a + B, None]], axis=1) if k > 1 else chunk.frames[a:a + B]
        valid = (chunk.flags[a:a + B] & VALID) != 0
        if k > 1 and not valid.all():
            m = int(np.count_nonzero(~valid))
            nxt[~valid] = chunk.resets[resets:resets + m]
            resets += m
        last[ids] = nxt
        buffer.add(obs, nxt, chunk.action[a:a + B], chunk.reward[a:a + B].astype(np.float32),
                   (chunk.flags[a:a + B] & TERMINATED) != 0, (chunk.flags[a:a + B] & TRUNCATED) != 0, ids, valid)


def ingest(env_id: str, num_envs: int, actors: int, repeats: int = 5) -> dict:
    """Rows/s of both ways of storing the same chunks, alternated: ``frames`` (what the
    learner does) and ``stacks`` (every row through ``add`` with rebuilt stacks)."""
    data, task = chunks(env_id, num_envs, 16, 8 * actors, actors)
    E = num_envs * actors
    rates: dict[str, list[float]] = {"frames": [], "stacks": []}
    for r in range(repeats):
        for mode in (("frames", "stacks") if r % 2 == 0 else ("stacks", "frames")):
            buffer = ReplayBuffer(100_000, task.obs_shape, E, obs_dtype=task.obs_dtype,
                                  frame_stack=task.frame_stack, seed=0)
            rebuilder = StackRebuilder(E, task.obs_shape, task.obs_dtype, task.frame_stack, E)
            last = np.zeros((E, *task.obs_shape), task.obs_dtype)
            rows = 0
            start = time.perf_counter()
            for i in range(0, len(data), actors):  # a round: one chunk of each actor, merged
                chunk = merge([pickle.loads(blob) for blob in data[i:i + actors]])
                if mode == "frames":
                    rebuilder.store(buffer, chunk)
                else:
                    _store_stacks(buffer, chunk, last)
                rows += chunk.rows
            rates[mode].append(rows / (time.perf_counter() - start))
            assert len(buffer) > 0
    med = {m: statistics.median(v) for m, v in rates.items()}
    return {"env": env_id, "actors": actors, "envs_per_actor": num_envs, "rows": rows,
            "rows_per_s_median": med["frames"], "rows_per_s_all": [round(x) for x in rates["frames"]],
            "stacks_rows_per_s_median": med["stacks"], "stacks_rows_per_s_all": [round(x) for x in rates["stacks"]],
            "frames_over_stacks": round(statistics.median(
                [f / s for f, s in zip(rates["frames"], rates["stacks"])]), 2)}


def sps(pairs: int, steps: int, env_id: str) -> dict:
    runs: dict[str, list[float]] = {"loop": [], "actors1": []}
    flags = ["--env-id", env_id, "--total-timesteps", str(steps), "--eval-episodes", "0", "--no-progress",
             "--checkpoint-every", "0", "--log-every", str(steps)]
    if env_id != "CartPole-v1":  # Atari on a CPU learner: a short run with a small buffer
        flags += ["--num-envs", "8", "--buffer-size", "20000", "--learning-starts", "1000", "--no-compile",
                  "--torch-threads", "1"]
    for p in range(pairs):
        order = ["loop", "actors1"] if p % 2 == 0 else ["actors1", "loop"]
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                extra = ["--actors", "1"] if name == "actors1" else []
                subprocess.run([sys.executable, "-m", "fastdqn", "train", *flags, *extra, "--run-dir", f"{tmp}/run"],
                               check=True, capture_output=True)
                records = [json.loads(x) for x in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
                runs[name].append([r for r in records if "sps" in r][-1]["sps"])
        print(json.dumps({k: [round(v) for v in vs] for k, vs in runs.items()}), flush=True)
    return {"env": env_id, "steps": steps, "pairs": pairs, **{f"{k}_sps": [round(v) for v in vs] for k, vs in runs.items()},
            **{f"{k}_median": round(statistics.median(vs)) for k, vs in runs.items()}}


def _actor_records(record_dir: Path) -> tuple[set, dict]:
    """The valid transitions the actors wrote down on their side (``record_dir``), keyed by
    (global env id, obs, next_obs, action, reward sign, terminated); and each actor's pids."""
    keys, pids = set(), {}
    for path in sorted(record_dir.glob("actor*.npz")):
        actor, pid = (int(x) for x in path.name.removeprefix("actor").split("-")[:2])
        pids.setdefault(actor, set()).add(pid)
        with np.load(path) as f:
            offset, step = int(f["env_offset"]), 0
            while f"valid_{step}" in f:
                col = {k: f[f"{k}_{step}"] for k in ("env_ids", "obs", "next_obs", "action", "reward", "terminated")}
                for r in np.flatnonzero(f[f"valid_{step}"]):
                    keys.add((offset + int(col["env_ids"][r]), col["obs"][r].tobytes(), col["next_obs"][r].tobytes(),
                              int(col["action"][r]), float(np.sign(col["reward"][r])), bool(col["terminated"][r])))
                step += 1
    return keys, pids


def exact(env_id: str, kill_at: int, after: int, draws: int) -> dict:
    """A short ``--actors 2`` run on the CPU: actor 0 SIGKILLed once ``kill_at`` env steps
    are in, the run stopped once its new process has delivered ``after`` more; then
    ``draws`` batches of 128 sampled and each row looked up among the transitions the actors
    recorded on their side. Counts the rows found in none (wrong)."""
    import os
    import signal
    import threading

    from fastdqn.run.actors.learner_loop import ActorTrainer
    from fastdqn.run.actors.session import actor_fleet
    from fastdqn.run.build import build_buffer, build_learner
    from fastdqn.run.config import ATARI, VECTOR, make_config

    task = env_info(env_id)
    atari = env_id != "CartPole-v1"
    extra = dict(buffer_size=20_000, compile=False, torch_threads=1) if atari else {}
    config = make_config(ATARI if atari else VECTOR,
                         dict(env_id=env_id, actors=2, num_envs=2, total_timesteps=10_000_000, learning_starts=500,
                              actor_chunk_steps=8, eval_episodes=0, batch_size=32, weight_sync_every=20, **extra),
                         cuda_available=False, max_episode_steps=27_000 if atari else 500)
    buffer = build_buffer(config, task, seed=1)
    learner = build_learner(config, task)
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp)
        start = time.perf_counter()
        with actor_fleet(config, task, buffer, seed=1, record_dir=str(record)) as fleet:
            first = fleet.ray.get([a.pid.remote() for a in fleet.actors])
            trainer = ActorTrainer(fleet, buffer, learner, config)

            def kill_then_stop():
                while fleet.limiter.steps < kill_at:
                    time.sleep(0.05)
                os.kill(first[0], signal.SIGKILL)
                while fleet.restarts[0] == 0:
                    time.sleep(0.05)
                back = int(fleet.actor_steps[0])
                while fleet.actor_steps[0] < back + after:
                    time.sleep(0.05)
                trainer.request_stop(signal.SIGINT)

            stopper = threading.Thread(target=kill_then_stop, daemon=True)
            stopper.start()
            trainer.train()
            stopper.join()
            restarts = fleet.restarts.tolist()
            steps = int(fleet.limiter.steps)
        keys, pids = _actor_records(record)
        E, wrong, sampled = config.replay_envs, 0, 0
        for _ in range(draws):
            batch = buffer.sample(128)
            for r in range(128):
                key = (int(batch.index[r]) % E, batch.obs[r].tobytes(), batch.next_obs[r].tobytes(),
                       int(batch.action[r]), float(batch.reward[r]), bool(batch.terminated[r]))
                wrong += key not in keys
                sampled += 1
    return {"env": env_id, "env_steps": steps, "stored": len(buffer), "recorded": len(keys),
            "restarts": restarts, "actor0_processes": len(pids.get(0, ())), "sampled": sampled, "wrong": wrong,
            "seconds": round(time.perf_counter() - start, 1)}


def actor(env_id: str, num_envs: int, chunks: int = 30) -> dict:
    """One actor's own rate: an ``EnvActor`` built in this process (no Ray, no learner),
    stepping ``num_envs`` envs and acting with its CPU network at epsilon 0.01 (the network
    runs every step), pickling each chunk as Ray would. The bound one actor puts on a run."""
    from fastdqn.run.actors.env_actor import EnvActor
    from fastdqn.run.config import ATARI, VECTOR, make_config

    atari = env_id != "CartPole-v1"
    config = make_config(ATARI if atari else VECTOR, dict(env_id=env_id, actors=1, num_envs=num_envs),
                         cuda_available=False, max_episode_steps=27_000 if atari else 500)
    one = EnvActor(config.to_dict(), 0, seed=1)
    one.collect([None], -1, 0.01)  # warm up: envs reset, first forward passes
    rates = []
    for _ in range(5):
        start, rows = time.perf_counter(), 0
        for _ in range(chunks // 5):
            chunk = one.collect([None], -1, 0.01)
            pickle.dumps(chunk, protocol=5)
            rows += chunk.rows
        rates.append(rows / (time.perf_counter() - start))
    one.envs.close()
    return {"env": env_id, "num_envs": num_envs, "chunk_steps": config.actor_chunk_steps,
            "env_steps_per_s_median": round(statistics.median(rates)), "all": [round(r) for r in rates]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("wire", "ingest", "sps", "exact", "actor"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--env-id", default="CartPole-v1", help="sps: CartPole-v1 or an Atari task")
    args = parser.parse_args()
    if args.what == "wire":
        print(json.dumps(wire()))
    elif args.what == "ingest":
        print(json.dumps(ingest("Breakout-v5", 8, 4)))
        print(json.dumps(ingest("CartPole-v1", 4, 4)))
    elif args.what == "actor":
        print(json.dumps(actor(args.env_id, 8)))
    elif args.what == "exact":
        print(json.dumps(exact(args.env_id, kill_at=1_500, after=1_000, draws=40)))
    else:
        print(json.dumps(sps(args.pairs, args.steps, args.env_id)))


if __name__ == "__main__":
    main()
