"""``fastdqn plot``: learning curves, Atari aggregates and bench figures as one picture (see
``DESCRIPTION``), drawn from run folders alone with matplotlib's object API on its Agg canvas:
no pyplot, no display, so it works on a headless server. Aggregates follow Agarwal et al. 2021.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdqn.tools.atari_scores import game_of, human_normalized
from fastdqn.tools.atari_suites import LABELS, estimate_median, summary_suite
from fastdqn.errors import ConfigError
from fastdqn.util.atomic import atomic_write
from fastdqn.util.checks import check_int, check_number
from fastdqn.tools.results import RunResult, find_runs
from fastdqn.tools.stats import AGGREGATES, bootstrap_mean, smooth, stratified_bootstrap

DESCRIPTION = (
    "Draw learning curves (mean over seeds, 95%% bootstrap band, evaluations marked) for every env of "
    "the given run or sweep folders; for Atari games also human-normalised scores and their IQM and mean "
    "across games with 95%% stratified-bootstrap intervals. --bench draws fastdqn bench --json figures "
    "against their ceilings instead. The file type follows -o's extension: png, svg or pdf."
)
FORMATS = (".png", ".svg", ".pdf")
COLUMNS = 3
PANEL_INCHES = (4.8, 3.4)
DPI = 100
GRID_POINTS = 200
LAST_GAMES = 0.1  # without an evaluation, a run's final score is its last 10% of training games


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("paths", nargs="*", metavar="RUN_OR_SWEEP_DIR", help="run folders, or folders holding run folders")
    add("-o", "--output", default="plot.png", help="picture to write: .png, .svg or .pdf (default: %(default)s)")
    add("--bench", default=None, metavar="BENCH_JSON", help="draw a fastdqn bench --json file instead of runs")
    add("--smooth", type=float, default=0.05,
        help="smoothing window as a fraction of the longest run's env steps (default: %(default)s)")
    add("--reps", type=int, default=2000, help="bootstrap resamples per interval (default: %(default)s)")
    add("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: %(default)s)")
    add("--json", default=None, metavar="PATH", help="also write the plotted numbers as JSON here")


def check_writable(flag: str, path: Path) -> None:
    """Refuse, before any work, an output path that could not be written."""
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r} is a folder; pass a file name")
    if not folder.is_dir():
        raise ConfigError(f"{flag}: folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{flag}: no permission to write {str(path)!r}; choose another path")


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() not in FORMATS:
        raise ConfigError(f"--output: expected a file ending in {', '.join(FORMATS)}, got {str(output)!r}")
    check_writable("--output", output)
    if args.json:
        check_writable("--json", Path(args.json))
    if bool(args.paths) == bool(args.bench):
        raise ConfigError("plot: expected run or sweep folders, or --bench BENCH_JSON (one of the two), "
                          f"got {'both' if args.paths else 'neither'}")
    check_number("--smooth", args.smooth, 0, 1, low_open=True)
    check_int("--reps", args.reps)
    if args.bench:
        data = plot_bench(args.bench, output)
    else:
        runs = find_runs(args.paths)
        for r in runs:
            if r.skipped:
                lines = ", ".join(f"{n} ({why})" for n, why in r.skipped[:5])
                more = f" and {len(r.skipped) - 5} more" if len(r.skipped) > 5 else ""
                print(f"fastdqn plot: skipped {len(r.skipped)} unreadable line(s) of "
                      f"{r.path / 'metrics.jsonl'}: line {lines}{more}", file=sys.stderr)
        data = plot_runs(runs, output, smooth_fraction=args.smooth, reps=args.reps,
                         rng=np.random.default_rng(args.seed))
        for row in data.get("aggregate", []):
            what = row.get("describes", f"{row['metric']} human-normalised score over {data['atari_games']} games")
            print(f"{what}: {row['value']:.3f} (95% CI {row['low']:.3f} to {row['high']:.3f})")
    if args.json:
        text = json.dumps(data, indent=2) + "\n"
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {output} ({data['panels']} panels)")
    return 0


# ---- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One env's learning curve: mean over seeds and its bootstrap band on a step grid."""

    env_id: str
    seeds: int
    steps: np.ndarray
    per_seed: np.ndarray  # (seeds, steps): each run's smoothed curve
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    eval_steps: np.ndarray
    eval_means: np.ndarray  # mean over the seeds evaluated at that step
    eval_protocols: tuple[str, ...] = ()  # the evaluation protocols of its runs, for the legend


