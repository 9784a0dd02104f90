"""Small synthetic leave-one-out splits for the baseline and evaluator tests.

Built with the split rules of INTERFACES §2 (train: every position t>=1 of items[:-2]; valid:
items[-2]; test: items[-1]; history capped), without depending on the data helper's code, so the
baseline tests pin the protocol themselves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from instructrec_jax.data.types import CandidateSet, SplitExample


@dataclasses.dataclass
class Splits:
    sequences: dict[str, tuple[str, ...]]
    train: list[SplitExample]
    valid: list[SplitExample]
    test: list[SplitExample]
    catalogue: list[str]
    candidates: dict[tuple[str, int], dict[str, CandidateSet]]


def split_sequences(sequences: dict[str, tuple[str, ...]], catalogue: list[str], *, max_history=20, negatives=9, seed=0) -> Splits:
    train, valid, test = [], [], []
    for user, items in sorted(sequences.items()):
        prefix = items[:-2]
        for t in range(1, len(prefix)):
            train.append(SplitExample(user, tuple(prefix[:t][-max_history:]), prefix[t], t, t))
        valid.append(SplitExample(user, tuple(items[:-2][-max_history:]), items[-2], len(items) - 2, 0))
        test.append(SplitExample(user, tuple(items[:-1][-max_history:]), items[-1], len(items) - 1, 0))
    rng = np.random.default_rng(seed)
    candidates = {}
    for split, examples in (("valid", valid), ("test", test)):
        sets = {}
        for ex in examples:
            seen = set(sequences[ex.user_id])
            pool = [i for i in catalogue if i not in seen]
            negs = list(rng.choice(pool, size=negatives, replace=False))
            pos = int(rng.integers(0, negatives + 1))
            ids = negs[:pos] + [ex.target] + negs[pos:]
            sets[ex.user_id] = CandidateSet(ex.user_id, tuple(str(i) for i in ids), pos)
        candidates[(split, negatives)] = sets
    return Splits(dict(sequences), train, valid, test, list(catalogue), candidates)


def markov_splits(num_users=60, num_items=40, length=25, seed=0) -> Splits:
    """Users walk a ring of items mostly one step at a time: the next item is predictable."""
    rng = np.random.default_rng(seed)
    catalogue = [f"i{k:03d}" for k in range(num_items)]
    sequences = {}
    for u in range(num_users):
        # each user walks a third of the ring: plenty of never-interacted items remain for negatives
        start = int(rng.integers(num_items))
        walk = [(start + k) % num_items for k in range(length)]
        sequences[f"u{u:03d}"] = tuple(catalogue[i] for i in walk)
    return split_sequences(sequences, catalogue, max_history=20, negatives=9, seed=seed)
