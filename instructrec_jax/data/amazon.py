"""Readers for the Amazon review data, 2018 (JSON lines) and 2014 (Python-literal lines).

Both releases come as a reviews file (`<Category>.json.gz`, 2014: `reviews_<Category>.json.gz`)
and a metadata file (`meta_<Category>.json.gz`), one record per line, gzip or plain.

What becomes what:
- reviews: `reviewerID` → user, `asin` → item, `unixReviewTime` → timestamp (all required),
  `overall` → rating, `reviewText` → review, `summary` → summary (optional).
- metadata: `asin` (required), `title`, the category path (2018: `category`, a list, or `main_cat`
  when that list is empty; 2014: `categories`, a list of paths, the first non-empty one is used),
  `brand`, `description` (a list of paragraphs or a string), 2018 `date` → year when it holds one.
  Text fields have HTML tags removed and entities unescaped ("Tom &amp; Jerry" → "Tom & Jerry").

Documented skips, each counted in `RawDataset.skipped` under its reason:
- 'duplicate item in metadata': a metadata line repeating an asin (the first one is kept);
- 'item without title': metadata with no usable title (nothing to write in an instruction);
- 'review of item missing from metadata': a review whose asin has no metadata.
With `strict=True` the last two raise `DataFormatError` instead. Malformed lines and missing
required fields raise, or with `on_error='skip'` are counted under their reason.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from instructrec_jax.data.text_lines import RecordErrors, no_records_error, read_lines
from instructrec_jax.data.types import Interaction, Item, RawDataset, SkipCounts

SKIP_DUPLICATE_ITEM = "duplicate item in metadata"
SKIP_UNTITLED_ITEM = "item without title"
SKIP_UNKNOWN_ITEM = "review of item missing from metadata"
MALFORMED = "malformed line"

_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")
_ALT_TEXT = re.compile(r'alt="([^"]*)"')
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")

Record = dict[str, Any]


def clean_text(value: Any) -> str:
    """Plain text from a metadata field: tags dropped, entities unescaped, whitespace collapsed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(part for part in (clean_text(v) for v in value) if part)
    text = str(value)
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return _SPACES.sub(" ", text).strip()


def _parse_json_line(text: str) -> Record:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at column {err.colno}); "
                         "expected one JSON object per line") from None
    return record


def _parse_literal_line(text: str) -> Record:
    # The 2014 metadata (and some review dumps) are Python dict literals; the 5-core review files
    # are JSON. JSON is tried first because it is much faster; literal_eval only builds literals.
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"neither a JSON object nor a Python dict literal ({type(err).__name__}); "
                         "expected one record per line") from None


def _records(path: Path, parse: Callable[[str], Record], errors: RecordErrors):
    """Yields (line number, dict) for each line that parses to an object."""
    for number, text in read_lines(path, errors):
        try:
            record = parse(text)
        except ValueError as err:
            errors.bad(path, number, MALFORMED, str(err))
            continue
        if not isinstance(record, dict):
            errors.bad(path, number, MALFORMED,
                       f"expected an object per line, got {type(record).__name__}")
            continue
        yield number, record


def _required_id(record: Record, field: str, path: Path, number: int,
                 errors: RecordErrors) -> str | None:
    value = record.get(field)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value is None or (isinstance(value, str)):
        errors.bad(path, number, f"missing required field {field!r}",
                   f"the record has no {field!r}; expected a non-empty string")
    else:
        errors.bad(path, number, MALFORMED,
                   f"field {field!r} is a {type(value).__name__}; expected a string")
    return None


def _number(value: Any, field: str, path: Path, number: int, errors: RecordErrors,
            convert: Callable) -> Any:
    """The field as a number; reports a malformed line (and returns None) when it is not one."""
    if isinstance(value, bool):
        value = None
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        errors.bad(path, number, MALFORMED,
                   f"non-numeric {field!r} value {value!r}; expected a number")
        return None


