"""Ranking metrics with one relevant item per example: HR@k and NDCG@k, ties handled explicitly.

Every method the project evaluates — the LLM scored by likelihood and every baseline — produces one
score per candidate and goes through `evaluate_rankings`, so all numbers in a report come from the
same code (the lesson RecBole teaches: one protocol, one evaluator).

With a single relevant item, HR@k is 1 when the true item ranks within the top k and NDCG@k is
1 / log2(rank + 1) in that case (the ideal DCG is 1), 0 otherwise.

Ties between the true item and other candidates are resolved by a documented rule (`TIE_RULES`):

- ``"pessimistic"`` (default): the true item ranks below every candidate with an equal score, so a
  model that gives every candidate the same score gets HR@1 = 0, never credit for a lucky order.
- ``"expected"``: the expectation over a uniformly random order among the tied candidates; with
  `g` candidates scoring higher and `e` others tying, the rank is uniform on g+1 .. g+e+1 and each
  metric is averaged over those ranks (a constant scorer over 10 candidates gets HR@1 = 0.1).
- ``"optimistic"``: the true item ranks above every tie (an upper bound, for diagnosis only).

Candidates' own order never breaks a tie, so the position the sampler put the true item at can
never leak into a metric.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

TIE_RULES = ("pessimistic", "expected", "optimistic")
# The cut-offs the paper reports: HR@1, HR@3, HR@5, NDCG@3, NDCG@5.
PAPER_HR_KS = (1, 3, 5)
PAPER_NDCG_KS = (3, 5)


@dataclasses.dataclass(frozen=True)
class RankingMetrics:
    """Averaged metrics over a set of ranked examples, with how they were computed."""

    values: dict[str, float]  # "HR@1" -> 0.64, "NDCG@5" -> ..., "MRR" -> ...
    num_examples: int
    tie_rule: str
    num_candidates: tuple[int, ...]  # the distinct candidate-set sizes seen, sorted

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def as_dict(self) -> dict:
        return {
            **self.values,
            "num_examples": self.num_examples,
            "tie_rule": self.tie_rule,
            "num_candidates": list(self.num_candidates),
        }


def metric_names(hr_ks: Sequence[int] = PAPER_HR_KS, ndcg_ks: Sequence[int] = PAPER_NDCG_KS) -> list[str]:
    """The keys `evaluate_rankings` returns for these cut-offs, in report order (HR first)."""
    return [f"HR@{k}" for k in hr_ks] + [f"NDCG@{k}" for k in ndcg_ks] + ["MRR"]


def label_rank_bounds(scores: Sequence[float] | np.ndarray, label_index: int) -> tuple[int, int]:
    """The best and worst 1-based rank the true item can take, given the ties in `scores`.

    Higher scores rank first. Returns (1 + #higher, 1 + #higher + #other candidates tying with it).
    NaN scores are refused: a NaN compares false with everything and would silently rank first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"expected a non-empty 1-D score vector, got shape {scores.shape}")
    if not 0 <= label_index < scores.size:
        raise ValueError(f"label_index {label_index} outside the {scores.size} candidates")
    if np.isnan(scores).any():
        raise ValueError(f"NaN among the candidate scores {scores.tolist()}")
    true = scores[label_index]
    higher = int(np.sum(scores > true))
    tied_others = int(np.sum(scores == true)) - 1
    return 1 + higher, 1 + higher + tied_others


def _ranks_under_rule(best: int, worst: int, tie_rule: str) -> range:
    if tie_rule == "pessimistic":
        return range(worst, worst + 1)
    if tie_rule == "optimistic":
        return range(best, best + 1)
    if tie_rule == "expected":
        return range(best, worst + 1)
    raise ValueError(f"unknown tie rule {tie_rule!r}; expected one of {TIE_RULES}")


def example_metrics(
    scores: Sequence[float] | np.ndarray,
    label_index: int,
    *,
    hr_ks: Sequence[int] = PAPER_HR_KS,
    ndcg_ks: Sequence[int] = PAPER_NDCG_KS,
    tie_rule: str = "pessimistic",
) -> dict[str, float]:
    """HR@k, NDCG@k and reciprocal rank of one example (averaged over tied ranks if 'expected')."""
    best, worst = label_rank_bounds(scores, label_index)
    ranks = _ranks_under_rule(best, worst, tie_rule)
    n = len(ranks)
    out: dict[str, float] = {}
    for k in hr_ks:
        out[f"HR@{k}"] = sum(1.0 for r in ranks if r <= k) / n
    for k in ndcg_ks:
        out[f"NDCG@{k}"] = sum(1.0 / math.log2(r + 1) for r in ranks if r <= k) / n
    out["MRR"] = sum(1.0 / r for r in ranks) / n
    return out


def evaluate_rankings(
    scores: Iterable[Sequence[float] | np.ndarray],
    label_indices: Iterable[int],
    *,
    hr_ks: Sequence[int] = PAPER_HR_KS,
    ndcg_ks: Sequence[int] = PAPER_NDCG_KS,
    tie_rule: str = "pessimistic",
) -> RankingMetrics:
    """The single evaluation path: per-example candidate scores + true positions -> mean metrics.

    `scores` holds one score vector per example (higher is better; sizes may differ between
    examples), `label_indices` the true item's position in each. Every method in the project is
    measured through this function.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie rule {tie_rule!r}; expected one of {TIE_RULES}")
    for k in (*hr_ks, *ndcg_ks):
        if k < 1:
            raise ValueError(f"cut-off k must be >= 1, got {k}")
    names = metric_names(hr_ks, ndcg_ks)
    totals = dict.fromkeys(names, 0.0)
    sizes: set[int] = set()
    count = 0
    labels = list(label_indices)
    score_list = list(scores)
    if len(labels) != len(score_list):
        raise ValueError(f"{len(score_list)} score vectors but {len(labels)} label indices")
    for row, label in zip(score_list, labels):
        values = example_metrics(row, int(label), hr_ks=hr_ks, ndcg_ks=ndcg_ks, tie_rule=tie_rule)
        for name in names:
            totals[name] += values[name]
        sizes.add(len(row))
        count += 1
    if count == 0:
        raise ValueError("no examples to evaluate")
    return RankingMetrics(
        values={name: totals[name] / count for name in names},
        num_examples=count,
        tie_rule=tie_rule,
        num_candidates=tuple(sorted(sizes)),
    )
