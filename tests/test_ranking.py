"""Likelihood ranking: shared-encoder scores equal full passes; known-score cases for every option."""

import dataclasses
import math

import numpy as np
import pytest

from instructrec_jax import ranking
from instructrec_jax.instructions.format import InstructionRecord
from ranking_fixtures import CharTokenizer, KnownScoreModel, random_params, tiny_model_and_params


def _record(inputs, targets, label, template="t1", example_id=None, candidates=None, user="u"):
    candidates = candidates or tuple(f"item{k}" for k in range(len(targets)))
    return InstructionRecord(
        inputs=inputs, targets=targets[label] if label >= 0 else "", instruction_type="p1_i0_t3",
        template_id=template, user_id=user, target_item=candidates[label] if label >= 0 else "",
        candidates=tuple(candidates), candidate_targets=tuple(targets), label_index=label,
        example_id=example_id or f"test/p1_i0_t3/{user}/1/{template}",
    )


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_params()


@pytest.mark.parametrize("path", ["packed_candidates", "repeated_encoder"])
def test_shared_encoder_scores_equal_full_encoder_decoder_passes(tiny, path):
    model, params = tiny
    config = ranking.ScoringConfig(batch_size=4, shared_path=path)
    scorer = ranking.CandidateScorer(model, params, CharTokenizer(), config)
    # two input buckets (<= 32 and <= 64 tokens) and two target buckets (<= 16, <= 64)
    inputs = [
        "The user watched: Heat; Casino. What comes next?",
        "short",
        "third one, medium length",
        "A longer instruction that lists several candidates",
        "fifth",
    ]
    targets = [
        ["Toy Story", "Jumanji", "Heat", "GoldenEye", "A", "Four Rooms"],
        ["x", "yy", "a considerably longer candidate title", "zz", "w", "v"],
        ["Se7en", "Babe", "Dead Man Walking", "Clueless", "Restoration", "Richard III"],
        ["Casino", "Sabrina", "Sudden Death", "Balto", "Nixon", "Othello"],
        ["Persuasion", "Copycat", "Assassins", "Powder", "Leaving Las Vegas", "Now and Then"],
    ]
    shared = scorer.log_likelihoods(inputs, targets)
    full = scorer.log_likelihoods_full_pass(inputs, targets, batch_size=8)
    for (sums, counts), reference, cands in zip(shared, full, targets):
        # 1e-5, or float32's own resolution for large sums (one ulp of 246 is 1.5e-5)
        np.testing.assert_allclose(sums, reference, rtol=1e-6, atol=1e-5)
        assert list(counts) == [len(c) + 1 for c in cands]  # characters + EOS
        assert np.all(sums < 0)
    # real differences between candidates: the test cannot pass with constant scores
    assert np.ptp(shared[0][0]) > 1e-3


@pytest.mark.parametrize("path", ["packed_candidates", "repeated_encoder"])
def test_without_eos_a_target_scores_its_own_tokens_only(tiny, path):
    model, params = tiny
    tokenizer = CharTokenizer()
    inputs = ["The user watched: Heat; Casino. What comes next?", "short"]
    targets = [["Toy Story", "Jumanji", "Heat"], ["x", "a considerably longer candidate title", "zz"]]
    config = ranking.ScoringConfig(batch_size=4, shared_path=path, score_eos=False)
    scorer = ranking.CandidateScorer(model, params, tokenizer, config)
    shared = scorer.log_likelihoods(inputs, targets)
    with_eos = ranking.CandidateScorer(
        model, params, tokenizer, ranking.ScoringConfig(batch_size=4, shared_path=path)
    ).log_likelihoods(inputs, targets)
    for text, cands, (sums, counts), (eos_sums, _) in zip(inputs, targets, shared, with_eos):
        assert list(counts) == [len(c) for c in cands]
        enc = np.zeros((len(cands), 64), np.int32)
        enc[:, : len(text) + 1] = ranking.tokenize(tokenizer, text, None)
        dec = np.zeros((len(cands), 64), np.int32)
        for row, c in enumerate(cands):
            dec[row, : len(c)] = tokenizer.encode(c)  # no EOS
        reference = np.asarray(ranking.full_pass_scores(model, params, enc, dec))
        np.testing.assert_allclose(sums, reference, rtol=1e-6, atol=1e-5)
        assert np.all(sums > eos_sums + 1e-4)  # the EOS term, a real log-probability, is gone
    with pytest.raises(ValueError, match="no tokens to score"):
        scorer.log_likelihoods(["x"], [[""]])


