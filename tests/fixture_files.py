"""Small data files in each real format, written into a test's tmp dir.

Every writer lays down a hand-made core whose values the reader tests check one by one (unicode
titles such as "Misérables, Les" and "Pokémon", HTML entities, missing optional fields, an item
without metadata, a duplicate metadata line), and can add a deterministic synthetic block
(`extra_users`, `extra_items`) so that end-to-end tests have enough data to survive a 5-core filter:
`extra_users=200, extra_items=150` gives about 200 users and 147 items after the default
PreprocessConfig (5-core, 9 and 99 negatives) in a third of a second.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Iterable


def write_text_file(path: Path, lines: Iterable[str], *, compress: bool = False,
                    encoding: str = "utf-8") -> Path:
    """Writes lines (each ending with a newline) as text, gzip-compressed when asked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode(encoding)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _synthetic(extra_users: int, extra_items: int, seed: int, per_user: int = 8):
    """(user index, item index, timestamp) triples: every user rates `per_user` distinct items."""
    rng = random.Random(seed)
    rows = []
    for user in range(extra_users):
        chosen = rng.sample(range(extra_items), min(per_user, extra_items))
        for k, item in enumerate(chosen):
            rows.append((user, item, 1_500_000_000 + user * 1_000 + k * 10))
    return rows


# ---- Amazon 2018 ----

AMAZON2018_META = [
    {"asin": "B000POKE01", "title": "Pokémon Red Version",
     "category": ["Video Games", "Nintendo 3DS &amp; 2DS", "Games"], "brand": "Nintendo",
     "description": ["Catch them all.", "<b>Classic</b> edition."], "main_cat": "Video Games",
     "date": "September 28, 1998"},
    {"asin": "B000TOMJER", "title": "Tom &amp; Jerry in &quot;War of the Whiskers&quot;",
     "category": ["Video Games", "PC"], "brand": "NewKidCo", "description": "A cartoon brawler.",
     "main_cat": "Video Games"},
    {"asin": "B000NOOPT1", "title": "Misérables, Les: The Game"},
    {"asin": "B000MAINCT", "title": "Gaming Mouse", "category": [],
     "main_cat": '<img src="https://example.com/x.png" class="nav-categ-image" alt="Computers"/>'},
    {"asin": "B000POKE01", "title": "Pokemon (a duplicate line)"},
    {"asin": "B000NOTITL", "title": "", "category": ["Video Games"]},
    {"asin": "B000ESCAPE", "title": "Caf\u00e9 Tycoon", "category": ["Video Games", "PC"]},
]

AMAZON2018_REVIEWS = [
    {"overall": 5.0, "verified": True, "reviewTime": "09 1, 2015", "reviewerID": "A1USER",
     "asin": "B000POKE01", "reviewerName": "Ann", "reviewText": "Loved it — the best Pokémon.",
     "summary": "Great", "unixReviewTime": 1441065600},
    {"overall": 3.0, "reviewerID": "A1USER", "asin": "B000TOMJER",
     "reviewText": "Fun &amp; silly.", "unixReviewTime": 1441152000},
    {"overall": 4.0, "reviewerID": "A2USER", "asin": "B000NOOPT1", "unixReviewTime": 1441238400},
    {"overall": 2.0, "reviewerID": "A2USER", "asin": "B000MAINCT", "summary": "Meh",
     "unixReviewTime": 1441324800},
    {"overall": 5.0, "reviewerID": "A3USER", "asin": "B000UNKNWN", "unixReviewTime": 1441411200},
    {"overall": 4.0, "reviewerID": "A3USER", "asin": "B000ESCAPE", "unixReviewTime": 1441497600,
     "vote": "2", "style": {"Platform:": " PC"}},
    {"overall": 1.0, "reviewerID": "A1USER", "asin": "B000NOTITL", "unixReviewTime": 1441584000},
]


