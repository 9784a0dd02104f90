"""A prepared dataset written with write_prepared reads back identical, from documented files."""

import json

import pytest

from fixture_files import write_amazon2018, write_ml100k
from instructrec_jax.atomic import atomic_directory
from instructrec_jax.data.amazon import read_amazon2018
from instructrec_jax.data.movielens import read_ml100k
from instructrec_jax.data.preprocess import (PreprocessConfig, load_prepared, prepare_data,
                                             prepared_files, write_prepared)
from instructrec_jax.data.types import DataFormatError, SkipCounts


@pytest.fixture(scope="module")
def amazon_prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("amazon")
    raw = read_amazon2018(*write_amazon2018(folder, extra_users=40, extra_items=30))
    data = prepare_data(raw, PreprocessConfig(min_interactions=3, negatives=(9, 15)))
    out = folder / "prepared"
    with atomic_directory(out) as tmp:
        write_prepared(data, tmp)
    return data, out


def test_round_trip_preserves_everything(amazon_prepared):
    data, out = amazon_prepared
    loaded = load_prepared(out)
    assert loaded == data
    assert loaded.config == PreprocessConfig(min_interactions=3, negatives=(9, 15))
    assert isinstance(loaded.skipped, SkipCounts)
    assert loaded.skipped["review of item missing from metadata"] == 2
    assert loaded.sequences[0].reviews[0] == data.sequences[0].reviews[0] is not None


def test_written_files_are_the_documented_ones(amazon_prepared):
    data, out = amazon_prepared
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(prepared_files(data.config))
    assert "candidates/test-neg15.jsonl" in written
    assert "search/candidates-valid-neg9.jsonl" in written
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["name"] == "Video_Games" and meta["config"]["negatives"] == [9, 15]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["raw"]["interactions"] == 5 + 40 * 8  # the hand-made reviews and 8 per extra user
    assert stats["filtered"]["users"] == len(data.sequences)
    assert (out / "stats.md").read_text() == data.stats_markdown()


def test_jsonl_records_are_utf8_and_readable_alone(tmp_path):
    folder = write_ml100k(tmp_path / "ml", extra_users=30, extra_items=20)
    data = prepare_data(read_ml100k(folder), PreprocessConfig(min_interactions=1, negatives=(3,)))
    write_prepared(data, tmp_path)
    lines = (tmp_path / "items.jsonl").read_text(encoding="utf-8").splitlines()
    records = {r["item_id"]: r for r in map(json.loads, lines)}
    assert records["1633"] == {"item_id": "1633", "title": "Á köldum klaka (Cold Fever)",
                               "categories": ["Comedy", "Drama"], "brand": None, "year": 1994,
                               "description": None}
    assert '"Á köldum klaka (Cold Fever)"' in lines[2]  # UTF-8 text, not ASCII escapes
    first = json.loads((tmp_path / "splits" / "test.jsonl").read_text().splitlines()[0])
    assert set(first) == {"user_id", "history", "target", "position", "timestamp", "review"}
    candidates = (tmp_path / "candidates" / "test-neg3.jsonl").read_text().splitlines()
    candidate = json.loads(candidates[0])
    assert candidate["item_ids"][candidate["label_index"]] == first["target"]


def test_write_needs_an_existing_directory(amazon_prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        write_prepared(amazon_prepared[0], tmp_path / "absent")


def test_corrupt_prepared_file_names_file_and_line(amazon_prepared, tmp_path):
    data, _ = amazon_prepared
    write_prepared(data, tmp_path)
    path = tmp_path / "splits" / "valid.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = '{"user_id": "x"}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: not a valid record \(KeyError"):
        load_prepared(tmp_path)
    (tmp_path / "prepared.json").unlink()
    with pytest.raises(DataFormatError, match="prepared.json: missing"):
        load_prepared(tmp_path)
