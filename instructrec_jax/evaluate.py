"""The paper's evaluation of a checkpoint and of the baselines, on one prepared dataset.

For each scenario (sequential ⟨P1,I0,T3⟩, product search ⟨P0,I2,T3⟩, personalised search ⟨P1,P2⟩,
⟨P1,I1⟩, ⟨P1,I2⟩) and each split (validation, test), the stored reranking records are scored by
likelihood (`ranking.CandidateScorer`: encoder once per instruction, decoder over the candidates)
and measured per template; as in the paper, the template best on validation is the one whose
test figures are reported. The baselines (popularity, item-kNN, SASRec) are fitted on the training
examples only and rank exactly the same candidate sets: their queries are built from the very
records the LLM scores, one per evaluation example. Every number goes through
`metrics.evaluate_rankings`.

Candidate sets:
- `negatives=9` (default): the prepared random sets (true item + 9 never-interacted items);
- `negatives=99`: the `_neg99` records, ranked 'direct'ly (all 100 candidates of one instruction)
  or by the paper's 'groups' protocol (ten groups of ten, group winners reranked);
- `hard_negatives='sasrec'|'itemknn'|'popularity'`: each 9-negative set's negatives replaced by
  the retriever's top items the user never interacted with (deterministic; the LLM's records are
  rewritten with `instructions.generator.with_candidates`), and every method ranks those.

Outputs (`write_outputs`): `metrics.json` (everything, per template and per seed) and
`results.md` + `results.png` (the test table of the report), each written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import gin
import numpy as np

from instructrec_jax import baselines, metrics, ranking
# Imported here, not lazily: it registers gin configurables, which gin refuses once the config is locked.
from instructrec_jax.checkpoints.manager import load_ensemble_params, load_params_for_inference
from instructrec_jax.data.types import DataFormatError, SplitExample
from instructrec_jax.instructions.format import SCENARIOS, ExampleSource, base_type, neg99_name

log = logging.getLogger(__name__)

STORAGE_SPLITS = {"validation": "valid", "test": "test"}  # storage name -> PreparedData name
NEG99_PROTOCOLS = ("direct", "groups")
LLM_METHOD = "instructrec"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how (see the module docstring)."""

    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    splits: tuple[str, ...] = ("validation", "test")
    negatives: int = 9
    neg99_protocol: str = "direct"
    hard_negatives: str | None = None
    hard_negative_seed: int = 0
    baselines: tuple[str, ...] = baselines.BASELINE_NAMES
    baseline_options: dict = dataclasses.field(default_factory=lambda: {"itemknn": {"window": 10}})
    sasrec_seeds: tuple[int, ...] = (0,)
    tie_rule: str = "pessimistic"
    select_metric: str = "NDCG@5"
    max_examples: int | None = None  # per scenario and split: the first N examples (user id order)
    # Calibrated item prior: when the scorer has a prior and this grid is given, the weight with
    # the best validation `select_metric` (per scenario, over all templates) is used on every split.
    prior_weights: tuple[float, ...] = ()
    hr_ks: tuple[int, ...] = metrics.PAPER_HR_KS
    ndcg_ks: tuple[int, ...] = metrics.PAPER_NDCG_KS

    def __post_init__(self):
        for scenario in self.scenarios:
            if scenario not in SCENARIOS:
                raise ValueError(f"unknown scenario {scenario!r}; expected some of {sorted(SCENARIOS)}")
        for split in self.splits:
            if split not in STORAGE_SPLITS:
                raise ValueError(f"unknown split {split!r}; expected 'validation' and/or 'test'")
        if self.negatives not in (9, 99):
            raise ValueError(f"negatives must be 9 or 99, got {self.negatives}")
        if self.neg99_protocol not in NEG99_PROTOCOLS:
            raise ValueError(f"unknown 99-negative protocol {self.neg99_protocol!r}; expected {NEG99_PROTOCOLS}")
        if self.hard_negatives is not None:
            if self.hard_negatives not in baselines.BASELINE_NAMES:
                raise ValueError(f"hard negatives come from a baseline {baselines.BASELINE_NAMES}, "
                                 f"got {self.hard_negatives!r}")
            if self.negatives != 9:
                raise ValueError("hard negatives replace the 9 random negatives; use negatives=9")
        for name in self.baselines:
            if name not in baselines.BASELINE_NAMES:
                raise ValueError(f"unknown baseline {name!r}; expected some of {baselines.BASELINE_NAMES}")