@pytest.mark.parametrize("path", ["packed_candidates", "repeated_encoder"])
def test_an_ensemble_scores_the_mean_of_its_members_log_likelihoods(tiny, path):
    model, params = tiny
    other = random_params(model, 1)
    config = ranking.ScoringConfig(batch_size=4, shared_path=path)
    inputs = ["The user watched: Heat; Casino. What comes next?", "short"]
    targets = [["Toy Story", "Jumanji", "Heat"], ["x", "a considerably longer candidate title", "zz"]]
    one = ranking.CandidateScorer(model, params, CharTokenizer(), config).log_likelihoods(inputs, targets)
    two = ranking.CandidateScorer(model, other, CharTokenizer(), config).log_likelihoods(inputs, targets)
    both = ranking.CandidateScorer(model, [params, other], CharTokenizer(), config)
    mean = both.log_likelihoods(inputs, targets)
    for (a, counts), (b, _), (m, mean_counts) in zip(one, two, mean):
        assert np.ptp(a - b) > 1e-3  # the members really disagree, so the mean is not either one
        np.testing.assert_allclose(m, (a + b) / 2, rtol=1e-12)
        assert list(mean_counts) == list(counts)
    full = both.log_likelihoods_full_pass(inputs, targets, batch_size=8)
    for (m, _), reference in zip(mean, full):
        np.testing.assert_allclose(m, reference, rtol=1e-6, atol=1e-5)
    # a one-member list is the single scorer; an empty one is refused
    alone = ranking.CandidateScorer(model, [params], CharTokenizer(), config).log_likelihoods(inputs, targets)
    for (a, _), (x, _) in zip(one, alone):
        np.testing.assert_array_equal(a, x)
    with pytest.raises(ValueError, match="at least one parameter tree"):
        ranking.CandidateScorer(model, [], CharTokenizer(), config)


def test_scores_use_few_compiled_shapes(tiny):
    model, params = tiny
    scorer = ranking.CandidateScorer(model, params, CharTokenizer(), ranking.ScoringConfig(batch_size=4))
    inputs = [f"input number {k} " + "x" * k for k in range(12)]  # 16..27 tokens with EOS
    targets = [["a", "bb", "ccc", "a candidate title of forty characters...", "Babe", "Heat"] for _ in inputs]
    scorer.log_likelihoods(inputs, targets)
    # 12 inputs of different lengths, one compiled shape (3 calls of 4 instructions); the same
    # shape as a group of the test above, so the module-level jit cache is hit
    assert scorer.compiled_shapes == {(4, 32, 6, 64)}


def test_input_is_trimmed_with_eos_kept_last():
    tok = CharTokenizer()
    assert ranking.tokenize(tok, "abcdef", 4) == tok.encode("abc") + [1]
    assert ranking.tokenize(tok, "ab", None) == tok.encode("ab") + [1]


def test_known_scores_sum_prefers_short_targets_and_the_bonus():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=2))
    # input starts with "h": the bonus goes to targets starting with "h"
    (out,) = scorer.score(["hello"], [["hat", "hippopotamus", "ox", "cat"]])
    sums, counts, prior, final = out
    np.testing.assert_array_equal(counts, [4, 13, 3, 4])
    np.testing.assert_allclose(sums, [-4 + 5, -13 + 5, -3, -4])
    assert prior is None
    np.testing.assert_allclose(final, sums)


