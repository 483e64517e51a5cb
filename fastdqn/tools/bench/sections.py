"""The sections of ``fastdqn bench`` that measure the training loop part by part, each beside
its ceiling: ``env``, ``replay``, ``feed``, ``learner``, ``collect`` and ``train`` (see
``fastdqn.tools.bench.command``). Heavy imports happen inside the sections.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastdqn.tools.bench.baselines import NaiveDQNLoop, NumpyStackBuffer
from fastdqn.tools.bench.harness import (Context, TrainerRuns, filled_buffer, make_buffer, paired_note,
                                         random_actions, record_stream, train_config)
from fastdqn.tools.bench.measure import Case, Figure, Stat, measure_interleaved, median_spread, memcpy_gbps


class EnvRuns:
    """Raw EnvPool stepping with random actions drawn beforehand, as a ``Case``.

    Like a trainer run, each repeat gets fresh envs (made untimed) and its time includes
    their first reset, so the collect figures are set against the same work.
    """

    def __init__(self, ctx: Context, vector_steps: int, async_envs: bool = False):
        n = ctx.args.num_envs
        self.ctx, self.async_envs = ctx, async_envs
        self.batch = (ctx.args.env_batch_size or max(1, n // 2)) if async_envs else n
        self.actions = random_actions(ctx, vector_steps, n)
        self.envs = None

    def setup(self) -> None:
        self.close()
        self.envs = self.ctx.make_envs(self.async_envs)

    def run(self) -> None:
        envs = self.envs
        if self.async_envs:
            envs.async_reset()
            for a in self.actions:
                info = envs.recv()[-1]
                envs.send(a[:self.batch], info["env_id"])
        else:
            envs.reset()
            for a in self.actions:
                envs.step(a)

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
            self.envs = None

    def case(self) -> Case:
        return Case(self.run, len(self.actions) * self.batch, self.setup)


def section_env(ctx: Context) -> list[Figure]:
    """Raw EnvPool steps/s, sync (and async): the ceiling of the loop."""
    s, n = ctx.sizes, ctx.args.num_envs
    runs = {"sync": EnvRuns(ctx, s.env_steps)}
    if ctx.args.async_envs:
        runs["async"] = EnvRuns(ctx, s.env_steps, async_envs=True)
    stats = measure_interleaved({k: r.case() for k, r in runs.items()}, s.repeats)
    for r in runs.values():
        r.close()
    figures = [Figure.of("env.sync", "env steps/s", stats["sync"], note=f"{n} envs, random actions")]
    if "async" in stats:
        figures.append(Figure.of("env.async", "env steps/s", stats["async"], ceiling=stats["sync"].median,
                                 ceiling_name="env.sync",
                                 note=f"{n} envs, batches of {runs['async'].batch}; "
                                      + paired_note(stats["async"], stats["sync"])))
    return figures


def section_replay(ctx: Context) -> list[Figure]:
    """add and sample of fastdqn's buffer beside the NumPy full-stack buffer and memcpy."""
    s, a, task = ctx.sizes, ctx.args, ctx.task
    n = a.num_envs
    buf, stream = filled_buffer(ctx)
    base = NumpyStackBuffer(s.replay_capacity, task.obs_shape, task.obs_dtype, seed=a.seed)

    def add_fast():
        for t in range(s.replay_adds):
            buf.add(**stream[t % len(stream)])

    def add_base():
        for t in range(s.replay_adds):
            r = stream[t % len(stream)]
            base.add(r["obs"], r["next_obs"], r["action"], r["reward"], r["terminated"])

    while len(base) < s.replay_capacity:  # fill so sampling reads the whole ring
        add_base()
    adds = measure_interleaved({"fast": Case(add_fast, s.replay_adds * n),
                                "base": Case(add_base, s.replay_adds * n)}, s.repeats)
    add_f, add_b = adds["fast"], adds["base"]
    outs = {"fast": buf.make_batch(a.batch_size)}
    if task.frame_stack > 1:
        outs["window"] = buf.make_batch(a.batch_size, window=True)

    def sampler(out):
        def run():
            for _ in range(s.sample_batches):
                buf.sample(a.batch_size, out=out)
        return Case(run, s.sample_batches)

    def sample_base():
        for _ in range(s.sample_batches):
            base.sample(a.batch_size)

    cases = {name: sampler(out) for name, out in outs.items()}
    cases["base"] = Case(sample_base, s.sample_batches)
    samples = measure_interleaved(cases, s.repeats)
    smp_b = samples["base"]
    copy = memcpy_gbps(s.memcpy_bytes, s.repeats)
    traffic = {name: batch_traffic(out, task.frame_stack) for name, out in outs.items()}
    copy_out = memcpy_gbps(s.memcpy_bytes, s.repeats, chunk=traffic["fast"][1])
    bpt_f, bpt_b = buf.nbytes / buf.capacity, base.nbytes / base.capacity
    base_name = "numpy full-stack"
    figures = [
        Figure.of("memcpy", "GB/s", copy, note=f"np.copyto of {s.memcpy_bytes / 2**20:.0f} MiB"),
        Figure.of("memcpy.batch", "GB/s", copy_out,
                  note=f"{s.memcpy_bytes / 2**20:.0f} MiB read in batch-sized blocks into one batch"),
        Figure.of("replay.add", "transitions/s", add_f, ceiling=add_b.median, ceiling_name=base_name,
                  note=f"{n} envs per add"),
        Figure.of("replay.add.numpy", "transitions/s", add_b),
    ]
    names = {"fast": "replay.sample", "window": "replay.sample.window"}
    for name, stat in ((k, samples[k]) for k in outs):
        read, written = traffic[name]
        note = f"batch {a.batch_size}, capacity {s.replay_capacity:,}; " + paired_note(stat, smp_b)
        if name == "window":
            note += "; vs stacked " + paired_note(stat, samples["fast"])
        figures += [
            Figure.of(names[name], "batches/s", stat, ceiling=smp_b.median, ceiling_name=base_name, note=note),
            Figure(names[name] + ".bandwidth", "GB/s", stat.median * written / 1e9,
                   stat.spread * written / 1e9, ceiling=copy_out.median, ceiling_name="memcpy.batch",
                   note=f"bytes written; reads {read:,} B and writes {written:,} B per batch"),
        ]
    base_bytes = traffic["fast"][1]  # NumPy reads and writes both full stacks
    figures += [
        Figure.of("replay.sample.numpy", "batches/s", smp_b),
        Figure("replay.sample.numpy.bandwidth", "GB/s", smp_b.median * base_bytes / 1e9,
               smp_b.spread * base_bytes / 1e9, ceiling=copy_out.median, ceiling_name="memcpy.batch",
               note=f"bytes written; reads and writes {base_bytes:,} B per batch"),
        Figure("replay.bytes_per_transition", "bytes", bpt_f, 0.0, ceiling=bpt_b,
               ceiling_name=base_name),
    ]
    return figures


