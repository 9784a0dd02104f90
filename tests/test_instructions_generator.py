"""The instruction generator on a small hand-made store run through the real preprocessing."""

import collections

import pytest

from instructrec_jax.data.types import Item
from instructrec_jax.instructions.format import INSTRUCTION_TYPES, SCENARIOS, TaskForm
from instructrec_jax.instructions.generator import (GeneratorOptions, candidate_groups,
                                                    generate_instructions, iter_instructions,
                                                    time_context, with_candidates)
from instructrec_jax.instructions.render import ItemRenderer, id_token, join_items
from instructrec_jax.instructions.templates import TEMPLATES, templates_for

from instruction_fixtures import store_data


@pytest.fixture(scope="module")
def data():
    return store_data()


@pytest.fixture(scope="module")
def records(data):
    return generate_instructions(data, seed=0)


def _sequences(data):
    return {s.user_id: s for s in data.sequences}


def test_every_type_and_template_is_instantiated(records):
    assert set(INSTRUCTION_TYPES) <= set(records)
    used = {r.template_id for by_split in records.values() for rs in by_split.values() for r in rs}
    assert used == {t.template_id for t in TEMPLATES}


def test_evaluated_types_have_validation_and_test_the_others_only_train(records):
    for name, itype in INSTRUCTION_TYPES.items():
        expected = {"train", "validation", "test"} if itype.evaluated else {"train"}
        assert set(records[name]) == expected, name
    for name in records:
        if name.endswith("_neg99"):
            assert set(records[name]) == {"validation", "test"}


def test_same_seed_same_records_other_seed_other_records(data, records):
    again = generate_instructions(data, seed=0)
    assert again == records
    other = generate_instructions(data, seed=1)
    assert other["p1_i0_t3"]["train"] != records["p1_i0_t3"]["train"]
    # Evaluation sets are the prepared data's, whatever the generator's seed.
    assert other["p1_i0_t3"]["test"] == records["p1_i0_t3"]["test"]


def test_a_types_records_do_not_depend_on_the_other_types_generated(data, records):
    alone = generate_instructions(data, seed=0, types=["p1_i0_t0"])
    assert alone["p1_i0_t0"] == records["p1_i0_t0"]


def test_training_uses_one_record_per_example_and_type(data, records):
    assert len(records["p1_i0_t3"]["train"]) == len(data.train)
    assert len(records["p0_i2_t3"]["train"]) == len(data.search["train"])


def test_query_item_pairs_of_product_search_eval_items_stay_out_of_training(data, records):
    held_out = {e.target for split in ("valid", "test") for e in data.search[split]}
    assert held_out
    for name in ("p1_i2_t3", "p1_i2_t2", "rev_history_to_next_query", "rev_query_item_to_history"):
        train = records[name]["train"]
        assert not {r.target_item for r in train} & held_out or name == "rev_query_item_to_history"
        assert len(train) == sum(e.target not in held_out for e in data.train)
    # types without a specific query keep every training example
    assert any(r.target_item in held_out for r in records["p1_i1_t3"]["train"])


def test_evaluation_has_one_record_per_example_and_template_with_the_shared_sets(data, records):
    for type_name in SCENARIOS.values():
        itype = INSTRUCTION_TYPES[type_name]
        n_templates = len(templates_for(type_name))
        for split, key in (("validation", "valid"), ("test", "test")):
            rs = records[type_name][split]
            search = type_name.startswith("p0")
            examples = data.search[key] if search else getattr(data, key)
            assert len(rs) == len(examples) * n_templates
            sets = (data.search_candidates if search else data.candidates)[(key, 9)]
            for r in rs:
                cset = sets[r.target_item if search else r.user_id]
                assert r.candidates == cset.item_ids and r.label_index == cset.label_index
                assert r.candidates[r.label_index] == r.target_item
            assert collections.Counter(r.template_id for r in rs) == {
                t.template_id: len(examples) for t in templates_for(type_name)}
        assert itype.task_form is TaskForm.T3


