"""The actors' part of ``fastdqn train --actors N``: the checks made before anything starts
(Ray installed, ``--address`` answering) and the Ray session around a run (started, then shut
down with every actor killed, whatever ends the run)."""

from __future__ import annotations

import contextlib
import os
import signal

from fastdqn.run.actors.ray_setup import check_address, import_ray, start_ray

COMMAND = "train --actors"
DEPTH = 2
"""Requests in flight per actor: one being stepped while the learner takes in the other."""


def check_actors(config) -> None:
    """Refuse, before anything is built, a run whose actors could not start: without Ray, or
    with an ``--address`` where no cluster answers (that one is joined here, within seconds)."""
    if not config.actors:
        return
    ray = import_ray(local=not config.address, command=COMMAND)
    if config.address:
        check_address(config.address)
        _start(ray, config.address)


@contextlib.contextmanager
def actor_fleet(config, task, buffer, *, seed: int, record_dir: str | None = None):
    """Start Ray (local, or the cluster at ``config.address``) and the run's actors; yield the
    ``ActorFleet``. Leaving the block kills the actors and shuts Ray down."""
    from fastdqn.run.actors.fleet import ActorFleet
    from fastdqn.run.actors.limiter import RateLimiter

    ray = import_ray(local=not config.address, command=COMMAND)
    try:
        if not ray.is_initialized():  # a cluster is joined by check_actors
            _start(ray, None, num_cpus=max(os.cpu_count() or 1, config.actors))
        rows = config.actor_chunk_steps * config.env_batch
        limiter = RateLimiter(config.train_frequency, config.ratio_tolerance, config.learning_starts,
                              slack=config.actors * DEPTH * rows + rows, free_running=config.free_running)
        fleet = ActorFleet(ray, config, task, buffer, limiter, seed=seed, depth=DEPTH, record_dir=record_dir)
        try:
            yield fleet
        finally:
            fleet.close()
    finally:
        ray.shutdown()


def _start(ray, address, **options) -> None:
    """``start_ray``, keeping this process's SIGINT and SIGTERM handlers: ``ray.init`` installs
    its own for SIGTERM, and the run must stop by its own rule (one checkpoint, exit 143)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        start_ray(ray, address, **options)
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
