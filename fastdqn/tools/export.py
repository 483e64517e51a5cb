"""``fastdqn export RUN_DIR OUT_DIR``: a run's trained network as a folder in the layout the
Hugging Face Hub uses for RL models, optionally uploaded there (``--push-to-hub``).

The folder holds ``README.md`` (the model card, ``fastdqn.tools.model_card``),
``model.safetensors`` and ``config.json`` (``fastdqn.run.model_folder``), ``eval.json`` (the
evaluation the card reports, as ``fastdqn eval --json`` prints it) and ``replay.mp4`` when
there is a video. ``fastdqn eval OUT_DIR`` reads it back and, with the same episodes,
epsilon and seed, plays the same games as the run folder.

An existing OUT_DIR is never merged into: it must be empty or new, or hold only the files of
an earlier export, which ``--force`` replaces. Every check comes before the evaluation.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from fastdqn.errors import ConfigError, DependencyError

FILES = ("README.md", "model.safetensors", "config.json", "eval.json", "replay.mp4")
VIDEO_NAME = "replay.mp4"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_MAX_EVAL_JSON_BYTES = 1 << 24
_EVAL_KEYS = ("env_id", "global_step", "episodes", "mean", "std", "min", "max", "median", "mean_ci95", "epsilon")

DESCRIPTION = (
    "Write a run's trained network as a Hugging Face Hub model folder: README.md (model card with "
    "YAML metadata and the evaluation), model.safetensors, config.json, eval.json and replay.mp4 "
    "(--video, or the newest video in RUN_DIR/videos). fastdqn eval OUT_DIR evaluates the folder. "
    "Needs pip install 'fastdqn[hub]'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or its checkpoint file) to export")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write: new, empty, or an earlier export "
                                                           "with --force")
    parser.add_argument("--episodes", type=int, default=30, help="full games of the evaluation (default: 30)")
    parser.add_argument("--epsilon", type=float, default=0.05,
                        help="probability of a random action in the evaluation (default: 0.05, as CleanRL)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation envs (default: 12345)")
    parser.add_argument("--num-envs", type=int, default=None, help="parallel evaluation envs (default: "
                                                                   "min(episodes, 16))")
    parser.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=None,
                        help="run the network on the GPU (default: if one is available)")
    parser.add_argument("--eval-json", metavar="FILE", default=None,
                        help="reuse this evaluation (the output of fastdqn eval RUN_DIR --json) instead of "
                             "playing --episodes games; it must be of this run's env and step (default: evaluate)")
    parser.add_argument("--video", metavar="FILE", default=None,
                        help="an .mp4 of the agent to include as replay.mp4 (default: the newest "
                             "RUN_DIR/videos/eval-<step>.mp4, if any)")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier export in OUT_DIR (a folder holding other files is never "
                             "written into) (default: off)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                        help="then upload OUT_DIR to this Hugging Face Hub model repository, e.g. "
                             "user/dqn-CartPole-v1, creating it if needed; log in first (hf auth login or "
                             "HF_TOKEN) (default: no upload)")


def run(args: argparse.Namespace) -> int:
    from fastdqn.run.checkpoint import load_checkpoint, resolve_checkpoint
    from fastdqn.run.config import TrainConfig, check_seed
    from fastdqn.run.model_folder import is_model_folder
    from fastdqn.util.checks import check_int, check_number

    check_int("--episodes", args.episodes)
    check_number("--epsilon", args.epsilon, 0, 1)
    if args.num_envs is not None:
        check_int("--num-envs", args.num_envs)
    check_seed("--seed", args.seed)
    if args.push_to_hub is not None:
        check_repo_id(args.push_to_hub)
        _require("huggingface_hub", "--push-to-hub")
    _require("safetensors", "fastdqn export")
    if is_model_folder(args.run_dir):
        raise ConfigError(f"RUN_DIR: {args.run_dir!r} is an exported model folder, not a run; pass the run folder "
                          "it was exported from")
    out = Path(args.out_dir)
    check_out_dir(out, force=args.force)
    checkpoint = resolve_checkpoint(args.run_dir)
    video = find_video(args.video, checkpoint.parent)
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    step = int(state["trainer"]["global_step"])
    if args.eval_json is not None:
        stats = read_eval_json(args.eval_json, env_id=config.env_id, global_step=step)
    else:
        from fastdqn.run.launch import score_checkpoint

        stats = score_checkpoint(str(checkpoint), episodes=args.episodes, epsilon=args.epsilon, seed=args.seed,
                                 num_envs=args.num_envs, cuda=args.cuda)
    write_folder(out, config, state["learner"]["online"], step, stats, video=video, repo_id=args.push_to_hub)
    print(f"exported {config.env_id} at step {step:,} to {out}: mean {stats['mean']:.2f} +/- {stats['std']:.2f} "
          f"over {stats['episodes']} games" + (f"; video from {video}" if video else "; no video"))
    if args.push_to_hub is None:
        return 0
    return push_to_hub(out, args.push_to_hub)


def check_repo_id(repo_id: str) -> None:
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or repo_id.endswith(".git"):
        raise ConfigError(f"--push-to-hub: expected a Hub model id like user/dqn-CartPole-v1 (letters, digits, "
                          f"'-', '_', '.'), got {repo_id!r}")


def check_out_dir(out: Path, *, force: bool) -> None:
    """OUT_DIR must be new, empty, or (with ``force``) an earlier export holding only ``FILES``."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"OUT_DIR: {str(out)!r} exists and is not a folder; choose a new folder")
    if not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    others = [name for name in names if name not in FILES]
    if others:
        raise ConfigError(f"OUT_DIR: {str(out)!r} holds files fastdqn export does not write ({', '.join(others[:5])}"
                          f"{', ...' if len(others) > 5 else ''}); choose a new or empty folder")
    if not force:
        raise ConfigError(f"OUT_DIR: {str(out)!r} holds an earlier export ({', '.join(names)}); pass --force to "
                          "replace it, or choose a new folder")


