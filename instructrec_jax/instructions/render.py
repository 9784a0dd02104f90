"""How an item is written in instruction text: title, title with year, a compact id token, or both.

The same renderer writes an item wherever it appears (history, candidate list, target,
candidate_targets), so the string the decoder is scored on for a candidate is exactly the string
the candidate list shows. Compact styles exist to make learning cheaper (issue 6): an id token is a
single vocabulary piece, so a 20-item history costs 20 tokens instead of a few hundred.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Mapping

from instructrec_jax.data.types import Item

RENDER_STYLES = ("title", "title_year", "id_token", "title_id")
ITEM_SEPARATOR = "; "  # between items of a history or a candidate list
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclasses.dataclass(frozen=True)
class ItemRenderer:
    """Selects how items are written.

    style: 'title' ("Toy Story"), 'title_year' ("Toy Story (1995)"), 'id_token' ("<item_1>", one
    vocabulary piece), 'title_id' ("<item_1> Toy Story").
    max_title_words: titles longer than this are cut to their first words (None: no limit).
    """

    style: str = "title"
    max_title_words: int | None = None

    def __post_init__(self):
        if self.style not in RENDER_STYLES:
            raise ValueError(f"unknown item renderer {self.style!r}; "
                             f"expected one of {RENDER_STYLES}")
        if self.max_title_words is not None and self.max_title_words < 1:
            raise ValueError(f"max_title_words must be >= 1 or None, got {self.max_title_words}")

    @property
    def uses_id_tokens(self) -> bool:
        return self.style in ("id_token", "title_id")

    def title(self, item: Item) -> str:
        """The item's title, whitespace-normalised and cut to `max_title_words`."""
        words = item.title.split()
        if not words:
            words = [f"item {item.item_id}"]
        if self.max_title_words is not None:
            words = words[: self.max_title_words]
        return " ".join(words)

    def render(self, item: Item) -> str:
        if self.style == "title":
            return self.title(item)
        if self.style == "title_year":
            title = self.title(item)
            return f"{title} ({item.year})" if item.year is not None else title
        token = id_token(item.item_id)
        if self.style == "id_token":
            return token
        return f"{token} {self.title(item)}"

    def as_dict(self) -> dict:
        return {"style": self.style, "max_title_words": self.max_title_words}


def id_token(item_id: str) -> str:
    """The compact token of an item: `<item_ID>`; ids with other characters than [A-Za-z0-9_.-]
    are refused, since the token must be one unambiguous vocabulary piece."""
    if not _SAFE_ID.match(item_id):
        raise ValueError(
            f"item id {item_id!r} cannot become an id token (allowed: A-Z a-z 0-9 _ . -); "
            "use the 'title' or 'title_year' renderer for this dataset")
    return f"<item_{item_id}>"


def id_tokens(item_ids: Iterable[str]) -> tuple[str, ...]:
    """The id tokens of a catalogue sorted by id: the user-defined vocabulary symbols."""
    return tuple(id_token(i) for i in sorted(item_ids))


def render_catalogue(items: Mapping[str, Item], renderer: ItemRenderer) -> dict[str, str]:
    """Each item's text, computed once so that generation is only dictionary lookups and joins."""
    return {item_id: renderer.render(item) for item_id, item in items.items()}


def join_items(texts: Iterable[str]) -> str:
    return ITEM_SEPARATOR.join(texts)
