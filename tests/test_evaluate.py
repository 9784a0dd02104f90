"""The evaluation run on a small prepared dataset: same candidates for every method, known-score
LLM figures, hard negatives, the 99-negative protocols, the outputs and the gin entry."""

import json

import numpy as np
import pytest

from fixture_files import write_ml100k
# `infer` registers gin configurables on import, which gin refuses once an earlier test's `main` has
# locked the config: import it here, not inside the test (the file then passes on its own too).
from instructrec_jax import baselines, evaluate, infer, metrics, ranking
from instructrec_jax.baselines.popularity import fit_popularity
from instructrec_jax.instructions.format import SCENARIOS, neg99_name
from ranking_fixtures import CharTokenizer, KnownScoreModel

FAST_BASELINES = ("popularity", "itemknn")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from instructrec_jax import prepare as prepare_module

    raw = write_ml100k(tmp_path_factory.mktemp("raw"), extra_users=160, extra_items=150)
    types = list(SCENARIOS.values()) + [neg99_name(t) for t in SCENARIOS.values()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_module, "VOCAB_SAMPLE_RECORDS", 300)
        return prepare_module.prepare("ml-100k", raw, tmp_path_factory.mktemp("prepared"), name="Tiny-ML",
                                      vocab_size=400, types=types, max_train_examples_per_type=50,
                                      log=lambda m: None)


@pytest.fixture(scope="module")
def data(prepared):
    from instructrec_jax.data.preprocess import load_prepared

    return load_prepared(prepared)


def _known_scorer(**options):
    return ranking.CandidateScorer(KnownScoreModel(), None, CharTokenizer(), ranking.ScoringConfig(shared_path="repeated_encoder", batch_size=8, **options))


def _known_scores(inputs, targets):
    """KnownScoreModel's scores by hand: -(tokens + EOS), +5 when the first characters' ids match."""
    tok = CharTokenizer()
    first = tok.encode(inputs)[0]
    return np.array([-(len(tok.encode(t)) + 1) + (5.0 if tok.encode(t)[0] == first else 0.0) for t in targets])


def test_baselines_rank_exactly_the_prepared_candidate_sets(prepared, data):
    report = evaluate.evaluate_dataset(prepared, None, evaluate.EvalConfig(baselines=FAST_BASELINES), progress=lambda m: None)
    got = report["scenarios"]["sequential"]["methods"]["popularity"]["test"]
    # the independent path: PreparedData's test examples and candidate sets
    queries = baselines.queries_from_split(data.test, data.candidates[("test", 9)])
    want = baselines.evaluate_baseline(fit_popularity(data.train), queries)
    assert got["num_examples"] == len(data.test) == want.num_examples
    for key in ("HR@1", "HR@5", "NDCG@5", "MRR"):
        assert got[key] == pytest.approx(want[key])
    # product search has its own (item-split) examples and candidate sets
    search = report["scenarios"]["product_search"]["methods"]["itemknn"]["test"]
    assert search["num_examples"] == len(data.search["test"])
    assert "instructrec" not in report["scenarios"]["sequential"]["methods"]


def test_llm_figures_equal_hand_computed_known_scores_and_best_template(prepared):
    from instructrec_jax.instructions.templates import templates_for

    config = evaluate.EvalConfig(scenarios=("sequential",), baselines=(), max_examples=12)
    report = evaluate.evaluate_dataset(prepared, _known_scorer(), config, progress=lambda m: None)
    llm = report["scenarios"]["sequential"]["methods"]["instructrec"]
    by_split = {}
    for split in ("validation", "test"):
        records = evaluate.load_records(prepared, "p1_i0_t3", split, 12)
        assert len({evaluate.example_key(r.example_id) for r in records}) == 12
        per_template = {}
        for r in records:
            per_template.setdefault(r.template_id, []).append(r)
        by_split[split] = {
            t: metrics.evaluate_rankings([_known_scores(r.inputs, r.candidate_targets) for r in rows],
                                         [r.label_index for r in rows])
            for t, rows in per_template.items()
        }
        for t, want in by_split[split].items():
            assert llm[split]["by_template"][t]["NDCG@5"] == pytest.approx(want["NDCG@5"])
            assert llm[split]["by_template"][t]["HR@1"] == pytest.approx(want["HR@1"])
        assert len(records) == 12 * len(templates_for("p1_i0_t3"))
    best = min(by_split["validation"], key=lambda t: (-by_split["validation"][t]["NDCG@5"], t))
    assert llm["best_template"] == best
    assert llm["test_best_template"]["NDCG@5"] == pytest.approx(by_split["test"][best]["NDCG@5"])
    assert evaluate.reported_test_metrics(report)["sequential"]["instructrec"] == llm["test_best_template"]