def test_candidate_targets_are_what_the_decoder_is_scored_on(data, records):
    text = {i: item.title for i, item in data.items.items()}
    for name, by_split in records.items():
        for r in (r for rs in by_split.values() for r in rs):
            if r.label_index >= 0 and INSTRUCTION_TYPES[name.removesuffix("_neg99")].task_form \
                    in (TaskForm.T1, TaskForm.T3):
                assert r.candidate_targets[r.label_index] == r.targets
                assert r.candidate_targets == tuple(text[c] for c in r.candidates)
                if len(r.candidates) > 2:
                    assert join_items(text[c] for c in r.candidates) in r.inputs
                else:
                    assert all(text[c] in r.inputs for c in r.candidates)


def test_training_negatives_are_fresh_unseen_and_never_the_target(data, records):
    sequences = _sequences(data)
    for r in records["p1_i0_t3"]["train"]:
        assert len(r.candidates) == 10 and len(set(r.candidates)) == 10
        assert r.candidates[r.label_index] == r.target_item
        seen = set(sequences[r.user_id].item_ids[:-2])
        for k, c in enumerate(r.candidates):
            if k != r.label_index:
                assert c not in seen
    positions = collections.Counter(r.label_index for r in records["p1_i0_t3"]["train"])
    assert len(positions) == 10  # the answer is not always in the same slot


def test_no_validation_or_test_target_enters_a_users_training_records(data, records):
    sequences = _sequences(data)
    for name, by_split in records.items():
        for r in by_split.get("train", ()):
            if INSTRUCTION_TYPES[name].source.value != "sequential":
                continue
            held_out = sequences[r.user_id].item_ids[-2:]
            assert r.target_item not in held_out
            # the history (and anything derived from it) precedes the target
            position = int(r.example_id.split("/")[3])
            assert position <= len(sequences[r.user_id]) - 3


def test_explicit_preference_reads_only_the_history_shown():
    # Make one user's test target an item of a category nobody else has: no preference, in
    # training or evaluation, may mention it (it is never in a history shown).
    import dataclasses
    patched = store_data()
    sequence = patched.sequences[0]
    secret = Item("SECRET", "Secret", ("Video Games", "PC", "Underwater Basket Weaving"))
    patched.items = {**patched.items, "SECRET": secret}
    patched.sequences[0] = dataclasses.replace(sequence,
                                               item_ids=sequence.item_ids[:-1] + ("SECRET",))
    test_example = next(i for i, e in enumerate(patched.test) if e.user_id == sequence.user_id)
    patched.test[test_example] = dataclasses.replace(patched.test[test_example], target="SECRET")
    for n in (9, 99):
        cset = patched.candidates[("test", n)][sequence.user_id]
        ids = list(cset.item_ids)
        ids[cset.label_index] = "SECRET"
        patched.candidates[("test", n)][sequence.user_id] = dataclasses.replace(
            cset, item_ids=tuple(ids))
    out = generate_instructions(patched, types=["rev_history_to_preference", "p1p2_i0_t3",
                                                "p2_i0_t3", "p1_i0_t2_cot"])
    texts = [r.inputs + r.targets
             for by_split in out.values() for rs in by_split.values() for r in rs]
    assert sum("Secret" in t for t in texts) >= 3  # it is there, as a candidate and a target
    assert not any("Underwater" in t for t in texts)


def test_pointwise_labels_are_balanced_and_name_the_asked_item(data, records):
    rs = records["p1_i0_t0"]["train"]
    answers = collections.Counter(r.targets for r in rs)
    assert set(answers) == {"yes", "no"}
    assert abs(answers["yes"] - answers["no"]) <= len(data.sequences)  # alternating per user
    for r in rs:
        asked = data.items[r.candidates[0]].title
        assert asked in r.inputs and r.candidate_targets == ("yes",)
        assert (r.targets == "yes") == (r.candidates[0] == r.target_item) == (r.label_index == 0)


def test_pairwise_offers_the_true_item_and_one_negative(records):
    for r in records["p1_i0_t1"]["train"]:
        assert len(r.candidates) == 2 and r.candidates[r.label_index] == r.target_item


def test_chain_of_thought_target_states_the_preference_then_the_item(data, records):
    for r in records["p1_i0_t2_cot"]["train"][:20]:
        assert r.targets.startswith("Enjoys ") or r.targets.startswith("Prefers ")
        assert r.targets.endswith("So the next item is: " + data.items[r.target_item].title)