# -- records and the examples behind them ------------------------------------------------------------


def example_key(example_id: str) -> str:
    """The evaluation example a record belongs to: its id without the trailing template id."""
    return example_id.rsplit("/", 1)[0]


def load_records(prepared_dir: Path, type_name: str, split: str, max_examples: int | None = None) -> list:
    """The stored records of a type and split; with `max_examples`, those of the first N examples."""
    from instructrec_jax.instructions.storage import read_instructions

    records = []
    keys: set[str] = set()
    for record in read_instructions(prepared_dir, type_name, split):
        key = example_key(record.example_id)
        if key not in keys:
            if max_examples is not None and len(keys) >= max_examples:
                continue
            keys.add(key)
        records.append(record)
    if not records:
        raise DataFormatError(str(prepared_dir), None, f"no {split} records of type {type_name!r}; "
                              "prepare the dataset with this type (and, for 99 negatives, --neg99)")
    return records


def _split_examples(data, type_name: str, split: str) -> dict[tuple[str, str], SplitExample]:
    """(user, target) -> the PreparedData example a stored record was built from."""
    name = STORAGE_SPLITS[split]
    if base_type(type_name).source is ExampleSource.SEARCH:
        examples = (data.search or {}).get(name, [])
    else:
        examples = {"valid": data.valid, "test": data.test}[name]
    return {(e.user_id, e.target): e for e in examples}


def baseline_queries(records: Sequence, data, split: str) -> list[baselines.RankingQuery]:
    """One query per evaluation example of `records` (templates share candidate sets), with the
    example's history from the prepared splits."""
    lookup: dict[str, dict] = {}
    queries: dict[str, baselines.RankingQuery] = {}
    for record in records:
        key = example_key(record.example_id)
        if key in queries:
            continue
        table = lookup.setdefault(record.instruction_type, _split_examples(data, record.instruction_type, split))
        example = table.get((record.user_id, record.target_item))
        if example is None:
            raise DataFormatError(record.example_id, None, f"no {split} example of user {record.user_id!r} "
                                  f"with target {record.target_item!r} in the prepared splits")
        queries[key] = baselines.RankingQuery(key, record.user_id, tuple(example.history),
                                              tuple(record.candidates), int(record.label_index))
    return list(queries.values())


def hard_negative_records(records: Sequence, data, retriever, item_texts: dict[str, str], split: str,
                          *, seed: int = 0) -> list:
    """`records` with each example's negatives replaced by the retriever's top non-interacted items."""
    from instructrec_jax.instructions.generator import with_candidates

    examples: dict[str, SplitExample] = {}
    tables: dict[str, dict] = {}
    for record in records:
        key = example_key(record.example_id)
        if key not in examples:
            table = tables.setdefault(record.instruction_type, _split_examples(data, record.instruction_type, split))
            examples[key] = table[(record.user_id, record.target_item)]
    sets = baselines.hard_negative_candidates(
        retriever, list(examples.values()), sorted(data.items),
        {s.user_id: set(s.item_ids) for s in data.sequences},
        num_negatives=len(records[0].candidates) - 1, seed=seed)
    by_key = dict(zip(examples, sets))
    return [
        dataclasses.replace(with_candidates(record, by_key[example_key(record.example_id)].item_ids, item_texts,
                                            suffix="hard"),
                            example_id=f"{example_key(record.example_id)}/hard/{record.template_id}")
        for record in records
    ]


# -- the evaluation --------------------------------------------------------------------------------


