"""The saved state of a NumPy ``PCG64`` generator, checked before it is used.

``np.random.default_rng`` builds a ``PCG64``; its ``bit_generator.state`` is a dict of a
name and Python ints, which both checkpoints (torch's restricted loader) and the replay
file (JSON) store as plain data. Only this one generator is rebuilt: the name in a file
never chooses what gets constructed. NumPy only, so the replay buffer can use it.
"""

from __future__ import annotations

import numpy as np

from fastdqn.errors import CheckpointError
from fastdqn.util.checks import describe

_KEYS = {"bit_generator", "state", "has_uint32", "uinteger"}


def pcg64_state(value, where: str) -> dict:
    """``value`` if it is a state that ``PCG64.state`` accepts, else ``CheckpointError``.

    ``where`` names the field in the message (e.g. ``"checkpoint 'run/checkpoint.pt': learner.rng"``).
    """
    def bad(what: str):
        raise CheckpointError(f"{where}: expected the state of a PCG64 generator, {what}; the file is "
                              "damaged or was edited: use an older copy or start a new run")

    if not isinstance(value, dict) or set(value) != _KEYS:
        bad(f"got {describe(value)}")
    if value["bit_generator"] != "PCG64":
        bad(f"got bit_generator {value['bit_generator']!r}")
    inner = value["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        bad(f"got state {describe(inner)}")
    for name, number, bits in (("state.state", inner["state"], 128), ("state.inc", inner["inc"], 128),
                               ("has_uint32", value["has_uint32"], 1), ("uinteger", value["uinteger"], 32)):
        if type(number) is not int or not 0 <= number < 1 << bits:
            bad(f"got {name} = {number!r} (expected an int in [0, 2**{bits}))")
    try:
        np.random.PCG64().state = value
    except (TypeError, ValueError) as exc:
        bad(f"NumPy refused it ({exc})")
    return value