def _int_value(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip()
        return int(value) if value.lstrip("-").isdigit() else int(float(value))
    if isinstance(value, float):
        return int(value)
    if isinstance(value, int):
        return value
    raise TypeError(type(value).__name__)


def _float_value(value: Any) -> float:
    result = float(value)
    if result != result:  # NaN
        raise ValueError("NaN")
    return result


def _category_path_2018(record: Record) -> tuple[str, ...]:
    categories = record.get("category")
    if isinstance(categories, str):
        categories = [categories]
    path = tuple(c for c in (clean_text(c) for c in categories or ()) if c)
    if path:
        return path
    main_cat = record.get("main_cat")
    if isinstance(main_cat, str):
        # Some 2018 main_cat values are an <img> tag whose alt text names the category.
        alt = _ALT_TEXT.search(main_cat)
        text = clean_text(alt.group(1) if alt else main_cat)
        if text:
            return (text,)
    return ()


def _category_path_2014(record: Record) -> tuple[str, ...]:
    categories = record.get("categories")
    if isinstance(categories, str):
        categories = [[categories]]
    if not isinstance(categories, (list, tuple)):
        return ()
    if categories and all(isinstance(c, str) for c in categories):
        categories = [categories]
    for candidate in categories:
        if isinstance(candidate, (list, tuple)):
            path = tuple(c for c in (clean_text(c) for c in candidate) if c)
            if path:
                return path
    return ()


def _year_2018(record: Record) -> int | None:
    date = record.get("date")
    if isinstance(date, str) and len(date) < 40:  # longer values are page fragments, not dates
        match = _YEAR.search(date)
        if match:
            return int(match.group(1))
    return None


def _read_metadata(path: Path, parse, categories_of, year_of, errors: RecordErrors,
                   strict: bool) -> dict[str, Item]:
    items: dict[str, Item] = {}
    before = sum(errors.skipped.values())
    seen = 0
    for number, record in _records(path, parse, errors):
        asin = _required_id(record, "asin", path, number, errors)
        if asin is None:
            continue
        seen += 1
        if asin in items:
            errors.skipped.add(SKIP_DUPLICATE_ITEM)
            continue
        title = clean_text(record.get("title"))
        if not title:
            errors.documented_skip(path, number, SKIP_UNTITLED_ITEM, f"item {asin!r} has no "
                                   "title; expected a non-empty 'title'", strict=strict)
            continue
        items[asin] = Item(
            item_id=asin,
            title=title,
            categories=categories_of(record),
            brand=clean_text(record.get("brand")) or None,
            year=year_of(record),
            description=clean_text(record.get("description")) or None,
        )
    if not seen:
        raise no_records_error(path, before, sum(errors.skipped.values()))
    return items


def _review_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if "&" in value:
        value = html.unescape(value)
    value = value.strip()
    return value or None


def _read_reviews(path: Path, parse, items: dict[str, Item], errors: RecordErrors,
                  strict: bool) -> list[Interaction]:
    interactions: list[Interaction] = []
    before = sum(errors.skipped.values())
    seen = 0
    for number, record in _records(path, parse, errors):
        user = _required_id(record, "reviewerID", path, number, errors)
        if user is None:
            continue
        asin = _required_id(record, "asin", path, number, errors)
        if asin is None:
            continue
        if record.get("unixReviewTime") in (None, ""):
            errors.bad(path, number, "missing required field 'unixReviewTime'",
                       "the record has no 'unixReviewTime'; expected unix seconds")
            continue
        timestamp = _number(record["unixReviewTime"], "unixReviewTime", path, number, errors,
                            _int_value)
        if timestamp is None:
            continue
        rating = None
        if record.get("overall") not in (None, ""):
            rating = _number(record["overall"], "overall", path, number, errors, _float_value)
            if rating is None:
                continue
        seen += 1
        if asin not in items:
            errors.documented_skip(path, number, SKIP_UNKNOWN_ITEM, f"review of item {asin!r}, "
                                   "which has no metadata; expected every reviewed asin in the "
                                   "metadata file", strict=strict)
            continue
        interactions.append(Interaction(
            user_id=user, item_id=asin, timestamp=timestamp, rating=rating,
            review=_review_text(record.get("reviewText")),
            summary=_review_text(record.get("summary")),
        ))
    if not seen:
        raise no_records_error(path, before, sum(errors.skipped.values()))
    return interactions


def dataset_name(reviews_path: str | os.PathLike) -> str:
    """'Video_Games' from '.../Video_Games.json.gz' or '.../reviews_Video_Games_5.json'."""
    name = Path(reviews_path).name
    for suffix in (".gz", ".json", ".jsonl"):
        name = name.removesuffix(suffix)
    return name.removeprefix("reviews_")


def _read(reviews_path, meta_path, *, name, strict, on_error, parse, categories_of,
          year_of) -> RawDataset:
    reviews_path, meta_path = Path(reviews_path), Path(meta_path)
    skipped = SkipCounts()
    errors = RecordErrors(on_error, skipped)
    items = _read_metadata(meta_path, parse, categories_of, year_of, errors, strict)
    interactions = _read_reviews(reviews_path, parse, items, errors, strict)
    return RawDataset(
        name=name or dataset_name(reviews_path),
        interactions=interactions,
        items=items,
        skipped=skipped,
        sources=(str(reviews_path), str(meta_path)),
    )


def read_amazon2018(reviews_path: str | os.PathLike, meta_path: str | os.PathLike, *,
                    name: str | None = None, strict: bool = False,
                    on_error: str = "raise") -> RawDataset:
    """Reads an Amazon 2018 category: `<Category>.json(.gz)` and `meta_<Category>.json(.gz)`."""
    return _read(reviews_path, meta_path, name=name, strict=strict, on_error=on_error,
                 parse=_parse_json_line, categories_of=_category_path_2018, year_of=_year_2018)


def read_amazon2014(reviews_path: str | os.PathLike, meta_path: str | os.PathLike, *,
                    name: str | None = None, strict: bool = False,
                    on_error: str = "raise") -> RawDataset:
    """Reads an Amazon 2014 category; lines may be JSON or Python dict literals (never eval'd)."""
    return _read(reviews_path, meta_path, name=name, strict=strict, on_error=on_error,
                 parse=_parse_literal_line, categories_of=_category_path_2014,
                 year_of=lambda record: None)