def test_hard_negatives_are_the_retrievers_top_unseen_items_for_every_method(prepared, data):
    from instructrec_jax.instructions.storage import read_item_texts

    records = evaluate.load_records(prepared, "p1_i0_t3", "test", 10)
    retriever = fit_popularity(data.train)
    hard = evaluate.hard_negative_records(records, data, retriever, read_item_texts(prepared), "test")
    interacted = {s.user_id: set(s.item_ids) for s in data.sequences}
    tests = {e.user_id: e for e in data.test}
    catalogue = sorted(data.items)
    for record in hard:
        negatives = [c for k, c in enumerate(record.candidates) if k != record.label_index]
        assert record.candidates[record.label_index] == record.target_item
        want = baselines.top_items(retriever, tests[record.user_id].history, catalogue, 9,
                                   exclude=interacted[record.user_id])
        assert negatives == [item for item, _ in want]
        assert not set(negatives) & interacted[record.user_id]
        assert record.inputs.count(record.candidate_targets[0]) >= 1  # the instruction lists the new set
    # the same example keeps one candidate set across its templates; baselines rank that set
    sets = {}
    for record in hard:
        sets.setdefault(evaluate.example_key(record.example_id), set()).add(record.candidates)
    assert all(len(v) == 1 for v in sets.values())
    queries = evaluate.baseline_queries(hard, data, "test")
    assert [q.candidates for q in queries] == [next(iter(sets[q.example_id])) for q in queries]
    report = evaluate.evaluate_dataset(
        prepared, None, evaluate.EvalConfig(scenarios=("sequential",), baselines=("popularity",),
                                            hard_negatives="popularity", max_examples=10), progress=lambda m: None)
    # popularity against its own most popular unseen items: it can only win where the true item is
    # more popular than all nine
    assert report["scenarios"]["sequential"]["methods"]["popularity"]["test"]["HR@1"] <= 0.2


def test_99_negative_groups_protocol_matches_a_hand_computed_tournament(prepared):
    from instructrec_jax.instructions.generator import candidate_groups, with_candidates
    from instructrec_jax.instructions.storage import read_item_texts

    config = evaluate.EvalConfig(scenarios=("sequential",), splits=("test",), baselines=(), negatives=99,
                                 neg99_protocol="groups", max_examples=4)
    report = evaluate.evaluate_dataset(prepared, _known_scorer(), config, progress=lambda m: None)
    got = report["scenarios"]["sequential"]["methods"]["instructrec"]["test"]["overall"]
    assert got["num_candidates"] == [100] and got["num_examples"] == 4 * 3  # 4 examples x 3 templates

    texts = read_item_texts(prepared)
    rows, labels = [], []
    for record in evaluate.load_records(prepared, neg99_name("p1_i0_t3"), "test", 4):
        winners = []
        for group in candidate_groups(record, texts):
            s = _known_scores(group.inputs, group.candidate_targets)
            best = [k for k in range(len(s)) if s[k] == s.max()]
            pick = next((k for k in best if k != group.label_index), best[0])  # ties go against the true item
            winners.append(group.candidates[pick])
        final = with_candidates(record, winners, texts)
        final_scores = dict(zip(final.candidates, _known_scores(final.inputs, final.candidate_targets)))
        rows.append(np.array([final_scores.get(c, -np.inf) for c in record.candidates]))
        labels.append(record.label_index)
    want = metrics.evaluate_rankings(rows, labels)
    for key in ("HR@1", "HR@5", "NDCG@5", "MRR"):
        assert got[key] == pytest.approx(want[key])


def test_99_negative_direct_protocol_ranks_the_listed_hundred(prepared):
    config = evaluate.EvalConfig(scenarios=("sequential",), splits=("test",), baselines=("popularity",),
                                 negatives=99, max_examples=3)
    report = evaluate.evaluate_dataset(prepared, _known_scorer(), config, progress=lambda m: None)
    methods = report["scenarios"]["sequential"]["methods"]
    assert methods["instructrec"]["test"]["overall"]["num_candidates"] == [100]
    assert methods["popularity"]["test"]["num_candidates"] == [100]


def test_outputs_and_gin_entry_baselines_only(prepared, tmp_path):
    out = tmp_path / "eval"
    code = evaluate.main([
        "--gin_file=gin/runs/eval.gin", f"--gin.EVAL_OUTPUT_DIR='{out}'", f"--gin.DATASET='{prepared}'",
        "--gin.MODEL=None", "--gin.BASELINES=['popularity', 'itemknn']", "--gin.MAX_EXAMPLES=30",
        "--gin.SCENARIOS=['sequential', 'personalized_i2']",
    ])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "results.md", "results.png"]
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(report["scenarios"]) == {"sequential", "personalized_i2"}
    assert report["scenarios"]["sequential"]["methods"]["itemknn"]["test"]["num_examples"] == 30
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| sequential ⟨P1,I0,T3⟩ | Item-kNN |" in table and "true item + 9 random negatives" in table


def test_bad_settings_are_refused_with_the_reason(prepared, tmp_path):
    with pytest.raises(ValueError, match="scenario"):
        evaluate.EvalConfig(scenarios=("next_basket",))
    with pytest.raises(ValueError, match="hard negatives"):
        evaluate.EvalConfig(hard_negatives="bpr")
    with pytest.raises(FileNotFoundError, match="no prepared dataset"):
        evaluate.resolve_dataset(str(tmp_path / "missing"), None)
    assert evaluate.resolve_dataset(str(prepared), None) == (prepared, None)


def test_registered_tasks_name_the_dataset_and_feed_inference(prepared):
    import instructrec_jax.tasks as tasks
    from instructrec_jax.instructions.storage import read_instructions

    entry = tasks.register_prepared_dataset(prepared)
    name = tasks.eval_task_name(entry.name, "sequential")
    assert evaluate.resolve_dataset(None, name) == (entry.path, ("sequential",))
    assert evaluate.resolve_dataset(None, entry.mixture) == (entry.path, None)
    examples, vocab = infer.task_examples(name, "test", max_input_length=512, max_target_length=64)
    records = list(read_instructions(prepared, "p1_i0_t3", "test"))
    assert [e.example_id for e in examples] == [r.example_id for r in records]
    assert examples[0].target_tokens == tuple(vocab.encode(records[0].targets)) + (1,)
    assert examples[0].inputs == records[0].inputs


def _tiny_model_gin(tmp_path):
    """A model gin file and an HF checkpoint of the tiny ranking test model."""
    from instructrec_jax.checkpoints.hf import save_hf_checkpoint
    from ranking_fixtures import tiny_model_and_params, write_model_gin

    model, params = tiny_model_and_params()
    if not (tmp_path / "hf").exists():  # written once per test
        save_hf_checkpoint(model.config, params, tmp_path / "hf")
    return write_model_gin(model.config, tmp_path / "tiny.gin")


def _evaluate_tiny(prepared, tmp_path, *flags, checkpoint=None, out_name="eval"):
    """`instructrec eval` of the tiny model on 8 sequential examples with popularity; (report, out dir)."""
    model_gin = _tiny_model_gin(tmp_path)
    out = tmp_path / out_name
    code = evaluate.main([
        f"--gin_file={model_gin}", "--gin_file=gin/runs/eval.gin",
        f"--gin.CHECKPOINT_PATH={checkpoint or repr(str(tmp_path / 'hf'))}", f"--gin.EVAL_OUTPUT_DIR='{out}'",
        f"--gin.DATASET='{prepared}'", "--gin.BASELINES=['popularity']", "--gin.MAX_EXAMPLES=8",
        "--gin.SCENARIOS=['sequential']", *flags,
    ])
    assert code == 0
    return json.loads((out / "metrics.json").read_text(encoding="utf-8")), out


def test_gin_entry_evaluates_a_checkpoint(prepared, tmp_path):
    """The main command path: model gin file + HF checkpoint -> LLM and baseline rows in one report."""
    report, out = _evaluate_tiny(prepared, tmp_path, "--gin.SCORING='mean'", "--gin.SCORE_EOS=False")
    llm = report["scenarios"]["sequential"]["methods"]["instructrec"]
    assert llm["test"]["overall"]["num_examples"] == 8 * 3 and llm["best_template"] in llm["test"]["by_template"]
    assert report["scoring"]["reduction"] == "mean" and report["scoring"]["score_eos"] is False
    results = (out / "results.md").read_text(encoding="utf-8")
    assert "| sequential ⟨P1,I0,T3⟩ | InstructRec |" in results
    assert "mean log-likelihood (EOS not scored)" in results


def test_candidate_orders_from_gin_change_the_scores_not_the_candidates(prepared, tmp_path, capsys):
    """CANDIDATE_ORDERS=3: recorded in the report; every record keeps its candidates and label, and
    its scores become the mean over three orders of its listed candidates (different numbers)."""
    rankings = {}
    for name, flags in [("shown", ()), ("orders", ("--gin.CANDIDATE_ORDERS=3",)),
                        ("reseeded", ("--gin.CANDIDATE_ORDERS=3", "--gin.CANDIDATE_ORDER_SEED=5"))]:
        report, out = _evaluate_tiny(prepared, tmp_path, "--gin.WRITE_RANKINGS=True", *flags, out_name=name)
        assert report["scoring"]["candidate_orders"] == (3 if flags else 1)
        assert report["scoring"]["candidate_order_seed"] == (5 if len(flags) == 2 else 0)
        said = capsys.readouterr().out
        assert ("eval: sequential test: 24 instructions scored over 3 orders of their candidate list, "
                "0 scored once (no list)" in said) == bool(flags)
        path = out / "rankings" / "sequential" / "test" / "instructrec.jsonl"
        rankings[name] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rankings["orders"]) == len(rankings["shown"]) == len(rankings["reseeded"]) == 8 * 3
    for shown, orders in zip(rankings["shown"], rankings["orders"]):
        assert {k: v for k, v in shown.items() if k != "scores"} == {k: v for k, v in orders.items() if k != "scores"}
        assert not np.allclose(shown["scores"], orders["scores"], atol=1e-6)
    # another seed, other shuffles: other numbers for the same records
    assert sum(not np.allclose(a["scores"], b["scores"], atol=1e-6)
               for a, b in zip(rankings["orders"], rankings["reseeded"])) == len(rankings["orders"])


def test_a_list_of_checkpoints_is_evaluated_as_their_ensemble(prepared, tmp_path, capsys):
    """CHECKPOINT_PATH=[a, b]: every candidate's score is the mean of the two models' log-likelihoods."""
    from instructrec_jax.checkpoints.hf import save_hf_checkpoint
    from ranking_fixtures import random_params, tiny_model_and_params

    model, _ = tiny_model_and_params()
    save_hf_checkpoint(model.config, random_params(model, 1), tmp_path / "hf_b")
    rankings = {}
    for name, checkpoint in [("a", None), ("b", repr(str(tmp_path / "hf_b"))),
                             ("ab", repr([str(tmp_path / "hf"), str(tmp_path / "hf_b")]))]:
        report, out = _evaluate_tiny(prepared, tmp_path, "--gin.WRITE_RANKINGS=True",
                                     checkpoint=checkpoint, out_name=name)
        path = out / "rankings" / "sequential" / "test" / "instructrec.jsonl"
        rankings[name] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert report["checkpoint"] == [str(tmp_path / "hf"), str(tmp_path / "hf_b")]
    assert len(rankings["ab"]) == 8 * 3
    differ = 0
    for a, b, ab in zip(rankings["a"], rankings["b"], rankings["ab"]):
        assert a["example"] == b["example"] == ab["example"]
        np.testing.assert_allclose(ab["scores"], (np.array(a["scores"]) + b["scores"]) / 2, rtol=1e-9)
        differ += not np.allclose(a["scores"], b["scores"], atol=1e-3)
    assert differ == len(rankings["ab"])  # two different models: the mean is neither of them
    capsys.readouterr()
    with pytest.raises(AssertionError):  # an empty list is refused (exit code 1)
        _evaluate_tiny(prepared, tmp_path, checkpoint="[]", out_name="empty")
    assert "CHECKPOINT_PATH is an empty list" in capsys.readouterr().err
    # a member that cannot be loaded is named by its place in the list and its path
    missing = str(tmp_path / "no_such_checkpoint")
    with pytest.raises(AssertionError):
        _evaluate_tiny(prepared, tmp_path, checkpoint=repr([str(tmp_path / "hf"), missing]), out_name="bad")
    assert f"checkpoint 1 of the ensemble ({missing}):" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_prior_weight_is_chosen_on_validation_and_reported(prepared, tmp_path):
    report, out = _evaluate_tiny(prepared, tmp_path, "--gin.PRIOR='item_log_prior'",
                                 "--gin.PRIOR_WEIGHTS=[0.0, -1.0, -30.0]")
    methods = report["scenarios"]["sequential"]["methods"]
    calibration = methods["instructrec"]["prior_calibration"]
    grid = {float(w): v for w, v in calibration["grid"].items()}
    assert set(grid) == {0.0, -1.0, -30.0} and calibration["chosen_on"] == "validation"
    assert grid[calibration["prior_weight"]] == max(grid.values())
    llm = methods["instructrec"]
    assert llm["validation"]["without_prior"]["NDCG@5"] == pytest.approx(grid[0.0])
    assert llm["test"]["without_prior"]["num_examples"] == llm["test"]["overall"]["num_examples"]
    # A huge weight ranks by popularity alone: the same validation NDCG@5 as the popularity baseline.
    assert grid[-30.0] == pytest.approx(methods["popularity"]["validation"]["NDCG@5"], abs=0.02)
    assert "chosen on validation" in (out / "results.md").read_text(encoding="utf-8")