def find_video(given: str | None, run_dir: Path) -> Path | None:
    """``--video``, else the run's newest ``videos/eval-<step>.mp4``, else None."""
    if given is not None:
        path = Path(given)
        if not path.is_file() or path.suffix.lower() != ".mp4":
            raise ConfigError(f"--video: expected an existing .mp4 file, got {given!r}")
        return path
    found = []
    for path in (run_dir / "videos").glob("eval-*.mp4"):
        match = re.fullmatch(r"eval-(\d+)\.mp4", path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        return None
    newest = max(found)[1]
    if newest.is_symlink() or not newest.is_file():
        raise ConfigError(f"RUN_DIR: its video {str(newest)!r} is not a regular file (a run folder's files are read "
                          "only from the folder itself); pass the video with --video FILE")
    return newest


def read_eval_json(path: str, *, env_id: str, global_step: int) -> dict:
    """The evaluation in ``path`` (``fastdqn eval --json``), refused unless it scores this run."""
    from fastdqn.util.checks import is_number

    file = Path(path)
    if not file.is_file() or file.stat().st_size > _MAX_EVAL_JSON_BYTES:
        raise ConfigError(f"--eval-json: expected the file fastdqn eval RUN_DIR --json wrote, got {path!r}")
    try:
        stats = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"--eval-json: {path!r} is not JSON; write it with fastdqn eval RUN_DIR --json > FILE") from None
    missing = [key for key in _EVAL_KEYS if not isinstance(stats, dict) or key not in stats]
    if missing:
        raise ConfigError(f"--eval-json: {path!r} lacks {', '.join(missing)}; write it with "
                          "fastdqn eval RUN_DIR --json > FILE")
    numbers = [stats[key] for key in ("mean", "std", "min", "max", "median", "epsilon")] + list(stats["mean_ci95"])
    if not all(is_number(v) for v in numbers) or not isinstance(stats["episodes"], int):
        raise ConfigError(f"--eval-json: {path!r} holds non-numeric scores; write it with fastdqn eval RUN_DIR --json")
    if (stats["env_id"], stats["global_step"]) != (env_id, global_step):
        raise ConfigError(f"--eval-json: it scores {stats['env_id']} at step {stats['global_step']}, the run is "
                          f"{env_id} at step {global_step}; evaluate this checkpoint again (drop --eval-json)")
    return stats


def write_folder(out: Path, config, online: dict, global_step: int, stats: dict, *, video: Path | None,
                 repo_id: str | None) -> None:
    """Write every file of the export into ``out`` (each atomically); remove an earlier export's
    files that this one does not write (its video)."""
    import dataclasses

    from fastdqn.run.model_folder import write_model_folder
    from fastdqn.tools.model_card import model_card
    from fastdqn.util.atomic import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    # The run folder's local path says nothing about the model; it stays out of a public file.
    write_model_folder(out, dataclasses.replace(config, run_dir=""), online, global_step=global_step)
    atomic_write(out / "eval.json", lambda tmp: Path(tmp).write_text(json.dumps(stats, indent=2) + "\n"))
    if video is not None:
        atomic_write(out / VIDEO_NAME, lambda tmp: shutil.copyfile(video, tmp))
    else:
        (out / VIDEO_NAME).unlink(missing_ok=True)
    card = model_card(config, stats, repo_id=repo_id, folder=out.name, video=video is not None)
    atomic_write(out / "README.md", lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))


def push_to_hub(folder: Path, repo_id: str) -> int:
    """Upload ``folder`` to the Hub model repository ``repo_id`` (created if missing) in one commit."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                          commit_message="fastdqn export")
    except Exception as exc:
        print(f"fastdqn: error: uploading {folder} to {repo_id} failed ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); the folder is complete: log in "
              f"(hf auth login) and upload it with hf upload {repo_id} {folder}",
              file=sys.stderr)
        return 1
    print(f"uploaded to https://huggingface.co/{repo_id}")
    return 0


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise DependencyError(f"{what}: needs the {module} package; pip install 'fastdqn[hub]'")
