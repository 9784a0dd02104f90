"""From a raw log to what every later stage reads: filtered sequences, splits and candidate sets.

The steps, in order (`prepare_data`):
1. Chronological order per user. Interactions with equal timestamps keep the order they had in
   the source file (a stable sort), so the result never depends on hashing or platform.
2. Repeated (user, item) pairs: the earliest is kept, later ones are counted under
   'repeated interaction' (a user's sequence holds each item once, so a leave-one-out target can
   never also sit in that user's training history).
3. Iterative k-core (`min_interactions`, default 5): users and items with fewer than k
   interactions are removed, again and again until every remaining user and item has at least k.
   Removed interactions are counted under 'interaction removed by k-core filter'.
4. Users left with fewer than 3 interactions cannot give train, valid and test examples; with
   k >= 3 there are none, with k < 3 their interactions are dropped and counted under
   'interaction of a user with fewer than 3 interactions'.
5. Leave-one-out splits (sequential and personalised scenarios): for a sequence s of length L,
   test targets s[L-1] with history s[:L-1], valid targets s[L-2] with history s[:L-2], train
   holds every position 1 <= t <= L-3 with history s[:t]; histories keep the last
   `max_history` items, oldest first.
6. Candidate sets for valid and test, one per user and per count n in `negatives`: the true item
   plus n items the user never interacted with (anywhere in the sequence), drawn uniformly from
   the filtered catalogue by rejection with a seeded numpy generator; no duplicates; the true item
   at a seeded position.
7. Product search: the filtered catalogue is split into train/valid/test items by a seeded
   permutation (`search_fractions`, 80/10/10), so evaluation items are never seen in training.
   Each valid/test item gives one example, its most recent interaction (latest timestamp; ties go
   to the later one in the source), with that user's history before it. The train split holds
   the interactions with train items at users' training positions (not a user's last two, which
   are the sequential valid/test targets), with their histories. Search candidate sets are drawn
   as in 6 for the example's user and keyed by the target item.

Statistics (users, items, interactions, sparsity, average sequence length) are kept for the raw
log and the filtered one. Identifiers are ordered "naturally": all-digit ids by number (so
MovieLens users come 1, 2, ..., 10), then other ids by text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from instructrec_jax.data.types import (CandidateSet, DataFormatError, Interaction, Item,
                                        RawDataset, SkipCounts, SplitExample, UserSequence)

SKIP_REPEATED = "repeated interaction"
SKIP_KCORE = "interaction removed by k-core filter"
SKIP_SHORT_USER = "interaction of a user with fewer than 3 interactions"
EVAL_SPLITS = ("valid", "test")
SEARCH_SPLITS = ("train", "valid", "test")
# Independent random streams, so that changing one output never changes another.
_STREAMS = {"valid": 1, "test": 2, "search-valid": 3, "search-test": 4, "search-items": 5}
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How a raw log becomes sequences, splits and candidate sets (see the module docstring)."""

    min_interactions: int = 5
    max_history: int = 20
    negatives: tuple[int, ...] = (9, 99)
    seed: int = 0
    search_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self):
        object.__setattr__(self, "negatives", tuple(int(n) for n in self.negatives))
        object.__setattr__(self, "search_fractions",
                           tuple(float(f) for f in self.search_fractions))
        if self.min_interactions < 0:
            raise ValueError(f"min_interactions must be >= 0, got {self.min_interactions}")
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")
        if any(n < 1 for n in self.negatives) or len(set(self.negatives)) != len(self.negatives):
            raise ValueError(f"negatives must be distinct counts >= 1 (or none), got "
                             f"{self.negatives}")
        fractions = self.search_fractions
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError("search_fractions must be three non-negative fractions summing to 1, "
                             f"got {fractions}")

    def as_dict(self) -> dict[str, Any]:
        return {"min_interactions": self.min_interactions, "max_history": self.max_history,
                "negatives": list(self.negatives), "seed": self.seed,
                "search_fractions": list(self.search_fractions)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PreprocessConfig":
        return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)
                      if field.name in values})


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """The paper's dataset table row: users, items, interactions, sparsity, mean sequence length."""

    users: int
    items: int
    interactions: int
    sparsity: float
    avg_sequence_length: float

    @classmethod
    def of_counts(cls, users: int, items: int, interactions: int) -> "DatasetStats":
        cells = users * items
        return cls(users=users, items=items, interactions=interactions,
                   sparsity=1.0 - interactions / cells if cells else 0.0,
                   avg_sequence_length=interactions / users if users else 0.0)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DatasetStats":
        return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)})

    def as_markdown(self, label: str = "dataset") -> str:
        """A markdown table with this one row (see `stats_table` for several)."""
        return stats_table([(label, self)])