def _fit_baselines(data, config: EvalConfig) -> dict[str, list]:
    """Each baseline fitted once on the training examples (SASRec once per seed)."""
    catalogue = sorted(data.items)
    fitted: dict[str, list] = {}
    for name in config.baselines:
        options = dict(config.baseline_options.get(name, {}))
        if name == "sasrec":
            fitted[name] = []
            # model selection on the sequential validation split (never on test), as for the LLM
            validation = None
            if options.pop("early_stopping", True) and ("valid", 9) in data.candidates:
                validation = baselines.queries_from_split(data.valid, data.candidates[("valid", 9)], split="valid")
            for seed in config.sasrec_seeds:
                started = time.perf_counter()
                model = baselines.fit_baseline(name, data.train, catalogue, seed=seed, validation=validation,
                                               log_every=options.pop("log_every", 10), **options)
                log.info("sasrec seed %d: %d epochs (kept epoch %d) in %.1fs", seed, model.epochs_run,
                         model.best_epoch, time.perf_counter() - started)
                fitted[name].append(model)
        else:
            fitted[name] = [baselines.fit_baseline(name, data.train, catalogue, **options)]
    return fitted


def _mean_metrics(runs: list[metrics.RankingMetrics]) -> dict[str, Any]:
    out: dict[str, Any] = runs[0].as_dict()
    if len(runs) > 1:
        for key in runs[0].values:
            values = [r.values[key] for r in runs]
            out[key] = float(np.mean(values))
            out[f"{key}_std"] = float(np.std(values))
        out["per_seed"] = [r.as_dict() for r in runs]
    return out


def ranking_row(key: str, user_id: str, candidates: Sequence[str], label_index: int, scores,
                template_id: str | None = None) -> dict[str, Any]:
    """One line of a rankings file: an evaluation example, its candidates and what a method scored."""
    row: dict[str, Any] = {"example": key, "user_id": user_id, "candidates": list(candidates),
                           "label_index": int(label_index),
                           "scores": [float(v) for v in np.asarray(scores, dtype=np.float64)]}
    if template_id is not None:
        row["template_id"] = template_id
    return row


def save_rankings(directory: Path, scenario: str, split: str, method: str, rows: Sequence[dict]) -> Path:
    """`directory/scenario/split/method.jsonl`, one `ranking_row` per line, written atomically."""
    from instructrec_jax.atomic import write_text_atomic

    path = Path(directory) / scenario / split / f"{method}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path


def baseline_file_name(name: str, index: int, config: EvalConfig) -> str:
    """A baseline's rankings file stem: SASRec's name its seed (one file per seed), others their name."""
    return f"{name}-seed{config.sasrec_seeds[index]}" if name == "sasrec" else name


def _llm_split_results(scorer, records, config: EvalConfig, item_texts, scored=None, *,
                       with_rows: bool = False) -> dict[str, Any]:
    """Overall and per-template metrics of the LLM on one split's records (`scored`: the records
    already scored, e.g. reweighted by a calibrated prior); with `with_rows`, also "rows": one
    `ranking_row` per record, as ranked."""
    kwargs = dict(tie_rule=config.tie_rule, hr_ks=config.hr_ks, ndcg_ks=config.ndcg_ks)
    if config.negatives == 99 and config.neg99_protocol == "groups":
        from instructrec_jax.instructions.generator import candidate_groups, with_candidates

        originals = {r.example_id: r for r in records}
        scored = scorer.score_records([g for r in records for g in candidate_groups(r, item_texts)])

        def rerank(example, winners):
            final = with_candidates(originals[example.key], winners, item_texts, suffix="final")
            return scorer.score_records([final])[0]

        rows = ranking.grouped_rows(scored, protocol="groups", rerank=rerank, tie_rule=config.tie_rule)
        by_template: dict[str, list] = {}
        for example, row in rows:
            by_template.setdefault(originals[example.key].template_id, []).append((example, row))

        def measure(pairs):
            return metrics.evaluate_rankings([r for _, r in pairs], [e.label_index for e, _ in pairs], **kwargs)

        out = {"overall": measure(rows), "by_template": {t: measure(p) for t, p in by_template.items()}}
        if with_rows:
            out["rows"] = [ranking_row(example_key(e.key), originals[e.key].user_id, e.candidates, e.label_index, row,
                                       originals[e.key].template_id) for e, row in rows]
        return out
    scored = scorer.score_records(records) if scored is None else scored
    results = ranking.evaluate_scored(scored, **kwargs)
    out = {"overall": results.overall, "by_template": results.by_template}
    if with_rows:
        out["rows"] = [ranking_row(example_key(s.example_id), s.user_id, s.candidates, s.label_index, s.scores,
                                   s.template_id) for s in scored]
    return out


