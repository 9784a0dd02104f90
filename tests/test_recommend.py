"""`instructrec recommend`: instruction type from what was given, candidate sources, known-score
ranking, and the command end to end on a small prepared dataset with a random checkpoint."""

import dataclasses
import types

import numpy as np
import pytest

from baseline_fixtures import markov_splits
from instructrec_jax import ranking, recommend
from instructrec_jax.data.types import UserSequence
from ranking_fixtures import CharTokenizer, KnownScoreModel, tiny_model_and_params


def _data():
    s = markov_splits(num_users=10, num_items=30, length=12)
    sequences = [UserSequence(u, seq, tuple(range(len(seq)))) for u, seq in sorted(s.sequences.items())]
    items = {i: types.SimpleNamespace(title=TEXTS[i]) for i in s.catalogue}
    return types.SimpleNamespace(name="toy", items=items, sequences=sequences, train=s.train)


TEXTS = {f"i{k:03d}": f"Film {'x' * (k % 7)}{k}" for k in range(30)}


def test_instruction_type_follows_what_was_given():
    r = recommend.Request
    assert recommend.instruction_types(r(("i1",), ("A",))) == ("p1_i0_t3", "p1_i0_t2")
    assert recommend.instruction_types(r(("i1",), ("A",), request="a light comedy")) == ("p1_i1_t3", "p1_i1_t2")
    assert recommend.instruction_types(r(("i1",), ("A",), query="comedy, 1990s")) == ("p1_i2_t3", "p1_i2_t2")
    assert recommend.instruction_types(r(("i1",), ("A",), preference="loves noir")) == ("p1p2_i0_t3", None)
    assert recommend.instruction_types(r(query="space opera")) == ("p0_i2_t3", "p0_i2_t2")
    assert recommend.instruction_types(r(request="something calm")) == ("p0_i1_t3", None)
    with pytest.raises(ValueError, match="nothing to recommend"):
        recommend.instruction_types(r())
    with pytest.raises(ValueError, match="not both"):
        recommend.instruction_types(r(("i1",), ("A",), request="x", query="y"))


def test_instruction_lists_history_request_and_candidates():
    request = recommend.Request(("i001",), ("Heat", "Casino"), request="a light comedy")
    inputs, template = recommend.build_instruction("p1_i1_t3", request, ["Up", "Her"])
    for text in ("Heat", "Casino", "a light comedy", "Up", "Her"):
        assert text in inputs
    assert template.instruction_type == "p1_i1_t3"


def test_request_from_a_user_or_typed_titles():
    data = _data()
    user = data.sequences[0]
    req = recommend.request_from_args(data, TEXTS, user=user.user_id, history=None, max_history=5)
    assert req.history_ids == user.item_ids[-5:]
    assert req.history_texts == tuple(TEXTS[i] for i in user.item_ids[-5:])
    typed = recommend.request_from_args(data, TEXTS, user=None, history=f"{TEXTS['i003'].upper()}; Unknown Film")
    assert typed.history_ids == ("i003",) and typed.history_texts == (TEXTS["i003"], "Unknown Film")
    with pytest.raises(ValueError, match="unknown user"):
        recommend.request_from_args(data, TEXTS, user="nobody", history=None)


def test_typed_titles_become_id_tokens_when_the_model_reads_id_tokens():
    data = _data()
    id_texts = {i: f"<item_{i}>" for i in TEXTS}
    typed = recommend.request_from_args(data, id_texts, user=None, history=f"{TEXTS['i004']};  unknown")
    assert typed.history_ids == ("i004",) and typed.history_texts == ("<item_i004>", "unknown")
    ranked = [recommend.Recommendation(1, "i004", "<item_i004>", -0.5, -0.5)]
    table = recommend.format_table(ranked, {"i004": TEXTS["i004"]})
    assert table.splitlines()[-1] == f"| 1 | i004 | <item_i004> | -0.5000 | -0.5000 | {TEXTS['i004']} |"


def test_candidate_sources():
    data = _data()
    req = recommend.Request(("i000", "i001"), ("a", "b"))
    pool = recommend.candidate_pool("catalogue", data, req)
    assert len(pool) == 28 and "i000" not in pool
    assert len(recommend.candidate_pool("catalogue", data, req, include_seen=True)) == 30
    assert recommend.candidate_pool("list:i005, i002", data, req) == ["i005", "i002"]
    with pytest.raises(ValueError, match="unknown item ids"):
        recommend.candidate_pool("list:i005,zzz", data, req)
    top = recommend.candidate_pool("baseline:popularity:4", data, req)
    assert len(top) == 4 and not {"i000", "i001"} & set(top)
    with pytest.raises(ValueError, match="baseline:NAME:N"):
        recommend.candidate_pool("baseline:sasrec", data, req)


