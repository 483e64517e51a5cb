"""The small argument checks every layer shares, and device parsing.

Each check raises the caller's exception class (``error=``: a ``ReplayError`` in the replay
layer, a ``ConfigError`` elsewhere) with one message of the form
``"{name}: expected {what}, got {value!r}; {fix}"``. torch is imported only by
``parse_device``.
"""

from __future__ import annotations

import math

import numpy as np

from fastdqn.errors import ConfigError


def is_int(value) -> bool:
    """An int (Python or NumPy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """A finite int or float (Python or NumPy), not a bool."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float, e.g. 10**400
        return False


def describe(value) -> str:
    """``value`` as a message shows it: a dict by its keys, a plain value by its repr, else its type."""
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    return repr(value) if isinstance(value, (int, float, str)) or value is None else f"a {type(value).__name__}"


def fail(name: str, expected: str, value, fix: str = "", *, error: type = ConfigError):
    """Raise ``error`` with the one message format of these checks."""
    raise error(f"{name}: expected {expected}, got {value!r}" + (f"; {fix}" if fix else ""))


def check_flag(name: str, value, *, error: type = ConfigError) -> bool:
    """``value``, refused unless it is a bool."""
    if not isinstance(value, bool):
        fail(name, "True or False", value, error=error)
    return value


def check_int(name: str, value, *, minimum: int = 1, why: str = "", fix: str = "",
              error: type = ConfigError) -> int:
    """``value`` as an int, refused unless it is an int >= ``minimum`` (``why``: a note after the bound)."""
    if not is_int(value) or value < minimum:
        fail(name, f"an int >= {minimum}{why}", value, fix, error=error)
    return int(value)


def check_seed(name: str, value, *, error: type = ConfigError):
    """``value`` as a seed for ``numpy.random.default_rng``: None, a ``SeedSequence`` or an int
    in [0, 2**64)."""
    if value is None or isinstance(value, np.random.SeedSequence):
        return value
    if not is_int(value) or not 0 <= value < 2**64:
        fail(name, "None, a numpy SeedSequence or an int in [0, 2**64)", value, error=error)
    return int(value)


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
                 high_open: bool = False, fix: str = "", error: type = ConfigError) -> float:
    """``value`` as a float, refused unless it is a finite number in the interval from ``low``
    to ``high`` (closed unless ``low_open``/``high_open``; with no ``high``, "> low" or ">= low")."""
    if is_number(value) and (value > low if low_open else value >= low) \
            and (value < high if high_open else value <= high):
        return float(value)
    bound = (f"{'>' if low_open else '>='} {low}" if high == math.inf
             else f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
    fail(name, f"a finite number {bound}", value, fix, error=error)


def parse_device(device, *, name: str = "device", fix: str = "pass 'cpu'", error: type = ConfigError):
    """``device`` as a ``torch.device`` of type cpu or cuda; a bare ``"cuda"`` becomes the
    current CUDA device, and CUDA without a CUDA device is refused."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        fail(name, "'cpu', 'cuda' or 'cuda:N'", device, error=error)
    if dev.type not in ("cpu", "cuda"):
        fail(name, "'cpu', 'cuda' or 'cuda:N'", device, error=error)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(f"{name}: {device!r} was asked for but torch sees no CUDA device; {fix}")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev
