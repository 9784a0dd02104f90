"""Turns a prepared dataset into instruction records for every instruction type and split.

What goes where:
- train: one record per (training example, type) with one template drawn per record
  (`templates_per_example=k` draws k distinct templates, 'all' uses every template of the type).
  T3 candidates, the T1 rival and the T0 "no" item are fresh negatives per record, drawn from items
  the user never touched in their training part (never the shared evaluation sets), uniformly or,
  with `negative_popularity`, weighted by the items' training popularity, and with
  `related_negatives` partly from the items that co-occur most with the history in training.
  T0 alternates "yes" (the true next item) and "no" (a negative) per user, so the labels are
  balanced.
- validation/test (types with `evaluated`): one record per (evaluation example, template), for
  every template of the type, with the shared candidate sets of `PreparedData.candidates`
  (search types: `search_candidates`), so every method ranks the same items. `_neg99` types hold
  the 99-negative sets: one record per (example, template) listing all 100 candidates; the
  paper's protocol (ten groups of ten, then the group winners) is built from it by
  `candidate_groups` and `with_candidates`.
- train order: examples are visited in a seeded random order, so that shards are not sorted by
  user and a shuffle buffer mixes users well; validation/test keep the users' id order.

No information from validation/test targets reaches training records: training examples come
from training positions only, their histories precede the target, derived preferences read only
the history shown, training negatives exclude only items of the user's training part, the
co-occurrence behind `related_negatives` is counted on the training parts only, and the
items `train_next_items` adds to a training target stop where that training part ends.
Training records that pair a specific query (I2) with its item never target an item of the
product-search validation/test splits, so those queries stay unseen, as the paper's split intends.

Determinism: each (type, split) has its own `random.Random` seeded from (seed, type, split) and
walks users in id order, so a type's records do not depend on which other types are generated.
Speed: item texts, intentions and review sentences are computed once per item or interaction;
per record there are only dictionary lookups, joins and one `str.format_map`.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime
import itertools
import random
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from instructrec_jax.baselines.itemknn import cooccurrence_similarity
from instructrec_jax.data.types import CandidateSet, Item, SplitExample, UserSequence
from instructrec_jax.instructions import derive
from instructrec_jax.instructions.format import (INSTRUCTION_TYPES, NEG99_SUFFIX, SCENARIOS,
                                                 ExampleSource, Intention,
                                                 InstructionRecord, InstructionType, Output,
                                                 TaskForm, base_type, neg99_name)
from instructrec_jax.instructions.render import (ITEM_SEPARATOR, ItemRenderer, join_items,
                                                 render_catalogue)
from instructrec_jax.instructions.templates import (TEMPLATES_BY_ID, Template, TemplateSlots,
                                                    slots_for_type, templates_for)

# PreparedData split names → storage split names (SeqIO convention).
SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
GROUP_SIZE = 10  # 99-negative sets are ranked in groups of this many (the paper's protocol)
RECENT_ITEMS = 3  # how many history items the query+item → history task must recall
RELATED_WINDOW = 10  # `related_negatives`: co-occurrence within 10 positions (as item-kNN's)
RELATED_HISTORY = 5  # ... summed over the similarities of the history's last 5 items
RELATED_POOL = 50  # ... drawn uniformly among the 50 most similar items the user never touched

ContextFn = Callable[[SplitExample], str]


@dataclasses.dataclass(frozen=True)
class GeneratorOptions:
    """How records are generated (see the module docstring).

    types: instruction type names (a `_neg99` name selects that evaluation type); None means all
    registered types plus the `_neg99` types chosen by `neg99`.
    neg99: with types=None, which `_neg99` types to add where the data has 99-negative sets:
    'scenarios' (the five paper scenarios), 'all' (every evaluated reranking type) or 'none'.
    Each lists 100 candidates per record, so they are large on big datasets.
    train_passes: how many times the training examples are visited (see the module docstring);
    pass 0 is exactly the records of `train_passes=1`.
    negative_popularity: the exponent β of the training negatives' distribution: an item is
    drawn with probability ∝ (its interactions in the training parts + 1)^β among the items the
    user never touched. 0 (the default) is uniform, as the evaluation sets are; 1 draws negatives
    about as popular as the true items are ("hard" negatives). Evaluation records never change.
    popular_negatives: with negative_popularity β > 0, how many of each training record's
    negatives are drawn that way; the others are drawn uniformly, and the two kinds are shuffled
    together. None (the default): all of them.
    related_negatives: k of each training record's negatives (all of them when k ≥ n) drawn
    uniformly among the RELATED_POOL items most similar to the history's last RELATED_HISTORY
    items (summed cosine co-occurrence within RELATED_WINDOW positions over the users' training
    parts: the item-kNN baseline's neighbours) that the user never touched and that are not the
    target; the others as without it (uniform or by `negative_popularity`), shuffled together.
    Negatives a sequence model cannot reject for being unrelated to the history. Fewer related
    items than k (a short or unusual history) leaves the rest to the other draw. None: off.
    train_next_items: k > 1 makes the target of a sequential matching or reranking (T2, T3)
    training record whose template target is the bare item the true item followed by the user's
    next k − 1 training items ("<item_9> <item_12> <item_4>" with id tokens; "; "-separated with
    titles), fewer near the end of the training part, never a validation or test item: more
    next-item targets per encoded instruction. The first target token is the one ranking scores
    (evaluate such a model with `score_eos=False`). Evaluation records never change.
    context: None, 'time' (a sentence from the request's timestamp, e.g. "It is a Saturday
    evening in March 1998."), or a function of the example; the sentence is put before the
    instruction.
    max_eval_examples: cap on validation/test examples per split and source, a seeded sample
    shared by every type, so that all scenarios are evaluated on the same users.
    """

    seed: int = 0
    types: tuple[str, ...] | None = None
    renderer: ItemRenderer = ItemRenderer()
    templates_per_example: int | str = 1
    max_train_examples_per_type: int | None = None
    negatives: int = 9
    context: str | ContextFn | None = None
    neg99: str = "scenarios"
    max_eval_examples: int | None = None
    train_passes: int = 1
    negative_popularity: float = 0.0
    popular_negatives: int | None = None
    related_negatives: int | None = None
    train_next_items: int = 1

    def __post_init__(self):
        k = self.templates_per_example
        if not (k == "all" or (isinstance(k, int) and k >= 1)):
            raise ValueError(f"templates_per_example must be a positive int or 'all', got {k!r}")
        for name in ("max_train_examples_per_type", "max_eval_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if not isinstance(self.train_passes, int) or self.train_passes < 1:
            raise ValueError(f"train_passes must be a positive int, got {self.train_passes!r}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {self.negatives}")
        if not isinstance(self.train_next_items, int) or self.train_next_items < 1:
            raise ValueError(f"train_next_items must be a positive int, got {self.train_next_items!r}")
        if not (isinstance(self.negative_popularity, (int, float))
                and 0.0 <= self.negative_popularity <= 4.0):
            raise ValueError("negative_popularity must be a number in [0, 4], got "
                             f"{self.negative_popularity!r}")
        k = self.popular_negatives
        if k is not None:
            if not (isinstance(k, int) and 0 <= k <= self.negatives):
                raise ValueError(f"popular_negatives must be an int in [0, negatives="
                                 f"{self.negatives}] or None, got {k!r}")
            if self.negative_popularity == 0.0:
                raise ValueError("popular_negatives needs negative_popularity > 0 (the exponent "
                                 "those negatives are drawn with)")
        r = self.related_negatives
        if r is not None:
            if not (isinstance(r, int) and 1 <= r <= self.negatives):
                raise ValueError(f"related_negatives must be an int in [1, negatives="
                                 f"{self.negatives}] or None, got {r!r}")
            if k is not None:
                raise ValueError("related_negatives and popular_negatives both split the "
                                 "negatives; use one of them")
        if self.neg99 not in ("scenarios", "all", "none"):
            raise ValueError(f"neg99 must be 'scenarios', 'all' or 'none', got {self.neg99!r}")
        if self.context not in (None, "time") and not callable(self.context):
            raise ValueError(f"context must be None, 'time' or a function, got {self.context!r}")
        for name in self.types or ():
            base_type(name)  # raises KeyError listing the known names


def time_context(example: SplitExample) -> str:
    """A context sentence from the request time (UTC), e.g. "It is a Monday night in May 1998."."""
    moment = datetime.datetime.fromtimestamp(example.timestamp, datetime.timezone.utc)
    part = ("night", "morning", "afternoon", "evening")[moment.hour // 6]
    return f"It is a {moment:%A} {part} in {moment:%B %Y}."


class _Catalogue:
    """Per-dataset precomputation shared by all types: item texts, derived intentions, pools."""

    def __init__(self, data, renderer: ItemRenderer):
        self.items: Mapping[str, Item] = data.items
        self.text = render_catalogue(data.items, renderer)
        self.facts = derive.catalogue_facts(data.items)
        self.sequences: dict[str, UserSequence] = {s.user_id: s for s in data.sequences}
        # A user's training part: everything but the last two (the valid and test targets).
        self.train_items = {s.user_id: frozenset(s.item_ids[: max(len(s) - 2, 0)])
                            for s in data.sequences}
        self.pool = tuple(data.items)
        self.train_counts = collections.Counter(
            item for s in data.sequences for item in s.item_ids[: max(len(s) - 2, 0)])
        self._cumulative: dict[tuple[int, float], list[float]] = {}
        self._similarity = None  # item-kNN co-occurrence, built on first use (`related`)
        self._pool_index = {item: i for i, item in enumerate(self.pool)}
        self._train_index: dict[str, np.ndarray] = {}  # user → catalogue indices of the training part
        search = data.search or {}
        self.search_pool = tuple(sorted({e.target for e in search.get("train", [])})) or self.pool
        self.search_eval_items = frozenset(e.target for split in ("valid", "test")
                                           for e in search.get(split, []))
        self._query: dict[str, str] = {}
        self._vague: dict[str, str] = {}
        self._sentences: dict[tuple[str, int, bool], str | None] = {}

    def following(self, example: SplitExample, n: int) -> tuple[str, ...]:
        """Up to n items the user interacted with right after a training example's target, all
        inside their training part (the last two items, validation and test targets, excluded)."""
        sequence = self.sequences[example.user_id]
        end = max(len(sequence) - 2, 0)
        return tuple(sequence.item_ids[example.position + 1 : min(example.position + 1 + n, end)])

    def related(self, history: Sequence[str], user_id: str, target: str,
                within: np.ndarray | None = None) -> list[str]:
        """Up to RELATED_POOL items most similar to the history's last RELATED_HISTORY items
        (positive summed cosine co-occurrence over the training parts), most similar first (ties
        by catalogue order), none in the user's training part, none equal to `target`, and where
        `within` (a boolean mask over the catalogue, `pool_mask`) is given, only its items."""
        if self._similarity is None:
            index = self._pool_index
            parts = [[index[i] for i in s.item_ids[: max(len(s) - 2, 0)] if i in index]
                     for _, s in sorted(self.sequences.items())]
            self._similarity = cooccurrence_similarity(parts, len(self.pool), window=RELATED_WINDOW)
        index = self._pool_index
        rows = [index[i] for i in history[-RELATED_HISTORY:] if i in index]
        if not rows:
            return []
        # A hot path (once per training record), so numpy throughout: the rows' sum from the CSR
        # arrays (scipy's row slicing costs ~10x this) and the exclusions as index arrays.
        sim = self._similarity
        spans = [slice(sim.indptr[r], sim.indptr[r + 1]) for r in rows]
        scores = np.bincount(np.concatenate([sim.indices[p] for p in spans]),
                             weights=np.concatenate([sim.data[p] for p in spans]),
                             minlength=len(self.pool))
        excluded = self._train_index.get(user_id)
        if excluded is None:
            excluded = np.fromiter((index[i] for i in self.train_items.get(user_id, ())
                                    if i in index), dtype=np.int64)
            self._train_index[user_id] = excluded
        scores[excluded] = 0.0
        if target in index:
            scores[index[target]] = 0.0
        if within is not None:
            scores[~within] = 0.0
        positive = np.flatnonzero(scores > 0.0)  # ascending: ties stay in catalogue order
        if len(positive) > RELATED_POOL:  # keep the top RELATED_POOL and every tie at the cut
            edge = np.partition(scores[positive], len(positive) - RELATED_POOL)[-RELATED_POOL]
            positive = positive[scores[positive] >= edge]
        best = positive[np.argsort(-scores[positive], kind="stable")[:RELATED_POOL]]
        return [self.pool[j] for j in best]

    def pool_mask(self, items: Sequence[str]) -> np.ndarray:
        """A boolean mask over the catalogue, True at `items` (for `related`'s `within`)."""
        mask = np.zeros(len(self.pool), dtype=bool)
        mask[[self._pool_index[i] for i in items if i in self._pool_index]] = True
        return mask

    def cumulative_weights(self, pool: tuple[str, ...], exponent: float) -> list[float]:
        """Running sums of (training count + 1)^exponent over `pool`, for weighted draws."""
        key = (id(pool), exponent)
        if key not in self._cumulative:
            self._cumulative[key] = list(itertools.accumulate(
                (self.train_counts.get(item, 0) + 1.0) ** exponent for item in pool))
        return self._cumulative[key]

    def query(self, item_id: str) -> str:
        value = self._query.get(item_id)
        if value is None:
            value = derive.specific_intention(self.items[item_id], self.facts)
            self._query[item_id] = value
        return value

    def review_sentence(self, user_id: str, position: int, review: str | None,
                        avoid_title_of: str | None = None) -> str | None:
        """Salient sentence of the user's review at a sequence position (cached); with
        `avoid_title_of`, sentences using that item's title words are not eligible."""
        key = (user_id, position, avoid_title_of is not None)
        if key not in self._sentences:
            avoid = derive.title_words(self.items[avoid_title_of]) \
                if (avoid_title_of is not None and review) else frozenset()
            self._sentences[key] = derive.salient_sentence(review, avoid)
        return self._sentences[key]

    def vague(self, example: SplitExample) -> str:
        """I1 of an example: from the user's review of the target if it has a usable sentence."""
        if example.review:
            sentence = self.review_sentence(example.user_id, example.position, example.review,
                                            avoid_title_of=example.target)
            if sentence:
                return derive.vague_intention(self.items[example.target], self.facts, sentence)
        value = self._vague.get(example.target)
        if value is None:
            value = self._vague[example.target] = derive.vague_intention(
                self.items[example.target], self.facts)
        return value


class _Example:
    """Lazily derived texts of one example, shared by every type built from it."""

    __slots__ = ("ex", "cat", "_history", "_preference", "_history_items")

    def __init__(self, example: SplitExample, catalogue: _Catalogue):
        self.ex = example
        self.cat = catalogue
        self._history = self._preference = self._history_items = None

    @property
    def history_items(self) -> list[Item]:
        if self._history_items is None:
            self._history_items = [self.cat.items[i] for i in self.ex.history]
        return self._history_items

    @property
    def history(self) -> str:
        if self._history is None:
            self._history = join_items(map(self.cat.text.__getitem__, self.ex.history))
        return self._history

    @property
    def preference(self) -> str:
        if self._preference is None:
            ex, cat = self.ex, self.cat
            sequence = cat.sequences.get(ex.user_id)
            reviews: list[tuple[float | None, str | None]] = []
            if sequence is not None and sequence.reviews and any(sequence.reviews):
                start = ex.position - len(ex.history)
                for position in range(start, ex.position):
                    rating = sequence.ratings[position] if sequence.ratings else None
                    reviews.append((rating, cat.review_sentence(ex.user_id, position,
                                                                sequence.reviews[position])))
            self._preference = derive.explicit_preference(self.history_items, cat.facts, reviews)
        return self._preference


class _TypeBuilder:
    """Builds the records of one instruction type for one split."""

    def __init__(self, itype: InstructionType, name: str, split: str, catalogue: _Catalogue,
                 options: GeneratorOptions, evaluation: bool):
        self.itype = itype
        self.name = name
        self.split = split
        self.cat = catalogue
        self.options = options
        self.evaluation = evaluation
        self.templates = templates_for(itype.name)
        self.slots = slots_for_type(itype.name)
        self.rng = random.Random(f"{options.seed}|{name}|{split}")
        self.context: ContextFn | None = (time_context if options.context == "time"
                                          else options.context)
        search = itype.source is ExampleSource.SEARCH
        self.pool = catalogue.search_pool if search else catalogue.pool
        self._within = catalogue.pool_mask(self.pool) if search else None  # related negatives
        self._yes_next: dict[str, bool] = {}
        self.id_suffix = ""  # "/passk" while pass k > 0 of the training examples is generated

    # -- choices drawn per record ------------------------------------------------------------
    def _choose_templates(self) -> Sequence[Template]:
        k = self.options.templates_per_example
        if self.evaluation or k == "all" or k >= len(self.templates):
            return self.templates
        if k == 1:
            return (self.templates[int(self.rng.random() * len(self.templates))],)
        return self.rng.sample(self.templates, k)

    def _negatives(self, user_id: str, target: str, n: int,
                   history: Sequence[str] = ()) -> list[str]:
        """n distinct items outside the user's training part and ≠ target (fewer if the pool is
        too small to hold n; none at all is an error). Uniform over the pool, or for training
        records with `negative_popularity` β > 0, ∝ (training count + 1)^β; with
        `popular_negatives` k < n, k of them that way and n − k uniformly, shuffled together;
        with `related_negatives` k, up to k of them among the items most similar to `history`
        and the rest by the rule above, shuffled together."""
        beta = 0.0 if self.evaluation else float(self.options.negative_popularity)
        r = None if self.evaluation else self.options.related_negatives
        if r is not None:
            related = self.cat.related(history, user_id, target, self._within)
            related = self.rng.sample(related, min(r, n, len(related)))
            mixed = related + self._draw(user_id, target, n - len(related), beta,
                                         avoid=frozenset(related))
            self.rng.shuffle(mixed)
            return mixed
        k = self.options.popular_negatives
        if beta == 0.0 or k is None or k >= n:
            return self._draw(user_id, target, n, beta)
        popular = self._draw(user_id, target, k, beta)
        mixed = popular + self._draw(user_id, target, n - k, 0.0, avoid=frozenset(popular))
        self.rng.shuffle(mixed)
        return mixed

    def _draw(self, user_id: str, target: str, n: int, beta: float,
              avoid: frozenset[str] = frozenset()) -> list[str]:
        """n distinct negatives drawn with exponent β, none of them in `avoid`."""
        exclude = self.cat.train_items.get(user_id, frozenset())
        if avoid:
            exclude = exclude | avoid
        pool, rng = self.pool, self.rng
        picked: list[str] = []
        if n == 0:
            return picked
        if len(pool) - len(exclude) - 1 < 4 * n:  # small pool: enumerate instead of rejecting
            allowed = [i for i in pool if i not in exclude and i != target]
            if not allowed and avoid:  # the other draw of a mixed list took the last ones
                return picked
            if not allowed:
                raise ValueError(f"user {user_id!r} interacted with every item that could be a "
                                 f"negative for {self.name}; the catalogue is too small")
            if beta == 0.0:
                return rng.sample(allowed, min(n, len(allowed)))
            # Weighted sampling without replacement (Efraimidis–Spirakis keys u^(1/w)).
            counts = self.cat.train_counts
            keyed = sorted(allowed, reverse=True,
                           key=lambda i: rng.random() ** ((counts.get(i, 0) + 1.0) ** -beta))
            return keyed[:n]
        size, draw = len(pool), rng.random  # random() is several times cheaper than randrange()
        if beta == 0.0:
            while len(picked) < n:
                item = pool[int(draw() * size)]
                if item != target and item not in exclude and item not in picked:
                    picked.append(item)
            return picked
        cumulative = self.cat.cumulative_weights(pool, beta)
        total, find = cumulative[-1], bisect.bisect_right
        while len(picked) < n:
            item = pool[min(find(cumulative, draw() * total), size - 1)]
            if item != target and item not in exclude and item not in picked:
                picked.append(item)
        return picked

    # -- record assembly ---------------------------------------------------------------------
    def records(self, example: _Example,
                candidate_set: CandidateSet | None) -> Iterator[InstructionRecord]:
        ex, itype, text = example.ex, self.itype, self.cat.text
        output = itype.output
        values: dict[str, str] = {}
        if "history" in self.slots:
            values["history"] = example.history
        if "preference" in self.slots:
            values["preference"] = example.preference
        if itype.intention is Intention.I1:
            values["intention"] = self.cat.vague(ex)
        elif itype.intention is Intention.I2:
            values["intention"] = self.cat.query(ex.target)
        target_text = text[ex.target]
        values["target"] = target_text
        target_item = ex.target
        candidates: tuple[str, ...] = ()
        label = -1

        if output is Output.YES_NO:
            yes = self._next_answer(ex.user_id)
            asked = ex.target if yes else self._negatives(ex.user_id, ex.target, 1, ex.history)[0]
            values["item"] = text[asked]
            values["answer"] = "yes" if yes else "no"
            candidates, label = (asked,), (0 if yes else -1)
        elif itype.task_form is TaskForm.T1 and not itype.reversed:
            rival = self._negatives(ex.user_id, ex.target, 1, ex.history)[0]
            label = self.rng.randrange(2)
            candidates = (ex.target, rival) if label == 0 else (rival, ex.target)
            values["item_a"], values["item_b"] = text[candidates[0]], text[candidates[1]]
        elif itype.task_form is TaskForm.T3:
            if candidate_set is not None:
                candidates, label = candidate_set.item_ids, candidate_set.label_index
            else:
                negatives = self._negatives(ex.user_id, ex.target, self.options.negatives,
                                            ex.history)
                label = int(self.rng.random() * (len(negatives) + 1))
                negatives.insert(label, ex.target)
                candidates = tuple(negatives)
        candidate_texts = tuple(map(text.__getitem__, candidates))  # C-level lookups: hot path
        if itype.task_form is TaskForm.T3:
            values["candidates"] = join_items(candidate_texts)
        if output is Output.QUERY:
            values["item"], values["query"] = target_text, self.cat.query(ex.target)
            target_item = ""
        elif output is Output.QUERY_AND_ITEM:
            values["query"] = self.cat.query(ex.target)
        elif output is Output.COMMON:
            values["common"] = derive.common_traits(example.history_items, self.cat.facts)
            target_item = ""
        elif output is Output.PREFERENCE:
            target_item = ""
        elif output is Output.HISTORY:
            values["item"] = target_text
            values["recent"] = join_items(text[i] for i in ex.history[-RECENT_ITEMS:])
            target_item = ""
        elif output is Output.EXPLANATION:
            values["item"] = target_text
            values["explanation"] = derive.preference_explanation(
                self.cat.items[ex.target], target_text, example.history_items, self.cat.facts)
            target_item = ""

        more = ""  # the next training items after the target (`train_next_items`)
        if (self.options.train_next_items > 1 and not self.evaluation and target_item
                and itype.source is ExampleSource.SEQUENTIAL
                and itype.task_form in (TaskForm.T2, TaskForm.T3)):
            following = self.cat.following(ex, self.options.train_next_items - 1)
            if following:
                separator = " " if self.options.renderer.style == "id_token" else ITEM_SEPARATOR
                more = separator + separator.join(map(text.__getitem__, following))

        slots = TemplateSlots(**values)
        prefix = f"{self.context(ex)} " if self.context is not None else ""
        base_id = f"{self.split}/{self.name}/{ex.user_id}/{ex.position}"
        suffix = self.id_suffix
        for template in self._choose_templates():
            inputs, targets = template.render(slots)
            if more and template.target == "{target}":
                targets += more
            if candidates and output is not Output.YES_NO:
                if template.target == "{target}":
                    candidate_targets = candidate_texts
                else:
                    candidate_targets = tuple(template.render_target(slots, t)
                                              for t in candidate_texts)
            elif candidates:
                candidate_targets = ("yes",)
            else:
                candidate_targets = ()
            yield InstructionRecord(
                inputs=prefix + inputs, targets=targets, instruction_type=self.name,
                template_id=template.template_id, user_id=ex.user_id, target_item=target_item,
                candidates=candidates, candidate_targets=candidate_targets, label_index=label,
                example_id=f"{base_id}/{template.template_id}{suffix}")

    def _next_answer(self, user_id: str) -> bool:
        """T0 labels alternate per user from a random start: balanced yes/no."""
        previous = self._yes_next.get(user_id)
        yes = (self.rng.random() < 0.5) if previous is None else not previous
        self._yes_next[user_id] = yes
        return yes


def relisted_inputs(record: InstructionRecord, candidate_ids: Sequence[str],
                    item_texts: Mapping[str, str]) -> str:
    """The record's inputs with its candidate list (the last occurrence of the listed items' text:
    every template lists candidates after the history) listing `candidate_ids` instead, e.g. the
    same candidates in another order."""
    if not record.candidates:
        raise ValueError(f"{record.example_id}: not a candidate-list record")
    old = join_items(item_texts[c] for c in record.candidates)
    head, found, tail = record.inputs.rpartition(old)
    if not found:
        raise ValueError(f"{record.example_id}: candidate list text not found in the inputs")
    return head + join_items(item_texts[c] for c in candidate_ids) + tail


def with_candidates(record: InstructionRecord, candidate_ids: Sequence[str],
                    item_texts: Mapping[str, str], *, suffix: str = "final") -> InstructionRecord:
    """The same T3 instruction listing other candidates (e.g. the winners of the ten 99-negative
    groups, for the paper's final round); the example id gains "/<suffix>". The candidate list is
    the last occurrence of the old list's text in the inputs (every T3 template lists candidates
    after the history), and the label follows the record's target item."""
    template = TEMPLATES_BY_ID[record.template_id]
    inputs = relisted_inputs(record, candidate_ids, item_texts)
    texts = [item_texts[c] for c in candidate_ids]
    true_item = record.target_item
    label = list(candidate_ids).index(true_item) if true_item in candidate_ids else -1
    slots = TemplateSlots(target=item_texts.get(true_item, ""))
    return dataclasses.replace(
        record, inputs=inputs, candidates=tuple(candidate_ids),
        candidate_targets=tuple(template.render_target(slots, t) for t in texts),
        label_index=label, example_id=f"{record.example_id}/{suffix}")


def selected_types(data, types: Iterable[str] | None, neg99: str = "scenarios") -> tuple[str, ...]:
    """The type names to generate: the given names, validated; or, when `types` is None, all
    registered types plus the `_neg99` types `neg99` selects where the data has 99-negative sets."""
    if types is not None:
        names = tuple(types)
        for name in names:
            base_type(name)
        return names
    names = list(INSTRUCTION_TYPES)
    scenario_types = set(SCENARIOS.values())
    for itype in INSTRUCTION_TYPES.values():
        wanted = neg99 == "all" or (neg99 == "scenarios" and itype.name in scenario_types)
        if wanted and itype.evaluated and itype.task_form is TaskForm.T3 \
                and _neg99_sets(data, itype, "test"):
            names.append(neg99_name(itype.name))
    return tuple(names)


def _neg99_sets(data, itype: InstructionType, split: str) -> Mapping[str, CandidateSet] | None:
    source = data.search_candidates if itype.source is ExampleSource.SEARCH else data.candidates
    return (source or {}).get((split, 99))


def _examples(data, source: ExampleSource, split: str) -> list[SplitExample]:
    if source is ExampleSource.SEARCH:
        return list((data.search or {}).get(split, []))
    return list({"train": data.train, "valid": data.valid, "test": data.test}[split])


def _candidate_sets(data, itype: InstructionType, split: str, n: int) -> Mapping[str, CandidateSet]:
    source = data.search_candidates if itype.source is ExampleSource.SEARCH else data.candidates
    key = (split, n)
    if key not in (source or {}):
        raise KeyError(f"the prepared data has no {split} candidate sets with {n} negatives "
                       f"(it has {sorted(source or {})}); prepare it with negatives including {n}")
    return source[key]


def _visit_order(examples: list[SplitExample],
                 shuffle_seed: str | None) -> list[tuple[int, SplitExample]]:
    """(index, example) pairs in the order records are made: seeded random for training,
    otherwise grouped by user in first-appearance order (each user's in their original order)."""
    if shuffle_seed is not None:
        order = list(range(len(examples)))
        random.Random(shuffle_seed).shuffle(order)
        return [(i, examples[i]) for i in order]
    groups: dict[str, list[tuple[int, SplitExample]]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(example.user_id, []).append((index, example))
    return [pair for group in groups.values() for pair in group]


class _Job:
    """One (type, split) being generated: its builder, candidate sets and example selection."""

    def __init__(self, data, name: str, split: str, catalogue: _Catalogue,
                 options: GeneratorOptions, n_examples: int):
        itype = base_type(name)
        self.name, self.itype, self.split = name, itype, SPLIT_NAMES[split]
        self.neg99 = name.endswith(NEG99_SUFFIX)
        self.builder = _TypeBuilder(itype, name, self.split, catalogue, options,
                                    evaluation=split != "train")
        self.sets: Mapping[str, CandidateSet] | None = None
        if split != "train" and itype.task_form is TaskForm.T3:
            self.sets = _candidate_sets(data, itype, split, 99 if self.neg99 else
                                        _smallest_negatives(data, itype, split))
        self.by_target = itype.source is ExampleSource.SEARCH
        self.selected: frozenset[int] | None = None
        limit = options.max_train_examples_per_type
        if split == "train" and limit is not None and n_examples > limit:
            rng = random.Random(f"{options.seed}|subsample|{name}")
            self.selected = frozenset(rng.sample(range(n_examples), limit))
        # A training example without history gives nothing to describe for these types.
        self.needs_history = split == "train" and (
            itype.uses_history or itype.output in (Output.PREFERENCE, Output.COMMON))
        # Product search is evaluated on items whose queries are never seen in training; a
        # sequential type pairing a query (I2) with its item must not teach those pairs either.
        self.held_out: frozenset[str] = frozenset()
        if split == "train" and itype.intention is Intention.I2 \
                and itype.source is ExampleSource.SEQUENTIAL:
            self.held_out = catalogue.search_eval_items

    def records(self, index: int,
                example: _Example) -> Iterator[tuple[str, str, InstructionRecord]]:
        if self.selected is not None and index not in self.selected:
            return
        ex = example.ex
        if (self.needs_history and not ex.history) or ex.target in self.held_out:
            return
        name, split = self.name, self.split
        if self.sets is None:
            for record in self.builder.records(example, None):
                yield name, split, record
            return
        key = ex.target if self.by_target else ex.user_id
        candidate_set = self.sets.get(key)
        if candidate_set is None:
            raise KeyError(f"no {split} candidate set for {key!r} ({name}); the prepared data "
                           "is inconsistent")
        for record in self.builder.records(example, candidate_set):
            yield name, split, record


def iter_instructions(data, options: GeneratorOptions = GeneratorOptions()
                      ) -> Iterator[tuple[str, str, InstructionRecord]]:
    """Yields (type name, split, record) for every selected type and split (module docstring).

    Streams: nothing but per-dataset caches is held, so a Games-sized log can be written to disk
    without keeping millions of records in memory. Splits are 'train', 'validation', 'test'.
    Examples are walked once per split and source, every type building its records from the same
    derived texts; each type's records come out in the same order as if it were generated alone.
    """
    catalogue = _Catalogue(data, options.renderer)
    names = selected_types(data, options.types, options.neg99)
    for name in names:
        itype = base_type(name)
        if name.endswith(NEG99_SUFFIX) and not (itype.evaluated and itype.task_form is TaskForm.T3):
            raise ValueError(f"{name}: only evaluated reranking (T3) types have _neg99 variants")
    for split in ("train", "valid", "test"):
        for source in ExampleSource:
            active = []
            for name in names:
                itype = base_type(name)
                neg99 = name.endswith(NEG99_SUFFIX)
                wanted = (split != "train") if neg99 else (split == "train" or itype.evaluated)
                if itype.source is source and wanted:
                    active.append(name)
            if not active:
                continue
            examples = _examples(data, source, split)
            limit = options.max_eval_examples
            if split != "train" and limit is not None and len(examples) > limit:
                chosen = random.Random(f"{options.seed}|eval|{source.value}|{split}").sample(
                    range(len(examples)), limit)
                examples = [examples[i] for i in sorted(chosen)]
            jobs = [_Job(data, name, split, catalogue, options, len(examples)) for name in active]
            passes = options.train_passes if split == "train" else 1
            for pass_index in range(passes):
                shuffle = None
                if split == "train":
                    shuffle = f"{options.seed}|order|{source.value}"
                    if pass_index:
                        shuffle += f"|pass{pass_index}"
                for job in jobs:  # the builders' generators run on: fresh draws in every pass
                    job.builder.id_suffix = f"/pass{pass_index}" if pass_index else ""
                for index, example in _visit_order(examples, shuffle):
                    shared = _Example(example, catalogue)
                    for job in jobs:
                        yield from job.records(index, shared)


def _smallest_negatives(data, itype: InstructionType, split: str) -> int:
    """The default evaluation sets: 9 negatives when prepared, else the smallest count there is."""
    source = data.search_candidates if itype.source is ExampleSource.SEARCH else data.candidates
    counts = sorted(n for s, n in (source or {}) if s == split)
    if not counts:
        raise KeyError(f"the prepared data has no {split} candidate sets")
    return 9 if 9 in counts else counts[0]


def candidate_groups(record: InstructionRecord, item_texts: Mapping[str, str],
                     group_size: int = GROUP_SIZE) -> list[InstructionRecord]:
    """The paper's first round for a `_neg99` record: the same instruction once per consecutive
    group of `group_size` candidates (ids suffixed `/gNN`; label -1 where the true item is not in
    the group). Rank each, then call `with_candidates` with the group winners for the final."""
    groups = []
    for k, start in enumerate(range(0, len(record.candidates), group_size)):
        groups.append(with_candidates(record, record.candidates[start:start + group_size],
                                      item_texts, suffix=f"g{k:02d}"))
    return groups


def generate_instructions(data, *, seed: int = 0, types: Iterable[str] | None = None,
                          renderer: ItemRenderer | str = "title",
                          templates_per_example: int | str = 1,
                          max_train_examples_per_type: int | None = None, negatives: int = 9,
                          context: str | ContextFn | None = None, neg99: str = "scenarios",
                          max_eval_examples: int | None = None, train_passes: int = 1,
                          negative_popularity: float = 0.0, popular_negatives: int | None = None,
                          related_negatives: int | None = None, train_next_items: int = 1
                          ) -> dict[str, dict[str, list[InstructionRecord]]]:
    """All records in memory: {type name: {split: [records]}} (see `iter_instructions`)."""
    options = GeneratorOptions(
        seed=seed, types=None if types is None else tuple(types),
        renderer=ItemRenderer(renderer) if isinstance(renderer, str) else renderer,
        templates_per_example=templates_per_example,
        max_train_examples_per_type=max_train_examples_per_type, negatives=negatives,
        context=context, neg99=neg99, max_eval_examples=max_eval_examples,
        train_passes=train_passes, negative_popularity=negative_popularity,
        popular_negatives=popular_negatives, related_negatives=related_negatives,
        train_next_items=train_next_items)
    out: dict[str, dict[str, list[InstructionRecord]]] = {}
    for name, split, record in iter_instructions(data, options):
        out.setdefault(name, {}).setdefault(split, []).append(record)
    return out
