"""``fastdqn bench --sections device``: the device-resident replay buffer beside the NumPy one,
filled from the same stream and measured in turn: add, sample into a reused batch, and the
host's time per sample (what the training loop's thread pays). With ``--device cpu`` the
frames are in a torch CPU tensor.
"""

from __future__ import annotations

import time

from fastdqn.tools.bench.harness import fill_buffer, filled_buffer, make_buffer
from fastdqn.tools.bench.measure import Case, Figure, Stat, measure_interleaved, median_spread


def _sync(device):
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def section_device(ctx) -> list[Figure]:
    import torch

    s, a = ctx.sizes, ctx.args
    n, B = a.num_envs, a.batch_size
    host, stream = filled_buffer(ctx)
    dev = make_buffer(ctx, frames_device=a.device)
    fill_buffer(dev, stream)  # past one full wrap, like the host buffer
    sync = _sync(dev.device)

    def adder(buf):
        def run():
            for t in range(s.replay_adds):
                buf.add(**stream[t % len(stream)])
            sync()
        return Case(run, s.replay_adds * n)

    adds = measure_interleaved({"device": adder(dev), "numpy": adder(host)}, s.repeats)
    window = ctx.task.frame_stack > 1
    outs = {"numpy": (host, host.make_batch(B, window=window)),
            "device": (dev, dev.make_batch(B, window=window))}

    def sampler(buf, out):
        def run():
            for _ in range(s.sample_batches):
                buf.sample(B, out=out)
            sync()
        return Case(run, s.sample_batches)

    samples = measure_interleaved({k: sampler(*v) for k, v in outs.items()}, s.repeats)

    def host_seconds():
        spent = 0.0
        for _ in range(s.sample_batches):
            start = time.perf_counter()
            dev.sample(B, out=outs["device"][1])
            spent += time.perf_counter() - start
            sync()
        return spent / s.sample_batches * 1e6

    host_us = median_spread([host_seconds() for _ in range(s.repeats)])
    where = f"frames on {dev.device}, {torch.get_num_threads()} torch threads"
    layout = "window" if window else "stacked"
    return [
        Figure.of("device.add", "transitions/s", adds["device"], ceiling=adds["numpy"].median,
                  ceiling_name="replay.add (numpy)", note=f"{n} envs per add; {where}"),
        Figure.of("device.add.numpy", "transitions/s", adds["numpy"]),
        Figure.of("device.sample", "batches/s", samples["device"], ceiling=samples["numpy"].median,
                  ceiling_name="replay.sample (numpy)",
                  note=f"{layout} batch {B}, capacity {s.replay_capacity:,}; {where}"),
        Figure.of("device.sample.numpy", "batches/s", samples["numpy"]),
        Figure.of("device.sample.host", "µs/sample", Stat(host_us.median, host_us.spread, host_us.samples),
                  note="host time per sample, device queue drained after each (untimed)"),
    ]