def batch_traffic(batch, frame_stack: int) -> tuple[int, int]:
    """Bytes a sample reads from the buffer and writes into ``batch``: a transition reads its
    k + 1 distinct frames once; a stacked batch writes 2k frames, a window batch k + 1."""
    written = sum(x.nbytes for x in batch) - (batch.obs.nbytes + batch.next_obs.nbytes)
    scalars = written
    if batch.frames is not None:
        written += batch.frames.nbytes
    else:
        written += batch.obs.nbytes + batch.next_obs.nbytes
    frames_read = batch.obs.nbytes // frame_stack * (frame_stack + 1) if frame_stack > 1 \
        else batch.obs.nbytes + batch.next_obs.nbytes
    return frames_read + scalars, written


def section_feed(ctx: Context) -> list[Figure]:
    """The host's cost per update: sample, stage and hand off a batch through the ``Feeder``
    the trainer uses, with the learner's work replaced by nothing."""
    from fastdqn.pipeline.feeder import Feeder

    s, a = ctx.sizes, ctx.args
    buf, _ = filled_buffer(ctx)
    layouts = (False, True) if ctx.task.frame_stack > 1 else (False,)
    feeders = {(w, p): Feeder(buf, a.batch_size, device=a.device, window=w, prefetch=p)
               for w in layouts for p in (False, True)}

    def feed(feeder):
        def run():
            for _ in range(s.sample_batches):
                feeder.next()  # the null learner step: nothing reads the batch
            feeder.wait_for_prefetch()
        return Case(run, s.sample_batches)

    stats = measure_interleaved({key: feed(f) for key, f in feeders.items()}, s.repeats)
    # What the main thread pays per update when the update itself takes the time a device
    # step would (a sleep here, leaving the CPU to the sampler thread).
    updates = max(10, s.sample_batches // 10)
    main = {key: median_spread([main_thread_seconds(f, updates, FEED_STEP_S) / updates
                            for _ in range(s.repeats)])
            for key, f in feeders.items()}
    for f in feeders.values():
        f.close()
    base = stats[(False, False)]
    figures = []
    for (window, prefetch), stat in stats.items():
        name = "feed." + ("window" if window else "stacked") + (".prefetch" if prefetch else "")
        note = f"{1e6 / stat.median:.0f} µs per update, batch {a.batch_size}, {a.device}"
        if (window, prefetch) != (False, False):
            note += "; vs feed.stacked " + paired_note(stat, base)
        figures.append(Figure.of(name, "updates/s", stat, note=note))
    for (window, prefetch), stat in main.items():
        name = "feed." + ("window" if window else "stacked") + (".prefetch" if prefetch else "") + ".main"
        us = Stat(stat.median * 1e6, stat.spread * 1e6, tuple(x * 1e6 for x in stat.samples))
        figures.append(Figure.of(name, "µs/update", us,
                                 note=f"main thread's time in next() beside a {FEED_STEP_S * 1e3:.0f} ms step"))
    return figures


FEED_STEP_S = 0.002  # stand-in for a device update, for the main-thread figures


def main_thread_seconds(feeder, updates: int, step_s: float) -> float:
    """Seconds the caller spends in ``feeder.next()`` over ``updates`` updates separated by
    ``step_s`` of sleep (the background copy, if any, runs during the sleep)."""
    spent = 0.0
    for _ in range(updates):
        start = time.perf_counter()
        feeder.next()
        spent += time.perf_counter() - start
        time.sleep(step_s)
    feeder.wait_for_prefetch()
    return spent


def random_batch(ctx: Context, size: int) -> argparse.Namespace:
    """A replay-shaped batch of random data (update cost does not depend on the values)."""
    rng = np.random.default_rng(ctx.args.seed)
    shape = (size, *ctx.task.obs_shape)
    if ctx.task.obs_dtype == np.uint8:
        obs, next_obs = (rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(2))
    else:
        obs, next_obs = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    return argparse.Namespace(obs=obs, next_obs=next_obs,
                              action=rng.integers(0, ctx.task.num_actions, size=size),
                              reward=rng.standard_normal(size).astype(np.float32),
                              terminated=rng.random(size) < 0.01)


def section_learner(ctx: Context) -> list[Figure]:
    """Updates/s of the learner, eager and compiled side by side, and how long compiling takes."""
    s, a = ctx.sizes, ctx.args
    batch = random_batch(ctx, a.batch_size)
    learners = {"eager": ctx.learner(compile=False)}
    compile_s = None
    if not a.no_compile:
        start = time.perf_counter()
        learners["compiled"] = ctx.learner(compile=True)
        float(learners["compiled"].update(batch)["td_loss"])
        compile_s = time.perf_counter() - start

    def updates(learner):
        def run():
            for _ in range(s.learner_updates):
                metrics = learner.update(batch)
            float(metrics["td_loss"])  # waits for the device

        return Case(run, s.learner_updates)

    stats = measure_interleaved({k: updates(v) for k, v in learners.items()}, s.repeats)
    figures = [Figure.of("learner.eager", "updates/s", stats["eager"],
                         note=f"batch {a.batch_size}, {a.device}")]
    if compile_s is not None:
        figures += [
            Figure.of("learner.compiled", "updates/s", stats["compiled"], ceiling=stats["eager"].median,
                      ceiling_name="eager", note=paired_note(stats["compiled"], stats["eager"])),
            Figure("learner.compile_time", "s", compile_s, 0.0, note="first compiled update, once"),
        ]
    return figures


def section_collect(ctx: Context) -> list[Figure]:
    """The trainer's loop with learning off, random (epsilon 1) and greedy (epsilon 0), taken in
    turn with raw env stepping and with forward passes alone."""
    a, s = ctx.args, ctx.sizes
    buffer, learner = make_buffer(ctx), ctx.learner(compile=False)
    off = dict(learning_starts=s.replay_capacity * 10)  # beyond every run
    env = EnvRuns(ctx, s.env_steps)
    rand = TrainerRuns(ctx, buffer, learner, s.env_steps, start_e=1.0, end_e=1.0, **off)
    greedy = TrainerRuns(ctx, buffer, learner, s.env_steps, start_e=0.0, end_e=0.0, **off)
    obs = record_stream(ctx, 1)[0]["next_obs"]
    calls = max(10, s.env_steps // 10)

    def forward():
        for _ in range(calls):
            learner.act(obs, 0.0)

    stats = measure_interleaved({"env": env.case(), "random": rand.case(), "forward": Case(forward, calls),
                                 "greedy": greedy.case()}, s.repeats)
    for r in (env, rand, greedy):
        r.close()
    env_rate, fwd = stats["env"].median, stats["forward"]
    fwd_ms = 1e3 / fwd.median
    bound = a.num_envs / (a.num_envs / env_rate + 1.0 / fwd.median)
    return [
        Figure.of("collect.random", "env steps/s", stats["random"], ceiling=env_rate,
                  ceiling_name="env (same run)",
                  note=f"epsilon 1, no forward; env {rand.share('env').median:.0%} of time; "
                       + paired_note(stats["random"], stats["env"])),
        Figure("act.forward", "ms/vector step", fwd_ms, fwd_ms * fwd.spread / fwd.median,
               note=f"learner.act on {a.num_envs} obs, epsilon 0"),
        Figure.of("collect.greedy", "env steps/s", stats["greedy"], ceiling=bound, ceiling_name="env+forward",
                  note=f"epsilon 0; env {greedy.share('env').median:.0%}, "
                       f"act {greedy.share('act').median:.0%} of time"),
    ]


def section_train(ctx: Context) -> list[Figure]:
    """The full trainer after learning starts, repeats taken in turn with the naive loop's."""
    from fastdqn.run.trainer import Trainer

    a, s = ctx.args, ctx.sizes
    compiled = not (a.no_compile or a.quick)
    epsilon = 0.05
    buffer, learner = make_buffer(ctx), ctx.learner(compile=compiled)
    fill = -(-s.learning_starts // a.num_envs) * a.num_envs  # env steps of random acting first
    envs = ctx.make_envs()
    trainer = Trainer(envs, buffer, learner, train_config(ctx, total_timesteps=fill, start_e=1.0, end_e=1.0,
                                                          learning_starts=fill))
    trainer.train()
    envs.close()
    float(learner.update(buffer.sample(a.batch_size))["td_loss"])  # compiles, allocates Adam state
    fast = TrainerRuns(ctx, buffer, learner, s.train_steps, trainer.state_dict(), start_e=epsilon,
                       end_e=epsilon, learning_starts=fill)
    naive_envs = ctx.make_envs()
    naive = NaiveDQNLoop(naive_envs, ctx.q_network(), buffer_size=s.replay_capacity, batch_size=a.batch_size,
                         learning_starts=fill, epsilon=1.0, device=a.device, seed=a.seed)
    naive.run(fill // a.num_envs)
    naive.update()
    naive.epsilon = epsilon
    naive_updates = []

    def run_naive():
        before, start = naive.num_updates, time.perf_counter()
        naive.run(s.train_steps)
        naive_updates.append((naive.num_updates - before) / (time.perf_counter() - start))

    stats = measure_interleaved({"fast": fast.case(), "naive": Case(run_naive, s.train_steps * a.num_envs)},
                                s.repeats)
    fast.close()
    naive_envs.close()
    updates, naive_upd = median_spread(fast.updates[-s.repeats:]), median_spread(naive_updates[-s.repeats:])
    mode = "compiled" if compiled else "eager"
    share = ", ".join(f"{k} {fast.share(k).median:.0%}" for k in fast.shares)
    return [
        Figure.of("train", "env steps/s", stats["fast"], ceiling=stats["naive"].median,
                  ceiling_name="naive loop",
                  note=f"{mode} learner, 1 update / 4 env steps, epsilon {epsilon}; {share}; "
                       + paired_note(stats["fast"], stats["naive"])),
        Figure.of("train.updates", "updates/s", updates, ceiling=naive_upd.median, ceiling_name="naive loop"),
        Figure.of("train.naive", "env steps/s", stats["naive"],
                  note="per-step tensor conversion, NumPy full-stack buffer, eager update"),
    ] + [Figure.of(f"train.share.{k}", "fraction", fast.share(k)) for k in fast.shares]