def test_ranking_by_known_scores_with_listed_and_catalogue_wide_instructions():
    scorer = ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=4))
    seen = []
    original = scorer.score

    def spy(inputs, targets, items=None, orders=None):
        assert orders is None  # one order unless asked for
        seen.append(list(inputs))
        return original(inputs, targets, items, orders)

    scorer.score = spy
    req = recommend.Request(("i000",), ("Heat",))
    cands = ["i012", "i001", "i007", "i003"]  # texts: 6, 2, 0 and 4 x's -> shortest first
    ranked = recommend.rank_items(scorer, req, cands, TEXTS, list_max=20, top=3)
    assert [r.item_id for r in ranked] == ["i007", "i001", "i003"]
    assert [r.rank for r in ranked] == [1, 2, 3]
    want = -(len(TEXTS["i007"]) + 1)
    assert ranked[0].score == pytest.approx(want) and ranked[0].log_likelihood == pytest.approx(want)
    assert len(seen[-1]) == 1 and TEXTS["i012"] in seen[-1][0]  # one T3 instruction listing them
    # more candidates than list_max: one matching (T2) instruction that lists none of them
    ranked = recommend.rank_items(scorer, req, sorted(TEXTS), TEXTS, list_max=5, top=None)
    assert len(ranked) == 30 and len(seen[-1]) == 1 and TEXTS["i012"] not in seen[-1][0]
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    # no T2 type for history + preference: consecutive T3 instructions of list_max, pooled
    pref = recommend.Request(("i000",), ("Heat",), preference="likes short titles")
    ranked = recommend.rank_items(scorer, pref, sorted(TEXTS)[:12], TEXTS, list_max=5, top=None)
    assert len(seen[-1]) == 3 and len(ranked) == 12


def test_candidate_orders_score_each_item_by_its_mean_over_re_listed_instructions():
    """--candidate-orders K: each listing instruction is rebuilt with its list shuffled K - 1 times;
    an item's log-likelihood is the mean of its scores under the K instructions (the real tiny
    model, for which the order matters); a matching (T2) instruction is scored once."""
    model, params = tiny_model_and_params()
    config = ranking.ScoringConfig(batch_size=4, candidate_orders=3, candidate_order_seed=5)
    scorer = ranking.CandidateScorer(model, params, CharTokenizer(), config, item_texts=TEXTS)
    plain = ranking.CandidateScorer(model, params, CharTokenizer(), ranking.ScoringConfig(batch_size=4))
    req = recommend.Request(("i000",), ("Heat",))
    cands = ["i012", "i001", "i007", "i003"]
    ranked = recommend.rank_items(scorer, req, cands, TEXTS, list_max=20, top=None)
    shown, _ = recommend.build_instruction("p1_i0_t3", req, [TEXTS[c] for c in cands])
    pairs = recommend.listing_orders(config, "p1_i0_t3", req, shown, [TEXTS[c] for c in cands])
    assert len(pairs) == 3 and pairs[0][0] == shown
    for text, order in pairs[1:]:
        assert sorted(order.tolist()) == [0, 1, 2, 3]
        assert text == recommend.build_instruction("p1_i0_t3", req, [TEXTS[cands[k]] for k in order])[0]
    assert len({text for text, _ in pairs}) > 1
    targets = [TEXTS[c] for c in cands]
    each = plain.log_likelihoods([text for text, _ in pairs], [targets] * 3)
    mean = np.mean([sums for sums, _ in each], axis=0)
    got = {r.item_id: r.log_likelihood for r in ranked}
    np.testing.assert_allclose([got[c] for c in cands], mean, rtol=1e-6, atol=1e-6)
    assert max(abs(got[c] - each[0][0][k]) for k, c in enumerate(cands)) > 1e-4  # not the shown order's
    assert [r.item_id for r in ranked] == [cands[k] for k in np.argsort(-mean, kind="stable")]
    # seeded: the same ranking again, another seed other orders
    again = recommend.rank_items(scorer, req, cands, TEXTS, list_max=20, top=None)
    assert [(r.item_id, r.log_likelihood) for r in again] == [(r.item_id, r.log_likelihood) for r in ranked]
    other = dataclasses.replace(config, candidate_order_seed=6)
    assert [t for t, _ in recommend.listing_orders(other, "p1_i0_t3", req, shown, targets)] != [t for t, _ in pairs]
    # more candidates than list_max: one matching instruction, scored once, as with one order
    wide = recommend.rank_items(scorer, req, sorted(TEXTS)[:8], TEXTS, list_max=5, top=None)
    once = recommend.rank_items(plain, req, sorted(TEXTS)[:8], TEXTS, list_max=5, top=None)
    assert [r.item_id for r in wide] == [r.item_id for r in once]
    assert [r.log_likelihood for r in wide] == pytest.approx([r.log_likelihood for r in once], rel=1e-6)


