"""Hugging Face hub access that never waits on a network that is not there.

Without a network, `huggingface_hub` and `datasets` retry for tens of seconds before falling back to
their caches. One quick connection probe decides instead: reachable, load normally; not, load from
the local cache only (and fail at once, naming what to pass instead, when it is not cached).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache


@lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a connection at all (asked once per process)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextmanager
def hub_offline() -> Iterator[None]:
    """Cache-only hub access for the duration: the libraries read these flags at call time."""
    from huggingface_hub import constants

    try:
        import datasets
    except ImportError:
        datasets = None
    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE if datasets else None
    constants.HF_HUB_OFFLINE = True
    if datasets:
        datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved[0]
        if datasets:
            datasets.config.HF_HUB_OFFLINE = saved[1]


@contextmanager
def hub_access() -> Iterator[None]:
    """Normal hub access where the hub answers, cache-only where it does not."""
    if hub_reachable():
        yield
    else:
        with hub_offline():
            yield
