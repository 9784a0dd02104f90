"""Preprocessing: k-core, ordering, leave-one-out splits, candidate sets, product search, stats."""

import collections
import random

import pytest

from instructrec_jax.data.preprocess import (DatasetStats, PreprocessConfig, prepare_data,
                                             split_search_items, stats_table)
from instructrec_jax.data.types import Interaction, Item, RawDataset, SkipCounts


def make_raw(rows, *, reviews=False, skipped=None) -> RawDataset:
    """A RawDataset from (user, item, timestamp) rows, in that source order."""
    log = [Interaction(u, i, t, rating=float(t % 5), review=f"{u} on {i}" if reviews else None)
           for u, i, t in rows]
    items = {i: Item(i, f"Title of {i}") for _, i, _ in rows}
    return RawDataset("hand-made", log, items, skipped=SkipCounts(skipped or {}))


def random_rows(seed=0, users=60, items=150, ties=True):
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        for _ in range(rng.randint(5, 15)):
            t = rng.randint(0, 30) if ties else rng.randint(0, 10**9)
            rows.append((f"u{u}", f"i{rng.randrange(items)}", t))
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def prepared():
    return prepare_data(make_raw(random_rows(users=200, items=200), reviews=True),
                        PreprocessConfig(min_interactions=3, max_history=4, negatives=(9, 99)))


def reference_kcore(rows, k):
    """Independent k-core: remove under-k users and items until nothing changes."""
    rows = set((u, i) for u, i, _ in rows)
    while True:
        users = collections.Counter(u for u, _ in rows)
        items = collections.Counter(i for _, i in rows)
        kept = {(u, i) for u, i in rows if users[u] >= k and items[i] >= k}
        if kept == rows:
            return kept
        rows = kept


# ---- k-core ----

def test_kcore_removal_cascades_until_stable():
    core = [(u, i, 1) for u in "ABC" for i in "xyz"]
    # D and E have 3 interactions each, but p and q are rare; once they go, D and E fall below 3.
    fringe = [("D", "x", 2), ("D", "y", 3), ("D", "p", 4),
              ("E", "p", 5), ("E", "q", 6), ("E", "x", 7)]
    data = prepare_data(make_raw(core + fringe), PreprocessConfig(min_interactions=3,
                                                                    negatives=()))
    assert [s.user_id for s in data.sequences] == ["A", "B", "C"]
    assert sorted(data.items) == ["x", "y", "z"]
    assert data.skipped == {"interaction removed by k-core filter": 6}


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kcore_matches_a_reference_and_leaves_everyone_with_k(k):
    rows = random_rows(seed=k, users=80, items=60)
    data = prepare_data(make_raw(rows), PreprocessConfig(min_interactions=k, negatives=()))
    kept = {(s.user_id, i) for s in data.sequences for i in s.item_ids}
    assert kept == reference_kcore(rows, k)
    assert min(len(s) for s in data.sequences) >= k
    assert min(collections.Counter(i for _, i in kept).values()) >= k


def test_nothing_left_after_filter_is_an_error():
    with pytest.raises(ValueError, match="no interactions are left after the 5-core filter"):
        prepare_data(make_raw([("a", "x", 1), ("a", "y", 2), ("b", "x", 3)]))


# ---- ordering and duplicates ----

def test_sequences_are_chronological_and_ties_keep_source_order():
    rows = [("u", "c", 3), ("u", "a", 1), ("u", "b", 3), ("u", "d", 2), ("u", "e", 3)]
    data = prepare_data(make_raw(rows, reviews=True),
                        PreprocessConfig(min_interactions=1, negatives=()))
    (sequence,) = data.sequences
    assert sequence.item_ids == ("a", "d", "c", "b", "e")
    assert sequence.timestamps == (1, 2, 3, 3, 3)
    assert sequence.reviews == ("u on a", "u on d", "u on c", "u on b", "u on e")
    assert sequence.ratings == (1.0, 2.0, 3.0, 3.0, 3.0)
    swapped = prepare_data(make_raw([rows[2], rows[1], rows[0], rows[3], rows[4]]),
                           PreprocessConfig(min_interactions=1, negatives=()))
    assert swapped.sequences[0].item_ids == ("a", "d", "b", "c", "e")


def test_repeated_pairs_keep_the_earliest_and_are_counted():
    rows = [("u", "a", 7), ("u", "b", 6), ("u", "a", 5), ("u", "c", 8), ("u", "c", 8),
            ("u", "d", 9)]
    data = prepare_data(make_raw(rows, skipped={"item without title": 2}),
                        PreprocessConfig(min_interactions=1, negatives=()))
    assert data.sequences[0].item_ids == ("a", "b", "c", "d")
    assert data.sequences[0].timestamps == (5, 6, 8, 9)
    assert data.skipped == {"repeated interaction": 2, "item without title": 2}


def test_users_sorted_naturally_by_id():
    rows = [(u, i, t) for u in ("10", "9", "x", "100") for t, i in enumerate("abc")]
    data = prepare_data(make_raw(rows), PreprocessConfig(min_interactions=1, negatives=()))
    assert [s.user_id for s in data.sequences] == ["9", "10", "100", "x"]


