"""The rate-limit storage shared by request limits and mail pacing (RATE_LIMIT_STORAGE_URL).

``memory://`` keeps counters in this process; ``redis://`` shares them between processes, so
limits hold across server processes and the send rate across delivery workers. The ``limits``
library's asyncio strategies need its async storages, hence the ``async+`` prefix added here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from limits.aio.storage import Storage
from limits.storage import storage_from_string


def async_storage_url(url: str) -> str:
    """``memory://`` -> ``async+memory://``; ``redis://h`` -> ``async+redis://h``."""
    return url if url.startswith("async+") else f"async+{url}"


@dataclass(frozen=True, slots=True)
class LimitsStorage:
    """A storage and what to release at shutdown (Redis connections are ours to close)."""

    storage: Storage
    _redis_pool: Any = None

    def close(self) -> None:
        if self._redis_pool is not None:
            self._redis_pool.disconnect()


def make_storage(url: str) -> LimitsStorage:
    plain = url.removeprefix("async+")
    if plain.startswith(("redis://", "rediss://")):
        import coredis  # here: 12 MB a server on memory:// does not need

        # Our own pool, so shutdown can close its sockets (limits has no close()).
        pool = coredis.ConnectionPool.from_url(plain)
        options: dict[str, Any] = {"connection_pool": pool}  # typed narrower than it accepts
        storage = storage_from_string(async_storage_url(url), **options)
        return LimitsStorage(cast(Storage, storage), pool)
    return LimitsStorage(cast(Storage, storage_from_string(async_storage_url(url))))