def write_amazon2018(directory: Path, *, compress: bool = True, category: str = "Video_Games",
                     extra_users: int = 0, extra_items: int = 0) -> tuple[Path, Path]:
    """Writes `<category>.json(.gz)` and `meta_<category>.json(.gz)`; returns (reviews, meta)."""
    meta = list(AMAZON2018_META)
    reviews = list(AMAZON2018_REVIEWS)
    meta += [{"asin": f"B9{i:08d}", "title": f"Game {i}", "brand": f"Studio {i % 7}",
              "category": ["Video Games", ["PC", "Xbox", "Nintendo"][i % 3]]}
             for i in range(extra_items)]
    reviews += [{"overall": float(1 + (u + i) % 5), "reviewerID": f"AX{u:06d}",
                 "asin": f"B9{i:08d}", "reviewText": f"Review of game {i}.", "unixReviewTime": t}
                for u, i, t in _synthetic(extra_users, extra_items, seed=2018)]
    ext = ".json.gz" if compress else ".json"
    directory = Path(directory)
    reviews_path = write_text_file(directory / f"{category}{ext}",
                                   (json.dumps(r) for r in reviews), compress=compress)
    meta_path = write_text_file(directory / f"meta_{category}{ext}",
                                (json.dumps(m, ensure_ascii=False) for m in meta),
                                compress=compress)
    return reviews_path, meta_path


# ---- Amazon 2014 ----

AMAZON2014_META_LINES = [
    "{'asin': '0000031852', 'title': 'Pokémon Snap', 'categories': [['Video Games', "
    "'Nintendo 64', 'Games'], ['Toys & Games']], 'brand': 'Nintendo', 'description': "
    "\"It's a photo game\", 'price': 3.17, 'salesRank': {'Video Games': 211}, "
    "'related': {'also_bought': ['B00JHONN1S']}}",
    "{'asin': '0000031853', 'title': 'Crash Bandicoot', 'categories': [[]]}",
    "{'asin': '0000031854', 'categories': [['Video Games']]}",
    "{'asin': '0000031855', 'title': 'Zelda: Ocarina of Time', 'categories': [[], ['Video Games', "
    "'Nintendo 64']], 'imUrl': 'http://example.com/z.jpg'}",
]

AMAZON2014_REVIEW_LINES = [
    json.dumps({"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000031852", "reviewerName": "J. M.",
                "helpful": [2, 3], "reviewText": "Fun to play.", "overall": 5.0,
                "summary": "Great", "unixReviewTime": 1252800000, "reviewTime": "09 13, 2009"}),
    "{'reviewerID': 'A2SUAM1J3GNN3B', 'asin': '0000031855', 'overall': 4.0, "
    "'unixReviewTime': 1252886400, 'reviewText': 'Zelda \"classic\" – superb', 'helpful': [0, 0]}",
    "{'reviewerID': 'A1ANOTHER', 'asin': '0000031853', 'overall': 3.0, "
    "'unixReviewTime': 1252972800}",
]


def write_amazon2014(directory: Path, *, compress: bool = True,
                     category: str = "Video_Games") -> tuple[Path, Path]:
    """Writes `reviews_<category>_5.json(.gz)` and `meta_<category>.json(.gz)` (Python literals)."""
    ext = ".json.gz" if compress else ".json"
    directory = Path(directory)
    reviews = write_text_file(directory / f"reviews_{category}_5{ext}", AMAZON2014_REVIEW_LINES,
                              compress=compress)
    meta = write_text_file(directory / f"meta_{category}{ext}", AMAZON2014_META_LINES,
                           compress=compress)
    return reviews, meta


# ---- MovieLens ml-100k ----

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


ML100K_ITEMS = [
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
    + _flags("Animation", "Children's", "Comedy"),
    "543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables|"
    + _flags("Drama", "Musical"),
    "267|unknown||||" + _flags("unknown"),
    "1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||x|"
    + _flags("Animation", "Children's"),
    "1633|Á köldum klaka (Cold Fever) (1994)|08-Mar-1996||x|" + _flags("Comedy", "Drama"),
    "1681|You So Crazy|01-Jan-1994||x|" + _flags("Comedy"),
]

ML100K_RATINGS = [
    "196\t1\t3\t881250949",
    "196\t543\t5\t881250950",
    "186\t1412\t1\t891717742",
    "186\t1633\t4\t891717742",
    "186\t267\t2\t891717700",
    "22\t1681\t3\t878887116",
    "22\t9999\t3\t878887117",
]

ML100K_USERS = ["196|49|M|writer|55105", "186|39|F|executive|00000", "22|25|M|writer|40206"]


