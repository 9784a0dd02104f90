"""`instructrec compare`: a paired comparison of two methods on the same evaluation examples.

`instructrec eval --gin.WRITE_RANKINGS=True` writes, next to `metrics.json`, one JSON line per
evaluation example and method (`rankings/<scenario>/<split>/<method>.jsonl`: the candidates, the
true item's position and the method's scores). Two such runs (or one run holding both methods)
are compared here example by example:

- every example must be present on both sides with the same candidates and the same true item
  (otherwise the comparison is refused: different candidate sets are not the same test);
- per-example metrics are recomputed with `metrics.example_metrics` under the run's tie rule; the
  LLM's rows are those of one template (by default the one `metrics.json` chose on validation);
  several files of one method (SASRec's seeds) are averaged per example, so the means equal the
  report's;
- the mean difference gets a paired bootstrap confidence interval (examples resampled with
  replacement, the same draw for both methods) and the counts of examples each side wins;
- a breakdown by the true item's training popularity (quantile bins of its training count) shows
  where the difference comes from;
- a side may name several eval folders, comma-separated (`seed0/eval,seed1/eval:instructrec`: one
  model trained with several seeds): each folder's per-example metrics are computed as above (the
  LLM with each run's own validation template) and averaged per example, so the side's means are
  the mean over its runs. The bootstrap then resamples examples of that seed-averaged model: it
  says how sure the test split makes the difference of the two averages, not how another set of
  seeds would land.

    instructrec compare runs/model_eval:instructrec runs/baselines_eval:sasrec --scenario sequential
    instructrec compare s0/eval,s1/eval,s2/eval:instructrec runs/baselines_eval:sasrec
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from instructrec_jax import metrics

LLM_METHOD = "instructrec"  # the evaluator's name for the model's rows (evaluate.LLM_METHOD)
_METRIC = re.compile(r"^(HR|NDCG)@([1-9][0-9]*)$|^MRR$")


@dataclasses.dataclass(frozen=True)
class MethodRankings:
    """One method's per-example metrics on one scenario and split."""

    name: str  # e.g. "sasrec (3 files)" or "instructrec (template pref-01)"
    source: str
    per_example: dict[str, dict[str, float]]  # example -> metric -> value (mean over the files)
    candidates: dict[str, tuple[tuple[str, ...], int]]  # example -> (candidates, true position)


def parse_metric_names(names: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The HR and NDCG cut-offs that `names` (e.g. ["HR@1", "NDCG@5", "MRR"]) need."""
    hr, ndcg = set(), set()
    for name in names:
        match = _METRIC.match(name)
        if match is None:
            raise ValueError(f"unknown metric {name!r}; expected HR@k, NDCG@k or MRR")
        if match.group(1) == "HR":
            hr.add(int(match.group(2)))
        elif match.group(1) == "NDCG":
            ndcg.add(int(match.group(2)))
    return tuple(sorted(hr)), tuple(sorted(ndcg))


def _read_report(eval_dir: Path) -> dict[str, Any]:
    path = eval_dir / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the output folder of `instructrec eval`")
    return json.loads(path.read_text(encoding="utf-8"))


def _read_rows(path: Path, template: str | None) -> dict[str, dict[str, Any]]:
    """example -> row of one rankings file (LLM files: the rows of `template` only)."""
    rows: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, candidates = row["example"], row["candidates"]
                label, scores = row["label_index"], row["scores"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: expected a JSON object with example, candidates, "
                                 f"label_index and scores ({error})") from None
            if not isinstance(label, int) or not isinstance(scores, list) or len(scores) != len(candidates) \
                    or not 0 <= label < len(candidates):
                raise ValueError(f"{path}:{number}: {len(scores)} scores for {len(candidates)} candidates, "
                                 f"true position {label}")
            if template is not None and row.get("template_id") != template:
                continue
            if key in rows:
                raise ValueError(f"{path}:{number}: example {key!r} appears twice")
            rows[key] = row
    return rows


def load_method(eval_dir: str | Path, method: str, *, scenario: str = "sequential", split: str = "test",
                metric_names: Sequence[str] = ("HR@1", "NDCG@5"), template: str | None = None) -> MethodRankings:
    """A method's rankings from an eval output folder: `method.jsonl`, or every `method-seed*.jsonl`
    averaged per example. The LLM's rows are those of `template` (default: the one chosen on
    validation in `metrics.json`)."""
    eval_dir = Path(eval_dir)
    report = _read_report(eval_dir)
    folder = eval_dir / "rankings" / scenario / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no rankings for {scenario}/{split} in {eval_dir}: run `instructrec eval` "
                                "with --gin.WRITE_RANKINGS=True")
    files = [folder / f"{method}.jsonl"] if (folder / f"{method}.jsonl").is_file() else sorted(
        folder.glob(f"{method}-seed*.jsonl"))
    if not files:
        available = sorted({p.stem.split("-seed")[0] for p in folder.glob("*.jsonl")})
        raise FileNotFoundError(f"no rankings of method {method!r} in {folder}; it has {available}")
    if method == LLM_METHOD and template is None:
        entry = report.get("scenarios", {}).get(scenario, {}).get("methods", {}).get(method, {})
        template = entry.get("best_template")
        if template is None:
            raise ValueError(f"{eval_dir / 'metrics.json'} names no best template for {scenario} (validation "
                             "not evaluated?): give the template to compare")
    tie_rule = report.get("tie_rule", "pessimistic")
    hr_ks, ndcg_ks = parse_metric_names(metric_names)
    per_file = [_read_rows(path, template if method == LLM_METHOD else None) for path in files]
    first = per_file[0]
    if not first:
        raise ValueError(f"{files[0]} has no rows" + (f" of template {template!r}" if template else ""))
    candidates = {key: (tuple(row["candidates"]), int(row["label_index"])) for key, row in first.items()}
    per_example: dict[str, dict[str, float]] = {}
    for key, (cands, label) in candidates.items():
        values = []
        for path, rows in zip(files, per_file):
            row = rows.get(key)
            if row is None or (tuple(row["candidates"]), int(row["label_index"])) != (cands, label):
                raise ValueError(f"{path} and {files[0]} do not hold the same candidates for example {key!r}")
            values.append(metrics.example_metrics(row["scores"], label, hr_ks=hr_ks, ndcg_ks=ndcg_ks,
                                                  tie_rule=tie_rule))
        per_example[key] = {name: float(np.mean([v[name] for v in values])) for name in metric_names}
    extra = [p for p, rows in zip(files, per_file) if set(rows) != set(first)]
    if extra:
        raise ValueError(f"{extra[0]} and {files[0]} hold different examples")
    detail = f"template {template}" if method == LLM_METHOD else (f"{len(files)} files" if len(files) > 1 else "")
    name = f"{method} ({detail})" if detail else method
    return MethodRankings(name, str(eval_dir), per_example, candidates)


def load_runs(eval_dirs: Sequence[str | Path], method: str, **kwargs) -> MethodRankings:
    """`load_method` on each folder (one model trained with several seeds, say), the per-example
    metrics averaged over the folders; every folder must hold the same examples and candidates."""
    if not eval_dirs:
        raise ValueError("load_runs: no eval folders given")
    runs = [load_method(folder, method, **kwargs) for folder in eval_dirs]
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    for run in runs[1:]:
        if set(run.per_example) != set(first.per_example):
            raise ValueError(f"{run.source} and {first.source} hold different examples "
                             f"({len(run.per_example)} and {len(first.per_example)}): runs averaged "
                             "together must be evaluated on the same split")
        for key, cands in first.candidates.items():
            if run.candidates[key] != cands:
                raise ValueError(f"example {key!r} has different candidates or true item in {run.source} "
                                 f"and {first.source}: runs averaged together need the same candidate sets")
    per_example = {key: {name: float(np.mean([run.per_example[key][name] for run in runs])) for name in values}
                   for key, values in first.per_example.items()}
    details = [run.name[len(method):].strip(" ()") for run in runs]
    name = f"{method} ({len(runs)} runs" + (f": {', '.join(details)})" if any(details) else ")")
    return MethodRankings(name, ", ".join(run.source for run in runs), per_example, dict(first.candidates))


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Mean of a − b over paired examples, its bootstrap percentile interval and how often the
    resampled mean falls on either side of zero (two-sided: twice the smaller share, at most 1)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected two equally long non-empty vectors, got shapes {a.shape} and {b.shape}")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"resamples must be >= 1 and confidence in (0, 1), got {resamples}, {confidence}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // diff.size)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    below, above = float(np.mean(means <= 0.0)), float(np.mean(means >= 0.0))
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(diff.mean()),
            "ci_low": float(low), "ci_high": float(high), "confidence": confidence,
            "p_two_sided": min(1.0, 2.0 * min(below, above)), "resamples": resamples,
            "a_better": int(np.sum(diff > 0)), "b_better": int(np.sum(diff < 0)), "tied": int(np.sum(diff == 0))}


def popularity_bins(counts: Sequence[float], bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Each example's bin (0 … bins−1, by quantiles of `counts`) and the bins' count edges."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.quantile(counts, np.linspace(0.0, 1.0, bins + 1))
    index = np.clip(np.searchsorted(edges[1:-1], counts, side="right"), 0, bins - 1)
    return index, edges


def compare(a: MethodRankings, b: MethodRankings, metric_names: Sequence[str], *, resamples: int = 10_000,
            seed: int = 0, confidence: float = 0.95, item_counts: Mapping[str, int] | None = None,
            bins: int = 3) -> dict[str, Any]:
    """The paired comparison of two methods' rankings (same examples, same candidates required)."""
    missing_b, missing_a = set(a.per_example) - set(b.per_example), set(b.per_example) - set(a.per_example)
    if missing_a or missing_b:
        example = sorted(missing_a or missing_b)[0]
        raise ValueError(f"{a.name} has {len(a.per_example)} examples and {b.name} {len(b.per_example)}; "
                         f"{len(missing_b)} only in the first, {len(missing_a)} only in the second "
                         f"(e.g. {example!r}): compare runs of the same split and candidate sets")
    keys = sorted(a.per_example)
    for key in keys:
        if a.candidates[key] != b.candidates[key]:
            raise ValueError(f"example {key!r} has different candidates or true item in {a.source} and "
                             f"{b.source}: the comparison needs the same candidate sets")
    result: dict[str, Any] = {"a": a.name, "a_source": a.source, "b": b.name, "b_source": b.source,
                              "examples": len(keys), "metrics": {}}
    vectors = {name: (np.array([a.per_example[k][name] for k in keys]),
                      np.array([b.per_example[k][name] for k in keys])) for name in metric_names}
    for name, (va, vb) in vectors.items():
        result["metrics"][name] = paired_bootstrap(va, vb, resamples=resamples, seed=seed, confidence=confidence)
    if item_counts is not None and bins > 0:
        targets = [a.candidates[k][0][a.candidates[k][1]] for k in keys]
        index, edges = popularity_bins([item_counts.get(t, 0) for t in targets], bins)
        rows = []
        for i in range(bins):
            chosen = index == i
            if not chosen.any():
                continue
            row = {"bin": i, "count_low": float(edges[i]), "count_high": float(edges[i + 1]),
                   "examples": int(chosen.sum())}
            for name, (va, vb) in vectors.items():
                row[name] = {"mean_a": float(va[chosen].mean()), "mean_b": float(vb[chosen].mean())}
            rows.append(row)
        result["by_target_popularity"] = rows
    return result


def format_comparison(result: Mapping[str, Any]) -> str:
    """The comparison as a short plain-text report."""
    first = next(iter(result["metrics"].values()))
    lines = [f"A = {result['a']} [{result['a_source']}]", f"B = {result['b']} [{result['b_source']}]",
             f"{result['examples']} paired examples, {first['resamples']} bootstrap resamples", "",
             f"{'metric':<8} {'A':>7} {'B':>7} {'A − B':>8}  {round(first['confidence'] * 100)}% interval"
             f"{'':>8} {'p':>6}  A better / B better / tied"]
    for name, m in result["metrics"].items():
        # no resampled mean on the other side of zero: p is below what the resamples can resolve
        p = f"{m['p_two_sided']:6.4f}" if m["p_two_sided"] > 0 else f"<{1 / m['resamples']:g}".rjust(6)
        lines.append(f"{name:<8} {m['mean_a']:7.4f} {m['mean_b']:7.4f} {m['diff']:+8.4f}  "
                     f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]  {p}  "
                     f"{m['a_better']} / {m['b_better']} / {m['tied']}")
    if result.get("by_target_popularity"):
        lines += ["", "by the true item's training count (quantile bins):",
                  f"{'counts':<14} {'examples':>8}  " + "  ".join(f"{n + ' A':>9} {n + ' B':>9}" for n in result["metrics"])]
        for row in result["by_target_popularity"]:
            span = f"{row['count_low']:.0f}–{row['count_high']:.0f}"
            lines.append(f"{span:<14} {row['examples']:>8}  " + "  ".join(
                f"{row[n]['mean_a']:9.4f} {row[n]['mean_b']:9.4f}" for n in result["metrics"]))
    return "\n".join(lines)


def _training_counts(eval_dir: Path, prepared_dir: str | None) -> dict[str, int]:
    from instructrec_jax.baselines.popularity import fit_popularity
    from instructrec_jax.data.preprocess import load_prepared

    path = prepared_dir or _read_report(eval_dir).get("prepared_dir")
    if not path:
        raise ValueError(f"{eval_dir / 'metrics.json'} names no prepared_dir; pass --prepared-dir")
    return dict(fit_popularity(load_prepared(Path(path)).train).counts)


def _side(spec: str) -> tuple[list[Path], str]:
    folders, sep, method = spec.rpartition(":")
    names = folders.split(",")
    if not sep or not method or not all(names):
        raise argparse.ArgumentTypeError(f"expected EVAL_DIR[,EVAL_DIR…]:METHOD (e.g. runs/eval:sasrec), got {spec!r}")
    return [Path(name) for name in names], method


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="instructrec compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=_side, help="EVAL_DIR:METHOD, e.g. runs/model_eval:instructrec; several "
                        "comma-separated folders (seeds of one model) are averaged per example")
    parser.add_argument("b", type=_side, help="EVAL_DIR:METHOD, e.g. runs/baselines_eval:sasrec")
    parser.add_argument("--scenario", default="sequential")
    parser.add_argument("--split", default="test")
    parser.add_argument("--metrics", default="HR@1,NDCG@5", help="comma-separated, e.g. HR@1,NDCG@5,MRR")
    parser.add_argument("--template", help="the LLM template to compare (default: chosen on validation)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--bins", type=int, default=3, help="target-popularity bins (0: none)")
    parser.add_argument("--prepared-dir", help="for the popularity bins (default: the one in A's metrics.json)")
    parser.add_argument("--json", help="also write the comparison to this JSON file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    try:
        parse_metric_names(names)
        sides = [load_runs(folders, method, scenario=args.scenario, split=args.split, metric_names=names,
                           template=args.template) for folders, method in (args.a, args.b)]
        counts = _training_counts(args.a[0][0], args.prepared_dir) if args.bins > 0 else None
        result = compare(*sides, names, resamples=args.resamples, seed=args.seed, confidence=args.confidence,
                         item_counts=counts, bins=args.bins)
    except (ValueError, FileNotFoundError) as error:
        print(f"instructrec compare: {error}", file=sys.stderr)
        return 1
    result.update(scenario=args.scenario, split=args.split)
    print(format_comparison(result))
    if args.json:
        from instructrec_jax.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