def stats_table(rows: Sequence[tuple[str, DatasetStats]]) -> str:
    """A markdown table as in the paper: one row per (label, stats)."""
    lines = ["| | users | items | interactions | sparsity | avg. sequence length |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, stats in rows:
        lines.append(f"| {label} | {stats.users:,} | {stats.items:,} | {stats.interactions:,} | "
                     f"{100 * stats.sparsity:.3f}% | {stats.avg_sequence_length:.2f} |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class PreparedData:
    """A preprocessed dataset: catalogue, sequences, splits, candidate sets and statistics."""

    name: str
    config: PreprocessConfig
    items: dict[str, Item]
    sequences: list[UserSequence]
    train: list[SplitExample]
    valid: list[SplitExample]
    test: list[SplitExample]
    candidates: dict[tuple[str, int], dict[str, CandidateSet]]
    search: dict[str, list[SplitExample]]
    search_candidates: dict[tuple[str, int], dict[str, CandidateSet]]
    raw_stats: DatasetStats
    stats: DatasetStats
    skipped: SkipCounts

    def stats_markdown(self) -> str:
        """The statistics table (raw and filtered) and the skipped records, as markdown."""
        text = f"## {self.name}\n\n" + stats_table(
            [("raw", self.raw_stats),
             (f"filtered ({self.config.min_interactions}-core)", self.stats)])
        if self.skipped:
            text += "\n| skipped | count |\n|---|---:|\n" + "".join(
                f"| {reason} | {n:,} |\n" for reason, n in self.skipped.as_dict().items())
        return text


def id_sort_key(identifier: str) -> tuple:
    """Orders all-digit ids by number, before other ids ordered by text."""
    if identifier.isdigit():
        return (0, int(identifier), identifier)
    return (1, 0, identifier)


def _codes(values: Iterable[str], size: int) -> tuple[np.ndarray, list[str]]:
    """Dense integer codes for string ids (in order of first appearance) and the code → id list."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, size)
    return codes, list(index)


def _kcore(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions in the k-core (every user and item with >= k of them)."""
    keep = np.ones(len(users), bool)
    if k <= 1:
        return keep
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    while True:
        user_counts = np.bincount(users[keep], minlength=n_users)
        item_counts = np.bincount(items[keep], minlength=n_items)
        ok = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if np.array_equal(ok, keep):
            return keep
        keep = ok


def _user_items(keys: np.ndarray, user: int, n_items: int) -> np.ndarray:
    """The item codes of one user, from the sorted (user * n_items + item) keys."""
    lo, hi = np.searchsorted(keys, [user * n_items, (user + 1) * n_items])
    return keys[lo:hi] - user * n_items


def _draw_negatives(rng: np.random.Generator, users: np.ndarray, n: int, n_items: int,
                    keys: np.ndarray) -> np.ndarray:
    """[len(users), n] distinct item codes, each never interacted with by that row's user.

    Rejection sampling, vectorised: each row draws a few more items than it needs, drops the
    ones the user interacted with (a binary search in the sorted `keys` = user * n_items + item)
    and repeats of earlier draws, and keeps the first n left. The rare row left short (a user
    who interacted with much of the catalogue) is finished on its own with the same generator.
    """
    sizes = np.diff(np.searchsorted(keys, np.stack([users * n_items, (users + 1) * n_items])),
                    axis=0)[0]
    if (n_items - sizes < n).any():
        worst = int(np.argmax(sizes))
        raise ValueError(f"cannot draw {n} negatives: a user interacted with {sizes[worst]} of "
                         f"the {n_items} items, leaving {n_items - sizes[worst]} to draw from; "
                         "use smaller `negatives` (or none)")
    accept = float(np.mean(1.0 - sizes / n_items))
    width = int(math.ceil(n / accept * 1.25)) + 8
    draws = rng.integers(0, n_items, size=(len(users), width))
    # Within a row, a stable sort puts a value's first draw before its repeats; the sorted rows
    # also make the membership search cache-friendly (examples usually come in user order).
    order = np.argsort(draws, axis=1, kind="stable")
    ranked = np.take_along_axis(draws, order, axis=1)
    wanted = users[:, None] * n_items + ranked
    rejected = keys[np.searchsorted(keys, wanted).clip(max=len(keys) - 1)] == wanted
    rejected[:, 1:] |= ranked[:, 1:] == ranked[:, :-1]
    good = np.empty_like(rejected)
    np.put_along_axis(good, order, ~rejected, axis=1)
    take = good & (np.cumsum(good, axis=1) <= n)
    result = np.empty((len(users), n), np.int64)
    complete = take.sum(axis=1) == n
    result[complete] = draws[complete][take[complete]].reshape(-1, n)
    for row in np.flatnonzero(~complete).tolist():
        exclude = set(_user_items(keys, int(users[row]), n_items).tolist())
        picked = draws[row][take[row]].tolist()
        seen = set(picked)
        while len(picked) < n:
            for draw in rng.integers(0, n_items, size=2 * n).tolist():
                if draw not in exclude and draw not in seen and len(picked) < n:
                    seen.add(draw)
                    picked.append(draw)
        result[row] = picked
    return result


def _candidate_sets(rng: np.random.Generator, examples: list[SplitExample], n: int,
                    catalogue: list[str], item_code: dict[str, int], user_code: dict[str, int],
                    keys: np.ndarray) -> list[CandidateSet]:
    """For each example: its target and n negatives, the target at a random slot."""
    if not examples:
        return []
    users = np.array([user_code[e.user_id] for e in examples], np.int64)
    targets = np.array([item_code[e.target] for e in examples], np.int64)
    negatives = _draw_negatives(rng, users, n, len(catalogue), keys)
    slots = rng.integers(0, n + 1, size=len(examples))
    column = np.arange(n + 1)[None, :]
    shifted = np.take_along_axis(negatives, np.minimum(column - (column > slots[:, None]), n - 1)
                                 .clip(0), axis=1)
    codes = np.where(column == slots[:, None], targets[:, None], shifted)
    names = np.array(catalogue, dtype=object)[codes].tolist()
    return [CandidateSet(e.user_id, tuple(row), slot)
            for e, row, slot in zip(examples, names, slots.tolist())]


def _rng(seed: int, stream: str, n: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAMS[stream], n]))


def _examples(sequence: UserSequence, positions: Iterable[int],
              max_history: int) -> list[SplitExample]:
    """The examples targeting `positions` of a sequence, histories capped at `max_history`."""
    user, items, times = sequence.user_id, sequence.item_ids, sequence.timestamps
    reviews = sequence.reviews or (None,) * len(items)
    return [SplitExample(user, items[max(0, t - max_history):t], items[t], t, times[t], reviews[t])
            for t in positions]


def _log_stats(interactions: list[Interaction]) -> DatasetStats:
    users = len({x.user_id for x in interactions})
    items = len({x.item_id for x in interactions})
    return DatasetStats.of_counts(users, items, len(interactions))


def prepare_data(raw: RawDataset, config: PreprocessConfig = PreprocessConfig()) -> PreparedData:
    """Filters, orders and splits a raw log and draws its candidate sets (module docstring)."""
    log = raw.interactions
    if not log:
        raise ValueError(f"{raw.name}: the raw dataset has no interactions")
    missing = next((x.item_id for x in log if x.item_id not in raw.items), None)
    if missing is not None:
        raise ValueError(f"{raw.name}: interaction with item {missing!r}, which is not in the "
                         "catalogue (readers skip these; a hand-built RawDataset must not hold "
                         "any)")
    skipped = SkipCounts(raw.skipped)
    size = len(log)
    users, user_ids = _codes((x.user_id for x in log), size)
    items, item_ids = _codes((x.item_id for x in log), size)
    times = np.fromiter((x.timestamp for x in log), np.int64, size)
    source = np.arange(size)

    # 1-2: user, then time, then source order; the first of each (user, item) pair is kept.
    order = np.lexsort((source, times, users))
    pairs = users[order] * len(item_ids) + items[order]
    _, first = np.unique(pairs, return_index=True)
    order = order[np.sort(first)]
    if size - len(order):
        skipped.add(SKIP_REPEATED, size - len(order))

    # 3-4: k-core, then users too short for leave-one-out.
    kept = _kcore(users[order], items[order], config.min_interactions)
    if not kept.all():
        skipped.add(SKIP_KCORE, int((~kept).sum()))
    order = order[kept]
    user_counts = np.bincount(users[order], minlength=len(user_ids))
    short = user_counts[users[order]] < 3
    if short.any():
        skipped.add(SKIP_SHORT_USER, int(short.sum()))
        order = order[~short]
    if not len(order):
        raise ValueError(f"{raw.name}: no interactions are left after the "
                         f"{config.min_interactions}-core filter ({size} before); lower "
                         "min_interactions or use a larger log")

    # 5: sequences (users in id order), then leave-one-out examples.
    run_starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    run_ends = np.r_[run_starts[1:], len(order)]
    runs = sorted(zip(run_starts.tolist(), run_ends.tolist()),
                  key=lambda run: id_sort_key(user_ids[users[order[run[0]]]]))
    sequences: list[UserSequence] = []
    sources: list[list[int]] = []  # per sequence, the source index of each entry
    order_list = order.tolist()
    for start, end in runs:
        sources.append(order_list[start:end])
        records = [log[i] for i in sources[-1]]
        sequences.append(UserSequence(
            user_id=records[0].user_id,
            item_ids=tuple(x.item_id for x in records),
            timestamps=tuple(x.timestamp for x in records),
            ratings=tuple(x.rating for x in records),
            reviews=tuple(x.review for x in records),
        ))
    history = config.max_history
    train = [e for s in sequences for e in _examples(s, range(1, len(s) - 2), history)]
    valid = [e for s in sequences for e in _examples(s, [len(s) - 2], history)]
    test = [e for s in sequences for e in _examples(s, [len(s) - 1], history)]

    catalogue = sorted({item for s in sequences for item in s.item_ids}, key=id_sort_key)
    item_code = {item: code for code, item in enumerate(catalogue)}
    user_code = {s.user_id: code for code, s in enumerate(sequences)}
    keys = np.unique(np.fromiter((user_code[s.user_id] * len(catalogue) + item_code[item]
                                  for s in sequences for item in s.item_ids), np.int64))

    def draw(stream: str, examples: list[SplitExample], n: int, key) -> dict[str, CandidateSet]:
        sets = _candidate_sets(_rng(config.seed, stream, n), examples, n, catalogue, item_code,
                               user_code, keys)
        return {key(example): c for example, c in zip(examples, sets)}

    candidates = {(split, n): draw(split, examples, n, lambda e: e.user_id)
                  for split, examples in (("valid", valid), ("test", test))
                  for n in config.negatives}

    # 7: product search.
    search = _search_splits(sequences, sources, catalogue, config)
    search_candidates = {(split, n): draw(f"search-{split}", search[split], n, lambda e: e.target)
                         for split in EVAL_SPLITS for n in config.negatives}

    return PreparedData(
        name=raw.name,
        config=config,
        items={item: raw.items[item] for item in catalogue},
        sequences=sequences,
        train=train,
        valid=valid,
        test=test,
        candidates=candidates,
        search=search,
        search_candidates=search_candidates,
        raw_stats=_log_stats(log),
        stats=DatasetStats.of_counts(len(sequences), len(catalogue), len(order)),
        skipped=skipped,
    )


def split_search_items(catalogue: list[str], config: PreprocessConfig) -> dict[str, str]:
    """item id → 'train' | 'valid' | 'test', by a seeded permutation in `search_fractions`."""
    permutation = _rng(config.seed, "search-items").permutation(len(catalogue))
    n_train = round(config.search_fractions[0] * len(catalogue))
    n_valid = min(round(config.search_fractions[1] * len(catalogue)), len(catalogue) - n_train)
    splits = {}
    for rank, index in enumerate(permutation.tolist()):
        splits[catalogue[index]] = ("train" if rank < n_train
                                    else "valid" if rank < n_train + n_valid else "test")
    return splits


def _search_splits(sequences: list[UserSequence], sources: list[list[int]], catalogue: list[str],
                   config: PreprocessConfig) -> dict[str, list[SplitExample]]:
    """Product-search examples; `sources[u][t]` is the source line order of sequence u's entry t."""
    item_split = split_search_items(catalogue, config)
    history = config.max_history
    train: list[SplitExample] = []
    latest: dict[str, tuple[int, int, int, int]] = {}  # item → (time, source, sequence, position)
    for s_index, (sequence, entry_sources) in enumerate(zip(sequences, sources)):
        last_train = len(sequence) - 3
        train_positions = []
        for position, item in enumerate(sequence.item_ids):
            split = item_split[item]
            if split == "train":
                if position <= last_train:
                    train_positions.append(position)
                continue
            key = (sequence.timestamps[position], entry_sources[position], s_index, position)
            if item not in latest or key > latest[item]:
                latest[item] = key
        train.extend(_examples(sequence, train_positions, history))
    evaluation: dict[str, list[SplitExample]] = {"valid": [], "test": []}
    for item in catalogue:
        if item in latest:
            _, _, s_index, position = latest[item]
            evaluation[item_split[item]].extend(_examples(sequences[s_index], [position], history))
    return {"train": train, **evaluation}


