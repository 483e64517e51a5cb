"""``fastdqn bench``: throughput of every part of the training loop, each beside its ceiling, in
one process: env, replay, feed, learner, collect and train (``sections``), the device-resident
replay buffer (``device``) and n-step, prioritized replay and dueling beside plain Double DQN
(``rainbow``). Every figure is the median over repeats, with the spread (half the range). This
module owns the command: its flags, their checks, the order of the sections, the table and the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from fastdqn.errors import ConfigError
from fastdqn.run.config import check_seed
from fastdqn.tools.bench.device import section_device
from fastdqn.tools.bench.harness import DEFAULT, QUICK, Context, Sizes
from fastdqn.tools.bench.measure import Figure, format_table, machine_info, write_json
from fastdqn.tools.bench.rainbow import section_rainbow
from fastdqn.tools.bench.sections import (section_collect, section_env, section_feed, section_learner,
                                          section_replay, section_train)
from fastdqn.util.checks import check_int, parse_device

SECTION_FUNCS = {"env": section_env, "replay": section_replay, "feed": section_feed, "learner": section_learner,
                 "collect": section_collect, "train": section_train, "device": section_device,
                 "rainbow": section_rainbow}
SECTIONS = tuple(SECTION_FUNCS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fastdqn bench`` flags."""
    add = parser.add_argument
    add("--env-id", default="Breakout-v5", help="EnvPool task id (default %(default)s)")
    add("--num-envs", type=int, default=8, help="parallel EnvPool envs (default %(default)s)")
    add("--device", default="cpu", help="torch device of the learner: cpu or cuda (default %(default)s)")
    add("--async-envs", action="store_true", help="also measure EnvPool's async mode")
    add("--env-batch-size", type=int, default=0, help="envs per async batch (0: num-envs / 2)")
    add("--batch-size", type=int, default=32, help="replay sample and update batch size (default %(default)s)")
    add("--quick", action="store_true", help="fewer, shorter repeats (under 2 minutes on 2 cores)")
    add("--repeats", type=int, default=0, help="repeats per figure (0: 3 quick, 5 default)")
    add("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    add("--no-compile", action="store_true", help="skip the torch.compile figures")
    add("--json", default=None, metavar="PATH", help="also write the figures as JSON here")
    add("--seed", type=int, default=0, help="seed of envs, data and networks (default %(default)s)")
    add("--torch-threads", type=int, default=0,
        help="CPU threads for torch (0: torch's default); 1 is steadier on a busy machine")


def check_args(args: argparse.Namespace) -> list[str]:
    """Validate the flags; return the sections to run."""
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ConfigError(f"--sections: expected names from {','.join(SECTIONS)}, got {args.sections!r}")
    for name, minimum in (("num_envs", 1), ("batch_size", 1), ("repeats", 0), ("torch_threads", 0)):
        check_int(f"--{name.replace('_', '-')}", getattr(args, name), minimum=minimum)
    if args.async_envs and not 0 <= args.env_batch_size < args.num_envs:
        raise ConfigError(f"--env-batch-size: async mode needs it below --num-envs ({args.num_envs}), "
                          f"got {args.env_batch_size}; lower it or raise --num-envs")
    check_seed("--seed", args.seed)
    if args.json:
        _check_output_file("--json", Path(args.json))
    parse_device(args.device, name="--device", fix="use --device cpu")
    return sections


def _check_output_file(flag: str, path: Path) -> None:
    """Refuse, before any measuring, a file that could not be written at the end."""
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r} is a folder; give a file name")
    if not folder.is_dir():
        raise ConfigError(f"{flag}: the folder {str(folder)!r} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{flag}: no permission to write {str(path)!r}; choose another path")


def run(args: argparse.Namespace, sizes: Sizes | None = None) -> int:
    """Run the chosen sections, printing each one's table as it finishes; write JSON when
    asked. A signal keeps what finished: its tables are printed and written before the
    command stops. 0 on success."""
    import torch

    from fastdqn.run.envs import env_info

    sections = check_args(args)
    _quiet_libraries()
    sizes = sizes or (QUICK if args.quick else DEFAULT)
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.device.startswith("cuda:"):  # where the learners' "cuda" (the current device) goes
        torch.cuda.set_device(torch.device(args.device))
    machine = machine_info(args.device)
    print(f"fastdqn bench: {args.env_id}, {args.num_envs} envs, {args.device} "
          f"({torch.get_num_threads()} torch threads), "
          f"{'quick' if args.quick else 'default'} ({sizes.repeats} repeats), sections {','.join(sections)}")
    print(f"machine: {machine['cpu']}, {machine['logical_cores']} cores"
          + (f", {machine['gpu']}" if machine["gpu"] else "") + f", {machine['date']}", flush=True)
    ctx = Context(args, sizes, env_info(args.env_id))
    figures: list[Figure] = []
    done: list[str] = []
    start = time.perf_counter()
    try:
        for name in sections:
            began = time.perf_counter()
            print(f"\n[{name}] measuring ...", flush=True)
            found = SECTION_FUNCS[name](ctx)
            figures += found
            done.append(name)
            print(f"[{name}] {time.perf_counter() - began:.0f} s\n{format_table(found)}", flush=True)
    finally:
        elapsed = time.perf_counter() - start
        stopped = len(done) < len(sections)
        print(f"\n{len(done)} of {len(sections)} sections in {elapsed:.0f} s"
              + (f"; stopped during {sections[len(done)]!r}, the finished ones are kept" if stopped else ""),
              flush=True)
        if args.json and figures:
            settings = {k: v for k, v in vars(args).items() if not callable(v)}
            settings.update(sizes=dataclasses.asdict(sizes), elapsed_s=elapsed, sections_done=done,
                            torch_threads_used=torch.get_num_threads())
            write_json(args.json, figures, machine, settings)
    return 0


def _quiet_libraries() -> None:
    """Hide warnings a bench user can do nothing about (torch's compile and profiler notes,
    gymnasium's float64 bounds), so the tables are what the command prints."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("torch", "torch._dynamo", "torch._inductor", "torch._logging"):
        logging.getLogger(name).setLevel(logging.ERROR)