def test_vague_intentions_quote_reviews_but_never_the_targets_title(data, records):
    # The fixture's review "This quest was great fun..." may be quoted, except for "Quest" items.
    quoted = collections.Counter()
    for name in ("p1_i1_t3", "p0_i1_t3"):
        for r in records[name]["train"]:
            is_quest = data.items[r.target_item].title.startswith("Quest")
            if "This quest was great fun" in r.inputs.split("Candidates")[0]:
                quoted[is_quest] += 1
    assert quoted[False] > 0 and quoted[True] == 0


def test_product_search_query_is_the_category_path(data, records):
    for r in records["p0_i2_t3"]["test"]:
        path = ", ".join(data.items[r.target_item].categories)
        assert path in r.inputs


def test_reversed_tasks_have_text_targets(data, records):
    from instructrec_jax.instructions.derive import catalogue_facts, specific_intention
    facts = catalogue_facts(data.items)
    search = {(e.user_id, e.position): e for e in data.search["train"]}
    for r in records["rev_item_to_query"]["train"][:20]:
        example = search[(r.user_id, int(r.example_id.split("/")[3]))]
        assert r.targets == specific_intention(data.items[example.target], facts)
        assert data.items[example.target].title in r.inputs and r.target_item == ""
    sequences = _sequences(data)
    for r in records["rev_query_item_to_history"]["train"][:20]:
        position = int(r.example_id.split("/")[3])
        recent = sequences[r.user_id].item_ids[max(0, position - 3):position]
        assert r.targets == join_items(data.items[i].title for i in recent)
    for r in records["rev_history_to_next_query"]["train"][:20]:
        title = data.items[r.target_item].title
        assert r.targets.endswith(f". Item: {title}") or r.targets.endswith(f". Choice: {title}")


def test_neg99_records_list_the_shared_hundred_candidates(data, records):
    # Default: the five scenarios only.
    neg99 = {n for n in records if n.endswith("_neg99")}
    assert neg99 == {t + "_neg99" for t in SCENARIOS.values()}
    for r in records["p1_i0_t3_neg99"]["test"]:
        full = data.candidates[("test", 99)][r.user_id]
        assert r.candidates == full.item_ids and r.label_index == full.label_index
        assert len(r.candidate_targets) == 100
    assert len(records["p1_i0_t3_neg99"]["test"]) == len(data.test) * 3


def test_candidate_groups_and_final_round_follow_the_paper(data, records):
    text = {i: item.title for i, item in data.items.items()}
    record = records["p1_i1_t3_neg99"]["test"][0]
    groups = candidate_groups(record, text)
    assert [g.example_id for g in groups] == [f"{record.example_id}/g{k:02d}" for k in range(10)]
    assert sum((g.candidates for g in groups), ()) == record.candidates
    assert sum(g.label_index >= 0 for g in groups) == 1
    for g in groups:
        assert join_items(text[c] for c in g.candidates) in g.inputs
        assert g.inputs.startswith(record.inputs.split(text[record.candidates[0]])[0])
        if g.label_index >= 0:
            assert g.candidates[g.label_index] == record.target_item
            assert g.candidate_targets[g.label_index] == record.targets
    winners = [g.candidates[max(g.label_index, 0)] for g in groups]
    final = with_candidates(record, winners, text)
    assert final.candidates == tuple(winners) and final.example_id == record.example_id + "/final"
    assert final.candidates[final.label_index] == record.target_item
    assert join_items(text[w] for w in winners) in final.inputs
    history = join_items(text[i] for i in data.test[0].history)
    assert history in final.inputs


def test_neg99_selection(data):
    from instructrec_jax.instructions.generator import selected_types
    assert not [n for n in selected_types(data, None, "none") if n.endswith("_neg99")]
    every = [n for n in selected_types(data, None, "all") if n.endswith("_neg99")]
    assert len(every) == sum(t.evaluated and t.task_form is TaskForm.T3
                             for t in INSTRUCTION_TYPES.values())


def test_training_records_come_in_a_shuffled_user_order(records):
    users = [r.user_id for r in records["p1_i0_t3"]["train"]]
    runs = sum(1 for a, b in zip(users, users[1:]) if a != b)
    assert runs > len(users) // 2  # not grouped by user
    test_users = [r.user_id for r in records["p1_i0_t3"]["test"]]
    assert test_users == sorted(test_users)


