"""Each reader turns its real file format into the expected items, interactions and skips."""

import pytest

from fixture_files import (write_amazon2014, write_amazon2018, write_ml100k, write_ml1m,
                           write_recbole, write_text_file)
from instructrec_jax.data.amazon import read_amazon2014, read_amazon2018
from instructrec_jax.data.movielens import read_ml100k, read_ml1m, split_title_year
from instructrec_jax.data.recbole_atomic import read_atomic
from instructrec_jax.data.sources import SOURCES, find_meta_file, read_source
from instructrec_jax.data.text_lines import is_gzip
from instructrec_jax.data.types import Interaction, Item


@pytest.mark.parametrize("compress", [True, False])
def test_amazon2018_items_keep_text_categories_brand_and_description(tmp_path, compress):
    reviews, meta = write_amazon2018(tmp_path, compress=compress)
    assert is_gzip(reviews) == compress
    data = read_amazon2018(reviews, meta)
    assert data.name == "Video_Games"
    assert data.items["B000POKE01"] == Item(
        item_id="B000POKE01", title="Pokémon Red Version",
        categories=("Video Games", "Nintendo 3DS & 2DS", "Games"), brand="Nintendo", year=1998,
        description="Catch them all. Classic edition.")
    assert data.items["B000TOMJER"].title == 'Tom & Jerry in "War of the Whiskers"'
    assert data.items["B000TOMJER"].description == "A cartoon brawler."
    assert data.items["B000ESCAPE"].title == "Café Tycoon"


def test_amazon2018_optional_fields_may_be_missing(tmp_path):
    data = read_amazon2018(*write_amazon2018(tmp_path))
    assert data.items["B000NOOPT1"] == Item("B000NOOPT1", "Misérables, Les: The Game")
    # An empty category list falls back to main_cat, here the alt text of an <img> tag.
    assert data.items["B000MAINCT"].categories == ("Computers",)
    by_item = {x.item_id: x for x in data.interactions}
    assert by_item["B000NOOPT1"] == Interaction("A2USER", "B000NOOPT1", 1441238400, 4.0)
    assert by_item["B000MAINCT"].review is None and by_item["B000MAINCT"].summary == "Meh"


def test_amazon2018_reviews_in_file_order_with_text(tmp_path):
    data = read_amazon2018(*write_amazon2018(tmp_path))
    assert [(x.user_id, x.item_id) for x in data.interactions] == [
        ("A1USER", "B000POKE01"), ("A1USER", "B000TOMJER"), ("A2USER", "B000NOOPT1"),
        ("A2USER", "B000MAINCT"), ("A3USER", "B000ESCAPE")]
    first = data.interactions[0]
    assert first == Interaction("A1USER", "B000POKE01", 1441065600, 5.0,
                                "Loved it — the best Pokémon.", "Great")
    assert data.interactions[1].review == "Fun & silly."
    assert data.interactions[1].summary is None


def test_amazon2018_duplicates_untitled_and_unknown_items_are_counted(tmp_path):
    data = read_amazon2018(*write_amazon2018(tmp_path))
    assert data.items["B000POKE01"].title == "Pokémon Red Version"  # the first line wins
    assert "B000NOTITL" not in data.items
    assert data.skipped.as_dict() == {
        "duplicate item in metadata": 1,
        "item without title": 1,
        "review of item missing from metadata": 2,  # B000UNKNWN and the untitled B000NOTITL
    }


def test_amazon2014_python_literal_and_json_lines(tmp_path):
    reviews, meta = write_amazon2014(tmp_path)
    data = read_amazon2014(reviews, meta)
    assert data.name == "Video_Games_5"
    assert data.items["0000031852"] == Item(
        "0000031852", "Pokémon Snap", ("Video Games", "Nintendo 64", "Games"), "Nintendo", None,
        "It's a photo game")
    assert data.items["0000031853"].categories == ()
    assert data.items["0000031855"].categories == ("Video Games", "Nintendo 64")
    assert "0000031854" not in data.items
    assert data.interactions == [
        Interaction("A2SUAM1J3GNN3B", "0000031852", 1252800000, 5.0, "Fun to play.", "Great"),
        Interaction("A2SUAM1J3GNN3B", "0000031855", 1252886400, 4.0,
                    'Zelda "classic" – superb', None),
        Interaction("A1ANOTHER", "0000031853", 1252972800, 3.0),
    ]
    assert data.skipped.as_dict() == {"item without title": 1}


def test_amazon2014_plain_files_read_the_same(tmp_path):
    gz = read_amazon2014(*write_amazon2014(tmp_path / "gz"))
    plain = read_amazon2014(*write_amazon2014(tmp_path / "plain", compress=False))
    assert plain.items == gz.items and plain.interactions == gz.interactions


def test_gzip_is_detected_by_content_not_name(tmp_path):
    reviews, meta = write_amazon2018(tmp_path, compress=False)
    renamed = reviews.rename(tmp_path / "reviews.json.gz")
    assert len(read_amazon2018(renamed, meta).interactions) == 5


