"""The records every reader produces and every later stage consumes.

Readers turn a source's own format into `RawDataset` (interactions + item catalogue + what was
skipped and why); preprocessing turns that into `UserSequence`s and splits. Identifiers are kept as
the source's own strings (an ASIN, a MovieLens id as text) so that outputs can be joined back to
the raw files.
"""

from __future__ import annotations

import collections
import dataclasses


class DataFormatError(ValueError):
    """Bad input that a user can fix: names the file, the line (1-based) and what was expected."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One catalogue entry. `categories` is ordered from most general to most specific.

    For Amazon this is the category path ("Video Games", "PC", "Accessories", "Gaming Mice");
    for MovieLens the genres, in the source's order.
    """

    item_id: str
    title: str
    categories: tuple[str, ...] = ()
    brand: str | None = None
    year: int | None = None
    description: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Interaction:
    """A user's interaction with an item at a time (unix seconds), with the review if any."""

    user_id: str
    item_id: str
    timestamp: int
    rating: float | None = None
    review: str | None = None
    summary: str | None = None


class SkipCounts(collections.Counter):
    """Records skipped on purpose, counted by reason (e.g. 'review of unknown item').

    Skipping is only ever a documented behaviour of a reader; every skip is counted here and
    reported in the prepared dataset's statistics, never dropped silently.
    """

    def add(self, reason: str, n: int = 1) -> None:
        self[reason] += n

    def as_dict(self) -> dict[str, int]:
        return {reason: int(n) for reason, n in sorted(self.items())}


@dataclasses.dataclass
class RawDataset:
    """What a reader returns: the log, the catalogue, optional user features, and what it skipped."""

    name: str
    interactions: list[Interaction]
    items: dict[str, Item]
    users: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    skipped: SkipCounts = dataclasses.field(default_factory=SkipCounts)
    sources: tuple[str, ...] = ()

    def item(self, item_id: str) -> Item:
        return self.items[item_id]


@dataclasses.dataclass(frozen=True, slots=True)
class UserSequence:
    """A user's interactions in chronological order (ties keep the source's order)."""

    user_id: str
    item_ids: tuple[str, ...]
    timestamps: tuple[int, ...]
    ratings: tuple[float | None, ...] = ()
    reviews: tuple[str | None, ...] = ()

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclasses.dataclass(frozen=True, slots=True)
class SplitExample:
    """One prediction point: the user's history (oldest first, ≤ max_history) and the next item.

    `position` is the target's index in the user's full sequence, so the example can be traced
    back to the log; `review` is the user's own review of the target where the source has one
    (used only to derive intentions for that example, never shown as history).
    """

    user_id: str
    history: tuple[str, ...]
    target: str
    position: int
    timestamp: int
    review: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CandidateSet:
    """The items ranked for one evaluation example: the true item at `label_index` among negatives."""

    user_id: str
    item_ids: tuple[str, ...]
    label_index: int

    @property
    def target(self) -> str:
        return self.item_ids[self.label_index]