def test_short_users_dropped_and_counted_when_k_below_3():
    rows = [("long", i, t) for t, i in enumerate("abcd")] + [("short", "a", 1), ("short", "b", 2)]
    data = prepare_data(make_raw(rows), PreprocessConfig(min_interactions=1, negatives=()))
    assert [s.user_id for s in data.sequences] == ["long"]
    assert data.skipped == {"interaction of a user with fewer than 3 interactions": 2}


# ---- leave-one-out splits ----

def test_leave_one_out_targets_and_capped_histories():
    rows = [("u", f"s{t}", t) for t in range(1, 7)]
    data = prepare_data(make_raw(rows, reviews=True),
                        PreprocessConfig(min_interactions=1, max_history=2, negatives=()))
    assert [(e.history, e.target, e.position) for e in data.train] == [
        (("s1",), "s2", 1), (("s1", "s2"), "s3", 2), (("s2", "s3"), "s4", 3)]
    (valid,), (test,) = data.valid, data.test
    assert (valid.history, valid.target, valid.position, valid.timestamp) == (
        ("s3", "s4"), "s5", 4, 5)
    assert (test.history, test.target, test.position, test.review) == (
        ("s4", "s5"), "s6", 5, "u on s6")


def test_splits_never_leak_later_items(prepared):
    sequences = {s.user_id: s for s in prepared.sequences}
    for e in prepared.train + prepared.valid + prepared.test:
        s = sequences[e.user_id]
        assert s.item_ids[e.position] == e.target
        assert e.history == s.item_ids[:e.position][-4:]
        assert len(e.history) <= 4
        assert e.timestamp == s.timestamps[e.position]
    test_items = {e.user_id: e.target for e in prepared.test}
    valid_items = {e.user_id: e.target for e in prepared.valid}
    for e in prepared.train:
        assert test_items[e.user_id] not in e.history + (e.target,)
        assert valid_items[e.user_id] not in e.history + (e.target,)
    assert [e.position for e in prepared.test] == [len(s) - 1 for s in prepared.sequences]
    assert [e.position for e in prepared.valid] == [len(s) - 2 for s in prepared.sequences]
    assert len(prepared.train) == sum(len(s) - 3 for s in prepared.sequences)


def test_sequences_are_chronological_everywhere(prepared):
    for s in prepared.sequences:
        assert list(s.timestamps) == sorted(s.timestamps)
        assert len(set(s.item_ids)) == len(s)


# ---- candidate sets ----

@pytest.mark.parametrize("split,n", [("valid", 9), ("test", 9), ("valid", 99), ("test", 99)])
def test_candidates_hold_the_target_once_and_only_unseen_negatives(prepared, split, n):
    sets = prepared.candidates[(split, n)]
    examples = {e.user_id: e for e in getattr(prepared, split)}
    seen = {s.user_id: set(s.item_ids) for s in prepared.sequences}
    assert sets.keys() == examples.keys()
    for user, candidates in sets.items():
        assert len(candidates.item_ids) == n + 1
        assert len(set(candidates.item_ids)) == n + 1
        assert candidates.target == examples[user].target
        assert candidates.item_ids.count(examples[user].target) == 1
        negatives = set(candidates.item_ids) - {candidates.target}
        assert not negatives & seen[user]
        assert negatives <= prepared.items.keys()
    slots = collections.Counter(c.label_index for c in sets.values())
    assert len(slots) > 3  # the true item's slot is drawn, not fixed


def test_candidates_are_deterministic_for_a_seed_and_change_with_it():
    rows = random_rows(seed=3)
    config = PreprocessConfig(min_interactions=3, negatives=(9,), seed=1)
    first = prepare_data(make_raw(rows), config)
    again = prepare_data(make_raw(rows), config)
    other = prepare_data(make_raw(rows),
                         PreprocessConfig(min_interactions=3, negatives=(9,), seed=2))
    assert first.candidates == again.candidates
    assert first.search_candidates == again.search_candidates
    assert first.candidates[("test", 9)] != other.candidates[("test", 9)]
    assert first.sequences == other.sequences  # the seed only touches random draws


def test_valid_and_test_candidates_are_drawn_independently(prepared):
    valid, test = prepared.candidates[("valid", 9)], prepared.candidates[("test", 9)]
    different = sum(set(valid[u].item_ids) - {valid[u].target} != set(test[u].item_ids)
                    - {test[u].target} for u in valid)
    assert different == len(valid)


def test_user_who_saw_most_of_the_catalogue_still_gets_unseen_negatives():
    heavy = [("heavy", f"i{k}", k) for k in range(90)]
    light = [(f"light{j}", f"i{(5 * j + m) % 100}", m) for j in range(20) for m in range(5)]
    data = prepare_data(make_raw(heavy + light), PreprocessConfig(min_interactions=1,
                                                                  negatives=(9,)))
    for split in ("valid", "test"):
        candidates = data.candidates[(split, 9)]["heavy"]
        negatives = set(candidates.item_ids) - {candidates.target}
        assert len(negatives) == 9
        assert negatives < {f"i{k}" for k in range(90, 100)}


def test_too_many_negatives_for_the_catalogue_is_an_error():
    rows = [(u, i, t) for u in "ab" for t, i in enumerate("wxyz")]
    with pytest.raises(ValueError, match="cannot draw 5 negatives: a user interacted with 4 of "
                       "the 4 items"):
        prepare_data(make_raw(rows), PreprocessConfig(min_interactions=1, negatives=(5,)))


# ---- product search ----

def test_search_items_split_80_10_10_disjoint_and_seeded():
    catalogue = [f"i{n}" for n in range(1000)]
    split = split_search_items(catalogue, PreprocessConfig(seed=4))
    counts = collections.Counter(split.values())
    assert counts == {"train": 800, "valid": 100, "test": 100}
    assert split == split_search_items(catalogue, PreprocessConfig(seed=4))
    assert split != split_search_items(catalogue, PreprocessConfig(seed=5))


def test_search_splits_keep_eval_items_out_of_training(prepared):
    split_of = split_search_items(list(prepared.items), prepared.config)
    train_targets = {e.target for e in prepared.search["train"]}
    valid_targets = [e.target for e in prepared.search["valid"]]
    test_targets = [e.target for e in prepared.search["test"]]
    assert {split_of[i] for i in train_targets} == {"train"}
    assert sorted(valid_targets) == sorted(i for i, s in split_of.items() if s == "valid")
    assert sorted(test_targets) == sorted(i for i, s in split_of.items() if s == "test")
    assert not train_targets & set(valid_targets + test_targets)
    # Training positions only: never a user's sequential valid/test target.
    lengths = {s.user_id: len(s) for s in prepared.sequences}
    assert all(e.position <= lengths[e.user_id] - 3 for e in prepared.search["train"])
    expected = sum(1 for s in prepared.sequences for t, i in enumerate(s.item_ids)
                   if split_of[i] == "train" and t <= len(s) - 3)
    assert len(prepared.search["train"]) == expected


def test_search_eval_example_is_the_items_latest_interaction():
    rows = [("A", "x", 5), ("A", "a", 6), ("A", "b", 7), ("B", "x", 9), ("B", "c", 10),
            ("B", "d", 11), ("C", "y", 4), ("D", "y", 4), ("C", "e", 12), ("C", "f", 13),
            ("D", "g", 14), ("D", "h", 15)]
    config = PreprocessConfig(min_interactions=1, negatives=(), search_fractions=(0, 0, 1))
    data = prepare_data(make_raw(rows), config)
    by_item = {e.target: e for e in data.search["test"]}
    assert by_item["x"].user_id == "B" and by_item["x"].timestamp == 9
    assert by_item["y"].user_id == "D"  # a tie at t=4: the later line in the source wins
    assert len(data.search["test"]) == len(data.items) and data.search["train"] == []


def test_search_candidates_keyed_by_target_and_unseen_by_its_user(prepared):
    for split in ("valid", "test"):
        examples = {e.target: e for e in prepared.search[split]}
        sets = prepared.search_candidates[(split, 9)]
        assert sets.keys() == examples.keys()
        seen = {s.user_id: set(s.item_ids) for s in prepared.sequences}
        for item, candidates in sets.items():
            assert candidates.target == item
            assert candidates.user_id == examples[item].user_id
            assert not (set(candidates.item_ids) - {item}) & seen[candidates.user_id]


# ---- statistics ----

def test_stats_before_and_after_filtering():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 4), ("b", "y", 5),
            ("b", "z", 6), ("c", "w", 7)]
    data = prepare_data(make_raw(rows), PreprocessConfig(min_interactions=2, negatives=()))
    assert data.raw_stats == DatasetStats(users=3, items=4, interactions=7,
                                          sparsity=pytest.approx(1 - 7 / 12),
                                          avg_sequence_length=pytest.approx(7 / 3))
    assert data.stats == DatasetStats(2, 3, 6, 0.0, 3.0)
    markdown = data.stats_markdown()
    assert "| raw | 3 | 4 | 7 | 41.667% | 2.33 |" in markdown
    assert "| filtered (2-core) | 2 | 3 | 6 | 0.000% | 3.00 |" in markdown
    assert "| interaction removed by k-core filter | 1 |" in markdown


def test_stats_table_formats_like_the_paper():
    games = DatasetStats.of_counts(50_546, 16_859, 410_907)
    assert games.as_markdown("Games").splitlines()[2] == (
        "| Games | 50,546 | 16,859 | 410,907 | 99.952% | 8.13 |")
    assert stats_table([("a", games), ("b", games)]).count("\n") == 4


def test_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="search_fractions"):
        PreprocessConfig(search_fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="negatives"):
        PreprocessConfig(negatives=(9, 9))
    with pytest.raises(ValueError, match="max_history"):
        PreprocessConfig(max_history=0)


def test_interaction_with_uncatalogued_item_is_an_error():
    raw = make_raw([("a", "x", 1)])
    raw.items.clear()
    with pytest.raises(ValueError, match="item 'x', which is not in the catalogue"):
        prepare_data(raw)