def learning_curve(runs: list[RunResult], *, smooth_fraction: float, reps: int, rng: np.random.Generator) -> Curve:
    """The curve of runs of one env; the grid spans the longest of them."""
    end = max(1, max(r.last_step for r in runs))
    grid = np.linspace(0, end, GRID_POINTS)
    per_run = np.stack([smooth(r.episode_steps, r.episode_returns, grid, smooth_fraction * end) for r in runs])
    mean, low, high = bootstrap_mean(per_run, rng=rng, reps=reps)
    evals: dict[float, list[float]] = {}
    for r in runs:
        for step, value in zip(r.eval_steps.tolist(), r.eval_means.tolist()):
            evals.setdefault(step, []).append(value)
    eval_steps = np.array(sorted(evals), dtype=np.float64)
    eval_means = np.array([np.mean(evals[s]) for s in sorted(evals)], dtype=np.float64)
    protocols = tuple(sorted({r.eval_protocol for r in runs if r.eval_steps.size}))
    return Curve(runs[0].env_id, len(runs), grid, per_run, mean, low, high, eval_steps, eval_means, protocols)


def final_score(run: RunResult) -> float | None:
    """The run's last evaluation, else the mean score of its last 10% of training games."""
    if run.final_eval is not None:
        return run.final_eval
    if not run.episode_returns.size:
        return None
    last = max(1, math.ceil(LAST_GAMES * run.episode_returns.size))
    return float(run.episode_returns[-last:].mean())


def normalized_scores(runs: list[RunResult]) -> dict[str, np.ndarray]:
    """Per Atari game, the human-normalised final score of each of its runs (seeds)."""
    per_game: dict[str, list[float]] = {}
    for r in runs:
        score = final_score(r)
        if game_of(r.env_id) is not None and score is not None:
            per_game.setdefault(r.env_id, []).append(float(human_normalized(r.env_id, score)))
    return {env_id: np.array(v) for env_id, v in sorted(per_game.items())}


def suite_summary(atari: dict[str, np.ndarray], *, rng: np.random.Generator, reps: int) -> dict | None:
    """The summary score of the largest game suite the runs cover (``atari_suites``): the
    Atari-5 or Atari-10 estimate of the 57-game median, or with all 57 games the median itself,
    of the per-game mean over seeds, with its stratified-bootstrap interval; None below Atari-5."""
    games = [game_of(env_id) for env_id in atari]
    name = summary_suite(games)
    if name is None:
        return None
    # Runs of one game under two version suffixes count as seeds of that game.
    per_game: dict[str, list[np.ndarray]] = {}
    for game, scores in zip(games, atari.values()):
        per_game.setdefault(game, []).append(scores)
    order = list(per_game)

    def statistic(tasks: list[np.ndarray]) -> float:
        means = {game: float(t.mean()) for game, t in zip(order, tasks)}
        if name == "atari57":
            return float(np.median(list(means.values())))
        return estimate_median(name, means)

    ci = stratified_bootstrap([np.concatenate(v) for v in per_game.values()], statistic,
                              rng=rng, reps=reps, pooled=False)
    if name == "atari57":
        metric, describes = "Median", f"Median human-normalised score over {len(order)} games"
    else:
        metric = f"{LABELS[name]} median (est.)"
        describes = f"{LABELS[name]} estimate of the 57-game median human-normalised score"
    return {"metric": metric, "value": ci.value, "low": ci.low, "high": ci.high, "suite": name,
            "describes": describes}


def plot_runs(runs: list[RunResult], output: Path, *, smooth_fraction: float, reps: int,
              rng: np.random.Generator) -> dict:
    """Draw the runs' panels into ``output``; returns the plotted numbers."""
    by_env: dict[str, list[RunResult]] = {}
    for r in runs:
        by_env.setdefault(r.env_id, []).append(r)
    curves = [learning_curve(rs, smooth_fraction=smooth_fraction, reps=reps, rng=rng) for rs in by_env.values()]
    atari = normalized_scores(runs)
    aggregate = []
    if atari:
        tasks = list(atari.values())
        for metric, fn in AGGREGATES.items():
            ci = stratified_bootstrap(tasks, fn, rng=rng, reps=reps)
            aggregate.append({"metric": metric, "value": ci.value, "low": ci.low, "high": ci.high})
        suite = suite_summary(atari, rng=rng, reps=reps)
        if suite is not None:
            aggregate.append(suite)
    panels = len(curves) + (2 if atari else 0)
    fig, axes = _figure(panels)
    for ax, curve in zip(axes, curves):
        _draw_curve(ax, curve)
    if atari:
        _draw_games(axes[len(curves)], atari)
        _draw_aggregate(axes[len(curves) + 1], aggregate, len(atari), sum(v.size for v in atari.values()))
    fig.savefig(output, dpi=DPI)
    return {
        "panels": panels,
        "curves": [{"env_id": c.env_id, "seeds": c.seeds, "final_mean": _last_finite(c.mean)} for c in curves],
        "atari_games": len(atari),
        "normalized": {env_id: v.tolist() for env_id, v in atari.items()},
        "aggregate": aggregate,
    }


