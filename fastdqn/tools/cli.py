"""The ``fastdqn`` command line: its parser, the dispatch to ``train``, ``eval`` (both in
``fastdqn.run.launch``), ``export``, ``bench``, ``sweep`` and ``plot``, and the exit statuses (README,
"Exit statuses"): every failure is one line on stderr. Train flags are generated from
``TrainConfig``'s fields and default to None here; ``make_config`` fills in the preset of the
environment's kind, so the frozen config only ever holds concrete values.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import warnings

from fastdqn.errors import FastDQNError, TrainingError
from fastdqn.run.config import ATARI, CLEANRL, EVAL_PROTOCOLS, NAMED_PRESETS, PRESETS, VECTOR, TrainConfig
from fastdqn.run.signals import Interrupted, StopSignals

EXIT_FAILED = 1
"""Training started and had to stop; the message names the checkpoint that was kept."""
EXIT_USAGE = 2
"""Bad input, found before anything was allocated or written."""
EXIT_INTERRUPTED = 3
"""A signal stopped the command at once; no checkpoint was written by it."""


class UsageError(FastDQNError):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line (the usage stays under ``--help``)."""

    def error(self, message: str):
        raise UsageError(f"{message}; see {self.prog} --help")


def main(argv: list[str] | None = None) -> int:
    # First of all, so that a signal during the imports below is reported in one line too.
    with StopSignals() as signals:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.command is None:
                raise UsageError("expected a command: train, eval, export, bench, sweep or plot; see fastdqn --help")
            # EnvPool's classic-control specs declare float64 bounds that gymnasium warns about on
            # every env creation; the observations themselves are float32 and exact.
            warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32",
                                    category=UserWarning)
            if args.command == "train":
                return _train(args, signals)
            return args.handler(args)
        except Interrupted as exc:
            print(f"fastdqn: stopped by {signal.Signals(exc.signum).name}{signals.note}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except TrainingError as exc:
            print(f"fastdqn: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except (FastDQNError, MemoryError) as exc:
            print(f"fastdqn: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            resume = " (--resume continues from the last checkpoint written)" if argv_command(argv) == "train" else ""
            print(f"fastdqn: error: {exc}; fix the cause and run again{resume}", file=sys.stderr)
            return EXIT_FAILED


def argv_command(argv: list[str] | None) -> str | None:
    """The command word of ``argv`` (or of ``sys.argv``), if there is one."""
    words = sys.argv[1:] if argv is None else argv
    return next((str(w) for w in words if not str(w).startswith("-")), None)


# ---- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastdqn", description="Fast DQN on batched EnvPool environments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,export,bench,sweep,plot}")

    train = sub.add_parser(
        "train", help="train a DQN agent",
        description="Train a DQN agent. Defaults depend on the task: Atari ids get CleanRL dqn_atari.py's "
                    "hyperparameters and NatureCNN; vector-observation ids (CartPole-v1, ...) an MLP "
                    "preset that learns in about a minute on a CPU. Any flag overrides.",
    )
    for f in dataclasses.fields(TrainConfig):
        _add_field(train, f)
    train.add_argument("--resume", metavar="PATH", default=None,
                       help="continue a run from its checkpoint file or run folder")
    train.add_argument("--preset", choices=sorted(NAMED_PRESETS), default=None, help=_preset_help())

    ev = sub.add_parser("eval", help="play full games with a trained checkpoint")
    ev.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR",
                    help="checkpoint file, run folder, or model folder written by fastdqn export")
    ev.add_argument("--episodes", type=int, default=10, help="full games to play (default: 10)")
    ev.add_argument("--epsilon", type=float, default=None,
                    help="probability of a random action (default: the protocol's, cleanrl 0.05, machado 0.01)")
    ev.add_argument("--seed", type=int, default=12345, help="seed of the evaluation envs (default: 12345)")
    ev.add_argument("--num-envs", type=int, default=None, help="parallel envs (default: min(episodes, 16))")
    ev.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=None,
                    help="run the network on the GPU (default: if one is available)")
    ev.add_argument("--json", action="store_true", help="print the statistics as one JSON object (default: off)")
    ev.add_argument("--eval-protocol", choices=EVAL_PROTOCOLS, default=CLEANRL,
                    help="cleanrl: full games, --epsilon, --noop-starts and the run's sticky actions; machado "
                         "(Atari): sticky actions 0.25, no no-op starts, 108,000-frame games, epsilon 0.01 "
                         "(default: cleanrl; docs/evaluation.md)")
    ev.add_argument("--noop-starts", type=int, default=None,
                    help="up to this many random no-op actions at the start of each Atari game (default: 30, "
                         "Nature DQN's; 0: none; cleanrl protocol only)")
    ev.add_argument("--video", metavar="PATH", default=None,
                    help="also write env 0's games as a video: .mp4, or .gif (needs pip install 'fastdqn[video]')")
    ev.set_defaults(handler=_eval)

    import fastdqn.tools.export as export_module

    export = sub.add_parser("export", help="write a run's network as a Hugging Face Hub model folder",
                            description=export_module.DESCRIPTION)
    export_module.add_arguments(export)
    export.set_defaults(handler=export_module.run)

    bench = sub.add_parser("bench", help="measure throughput of fastdqn's components")
    try:
        import fastdqn.tools.bench.command as bench_module
    except ImportError:
        bench.set_defaults(handler=_bench_missing)
    else:
        bench_module.add_arguments(bench)
        bench.set_defaults(handler=bench_module.run)

    import fastdqn.tools.plot as plot_module
    import fastdqn.tools.sweep as sweep_module

    sweep = sub.add_parser(
        "sweep", help="train every (env, seed) pair as its own run, on Ray",
        description="Run fastdqn train once per (env, seed) pair, each run a Ray task that reserves "
                    "--cpus-per-run CPUs and --gpus-per-run GPUs, on a local Ray instance or a cluster "
                    "(--address). Train flags given here apply to every run. Needs pip install 'fastdqn[ray]'.",
    )
    sweep_module.add_arguments(sweep)
    forwarded = sweep.add_argument_group("train flags", "given to every run's fastdqn train")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in sweep_module.PER_RUN_FIELDS:
            _add_field(forwarded, f)
    sweep.set_defaults(handler=sweep_module.run)

    plot = sub.add_parser("plot", help="draw learning curves and aggregate scores of runs or sweeps",
                          description=plot_module.DESCRIPTION)
    plot_module.add_arguments(plot)
    plot.set_defaults(handler=plot_module.run)
    return parser


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    flag = "--" + f.name.replace("_", "-")
    help_text = f.metadata["help"] + _default_text(f)
    if f.type in ("bool", bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        return
    kwargs: dict = {"default": None, "help": help_text}
    if f.name == "hidden":
        kwargs.update(type=_int_tuple, metavar="W1,W2")
    elif f.type in ("int", int):
        kwargs.update(type=int)
    elif f.type in ("float", float):
        kwargs.update(type=float)
    if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
    parser.add_argument(flag, **kwargs)


def _preset_help() -> str:
    """What each named preset sets, from ``NAMED_PRESETS`` itself."""
    def flags(values: dict) -> str:
        return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v:g}" if isinstance(v, float) else f" {v}")
                        for k, v in values.items())

    parts = []
    for name, by_kind in NAMED_PRESETS.items():
        atari, vector = by_kind[ATARI], by_kind[VECTOR]
        if not atari and not vector:
            parts.append(f"{name}: the defaults")
            continue
        common = {k: v for k, v in vector.items() if atari.get(k) == v}
        only = [(kind, {k: v for k, v in values.items() if k not in common})
                for kind, values in (("Atari", atari), ("vector envs", vector))]
        parts.append(f"{name}: {flags(common)}"
                     + "".join(f", on {kind} also {flags(extra)}" for kind, extra in only if extra))
    return ("named hyperparameters on top of the task's defaults, overridden by any flag given; "
            + "; ".join(parts) + " (README, \"Presets\")")


