"""Explicit preferences and intentions derived from metadata and reviews, on hand-made items."""

import pytest

from instructrec_jax.data.types import Item
from instructrec_jax.instructions import derive

# A MovieLens-like catalogue: genres, years, no brands, no descriptions, no reviews.
MOVIES = {
    "1": Item("1", "Toy Story", ("Animation", "Children's", "Comedy"), year=1995),
    "2": Item("2", "GoldenEye", ("Action", "Adventure", "Thriller"), year=1995),
    "3": Item("3", "Four Rooms", ("Thriller",), year=1995),
    "4": Item("4", "Get Shorty", ("Action", "Comedy", "Drama"), year=1995),
    "5": Item("5", "Casablanca", ("Drama", "Romance", "War"), year=1942),
    "6": Item("6", "Annie Hall", ("Comedy", "Romance"), year=1977),
    "7": Item("7", "Drama Queen", ("Drama",), year=1999),
}
MOVIE_FACTS = derive.catalogue_facts(MOVIES)

# An Amazon-like catalogue: a category path under a near-universal root, brands, descriptions.
GAMES = {
    "a": Item("a", "Mario Kart 8", ("Video Games", "Nintendo Switch", "Racing"), brand="Nintendo",
              description="Race with friends online. Racing with items, drifting and drifting."),
    "b": Item("b", "Zelda Breath", ("Video Games", "Nintendo Switch", "Adventure"),
              brand="Nintendo",
              description="Explore a vast open world; climb, glide and cook."),
    "c": Item("c", "Sonic Mania", ("Video Games", "PC", "Platformer"), brand="Sega",
              description="Fast platforming with classic zones."),
    "d": Item("d", "Logitech Mouse", ("Video Games", "PC", "Accessories", "Gaming Mice"),
              brand="Logitech", description="Wireless mouse with adjustable weights and sensor."),
}
GAME_FACTS = derive.catalogue_facts(GAMES)


def test_near_universal_root_category_is_not_informative():
    assert GAME_FACTS.category_share["Video Games"] == 1.0
    assert GAME_FACTS.informative(GAMES["d"]) == ("PC", "Accessories", "Gaming Mice")
    assert MOVIE_FACTS.informative(MOVIES["1"]) == ("Animation", "Children's", "Comedy")


def test_movielens_preference_names_frequent_genres_and_the_decade():
    history = [MOVIES[i] for i in ("1", "4", "6", "2", "3")]
    # Comedy 3, Action 2, Thriller 2 (Thriller seen last, so it wins the tie), Romance 1.
    assert derive.explicit_preference(history, MOVIE_FACTS) == \
        "Enjoys Comedy, Thriller and Action, mostly from the 1990s."


def test_preference_ties_break_by_recency_then_alphabet():
    history = [MOVIES["5"], MOVIES["6"]]  # Romance twice; Drama, War, Comedy once
    text = derive.explicit_preference(history, MOVIE_FACTS)
    assert text == "Enjoys Romance, from the 1940s and 1970s."
    flipped = derive.explicit_preference([MOVIES["6"], MOVIES["5"]], MOVIE_FACTS)
    assert flipped == text  # the same set, whatever the order: only Romance repeats


def test_single_item_history_still_gives_a_sentence():
    assert derive.explicit_preference([MOVIES["5"]], MOVIE_FACTS) == \
        "Enjoys Drama, Romance and War, mostly from the 1940s."


def test_preference_with_brand_and_the_users_own_words():
    history = [GAMES["a"], GAMES["b"], GAMES["c"]]
    reviews = [(5.0, "Great fun with friends"), (3.0, "It was okay I guess"), (5.0, None)]
    text = derive.explicit_preference(history, GAME_FACTS, reviews)
    assert text == ('Enjoys Nintendo Switch, often by Nintendo. '
                    'Once wrote: "Great fun with friends".')


def test_quote_comes_from_the_highest_rated_review_and_ties_go_to_the_latest():
    history = [GAMES["c"], GAMES["d"]]
    reviews = [(5.0, "Loved the classic zones"), (5.0, "Best mouse I ever had")]
    assert derive.explicit_preference(history, GAME_FACTS, reviews).endswith(
        'Once wrote: "Best mouse I ever had".')
    reviews = [(5.0, "Loved the classic zones"), (2.0, "Best mouse I ever had")]
    assert 'Once wrote: "Loved the classic zones".' in derive.explicit_preference(
        history, GAME_FACTS, reviews)