def test_known_scores_mean_normalises_by_length():
    cfg = ranking.ScoringConfig(shared_path="repeated_encoder", reduction="mean", batch_size=2)
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), cfg)
    (out,) = scorer.score(["hello"], [["hat", "hippopotamus", "ox", "cat"]])
    np.testing.assert_allclose(out[3], [1 / 4, -8 / 13, -1.0, -1.0])


def test_neutral_input_prior_is_subtracted_with_its_weight():
    cfg = ranking.ScoringConfig(shared_path="repeated_encoder", prior="neutral_input", prior_weight=0.5, neutral_input="h", batch_size=2)
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), cfg)
    (out,) = scorer.score(["cow"], [["hat", "cat", "ox"]])
    sums, _, prior, final = out
    np.testing.assert_allclose(sums, [-4, -4 + 5, -3])
    np.testing.assert_allclose(prior, [-4 + 5, -4, -3])  # the neutral input "h" favours "hat"
    np.testing.assert_allclose(final, sums - 0.5 * prior)


def test_item_log_prior_uses_the_given_table():
    table = ranking.popularity_log_prior({"a": 3, "b": 1}, ["a", "b", "c"])
    assert table["a"] == pytest.approx(math.log(4 / 7))
    assert table["c"] == pytest.approx(math.log(1 / 7))
    cfg = ranking.ScoringConfig(shared_path="repeated_encoder", prior="item_log_prior", prior_weight=-1.0, batch_size=2)
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), cfg, item_log_prior=table)
    (out,) = scorer.score(["zzz"], [["xx", "yy", "ww"]], [["a", "b", "c"]])
    np.testing.assert_allclose(out[3], np.array([-3, -3, -3]) + np.log([4 / 7, 2 / 7, 1 / 7]))


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="reduction"):
        ranking.ScoringConfig(reduction="max")
    with pytest.raises(ValueError, match="prior"):
        ranking.ScoringConfig(prior="uniform")
    with pytest.raises(ValueError, match="item_log_prior"):
        ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", prior="item_log_prior"))


def test_evaluator_on_known_scores_gives_hand_computed_metrics():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=3))
    records = [
        # sum scores: hat 1, hippo -8, ox -3, cat -4 -> true "hat" ranks 1
        _record("hello", ["hat", "hippopotamus", "ox", "cat"], 0, template="A", user="u1"),
        # true "cat" (-4): above it hat (1), ox (-3) -> rank 3
        _record("hello", ["hat", "hippopotamus", "ox", "cat"], 3, template="A", user="u2"),
        # true "bb" (-3) ties with "cc" (-3): pessimistic rank 2 ("a" -2 is above both) -> rank 3
        _record("zz", ["a", "bb", "cc", "dddd"], 1, template="B", user="u3"),
    ]
    results = ranking.evaluate_scored(scorer.score_records(records))
    assert results.overall["HR@1"] == pytest.approx(1 / 3)
    assert results.overall["HR@3"] == pytest.approx(1.0)
    assert results.overall["NDCG@3"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert results.by_template["A"]["HR@1"] == pytest.approx(0.5)
    assert results.by_template["B"]["HR@1"] == 0.0
    assert results.by_template["B"]["NDCG@3"] == pytest.approx(0.5)
    assert ranking.best_template(results, "NDCG@3") == "A"
    expected = ranking.evaluate_scored(scorer.score_records(records), tie_rule="expected")
    assert expected.by_template["B"]["NDCG@3"] == pytest.approx((1 / math.log2(3) + 0.5) / 2)


def test_length_bias_flips_the_winner_between_sum_and_mean():
    records = [_record("q", ["ab", "qrstuvwxyz"], 1)]
    summed = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=1))
    mean = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", reduction="mean", batch_size=1))
    # sum: ab = -3, qrst.. = -11 + 5 = -6 -> the short wrong one wins; mean: -1 vs -6/11 -> true wins
    assert ranking.evaluate_scored(summed.score_records(records)).overall["HR@1"] == 0.0
    assert ranking.evaluate_scored(mean.score_records(records)).overall["HR@1"] == 1.0


