"""Starting Ray for a command: a local instance on this machine (on the loopback address),
or joining a cluster at ``--address``, whose head is first checked to answer within
seconds (``ray.init`` would keep retrying an unreachable one for minutes)."""

from __future__ import annotations

import os
import socket

from fastdqn.errors import ConfigError, DependencyError

ADDRESS_TIMEOUT = 3.0
"""Seconds to wait for a cluster head to accept a connection before refusing ``--address``."""
JOIN_SECONDS = 5
"""Seconds ``ray.init`` keeps trying to reach a cluster's control store (Ray's default is 20 or more)."""


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT) -> None:
    """Refuse an ``--address`` that names no reachable Ray head, within ``timeout`` seconds.
    ``auto`` is left to Ray, which fails fast without a cluster."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address: expected auto or HOST:PORT of a Ray head node, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address: no Ray cluster answers at {address!r} ({exc.strerror or exc}); "
                          "start one with `ray start --head` or drop --address for a local instance") from None


def import_ray(*, local: bool, command: str):
    """Ray, or ``DependencyError`` naming ``command`` and how to install it."""
    if local:
        # The embedded instance serves this machine only: keep Ray on the loopback address
        # instead of the machine's network address, which Ray takes for a cluster head.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise DependencyError(f"{command}: Ray is not installed; install it with pip install 'fastdqn[ray]' "
                              "(or pip install ray)") from None
    return ray


def start_ray(ray, address: str | None, *, num_cpus: int | None = None, object_store_mb: int = 200) -> None:
    """``ray.init`` on a new local instance (``address`` None) with ``num_cpus`` CPUs (default:
    this machine's) and an object store of ``object_store_mb``, or on the cluster at ``address``."""
    import logging

    common = dict(include_dashboard=False, log_to_driver=False)
    if address is None:
        # Errors only: the instance lives and dies with this command, so Ray's notes on
        # setting up a long-lived cluster (e.g. its auth token) do not apply.
        # address "local": a new instance even where RAY_ADDRESS names a cluster.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), object_store_memory=object_store_mb * 2**20,
                 logging_level=logging.ERROR, **common)
        return
    # Something that accepts connections but is no Ray head is refused within seconds, and
    # Ray's retries do not print a line each.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(JOIN_SECONDS))
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    try:
        ray.init(address=address, logging_level=logging.WARNING, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--address: could not join a Ray cluster at {address!r}: {str(exc).splitlines()[0]}; "
                          "start one with `ray start --head` or drop --address for a local instance") from None