def test_salient_sentence_needs_an_opinion_word_and_avoids_given_words():
    review = "Arrived in two days. I loved racing my kids, great fun! The box was damaged."
    assert derive.salient_sentence(review) == "I loved racing my kids, great fun"
    assert derive.salient_sentence(review, avoid=frozenset({"racing"})) is None
    assert derive.salient_sentence("Shipping was fast and the box was fine.") is None
    assert derive.salient_sentence(None) is None
    assert derive.salient_sentence("Great!") is None  # too short to say anything


def test_vague_intention_from_categories_uses_the_general_end():
    text = derive.vague_intention(MOVIES["6"], MOVIE_FACTS)
    assert "Comedy and Romance" in text and text.startswith(("something", "a "))
    game = derive.vague_intention(GAMES["d"], GAME_FACTS)
    assert "PC and Accessories" in game and "Gaming Mice" not in game


def test_vague_intention_quotes_the_review_sentence_when_given():
    assert derive.vague_intention(GAMES["a"], GAME_FACTS, "great fun with friends") == \
        'something I would describe as "great fun with friends"'


def test_vague_intention_is_stable_per_item():
    assert derive.vague_intention(MOVIES["2"], MOVIE_FACTS) == derive.vague_intention(
        MOVIES["2"], derive.catalogue_facts(MOVIES))


def test_specific_intention_is_the_category_path_and_keywords_without_title_words():
    # Keywords: description words by tf-idf, never title ("mario", "kart") or category words.
    assert derive.specific_intention(GAMES["a"], GAME_FACTS) == \
        "Video Games, Nintendo Switch, Racing, drifting, friends, online, Nintendo"


def test_brand_left_out_of_the_query_when_the_title_names_it():
    # "mouse" is a title word, "Logitech" the brand named in the title: neither is in the query.
    assert derive.specific_intention(GAMES["d"], GAME_FACTS) == \
        "Video Games, PC, Accessories, Gaming Mice, adjustable, sensor, weights"


def test_movielens_query_is_genres_and_decade():
    assert derive.specific_intention(MOVIES["6"], MOVIE_FACTS) == "Comedy, Romance, 1970s"
    # Category names are the paper's I2 even when the title repeats one.
    assert derive.specific_intention(MOVIES["7"], MOVIE_FACTS) == "Drama, 1990s"


def test_query_keywords_rank_by_tf_idf():
    assert derive.query_keywords(GAMES["a"], GAME_FACTS, limit=1) == ["drifting"]
    assert derive.query_keywords(MOVIES["1"], MOVIE_FACTS) == []


def test_common_traits_count_what_several_items_share():
    history = [MOVIES[i] for i in ("1", "4", "6", "2")]
    assert derive.common_traits(history, MOVIE_FACTS) == \
        "Comedy (3 of 4) and Action (2 of 4); 3 of 4 are from the 1990s."
    assert derive.common_traits([MOVIES["5"]], MOVIE_FACTS).startswith("They have little in common")


def test_explanation_names_the_shared_taste():
    history = [MOVIES[i] for i in ("1", "4", "2")]
    text = derive.preference_explanation(MOVIES["6"], "Annie Hall", history, MOVIE_FACTS)
    assert text == ("They often choose Comedy (2 of their last 3 items), "
                    "and Annie Hall is Comedy too.")
    text = derive.preference_explanation(MOVIES["3"], "Four Rooms", history, MOVIE_FACTS)
    assert "Thriller (1 of their last 3 items)" in text and "from the 1990s" in text


def test_explanation_does_not_call_a_single_pick_in_a_long_history_often():
    history = [MOVIES["5"]] * 9 + [MOVIES["6"]]  # Comedy once in ten
    text = derive.preference_explanation(MOVIES["1"], "Toy Story", history, MOVIE_FACTS)
    assert text.startswith("They have chosen Comedy (1 of their last 10 items)")


def test_explanation_when_nothing_is_shared():
    text = derive.preference_explanation(MOVIES["5"], "Casablanca", [MOVIES["1"], MOVIES["2"]],
                                         MOVIE_FACTS)
    assert text.startswith("Casablanca departs from their usual")
    assert "Drama, Romance and War" in text


@pytest.mark.parametrize("year, expected", [(1995, "1990s"), (2000, "2000s"), (None, None)])
def test_decade(year, expected):
    assert derive.decade(year) == expected
