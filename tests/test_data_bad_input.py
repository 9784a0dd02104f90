"""Bad input gives an error naming the file and line, or a counted skip where that is documented."""

import gzip
import json
import re

import pytest

from fixture_files import (AMAZON2018_META, AMAZON2018_REVIEWS, write_amazon2014,
                           write_amazon2018, write_ml100k, write_ml1m, write_recbole,
                           write_text_file)
from instructrec_jax.data.amazon import read_amazon2014, read_amazon2018
from instructrec_jax.data.movielens import read_ml100k, read_ml1m
from instructrec_jax.data.recbole_atomic import read_atomic
from instructrec_jax.data.types import DataFormatError

GOOD_REVIEW = json.dumps({"reviewerID": "A1USER", "asin": "B000POKE01", "overall": 5.0,
                          "unixReviewTime": 1441065600})


def _amazon(tmp_path, review_lines, meta_lines=None, *, compress=False):
    reviews = write_text_file(tmp_path / "Games.json", review_lines, compress=compress)
    meta = write_text_file(tmp_path / "meta_Games.json",
                           meta_lines or [json.dumps(m) for m in AMAZON2018_META])
    return reviews, meta


def _raises_at(path, line, *fragments):
    """pytest.raises for a DataFormatError at path:line whose message holds every fragment."""
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    pattern = re.escape(where) + "".join(".*" + re.escape(f) for f in fragments)
    return pytest.raises(DataFormatError, match=pattern)


def test_invalid_json_line_names_file_and_line(tmp_path):
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW, '{"reviewerID": "A2", "asin": '])
    with _raises_at(reviews, 2, "malformed line", "invalid JSON") as error:
        read_amazon2018(reviews, meta)
    assert error.value.path == str(reviews) and error.value.line == 2


def test_json_line_that_is_not_an_object(tmp_path):
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW, "[1, 2, 3]"])
    with _raises_at(reviews, 2, "expected an object per line, got list"):
        read_amazon2018(reviews, meta)


@pytest.mark.parametrize("field", ["reviewerID", "asin", "unixReviewTime"])
def test_missing_required_review_field_names_it(tmp_path, field):
    record = json.loads(GOOD_REVIEW)
    del record[field]
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW, GOOD_REVIEW, json.dumps(record)])
    with _raises_at(reviews, 3, f"missing required field {field!r}"):
        read_amazon2018(reviews, meta)


def test_missing_asin_in_metadata_names_line(tmp_path):
    meta_lines = [json.dumps(AMAZON2018_META[0]), json.dumps({"title": "No asin here"})]
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW], meta_lines)
    with _raises_at(meta, 2, "missing required field 'asin'"):
        read_amazon2018(reviews, meta)


@pytest.mark.parametrize("field,value", [("unixReviewTime", "yesterday"), ("overall", "five")])
def test_non_numeric_rating_or_time_is_malformed(tmp_path, field, value):
    record = json.loads(GOOD_REVIEW)
    record[field] = value
    reviews, meta = _amazon(tmp_path, [json.dumps(record)])
    with _raises_at(reviews, 1, "malformed line", f"non-numeric {field!r} value {value!r}"):
        read_amazon2018(reviews, meta)


def test_unknown_item_is_skipped_by_default_and_raises_when_strict(tmp_path):
    unknown = json.dumps({"reviewerID": "A9", "asin": "B0NOSUCH00", "unixReviewTime": 5})
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW, unknown],
                            [json.dumps(m) for m in AMAZON2018_META[:2]])
    data = read_amazon2018(reviews, meta)
    assert len(data.interactions) == 1
    assert data.skipped["review of item missing from metadata"] == 1
    with _raises_at(reviews, 2, "'B0NOSUCH00'", "strict mode"):
        read_amazon2018(reviews, meta, strict=True)


def test_unknown_item_strict_in_movielens_and_recbole(tmp_path):
    with _raises_at(tmp_path / "ml" / "u.data", 7, "'9999'", "strict mode"):
        read_ml100k(write_ml100k(tmp_path / "ml"), strict=True)
    with _raises_at(tmp_path / "rb" / "mini.inter", 7, "'777'", "strict mode"):
        read_atomic(write_recbole(tmp_path / "rb"), strict=True)


def test_empty_files_have_no_records(tmp_path):
    reviews, meta = _amazon(tmp_path, [])
    with _raises_at(reviews, None, "no records (the file is empty)"):
        read_amazon2018(reviews, meta)
    write_text_file(meta, ["", "   "])
    with _raises_at(meta, None, "no records"):
        read_amazon2018(reviews, meta)


def test_empty_movielens_and_recbole_files_have_no_records(tmp_path):
    folder = write_ml100k(tmp_path / "ml")
    write_text_file(folder / "u.data", [])
    with _raises_at(folder / "u.data", None, "no records"):
        read_ml100k(folder)
    folder = write_recbole(tmp_path / "rb")
    write_text_file(folder / "mini.inter", ["user_id:token\titem_id:token\ttimestamp:float"])
    with _raises_at(folder / "mini.inter", None, "no records"):
        read_atomic(folder)
    write_text_file(folder / "mini.inter", [])
    with _raises_at(folder / "mini.inter", None, "no records"):
        read_atomic(folder)


def test_utf16_file_is_reported_as_wrong_encoding(tmp_path):
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW])
    reviews.write_bytes(("\n".join([GOOD_REVIEW] * 3) + "\n").encode("utf-16"))
    with _raises_at(reviews, 1, "wrong encoding", "is the file UTF-16 or binary?"):
        read_amazon2018(reviews, meta)