def test_example_ids_are_unique(records):
    ids = [r.example_id for by_split in records.values() for rs in by_split.values() for r in rs]
    assert len(ids) == len(set(ids))


def test_all_templates_per_example_and_a_cap_on_training_examples(data):
    out = generate_instructions(data, types=["p1_i0_t3"], templates_per_example="all",
                                max_train_examples_per_type=50)
    train = out["p1_i0_t3"]["train"]
    assert len(train) == 50 * 3
    assert len({r.example_id.rsplit("/", 1)[0] for r in train}) == 50


def test_id_token_renderer_writes_tokens_everywhere(data):
    out = generate_instructions(data, types=["p1_i0_t3"], renderer=ItemRenderer("id_token"))
    r = out["p1_i0_t3"]["test"][0]
    assert r.targets == id_token(r.target_item) == r.candidate_targets[r.label_index]
    assert all(id_token(c) in r.inputs for c in r.candidates)
    assert not any(data.items[c].title in r.inputs for c in r.candidates)


def test_time_context_prefixes_the_instruction(data):
    out = generate_instructions(data, types=["p1_i0_t2"], context="time")
    r = out["p1_i0_t2"]["validation"][0]
    example = data.valid[0]
    assert r.inputs.startswith(time_context(example) + " ")
    assert time_context(example).startswith("It is a ")


def test_unknown_type_is_an_error_listing_the_known_ones(data):
    with pytest.raises(KeyError, match="p1_i0_t3"):
        list(iter_instructions(data, GeneratorOptions(types=("p9_i9_t9",))))


def test_eval_cap_keeps_the_same_users_for_every_type(data):
    out = generate_instructions(data, types=["p1_i0_t3", "p1_i1_t3", "p1_i0_t2"],
                                max_eval_examples=7)
    users = {name: {r.user_id for r in out[name]["test"]} for name in out}
    assert len(users["p1_i0_t3"]) == 7
    assert users["p1_i0_t3"] == users["p1_i1_t3"] == users["p1_i0_t2"]
    assert len(out["p1_i0_t3"]["train"]) == len(data.train)  # training is not capped


def test_train_passes_draw_fresh_negatives_and_templates_and_leave_pass_zero_alone(data):
    types = ["p1_i0_t3", "p1_i0_t0"]
    one = generate_instructions(data, types=types, seed=0)
    three = generate_instructions(data, types=types, seed=0, train_passes=3)
    for name in types:
        base, train = one[name]["train"], three[name]["train"]
        assert len(train) == 3 * len(base)
        assert train[:len(base)] == base  # pass 0 is the single-pass data, record for record
        for split in ("validation", "test"):  # evaluation records (if any) are untouched
            assert three[name].get(split) == one[name].get(split)
        by_pass = [train[k * len(base):(k + 1) * len(base)] for k in range(3)]
        for k in (1, 2):
            assert all(r.example_id.endswith(f"/pass{k}") for r in by_pass[k])
            # The same examples (user, position) in another order ...
            keys = sorted(r.example_id.split("/")[2:4] for r in by_pass[k])
            assert keys == sorted(r.example_id.split("/")[2:4] for r in base)
            assert [r.example_id.split("/")[2:4] for r in by_pass[k]] != \
                [r.example_id.split("/")[2:4] for r in base]
        ids = [r.example_id for r in train]
        assert len(ids) == len(set(ids))
    # ... with their own candidate lists: most reranking records of a later pass list other items.
    base = {tuple(r.example_id.split("/")[2:4]): r for r in one["p1_i0_t3"]["train"]}
    later = [r for r in three["p1_i0_t3"]["train"] if r.example_id.endswith("/pass1")]
    changed = sum(set(r.candidates) != set(base[tuple(r.example_id.split("/")[2:4])].candidates)
                  for r in later)
    assert changed > 0.9 * len(later)
    sequences = _sequences(data)
    for r in later:  # still negatives the user never touched in training, and the true item
        train_part = set(sequences[r.user_id].item_ids[:-2])
        negatives = [c for i, c in enumerate(r.candidates) if i != r.label_index]
        assert r.candidates[r.label_index] == r.target_item
        assert not train_part & set(negatives)