def _default_text(f: dataclasses.Field) -> str:
    """'(default: X)', or per kind of env when the presets differ."""
    if f.name in ("cuda", "run_dir", "env_batch_size", "max_episode_steps", "wandb_entity", "address"):
        return ""  # their help says how they default
    atari = PRESETS[ATARI].get(f.name, f.default)
    vector = PRESETS[VECTOR].get(f.name, f.default)
    fmt = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731
    if atari == vector:
        return f" (default: {fmt(atari)})"
    return f" (default: Atari {fmt(atari)}, vector {fmt(vector)})"


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 120,84, got {text!r}") from None


# ---- commands whose bodies live elsewhere -------------------------------------------------


def _train(args: argparse.Namespace, signals: StopSignals) -> int:
    from fastdqn.run.launch import train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return train(overrides, resume=args.resume, preset=args.preset, signals=signals)


def _eval(args: argparse.Namespace) -> int:
    from fastdqn.run.launch import evaluate_checkpoint

    return evaluate_checkpoint(args.checkpoint, episodes=args.episodes, epsilon=args.epsilon, seed=args.seed,
                               num_envs=args.num_envs, cuda=args.cuda, as_json=args.json,
                               protocol=args.eval_protocol, noop_starts=args.noop_starts, video=args.video)


def _bench_missing(args: argparse.Namespace) -> int:
    raise UsageError("bench: fastdqn.tools.bench.command is not available in this installation")


if __name__ == "__main__":
    sys.exit(main())
