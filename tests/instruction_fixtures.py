"""A small hand-made store for the instruction tests: items with category paths, brands, years and
descriptions, and users with ratings and reviews, run through the real preprocessing."""

from __future__ import annotations

import random

from instructrec_jax.data.preprocess import PreprocessConfig, prepare_data
from instructrec_jax.data.types import Interaction, Item, RawDataset

GENRES = ("Action", "Puzzle", "Racing", "Sports", "Strategy")
BRANDS = ("Nintendo", "Sega", "Capcom")
REVIEWS = (
    "I loved the boss fights and the music. Shipping was slow.",
    "Arrived on time. Great fun with friends on a rainy weekend.",
    "It is okay. Nothing special about the controls at all.",
    "Boring after an hour and the story makes no sense.",
    "This quest was great fun and I loved the ending.",
    None,
)


def store_items(n_items: int = 130) -> dict[str, Item]:
    items = {}
    for i in range(n_items):
        genre = GENRES[i % len(GENRES)]
        platform = ("PC", "Console")[i % 2]
        items[f"I{i:03d}"] = Item(
            item_id=f"I{i:03d}",
            title=f"Quest {i} Édition" if i % 11 == 0 else f"Game {i} {genre}",
            categories=("Video Games", platform, genre),
            brand=BRANDS[i % len(BRANDS)],
            year=1990 + (i % 25),
            description=f"A {genre.lower()} adventure with dragons, lasers and co-op dragons. "
                        f"Number {i} in the series.",
        )
    return items


def store_raw(n_users: int = 40, per_user: int = 10, n_items: int = 130,
              seed: int = 0) -> RawDataset:
    rng = random.Random(seed)
    items = store_items(n_items)
    ids = sorted(items)
    log = []
    for u in range(n_users):
        for k, item in enumerate(rng.sample(ids, per_user)):
            log.append(Interaction(
                user_id=f"U{u:02d}", item_id=item, timestamp=1_000_000 + u * 1000 + k * 10,
                rating=float(1 + (u + k) % 5), review=REVIEWS[(u + k) % len(REVIEWS)]))
    return RawDataset(name="toy-store", interactions=log, items=items)


def store_data(seed: int = 0, **kwargs):
    """PreparedData of the toy store: 1-core (nobody filtered), 9 and 99 negatives."""
    config = PreprocessConfig(min_interactions=1, negatives=(9, 99), seed=seed)
    return prepare_data(store_raw(**kwargs), config)
