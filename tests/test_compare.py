"""`instructrec compare`: paired bootstrap, per-example metrics from rankings files, refusals."""

import json

import numpy as np
import pytest

from instructrec_jax import compare

CANDIDATES = ["i1", "i2", "i3", "i4"]


def _write_eval(folder, methods, *, best_template="pref-01", tie_rule="pessimistic", split="test"):
    """An eval output folder: metrics.json + rankings/sequential/<split>/<method>.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    report = {"tie_rule": tie_rule, "prepared_dir": None,
              "scenarios": {"sequential": {"methods": {"instructrec": {"best_template": best_template}}}}}
    (folder / "metrics.json").write_text(json.dumps(report), encoding="utf-8")
    rankings = folder / "rankings" / "sequential" / split
    rankings.mkdir(parents=True, exist_ok=True)
    for method, rows in methods.items():
        (rankings / f"{method}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def _row(example, scores, label=0, candidates=CANDIDATES, template=None):
    row = {"example": example, "user_id": example, "candidates": list(candidates), "label_index": label,
           "scores": list(scores)}
    if template:
        row["template_id"] = template
    return row


def test_paired_bootstrap_edges_and_spread():
    same = compare.paired_bootstrap([1.0, 0.0, 1.0], [1.0, 0.0, 1.0], resamples=500)
    assert (same["diff"], same["ci_low"], same["ci_high"], same["p_two_sided"]) == (0.0, 0.0, 0.0, 1.0)
    assert same["tied"] == 3
    win = compare.paired_bootstrap(np.ones(50), np.zeros(50), resamples=500)
    assert "<0.002" in compare.format_comparison({"a": "x", "a_source": "", "b": "y", "b_source": "", "examples": 50,
                                                  "metrics": {"HR@1": win}})
    assert (win["diff"], win["ci_low"], win["ci_high"], win["p_two_sided"], win["a_better"]) == (1, 1, 1, 0, 50)
    rng = np.random.default_rng(3)
    a, b = rng.random(2000), rng.random(2000) + 0.02
    result = compare.paired_bootstrap(a, b, resamples=4000, seed=1)
    assert result["diff"] == pytest.approx(np.mean(a - b))
    # the interval's half-width is ~1.96 standard errors of the mean difference
    half = (result["ci_high"] - result["ci_low"]) / 2
    assert half == pytest.approx(1.96 * np.std(a - b) / np.sqrt(2000), rel=0.1)
    assert result["ci_low"] < result["diff"] < result["ci_high"]
    assert compare.paired_bootstrap(a, b, resamples=4000, seed=1) == result  # seeded
    with pytest.raises(ValueError, match="equally long"):
        compare.paired_bootstrap([1.0], [1.0, 2.0])


def test_methods_are_compared_per_example_with_seeds_averaged_and_the_validation_template(tmp_path):
    llm = [_row("e1", [3, 1, 0, 0], template="pref-01"), _row("e2", [1, 5, 0, 0], template="pref-01"),
           _row("e1", [0, 9, 0, 0], template="pref-02"), _row("e2", [9, 0, 0, 0], template="pref-02")]
    seed0 = [_row("e1", [0.5, 1, 0, 0]), _row("e2", [1, 5, 0, 0])]  # e1 rank 2, e2 rank 2
    seed1 = [_row("e1", [1, 0, 0, 0]), _row("e2", [2, 1, 0, 0])]  # both rank 1
    folder = _write_eval(tmp_path / "run", {"instructrec": llm, "sasrec-seed0": seed0, "sasrec-seed1": seed1})
    a = compare.load_method(folder, "instructrec", metric_names=["HR@1", "MRR"])
    b = compare.load_method(folder, "sasrec", metric_names=["HR@1", "MRR"])
    assert a.name == "instructrec (template pref-01)" and b.name == "sasrec (2 files)"
    assert a.per_example == {"e1": {"HR@1": 1.0, "MRR": 1.0}, "e2": {"HR@1": 0.0, "MRR": 0.5}}
    assert b.per_example == {"e1": {"HR@1": 0.5, "MRR": 0.75}, "e2": {"HR@1": 0.5, "MRR": 0.75}}
    other = compare.load_method(folder, "instructrec", metric_names=["HR@1"], template="pref-02")
    assert other.per_example == {"e1": {"HR@1": 0.0}, "e2": {"HR@1": 1.0}}
    result = compare.compare(a, b, ["HR@1", "MRR"], resamples=200, item_counts={"i1": 7}, bins=2)
    assert result["metrics"]["HR@1"]["mean_a"] == 0.5 and result["metrics"]["MRR"]["mean_b"] == 0.75
    assert result["metrics"]["HR@1"]["a_better"] == 1 and result["metrics"]["HR@1"]["b_better"] == 1
    assert sum(r["examples"] for r in result["by_target_popularity"]) == 2
    assert "A better / B better / tied" in compare.format_comparison(result)
    clear = compare.compare(compare.load_method(folder, "instructrec", metric_names=["HR@1"], template="pref-02"),
                            a, ["HR@1"], resamples=100)
    assert clear["metrics"]["HR@1"]["p_two_sided"] == 1.0  # e1 lost, e2 won: no difference
    always = compare.compare(b, b, ["HR@1"], resamples=100)
    assert " 1.0000 " in compare.format_comparison(always)


def test_ties_follow_the_runs_tie_rule(tmp_path):
    rows = {"popularity": [_row("e1", [1, 1, 0, 0])]}
    pessimistic = compare.load_method(_write_eval(tmp_path / "p", rows), "popularity", metric_names=["HR@1"])
    optimistic = compare.load_method(_write_eval(tmp_path / "o", rows, tie_rule="optimistic"), "popularity",
                                     metric_names=["HR@1"])
    assert pessimistic.per_example["e1"]["HR@1"] == 0.0 and optimistic.per_example["e1"]["HR@1"] == 1.0


def test_different_examples_or_candidates_are_refused(tmp_path):
    base = [_row("e1", [1, 0, 0, 0]), _row("e2", [1, 0, 0, 0])]
    a = compare.load_method(_write_eval(tmp_path / "a", {"itemknn": base}), "itemknn", metric_names=["HR@1"])
    fewer = compare.load_method(_write_eval(tmp_path / "b", {"itemknn": base[:1]}), "itemknn", metric_names=["HR@1"])
    with pytest.raises(ValueError, match="1 only in the first"):
        compare.compare(a, fewer, ["HR@1"])
    moved = [_row("e1", [1, 0, 0, 0]), _row("e2", [0, 1, 0, 0], label=1)]
    other = compare.load_method(_write_eval(tmp_path / "c", {"itemknn": moved}), "itemknn", metric_names=["HR@1"])
    with pytest.raises(ValueError, match="'e2' has different candidates"):
        compare.compare(a, other, ["HR@1"])
    mismatched = _write_eval(tmp_path / "d", {"sasrec-seed0": base, "sasrec-seed1": moved})
    with pytest.raises(ValueError, match="same candidates for example 'e2'"):
        compare.load_method(mismatched, "sasrec", metric_names=["HR@1"])


def test_bad_files_and_arguments_get_clear_errors(tmp_path, capsys):
    folder = _write_eval(tmp_path / "run", {"popularity": [_row("e1", [1, 0, 0, 0])]})
    bad = folder / "rankings" / "sequential" / "test" / "itemknn.jsonl"
    bad.write_text(json.dumps(_row("e1", [1, 0, 0, 0])) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"itemknn.jsonl:2: expected a JSON object"):
        compare.load_method(folder, "itemknn")
    bad.write_text(json.dumps(_row("e1", [1, 0])) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"itemknn.jsonl:1: 2 scores for 4 candidates"):
        compare.load_method(folder, "itemknn")
    bad.write_text(json.dumps({**_row("e1", [1, 0, 0, 0]), "label_index": "0"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"itemknn.jsonl:1: 4 scores for 4 candidates, true position 0"):
        compare.load_method(folder, "itemknn")
    with pytest.raises(FileNotFoundError, match=r"no rankings of method 'sasrec'.*'itemknn', 'popularity'"):
        compare.load_method(folder, "sasrec")
    with pytest.raises(FileNotFoundError, match="WRITE_RANKINGS"):
        compare.load_method(folder, "popularity", split="validation")
    with pytest.raises(ValueError, match="unknown metric 'AUC'"):
        compare.parse_metric_names(["HR@1", "AUC"])
    assert compare.main([f"{folder}:popularity", f"{folder}:itemknn", "--bins", "0"]) == 1
    assert "4 scores for 4 candidates, true position 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main([str(folder), f"{folder}:popularity"])


def test_several_runs_of_one_side_are_averaged_per_example_each_with_its_own_template(tmp_path):
    # seed 0 chose pref-01 on validation, seed 1 pref-02; e1: hit in seed 0 only, e2: hit in both
    seed0 = _write_eval(tmp_path / "s0", {"instructrec": [
        _row("e1", [3, 1, 0, 0], template="pref-01"), _row("e2", [5, 1, 0, 0], template="pref-01"),
        _row("e1", [9, 1, 0, 0], template="pref-02"), _row("e2", [9, 1, 0, 0], template="pref-02")]})
    seed1 = _write_eval(tmp_path / "s1", {"instructrec": [
        _row("e1", [9, 1, 0, 0], template="pref-01"), _row("e2", [0, 9, 0, 0], template="pref-01"),
        _row("e1", [0, 1, -1, -1], template="pref-02"), _row("e2", [4, 1, 0, 0], template="pref-02")]},
        best_template="pref-02")
    both = compare.load_runs([seed0, seed1], "instructrec", metric_names=["HR@1", "MRR"])
    assert both.per_example == {"e1": {"HR@1": 0.5, "MRR": 0.75}, "e2": {"HR@1": 1.0, "MRR": 1.0}}
    assert both.name == "instructrec (2 runs: template pref-01, template pref-02)"
    assert compare.load_runs([seed0], "instructrec").name == "instructrec (template pref-01)"
    baseline = _write_eval(tmp_path / "b", {"popularity": [_row("e1", [0, 1, 0, 0]), _row("e2", [1, 0, 0, 0])]})
    result = compare.compare(both, compare.load_method(baseline, "popularity", metric_names=["HR@1", "MRR"]),
                             ["HR@1"], resamples=100)
    assert result["metrics"]["HR@1"]["mean_a"] == 0.75 and result["metrics"]["HR@1"]["mean_b"] == 0.5
    # the command line: comma-separated folders on one side
    assert compare.main([f"{seed0},{seed1}:instructrec", f"{baseline}:popularity", "--bins", "0",
                         "--json", str(tmp_path / "out.json")]) == 0
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["metrics"]["HR@1"]["mean_a"] == 0.75 and written["a"].startswith("instructrec (2 runs")


def test_runs_averaged_together_must_hold_the_same_examples_and_candidates(tmp_path):
    base = [_row("e1", [1, 0, 0, 0]), _row("e2", [1, 0, 0, 0])]
    a = _write_eval(tmp_path / "a", {"itemknn": base})
    fewer = _write_eval(tmp_path / "b", {"itemknn": base[:1]})
    with pytest.raises(ValueError, match="hold different examples"):
        compare.load_runs([a, fewer], "itemknn", metric_names=["HR@1"])
    moved = _write_eval(tmp_path / "c", {"itemknn": [base[0], _row("e2", [0, 1, 0, 0], label=1)]})
    with pytest.raises(ValueError, match="'e2' has different candidates or true item"):
        compare.load_runs([a, moved], "itemknn", metric_names=["HR@1"])
    with pytest.raises(ValueError, match="no eval folders"):
        compare.load_runs([], "itemknn")
    for spec in (f"{a},:itemknn", f",{a}:itemknn", f"{a}:", "itemknn"):
        with pytest.raises(SystemExit):
            compare.main([spec, f"{a}:itemknn"])