def _figure(panels: int):
    from matplotlib.figure import Figure

    cols = min(COLUMNS, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in grid[panels:]:
        ax.set_axis_off()
    return fig, list(grid[:panels])


def _draw_curve(ax, c: Curve) -> None:
    # With few seeds a band alone looks more certain than it is: each seed's own curve is drawn
    # thin beneath the mean, and the legend says what the band is and over how many seeds.
    if c.seeds > 1:
        for i, run in enumerate(c.per_seed):
            ax.plot(c.steps, run, color="C0", alpha=0.35, linewidth=0.6, label="each seed" if i == 0 else None)
    ax.plot(c.steps, c.mean, color="C0", label="mean of seeds (smoothed)" if c.seeds > 1 else "training games (smoothed)")
    if c.seeds > 1:
        ax.fill_between(c.steps, c.low, c.high, color="C0", alpha=0.2, linewidth=0,
                        label=f"95% bootstrap CI of the mean over {c.seeds} seeds")
    if c.eval_steps.size:
        ax.plot(c.eval_steps, c.eval_means, "o", color="C3", markersize=4,
                label=f"evaluation ({' + '.join(c.eval_protocols)} protocol)")
    ax.set_title(f"{c.env_id} ({c.seeds} seed{'s' if c.seeds > 1 else ''})")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episodic return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def _draw_games(ax, atari: dict[str, np.ndarray]) -> None:
    names = list(atari)
    y = np.arange(len(names))
    means = [v.mean() for v in atari.values()]
    ax.barh(y, means, color="C0", alpha=0.6)
    for i, v in enumerate(atari.values()):
        ax.plot(v, np.full(v.size, i), "o", color="k", markersize=3)
    ax.set_yticks(y, names)
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(1, color="C2", lw=0.8, ls="--", label="human")
    ax.set_title("final score per game (dots: seeds)")
    ax.set_xlabel("human-normalised score")
    ax.legend(fontsize="small")


def _draw_aggregate(ax, aggregate: list[dict], games: int, runs: int) -> None:
    y = np.arange(len(aggregate))
    values = np.array([a["value"] for a in aggregate])
    err = np.array([[a["value"] - a["low"] for a in aggregate], [a["high"] - a["value"] for a in aggregate]])
    ax.barh(y, values, xerr=err, color=["C1", "C4", "C5"][: len(aggregate)], alpha=0.7, capsize=6)
    for i, a in enumerate(aggregate):
        ax.annotate(f"{a['value']:.3f} [{a['low']:.3f}, {a['high']:.3f}]", (a["high"], i),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize="small")
    ax.set_yticks(y, [a["metric"] for a in aggregate])
    ax.axvline(1, color="C2", lw=0.8, ls="--")
    ax.margins(x=0.35)
    ax.set_title(f"aggregate over {games} games, {runs} runs (95% CI)")
    ax.set_xlabel("human-normalised score")


def _last_finite(x: np.ndarray) -> float | None:
    finite = x[np.isfinite(x)]
    return float(finite[-1]) if finite.size else None


# ---- bench ---------------------------------------------------------------------------------------


def plot_bench(path: str, output: Path) -> dict:
    """Each ``fastdqn bench`` figure that has a ceiling, as the fraction of it reached."""
    try:
        doc = json.loads(Path(path).read_text())
        figures = [f for f in doc["figures"] if f.get("ceiling")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--bench: {path!r} is not a fastdqn bench --json file ({type(exc).__name__})") from None
    if not figures:
        raise ConfigError(f"--bench: {path!r} holds no figure with a ceiling to draw")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 0.45 * len(figures) + 1.6), layout="constrained")
    ax = fig.subplots()
    ratios = np.array([f["value"] / f["ceiling"] for f in figures])
    y = np.arange(len(figures))[::-1]
    ax.barh(y, ratios, color=["C0" if r <= 1 else "C2" for r in ratios])
    ax.axvline(1, color="k", lw=0.8)
    ax.set_yticks(y, [f["name"] for f in figures], fontsize="small")
    for yi, f, r in zip(y, figures, ratios):
        ax.annotate(f"{f['value']:.3g} / {f['ceiling']:.3g} {f['unit']} ({f.get('ceiling_name', '')})",
                    (r, yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize="x-small")
    ax.margins(x=0.45)
    machine = doc.get("machine", {})
    ax.set_title(f"fastdqn bench: measured / ceiling ({machine.get('cpu', 'unknown CPU')}, {machine.get('date', '')})",
                 fontsize="small")
    ax.set_xlabel("fraction of the ceiling")
    fig.savefig(output, dpi=DPI)
    return {"panels": 1, "bench": [{"name": f["name"], "ratio": float(r)} for f, r in zip(figures, ratios)]}
