"""Reader for RecBole atomic files: `<name>.inter`, `<name>.item` and optional `<name>.user`.

Each file is tab-separated with a typed header, `field:type`, where type is one of token,
token_seq, float, float_seq. Columns are found by field name:
- `.inter`: user_id, item_id, timestamp (required), rating (optional);
- `.item`: item_id (required); title from movie_title or title; year from release_year or year;
  categories from class, genre or categories (a token_seq: tokens separated by `seq_separator`,
  a space by default); brand and description when present;
- `.user`: user_id, every other column kept as text in `RawDataset.users`.
A title ending in "(1995)" gives the year when the year column holds no year (one ml-100k entry
has the year 'V'); genre placeholders meaning "no genre" ('unknown') give no category.

Documented skips, counted by reason: 'item without title', 'rating of item missing from metadata'
(strict=True raises for both). Malformed lines and missing values of required columns raise
`DataFormatError`, or with `on_error='skip'` are counted by reason.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

from instructrec_jax.data.movielens import genre_categories, split_title_year
from instructrec_jax.data.text_lines import RecordErrors, no_records_error, read_lines
from instructrec_jax.data.types import DataFormatError, Interaction, Item, RawDataset, SkipCounts

SKIP_UNKNOWN_ITEM = "rating of item missing from metadata"
SKIP_UNTITLED_ITEM = "item without title"
MALFORMED = "malformed line"
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")

TITLE_FIELDS = ("movie_title", "title")
YEAR_FIELDS = ("release_year", "year")
CATEGORY_FIELDS = ("class", "genre", "categories")


@dataclasses.dataclass(frozen=True)
class Header:
    """The typed header of an atomic file: field names in column order and their types."""

    path: Path
    names: tuple[str, ...]
    types: tuple[str, ...]

    def index(self, *candidates: str, required: bool = False) -> int | None:
        """Column of the first candidate field present; a required one missing is an error."""
        for name in candidates:
            if name in self.names:
                return self.names.index(name)
        if required:
            raise DataFormatError(self.path, 1, f"missing required column {candidates[0]!r}; "
                                  f"header has {', '.join(self.names)}")
        return None


def _parse_header(path: Path, number: int, text: str) -> Header:
    names, types = [], []
    for column in text.split("\t"):
        name, sep, kind = column.strip().rpartition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise DataFormatError(path, number, f"header column {column!r} is not 'name:type' with "
                                  f"type one of {', '.join(FIELD_TYPES)}")
        names.append(name)
        types.append(kind)
    return Header(path, tuple(names), tuple(types))


def _table(path: Path, errors: RecordErrors) -> tuple[Header, Iterator[tuple[int, list[str]]]]:
    """The header and an iterator over (line number, columns) of the rows with the right width."""
    lines = read_lines(path, errors)
    first = next(lines, None)
    if first is None:
        raise DataFormatError(path, None, "no records (the file is empty); expected a typed "
                              "header such as 'user_id:token' and at least one row")
    header = _parse_header(path, *first)

    def rows():
        for number, text in lines:
            fields = text.split("\t")
            if len(fields) != len(header.names):
                errors.bad(path, number, MALFORMED, f"expected {len(header.names)} tab-separated "
                           f"columns ({', '.join(header.names)}), got {len(fields)}")
                continue
            yield number, fields

    return header, rows()


def _required(fields: list[str], column: int, header: Header, number: int,
              errors: RecordErrors) -> str | None:
    value = fields[column].strip()
    if not value:
        errors.bad(header.path, number, f"missing required field {header.names[column]!r}",
                   f"column {column + 1} is empty")
        return None
    return value


def _number(fields: list[str], column: int, header: Header, number: int, errors: RecordErrors,
            convert):
    text = fields[column].strip()
    try:
        return convert(text)
    except (ValueError, OverflowError):
        errors.bad(header.path, number, MALFORMED,
                   f"non-numeric {header.names[column]} {text!r}; expected a number")
        return None


def _timestamp(text: str) -> int:
    # The ml-100k atomic file types the timestamp as float but writes integers; keep them exact.
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def _year(text: str) -> int | None:
    text = text.strip()
    if text.isdigit() and len(text) == 4:
        return int(text)
    return None


def _read_items(path: Path, separator: str, errors: RecordErrors, strict: bool) -> dict[str, Item]:
    header, rows = _table(path, errors)
    item_col = header.index("item_id", required=True)
    title_col = header.index(*TITLE_FIELDS)
    if title_col is None:
        raise DataFormatError(path, 1, f"no title column (expected one of "
                              f"{', '.join(TITLE_FIELDS)}); header has {', '.join(header.names)}")
    year_col = header.index(*YEAR_FIELDS)
    category_col = header.index(*CATEGORY_FIELDS)
    brand_col = header.index("brand")
    description_col = header.index("description")
    items: dict[str, Item] = {}
    before = sum(errors.skipped.values())
    seen = 0
    for number, fields in rows:
        item = _required(fields, item_col, header, number, errors)
        if item is None:
            continue
        seen += 1
        title = " ".join(fields[title_col].split())
        year = _year(fields[year_col]) if year_col is not None else None
        if year is None and year_col is not None:
            title, year = split_title_year(title)
        if not title:
            errors.documented_skip(path, number, SKIP_UNTITLED_ITEM,
                                   f"item {item!r} has an empty title", strict=strict)
            continue
        categories = ()
        if category_col is not None:
            tokens = fields[category_col].split(separator)
            if header.types[category_col] != "token_seq":
                tokens = [fields[category_col]]
            categories = genre_categories(tokens)
        items[item] = Item(
            item_id=item, title=title, year=year, categories=categories,
            brand=(fields[brand_col].strip() or None) if brand_col is not None else None,
            description=((" ".join(fields[description_col].split()) or None)
                         if description_col is not None else None),
        )
    if not seen:
        raise no_records_error(path, before, sum(errors.skipped.values()))
    return items


def _read_interactions(path: Path, items: dict[str, Item], errors: RecordErrors,
                       strict: bool) -> list[Interaction]:
    header, rows = _table(path, errors)
    user_col = header.index("user_id", required=True)
    item_col = header.index("item_id", required=True)
    time_col = header.index("timestamp", required=True)
    rating_col = header.index("rating")
    interactions = []
    before = sum(errors.skipped.values())
    seen = 0
    for number, fields in rows:
        user = _required(fields, user_col, header, number, errors)
        if user is None:
            continue
        item = _required(fields, item_col, header, number, errors)
        if item is None or _required(fields, time_col, header, number, errors) is None:
            continue
        timestamp = _number(fields, time_col, header, number, errors, _timestamp)
        if timestamp is None:
            continue
        rating = None
        if rating_col is not None and fields[rating_col].strip():
            rating = _number(fields, rating_col, header, number, errors, float)
            if rating is None:
                continue
        seen += 1
        if item not in items:
            errors.documented_skip(path, number, SKIP_UNKNOWN_ITEM, f"interaction with item "
                                   f"{item!r}, which is not in the .item file", strict=strict)
            continue
        interactions.append(Interaction(user, item, timestamp, rating))
    if not seen:
        raise no_records_error(path, before, sum(errors.skipped.values()))
    return interactions


def _read_users(path: Path, errors: RecordErrors) -> dict[str, dict[str, str]]:
    header, rows = _table(path, errors)
    user_col = header.index("user_id", required=True)
    users = {}
    for number, fields in rows:
        user = _required(fields, user_col, header, number, errors)
        if user is not None:
            users[user] = {name: value.strip() for i, (name, value)
                           in enumerate(zip(header.names, fields)) if i != user_col}
    return users


def atomic_files(directory_or_prefix: str | os.PathLike,
                 name: str | None = None) -> tuple[str, Path]:
    """(dataset name, path prefix) for `dir/` (holding `<dir name>.inter`) or `dir/<name>`."""
    path = Path(directory_or_prefix)
    if path.suffix in (".inter", ".item", ".user"):
        path = path.with_suffix("")
    if path.is_dir():
        name = name or path.name
        if not (path / f"{name}.inter").is_file():
            found = sorted(path.glob("*.inter"))
            if len(found) != 1:
                raise FileNotFoundError(
                    f"{path}: expected {name}.inter (or exactly one .inter file), found "
                    f"{', '.join(p.name for p in found) or 'none'}")
            name = found[0].stem
        return name, path / name
    return name or path.name, path


def read_atomic(directory_or_prefix: str | os.PathLike, *, name: str | None = None,
                seq_separator: str = " ", strict: bool = False,
                on_error: str = "raise") -> RawDataset:
    """Reads `<name>.inter`, `<name>.item` and (when present) `<name>.user`."""
    name, prefix = atomic_files(directory_or_prefix, name)
    inter_path = prefix.parent / f"{prefix.name}.inter"
    item_path = prefix.parent / f"{prefix.name}.item"
    user_path = prefix.parent / f"{prefix.name}.user"
    for required in (inter_path, item_path):
        if not required.is_file():
            raise FileNotFoundError(f"{required}: no such file; a RecBole dataset needs .inter "
                                    "and .item files (the .item file gives the titles)")
    skipped = SkipCounts()
    errors = RecordErrors(on_error, skipped)
    items = _read_items(item_path, seq_separator, errors, strict)
    interactions = _read_interactions(inter_path, items, errors, strict)
    users = _read_users(user_path, errors) if user_path.is_file() else {}
    sources = [str(inter_path), str(item_path)] + ([str(user_path)] if user_path.is_file() else [])
    return RawDataset(name=name, interactions=interactions, items=items, users=users,
                      skipped=skipped, sources=tuple(sources))
