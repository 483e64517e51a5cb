"""``fastdqn sweep``: every (env, seed) pair as its own ``fastdqn train`` run, on Ray.

Each run is one Ray task (``fastdqn.tools.sweep_task``) that reserves ``--cpus-per-run`` CPUs
and ``--gpus-per-run`` GPUs and runs ``fastdqn train`` as a child process into its own run
folder. Ray does the scheduling, placement and retries; this module builds the command lines,
watches the runs and keeps ``sweep.json`` (one writer: the driver). Fault tolerance rests on
``fastdqn train --resume``. Stopping is a ``STOP`` file in the sweep folder, which every node
reaches anyway: each task forwards it to its child as SIGINT (README, "Many runs").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path

from fastdqn.util.atomic import atomic_write
from fastdqn.run.actors.ray_setup import check_address, import_ray, start_ray
from fastdqn.run.config import PRESETS, TrainConfig, check_seed, make_config
from fastdqn.errors import ConfigError
from fastdqn.util.checks import check_int, check_number
from fastdqn.tools.atari_suites import SUITES, suite_env_ids
from fastdqn.tools.results import find_runs, format_summary, last_step, sweep_summary, write_summary
from fastdqn.tools.sweep_task import FAILED, FINISHED, QUEUED, RUNNING, STOPPED, RunKilled, read_status, run_training

SWEEP_NAME = "sweep.json"
STOP_NAME = "STOP"
FORMAT = "fastdqn-sweep"
VERSION = 1
# Set per run from the flags of the sweep, never forwarded from the command line; the sweep's
# own --address names its cluster, and a run's actors (train --actors) stay on the run's machine.
PER_RUN_FIELDS = ("env_id", "seed", "run_dir", "address")


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """What defines a sweep; saved in ``sweep.json`` and reused by ``--resume``."""

    env_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    train_flags: tuple[str, ...]  # forwarded to every `fastdqn train`
    cpus_per_run: float
    gpus_per_run: float
    max_retries: int

    def run_names(self) -> list[tuple[str, str, int]]:
        """(name, env_id, seed) of every run, env-major."""
        return [(f"{env_id}__{seed}", env_id, seed) for env_id in self.env_ids for seed in self.seeds]

    def threads(self) -> int:
        """Threads each run may use: the CPUs it reserves (at least one)."""
        return max(1, math.floor(self.cpus_per_run))


# ---- flags ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's own flags (``cli.py`` adds the train flags it forwards)."""
    add = parser.add_argument
    add("--env-ids", default=None, metavar="ID,ID", help="comma-separated EnvPool task ids, e.g. Pong-v5,Breakout-v5")
    add("--games", default=None, metavar="|".join(SUITES),
        help="instead of --env-ids, the Atari games of a suite of Aitchison et al. 2023: atari5 (5 games whose "
             "scores estimate the 57-game median; fastdqn plot shows the estimate), atari10, or all 57 (atari57)")
    add("--seeds", default=None, metavar="S,S", help="comma-separated seeds; each env is trained once per seed (default: 1)")
    add("--sweep-dir", default=None, metavar="PATH",
        help="folder of the sweep: sweep.json, summary.json/.csv, logs/ and one run folder per (env, seed) "
             "under runs/; on a cluster it must be on storage every node reaches")
    add("--resume", default=None, metavar="SWEEP_DIR",
        help="continue a stopped sweep: finished runs are skipped, the others resume from their checkpoints")
    add("--address", default=None, metavar="auto|HOST:PORT",
        help="join this Ray cluster ('auto': the one `ray start` runs on this machine); default: start a "
             "local Ray instance on this machine only")
    add("--cpus-per-run", type=float, default=None,
        help="CPUs each run reserves; its torch, Numba and EnvPool threads are set to this (default: 1)")
    add("--gpus-per-run", type=float, default=None,
        help="GPUs each run reserves, fractions allowed (default: 0, runs train on the CPU)")
    add("--max-retries", type=int, default=None,
        help="times a run whose process or Ray worker died is restarted from its last checkpoint (default: 3)")