def test_best_template_breaks_ties_by_id():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=2))
    records = [_record("h", ["hat", "cat"], 0, template="t9"), _record("h", ["hat", "cat"], 0, template="t2")]
    assert ranking.best_template(ranking.evaluate_scored(scorer.score_records(records))) == "t2"


def _grouped_records():
    # 3 groups of 3 for one example; the true item "hx" is in group 1 at index 2
    groups = [["aaaa", "bbbbb", "cccccc"], ["dd", "eeeee", "hx"], ["ffff", "g", "iiiiii"]]
    recs = []
    for g, targets in enumerate(groups):
        label = 2 if g == 1 else -1
        cands = tuple(targets)
        recs.append(_record("hello", targets, label, candidates=cands, example_id=f"test/x_neg99/u/5/t1/g{g:02d}"))
    return recs


def test_pooled_protocol_ranks_all_groups_together():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=3))
    scored = scorer.score_records(_grouped_records())
    # scores: aaaa -5 bbbbb -6 cccccc -7 | dd -3 eeeee -6 hx -3+5=2 | ffff -5 g -2 iiiiii -7
    m = ranking.rank_groups(scored, protocol="pooled")
    assert m["HR@1"] == 1.0 and m.num_examples == 1 and m.num_candidates == (9,)


def test_grouped_protocol_reranks_group_winners():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=3))
    scored = scorer.score_records(_grouped_records())
    example = ranking.collect_groups(scored)[0]
    assert example.key == "test/x_neg99/u/5/t1" and example.label_index == 5
    winners = ranking.group_winners(example)
    assert winners == ["aaaa", "hx", "g"]
    seen = []

    def rerank(ex, wins):
        seen.append(list(wins))
        # a final round that puts "g" first, the true item second
        return ranking.ScoredCandidates(ex.key + "/final", tuple(wins), wins.index("hx"), np.zeros(3), np.ones(3),
                                        None, np.array([0.0, 1.0, 2.0]))

    m = ranking.rank_groups(scored, protocol="groups", rerank=rerank)
    assert seen == [["aaaa", "hx", "g"]]
    assert m["HR@1"] == 0.0 and m["HR@3"] == 1.0
    assert m["NDCG@3"] == pytest.approx(1 / math.log2(3))


def test_true_item_eliminated_in_its_group_misses_every_cutoff():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=3))
    recs = _grouped_records()
    # make the true item long so that "dd" wins group 1
    recs[1] = _record("hello", ["dd", "eeeee", "xxxxxxxxx"], 2, candidates=("dd", "eeeee", "xxxxxxxxx"),
                      example_id="test/x_neg99/u/5/t1/g01")
    scored = scorer.score_records(recs)

    def rerank(ex, wins):
        return ranking.ScoredCandidates(ex.key, tuple(wins), -1, np.zeros(3), np.ones(3), None, np.array([2.0, 1.0, 0.0]))

    m = ranking.rank_groups(scored, protocol="groups", rerank=rerank)
    assert m["HR@5"] == 0.0 and m["NDCG@5"] == 0.0


def test_group_winner_ties_go_against_the_true_item_unless_optimistic():
    s = ranking.ScoredCandidates("e/g00", ("a", "b"), 1, np.zeros(2), np.ones(2), None, np.array([1.0, 1.0]))
    ex = ranking.GroupedExample("e", (s,))
    assert ranking.group_winners(ex, "pessimistic") == ["a"]
    assert ranking.group_winners(ex, "optimistic") == ["b"]


def test_records_without_a_true_item_are_refused_by_the_plain_evaluator():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=3))
    scored = scorer.score_records(_grouped_records())
    with pytest.raises(ValueError, match="rank_groups"):
        ranking.evaluate_scored(scored)


