"""Named consumers that read the feed at their own pace, at least once, never losing an entry.

A consumer's position is the last sequence it has *finished processing*. It is stored as a Delta
app-transaction version (app id 'dicomlake.cursor.<name>') on the `cursors` table, the mechanism
Delta provides for exactly this (idempotent streaming writers); each move also appends an audit row.
Positions only move forward, and only when the consumer says so: a crash before `commit` means the
same entries are delivered again.
"""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from dicomlake.changefeed.reader import ChangeFeed, ChangeFeedEntry
from dicomlake.errors import InvalidName
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.schemas import CURSORS

_CONSUMER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class CursorConflict(ValueError):
    """A commit that would move a cursor backwards or past the end of the feed."""


class ConsumerCursor:
    def __init__(self, tenant: TenantStore, consumer: str) -> None:
        if not _CONSUMER.match(consumer):
            raise InvalidName(f"consumer {consumer!r} must be lowercase letters, digits, '.', '_' or '-'")
        self.tenant = tenant
        self.consumer = consumer
        self.app_id = f"dicomlake.cursor.{consumer}"
        self.feed = ChangeFeed(tenant)

    def position(self) -> int:
        """The last sequence this consumer has committed as processed (0 before the first commit)."""
        return self.tenant.table("cursors").transaction_version(self.app_id) or 0

    def lag(self) -> int:
        return self.feed.latest_sequence() - self.position()

    def read(self, limit: int = 100, include_metadata: bool = False) -> list[ChangeFeedEntry]:
        """The next entries after the committed position (the same ones again until committed)."""
        return self.feed.read(self.position(), limit, include_metadata)

    def commit(self, sequence: int) -> None:
        """Record that every entry up to `sequence` is processed. Re-committing a position is a no-op."""
        latest = self.feed.latest_sequence()
        if sequence > latest:
            raise CursorConflict(f"{self.consumer}: cannot commit {sequence}, the feed ends at {latest}")
        for _attempt in range(100):
            table = self.tenant.table("cursors")
            current = table.transaction_version(self.app_id) or 0
            if sequence == current:
                return
            if sequence < current:
                raise CursorConflict(
                    f"{self.consumer}: position is {current}; it never moves back (asked {sequence})"
                )
            row = pa.Table.from_pylist(
                [{"consumer": self.consumer, "position": sequence, "committed_at": dt.datetime.now(dt.UTC)}],
                schema=CURSORS,
            )
            try:
                write_deltalake(
                    table,
                    row,
                    mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app_id=self.app_id, version=sequence)]
                    ),
                )
                return
            except CommitFailedError:
                continue  # the same consumer committed concurrently; re-check
        raise CursorConflict(f"{self.consumer}: could not commit position {sequence}")