def settings_from_args(args: argparse.Namespace) -> tuple[SweepSettings, Path, bool]:
    """Check the flags and build the settings; returns (settings, sweep folder, resuming).

    Every check that needs no Ray happens here, so bad input stops before anything starts.
    """
    train_given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                   if f.name not in PER_RUN_FIELDS and getattr(args, f.name, None) is not None}
    resources = {name: getattr(args, name) for name in ("cpus_per_run", "gpus_per_run", "max_retries")
                 if getattr(args, name) is not None}
    if args.resume:
        if args.sweep_dir:
            raise ConfigError("--sweep-dir: --resume names the sweep folder already; drop --sweep-dir")
        given = [flag for flag, value in (("--env-ids", args.env_ids), ("--games", args.games),
                                          ("--seeds", args.seeds)) if value]
        given += ["--" + name.replace("_", "-") for name in train_given]
        if given:
            raise ConfigError(f"{given[0]}: a resumed sweep keeps the runs and train flags saved in its "
                              f"{SWEEP_NAME}; drop {' '.join(given)} or start a new sweep")
        folder = Path(args.resume)
        settings = dataclasses.replace(load_settings(folder), **resources)
    else:
        if not args.sweep_dir:
            raise ConfigError("--sweep-dir: expected the folder for the sweep's runs, got none; "
                              "pass --sweep-dir PATH (or --resume PATH to continue a sweep)")
        if args.env_ids and args.games:
            raise ConfigError("--games: a suite names the envs already; pass --games or --env-ids, not both")
        if not args.env_ids and not args.games:
            raise ConfigError("--env-ids: expected comma-separated EnvPool task ids, e.g. CartPole-v1,Acrobot-v1 "
                              f"(or --games {'|'.join(SUITES)} for a suite of Atari games)")
        folder = Path(args.sweep_dir)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ConfigError(f"--sweep-dir: {str(folder)!r} already exists and is not empty; pass "
                              f"--resume {folder} to continue that sweep or choose another --sweep-dir")
        env_ids = suite_env_ids("--games", args.games) if args.games else _split(args.env_ids, "--env-ids", str)
        seeds = _split("1" if args.seeds is None else args.seeds, "--seeds", int)
        for seed in seeds:
            check_seed("--seeds", seed)
        for env_id in env_ids:
            _check_train_config(env_id, dict(train_given, seed=seeds[0]), local=args.address is None)
        settings = SweepSettings(env_ids=env_ids, seeds=seeds, train_flags=tuple(train_flags(train_given)),
                                 **{"cpus_per_run": 1.0, "gpus_per_run": 0.0, "max_retries": 3, **resources})
        if train_given.get("cuda") and not settings.gpus_per_run:
            raise ConfigError("--cuda: the runs reserve no GPU; pass --gpus-per-run (e.g. 1 or 0.5) or drop --cuda")
    check_number("--cpus-per-run", settings.cpus_per_run, 0, low_open=True)
    check_number("--gpus-per-run", settings.gpus_per_run, 0)
    check_int("--max-retries", settings.max_retries, minimum=0)
    if args.address is not None:
        check_address(args.address)
    return settings, folder, bool(args.resume)