def _rows_metric(path, metric="HR@1", template=None, tie_rule="pessimistic"):
    """The mean of `metric` over a rankings file's rows (of one template), recomputed by hand."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if template is not None:
        rows = [r for r in rows if r["template_id"] == template]
    values = [metrics.example_metrics(r["scores"], r["label_index"], tie_rule=tie_rule)[metric] for r in rows]
    return float(np.mean(values)), rows


def test_rankings_files_reproduce_every_methods_figures_on_the_same_candidates(prepared, tmp_path):
    config = evaluate.EvalConfig(scenarios=("sequential",), baselines=FAST_BASELINES, max_examples=12)
    report = evaluate.evaluate_dataset(prepared, _known_scorer(), config, progress=lambda m: None,
                                       rankings_dir=tmp_path)
    methods = report["scenarios"]["sequential"]["methods"]
    best = methods["instructrec"]["best_template"]
    candidates = {}
    for split in ("validation", "test"):
        folder = tmp_path / "sequential" / split
        assert sorted(p.name for p in folder.iterdir()) == ["instructrec.jsonl", "itemknn.jsonl", "popularity.jsonl"]
        for name in FAST_BASELINES:
            for metric in ("HR@1", "NDCG@5"):
                mean, rows = _rows_metric(folder / f"{name}.jsonl", metric)
                assert mean == pytest.approx(methods[name][split][metric])
            assert len(rows) == 12
            for row in rows:  # every method ranks the same candidates of the same examples
                assert candidates.setdefault(row["example"], (row["candidates"], row["label_index"])) == (
                    row["candidates"], row["label_index"])
        for template, want in methods["instructrec"][split]["by_template"].items():
            mean, rows = _rows_metric(folder / "instructrec.jsonl", "NDCG@5", template)
            assert mean == pytest.approx(want["NDCG@5"]) and len(rows) == 12
            assert all(candidates[r["example"]] == (r["candidates"], r["label_index"]) for r in rows)
    mean, _ = _rows_metric(tmp_path / "sequential" / "test" / "instructrec.jsonl", "HR@1", best)
    assert mean == pytest.approx(methods["instructrec"]["test_best_template"]["HR@1"])


def test_rankings_of_the_99_negative_groups_protocol_are_the_final_rows(prepared, tmp_path):
    config = evaluate.EvalConfig(scenarios=("sequential",), splits=("test",), baselines=(), negatives=99,
                                 neg99_protocol="groups", max_examples=3)
    report = evaluate.evaluate_dataset(prepared, _known_scorer(), config, progress=lambda m: None,
                                       rankings_dir=tmp_path)
    mean, rows = _rows_metric(tmp_path / "sequential" / "test" / "instructrec.jsonl", "NDCG@5")
    assert mean == pytest.approx(report["scenarios"]["sequential"]["methods"]["instructrec"]["test"]["overall"]["NDCG@5"])
    assert {len(r["candidates"]) for r in rows} == {100} and len(rows) == 3 * 3
    assert all("/g" not in r["example"] for r in rows)


def test_gin_entry_writes_rankings_that_compare_reads(prepared, tmp_path, capsys):
    from instructrec_jax import compare

    stale = tmp_path / "eval" / "rankings" / "sequential" / "test" / "sasrec-seed0.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by an earlier run\n", encoding="utf-8")
    report, out = _evaluate_tiny(prepared, tmp_path, "--gin.WRITE_RANKINGS=True")
    folder = out / "rankings" / "sequential" / "test"
    assert sorted(p.name for p in folder.iterdir()) == ["instructrec.jsonl", "popularity.jsonl"]  # replaced whole
    assert compare.main([f"{out}:instructrec", f"{out}:popularity", "--resamples", "200", "--bins", "2",
                         "--json", str(tmp_path / "cmp.json")]) == 0
    result = json.loads((tmp_path / "cmp.json").read_text(encoding="utf-8"))
    methods = report["scenarios"]["sequential"]["methods"]
    assert result["examples"] == 8
    assert result["metrics"]["HR@1"]["mean_a"] == pytest.approx(methods["instructrec"]["test_best_template"]["HR@1"])
    assert result["metrics"]["NDCG@5"]["mean_b"] == pytest.approx(methods["popularity"]["test"]["NDCG@5"])
    assert sum(row["examples"] for row in result["by_target_popularity"]) == 8
    assert "paired examples" in capsys.readouterr().out
