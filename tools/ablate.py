"""One row of the issue-6 ablation table: train an experiment gin for each seed, evaluate, summarise.

    python tools/ablate.py --row "demo recipe" --data-dir demo_output/prepared \
        --train-gin gin/experiments/ml100k_demo.gin --eval-gin gin/experiments/ml100k_demo_eval.gin \
        --seeds 0,1,2 --out ablations/demo --log ablations/results.jsonl
    python tools/ablate.py --row "no PPMI init" ... --train-binding="--gin.train_lib.train.param_initializers=[]"

For every seed it runs, as separate processes, exactly the documented commands:
`python -m instructrec_jax.train --gin_file=TRAIN_GIN --gin.MODEL_DIR=… --gin.RANDOM_SEED=seed …`
and `python -m instructrec_jax.evaluate --gin_file=EVAL_GIN … --gin.SCENARIOS=[…]` with the
popularity prior calibrated on validation (the grid includes 0, so the report also holds the
likelihood-only ranking, `without_prior`). It records the training CPU and wall seconds, the
examples seen (steps × batch; training batches are not packed in these experiments), and the
test HR@1 / NDCG@5 of the best-on-validation template and of all templates, with and without the
prior, as one JSON line per seed in `--log`, then prints the row (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRIOR_GRID = "[0.0, -0.1, -0.25, -0.5, -0.75, -1.0, -1.5, -2.0]"  # as ml100k_demo_eval.gin


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], log_path: Path, env: dict) -> tuple[float, float]:
    """Runs `command` with output to `log_path`; (wall, CPU) seconds; an error if it fails."""
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code:
        raise SystemExit(f"ablate: `{' '.join(command)}` failed ({code}); see {log_path}")
    return time.perf_counter() - wall0, _children_cpu() - cpu0


def _gin_value(config_gin: Path, name: str) -> str | None:
    for line in config_gin.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{name} = "):
            return line.split(" = ", 1)[1].strip()
    return None


def latest_checkpoint_step(checkpoints: Path) -> int | None:
    """The newest step saved under `checkpoints` (Orbax step folders are named by the step), or None."""
    if not checkpoints.is_dir():
        return None
    steps = [int(p.name) for p in checkpoints.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps, default=None)


def run_seed(args, seed: int, env: dict) -> dict:
    out = Path(args.out) / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    # A folder with checkpoints resumes (the trainer continues from its latest one, bitwise on
    # CPU), so this run's CPU and wall seconds are only the rest of the training: say so.
    resumed_from = latest_checkpoint_step(model_dir / "checkpoints")
    train_cmd = [sys.executable, "-m", "instructrec_jax.train", f"--gin_file={args.train_gin}",
                 f"--gin.MODEL_DIR='{model_dir}'", f"--gin.RANDOM_SEED={seed}", *args.binding,
                 *args.train_binding]
    train_wall, train_cpu = _run(train_cmd, out / "train.log", env)
    config = model_dir / "config.gin"
    steps, batch = int(_gin_value(config, "TRAIN_STEPS")), int(_gin_value(config, "BATCH_SIZE"))
    eval_dir = out / "eval"
    eval_cmd = [sys.executable, "-m", "instructrec_jax.evaluate", f"--gin_file={args.eval_gin}",
                f"--gin.CHECKPOINT_PATH='{model_dir / 'checkpoints'}'", f"--gin.EVAL_OUTPUT_DIR='{eval_dir}'",
                f"--gin.SCENARIOS={args.scenarios!r}", f"--gin.BASELINES={args.baselines!r}",
                "--gin.PRIOR='item_log_prior'", f"--gin.PRIOR_WEIGHTS={PRIOR_GRID}", *args.binding,
                *args.eval_binding]
    eval_wall, eval_cpu = _run(eval_cmd, out / "eval.log", env)
    report = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    row = {"row": args.row, "seed": seed, "train_steps": steps, "batch_size": batch,
           "examples_seen": steps * batch, "resumed_from_step": resumed_from,
           "train_wall_s": round(train_wall, 1),
           "train_cpu_s": round(train_cpu, 1), "eval_wall_s": round(eval_wall, 1),
           "train_command": " ".join(train_cmd), "eval_command": " ".join(eval_cmd), "scenarios": {}}
    for scenario, entry in report["scenarios"].items():
        llm = entry["methods"]["instructrec"]
        best = llm["test_best_template"]
        row["scenarios"][scenario] = {
            "best_template": llm["best_template"],
            "prior_weight": llm.get("prior_calibration", {}).get("prior_weight"),
            "test_best": {k: best[k] for k in ("HR@1", "NDCG@5")},
            "test_all": {k: llm["test"]["overall"][k] for k in ("HR@1", "NDCG@5")},
            "test_no_prior": {k: llm["test"]["without_prior"][k] for k in ("HR@1", "NDCG@5")},
            "baselines": {name: {k: m["test"][k] for k in ("HR@1", "NDCG@5")}
                          for name, m in entry["methods"].items() if name != "instructrec"},
        }
    return row


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summarise(rows: list[dict], scenario: str) -> str:
    """The markdown row: row name, budget, examples, HR@1 and NDCG@5 (best template, with the
    calibrated prior; then likelihood only), seeds."""
    first = rows[0]
    pick = lambda key, metric: [r["scenarios"][scenario][key][metric] for r in rows]
    whole = [r["train_cpu_s"] for r in rows if not r.get("resumed_from_step")]
    resumed = [f"seed {r['seed']} resumed at step {r['resumed_from_step']}" for r in rows if r.get("resumed_from_step")]
    budget = f"{statistics.mean(whole) / 60:.1f} CPU-min" if whole else "CPU time unknown"
    if resumed:  # a resumed run's seconds cover only its last part: left out of the budget
        budget += f"; {', '.join(resumed)}"
    return (f"| {first['row']} | {first['train_steps']} steps × {first['batch_size']} "
            f"({budget}) | {first['examples_seen']:,} | "
            f"{_mean_std(pick('test_best', 'HR@1'))} | {_mean_std(pick('test_best', 'NDCG@5'))} | "
            f"{_mean_std(pick('test_no_prior', 'HR@1'))} | {_mean_std(pick('test_no_prior', 'NDCG@5'))} | "
            f"{','.join(str(r['seed']) for r in rows)} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--row", required=True, help="the row's name in the table")
    parser.add_argument("--train-gin", required=True)
    parser.add_argument("--eval-gin", required=True)
    parser.add_argument("--data-dir", help="sets INSTRUCTREC_DATA_DIR for both commands")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--scenarios", type=lambda v: v.split(","), default=["sequential"])
    parser.add_argument("--baselines", type=lambda v: [b for b in v.split(",") if b], default=[])
    parser.add_argument("--binding", action="append", default=[], help="gin flag for both commands")
    parser.add_argument("--train-binding", action="append", default=[], help="gin flag for training")
    parser.add_argument("--eval-binding", action="append", default=[], help="gin flag for evaluation")
    parser.add_argument("--out", required=True, help="folder for the runs")
    parser.add_argument("--log", required=True, help="JSON lines file the rows are appended to")
    args = parser.parse_args(argv)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    if args.data_dir:
        env["INSTRUCTREC_DATA_DIR"] = str(Path(args.data_dir).resolve())
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = run_seed(args, seed, env)
        rows.append(row)
        with open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row["scenarios"]), flush=True)
    for scenario in args.scenarios:
        print(f"{scenario}: {summarise(rows, scenario)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