def _calibrates(scorer, config: EvalConfig) -> bool:
    return bool(scorer is not None and config.prior_weights and scorer.config.prior != "none"
                and "validation" in config.splits
                and not (config.negatives == 99 and config.neg99_protocol == "groups"))


def evaluate_dataset(prepared_dir: str | os.PathLike, scorer: ranking.CandidateScorer | None,
                     config: EvalConfig = EvalConfig(), *, progress=print,
                     rankings_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluates the LLM (if `scorer`) and the baselines on every configured scenario and split.

    With `rankings_dir`, every method's per-example scores go to `save_rankings` files (the LLM:
    every template's record, scored as ranked, i.e. with the prior weight chosen on validation;
    SASRec: one file per seed), for paired comparisons (`instructrec compare`)."""
    from instructrec_jax.data.preprocess import load_prepared
    from instructrec_jax.instructions.storage import read_item_texts, read_manifest

    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    data = load_prepared(prepared_dir)
    item_texts = read_item_texts(prepared_dir)
    started = time.perf_counter()
    fitted = _fit_baselines(data, config)
    report: dict[str, Any] = {
        "dataset": manifest.get("name", prepared_dir.name),
        "prepared_dir": str(prepared_dir),
        "negatives": config.negatives,
        "neg99_protocol": config.neg99_protocol if config.negatives == 99 else None,
        "hard_negatives": config.hard_negatives,
        "tie_rule": config.tie_rule,
        "select_metric": config.select_metric,
        "scoring": dataclasses.asdict(scorer.config) if scorer is not None else None,
        "baseline_options": config.baseline_options,
        "sasrec_seeds": list(config.sasrec_seeds),
        "scenarios": {},
    }
    retriever = fitted[config.hard_negatives][0] if config.hard_negatives else None
    if config.hard_negatives and config.hard_negatives not in fitted:
        retriever = _fit_baselines(data, dataclasses.replace(config, baselines=(config.hard_negatives,)))[config.hard_negatives][0]
    for scenario in config.scenarios:
        type_name = SCENARIOS[scenario]
        stored_type = neg99_name(type_name) if config.negatives == 99 else type_name
        entry: dict[str, Any] = {"instruction_type": stored_type, "methods": {}}
        llm: dict[str, Any] = {}
        calibration = None
        calibrate = _calibrates(scorer, config)
        splits = (("validation",) + tuple(s for s in config.splits if s != "validation")
                  if calibrate else config.splits)  # the weight is chosen on validation first
        for split in splits:
            records = load_records(prepared_dir, stored_type, split, config.max_examples)
            if retriever is not None:
                records = hard_negative_records(records, data, retriever, item_texts, split,
                                                seed=config.hard_negative_seed)
            queries = baseline_queries(records, data, split)
            labels = [q.label_index for q in queries]
            for name, models in fitted.items():
                runs = []
                for index, model in enumerate(models):
                    scores = baselines.score_queries(model, queries)
                    runs.append(metrics.evaluate_rankings(scores, labels, tie_rule=config.tie_rule,
                                                          hr_ks=config.hr_ks, ndcg_ks=config.ndcg_ks))
                    if rankings_dir is not None:
                        save_rankings(rankings_dir, scenario, split, baseline_file_name(name, index, config),
                                      [ranking_row(q.example_id, q.user_id, q.candidates, q.label_index, v)
                                       for q, v in zip(queries, scores)])
                entry["methods"].setdefault(name, {})[split] = _mean_metrics(runs)
            if scorer is not None:
                t0 = time.perf_counter()
                orders_before = dict(scorer.order_counts)
                scored = None
                if calibrate:
                    scored = scorer.score_records(records)
                    if calibration is None:
                        weight, grid = ranking.calibrate_prior_weight(
                            scored, config.prior_weights, scorer.config.reduction,
                            metric=config.select_metric, tie_rule=config.tie_rule)
                        calibration = {"prior_weight": weight, "chosen_on": "validation",
                                       "metric": config.select_metric,
                                       "grid": {str(w): v for w, v in grid.items()}}
                        progress(f"eval: {scenario}: prior weight {weight} chosen on validation "
                                 f"({config.select_metric} {grid[weight]:.4f})")
                    without = ranking.reweighted(scored, 0.0, scorer.config.reduction)
                    scored = ranking.reweighted(scored, calibration["prior_weight"], scorer.config.reduction)
                llm[split] = _llm_split_results(scorer, records, config, item_texts, scored,
                                                with_rows=rankings_dir is not None)
                if rankings_dir is not None:
                    save_rankings(rankings_dir, scenario, split, LLM_METHOD, llm[split].pop("rows"))
                if calibrate:  # what the prior adds: the same records ranked by the likelihood alone
                    llm[split]["without_prior"] = ranking.evaluate_scored(
                        without, tie_rule=config.tie_rule, hr_ks=config.hr_ks, ndcg_ks=config.ndcg_ks).overall
                progress(f"eval: {scenario} {split}: {len(records)} instructions, {len(queries)} examples "
                         f"scored in {time.perf_counter() - t0:.1f}s")
                if scorer.config.candidate_orders > 1:
                    counts = {k: scorer.order_counts[k] - orders_before[k] for k in orders_before}
                    progress(f"eval: {scenario} {split}: {counts['reordered']} instructions scored over "
                             f"{scorer.config.candidate_orders} orders of their candidate list, "
                             f"{counts['once']} scored once (no list)")
        if scorer is not None:
            out: dict[str, Any] = {split: {"overall": r["overall"].as_dict(),
                                           "by_template": {t: m.as_dict() for t, m in sorted(r["by_template"].items())},
                                           **({"without_prior": r["without_prior"].as_dict()}
                                              if "without_prior" in r else {})}
                                   for split, r in llm.items()}
            if calibration is not None:
                out["prior_calibration"] = calibration
            if "validation" in llm and "test" in llm:
                valid = ranking.TemplateResults(llm["validation"]["overall"], llm["validation"]["by_template"])
                best = ranking.best_template(valid, config.select_metric)
                out["best_template"] = best
                out["test_best_template"] = llm["test"]["by_template"][best].as_dict()
            entry["methods"][LLM_METHOD] = out
        report["scenarios"][scenario] = entry
    report["seconds"] = time.perf_counter() - started
    return report


def reported_test_metrics(report: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """scenario -> method -> the test metrics a report table shows (the LLM: its best-on-validation
    template's test figures, or all templates together when validation was not evaluated)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for scenario, entry in report["scenarios"].items():
        for method, result in entry["methods"].items():
            if method == LLM_METHOD:
                values = result.get("test_best_template") or result.get("test", {}).get("overall")
            else:
                values = result.get("test")
            if values is not None:
                table.setdefault(scenario, {})[method] = values
    return table


def write_outputs(report: dict[str, Any], output_dir: str | os.PathLike, *, plot: bool = True) -> dict[str, Path]:
    """metrics.json, results.md and (optionally) results.png in `output_dir`, each atomically."""
    from instructrec_jax import report as report_lib
    from instructrec_jax.atomic import write_text_atomic

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": output_dir / "metrics.json", "table": output_dir / "results.md"}
    write_text_atomic(paths["metrics"], json.dumps(report, indent=2, sort_keys=True) + "\n")
    table = reported_test_metrics(report)
    title = f"{report['dataset']}: test, {_candidates_label(report)}"
    write_text_atomic(paths["table"], report_lib.markdown_report(table, title=title, notes=_notes(report)))
    if plot:
        paths["plot"] = output_dir / "results.png"
        report_lib.write_plot(table, paths["plot"], title=title)
    return paths


def _candidates_label(report: dict[str, Any]) -> str:
    if report.get("hard_negatives"):
        return f"true item + 9 hard negatives from {report['hard_negatives']}"
    if report["negatives"] == 99:
        return f"true item + 99 random negatives ({report['neg99_protocol']})"
    return "true item + 9 random negatives"


def _notes(report: dict[str, Any]) -> list[str]:
    notes = [f"ties: {report['tie_rule']}; InstructRec: template best on validation by {report['select_metric']}"]
    if report.get("scoring"):
        s = report["scoring"]
        prior = "" if s["prior"] == "none" else f" − w × {s['prior']}"
        chosen = {name: entry["methods"].get(LLM_METHOD, {}).get("prior_calibration", {}).get("prior_weight")
                  for name, entry in report["scenarios"].items()}
        if s["prior"] == "none":
            weight = ""
        elif any(w is not None for w in chosen.values()):
            weight = " (w chosen on validation: " + ", ".join(
                f"{name} {w}" for name, w in chosen.items() if w is not None) + ")"
        else:
            weight = f" (w = {s['prior_weight']})"
        eos = "" if s.get("score_eos", True) else " (EOS not scored)"
        notes.append(f"InstructRec scores: {s['reduction']} log-likelihood{eos}{prior}{weight}")
    if len(report.get("sasrec_seeds", [])) > 1:
        notes.append(f"SASRec: mean over seeds {report['sasrec_seeds']}")
    return notes


# -- gin entry and command line ----------------------------------------------------------------------


def resolve_dataset(dataset: str | None, mixture_or_task_name: str | None) -> tuple[Path, tuple[str, ...] | None]:
    """The prepared dataset folder (and scenarios, if a single eval task was named) to evaluate."""
    if mixture_or_task_name:
        import instructrec_jax.tasks as tasks

        for entry in tasks.registered_datasets().values():
            if mixture_or_task_name == entry.mixture:
                return entry.path, None
            for scenario in SCENARIOS:
                if mixture_or_task_name in (tasks.eval_task_name(entry.name, scenario),
                                            tasks.task_name(entry.name, SCENARIOS[scenario])):
                    return entry.path, (scenario,)
        raise ValueError(f"{mixture_or_task_name!r} is not a registered InstructRec mixture or evaluation "
                         f"task (registered: {', '.join(tasks.registered_names()) or 'none'})")
    if dataset is None:
        raise ValueError("give DATASET (a prepared dataset folder or name) or MIXTURE_OR_TASK_NAME")
    path = Path(dataset).expanduser()
    if (path / "manifest.json").exists():
        return path, None
    import instructrec_jax.tasks as tasks
    from instructrec_jax.prepare import dataset_folder_name

    for directory in tasks.data_dirs():
        candidate = directory / dataset_folder_name(dataset)
        if (candidate / "manifest.json").exists():
            return candidate, None
    raise FileNotFoundError(f"no prepared dataset {dataset!r} (looked for {path} and under "
                            f"{', '.join(map(str, tasks.data_dirs()))}); run `instructrec prepare` first")


@gin.configurable
def evaluate(
    model=None,
    checkpoint_path: str | Sequence[str] | None = None,
    output_dir: str = gin.REQUIRED,
    dataset: str | None = None,
    mixture_or_task_name: str | None = None,
    scenarios: Sequence[str] | None = None,
    splits: Sequence[str] = ("validation", "test"),
    scoring: str = "sum",
    score_eos: bool = True,
    candidate_orders: int = 1,
    candidate_order_seed: int = 0,
    prior: str = "none",
    prior_weight: float = 1.0,
    prior_weights: Sequence[float] | None = None,
    num_negatives: int = 9,
    neg99_protocol: str = "direct",
    hard_negatives: str | None = None,
    baseline_names: Sequence[str] = baselines.BASELINE_NAMES,
    itemknn_window: int | None = 10,
    sasrec_seeds: Sequence[int] = (0,),
    sasrec_epochs: int = 200,
    sasrec_loss: str = "softmax",
    tie_rule: str = "pessimistic",
    max_examples: int | None = None,
    batch_size: int = 16,
    bucket_step: int = 64,
    task_feature_lengths: dict | None = None,
    plot: bool = True,
    write_rankings: bool = False,
) -> dict[str, Any]:
    """`instructrec eval`: load the checkpoint (if any), evaluate, write metrics.json/results.md/png
    (and with `write_rankings`, the per-example `rankings/` folder, replaced as a whole).

    A list of checkpoint paths evaluates their ensemble (`ranking.CandidateScorer`: the mean of the
    members' log-likelihoods); the members must all fit the one `model`. `candidate_orders` > 1
    also averages each listed candidate's log-likelihood over shuffles of the candidate list."""
    path, named = resolve_dataset(dataset, mixture_or_task_name)
    lengths = dict(task_feature_lengths or {"inputs": 512, "targets": 64})
    config = EvalConfig(
        scenarios=tuple(scenarios or named or SCENARIOS), splits=tuple(splits), negatives=num_negatives,
        neg99_protocol=neg99_protocol, hard_negatives=hard_negatives, baselines=tuple(baseline_names),
        baseline_options={"itemknn": {"window": itemknn_window},
                          "sasrec": {"epochs": sasrec_epochs, "loss": sasrec_loss}},
        sasrec_seeds=tuple(sasrec_seeds), tie_rule=tie_rule, max_examples=max_examples,
        prior_weights=tuple(float(w) for w in (prior_weights or ())))
    scorer = None
    if checkpoint_path is not None:
        if model is None:
            raise ValueError("CHECKPOINT_PATH needs a model: give a model gin file (e.g. gin/models/flan_t5_tiny.gin)")
        from instructrec_jax.instructions.storage import read_manifest
        from instructrec_jax.vocabulary import load_vocabulary

        manifest = read_manifest(path)
        tokenizer = load_vocabulary(path / manifest.get("vocabulary", "spiece.model"))
        if isinstance(checkpoint_path, (list, tuple)):
            if not checkpoint_path:
                raise ValueError("CHECKPOINT_PATH is an empty list: give a path, or a list of paths "
                                 "for an ensemble")
            params = load_ensemble_params(checkpoint_path, model)
        else:
            params = load_params_for_inference(checkpoint_path, model)
        scoring_config = ranking.ScoringConfig(reduction=scoring, score_eos=score_eos, prior=prior,
                                               candidate_orders=candidate_orders,
                                               candidate_order_seed=candidate_order_seed,
                                               prior_weight=prior_weight,
                                               batch_size=batch_size, bucket_step=bucket_step,
                                               max_input_length=lengths["inputs"],
                                               max_target_length=lengths["targets"])
        item_prior = None
        if prior == "item_log_prior":
            from instructrec_jax.baselines.popularity import fit_popularity
            from instructrec_jax.data.preprocess import load_prepared

            data = load_prepared(path)
            item_prior = ranking.popularity_log_prior(fit_popularity(data.train).counts, data.items)
        from instructrec_jax.instructions.storage import read_item_texts

        scorer = ranking.CandidateScorer(model, params, tokenizer, scoring_config, item_log_prior=item_prior,
                                         item_texts=read_item_texts(path))
    if write_rankings:
        from instructrec_jax.atomic import atomic_directory

        with atomic_directory(Path(output_dir) / "rankings", overwrite=True) as rankings_dir:
            report = evaluate_dataset(path, scorer, config, rankings_dir=rankings_dir)
    else:
        report = evaluate_dataset(path, scorer, config)
    report["checkpoint"] = (list(checkpoint_path) if isinstance(checkpoint_path, (list, tuple))
                            else checkpoint_path)
    paths = write_outputs(report, output_dir, plot=plot)
    print((Path(paths["table"])).read_text(encoding="utf-8"))
    print(f"eval: wrote {', '.join(str(p) for p in paths.values())}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """`instructrec eval`: gin flags, e.g. --gin_file=gin/models/flan_t5_tiny.gin
    --gin_file=gin/runs/eval.gin --gin.CHECKPOINT_PATH=... --gin.EVAL_OUTPUT_DIR=... --gin.DATASET=\\"ml100k\\"."""
    from instructrec_jax import gin_flags

    parser = argparse.ArgumentParser(prog="instructrec eval", description=main.__doc__)
    gin_flags.add_gin_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(gin_flags.rewrite_gin_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        gin.clear_config()
        gin_flags.configure_gin(gin_flags.gin_flags_from_args(args))
        evaluate()
    except (ValueError, KeyError, FileNotFoundError, DataFormatError) as error:
        print(f"instructrec eval: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the imported module's main: gin registers `instructrec_jax.evaluate.evaluate`, not `__main__.evaluate`.
    from instructrec_jax.evaluate import main as _main

    sys.exit(_main())