def test_utf16_without_bom_is_caught_by_its_nul_bytes(tmp_path):
    folder = write_recbole(tmp_path / "rb")
    item = folder / "mini.item"
    item.write_bytes(item.read_text(encoding="utf-8").encode("utf-16-le"))
    with _raises_at(item, 1, "wrong encoding", "NUL byte"):
        read_atomic(folder)


def test_binary_file_is_reported_with_its_line(tmp_path):
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW])
    reviews.write_bytes(GOOD_REVIEW.encode() + b"\n" + bytes([0xFF, 0xD8, 0xFF, 0xE0]) + b"\n")
    with _raises_at(reviews, 2, "wrong encoding", "b'\\xff' at column 1"):
        read_amazon2018(reviews, meta)


def test_truncated_gzip_names_the_file(tmp_path):
    reviews, meta = write_amazon2018(tmp_path, compress=True)
    blob = gzip.compress(("\n".join(json.dumps(r) for r in AMAZON2018_REVIEWS * 50)).encode())
    reviews.write_bytes(blob[: len(blob) // 2])
    with _raises_at(reviews, None, "truncated gzip stream (EOFError"):
        read_amazon2018(reviews, meta)


def test_wrong_column_count_in_movielens(tmp_path):
    folder = write_ml100k(tmp_path)
    write_text_file(folder / "u.data", ["196\t1\t3\t881250949", "196 1 3 881250949"])
    with _raises_at(folder / "u.data", 2, "malformed line", "expected 4 '\\t'-separated columns",
                    "got 1"):
        read_ml100k(folder)


def test_non_numeric_rating_in_ml1m(tmp_path):
    folder = write_ml1m(tmp_path)
    write_text_file(folder / "ratings.dat", ["1::1::5::978300760", "1::73::good::978302109"],
                    encoding="latin-1")
    with _raises_at(folder / "ratings.dat", 2, "non-numeric rating 'good'"):
        read_ml1m(folder)


def test_bad_genre_flags_in_ml100k(tmp_path):
    folder = write_ml100k(tmp_path)
    lines = (folder / "u.item").read_text(encoding="latin-1").splitlines()
    lines[1] = lines[1][:-1] + "x"
    write_text_file(folder / "u.item", lines, encoding="latin-1")
    with _raises_at(folder / "u.item", 2, "genre flags must be 0 or 1"):
        read_ml100k(folder)


def test_recbole_missing_required_column_and_bad_header(tmp_path):
    folder = write_recbole(tmp_path)
    write_text_file(folder / "mini.inter", ["user_id:token\titem_id:token", "1\t1"])
    with _raises_at(folder / "mini.inter", 1, "missing required column 'timestamp'"):
        read_atomic(folder)
    write_text_file(folder / "mini.inter", ["user_id\titem_id:token\ttimestamp:float", "1\t1\t5"])
    with _raises_at(folder / "mini.inter", 1, "'user_id' is not 'name:type'"):
        read_atomic(folder)


def test_recbole_missing_value_and_non_numeric_timestamp(tmp_path):
    folder = write_recbole(tmp_path)
    header = "user_id:token\titem_id:token\ttimestamp:float"
    write_text_file(folder / "mini.inter", [header, "1\t1\t5", "\t1\t6"])
    with _raises_at(folder / "mini.inter", 3, "missing required field 'user_id'"):
        read_atomic(folder)
    write_text_file(folder / "mini.inter", [header, "1\t1\tnoon"])
    with _raises_at(folder / "mini.inter", 2, "non-numeric timestamp 'noon'"):
        read_atomic(folder)


def test_skip_mode_counts_bad_lines_by_reason(tmp_path):
    no_user = json.loads(GOOD_REVIEW)
    del no_user["reviewerID"]
    bad_time = dict(json.loads(GOOD_REVIEW), unixReviewTime="noon")
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW, "{oops", json.dumps(no_user),
                                       json.dumps(bad_time), "\x00{}", GOOD_REVIEW])
    data = read_amazon2018(reviews, meta, on_error="skip")
    assert len(data.interactions) == 2
    assert data.skipped["malformed line"] == 2
    assert data.skipped["missing required field 'reviewerID'"] == 1
    assert data.skipped["wrong encoding"] == 1


def test_skip_mode_with_nothing_left_still_fails(tmp_path):
    reviews, meta = _amazon(tmp_path, ["{oops", "{worse"])
    with _raises_at(reviews, None, "no records (2 records skipped as bad input)"):
        read_amazon2018(reviews, meta, on_error="skip")


def test_on_error_must_be_raise_or_skip(tmp_path):
    with pytest.raises(ValueError, match="on_error must be one of"):
        read_amazon2018(*write_amazon2018(tmp_path), on_error="ignore")


def test_python_literals_are_never_evaluated(tmp_path):
    marker = tmp_path / "executed"
    reviews, meta = write_amazon2014(tmp_path)
    write_text_file(reviews, [f"__import__('pathlib').Path({str(marker)!r}).touch()"],
                    compress=True)
    with _raises_at(reviews, 1, "malformed line", "neither a JSON object nor a Python dict"):
        read_amazon2014(reviews, meta)
    assert not marker.exists()


def test_missing_movielens_file_is_named(tmp_path):
    folder = write_ml1m(tmp_path)
    (folder / "movies.dat").unlink()
    with pytest.raises(FileNotFoundError, match="missing movies.dat"):
        read_ml1m(folder)


def test_untitled_item_raises_when_strict(tmp_path):
    reviews, meta = _amazon(tmp_path, [GOOD_REVIEW])
    with _raises_at(meta, 6, "item 'B000NOTITL' has no title", "strict mode"):
        read_amazon2018(reviews, meta, strict=True)
