"""Numba kernels that plan the frame traffic of a device-resident replay buffer.

``fastdqn.replay.device`` keeps the frames in one ``(E * L, F)`` device array (row
``e * L + s`` is slot ``s`` of env ``e``'s ring) and everything else on the host. The
host's ``add_rows`` writes each new frame into a short per-env ring of ``R >= k + 1``
slots (absolute slot ``a`` at ``a % R``); these kernels list which device rows the frames
of one add go to, and which host slots hold them, so the device writes them in one call.

Sampling needs no kernel of its own: ``copy_rows``/``copy_rows_n`` run on a table whose
"frame" at slot ``(e, s)`` is the 8 bytes of the int64 row id ``e * L + s``, so they
write the device rows of every stacked frame instead of its pixels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastdqn.kernels.replay import _copy_frame


@njit(nogil=True, cache=True)
def _stage_writes(ring, before, count, L, out_rows, out_frames):
    E, R, _ = ring.shape
    n = 0
    for e in range(E):
        for a in range(before[e], count[e]):
            out_rows[n] = e * L + a % L
            _copy_frame(out_frames[n], ring[e, a % R])
            n += 1
    return n


def stage_writes(ring, before, count, L: int, out_rows, out_frames) -> int:
    """Stage the frames written since ``before`` for the device; returns how many.

    ``ring (E, R, F) uint8`` is the host ring ``add_rows`` wrote into; ``before``/``count``
    ``(E,) int64`` each env's slots written before and after the add (at most ``R`` apart).
    Row ``i < n`` of ``out_rows (N,) int64`` receives the device row of the ``i``-th new
    frame and ``out_frames[i] (N, F) uint8`` its bytes, env by env, oldest first.
    """
    return _stage_writes(ring, before, count, L, out_rows, out_frames)


@njit(nogil=True, cache=True)
def _newest_slots(count, L, R, out_rows, out_ring):
    n = 0
    for e in range(count.shape[0]):
        for a in range(max(np.int64(0), count[e] - R), count[e]):
            out_rows[n] = e * L + a % L
            out_ring[n] = e * R + a % R
            n += 1
    return n


def newest_slots(count, L: int, R: int, out_rows, out_ring) -> int:
    """Where each env's newest ``R`` frames live: device row and host-ring row (``e * R + a % R``).

    Fills ``out_rows``/``out_ring`` (``(E * R,) int64``) and returns how many entries are
    used; ``load`` copies those rows back into the host ring.
    """
    return _newest_slots(count, L, R, out_rows, out_ring)
