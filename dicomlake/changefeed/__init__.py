"""The change feed: an ordered, dense, immutable log of every change, read at each client's pace."""

from dicomlake.changefeed.cursors import ConsumerCursor, CursorConflict
from dicomlake.changefeed.reader import MAX_LIMIT, ChangeFeed, ChangeFeedEntry

__all__ = ["MAX_LIMIT", "ChangeFeed", "ChangeFeedEntry", "ConsumerCursor", "CursorConflict"]
