"""Checkpoint files: written atomically (``fastdqn.util.atomic``), read without running anything
in them. The optional replay buffer goes to a sibling file named after the step, written before
the checkpoint that points to it; older buffer files are removed afterwards.

Reading lists the globals the pickle refers to, without building anything, and refuses the
file unless they are only those of tensors; then ``torch.load(weights_only=True)`` builds it
and every field is checked before use (the learner's part by ``Learner.load_state_dict``).
Format version 1 also held NumPy's global RNG state: it is read with exactly NumPy's
array-rebuilding globals allowed as well, and that state is dropped (README, "What a
checkpoint holds, and how it is read").
"""

from __future__ import annotations

import os
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from fastdqn.util.atomic import atomic_write
from fastdqn.run.config import TrainConfig
from fastdqn.errors import CheckpointError, ConfigError
from fastdqn.util.checks import describe, is_number

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "fastdqn-checkpoint"
VERSION = 3

# What a pickle of tensors in dicts and lists refers to. The last two rebuild a tensor that
# carries Python attributes: torch.compile marks Adam's state tensors with one, and runs of
# compiled learners wrote them into their checkpoints before the learner copied them plain.
_TENSOR_GLOBALS = frozenset({"torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "torch.Tensor",
                             "torch._tensor._rebuild_from_type_v2"} | {
    f"torch.{kind}Storage"
    for kind in ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
})
# What version 1's np.random.get_state() (a uint32 array) adds; NumPy 1.x wrote numpy.core.
_V1_NUMPY_GLOBALS = {
    "numpy._core.multiarray._reconstruct": _reconstruct,
    "numpy.core.multiarray._reconstruct": _reconstruct,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "_codecs.encode": None,  # rebuilds the array's bytes; torch allows it already
}
# The loader sets the state of the uint32 dtype it built, so allows that dtype's class too.
_V1_DTYPE_CLASS = type(np.dtype(np.uint32))
_KEYS = {"format", "version", "config", "learner", "trainer", "obs_shape", "buffer_file"}
_TRAINER_KEYS = {"global_step", "pending", "learn_after", "episodes", "last_eval", "torch_rng", "cuda_rng"}
# The drawn batch and the TD errors not yet written back; files written before them lack
# them, and are read as if they held None.
_TRAINER_REPLAY_KEYS = {"next_batch", "pending_priorities", "run_id"}
_COUNTERS = ("global_step", "pending", "learn_after", "episodes")
_FIX = "the file is damaged or was edited: use an older copy or start a new run"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the ``checkpoint.pt`` inside a run folder; a symbolic link is
    refused (it may point into another run, which a resume would then write over)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.is_symlink():
        raise CheckpointError(f"checkpoint: {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); "
                              "a run folder's files are read only from the folder itself: copy the file "
                              "in place of the link")
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {str(path)!r}; pass a checkpoint file or a run folder "
                              f"holding {CHECKPOINT_NAME}")
    return path


def replay_file_name(global_step: int) -> str:
    return f"replay-{global_step}.bin"


