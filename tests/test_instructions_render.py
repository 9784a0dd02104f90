"""How items are written: the four renderer styles and title truncation."""

import pytest

from instructrec_jax.data.types import Item
from instructrec_jax.instructions.render import (ItemRenderer, id_token, id_tokens, join_items,
                                                 render_catalogue)

TOY = Item("1", "Toy Story", ("Animation",), year=1995)
LONG = Item("B00X", "  The   Legend of Zelda: Breath of the Wild  ", ("Video Games",))


@pytest.mark.parametrize("style, expected", [
    ("title", "Toy Story"),
    ("title_year", "Toy Story (1995)"),
    ("id_token", "<item_1>"),
    ("title_id", "<item_1> Toy Story"),
])
def test_styles(style, expected):
    assert ItemRenderer(style).render(TOY) == expected


def test_title_year_without_a_year_is_the_title():
    assert ItemRenderer("title_year").render(LONG) == "The Legend of Zelda: Breath of the Wild"


def test_titles_are_whitespace_normalised_and_cut_to_max_words():
    assert ItemRenderer("title", max_title_words=3).render(LONG) == "The Legend of"
    assert ItemRenderer("title_id", max_title_words=2).render(LONG) == "<item_B00X> The Legend"


def test_empty_title_falls_back_to_the_id():
    assert ItemRenderer().render(Item("42", "   ")) == "item 42"


def test_unknown_style_and_bad_limit_are_errors():
    with pytest.raises(ValueError, match="title_year"):
        ItemRenderer("emoji")
    with pytest.raises(ValueError, match="max_title_words"):
        ItemRenderer("title", max_title_words=0)


def test_id_tokens_refuse_ids_that_cannot_be_one_piece():
    assert id_token("B00-X.1_a") == "<item_B00-X.1_a>"
    with pytest.raises(ValueError, match="'title'"):
        id_token("has space")
    assert id_tokens(["2", "10", "1"]) == ("<item_1>", "<item_10>", "<item_2>")


def test_catalogue_rendered_once_and_joined_with_semicolons():
    texts = render_catalogue({"1": TOY, "B00X": LONG}, ItemRenderer("title", 2))
    assert texts == {"1": "Toy Story", "B00X": "The Legend"}
    assert join_items(texts.values()) == "Toy Story; The Legend"
    assert ItemRenderer("id_token").uses_id_tokens and not ItemRenderer().uses_id_tokens
