"""Readers for the GroupLens MovieLens releases ml-100k and ml-1m, in their original files.

ml-100k: `u.data` (user, item, rating, timestamp; tab-separated), `u.item` (pipe-separated: id,
title, release date, video release date, IMDb URL, then 19 genre flags), `u.user` (id, age,
gender, occupation, zip code). ml-1m: `ratings.dat`, `movies.dat` ("Title (Year)" and
"Genre|Genre"), `users.dat`, all `::`-separated. GroupLens ships latin-1; a line that is valid
UTF-8 is read as UTF-8 (copies re-saved as UTF-8 read the same as the originals).

Item text: the title without its trailing "(1995)", which becomes `year` (for ml-100k, the
release date's year when the title has none); genres become `categories` in the source's order.
The genre 'unknown' (ml-100k) and '(no genres listed)' mean "no genre" and give no category.

Documented skip: 'rating of item missing from metadata' (strict=True raises instead). The user
file is optional; when present its columns become `RawDataset.users`. Malformed lines (wrong
column count, non-numeric rating or timestamp) and missing ids raise `DataFormatError`, or with
`on_error='skip'` are counted by reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

from instructrec_jax.data.text_lines import RecordErrors, no_records_error, read_lines
from instructrec_jax.data.types import Interaction, Item, RawDataset, SkipCounts

SKIP_UNKNOWN_ITEM = "rating of item missing from metadata"
MALFORMED = "malformed line"

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
NO_GENRE = frozenset({"unknown", "(no genres listed)"})

# "Title (1995)", also "Title (1995) (V)" as in a few ml-100k entries: the year is the last
# four-digit parenthesised group; anything after it is kept in the title.
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)(?P<rest>(?:\s*\([^()]*\))*)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")


def split_title_year(text: str) -> tuple[str, int | None]:
    """('Toy Story', 1995) from 'Toy Story (1995)'; (text, None) when there is no year."""
    text = text.strip()
    match = _TITLE_YEAR.match(text)
    if not match or not match.group("title"):
        return text, None
    title = (match.group("title") + match.group("rest")).strip()
    return title, int(match.group("year"))


def genre_categories(genres) -> tuple[str, ...]:
    """Genres as categories, dropping the placeholders that mean "no genre"."""
    return tuple(g for g in (g.strip() for g in genres) if g and g not in NO_GENRE)


def _rows(path: Path, separator: str, columns: int, what: str,
          errors: RecordErrors) -> Iterator[tuple[int, list[str]]]:
    for number, text in read_lines(path, errors, encoding="utf-8", fallback_encoding="latin-1"):
        fields = text.split(separator)
        if len(fields) != columns:
            errors.bad(path, number, MALFORMED,
                       f"expected {columns} {separator!r}-separated columns ({what}), "
                       f"got {len(fields)}")
            continue
        yield number, fields


def _required(fields: list[str], index: int, field: str, path: Path, number: int,
              errors: RecordErrors) -> str | None:
    value = fields[index].strip()
    if not value:
        errors.bad(path, number, f"missing required field {field!r}",
                   f"column {index + 1} ({field}) is empty")
        return None
    return value


def _number(text: str, field: str, path: Path, number: int, errors: RecordErrors, convert):
    try:
        return convert(text.strip())
    except ValueError:
        errors.bad(path, number, MALFORMED, f"non-numeric {field} {text!r}; expected a number")
        return None


def _read_ratings(path: Path, separator: str, items: dict[str, Item], errors: RecordErrors,
                  strict: bool) -> list[Interaction]:
    interactions = []
    before = sum(errors.skipped.values())
    seen = 0
    for number, fields in _rows(path, separator, 4, "user, item, rating, timestamp", errors):
        user = _required(fields, 0, "user", path, number, errors)
        if user is None:
            continue
        item = _required(fields, 1, "item", path, number, errors)
        if item is None:
            continue
        rating = _number(fields[2], "rating", path, number, errors, float)
        if rating is None:
            continue
        timestamp = _number(fields[3], "timestamp", path, number, errors, int)
        if timestamp is None:
            continue
        seen += 1
        if item not in items:
            errors.documented_skip(path, number, SKIP_UNKNOWN_ITEM, f"rating of item {item!r}, "
                                   "which is not in the movie file", strict=strict)
            continue
        interactions.append(Interaction(user, item, timestamp, rating))
    if not seen:
        raise no_records_error(path, before, sum(errors.skipped.values()))
    return interactions


def _read_users(path: Path, separator: str, names: tuple[str, ...],
                errors: RecordErrors) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    users = {}
    for number, fields in _rows(path, separator, len(names) + 1, "user id, " + ", ".join(names),
                                errors):
        user = _required(fields, 0, "user", path, number, errors)
        if user is not None:
            users[user] = dict(zip(names, (f.strip() for f in fields[1:])))
    return users


def _check_directory(directory: Path, required: tuple[str, ...]) -> None:
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: missing {', '.join(missing)}; expected the "
                                f"unpacked MovieLens folder holding {', '.join(required)}")


def _read_ml100k_items(path: Path, errors: RecordErrors) -> dict[str, Item]:
    items = {}
    before = sum(errors.skipped.values())
    columns = 5 + len(ML100K_GENRES)
    for number, fields in _rows(path, "|", columns, "id, title, dates, url, 19 genre flags",
                                errors):
        item = _required(fields, 0, "item", path, number, errors)
        if item is None:
            continue
        flags = [f.strip() for f in fields[5:]]
        if any(f not in ("0", "1") for f in flags):
            errors.bad(path, number, MALFORMED, "genre flags must be 0 or 1")
            continue
        title, year = split_title_year(fields[1])
        if year is None:
            date = _DATE_YEAR.search(fields[2].strip())
            year = int(date.group(1)) if date else None
        items[item] = Item(
            item_id=item, title=title or item, year=year,
            categories=genre_categories(g for g, f in zip(ML100K_GENRES, flags) if f == "1"),
        )
    if not items:
        raise no_records_error(path, before, sum(errors.skipped.values()))
    return items


def _read_release(directory: Path, files: tuple[str, str, str], read_items,
                  separators: tuple[str, str], user_columns: tuple[str, ...], name: str,
                  strict: bool, on_error: str) -> RawDataset:
    """Reads one MovieLens release from its (ratings, movies, users) files.

    `separators` are those of the ratings and the user file (ml-100k mixes tabs and pipes).
    """
    ratings, movies, users = (directory / f for f in files)
    _check_directory(directory, files[:2])
    skipped = SkipCounts()
    errors = RecordErrors(on_error, skipped)
    items = read_items(movies, errors)
    interactions = _read_ratings(ratings, separators[0], items, errors, strict)
    return RawDataset(name=name, interactions=interactions, items=items,
                      users=_read_users(users, separators[1], user_columns, errors),
                      skipped=skipped, sources=tuple(str(directory / f) for f in files))


def read_ml100k(directory: str | os.PathLike, *, name: str = "ml-100k", strict: bool = False,
                on_error: str = "raise") -> RawDataset:
    """Reads the unpacked ml-100k folder (u.data, u.item, optional u.user)."""
    return _read_release(Path(directory), ("u.data", "u.item", "u.user"), _read_ml100k_items,
                         ("\t", "|"), ("age", "gender", "occupation", "zip_code"), name,
                         strict, on_error)


def _read_ml1m_items(path: Path, errors: RecordErrors) -> dict[str, Item]:
    items = {}
    before = sum(errors.skipped.values())
    for number, fields in _rows(path, "::", 3, "id, title, genres", errors):
        item = _required(fields, 0, "item", path, number, errors)
        if item is None:
            continue
        title, year = split_title_year(fields[1])
        items[item] = Item(item_id=item, title=title or item, year=year,
                           categories=genre_categories(fields[2].split("|")))
    if not items:
        raise no_records_error(path, before, sum(errors.skipped.values()))
    return items


def read_ml1m(directory: str | os.PathLike, *, name: str = "ml-1m", strict: bool = False,
              on_error: str = "raise") -> RawDataset:
    """Reads the unpacked ml-1m folder (ratings.dat, movies.dat, optional users.dat)."""
    return _read_release(Path(directory), ("ratings.dat", "movies.dat", "users.dat"),
                         _read_ml1m_items, ("::", "::"), ("gender", "age", "occupation",
                                                          "zip_code"), name, strict, on_error)
