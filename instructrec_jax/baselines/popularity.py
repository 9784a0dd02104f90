"""Most-popular baseline: an item's score is how often it occurs in the training interactions."""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from instructrec_jax.baselines import training_sequences
from instructrec_jax.data.types import SplitExample


@dataclasses.dataclass
class Popularity:
    """Scores a candidate by its count in the training prefixes; the history is ignored.

    Items never seen in training score 0. Equal counts are ties for the metric's tie rule; a
    top-N list breaks them by catalogue order (`baselines.top_items`).
    """

    counts: dict[str, int]
    name: str = "popularity"

    def score(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        del histories  # popularity is the same for everyone
        return [np.array([self.counts.get(item, 0) for item in row], dtype=np.float64) for row in candidates]


def fit_popularity(train: Sequence[SplitExample], catalogue: Sequence[str] = ()) -> Popularity:
    """Counts each item once per training interaction (never valid/test targets)."""
    counts: collections.Counter[str] = collections.Counter()
    for prefix in training_sequences(train).values():
        counts.update(prefix)
    for item in catalogue:
        counts.setdefault(item, 0)
    return Popularity(counts=dict(counts))
