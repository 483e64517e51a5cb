"""The benchmark tool's pure helpers and baselines, against hand-computed values."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from fastdqn import ReplayBuffer
from fastdqn.tools.bench import command as bench
from fastdqn.tools.bench.harness import Sizes
from fastdqn.tools.bench.sections import batch_traffic
from fastdqn.tools.bench.baselines import NumpyStackBuffer
from fastdqn.errors import ConfigError
from fastdqn.tools.bench.measure import (
    Case,
    Figure,
    format_number,
    format_table,
    machine_info,
    measure_interleaved,
    measure_rate,
    memcpy_gbps,
    median_spread,
    paired_ratio,
    write_json,
)


def test_median_spread_odd_count():
    stat = median_spread([3.0, 1.0, 10.0])
    assert stat.median == 3.0
    assert stat.spread == 4.5  # (10 - 1) / 2
    assert stat.samples == (3.0, 1.0, 10.0)


def test_median_spread_even_count_and_single():
    assert median_spread([4, 1, 2, 3]).median == 2.5
    assert median_spread([4, 1, 2, 3]).spread == 1.5
    single = median_spread([7.0])
    assert (single.median, single.spread) == (7.0, 0.0)


def test_median_spread_rejects_empty():
    with pytest.raises(ConfigError, match="at least one"):
        median_spread([])


def test_measure_rate_counts_units_per_second(monkeypatch):
    # two warm-up calls (1 s each, not counted), then repeats of 2, 4 and 1 s
    ticks = iter([0.0, 1.0, 1.0, 2.0, 0.0, 2.0, 10.0, 14.0, 20.0, 21.0])
    monkeypatch.setattr("fastdqn.tools.bench.measure.time.perf_counter", lambda: next(ticks))
    calls = []
    stat = measure_rate(lambda: calls.append("run"), units=8, repeats=3, warmup=2,
                        setup=lambda: calls.append("setup"))
    assert calls == ["setup", "run"] * 5
    assert stat.samples == (4.0, 2.0, 8.0)
    assert stat.median == 4.0 and stat.spread == 3.0


def test_figure_ratio():
    assert Figure("a", "u", 3.0, 0.0, ceiling=4.0).ratio == 0.75
    assert Figure("a", "u", 3.0, 0.0).ratio is None
    assert Figure("a", "u", 3.0, 0.0, ceiling=0.0).ratio is None


@pytest.mark.parametrize("x, text", [
    (1234.5, "1,234"), (123456.0, "123,456"), (12.345, "12.3"), (1.234, "1.23"),
    (0.012345, "0.0123"), (None, "-"),
])
def test_format_number(x, text):
    assert format_number(x) == text


def test_format_table_rows_and_alignment():
    figures = [
        Figure("env.sync", "env steps/s", 3200.0, 40.0),
        Figure("collect.random", "env steps/s", 3000.0, 25.0, ceiling=3200.0, ceiling_name="env.sync",
               note="eps 1"),
    ]
    lines = format_table(figures).splitlines()
    assert lines[0].split() == ["figure", "unit", "value", "spread", "ceiling/ref", "ratio", "note"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["env.sync", "env", "steps/s", "3,200", "±40.0", "-", "-"]
    assert lines[3].split() == ["collect.random", "env", "steps/s", "3,000", "±25.0", "3,200",
                                "env.sync", "0.94x", "eps", "1"]
    # numbers are right-aligned under their header
    value_end = lines[0].index("value") + len("value")
    assert lines[2].index("3,200") + len("3,200") == value_end
    assert lines[3].index("3,000") + len("3,000") == value_end


def test_write_json_roundtrip(tmp_path):
    figures = [Figure("x", "GB/s", 2.0, 0.5, ceiling=8.0, ceiling_name="memcpy", samples=(1.5, 2.0, 2.5))]
    path = tmp_path / "run.json"
    write_json(path, figures, {"cpu": "test"}, {"quick": True})
    doc = json.loads(path.read_text())
    assert doc["machine"] == {"cpu": "test"}
    assert doc["settings"] == {"quick": True}
    (rec,) = doc["figures"]
    assert rec["name"] == "x" and rec["value"] == 2.0 and rec["spread"] == 0.5
    assert rec["ratio"] == 0.25 and rec["samples"] == [1.5, 2.0, 2.5]


def test_machine_info_fields():
    info = machine_info("cpu")
    assert info["logical_cores"] >= 1 and info["gpu"] is None
    assert info["versions"]["numpy"] == np.__version__
    assert info["date"].endswith("+00:00")


def reference_store(adds, capacity):
    """What a ring of ``capacity`` holds after ``adds``, oldest first, by plain Python lists."""
    rows = [row for batch in adds for row in batch]
    return rows[-capacity:] if len(rows) > capacity else rows


def test_numpy_stack_buffer_ring_and_sample():
    buf = NumpyStackBuffer(5, (2,), np.int64, seed=0)
    adds = [np.array([[i, -i] for i in range(s, s + 3)]) for s in (0, 3, 6)]  # 9 rows into 5 slots
    for block in adds:
        buf.add(block, block + 100, block[:, 0], block[:, 0].astype(np.float32), block[:, 0] % 2 == 0)
    assert len(buf) == 5
    held = {tuple(r) for r in reference_store([list(map(tuple, b)) for b in adds], 5)}
    obs, next_obs, action, reward, terminated = buf.sample(64)
    assert {tuple(r) for r in obs} <= held
    np.testing.assert_array_equal(next_obs, obs + 100)
    np.testing.assert_array_equal(action, obs[:, 0])
    np.testing.assert_array_equal(terminated, obs[:, 0] % 2 == 0)
    assert buf.nbytes == 5 * (2 * 2 * 8 + 8 + 4 + 1)


def parse(argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv, match", [
    (["--sections", "env,nope"], "--sections"),
    (["--num-envs", "0"], "--num-envs"),
    (["--device", "tpu"], "--device"),
    (["--async-envs", "--env-batch-size", "8"], "--env-batch-size"),
    (["--torch-threads", "-1"], "--torch-threads"),
])
def test_check_args_rejects(argv, match):
    with pytest.raises(ConfigError, match=match):
        bench.check_args(parse(argv))


def test_check_args_sections():
    assert bench.check_args(parse(["--sections", "env, train"])) == ["env", "train"]
    assert bench.check_args(parse([])) == list(bench.SECTIONS)


def test_memcpy_gbps_counts_bytes_copied(monkeypatch):
    ticks = iter([0.0, 0.5, 0.0, 0.5] * 2)  # per call: a warm-up and a repeat of 0.5 s each
    monkeypatch.setattr("fastdqn.tools.bench.measure.time.perf_counter", lambda: next(ticks))
    assert memcpy_gbps(10**6, repeats=1).median == pytest.approx(10**6 / 1e9 / 0.5)
    # 1,000,000 bytes in 300,000-byte blocks: three whole blocks (900,000 bytes) per pass
    assert memcpy_gbps(10**6, repeats=1, chunk=300_000).median == pytest.approx(0.9e6 / 1e9 / 0.5)


def test_run_every_section_tiny(tmp_path, capsys):
    """The whole tool end to end on CartPole at a tiny size (a smoke test: no timing checked)."""
    tiny = Sizes(repeats=1, env_steps=4, replay_capacity=256, replay_adds=4, sample_batches=2,
                       learner_updates=2, train_steps=2, learning_starts=64, memcpy_bytes=2**20)
    path = tmp_path / "bench.json"
    args = parse(["--env-id", "CartPole-v1", "--no-compile", "--json", str(path)])
    assert bench.run(args, sizes=tiny) == 0
    doc = json.loads(path.read_text())
    names = [f["name"] for f in doc["figures"]]
    for name in ("env.sync", "memcpy", "replay.add", "replay.sample", "learner.eager", "collect.random",
                 "act.forward", "collect.greedy", "train", "train.naive", "train.share.learn",
                 "train.share.sample", "train.share.wait", "feed.stacked", "feed.stacked.prefetch",
                 "rainbow.plain", "rainbow.nstep_per", "rainbow.all", "device.add", "device.sample",
                 "device.sample.host"):
        assert name in names
    figures = {f["name"]: f for f in doc["figures"]}
    assert figures["collect.random"]["ceiling_name"] == "env (same run)"
    assert figures["collect.random"]["ratio"] == pytest.approx(
        figures["collect.random"]["value"] / figures["collect.random"]["ceiling"])
    assert figures["train"]["ceiling"] == figures["train.naive"]["value"]
    for name in ("rainbow.nstep_per", "rainbow.all"):
        assert figures[name]["ceiling"] == figures["rainbow.plain"]["value"]
    assert figures["device.add"]["ceiling"] == figures["device.add.numpy"]["value"]
    assert all(f["value"] > 0 for f in doc["figures"] if not f["name"].startswith("train.share"))
    assert doc["settings"]["sizes"]["repeats"] == 1
    out = capsys.readouterr().out
    assert "collect.greedy" in out and "CartPole-v1" in out


def test_each_section_prints_as_it_finishes_and_a_signal_keeps_the_finished_ones(tmp_path, capsys, monkeypatch):
    """A signal during the second section: the first one's table is already printed, and the
    JSON holds its figures and says which sections finished."""
    import signal

    from fastdqn.run.signals import Interrupted

    tiny = Sizes(repeats=1, env_steps=4, replay_capacity=256, replay_adds=4, sample_batches=2,
                 learner_updates=2, train_steps=2, learning_starts=64, memcpy_bytes=2**20)

    def stopped(ctx):
        assert "replay.add" in capsys.readouterr().out  # the replay table came before this section ran
        raise Interrupted(signal.SIGINT)

    monkeypatch.setitem(bench.SECTION_FUNCS, "feed", stopped)
    path = tmp_path / "bench.json"
    with pytest.raises(Interrupted):
        bench.run(parse(["--env-id", "CartPole-v1", "--sections", "replay,feed", "--json", str(path)]), sizes=tiny)
    assert "1 of 2 sections" in capsys.readouterr().out
    doc = json.loads(path.read_text())
    assert doc["settings"]["sections_done"] == ["replay"]
    assert {f["name"] for f in doc["figures"]} >= {"replay.add", "replay.sample"}


def test_window_figures_on_atari_frames(tmp_path):
    """Breakout at a tiny size: window sampling and feeding appear beside the stacked ones,
    and a window batch moves k + 1 frames per transition where a stacked one writes 2k."""
    tiny = Sizes(repeats=1, env_steps=4, replay_capacity=512, replay_adds=4, sample_batches=2,
                       learner_updates=1, train_steps=1, learning_starts=64, memcpy_bytes=2**20)
    path = tmp_path / "bench.json"
    assert bench.run(parse(["--sections", "replay,feed", "--json", str(path)]), sizes=tiny) == 0
    figures = {f["name"]: f for f in json.loads(path.read_text())["figures"]}
    for name in ("replay.sample.window", "replay.sample.window.bandwidth", "feed.window",
                 "feed.window.prefetch", "feed.stacked"):
        assert figures[name]["value"] > 0
    buf = ReplayBuffer(64, (4, 84, 84), 2, frame_stack=4)
    frame = 84 * 84
    scalars = 32 * (8 + 4 + 1 + 4 + 8)  # action, reward, terminated, discount, index
    assert batch_traffic(buf.make_batch(32), 4) == (32 * 5 * frame + scalars,
                                                          32 * 8 * frame + scalars)
    assert batch_traffic(buf.make_batch(32, window=True), 4) == (32 * 5 * frame + scalars,
                                                                      32 * 5 * frame + scalars)


def test_measure_interleaved_takes_turns(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr("fastdqn.tools.bench.measure.time.perf_counter", lambda: clock["t"])
    order = []

    def step(name, seconds):
        def run():
            order.append(name)
            clock["t"] += seconds
        return run

    cases = {"a": Case(step("a", 2.0), units=10), "b": Case(step("b", 5.0), units=10,
                                                             setup=lambda: order.append("setup b"))}
    stats = measure_interleaved(cases, repeats=2, warmup=1)
    assert order == ["a", "setup b", "b"] * 3
    assert stats["a"].samples == (5.0, 5.0) and stats["b"].samples == (2.0, 2.0)
    ratio = paired_ratio(stats["a"], stats["b"])
    assert ratio.median == 2.5 and ratio.spread == 0.0


def test_paired_ratio_by_repeat():
    a = median_spread([10.0, 20.0, 30.0])
    b = median_spread([5.0, 20.0, 10.0])
    ratio = paired_ratio(a, b)  # 2, 1, 3
    assert ratio.samples == (2.0, 1.0, 3.0) and ratio.median == 2.0 and ratio.spread == 1.0


class CountingEnvs:
    """Two envs whose observation is the env's own step count; env 1 resets every 3 steps.

    Mimics EnvPool's next-step auto-reset: the step after ``terminated`` returns the reset
    observation (0) with ``elapsed_step == 0``, which is no transition.
    """

    num_envs = 2

    class action_space:  # noqa: N801 - mimics a gymnasium space
        n = 3

    def __init__(self):
        self.t = np.zeros(2, dtype=np.int64)
        self.done = np.zeros(2, dtype=bool)

    def reset(self):
        self.t[:] = 0
        return self.t.astype(np.float32)[:, None], {}

    def step(self, action):
        self.t = np.where(self.done, 0, self.t + 1)
        elapsed = self.t.copy()
        terminated = (np.arange(2) == 1) & (self.t == 3)
        self.done = terminated
        return (self.t.astype(np.float32)[:, None], np.ones(2, np.float32), terminated,
                np.zeros(2, bool), {"elapsed_step": elapsed})


def test_naive_loop_drops_reset_rows_and_keeps_the_replay_ratio():
    import torch

    from fastdqn.tools.bench.baselines import NaiveDQNLoop

    net = torch.nn.Linear(1, 3)
    loop = NaiveDQNLoop(CountingEnvs(), net, buffer_size=100, batch_size=4, learning_starts=8,
                        train_frequency=4, epsilon=1.0, target_update_interval=1000, seed=0)
    loop.run(10)  # 20 env steps; learning after 8 of them: (20 - 8) / 4 = 3 updates
    assert loop.num_updates == 3
    # By hand: env 0 steps 1..10, every row a transition (obs t-1 -> t); env 1 runs
    # 1, 2, 3 (terminated), reset, 1, 2, 3, reset, 1, 2: the 2 reset rows are dropped.
    buf = loop.buffer
    assert len(buf) == 18
    pairs = {(float(o[0]), float(n[0]), bool(d)) for o, n, d in
             zip(buf.obs[:18], buf.next_obs[:18], buf.terminated[:18])}
    expected = {(t - 1.0, float(t), False) for t in range(1, 11)}
    expected |= {(0.0, 1.0, False), (1.0, 2.0, False), (2.0, 3.0, True)}
    assert pairs == expected
    assert not any(o == 3.0 and n == 0.0 for o, n, _ in pairs)  # no final -> reset pair