def test_prior_weight_is_calibrated_on_validation_records():
    """Three instructions whose true item is the popular one in two: a negative weight (adding log
    popularity) ranks them first; the likelihood alone gets one right. Ties go to the weight nearest 0."""
    def rec(key, label, ll, prior):
        ll, prior = np.array(ll), np.array(prior)
        return ranking.ScoredCandidates(key, ("a", "b", "c"), label, ll, np.full(3, 2), prior, ll.copy())

    valid = [rec("u1", 0, [-1.0, -0.5, -3.0], [-1.0, -4.0, -4.0]),
             rec("u2", 2, [-2.0, -2.2, -2.1], [-4.0, -4.0, -1.0]),
             rec("u3", 1, [-2.0, -1.0, -3.0], [-3.0, -2.0, -3.0])]
    weight, values = ranking.calibrate_prior_weight(valid, [0.0, -0.5, -1.0, 1.0], "sum", metric="HR@1")
    assert weight == -0.5  # -0.5 and -1.0 both reach HR@1 = 1: the one nearer 0 wins
    assert values == {0.0: pytest.approx(1 / 3), -0.5: 1.0, -1.0: 1.0, 1.0: 0.0}
    rescored = ranking.reweighted(valid, -0.5, "sum")
    np.testing.assert_allclose(rescored[0].scores, [-1.5, -2.5, -5.0])
    np.testing.assert_allclose(ranking.reweighted(valid, 0.0, "mean")[1].scores, [-1.0, -1.1, -1.05])
    with pytest.raises(ValueError):
        ranking.calibrate_prior_weight(valid, [], "sum")


def test_bucket_step_bounds_the_padding_of_long_inputs():
    assert ranking.bucket_length(20, 16) == 32  # powers of two first
    assert ranking.bucket_length(132, 32) == 192  # then multiples of 64 by default
    assert ranking.bucket_length(132, 32, 16) == 144
    with pytest.raises(ValueError, match="bucket_step"):
        ranking.ScoringConfig(bucket_step=0)


def _listed(text: str, head: str, tail: str) -> list[str]:
    """The candidate list an input shows between `head` and `tail`."""
    assert text.startswith(head) and text.endswith(tail)
    return text[len(head):len(text) - len(tail)].split("; ")


ITEM_TEXTS = {"a": "hat", "b": "ox", "c": "cat", "d": "gnu"}


def test_candidate_orders_average_the_known_scores_over_shuffled_lists():
    """KnownScoreModel gives +5 to the candidate whose first character starts the input, i.e. the
    candidate listed first: with K orders a candidate's score is -(tokens) + 5 * (share of the K
    inputs that list it first), and every input is the shown one with its list permuted."""
    ids = ("a", "b", "c", "d")
    targets = [ITEM_TEXTS[i] for i in ids]
    head, tail = "", ". Which one next?"
    record = _record(head + "; ".join(targets) + tail, targets, 2, candidates=ids)
    cfg = ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=3, candidate_orders=6)
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), cfg, item_texts=ITEM_TEXTS)
    pairs = scorer.candidate_orders_of(record)
    assert len(pairs) == 6 and pairs[0][0] == record.inputs and list(pairs[0][1]) == [0, 1, 2, 3]
    for text, order in pairs:  # each input lists the candidates in its order, nothing else changed
        assert _listed(text, head, tail) == [targets[k] for k in order]
        assert sorted(order) == [0, 1, 2, 3]
    assert len({tuple(order) for _, order in pairs}) > 2  # really shuffled
    firsts = [targets[order[0]] for _, order in pairs]
    (scored,) = scorer.score_records([record])
    expected = [-(len(t) + 1) + 5 * firsts.count(t) / 6 for t in targets]
    np.testing.assert_allclose(scored.log_likelihood, expected, rtol=1e-12)
    np.testing.assert_array_equal(scored.num_tokens, [len(t) + 1 for t in targets])
    assert scored.candidates == ids and scored.label_index == 2  # the record's order and label kept
    # the shown order alone: the bonus all on "hat"
    alone = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), dataclasses.replace(
        cfg, candidate_orders=1)).score_records([record])[0]
    np.testing.assert_allclose(alone.log_likelihood, [-4 + 5, -3, -4, -4])
    # a pure function of the seed and the text: the same orders alone or beside other records,
    # other orders with another seed
    other = _record("so far: ox. " + "; ".join(targets[:2]) + "?", targets[:2], 0, candidates=ids[:2],
                    user="v")
    batch = scorer.score_records([other, record])
    np.testing.assert_array_equal(batch[1].log_likelihood, scored.log_likelihood)
    reseeded = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(),
                                       dataclasses.replace(cfg, candidate_order_seed=1), item_texts=ITEM_TEXTS)
    assert [list(o) for _, o in reseeded.candidate_orders_of(record)] != [list(o) for _, o in pairs]
    assert scorer.order_counts == {"reordered": 3, "once": 0}  # what the evaluator reports


