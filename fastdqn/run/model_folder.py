"""Model folders: a trained network as the Hugging Face Hub keeps RL models, ``model.safetensors``
(the online network's tensors) beside ``config.json`` (the run's ``TrainConfig``), written by
``fastdqn export`` and read by ``fastdqn eval``.

Reading one runs nothing from it: the config is JSON checked by ``TrainConfig``, the weights
a safetensors file (a JSON header and raw bytes, no pickle). Both must be regular files in the
folder itself (no symbolic links), no larger than the network the config describes needs, and
every tensor's name, shape and dtype must be that network's own, with finite values.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from fastdqn.errors import CheckpointError, ConfigError, DependencyError
from fastdqn.run.config import TrainConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "fastdqn-model"
VERSION = 1
_MAX_CONFIG_BYTES = 1 << 20
# A header holds each tensor's name, dtype, shape and offsets: a few hundred bytes per tensor.
_MAX_HEADER_BYTES = 1 << 20
_FIX = "export the run again with fastdqn export"


@dataclass(frozen=True)
class ModelFolder:
    """What a model folder holds: the run's config, its online network's tensors (checked
    against the network that config builds) and the env step they were saved at."""

    path: Path
    config: TrainConfig
    online: dict
    global_step: int


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding ``model.safetensors`` (link or not: reading refuses links)."""
    path = Path(path)
    weights = path / WEIGHTS_NAME
    return path.is_dir() and (weights.exists() or weights.is_symlink())


def write_model_folder(folder: str | os.PathLike, config: TrainConfig, online: dict, *, global_step: int) -> None:
    """Write ``online`` (a state dict of the network ``config`` builds) and ``config`` into ``folder``."""
    from fastdqn.util.atomic import atomic_write

    save_file = _safetensors().save_file
    folder = Path(folder)
    check_network_tensors(_expected_tensors(config), online, f"{str(folder)!r}")
    # safetensors stores plain row-major tensors; a compiled CPU run keeps conv weights channels-last.
    tensors = {name: value.detach().to("cpu").contiguous() for name, value in online.items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "env_id": config.env_id, "global_step": str(global_step)}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    atomic_write(folder / CONFIG_NAME,
                 lambda tmp: Path(tmp).write_text(json.dumps(config.to_dict(), indent=2) + "\n"))


def load_model_folder(folder: str | os.PathLike) -> ModelFolder:
    """Read and check the model folder at ``folder``; ``CheckpointError`` names the first bad part."""
    load = _safetensors().load
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        _check_regular(path, folder)
    if config_path.stat().st_size > _MAX_CONFIG_BYTES:
        raise CheckpointError(f"model folder: {str(config_path)!r} is larger than {_MAX_CONFIG_BYTES:,} bytes; "
                              f"a fastdqn config is a few KB: {_FIX}")
    try:
        config = TrainConfig.from_dict(json.loads(config_path.read_bytes().decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"model folder: {str(config_path)!r} is not JSON ({type(exc).__name__}); {_FIX}") from None
    except ConfigError as exc:
        raise CheckpointError(f"model folder: {str(config_path)!r}: {exc}; {_FIX}") from None
    expected = _expected_tensors(config)
    limit = 8 + _MAX_HEADER_BYTES + sum(t.numel() * t.element_size() for t in expected.values())
    size = weights_path.stat().st_size
    if size > limit:
        raise CheckpointError(f"model folder: {str(weights_path)!r} holds {size:,} bytes, the network of its "
                              f"config.json needs at most {limit:,}; {_FIX}")
    data = weights_path.read_bytes()
    where = f"model folder: {str(weights_path)!r}"
    metadata = _header_metadata(data, where)
    if metadata.get("format") != FORMAT or metadata.get("version") != str(VERSION):
        raise CheckpointError(f"{where}: expected metadata format {FORMAT!r} version {VERSION}, got format "
                              f"{metadata.get('format')!r} version {metadata.get('version')!r}; {_FIX}")
    if metadata.get("env_id") != config.env_id:
        raise CheckpointError(f"{where}: its weights are for {metadata.get('env_id')!r}, config.json says "
                              f"{config.env_id!r}; {_FIX}")
    step = metadata.get("global_step", "")
    if not (step.isascii() and step.isdigit()):
        raise CheckpointError(f"{where}: metadata global_step: expected an int >= 0, got {step!r}; {_FIX}")
    try:
        online = load(data)
    except Exception as exc:
        raise CheckpointError(f"{where} is truncated or corrupt ({type(exc).__name__}); {_FIX}") from None
    check_network_tensors(expected, online, where)
    return ModelFolder(path=folder, config=config, online=online, global_step=int(step))


def check_network_tensors(expected: dict, got: dict, where: str) -> None:
    """``got`` must hold exactly ``expected``'s names, each with its shape and dtype, all finite."""
    import torch

    if set(got) != set(expected):
        raise CheckpointError(f"{where}: expected tensors {sorted(expected)}, got {sorted(got)}; the weights "
                              f"are for another network than config.json describes: {_FIX}")
    for name, ours in expected.items():
        theirs = got[name]
        if tuple(theirs.shape) != tuple(ours.shape) or theirs.dtype != ours.dtype:
            raise CheckpointError(f"{where}: tensor {name!r}: expected shape {tuple(ours.shape)} {ours.dtype}, got "
                                  f"{tuple(theirs.shape)} {theirs.dtype}; {_FIX}")
        if theirs.is_floating_point() and not bool(torch.isfinite(theirs).all()):
            raise CheckpointError(f"{where}: tensor {name!r} holds NaN or inf; the file is damaged or was edited")


def _expected_tensors(config: TrainConfig) -> dict:
    """The state dict of the online network ``config`` builds (its shapes and dtypes)."""
    from fastdqn.run.build import build_network
    from fastdqn.run.envs import env_info

    return build_network(env_info(config.env_id), config.hidden, config.dueling).state_dict()


def _check_regular(path: Path, folder: Path) -> None:
    if path.is_symlink():
        raise CheckpointError(f"model folder: {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); a model "
                              "folder's files are read only from the folder itself: copy the file in place of the "
                              "link (hf download REPO --local-dir DIR writes plain files)")
    if not path.is_file():
        raise CheckpointError(f"model folder: no file {path.name} in {str(folder)!r}; a model folder holds "
                              f"{WEIGHTS_NAME} and {CONFIG_NAME} as fastdqn export writes them")


def _header_metadata(data: bytes, where: str) -> dict:
    """The ``__metadata__`` of a safetensors file's JSON header (a u64 length, then the JSON)."""
    bad = CheckpointError(f"{where} is not a safetensors file, or is truncated; {_FIX}")
    if len(data) < 8:
        raise bad
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise bad
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{where}: no fastdqn metadata in its header; {_FIX}")
    return metadata


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise DependencyError("model folders need the safetensors package: pip install 'fastdqn[hub]'") from None
    return safetensors.torch
