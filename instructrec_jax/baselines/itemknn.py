"""Item-to-item co-occurrence baseline (item-kNN) built from the training sequences.

Two items co-occur when one user's training prefix holds both (or, with `window`, when they are
at most `window` positions apart in it). The similarity is the cosine of the items' user columns:
co(i, j) / sqrt(n_i * n_j), where n_i is the number of users (or windows) holding i. A candidate
scores the sum of its similarities to the history's items; an item never seen in training has no
neighbours and scores 0.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from instructrec_jax.baselines import training_sequences
from instructrec_jax.data.types import SplitExample


@dataclasses.dataclass
class ItemKNN:
    """Summed cosine similarity between a candidate and the history's items."""

    index: dict[str, int]
    similarity: sp.csr_matrix  # [items, items], zero diagonal
    name: str = "itemknn"

    def score(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        out = []
        for history, row in zip(histories, candidates):
            rows = [self.index[item] for item in history if item in self.index]
            cols = np.array([self.index.get(item, -1) for item in row])
            scores = np.zeros(len(row), dtype=np.float64)
            if rows:
                summed = np.asarray(self.similarity[rows].sum(axis=0)).ravel()
                known = cols >= 0
                scores[known] = summed[cols[known]]
            out.append(scores)
        return out


def fit_itemknn(
    train: Sequence[SplitExample], catalogue: Sequence[str] = (), *, window: int | None = None
) -> ItemKNN:
    """Builds the cosine co-occurrence matrix over the users' training prefixes."""
    prefixes = training_sequences(train)
    items = sorted(set(catalogue) | {item for prefix in prefixes.values() for item in prefix})
    index = {item: i for i, item in enumerate(items)}
    similarity = cooccurrence_similarity(
        [[index[item] for item in prefix] for prefix in prefixes.values()], len(items),
        window=window)
    return ItemKNN(index=index, similarity=similarity)


def cooccurrence_similarity(sequences: Sequence[Sequence[int]], num_items: int, *,
                            window: int | None = None) -> sp.csr_matrix:
    """The cosine co-occurrence matrix [num_items, num_items] (zero diagonal) of index
    sequences: one basket per sequence, or with `window` one per position."""
    rows: list[int] = []
    cols: list[int] = []
    group = 0
    for ids in sequences:
        if window is None:
            # one "basket" per user: each item counted once
            for i in sorted(set(ids)):
                rows.append(group)
                cols.append(i)
            group += 1
        else:
            # one basket per position: the item and the `window` items after it
            for start in range(len(ids)):
                for i in sorted(set(ids[start : start + window + 1])):
                    rows.append(group)
                    cols.append(i)
                group += 1
    baskets = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(max(group, 1), num_items)
    )
    baskets.data[:] = 1.0  # duplicates summed by the constructor: presence only
    co = (baskets.T @ baskets).tocsr()
    counts = co.diagonal().copy()
    co.setdiag(0.0)
    co.eliminate_zeros()
    norm = np.sqrt(np.maximum(counts, 1.0))
    inv = sp.diags(1.0 / norm)
    return (inv @ co @ inv).tocsr()