def test_train_passes_must_be_positive(data):
    with pytest.raises(ValueError, match="train_passes"):
        GeneratorOptions(train_passes=0)


def test_train_next_items_append_the_following_training_items_to_item_targets(data):
    types = ["p1_i0_t3", "p1_i0_t2", "p1_i0_t2_cot", "p0_i2_t3"]
    renderer = ItemRenderer("id_token")
    one = generate_instructions(data, types=types, seed=0, renderer=renderer)
    three = generate_instructions(data, types=types, seed=0, renderer=renderer, train_next_items=3)
    sequences = _sequences(data)
    lengths = collections.Counter()
    for name in types:
        for split in ("validation", "test"):  # evaluation records never change
            assert three[name].get(split) == one[name].get(split)
        for before, after in zip(one[name]["train"], three[name]["train"], strict=True):
            # the same draws: only the target may differ
            assert after.inputs == before.inputs and after.candidates == before.candidates
            if name in ("p1_i0_t2_cot", "p0_i2_t3"):  # not a bare item / not the sequential log
                assert after == before
                continue
            items = sequences[after.user_id].item_ids
            position = int(after.example_id.split("/")[3])
            following = items[position + 1 : min(position + 3, len(items) - 2)]
            assert after.targets == " ".join(map(id_token, (after.target_item, *following)))
            assert after.targets.split(" ")[0] == before.targets
            assert not set(following) & set(items[-2:])  # never a validation or test target
            lengths[len(following) + 1] += 1
    assert set(lengths) == {1, 2, 3}  # full targets, and shorter ones at the training part's end
    titles = generate_instructions(data, types=["p1_i0_t3"], seed=0, train_next_items=2)
    record = next(r for r in titles["p1_i0_t3"]["train"] if "; " in r.targets)
    items = sequences[record.user_id].item_ids
    position = int(record.example_id.split("/")[3])
    assert record.targets == join_items([data.items[record.target_item].title,
                                         data.items[items[position + 1]].title])
    for bad in (0, 1.5, None):
        with pytest.raises(ValueError, match="train_next_items"):
            GeneratorOptions(train_next_items=bad)


def _training_negative_counts(out, name, data):
    """Training-part interaction counts of every negative listed in `name`'s training records."""
    counts = collections.Counter(item for s in data.sequences for item in s.item_ids[:-2])
    sequences = _sequences(data)
    drawn = []
    for r in out[name]["train"]:
        negatives = [c for i, c in enumerate(r.candidates) if i != r.label_index]
        assert r.candidates[r.label_index] == r.target_item
        assert len(set(negatives)) == len(negatives)
        assert not set(sequences[r.user_id].item_ids[:-2]) & set(negatives)
        drawn += [counts.get(item, 0) for item in negatives]
    return drawn, counts


@pytest.mark.parametrize("negatives", [9, 31])  # 31: the enumerate-the-pool branch
def test_popularity_weighted_training_negatives(data, negatives):
    uniform = generate_instructions(data, types=["p1_i0_t3"], seed=0, negatives=negatives)
    hard = generate_instructions(data, types=["p1_i0_t3"], seed=0, negatives=negatives,
                                 negative_popularity=2.0)
    for split in ("validation", "test"):  # the shared evaluation sets do not move
        assert hard["p1_i0_t3"][split] == uniform["p1_i0_t3"][split]
    flat, counts = _training_negative_counts(uniform, "p1_i0_t3", data)
    skewed, _ = _training_negative_counts(hard, "p1_i0_t3", data)
    assert len(flat) == len(skewed) == negatives * len(data.train)
    # Drawn ∝ (count + 1)^2: popular items are listed as negatives far more often than uniformly.
    pool = list(data.items)
    expected_uniform = sum(counts.get(i, 0) for i in pool) / len(pool)
    weights = [counts.get(i, 0) + 1.0 for i in pool]
    expected_weighted = sum(w * w * (w - 1) for w in weights) / sum(w * w for w in weights)
    assert expected_weighted > 1.5 * expected_uniform  # the fixture's popularity is skewed enough
    mean_flat, mean_skewed = sum(flat) / len(flat), sum(skewed) / len(skewed)
    assert abs(mean_flat - expected_uniform) < 0.15 * expected_uniform
    assert mean_skewed > mean_flat + 0.5 * (expected_weighted - expected_uniform)