def test_ml100k_titles_years_genres_and_users(tmp_path):
    data = read_ml100k(write_ml100k(tmp_path))
    assert data.items["1"] == Item("1", "Toy Story", ("Animation", "Children's", "Comedy"),
                                   year=1995)
    assert data.items["543"] == Item("543", "Misérables, Les", ("Drama", "Musical"), year=1995)
    assert data.items["267"] == Item("267", "unknown", (), year=None)
    assert data.items["1412"].title == "Land Before Time III: The Time of the Great Giving (V)"
    assert data.items["1412"].year == 1995
    assert data.items["1633"].title == "Á köldum klaka (Cold Fever)"
    assert data.items["1681"].year == 1994  # from the release date: the title has no year
    assert data.interactions[0] == Interaction("196", "1", 881250949, 3.0)
    assert len(data.interactions) == 6
    assert data.skipped.as_dict() == {"rating of item missing from metadata": 1}
    assert data.users["186"] == {"age": "39", "gender": "F", "occupation": "executive",
                                 "zip_code": "00000"}


def test_ml100k_reads_utf8_copies_like_latin1_originals(tmp_path):
    latin1 = read_ml100k(write_ml100k(tmp_path / "latin1"))
    utf8 = read_ml100k(write_ml100k(tmp_path / "utf8", encoding="utf-8"))
    assert utf8.items == latin1.items


def test_ml1m_double_colon_files(tmp_path):
    data = read_ml1m(write_ml1m(tmp_path))
    assert data.items["73"] == Item("73", "Misérables, Les", ("Drama", "Musical"), year=1995)
    assert data.items["2617"] == Item("2617", "Pokémon: The First Movie",
                                      ("Animation", "Children's"), year=1998)
    assert data.interactions[1] == Interaction("1", "73", 978302109, 3.0)
    assert data.users["2"] == {"gender": "M", "age": "56", "occupation": "16",
                               "zip_code": "70072"}


def test_recbole_atomic_typed_columns(tmp_path):
    data = read_atomic(write_recbole(tmp_path / "mini"))
    assert data.name == "mini"
    assert data.items["1"] == Item("1", "Toy Story", ("Animation", "Children's", "Comedy"),
                                   year=1995)
    assert data.items["543"].title == "Misérables, Les"
    assert data.items["267"] == Item("267", "unkonwn", ())
    # The year column says 'V' for this one; the title's "(1995)" gives the year instead.
    assert data.items["1412"] == Item(
        "1412", "Land Before Time III: The Time of the Great Giving", ("Animation", "Children's"),
        year=1995)
    assert data.interactions[3] == Interaction("186", "1633", 891717742, 4.0)
    assert data.skipped.as_dict() == {"rating of item missing from metadata": 1}
    assert data.users["22"]["occupation"] == "writer"


def test_recbole_prefix_path_and_missing_user_file(tmp_path):
    write_recbole(tmp_path, name="shop", with_users=False)
    data = read_atomic(tmp_path / "shop")
    assert data.name == "shop" and data.users == {} and len(data.interactions) == 5


def test_recbole_brand_and_category_columns(tmp_path):
    write_text_file(tmp_path / "s" / "s.item", [
        "item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq\tprice:float",
        "i1\tSuper Mario Odyssey\tNintendo\tGames Switch\t59.9",
        "i2\tA Plain Item\t\t\t1"])
    write_text_file(tmp_path / "s" / "s.inter", [
        "user_id:token\titem_id:token\ttimestamp:float", "u\ti1\t5", "u\ti2\t6"])
    data = read_atomic(tmp_path / "s")
    assert data.items["i1"] == Item("i1", "Super Mario Odyssey", ("Games", "Switch"), "Nintendo")
    assert data.items["i2"] == Item("i2", "A Plain Item")
    assert data.interactions[1] == Interaction("u", "i2", 6, None)


def test_split_title_year_keeps_inner_parentheses():
    assert split_title_year("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)") == (
        "Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995)
    assert split_title_year("1-900 (1994)") == ("1-900", 1994)
    assert split_title_year("unknown") == ("unknown", None)
    assert split_title_year("(1995)") == ("(1995)", None)


def test_read_source_dispatches_and_finds_meta_files(tmp_path):
    reviews, meta = write_amazon2018(tmp_path / "a18")
    assert find_meta_file(reviews) == meta
    assert len(read_source("amazon2018", reviews).interactions) == 5
    reviews14, meta14 = write_amazon2014(tmp_path / "a14")
    assert find_meta_file(reviews14) == meta14
    assert len(read_source("amazon2014", reviews14, meta_path=meta14).items) == 3
    assert read_source("ml-100k", write_ml100k(tmp_path / "m")).name == "ml-100k"
    assert read_source("ml-1m", write_ml1m(tmp_path / "m1")).name == "ml-1m"
    assert read_source("recbole", write_recbole(tmp_path / "mini")).name == "mini"
    assert SOURCES == {"amazon2018", "amazon2014", "ml-100k", "ml-1m", "recbole",
                       "embedded-ml-100k"}


def test_read_source_rejects_unknown_kind_and_missing_path():
    with pytest.raises(ValueError, match="unknown source kind 'csv'.*amazon2014"):
        read_source("csv", "x")
    with pytest.raises(ValueError, match="needs a path"):
        read_source("ml-100k")