# ---- Writing and reading a prepared dataset (UTF-8 JSON lines) ----
#
# prepared.json           {"format_version", "name", "config", "files"}
# items.jsonl             {"item_id", "title", "categories", "brand", "year", "description"}
# sequences.jsonl         {"user_id", "item_ids", "timestamps", "ratings", "reviews"}
# splits/{train,valid,test}.jsonl
#                         {"user_id", "history", "target", "position", "timestamp", "review"}
# candidates/{valid,test}-neg{n}.jsonl         {"user_id", "item_ids", "label_index"}, one per user
# search/{train,valid,test}.jsonl              as splits/
# search/candidates-{valid,test}-neg{n}.jsonl  as candidates/, one per target item
# stats.json              {"raw": stats, "filtered": stats, "skipped": {reason: n}}
# stats.md                PreparedData.stats_markdown()


def _item_record(item: Item) -> dict[str, Any]:
    return {"item_id": item.item_id, "title": item.title, "categories": list(item.categories),
            "brand": item.brand, "year": item.year, "description": item.description}


def _sequence_record(s: UserSequence) -> dict[str, Any]:
    return {"user_id": s.user_id, "item_ids": list(s.item_ids), "timestamps": list(s.timestamps),
            "ratings": list(s.ratings), "reviews": list(s.reviews)}


def _example_record(e: SplitExample) -> dict[str, Any]:
    return {"user_id": e.user_id, "history": list(e.history), "target": e.target,
            "position": e.position, "timestamp": e.timestamp, "review": e.review}


def _candidate_record(c: CandidateSet) -> dict[str, Any]:
    return {"user_id": c.user_id, "item_ids": list(c.item_ids), "label_index": c.label_index}


def _item_from(r: dict[str, Any]) -> Item:
    return Item(r["item_id"], r["title"], tuple(r["categories"]), r["brand"], r["year"],
                r["description"])


def _sequence_from(r: dict[str, Any]) -> UserSequence:
    return UserSequence(r["user_id"], tuple(r["item_ids"]), tuple(r["timestamps"]),
                        tuple(r["ratings"]), tuple(r["reviews"]))


def _example_from(r: dict[str, Any]) -> SplitExample:
    return SplitExample(r["user_id"], tuple(r["history"]), r["target"], r["position"],
                        r["timestamp"], r["review"])


def _candidate_from(r: dict[str, Any]) -> CandidateSet:
    return CandidateSet(r["user_id"], tuple(r["item_ids"]), r["label_index"])


def prepared_files(config: PreprocessConfig) -> list[str]:
    """The relative paths `write_prepared` writes for a config, in writing order."""
    files = ["items.jsonl", "sequences.jsonl"]
    files += [f"splits/{split}.jsonl" for split in ("train", "valid", "test")]
    files += [f"candidates/{split}-neg{n}.jsonl" for split in EVAL_SPLITS for n in config.negatives]
    files += [f"search/{split}.jsonl" for split in SEARCH_SPLITS]
    files += [f"search/candidates-{split}-neg{n}.jsonl"
              for split in EVAL_SPLITS for n in config.negatives]
    return files + ["stats.json", "stats.md", "prepared.json"]


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")