@pytest.mark.parametrize("negatives", [9, 31])  # 31: the enumerate-the-pool branch
def test_a_mix_of_popularity_weighted_and_uniform_training_negatives(data, negatives):
    kwargs = dict(types=["p1_i0_t3"], seed=0, negatives=negatives)
    uniform = generate_instructions(data, **kwargs)
    hard = generate_instructions(data, negative_popularity=2.0, **kwargs)
    # k = all of them is the unmixed draw, record for record
    assert generate_instructions(data, negative_popularity=2.0, popular_negatives=negatives,
                                 **kwargs) == hard
    popular = 3
    mixed = generate_instructions(data, negative_popularity=2.0, popular_negatives=popular,
                                  **kwargs)
    for split in ("validation", "test"):
        assert mixed["p1_i0_t3"][split] == uniform["p1_i0_t3"][split]
    # n distinct negatives per record, none of them the user's training items (checked inside)
    drawn, counts = _training_negative_counts(mixed, "p1_i0_t3", data)
    flat, _ = _training_negative_counts(uniform, "p1_i0_t3", data)
    skewed, _ = _training_negative_counts(hard, "p1_i0_t3", data)
    assert len(drawn) == negatives * len(data.train)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # k of n drawn like `hard`, n − k like `uniform`: the mean count is the weighted mix
    expected = (popular * mean(skewed) + (negatives - popular) * mean(flat)) / negatives
    assert abs(mean(drawn) - expected) < 0.1 * (mean(skewed) - mean(flat))
    assert mean(flat) < mean(drawn) < mean(skewed)
    # the two kinds are shuffled together: the popular ones are not always listed first
    firsts = [counts.get(next(c for i, c in enumerate(r.candidates) if i != r.label_index), 0)
              for r in mixed["p1_i0_t3"]["train"]]
    assert abs(mean(firsts) - mean(drawn)) < abs(mean(skewed) - mean(drawn))


def test_a_mixed_list_whose_popular_draw_takes_the_whole_pool_keeps_those_negatives(data):
    """More negatives asked than the pool holds, the popular draw takes every allowed item: the
    uniform draw finds none left, and the list holds the pool (as the unmixed draw does), no error."""
    kwargs = dict(types=["p1_i0_t3"], seed=0, negatives=500, negative_popularity=2.0)
    whole = generate_instructions(data, **kwargs)["p1_i0_t3"]["train"]
    mixed = generate_instructions(data, popular_negatives=499, **kwargs)["p1_i0_t3"]["train"]
    assert len(mixed) == len(whole) and len(whole[0].candidates) < 500
    for a, b in zip(whole, mixed):
        assert sorted(a.candidates) == sorted(b.candidates)


def _related_lists(data, window=10, last=5, pool=50):
    """A function (history, excluded items, target) → the items a related draw may take, written
    out plainly (window co-occurrence counted per basket, cosine, summed over the history's last
    items), with the items tied at the cut kept, since float sums may order exact ties either way."""
    items = list(data.items)
    parts = [s.item_ids[:-2] for s in sorted(data.sequences, key=lambda s: s.user_id)]
    holders = collections.Counter()
    pairs = collections.Counter()
    for part in parts:
        for start in range(len(part)):
            basket = set(part[start:start + window + 1])
            holders.update(basket)
            pairs.update((a, b) for a in basket for b in basket if a != b)

    def similar(a, b):
        return pairs[a, b] / ((max(holders[a], 1) * max(holders[b], 1)) ** 0.5)

    def allowed(history, exclude, target):
        scores = {j: sum(similar(h, j) for h in history[-last:]) for j in items}
        ranked = sorted((j for j in items if scores[j] > 0 and j != target and j not in exclude),
                        key=lambda j: -scores[j])
        if len(ranked) > pool:  # the cut may fall inside a group of equal scores: keep the group
            edge = scores[ranked[pool - 1]]
            ranked = [j for j in ranked if scores[j] > edge - 1e-9]
        return ranked
    return allowed


