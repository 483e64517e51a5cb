"""A slow, obviously-correct replay buffer that stores whole (obs, next_obs) copies.

It mirrors only the documented capacity rule of ``fastdqn.ReplayBuffer`` (each env keeps
its newest ``ceil(capacity / num_envs) + k`` frame slots sampleable, in a ring of that
many plus ``k + 1`` guard slots; a step continuing the previous
``next_obs`` uses one slot, any other step uses one slot per distinct leading frame of its
obs plus one for its next frame; a transition needs the frames from its segment start or
k-1 steps back, whichever is later, through its next frame). Everything it returns is
the arrays that were passed in, copied.
"""

from __future__ import annotations

import numpy as np


class ReferenceReplay:
    def __init__(self, capacity: int, num_envs: int, frame_stack: int):
        self.k = frame_stack
        self.slots = -(-capacity // num_envs) + frame_stack
        self.num_envs = num_envs               # ids are slot * num_envs + env (transition ids)
        self.written = [0] * num_envs          # frame slots used so far, per env
        self.last_next = [None] * num_envs     # bytes of the env's previous next_obs
        self.segment_start = [0] * num_envs    # first slot of the env's current stack run
        self.items = {}                        # (env, slot) -> transition

    def add(self, env: int, obs, next_obs, action, reward, terminated) -> None:
        k = self.k
        if self.last_next[env] is not None and obs.tobytes() == self.last_next[env]:
            slot = self.written[env] - 1       # obs's newest frame is the previous next frame
            self.written[env] += 1
        else:
            frames = [f.tobytes() for f in np.asarray(obs).reshape(k, -1)]
            first_distinct = 0
            while first_distinct < k - 1 and frames[first_distinct + 1] == frames[0]:
                first_distinct += 1
            self.segment_start[env] = self.written[env]
            self.written[env] += k - first_distinct
            slot = self.written[env] - 1
            self.written[env] += 1
        oldest = max(self.segment_start[env], slot - (k - 1))
        self.items[(env, slot)] = (obs.copy(), next_obs.copy(), int(action),
                                   np.float32(reward), bool(terminated), oldest)
        self.last_next[env] = next_obs.tobytes()
        horizon = self.written[env] - self.slots
        for key in [key for key in self.items if key[0] == env and self.items[key][5] < horizon]:
            del self.items[key]

    def stored(self) -> dict:
        """transition id (slot * num_envs + env) -> (obs, next_obs, action, reward, terminated)."""
        return {slot * self.num_envs + env: item[:5]
                for (env, slot), item in self.items.items()}
