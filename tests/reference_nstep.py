"""Slow, obviously-correct n-step transitions: a plain list of steps per env, windows by hand.

Which transitions are stored at all (and under which index) is ``ReferenceReplay``'s
business; this adds what the n-step rules say on top of it. A step *continues* into the
env's next stored step when that one's ``obs`` equals its ``next_obs``, no row of the env
came with ``valid=False`` in between, and it neither terminated nor was truncated. The
window of a step follows continuing steps for up to ``n`` steps. It is *open* (not
sampleable yet) when it reaches the env's latest step with fewer than ``n`` steps and
that step neither terminated, was truncated, nor was followed by a skipped row.
"""

from __future__ import annotations

import numpy as np

from reference_replay import ReferenceReplay


class NStepReference:
    def __init__(self, capacity: int, num_envs: int, frame_stack: int, n: int, gamma: float):
        self.ref = ReferenceReplay(capacity, num_envs, frame_stack)
        self.n, self.gamma = n, gamma
        self.steps = [[] for _ in range(num_envs)]   # per env: every stored step, in order
        self.by_slot = {}                              # (env, absolute slot) -> (env, position)

    def add(self, env: int, obs, next_obs, action, reward, terminated, truncated, valid) -> None:
        steps = self.steps[env]
        if not valid:
            if steps:
                steps[-1]["stops"] = True  # the skipped row's step is not stored
            return
        if steps:
            prev = steps[-1]
            prev["continues"] = (not prev["stops"] and not prev["terminated"]
                                 and obs.tobytes() == prev["next_obs"].tobytes())
        self.ref.add(env, obs, next_obs, action, reward, terminated)
        slot = self.ref.written[env] - 2  # the transition sits just before its next frame
        self.by_slot[(env, slot)] = (env, len(steps))
        steps.append(dict(obs=obs.copy(), next_obs=next_obs.copy(), action=int(action),
                          reward=np.float32(reward), terminated=bool(terminated),
                          stops=bool(truncated), continues=False))

    def window(self, env: int, pos: int):
        """(obs, next_obs, action, reward, terminated, discount), or None while open."""
        steps = self.steps[env]
        ret, disc = 0.0, 1.0
        for i in range(self.n):
            step = steps[pos + i]
            ret += disc * float(step["reward"])
            disc *= self.gamma
            if step["terminated"]:
                return self._item(steps[pos], step, ret, 0.0)
            if step["stops"] or i == self.n - 1:
                break
            if not step["continues"]:
                if pos + i == len(steps) - 1:
                    return None  # the env's next step may still continue it
                break
        return self._item(steps[pos], step, ret, disc)

    @staticmethod
    def _item(first, last, ret, disc):
        return (first["obs"], last["next_obs"], first["action"], np.float32(ret),
                last["terminated"], np.float32(disc))

    def closed(self) -> dict:
        """(env, absolute slot) -> n-step transition, for every stored transition whose
        window is closed."""
        out = {}
        for key in self.ref.items:
            w = self.window(*self.by_slot[key])
            if w is not None:
                out[key] = w
        return out

    def stored(self) -> dict:
        """transition id (slot * num_envs + env) -> n-step transition, windows closed only."""
        E = self.ref.num_envs
        return {slot * E + env: w for (env, slot), w in self.closed().items()}

    def open_ids(self) -> list:
        E = self.ref.num_envs
        return [slot * E + env for (env, slot) in self.ref.items
                if self.window(*self.by_slot[(env, slot)]) is None]
