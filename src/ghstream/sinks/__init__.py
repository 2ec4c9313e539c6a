"""The stores the consumer writes to: raw events in MongoDB, facts and aggregates in PostgreSQL.

Both sinks are idempotent: writing the same event twice stores it once and
counts it once, so the consumer can retry a batch, or receive it again from
Kafka, without changing any stored result.

A sink raises :class:`StoreUnavailable` when its store cannot be reached
(connection refused or lost, server restarting, a timeout): the write may be
retried as it is. Any other :class:`~ghstream.errors.StoreError` means the
write itself is wrong and retrying will not help.
"""

from __future__ import annotations

from ghstream.errors import StoreError


class StoreUnavailable(StoreError):
    """The store could not be reached; the same write can be retried once it is back."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store} is unavailable: {reason}")
        self.store = store
        self.reason = reason


def clean_text(value: str) -> str:
    """``value`` without NUL characters, which PostgreSQL text cannot hold."""
    return value.replace("\x00", "") if "\x00" in value else value
