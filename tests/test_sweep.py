"""tools/sweep.py: its bundle is the SeqIO task's tokens, its scores are the evaluator's."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from instructrec_jax.instructions import storage

from fixture_files import prepare_id_token_ml100k

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import sweep  # noqa: E402


def test_export_refuses_bad_shapes_before_reading_anything(tmp_path):
    for shapes, message in (('[{"width": 3}]', "unknown keys \\['width'\\]"), ('{"d_model": 64}', "a JSON list")):
        with pytest.raises(SystemExit, match=message):
            sweep.main(["export", "--data-dir", str(tmp_path / "missing"), "--dataset", "none",
                        "--shapes", shapes, "--out", str(tmp_path / "b.npz")])


def test_committed_screen_configs_use_known_keys_and_misspelt_ones_are_refused():
    committed = sorted(Path(sweep.__file__).parent.glob("sweep_issue6*.json"))
    assert len(committed) >= 4, committed  # the first and second screens and the next one
    for path in committed:
        sweep.check_configs(json.loads(path.read_text()))
    with pytest.raises(SystemExit, match="config 1 \\('b'\\): unknown keys \\['dropuot'\\]"):
        sweep.check_configs([{"name": "a", "lr": 0.01}, {"name": "b", "dropuot": 0.1}])
    with pytest.raises(SystemExit, match="a JSON list of objects"):
        sweep.check_configs({"name": "a"})
    for bad in (0, 2.5, "4", True):
        with pytest.raises(SystemExit, match="config 0 \\('k'\\): candidate_orders must be an integer >= 1"):
            sweep.check_configs([{"name": "k", "candidate_orders": bad}])


def test_shards_split_the_configs_without_overlap_and_bad_shards_are_refused():
    configs = [{"name": str(i)} for i in range(7)]
    shards = [sweep.shard_configs(configs, (i, 3)) for i in range(3)]
    assert [[c["name"] for c in s] for s in shards] == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert sweep.shard_configs(configs, sweep.parse_shard("0/1")) == configs
    for bad in ("3/3", "-1/2", "1", "a/b"):
        with pytest.raises(Exception, match="I/N"):
            sweep.parse_shard(bad)


def test_ranking_metrics_rank_ties_pessimistically():
    scores = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    result = sweep.ranking_metrics(scores, np.array([0, 0, 0]))
    assert result["HR@1"] == pytest.approx(1 / 3)  # the tie puts the first row's item second
    assert result["NDCG@5"] == pytest.approx((1 / np.log2(3) + 1 + 1 / np.log2(4)) / 3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_id_token_ml100k(tmp_path_factory, "sweep", extra_users=40, extra_items=60,
                                   max_train_examples=120, train_passes=2)


@pytest.fixture(scope="module")
def bundle(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle.npz"
    sweep.main(["export", "--data-dir", str(prepared.parent), "--dataset", prepared.name,
                "--seeds", "0", "--lengths", "160/4", "--shapes", '[{"d_model": 64, "d_kv": 16}]',
                "--out", str(out)])
    return np.load(out)


def test_export_holds_the_tasks_tokens_and_both_passes(prepared, bundle):
    from instructrec_jax import data_pipeline  # noqa: F401  (registers the tasks)
    from instructrec_jax.vocabulary import load_vocabulary

    vocab = load_vocabulary(prepared / "spiece.model")
    train = list(storage.read_instructions(prepared, "p1_i0_t3", "train"))
    assert len(bundle["train_inputs"]) == len(train) == 240
    assert sorted(np.unique(bundle["train_pass"]).tolist()) == [0, 1]
    first = [t for t in bundle["train_inputs"][0].tolist() if t]
    assert first == list(vocab.encode(train[0].inputs)) + [1]  # tokens then EOS, 0-padded
    test = list(storage.read_instructions(prepared, "p1_i0_t3", "test"))
    labels = bundle["test_labels"]
    assert labels.tolist() == [r.label_index for r in test]
    true_ids = bundle["test_candidates"][np.arange(len(labels)), labels]
    assert true_ids.tolist() == [vocab.encode(r.targets)[0] for r in test]
    assert len(np.unique(bundle["test_template"])) == 3
    assert int(bundle["vocab_size"]) == 768  # 600 pieces + 100 sentinels, padded to 128


def test_scores_equal_the_evaluators_and_a_short_run_reports_metrics(prepared, bundle):
    import jax
    import jax.numpy as jnp

    from instructrec_jax.ranking import CandidateScorer, ScoringConfig
    from instructrec_jax.vocabulary import load_vocabulary

    init = {k.split("/", 1)[1]: bundle[k] for k in bundle.files if k.startswith("init0/")}
    params = jax.tree_util.tree_map(jnp.asarray, sweep._unflatten(init))
    model = sweep._model({}, 768)
    ours = sweep.candidate_scores(model, params, bundle["test_inputs"][:20],
                                  bundle["test_candidates"][:20], batch=8)
    records = list(storage.read_instructions(prepared, "p1_i0_t3", "test"))[:20]
    scorer = CandidateScorer(model, params, load_vocabulary(prepared / "spiece.model"),
                             ScoringConfig(max_input_length=160, max_target_length=4))
    reference = np.array([s.log_likelihood for s in scorer.score_records(records)])
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)

    result = sweep.run_config({"name": "t", "steps": 4, "batch": 8, "passes": 2, "dropout": 0.1},
                              bundle, log=lambda _: None)
    assert result["examples"] == 32 and result["distinct_training_records"] == 240
    for key in ("HR@1", "NDCG@5", "HR@1_all_templates", "HR@1_likelihood", "valid_HR@1",
                "valid_NDCG@5"):
        assert 0.0 <= result[key] <= 1.0
    assert result["prior_weight"] in sweep.PRIOR_GRID
    json.dumps(result)  # a JSON line
    assert sweep._model({"label_smoothing": 0.1}, 768).label_smoothing == 0.1
    narrow = sweep.run_config({"name": "narrow", "steps": 2, "batch": 8, "d_model": 64, "d_kv": 16},
                              bundle, log=lambda _: None)
    assert 0.0 <= narrow["HR@1"] <= 1.0
    init = {k: bundle[k] for k in bundle.files if k.startswith(sweep.init_prefix(0, sweep.shape_of(
        {"d_model": 64, "d_kv": 16})))}
    assert {v.shape for k, v in init.items() if k.endswith("token_embedder/embedding")} == {(768, 64)}
    with pytest.raises(SystemExit, match="no initial parameters.*--shapes '\\[\\{\"d_model\": 256\\}\\]'"):
        sweep.run_config({"name": "wide", "steps": 1, "d_model": 256}, bundle)
    with pytest.raises(SystemExit, match="no initial parameters for seed 7"):
        sweep.run_config({"name": "seed", "steps": 1, "seed": 7}, bundle)


def test_several_steps_per_call_train_the_same_steps_as_one_per_call(bundle):
    """--steps-per-call K (lax.scan over K batches) = K separate calls: same parameters after 7
    steps (two calls of 3, then one step), dropout included, and evaluation points honoured."""
    import jax

    config = {"name": "k", "steps": 7, "batch": 8, "dropout": 0.1, "lr": 0.01}
    states = {}
    for k in (1, 3):
        out = []
        sweep.run_config(config, bundle, log=lambda _: None, steps_per_call=k, final_state=out)
        states[k] = out[0]
    assert int(states[1].step) == int(states[3].step) == 7
    for a, b in zip(jax.tree_util.tree_leaves(states[1].params), jax.tree_util.tree_leaves(states[3].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    curve = sweep.run_config({**config, "steps": 6, "eval_every": 4}, bundle, log=lambda _: None,
                             steps_per_call=3)["curve"]
    assert [point["step"] for point in curve] == [4]  # 3 + 1 steps, evaluated, then 2 single steps
    with pytest.raises(SystemExit):
        sweep.main(["run", "--bundle", "unused.npz", "--configs", "[]", "--steps-per-call", "0"])


def test_candidate_orders_move_only_the_listed_candidates_and_keep_ambiguous_rows():
    enc = np.array([[5, 10, 7, 11, 7, 12, 1, 0],
                    [5, 10, 7, 10, 7, 12, 1, 0]])  # row 1 lists item 10 twice: left as shown
    cands = np.array([[11, 10, 12], [10, 12, 13]])
    orders, kept = sweep.candidate_orders(enc, cands, 6, seed=3)
    assert kept == 1 and len(orders) == 6
    assert orders[0] is enc  # the first order is the shown list itself
    listed = [1, 3, 5]
    seen = set()
    for k, copy in enumerate(orders):
        np.testing.assert_array_equal(np.delete(copy[0], listed), np.delete(enc[0], listed))
        assert sorted(copy[0, listed].tolist()) == [10, 11, 12]
        np.testing.assert_array_equal(copy[1], enc[1])
        seen.add(tuple(copy[0, listed].tolist()))
    assert len(seen) > 1  # some copies really are reordered
    again, _ = sweep.candidate_orders(enc, cands, 6, seed=3)
    assert all((a == b).all() for a, b in zip(orders, again))  # seeded
    other, _ = sweep.candidate_orders(enc, cands, 6, seed=4)
    assert any((a != b).any() for a, b in zip(orders, other))


def test_copy_head_and_candidate_orders_run_and_report_the_shown_order_beside(bundle):
    _, kept = sweep.candidate_orders(bundle["test_inputs"], bundle["test_candidates"], 2)
    assert kept == 0  # the prepared lists name every candidate once
    config = {"name": "ptr", "steps": 3, "batch": 8, "lr": 0.01, "pointer_generator": True}
    out = []
    shown = sweep.run_config(config, bundle, log=lambda _: None, final_state=out)
    assert set(out[0].params["pointer"]) == {"query", "key", "gate"}  # the copy head, from the seed
    assert "one_order" not in shown and shown["unshuffled"] == {}
    four = sweep.run_config({**config, "candidate_orders": 4}, bundle, log=lambda _: None)
    assert four["unshuffled"] == {"validation": 0, "test": 0}
    for key in ("HR@1", "NDCG@5", "valid_HR@1", "valid_NDCG@5", "prior_weight"):
        assert four["one_order"][key] == shown[key]  # the same training, scored on the shown list
    model = sweep._model(config, int(bundle["vocab_size"]))
    enc, cands = bundle["test_inputs"][:16], bundle["test_candidates"][:16]
    first, second = (sweep.candidate_scores(model, out[0].params, e, cands, batch=8)
                     for e in sweep.candidate_orders(enc, cands, 2)[0])
    assert not np.allclose(first, second)  # the copy head's scores depend on the list's order
