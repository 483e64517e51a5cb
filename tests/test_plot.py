"""``fastdqn plot`` on run folders with known numbers: the picture read back, and the plotted
aggregates against a direct computation written here."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from matplotlib.image import imread

from fastdqn.tools.cli import main
from fastdqn.tools.bench.measure import Figure, write_json

from cli_errors import fails
from reference_stats import reference_iqm, reference_percentile

# Final evaluation scores per game and seed; Pong has 4 seeds, Breakout 3.
FINAL = {"Pong-v5": [-20.7, -5.0, 3.0, 14.6], "Breakout-v5": [1.7, 30.5, 88.1]}
# (random, human) from Mnih et al. 2015, Extended Data Table 2.
REFERENCE = {"Pong-v5": (-20.7, 14.6), "Breakout-v5": (1.7, 30.5)}
# CartPole: every training game of a seed scores this, so its smoothed curve is flat.
CARTPOLE = {1: 100.0, 2: 300.0}
TOTAL = 10_000


def write_run(folder, env_id, seed, episode_return, final_eval):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"env_id": env_id, "seed": seed, "total_timesteps": TOTAL}))
    lines = []
    for step in range(100, TOTAL + 1, 100):
        lines.append({"global_step": step, "episodic_return": episode_return, "episodic_length": 10, "epsilon": 0.1})
        if step % 2000 == 0:
            lines.append({"global_step": step, "td_loss": 0.1, "q_values": 1.0, "epsilon": 0.1, "sps": 1000.0})
            lines.append({"global_step": step, "eval_return_mean": final_eval * step / TOTAL, "eval_return_std": 1.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"global_st')  # torn tail


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for env_id, finals in FINAL.items():
        for seed, score in enumerate(finals, start=1):
            write_run(root / "runs" / f"{env_id}__{seed}", env_id, seed, score, score)
    for seed, score in CARTPOLE.items():
        write_run(root / "runs" / f"CartPole-v1__{seed}", "CartPole-v1", seed, score, 500.0)
    return root


def panel_spread(image, rows, cols, inset=0.1):
    """Pixel variance (grayscale) of the middle of each cell of a rows x cols grid."""
    gray = image[..., :3].mean(axis=2)
    ch, cw = gray.shape[0] / rows, gray.shape[1] / cols
    dy, dx = int(inset * ch), int(inset * cw)
    return [[float(gray[int(r * ch) + dy:int((r + 1) * ch) - dy, int(c * cw) + dx:int((c + 1) * cw) - dx].var())
             for c in range(cols)] for r in range(rows)]


def test_runs_plot_curves_and_atari_aggregate(sweep, tmp_path, capsys):
    out, data_path = tmp_path / "runs.png", tmp_path / "plotted.json"
    reps = 6000
    assert main(["plot", str(sweep), "-o", str(out), "--json", str(data_path), "--reps", str(reps)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (5 panels)" in printed
    data = json.loads(data_path.read_text())

    # The picture: 3 learning curves + per-game scores + aggregate on a 2 x 3 grid of 480 x 340 px.
    image = imread(out)
    assert image.shape[:2] == (680, 1440)
    spread = panel_spread(image, 2, 3)
    drawn = [spread[0][0], spread[0][1], spread[0][2], spread[1][0], spread[1][1]]
    assert min(drawn) > 1e-3, spread
    assert spread[1][2] < 1e-6, "the unused sixth cell should be blank"

    # Learning curves: each seed's games all score the same, so the mean curve ends at their mean.
    curves = {c["env_id"]: c for c in data["curves"]}
    assert curves["CartPole-v1"]["final_mean"] == pytest.approx(np.mean(list(CARTPOLE.values())))
    assert curves["Pong-v5"]["seeds"] == 4 and curves["Breakout-v5"]["seeds"] == 3

    # Human-normalised final scores, computed here from the reference table.
    normalized = {env: [(s - REFERENCE[env][0]) / (REFERENCE[env][1] - REFERENCE[env][0]) for s in scores]
                  for env, scores in FINAL.items()}
    for env in FINAL:
        np.testing.assert_allclose(data["normalized"][env], normalized[env])
    pooled = normalized["Pong-v5"] + normalized["Breakout-v5"]
    aggregate = {a["metric"]: a for a in data["aggregate"]}
    assert aggregate["IQM"]["value"] == pytest.approx(reference_iqm(pooled))
    assert aggregate["Mean"]["value"] == pytest.approx(sum(pooled) / len(pooled))

    # Intervals: a stratified bootstrap written here with Python's RNG, within resampling noise.
    r = random.Random(0)
    for metric, stat in (("IQM", reference_iqm), ("Mean", lambda xs: sum(xs) / len(xs))):
        stats = [stat([x for game in normalized.values() for x in r.choices(game, k=len(game))])
                 for _ in range(reps)]
        low, high = reference_percentile(stats, 2.5), reference_percentile(stats, 97.5)
        got = aggregate[metric]
        assert got["low"] == pytest.approx(low, abs=0.05 * (high - low)), metric
        assert got["high"] == pytest.approx(high, abs=0.05 * (high - low)), metric
    iqm = aggregate["IQM"]
    assert (f"IQM human-normalised score over 2 games: {iqm['value']:.3f} "
            f"(95% CI {iqm['low']:.3f} to {iqm['high']:.3f})") in printed


# Atari-5 runs: (random, human) of the published table, and each seed's human-normalised score.
ATARI5_REFERENCE = {"BattleZone-v5": (2360.0, 37187.5), "DoubleDunk-v5": (-18.6, -16.4),
                    "NameThisGame-v5": (2292.3, 8049.0), "Phoenix-v5": (761.4, 7242.6),
                    "Qbert-v5": (163.9, 13455.0)}
ATARI5_NORMALIZED = {"BattleZone-v5": [0.5, 1.5], "DoubleDunk-v5": [-0.2, 3.0], "NameThisGame-v5": [2.0, 4.0],
                     "Phoenix-v5": [0.1, 0.3], "Qbert-v5": [1.0, 1.2]}
# The paper's weights (Aitchison et al. 2023), written out.
ATARI5_WEIGHTS = {"BattleZone-v5": 0.3819751, "DoubleDunk-v5": 0.0679099, "NameThisGame-v5": 0.3108041,
                  "Phoenix-v5": 0.1241262, "Qbert-v5": 0.0804852}


def atari5_estimate(per_game_means: dict) -> float:
    log_median = sum(w * np.log10(1 + 100 * max(per_game_means[g], 0)) for g, w in ATARI5_WEIGHTS.items())
    return (10 ** log_median - 1) / 100


def test_atari5_runs_show_the_papers_median_estimate_beside_iqm(tmp_path, capsys):
    for env_id, fractions in ATARI5_NORMALIZED.items():
        random_score, human = ATARI5_REFERENCE[env_id]
        for seed, f in enumerate(fractions, start=1):
            score = random_score + f * (human - random_score)
            write_run(tmp_path / "runs" / f"{env_id}__{seed}", env_id, seed, score, score)
    out, data_path, reps = tmp_path / "atari5.png", tmp_path / "atari5.json", 3000
    assert main(["plot", str(tmp_path / "runs"), "-o", str(out), "--json", str(data_path), "--reps", str(reps)]) == 0
    printed = capsys.readouterr().out
    aggregate = {a["metric"]: a for a in json.loads(data_path.read_text())["aggregate"]}
    assert list(aggregate) == ["IQM", "Mean", "Atari-5 median (est.)"]
    got = aggregate["Atari-5 median (est.)"]
    # The estimate of the per-game means over seeds (DoubleDunk's -0.2 and 3.0 average to 1.4).
    expected = atari5_estimate({g: float(np.mean(v)) for g, v in ATARI5_NORMALIZED.items()})
    assert got["value"] == pytest.approx(expected, rel=1e-5)
    r = random.Random(0)
    stats = [atari5_estimate({g: float(np.mean(r.choices(v, k=len(v)))) for g, v in ATARI5_NORMALIZED.items()})
             for _ in range(reps)]
    low, high = reference_percentile(stats, 2.5), reference_percentile(stats, 97.5)
    assert got["low"] == pytest.approx(low, abs=0.05 * (high - low))
    assert got["high"] == pytest.approx(high, abs=0.05 * (high - low))
    assert (f"Atari-5 estimate of the 57-game median human-normalised score: {got['value']:.3f} "
            f"(95% CI {got['low']:.3f} to {got['high']:.3f})") in printed


def test_all_57_games_show_the_median_itself_and_ten_the_atari10_estimate():
    from fastdqn.tools.atari_scores import REFERENCE_SCORES
    from fastdqn.tools.plot import suite_summary

    rng = np.random.default_rng(0)
    atari = {f"{g}-v5": rng.uniform(-0.5, 5.0, size=3) for g in REFERENCE_SCORES}
    atari["Pong-v4"] = np.array([9.0])  # a second id of one game: one more seed of Pong
    got = suite_summary(atari, rng=np.random.default_rng(1), reps=200)
    per_game = [v.mean() for k, v in atari.items() if k not in ("Pong-v5", "Pong-v4")]
    per_game.append(np.mean(list(atari["Pong-v5"]) + [9.0]))
    assert got["metric"] == "Median" and len(per_game) == 57
    assert got["value"] == pytest.approx(float(np.median(per_game)))
    assert got["low"] <= got["value"] <= got["high"]
    ten = ("Amidar", "Bowling", "Frostbite", "KungFuMaster", "Riverraid", "BattleZone", "DoubleDunk",
           "NameThisGame", "Phoenix", "Qbert")
    assert suite_summary({f"{g}-v5": np.ones(2) for g in ten}, rng=rng, reps=50)["metric"] == "Atari-10 median (est.)"
    assert suite_summary({f"{g}-v5": np.ones(2) for g in ten[1:]}, rng=rng, reps=50)["suite"] == "atari5"
    assert suite_summary({"Pong-v5": np.ones(2)}, rng=rng, reps=50) is None


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_file_type_follows_the_extension(sweep, tmp_path, suffix, magic):
    out = tmp_path / f"runs{suffix}"
    assert main(["plot", str(sweep / "runs" / "CartPole-v1__1"), "-o", str(out), "--reps", "50"]) == 0
    assert out.read_bytes().startswith(magic)


def test_bench_figures_against_their_ceilings(tmp_path):
    figures = [Figure("env.steps", "steps/s", 900.0, 10.0, ceiling=1000.0, ceiling_name="raw EnvPool"),
               Figure("replay.sample", "batches/s", 3000.0, 50.0, ceiling=1500.0, ceiling_name="NumPy"),
               Figure("learner.compile_time", "s", 12.0, 0.0)]
    bench = tmp_path / "bench.json"
    write_json(bench, figures, {"cpu": "test CPU", "date": "today"}, {})
    out, data_path = tmp_path / "bench.png", tmp_path / "bench-plotted.json"
    assert main(["plot", "--bench", str(bench), "-o", str(out), "--json", str(data_path)]) == 0
    data = json.loads(data_path.read_text())
    assert data["bench"] == [{"name": "env.steps", "ratio": 0.9}, {"name": "replay.sample", "ratio": 2.0}]
    image = imread(out)
    assert image.shape[:2] == (int(0.45 * 2 * 100 + 160), 900)
    assert panel_spread(image, 1, 1)[0][0] > 1e-3


def test_bad_plot_input(sweep, tmp_path, capsys):
    fails(["plot", str(sweep), "-o", str(tmp_path / "x.gif")], capsys, tmp_path, "--output", ".png")
    fails(["plot", "-o", str(tmp_path / "x.png")], capsys, tmp_path, "neither")
    fails(["plot", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "x.png")], capsys, tmp_path, "nothing-here")
    fails(["plot", str(sweep), "-o", str(tmp_path / "no" / "x.png")], capsys, tmp_path, "does not exist")
    fails(["plot", "--bench", str(sweep / "runs" / "CartPole-v1__1" / "config.json"), "-o", str(tmp_path / "b.png")],
          capsys, tmp_path, "--bench")
    assert not list(tmp_path.glob("*.png"))


def test_few_seeds_draw_each_seed_under_the_mean_and_the_legend_names_the_band():
    from matplotlib.figure import Figure

    from fastdqn.tools.plot import Curve, _draw_curve

    steps = np.linspace(0, 100, 5)
    per_seed = np.array([[0, 1, 2, 3, 4], [0, 2, 4, 6, 8], [1, 1, 1, 1, 1]], float)
    curve = Curve("CartPole-v1", 3, steps, per_seed, per_seed.mean(0), per_seed.min(0), per_seed.max(0),
                  np.array([]), np.array([]))
    ax = Figure().subplots()
    _draw_curve(ax, curve)
    lines = ax.get_lines()
    thin = [line for line in lines if line.get_linewidth() < 1]
    assert len(thin) == 3
    for line, seed in zip(thin, per_seed):
        np.testing.assert_array_equal(line.get_ydata(), seed)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "each seed" in labels and "95% bootstrap CI of the mean over 3 seeds" in labels


BAD_LINES = [b'{"global_step": 1e999, "episodic_return": 5.0}\n', b'\xff\xfe{"global_step": 3}\n',
             b'{"global_step": 300, "episodic_return": "high"}\n', b'{"global_step": "400"}\n', b'[1, 2]\n',
             b'{"global_step": true, "episodic_return": 1.0}\n', b'{"global_step": 500, "eval_return_mean": NaN}\n']


def test_bad_metrics_lines_are_skipped_and_reported_by_line_number(tmp_path, capsys):
    run = tmp_path / "runs" / "CartPole-v1__1"
    write_run(run, "CartPole-v1", 1, 100.0, 500.0)
    good = (run / "metrics.jsonl").read_bytes().rsplit(b"\n", 1)[0] + b"\n"
    (run / "metrics.jsonl").write_bytes(good + b"".join(BAD_LINES))
    first_bad = good.count(b"\n") + 1
    assert main(["plot", str(run), "-o", str(tmp_path / "p.png")]) == 0
    err = capsys.readouterr().err
    assert f"skipped {len(BAD_LINES)} unreadable line(s)" in err and f"line {first_bad} (global_step is inf" in err
    assert (tmp_path / "p.png").exists()


@pytest.mark.parametrize("field, value", [("seed", "one"), ("seed", 1.7), ("total_timesteps", [1]), ("env_id", 5),
                                          ("seed", None)])
def test_a_run_config_with_a_wrong_type_is_one_line_naming_the_field(tmp_path, capsys, field, value):
    run = tmp_path / "run"
    write_run(run, "CartPole-v1", 1, 100.0, 500.0)
    config = json.loads((run / "config.json").read_text())
    config[field] = value
    (run / "config.json").write_text(json.dumps(config))
    fails(["plot", str(run), "-o", str(tmp_path / "p.png")], capsys, tmp_path, f"field {field!r}")


def test_json_and_output_paths_are_checked_before_drawing(sweep, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    for argv, expected in ((["--json", str(tmp_path / "no" / "x.json")], "--json"),
                           (["--json", str(tmp_path / "afile" / "x.json")], "--json"),
                           (["--json", str(tmp_path)], "--json"),
                           (["-o", str(tmp_path / "afile" / "p.png")], "--output")):
        argv = ["plot", str(sweep), *(["-o", str(tmp_path / "p.png")] if "-o" not in argv else []), *argv]
        line = fails(argv, capsys, tmp_path, expected)
        assert "--resume" not in line
    assert not (tmp_path / "p.png").exists()


def test_a_write_error_in_plot_does_not_suggest_resume(sweep, tmp_path, capsys, monkeypatch):
    import errno

    import fastdqn.tools.plot

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device", "x.json")

    monkeypatch.setattr(fastdqn.tools.plot, "atomic_write", full)
    assert main(["plot", str(sweep), "-o", str(tmp_path / "p.png"), "--json", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "No space left" in err[-1] and "--resume" not in err[-1]