def test_related_training_negatives_come_from_the_history_s_training_neighbours(data):
    kwargs = dict(types=["p1_i0_t3"], seed=0, negatives=9)
    uniform = generate_instructions(data, **kwargs)
    related = generate_instructions(data, related_negatives=9, **kwargs)
    mixed = generate_instructions(data, related_negatives=4, **kwargs)
    for out in (related, mixed):  # the shared evaluation sets do not move
        for split in ("validation", "test"):
            assert out["p1_i0_t3"][split] == uniform["p1_i0_t3"][split]
        drawn, _ = _training_negative_counts(out, "p1_i0_t3", data)  # distinct, untouched items
        assert len(drawn) == 9 * len(data.train)
    allowed = _related_lists(data)
    sequences = _sequences(data)
    examples = {(e.user_id, e.position): e for e in data.train}
    inside = {"related": [], "mixed": [], "uniform": []}
    long_lists = 0
    for name, out in (("related", related), ("mixed", mixed), ("uniform", uniform)):
        for r in out["p1_i0_t3"]["train"]:
            sequence = sequences[r.user_id]
            position = sequence.item_ids.index(r.target_item)
            ex = examples[r.user_id, position]
            ok = allowed(ex.history, set(sequence.item_ids[:-2]), ex.target)
            negatives = [c for i, c in enumerate(r.candidates) if i != r.label_index]
            hits = sum(n in ok for n in negatives)
            inside[name].append(hits)
            if name == "related":
                if len(ok) >= 9:  # all nine from the neighbours
                    long_lists += 1
                    assert hits == 9, (r.example_id, negatives, ok[:12])
                else:  # every neighbour taken, the rest drawn as usual
                    assert set(ok) <= set(negatives), (r.example_id, negatives, ok)
            elif name == "mixed":
                assert hits >= min(4, len(ok)), (r.example_id, negatives, ok[:12])
    assert long_lists > len(data.train) // 2  # the exact branch is really exercised
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(inside["uniform"]) + 2 < mean(inside["mixed"]) < mean(inside["related"])
    # shuffled together: the first listed negative is not always a neighbour
    firsts = [next(c for i, c in enumerate(r.candidates) if i != r.label_index)
              for r in mixed["p1_i0_t3"]["train"]]
    assert len(set(firsts)) > 20


def test_related_negatives_of_search_records_stay_in_the_search_pool(data):
    """Product-search records draw negatives among the search training targets; the related
    draw keeps to that pool too."""
    pool = {e.target for e in data.search["train"]}
    out = generate_instructions(data, types=["p0_i2_t3"], seed=0, negatives=9,
                                related_negatives=9)
    plain = generate_instructions(data, types=["p0_i2_t3"], seed=0, negatives=9)
    train = out["p0_i2_t3"]["train"]
    assert train and all(set(r.candidates) <= pool for r in train)
    assert [r.candidates for r in train] != [r.candidates for r in plain["p0_i2_t3"]["train"]]


def test_related_negatives_bad_values_are_refused():
    for bad in (0, -1, 10, 2.5, "3"):
        with pytest.raises(ValueError, match="related_negatives must be an int"):
            GeneratorOptions(related_negatives=bad)
    with pytest.raises(ValueError, match="use one of them"):
        GeneratorOptions(negative_popularity=1.0, popular_negatives=3, related_negatives=3)


def test_popular_negatives_bad_values_are_refused():
    with pytest.raises(ValueError, match="needs negative_popularity > 0"):
        GeneratorOptions(popular_negatives=2)
    for bad in (-1, 10, 2.5, "3"):
        with pytest.raises(ValueError, match="popular_negatives must be an int"):
            GeneratorOptions(negative_popularity=1.0, popular_negatives=bad)


def test_negative_popularity_zero_is_the_uniform_default_and_bad_values_are_refused(data):
    default = generate_instructions(data, types=["p1_i0_t3", "p1_i0_t1"], seed=0)
    explicit = generate_instructions(data, types=["p1_i0_t3", "p1_i0_t1"], seed=0,
                                     negative_popularity=0.0)
    assert default == explicit
    for bad in (-0.5, 5.0, "1"):
        with pytest.raises(ValueError, match="negative_popularity"):
            GeneratorOptions(negative_popularity=bad)