def test_candidate_orders_leave_records_without_a_list_alone_and_refuse_a_missing_one():
    cfg = ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=2, candidate_orders=4)
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), cfg, item_texts=ITEM_TEXTS)
    # a matching instruction (T2: no candidate list in the input) is scored once
    matching = dataclasses.replace(_record("so far: x; y. next?", ["hat", "ox"], 0, candidates=("a", "b")),
                                   instruction_type="p1_i0_t2")
    (out,) = scorer.score_records([matching])
    np.testing.assert_allclose(out.log_likelihood, [-4, -3])
    assert scorer.order_counts == {"reordered": 0, "once": 1}
    # a listing type whose input does not show its list: a clear error naming the record
    broken = _record("pick one of: hat, ox", ["hat", "ox"], 0, candidates=("a", "b"), example_id="test/x/1")
    with pytest.raises(ValueError, match="test/x/1: candidate list text not found"):
        scorer.score_records([broken])
    with pytest.raises(ValueError, match="candidate_orders must be >= 1"):
        ranking.ScoringConfig(candidate_orders=0)
    with pytest.raises(ValueError, match="needs item_texts"):
        ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), cfg)


@pytest.mark.parametrize("path", ["packed_candidates", "repeated_encoder"])
def test_candidate_orders_of_the_real_model_are_the_mean_over_its_shuffled_inputs(tiny, path):
    """The real model, with targets that are not the listed texts (a template whose answer
    wraps the item): the mean, per candidate, of its scores under each re-listed input."""
    model, params = tiny
    texts = {"a": "Toy Story", "b": "Jumanji", "c": "Heat", "d": "GoldenEye", "e": "Babe"}
    ids = tuple(texts)
    targets = [f"So the next item is: {texts[i]}" for i in ids]
    record = _record("Watched: Casino; Nixon. Candidates: " + "; ".join(texts.values()) + ". Which next?",
                     targets, 1, candidates=ids)
    plain = ranking.CandidateScorer(model, params, CharTokenizer(), ranking.ScoringConfig(batch_size=4, shared_path=path))
    scorer = ranking.CandidateScorer(model, params, CharTokenizer(), ranking.ScoringConfig(
        batch_size=4, shared_path=path, candidate_orders=3), item_texts=texts)
    pairs = scorer.candidate_orders_of(record)
    each = plain.log_likelihoods([text for text, _ in pairs], [targets] * 3)  # record order throughout
    (scored,) = scorer.score_records([record])
    np.testing.assert_allclose(scored.log_likelihood, np.mean([s for s, _ in each], axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(scored.num_tokens, each[0][1])
    # the order matters to the model, so the mean is not the shown order's
    assert np.max(np.abs(scored.log_likelihood - each[0][0])) > 1e-4