def save_checkpoint(run_dir: str | os.PathLike, state: dict, buffer=None) -> Path:
    """Write ``state`` (and ``buffer`` via its ``save``) into ``run_dir`` atomically."""
    run_dir = Path(run_dir)
    state = dict(state, format=FORMAT, version=VERSION, buffer_file=None)
    new_buffer = None
    if buffer is not None:
        step = int(state["trainer"]["global_step"])
        name = replay_file_name(step)
        if not (run_dir / name).exists():
            new_buffer = run_dir / name
        # atomic and fsynced by ReplayBuffer.save itself; the tag ties the file to this checkpoint
        buffer.save(run_dir / name, tag={"run_id": state["trainer"].get("run_id"), "global_step": step})
        state["buffer_file"] = name
    path = run_dir / CHECKPOINT_NAME
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except BaseException:
        if new_buffer is not None:  # no checkpoint points to it: give its space back
            new_buffer.unlink(missing_ok=True)
        raise
    for old in run_dir.glob("replay-*.bin"):
        if old.name != state["buffer_file"]:
            old.unlink()
    # Temporary files of writes that a kill -9 interrupted earlier.
    for stale in [*run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"), *run_dir.glob(".replay-*.tmp")]:
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and check a checkpoint written by ``save_checkpoint`` (format version 1 to 3).

    Returns its dict in the current version's form, with ``path`` added; raises
    ``CheckpointError`` naming the first bad field. The ``learner`` part is checked
    against the network it is loaded into, by ``Learner.load_state_dict``.
    """
    path = resolve_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    foreign = _pickle_globals(path, where) - _TENSOR_GLOBALS
    if foreign - set(_V1_NUMPY_GLOBALS):
        raise CheckpointError(
            f"{where}: refused, its pickle refers to {sorted(foreign)}; a fastdqn checkpoint holds only "
            "tensors and plain values, so nothing in this file was loaded: do not use files of unknown origin"
        )
    numpy_globals = [(obj, name) for name, obj in _V1_NUMPY_GLOBALS.items() if name in foreign and obj]
    if numpy_globals:
        numpy_globals.append(_V1_DTYPE_CLASS)
    try:
        with torch.serialization.safe_globals(numpy_globals):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{where} is truncated or corrupt ({type(exc).__name__}); "
                              "use an older copy or start a new run") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a fastdqn checkpoint")
    version = state.get("version")
    if type(version) is not int or version not in (1, 2, VERSION):
        raise CheckpointError(f"{where} has format version {version!r}; this fastdqn reads versions 1 to "
                              f"{VERSION}: use the fastdqn that wrote it")
    if version == 1:
        _drop_numpy_rng(state, where)
    elif foreign:
        raise CheckpointError(f"{where}: a version-{version} checkpoint holds no NumPy objects, this one "
                              f"refers to {sorted(foreign)}; {_FIX}")
    _check_document(state, where)
    drawn = state["trainer"]["next_batch"]
    if version < 3 and drawn is not None and drawn["weight"] is None:
        # Before version 3 a uniform batch's ids were slot ids; the buffer saved beside the
        # checkpoint turns them into transition ids when the run resumes.
        drawn["slot_ids"] = True
    state["version"] = VERSION
    state["path"] = str(path)
    return state


def check_buffer_tag(state: dict, tag, path: Path) -> None:
    """Refuse a replay file that was not saved with this checkpoint: its tag (run id and step)
    must be the checkpoint's. Checkpoints from before run ids are not checked."""
    run_id, step = state["trainer"]["run_id"], state["trainer"]["global_step"]
    if run_id is None:
        return
    expected = {"run_id": run_id, "global_step": step}
    if tag != expected:
        raise CheckpointError(
            f"checkpoint: its replay buffer file {str(path)!r} was not saved with it (the file says "
            f"{tag!r}, the checkpoint run {run_id} at step {step}); it was copied from another run or "
            "replaced: restore the run folder's own file from an older copy of the folder")


def buffer_path(state: dict) -> Path | None:
    """The replay file saved with a checkpoint (in the checkpoint's own folder), or None."""
    name = state.get("buffer_file")
    if name is None:
        return None
    folder = Path(state["path"]).parent
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint: its replay buffer file {str(path)!r} is missing")
    if path.resolve().parent != folder.resolve():
        raise CheckpointError(f"checkpoint: its replay buffer file {str(path)!r} links outside the run folder "
                              f"{str(folder)!r}; copy the file itself into the folder")
    if path.is_symlink():
        raise CheckpointError(f"checkpoint: its replay buffer file {str(path)!r} is a symbolic link; "
                              "copy the file itself into the run folder")
    return path


# ---- reading --------------------------------------------------------------------------


def _pickle_globals(path: Path, where: str) -> set[str]:
    """The globals named by the checkpoint's pickle, read from its opcodes (builds nothing).

    Opcodes that name globals another way are listed as ``<OPCODE>``, which no allow-list holds.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            pickles = [r for r in records if r.filename.endswith("/data.pkl") and r.filename.count("/") == 1]
            # torch.save stores records uncompressed: a record is never larger than the file.
            if len(pickles) != 1 or any(r.compress_type != zipfile.ZIP_STORED for r in records):
                raise ValueError("not the layout torch.save writes")
            data = archive.read(pickles[0])
        names = set()
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                names.add(arg.replace(" ", "."))
            elif opcode.name in ("STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                names.add(f"<{opcode.name}>")
    except Exception as exc:
        raise CheckpointError(f"{where} is truncated or corrupt ({type(exc).__name__}); "
                              "use an older copy or start a new run") from None
    return names


def _drop_numpy_rng(state: dict, where: str) -> None:
    """Version 1 -> current: drop ``trainer.numpy_rng`` (NumPy's global RNG, unused)."""
    trainer = state.get("trainer")
    saved = trainer.pop("numpy_rng", None) if isinstance(trainer, dict) else None
    if not (isinstance(saved, tuple) and len(saved) == 5 and saved[0] == "MT19937"
            and isinstance(saved[1], np.ndarray) and saved[1].dtype == np.uint32 and saved[1].shape == (624,)):
        _bad(where, "trainer.numpy_rng", "np.random.get_state() (format version 1)", describe(saved))
    state["version"] = VERSION


def _check_document(state: dict, where: str) -> None:
    if set(state) != _KEYS:
        _bad(where, "its fields", sorted(_KEYS), sorted(map(str, state)))
    try:
        TrainConfig.from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{where}: config: {exc}; {_FIX}") from None
    shape = state["obs_shape"]
    if not (isinstance(shape, (tuple, list)) and shape and all(_count(x) and x > 0 for x in shape)):
        _bad(where, "obs_shape", "a non-empty tuple of positive ints", repr(shape))
    if not isinstance(state["learner"], dict):
        _bad(where, "learner", "a dict", describe(state["learner"]))
    trainer = state["trainer"]
    if not isinstance(trainer, dict) or not _TRAINER_KEYS <= set(trainer) <= _TRAINER_KEYS | _TRAINER_REPLAY_KEYS:
        _bad(where, "trainer", f"a dict with keys {sorted(_TRAINER_KEYS)} (and optionally "
                               f"{sorted(_TRAINER_REPLAY_KEYS)})", describe(trainer))
    for name in _TRAINER_REPLAY_KEYS:
        trainer.setdefault(name, None)
    _check_replay_state(trainer, where)
    run_id = trainer["run_id"]
    if run_id is not None and not (isinstance(run_id, str) and re.fullmatch(r"[0-9a-f]{32}", run_id)):
        _bad(where, "trainer.run_id", "None or 32 hex digits", repr(run_id))
    for name in _COUNTERS:
        if not _count(trainer[name]):
            _bad(where, f"trainer.{name}", "an int >= 0", repr(trainer[name]))
    _check_last_eval(trainer["last_eval"], where)
    _check_rng_tensor(trainer["torch_rng"], where, "trainer.torch_rng", torch.get_rng_state().shape)
    cuda_rng = trainer["cuda_rng"]
    if cuda_rng is not None:
        if not isinstance(cuda_rng, list):
            _bad(where, "trainer.cuda_rng", "None or a list of uint8 tensors", describe(cuda_rng))
        for i, value in enumerate(cuda_rng):
            _check_rng_tensor(value, where, f"trainer.cuda_rng[{i}]", None)
    name = state["buffer_file"]
    expected = replay_file_name(trainer["global_step"])
    if name is not None and name != expected:
        _bad(where, "buffer_file", f"None or {expected!r} (a file in the run folder named after "
                                   "trainer.global_step)", repr(name))


def _check_replay_state(trainer: dict, where: str) -> None:
    """``next_batch``: None or {index, weight}; ``pending_priorities``: None or {index, td_error}.
    Whether the ids are in the saved buffer is checked when the trainer hands them to it."""
    for name, second, low in (("next_batch", "weight", "> 0"), ("pending_priorities", "td_error", ">= 0")):
        value = trainer[name]
        if value is None:
            continue
        if not isinstance(value, dict) or set(value) != {"index", second}:
            _bad(where, f"trainer.{name}", f"None or a dict with keys index, {second}", describe(value))
        index = value["index"]
        if not (isinstance(index, torch.Tensor) and index.dtype == torch.int64 and index.dim() == 1
                and index.numel() > 0 and bool((index >= 0).all())):
            _bad(where, f"trainer.{name}.index", "a non-empty 1-D int64 tensor of transition ids >= 0",
                 _describe_tensor(index))
        numbers = value[second]
        if numbers is None and name == "next_batch":
            continue  # a batch of uniform replay has no weights
        good = (isinstance(numbers, torch.Tensor) and numbers.dtype == torch.float32
                and numbers.shape == index.shape and bool(torch.isfinite(numbers).all()))
        if good:
            good = bool((numbers > 0).all()) if low == "> 0" else bool((numbers >= 0).all())
        if not good:
            _bad(where, f"trainer.{name}.{second}", f"a float32 tensor of shape {tuple(index.shape)} "
                 f"of finite values {low}" + (" (or None)" if name == "next_batch" else ""),
                 _describe_tensor(numbers))


def _describe_tensor(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}" + (
            f" with min {value.min().item()!r}" if value.numel() and not value.dtype.is_complex else "")
    return describe(value)


def _check_last_eval(value, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or set(value) != {"global_step", "mean", "std"}:
        _bad(where, "trainer.last_eval", "None or a dict with keys global_step, mean, std", describe(value))
    if not _count(value["global_step"]):
        _bad(where, "trainer.last_eval.global_step", "an int >= 0", repr(value["global_step"]))
    for key in ("mean", "std"):
        number = value[key]
        if not is_number(number):
            _bad(where, f"trainer.last_eval.{key}", "a finite number", repr(number))


def _check_rng_tensor(value, where: str, name: str, shape) -> None:
    if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1
            and (shape is None or value.shape == shape)):
        got = f"{value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
            else describe(value)
        want = "a 1-D uint8 tensor" + ("" if shape is None else f" of shape {tuple(shape)}")
        _bad(where, name, f"{want} (torch's RNG state)", got)


def _count(value) -> bool:
    return type(value) is int and value >= 0



def _bad(where: str, field: str, expected, got) -> None:
    raise CheckpointError(f"{where}: {field}: expected {expected}, got {got}; {_FIX}")
