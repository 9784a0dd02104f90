"""Classic recommenders measured on the same candidate sets as the LLM: what they share.

A baseline is fitted on the TRAINING examples of a `PreparedData` only (`training_sequences`), then
scores candidate lists given a history. Its scores go through `metrics.evaluate_rankings`, the
same path as the LLM's likelihood scores (`evaluate_baseline`).

Training data, precisely: each user's training prefix is rebuilt from `PreparedData.train`
(the first history item of the position-1 example, then every train target in position order),
which is the user's sequence without its last two items. Validation and test targets never enter
a baseline; the test for this lives in tests/test_baselines.py.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from instructrec_jax import metrics
from instructrec_jax.data.types import CandidateSet, SplitExample

if TYPE_CHECKING:
    from instructrec_jax.data.preprocess import PreparedData

BASELINE_NAMES = ("popularity", "itemknn", "sasrec")


@dataclasses.dataclass(frozen=True)
class RankingQuery:
    """One evaluation example as a baseline sees it: a history and the candidates to order."""

    example_id: str
    user_id: str
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    label_index: int


class Baseline(Protocol):
    """A fitted baseline: scores candidate items for histories; higher ranks first."""

    name: str

    def score(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        ...


def training_sequences(train: Sequence[SplitExample]) -> dict[str, tuple[str, ...]]:
    """Each user's training prefix, rebuilt from the train examples alone (see module docstring)."""
    by_user: dict[str, list[SplitExample]] = collections.defaultdict(list)
    for example in train:
        by_user[example.user_id].append(example)
    prefixes: dict[str, tuple[str, ...]] = {}
    for user, examples in sorted(by_user.items()):
        examples.sort(key=lambda e: e.position)
        first = examples[0]
        # The history ends right before the target; its items before `position - len(history)`
        # were cut by max_history, so they are exactly the ones at positions < first.position.
        if first.position != len(first.history):
            raise ValueError(
                f"train examples of user {user!r} start at position {first.position} with a history of "
                f"{len(first.history)} items; expected the first example to hold the whole prefix"
            )
        prefixes[user] = tuple(first.history) + tuple(e.target for e in examples)
    return prefixes


def queries_from_split(
    examples: Sequence[SplitExample],
    candidate_sets: dict[str, CandidateSet],
    *,
    key: str = "user",
    split: str = "test",
) -> list[RankingQuery]:
    """Pairs each evaluation example with its candidate set (keyed by user, or by target item for search).

    Raises if an example has no candidate set or the set's true item is not the example's target,
    because a silent mismatch would evaluate against the wrong answer.
    """
    queries = []
    for example in examples:
        lookup = example.user_id if key == "user" else example.target
        if lookup not in candidate_sets:
            raise KeyError(f"no candidate set for {key} {lookup!r} in split {split!r}")
        cands = candidate_sets[lookup]
        if cands.target != example.target:
            raise ValueError(
                f"candidate set of {key} {lookup!r} has true item {cands.target!r} but the {split} "
                f"example's target is {example.target!r}"
            )
        queries.append(
            RankingQuery(
                example_id=f"{split}/{example.user_id}/{example.position}",
                user_id=example.user_id,
                history=tuple(example.history),
                candidates=tuple(cands.item_ids),
                label_index=cands.label_index,
            )
        )
    return queries


def score_queries(baseline: Baseline, queries: Sequence[RankingQuery]) -> list[np.ndarray]:
    """One score vector per query, over its candidates in their listed order."""
    return baseline.score([q.history for q in queries], [q.candidates for q in queries])


def evaluate_baseline(
    baseline: Baseline,
    queries: Sequence[RankingQuery],
    *,
    tie_rule: str = "pessimistic",
    hr_ks: Sequence[int] = metrics.PAPER_HR_KS,
    ndcg_ks: Sequence[int] = metrics.PAPER_NDCG_KS,
) -> metrics.RankingMetrics:
    """Scores every query's candidates with `baseline` and measures them with `evaluate_rankings`."""
    scores = score_queries(baseline, queries)
    return metrics.evaluate_rankings(
        scores, [q.label_index for q in queries], hr_ks=hr_ks, ndcg_ks=ndcg_ks, tie_rule=tie_rule
    )


def top_items(
    baseline: Baseline,
    history: Sequence[str],
    catalogue: Sequence[str],
    n: int,
    *,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[tuple[str, float]]:
    """The `n` best-scoring catalogue items for a history, skipping `exclude`.

    Ties are broken by the item's position in `catalogue` (stable), so the result is deterministic.
    """
    pool = [item for item in catalogue if item not in exclude]
    (scores,) = baseline.score([history], [pool])
    order = np.argsort(-scores, kind="stable")[:n]
    return [(pool[i], float(scores[i])) for i in order]


def hard_negative_candidates(
    baseline: Baseline,
    examples: Sequence[SplitExample],
    catalogue: Sequence[str],
    interacted: dict[str, set[str]],
    *,
    num_negatives: int = 9,
    seed: int = 0,
) -> list[CandidateSet]:
    """One candidate set per example: its negatives are the baseline's top items the user never
    interacted with.

    Deterministic: the retriever's ranking breaks ties by catalogue order, and the true item's
    position is drawn from a RNG seeded by `seed`, the user and the target. `interacted` maps a
    user to every item of their whole sequence (never offered as a negative, as for random ones).
    """
    out: list[CandidateSet] = []
    for example in examples:
        seen = interacted.get(example.user_id, set()) | {example.target}
        negatives = [item for item, _ in top_items(baseline, example.history, catalogue, num_negatives, exclude=seen)]
        if len(negatives) < num_negatives:
            raise ValueError(
                f"only {len(negatives)} non-interacted items for user {example.user_id!r}; "
                f"{num_negatives} hard negatives were asked for"
            )
        rng = np.random.default_rng([seed, _stable_hash(example.user_id), _stable_hash(example.target)])
        position = int(rng.integers(0, num_negatives + 1))
        items = negatives[:position] + [example.target] + negatives[position:]
        out.append(CandidateSet(user_id=example.user_id, item_ids=tuple(items), label_index=position))
    return out


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; this one is stable across runs.
    value = 0
    for byte in text.encode("utf-8"):
        value = (value * 1_000_003 + byte) % (1 << 61)
    return value


def fit_baseline(name: str, train: Sequence[SplitExample], catalogue: Sequence[str], **options) -> Baseline:
    """Fits the named baseline ('popularity', 'itemknn', 'sasrec') on training examples."""
    if name == "popularity":
        from instructrec_jax.baselines.popularity import fit_popularity

        return fit_popularity(train, catalogue, **options)
    if name == "itemknn":
        from instructrec_jax.baselines.itemknn import fit_itemknn

        return fit_itemknn(train, catalogue, **options)
    if name == "sasrec":
        from instructrec_jax.baselines.sasrec import fit_sasrec

        return fit_sasrec(train, catalogue, **options)
    raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINE_NAMES}")
