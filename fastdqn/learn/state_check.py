"""Checks of a learner state (a checkpoint's ``learner`` part) before any of it is applied:
every tensor must have the loading learner's own shape and dtype, the optimizer's groups its
keys and parameters, the update counter an int >= 0 and the exploration generator's state a
PCG64 state. The first bad field raises ``CheckpointError`` naming it; nothing is changed.
"""

from __future__ import annotations

import math

import torch

from fastdqn.errors import CheckpointError
from fastdqn.util.checks import describe, is_number
from fastdqn.util.rngstate import pcg64_state

KEYS = ("online", "target", "optimizer", "num_updates", "rng")
_WHERE = "learner state"


def check_learner_state(state, *, networks: dict[str, dict], optimizer: torch.optim.Optimizer) -> None:
    """``networks``: ``{"online": ..., "target": ...}`` state dicts of the learner loading
    ``state``; ``optimizer``: its optimizer."""
    if not isinstance(state, dict):
        _bad("", "a dict made by Learner.state_dict()", _describe(state))
    missing = set(KEYS) - set(state)
    if missing:
        raise CheckpointError(f"{_WHERE}: missing keys {sorted(missing)}; pass a dict made by "
                              "Learner.state_dict()")
    if set(state) != set(KEYS):
        _bad("", f"keys {sorted(KEYS)}", sorted(map(str, state)))
    for name, ours in networks.items():
        _check_tensors(f"[{name!r}]", ours, state[name])
    _check_optimizer(optimizer, state["optimizer"])
    count = state["num_updates"]
    if type(count) is not int or count < 0:
        _bad("['num_updates']", "an int >= 0", repr(count))
    pcg64_state(state["rng"], f"{_WHERE}['rng']")


def _check_tensors(field: str, ours: dict, theirs) -> None:
    why = "the checkpoint was made for a different network"
    if not isinstance(theirs, dict) or set(theirs) != set(ours):
        got = sorted(map(str, theirs)) if isinstance(theirs, dict) else _describe(theirs)
        raise CheckpointError(f"{_WHERE}{field}: expected parameters {sorted(ours)}, got {got}; {why}")
    for key, value in ours.items():
        other = theirs[key]
        if not isinstance(other, torch.Tensor):
            _bad(f"{field}[{key!r}]", "a tensor", _describe(other))
        if tuple(value.shape) != tuple(other.shape) or value.dtype != other.dtype:
            raise CheckpointError(
                f"{_WHERE}{field}[{key!r}]: expected shape {tuple(value.shape)} {value.dtype}, got "
                f"{tuple(other.shape)} {other.dtype}; {why}"
            )
        _check_finite(f"{field}[{key!r}]", other)


def _check_finite(field: str, value: torch.Tensor) -> None:
    """Refuse NaN or inf in a saved tensor: training keeps the state from before a diverging
    update, so such values come from damage or an edit, not from the run."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise CheckpointError(f"{_WHERE}{field}: {bad} of its {value.numel()} values are NaN or inf; "
                              "a run saves the state from before a diverging update, so the file is "
                              "damaged or was edited: use an older copy of the run folder")


def _check_optimizer(optimizer: torch.optim.Optimizer, theirs) -> None:
    ours = optimizer.state_dict()
    if not isinstance(theirs, dict) or set(theirs) != {"state", "param_groups"}:
        _bad("['optimizer']", "an optimizer state_dict with keys param_groups, state", _describe(theirs))
    groups, our_groups = theirs["param_groups"], ours["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(our_groups):
        _bad("['optimizer']['param_groups']", f"a list of {len(our_groups)} group(s)", _describe(groups))
    for i, (group, our_group) in enumerate(zip(groups, our_groups)):
        field = f"['optimizer']['param_groups'][{i}]"
        if not isinstance(group, dict) or set(group) != set(our_group):
            _bad(field, f"a dict with keys {sorted(our_group)}", _describe(group))
        if group["params"] != our_group["params"]:
            _bad(f"{field}['params']", repr(our_group["params"]), repr(group["params"]))
        for key, value in group.items():
            if key != "params" and not _plain_setting(value):
                _bad(f"{field}[{key!r}]", "None, a bool, a finite number or a tuple of them", _describe(value))
        lr = group["lr"]
        value = lr.item() if isinstance(lr, torch.Tensor) else lr
        if not is_number(value) or value <= 0:
            _bad(f"{field}['lr']", "a finite number > 0", _describe(lr))
    # Adam's per-parameter state: a 'step' count and moments shaped like the parameter.
    shapes = {index: param.shape for saved, group in zip(our_groups, optimizer.param_groups)
              for index, param in zip(saved["params"], group["params"])}
    keys = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if groups[0].get("amsgrad") else set())
    state = theirs["state"]
    if not isinstance(state, dict):
        _bad("['optimizer']['state']", "a dict", _describe(state))
    for index, entry in state.items():
        field = f"['optimizer']['state'][{index!r}]"
        if index not in shapes or not isinstance(entry, dict) or set(entry) != keys:
            _bad(field, f"Adam's state {sorted(keys)} of one of parameters {sorted(shapes)}", _describe(entry))
        for key, value in entry.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor) or not value.is_floating_point():
                _bad(f"{field}[{key!r}]", "a float tensor", _describe(value))
            expected = (1,) if key == "step" else tuple(shapes[index])
            got = (value.numel(),) if key == "step" else tuple(value.shape)
            if got != expected:
                what = "one element" if key == "step" else f"shape {expected}"
                _bad(f"{field}[{key!r}]", what, f"shape {tuple(value.shape)}")
            _check_finite(f"{field}[{key!r}]", value)


def _plain_setting(value) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and value.is_floating_point() and bool(torch.isfinite(value))
    if isinstance(value, (tuple, list)):
        return all(is_number(v) for v in value)
    return False


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return describe(value)


def _bad(field: str, expected, got) -> None:
    raise CheckpointError(f"{_WHERE}{field}: expected {expected}, got {got}; the checkpoint was made for "
                          "another learner, or the file is damaged or was edited")