def write_prepared(data: PreparedData, directory: str | os.PathLike) -> None:
    """Writes `data` into an existing directory (the caller's temporary one: see atomic.py)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory (write_prepared writes into the "
                                "temporary directory of an atomic_directory block)")
    _write_jsonl(directory / "items.jsonl", map(_item_record, data.items.values()))
    _write_jsonl(directory / "sequences.jsonl", map(_sequence_record, data.sequences))
    for split, examples in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        _write_jsonl(directory / "splits" / f"{split}.jsonl", map(_example_record, examples))
    for (split, n), sets in data.candidates.items():
        _write_jsonl(directory / "candidates" / f"{split}-neg{n}.jsonl",
                     map(_candidate_record, sets.values()))
    for split, examples in data.search.items():
        _write_jsonl(directory / "search" / f"{split}.jsonl", map(_example_record, examples))
    for (split, n), sets in data.search_candidates.items():
        _write_jsonl(directory / "search" / f"candidates-{split}-neg{n}.jsonl",
                     map(_candidate_record, sets.values()))
    stats = {"raw": data.raw_stats.as_dict(), "filtered": data.stats.as_dict(),
             "skipped": data.skipped.as_dict()}
    (directory / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (directory / "stats.md").write_text(data.stats_markdown(), encoding="utf-8")
    meta = {"format_version": FORMAT_VERSION, "name": data.name, "config": data.config.as_dict(),
            "files": prepared_files(data.config)}
    (directory / "prepared.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, None, "missing; is this a prepared dataset directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(path, None, f"not valid UTF-8 JSON ({err})") from None


def _read_jsonl(path: Path, build) -> Iterator:
    if not path.is_file():
        raise DataFormatError(path, None, "missing; is this a prepared dataset directory?")
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield build(json.loads(line.decode("utf-8")))
            except (ValueError, KeyError, TypeError, IndexError) as err:
                # ValueError covers JSONDecodeError and UnicodeDecodeError.
                raise DataFormatError(path, number, f"not a valid record ({type(err).__name__}: "
                                      f"{err})") from None


def load_prepared(directory: str | os.PathLike) -> PreparedData:
    """Reads back what `write_prepared` wrote, equal to the original `PreparedData`."""
    directory = Path(directory)
    meta = _read_json(directory / "prepared.json")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(directory / "prepared.json", None,
                              f"format_version {meta.get('format_version')!r}; this code reads "
                              f"{FORMAT_VERSION}: prepare the dataset again")
    config = PreprocessConfig.from_dict(meta["config"])
    stats = _read_json(directory / "stats.json")

    def candidate_sets(path: Path, key) -> dict[str, CandidateSet]:
        return {key(c): c for c in _read_jsonl(path, _candidate_from)}

    items = {item.item_id: item for item in _read_jsonl(directory / "items.jsonl", _item_from)}
    splits = {split: list(_read_jsonl(directory / "splits" / f"{split}.jsonl", _example_from))
              for split in ("train", "valid", "test")}
    return PreparedData(
        name=meta["name"],
        config=config,
        items=items,
        sequences=list(_read_jsonl(directory / "sequences.jsonl", _sequence_from)),
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        candidates={(split, n): candidate_sets(directory / "candidates" / f"{split}-neg{n}.jsonl",
                                               lambda c: c.user_id)
                    for split in EVAL_SPLITS for n in config.negatives},
        search={split: list(_read_jsonl(directory / "search" / f"{split}.jsonl", _example_from))
                for split in SEARCH_SPLITS},
        search_candidates={
            (split, n): candidate_sets(directory / "search" / f"candidates-{split}-neg{n}.jsonl",
                                       lambda c: c.target)
            for split in EVAL_SPLITS for n in config.negatives},
        raw_stats=DatasetStats.from_dict(stats["raw"]),
        stats=DatasetStats.from_dict(stats["filtered"]),
        skipped=SkipCounts(stats["skipped"]),
    )