def train_flags(overrides: dict) -> list[str]:
    """``fastdqn train`` flags that set ``overrides`` (TrainConfig field -> value)."""
    argv = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            argv += [flag, ",".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    return argv


def _check_train_config(env_id: str, overrides: dict, *, local: bool) -> None:
    """Resolve the run's config as ``fastdqn train`` will and make its checks that do not
    depend on the machine (and, for a local sweep, that the network fits in this machine's
    memory); ConfigError if ``fastdqn train`` would refuse it."""
    from fastdqn.run import memory
    from fastdqn.run.envs import env_info

    task = env_info(env_id)
    try:
        config = make_config(task.kind, dict(overrides, env_id=env_id), cuda_available=False,
                             max_episode_steps=task.max_episode_steps)
        memory.replay_spec(config, task)
        if local:
            memory.check_network(config, task)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (for {env_id})") from None


def _split(text: str, flag: str, kind) -> tuple:
    items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        values = tuple(kind(x) for x in items)
    except ValueError:
        values = ()
    if not values or len(set(values)) != len(values) or (kind is int and min(values) < 0):
        what = "distinct seeds >= 0 like 1,2,3" if kind is int else "distinct task ids like CartPole-v1,Acrobot-v1"
        raise ConfigError(f"{flag}: expected comma-separated {what}, got {text!r}")
    return values


# ---- sweep.json ---------------------------------------------------------------------------------


def load_settings(folder: Path) -> SweepSettings:
    path = folder / SWEEP_NAME
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError("not a sweep file")
        s = doc["settings"]
        return SweepSettings(tuple(s["env_ids"]), tuple(s["seeds"]), tuple(s["train_flags"]),
                             float(s["cpus_per_run"]), float(s["gpus_per_run"]), int(s["max_retries"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--resume: {str(path)!r} is missing or unreadable ({type(exc).__name__}); "
                          "pass a folder written by fastdqn sweep") from None


def load_states(folder: Path) -> dict:
    """The runs' entries of ``sweep.json`` (empty if it has none)."""
    try:
        return json.loads((folder / SWEEP_NAME).read_text()).get("runs", {})
    except (OSError, ValueError):
        return {}


def write_sweep_json(folder: Path, settings: SweepSettings, runs: dict) -> None:
    doc = {"format": FORMAT, "version": VERSION, "settings": dataclasses.asdict(settings), "runs": runs}
    atomic_write(folder / SWEEP_NAME, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n"))


# ---- the driver -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """``fastdqn sweep``: 0 when every run finished, 130/143 when stopped, 1 when a run failed."""
    settings, folder, resuming = settings_from_args(args)
    starts = start_commands(settings)
    folder = folder.resolve()
    previous = load_states(folder) if resuming else {}
    ray = _import_ray(local=args.address is None)
    _start_ray(ray, args.address)
    late, shut = [], False
    try:
        _check_resources(ray, settings)
        # Validation is over: from here on the sweep folder is written.
        for sub in ("runs", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / STOP_NAME).unlink(missing_ok=True)
        runs = {}
        for name, env_id, seed in settings.run_names():
            entry = previous.get(name, {})
            runs[name] = {"env_id": env_id, "seed": seed, "run_dir": f"runs/{name}",
                          "state": FINISHED if entry.get("state") == FINISHED else QUEUED,
                          "attempts": int(entry.get("attempts", 0)), "error": None}
        write_sweep_json(folder, settings, runs)
        skipped = sum(r["state"] == FINISHED for r in runs.values())
        print(f"fastdqn sweep: {len(runs)} runs ({len(settings.env_ids)} envs x {len(settings.seeds)} seeds"
              + (f", {skipped} finished before" if skipped else "") + f") into {folder}; "
              f"{_count(settings.cpus_per_run, 'CPU')} and {_count(settings.gpus_per_run, 'GPU')} per run on "
              f"{_describe_cluster(ray, args.address)}", flush=True)
        status = _Driver(ray, settings, folder, runs, starts).run()
        # The runs are over: a signal from here on must not cut the summary short.
        handlers = {sig: signal.signal(sig, lambda signum, frame: late.append(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            shut = True
            ray.shutdown()
            done = [folder / r["run_dir"] for r in runs.values()
                    if (folder / r["run_dir"] / "config.json").exists()]
            rows = sweep_summary(find_runs(done)) if done else []
            write_summary(folder, rows)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    finally:
        if not shut:
            ray.shutdown()

    print(format_summary(rows))
    if late:
        print(f"fastdqn sweep: {signal.Signals(late[0]).name} after the runs had ended; the summary "
              f"above was written to {folder}", file=sys.stderr)
    for name, r in runs.items():
        if r["state"] == FAILED:
            print(f"failed: {name}: {r['error']}", file=sys.stderr)
    if any(r["state"] == STOPPED for r in runs.values()):
        print(f"stopped; the runs continue from their last checkpoints with: fastdqn sweep --resume {folder}")
    return status or (1 if any(r["state"] == FAILED for r in runs.values()) else 0)


def start_commands(settings: SweepSettings) -> dict[str, list[str]]:
    """The ``fastdqn train`` command line that starts each run (without ``--run-dir``).

    Threads follow the CPUs a run reserves unless the train flags set them: torch gets
    that many (or the preset's smaller count: 1 for the MLP tasks), EnvPool that many.
    Runs that reserve no GPU train on the CPU even on a GPU node (Ray leaves
    CUDA_VISIBLE_DEVICES alone for tasks without GPUs).
    """
    from fastdqn.run.envs import env_info

    flags, n = settings.train_flags, settings.threads()
    starts = {}
    for name, env_id, seed in settings.run_names():
        argv = ["train", "--env-id", env_id, "--seed", str(seed), *flags]
        if "--torch-threads" not in flags:
            preset = PRESETS[env_info(env_id).kind].get("torch_threads", 0)
            argv += ["--torch-threads", str(min(preset, n) if preset else n)]
        if "--env-threads" not in flags:
            argv += ["--env-threads", str(n)]
        if not settings.gpus_per_run and "--no-cuda" not in flags:
            argv.append("--no-cuda")
        starts[name] = argv
    return starts


def _import_ray(*, local: bool):
    return import_ray(local=local, command="sweep")


def _start_ray(ray, address: str | None) -> None:
    # Runs exchange no data through Ray: a small object store leaves the memory to replay buffers.
    start_ray(ray, address, object_store_mb=200)


def _check_resources(ray, settings: SweepSettings) -> None:
    total = ray.cluster_resources()
    for flag, key, need in (("--cpus-per-run", "CPU", settings.cpus_per_run),
                            ("--gpus-per-run", "GPU", settings.gpus_per_run)):
        have = total.get(key, 0.0)
        if need > have:
            raise ConfigError(f"{flag} {need:g}: the Ray cluster has {have:g} {key}s in all, so no run could "
                              f"ever start; lower {flag} or add nodes with {key}s")


def _describe_cluster(ray, address: str | None) -> str:
    total = ray.cluster_resources()
    where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
    return f"{where} ({_count(total.get('CPU', 0), 'CPU')}, {_count(total.get('GPU', 0), 'GPU')})"


def _count(n: float, unit: str) -> str:
    """``1 CPU``, ``2 CPUs``, ``0.5 GPUs``."""
    return f"{n:g} {unit}" + ("" if n == 1 else "s")


class _Driver:
    """Submits the runs as Ray tasks, shows progress and keeps ``sweep.json`` current."""

    def __init__(self, ray, settings: SweepSettings, folder: Path, runs: dict, starts: dict) -> None:
        self.ray, self.settings, self.folder, self.runs, self.starts = ray, settings, folder, runs, starts
        self.stop_signal: int | None = None
        self._steps = {name: last_step(self._paths(name)["run"]) for name in runs}
        self._started = time.monotonic()
        self._baseline = sum(self._steps.values())  # trained before this sweep started (resumed runs)
        self._shown = ""
        self._printed = self._started
        self._tty = sys.stderr.isatty()
        self._save_failed = False

    def run(self) -> int:
        task = self.ray.remote(run_training)
        options = dict(num_cpus=self.settings.cpus_per_run, num_gpus=self.settings.gpus_per_run,
                       max_retries=self.settings.max_retries, retry_exceptions=[RunKilled])
        pending = {}
        for name, r in self.runs.items():
            if r["state"] != FINISHED:
                p = self._paths(name)
                ref = task.options(name=f"fastdqn-{name}", **options).remote(
                    str(p["run"]), str(p["log"]), str(p["status"]), str(self.folder / STOP_NAME),
                    self.starts[name], self.settings.threads())
                pending[ref] = name
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                for ref in done:
                    self._finish(pending.pop(ref), ref)
                self._poll(pending.values())
        except KeyboardInterrupt:  # a second signal: stop at once, runs resume from their last checkpoints
            for ref, name in pending.items():
                self.ray.cancel(ref, force=True)
                self.runs[name]["state"] = STOPPED
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._show(final=True)
            (self.folder / STOP_NAME).unlink(missing_ok=True)
            self._save()
        return {signal.SIGINT: 130, signal.SIGTERM: 143}.get(self.stop_signal, 0)

    def _save(self) -> None:
        """Write ``sweep.json``; a failed write (a full disk) is reported once and tried again
        at the next change, so the runs and the sweep go on."""
        try:
            write_sweep_json(self.folder, self.settings, self.runs)
            self._save_failed = False
        except OSError as exc:
            if not self._save_failed:
                print(f"\nfastdqn sweep: could not update {SWEEP_NAME}: {exc}; trying again at the next change",
                      file=sys.stderr, flush=True)
            self._save_failed = True

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal is not None:
            raise KeyboardInterrupt
        self.stop_signal = signum
        (self.folder / STOP_NAME).touch()
        print(f"\nfastdqn sweep: {signal.Signals(signum).name}: every run saves a checkpoint and stops "
              "(again to stop at once)", file=sys.stderr, flush=True)

    def _paths(self, name: str) -> dict[str, Path]:
        return {"run": self.folder / self.runs[name]["run_dir"], "log": self.folder / "logs" / f"{name}.log",
                "status": self.folder / "logs" / f"{name}.status.json"}

    def _finish(self, name: str, ref) -> None:
        r = self.runs[name]
        try:
            r["state"] = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            r["state"], r["error"] = FAILED, str(cause).strip().splitlines()[0]
        r["attempts"] = max(r["attempts"], int(read_status(self._paths(name)["status"]).get("attempt", 0)))
        self._note_steps(name)
        self._save()

    def _poll(self, pending_names) -> None:
        changed = False
        for name in pending_names:
            r = self.runs[name]
            attempt = int(read_status(self._paths(name)["status"]).get("attempt", 0))
            if attempt > r["attempts"] or (attempt and r["state"] == QUEUED):
                r["attempts"], r["state"], changed = max(attempt, r["attempts"]), RUNNING, True
            self._note_steps(name)
        if changed:
            self._save()
        self._show()

    def _note_steps(self, name: str) -> None:
        # A retried run restarts from its checkpoint and rewrites its log from there: the
        # counter shows the most a run has reached, so the live total never goes backward.
        self._steps[name] = max(self._steps.get(name, 0), last_step(self._paths(name)["run"]))

    def _show(self, final: bool = False) -> None:
        counts = {s: sum(r["state"] == s for r in self.runs.values())
                  for s in (FINISHED, RUNNING, QUEUED, FAILED, STOPPED)}
        total = sum(self._steps.values())
        now = time.monotonic()
        # Runs flush their logs in blocks, so steps/s over a short window would jump about:
        # the average since the sweep started is steadier.
        rate = (total - self._baseline) / max(now - self._started, 1e-9)
        states = (f"{counts[FINISHED]}/{len(self.runs)} finished, {counts[RUNNING]} running, "
                  f"{counts[QUEUED]} queued, {counts[FAILED]} failed"
                  + (f", {counts[STOPPED]} stopped" if counts[STOPPED] else ""))
        line = f"sweep: {states} | {total:,} env steps, {rate:,.0f} steps/s"
        if final:
            line += f" over {now - self._started:,.0f} s"
        if self._tty:
            print("\r" + line.ljust(len(self._shown)), end="\n" if final else "", file=sys.stderr, flush=True)
            self._shown = line
        elif states != self._shown or final or now - self._printed >= 60:
            # Not a terminal (a log file): a line when a run changes state, else once a minute.
            print(line, file=sys.stderr, flush=True)
            self._shown, self._printed = states, now