def test_command_end_to_end(tmp_path_factory, capsys):
    from fixture_files import write_ml100k
    from instructrec_jax import prepare as prepare_module
    from instructrec_jax.checkpoints.hf import save_hf_checkpoint

    raw = write_ml100k(tmp_path_factory.mktemp("raw"), extra_users=160, extra_items=150)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_module, "VOCAB_SAMPLE_RECORDS", 300)
        path = prepare_module.prepare("ml-100k", raw, tmp_path_factory.mktemp("prepared"), name="rec",
                                      vocab_size=400, types=["p1_i0_t3"], max_train_examples_per_type=50,
                                      log=lambda m: None)
    model, params = tiny_model_and_params()
    checkpoint = tmp_path_factory.mktemp("ckpt") / "hf"
    save_hf_checkpoint(model.config, params, checkpoint)
    code = recommend.main(["--checkpoint", str(checkpoint), "--dataset", str(path), "--user", "1000",
                           "--candidates", "baseline:popularity:8", "--top", "5", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 5
    import json

    rows = [json.loads(line) for line in out]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    code = recommend.main(["--checkpoint", str(checkpoint), "--dataset", str(path), "--candidates", "catalogue"])
    assert code == 1 and "nothing to recommend" in capsys.readouterr().err

    # --checkpoint twice: an ensemble, every item's log-likelihood the mean of the two models'
    from ranking_fixtures import random_params

    other = tmp_path_factory.mktemp("ckpt") / "hf_b"
    save_hf_checkpoint(model.config, random_params(model, 1), other)
    by_run = {}
    for name, checkpoints in (("a", [checkpoint]), ("b", [other]), ("ab", [checkpoint, other])):
        flags = [f for c in checkpoints for f in ("--checkpoint", str(c))]
        assert recommend.main([*flags, "--dataset", str(path), "--user", "1000",
                               "--candidates", "baseline:popularity:8", "--top", "8", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        by_run[name] = {r["item_id"]: r["log_likelihood"] for r in rows}
    assert len(by_run["ab"]) == 8 and set(by_run["ab"]) == set(by_run["a"]) == set(by_run["b"])
    for item, value in by_run["ab"].items():
        assert value == pytest.approx((by_run["a"][item] + by_run["b"][item]) / 2, rel=1e-6)
    assert any(abs(by_run["a"][i] - by_run["b"][i]) > 1e-3 for i in by_run["ab"])  # two different models
    # --without-eos: each item's log-likelihood loses its (negative) EOS term, nothing else
    assert recommend.main(["--checkpoint", str(checkpoint), "--dataset", str(path), "--user", "1000",
                           "--candidates", "baseline:popularity:8", "--top", "8", "--json",
                           "--without-eos"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert {r["item_id"] for r in rows} == set(by_run["a"])
    assert all(r["log_likelihood"] > by_run["a"][r["item_id"]] + 1e-4 for r in rows)
    missing = str(tmp_path_factory.mktemp("none") / "missing")
    assert recommend.main(["--checkpoint", str(checkpoint), "--checkpoint", missing, "--dataset", str(path),
                           "--user", "1000", "--candidates", "baseline:popularity:8"]) == 1
    assert f"checkpoint 1 of the ensemble ({missing}):" in capsys.readouterr().err
    # --candidate-orders: the same 8 items, each scored over 3 orders of the list (other values)
    assert recommend.main(["--checkpoint", str(checkpoint), "--dataset", str(path), "--user", "1000",
                           "--candidates", "baseline:popularity:8", "--top", "8", "--json",
                           "--candidate-orders", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert {r["item_id"] for r in rows} == set(by_run["a"])
    assert any(abs(r["log_likelihood"] - by_run["a"][r["item_id"]]) > 1e-4 for r in rows)
    assert recommend.main(["--checkpoint", str(checkpoint), "--dataset", str(path), "--user", "1000",
                           "--candidates", "baseline:popularity:8", "--candidate-orders", "0"]) == 1
    assert "candidate_orders must be >= 1" in capsys.readouterr().err