def write_ml100k(directory: Path, *, extra_users: int = 0, extra_items: int = 0,
                 encoding: str = "latin-1") -> Path:
    """Writes u.data, u.item (latin-1, as GroupLens ships it) and u.user; returns the folder."""
    directory = Path(directory)
    items = list(ML100K_ITEMS) + [
        f"{2000 + i}|Film {i} ({1950 + i % 50})|01-Jan-{1950 + i % 50}||x|"
        + _flags(ML100K_GENRES[1 + i % 18]) for i in range(extra_items)]
    ratings = list(ML100K_RATINGS) + [
        f"{1000 + u}\t{2000 + i}\t{1 + (u + i) % 5}\t{t}"
        for u, i, t in _synthetic(extra_users, extra_items, seed=100)]
    users = list(ML100K_USERS) + [f"{1000 + u}|{20 + u % 40}|{'MF'[u % 2]}|student|{u:05d}"
                                  for u in range(extra_users)]
    write_text_file(directory / "u.item", items, encoding=encoding)
    write_text_file(directory / "u.data", ratings, encoding=encoding)
    write_text_file(directory / "u.user", users, encoding=encoding)
    return directory


# ---- MovieLens ml-1m ----

ML1M_MOVIES = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "73::Misérables, Les (1995)::Drama|Musical",
    "2617::Pokémon: The First Movie (1998)::Animation|Children's",
    "3::Grumpier Old Men (1995)::Comedy|Romance",
]
ML1M_RATINGS = ["1::1::5::978300760", "1::73::3::978302109", "2::2617::4::978298413",
                "2::3::2::978299000"]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]


def write_ml1m(directory: Path) -> Path:
    """Writes ratings.dat, movies.dat and users.dat (`::`-separated, latin-1)."""
    directory = Path(directory)
    write_text_file(directory / "movies.dat", ML1M_MOVIES, encoding="latin-1")
    write_text_file(directory / "ratings.dat", ML1M_RATINGS, encoding="latin-1")
    write_text_file(directory / "users.dat", ML1M_USERS, encoding="latin-1")
    return directory


# ---- RecBole atomic files ----

RECBOLE_ITEMS = [
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
    "1\tToy Story\t1995\tAnimation Children's Comedy",
    "543\tMisérables, Les\t1995\tDrama Musical",
    "267\tunkonwn\tunkonwn\tunknown",
    "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's",
    "1633\tÁ köldum klaka (Cold Fever)\t1994\tComedy Drama",
]
RECBOLE_INTER = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "196\t1\t3\t881250949",
    "196\t543\t5\t881250950",
    "186\t1412\t1\t891717742",
    "186\t1633\t4\t891717742.0",
    "22\t267\t2\t878887116",
    "22\t777\t4\t878887117",
]
RECBOLE_USERS = [
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
    "196\t49\tM\twriter\t55105",
    "186\t39\tF\texecutive\t00000",
    "22\t25\tM\twriter\t40206",
]


def write_recbole(directory: Path, name: str = "mini", *, extra_users: int = 0,
                  extra_items: int = 0, with_users: bool = True) -> Path:
    """Writes `<directory>/<name>.{inter,item,user}` (UTF-8); returns the folder."""
    directory = Path(directory)
    items = list(RECBOLE_ITEMS) + [f"{2000 + i}\tFilm {i}\t{1950 + i % 50}\t"
                                   f"{ML100K_GENRES[1 + i % 18]}" for i in range(extra_items)]
    inter = list(RECBOLE_INTER) + [f"{1000 + u}\t{2000 + i}\t{1 + (u + i) % 5}\t{t}"
                                   for u, i, t in _synthetic(extra_users, extra_items, seed=7)]
    write_text_file(directory / f"{name}.item", items)
    write_text_file(directory / f"{name}.inter", inter)
    if with_users:
        write_text_file(directory / f"{name}.user", RECBOLE_USERS)
    return directory


def prepare_id_token_ml100k(tmp_path_factory, name: str, *, extra_users: int, extra_items: int,
                            max_train_examples: int, train_passes: int = 1) -> Path:
    """A small ml-100k-format dataset prepared for ⟨P1,I0,T3⟩ with one vocabulary piece per item
    (600 pieces, 9 negatives, no neg99 files)."""
    import pytest

    from instructrec_jax import prepare as prepare_module
    from instructrec_jax.data.preprocess import PreprocessConfig

    raw = write_ml100k(tmp_path_factory.mktemp("raw"), extra_users=extra_users, extra_items=extra_items)
    out = tmp_path_factory.mktemp("prepared")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_module, "VOCAB_SAMPLE_RECORDS", 300)
        return prepare_module.prepare("ml-100k", raw, out, name=name, renderer="id_token",
                                      config=PreprocessConfig(negatives=(9,)), types=["p1_i0_t3"],
                                      neg99="none", vocab_size=600,
                                      max_train_examples_per_type=max_train_examples,
                                      train_passes=train_passes, log=lambda _: None)
